//! Scenario: `AllocScope::system()` sampling at 4 KiB with the default caps.
//! A churn takes about 85,000 samples while only a few hundred sampled
//! blocks are live at a time: the sampler's resident memory stays small
//! (under 2 MiB), whatever its caps reserve. Then 20,000 sampled blocks are
//! kept live at once, and the resident memory grows with them, within the
//! reserved address space; and more, from four threads that free each
//! other's blocks while the live set grows.
use std::sync::{Arc, Mutex};

use allocscope::sampling;
use allocscope::AllocScope;

#[global_allocator]
static ALLOC: AllocScope = AllocScope::system();

fn rng(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// Blocks on their way to the thread that frees them.
type Mailbox = Mutex<Vec<Box<[u8]>>>;

/// Sampling points reached: samples recorded, and samples dropped because
/// another thread (the test harness's) held the sampler's lock.
fn points(s: &sampling::Stats) -> u64 {
    s.samples_total + s.dropped_samples
}

#[test]
fn the_sampler_memory_follows_its_live_samples_not_its_caps() {
    const MIB: u64 = 1 << 20;
    const RING: usize = 1024;
    let prev = sampling::set_interval(4096);
    let s0 = sampling::stats();

    // 1. churn: 400,000 blocks of 16 B .. 2 KiB (1 KiB on average), each
    // replacing one of RING at random, each sampled with a probability of
    // about 1/5: a few hundred live samples at a time
    let mut ring: Vec<Option<Box<[u8]>>> = (0..RING).map(|_| None).collect();
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut most = s0;
    for i in 0..400_000 {
        let r = rng(&mut x);
        let size = 16 * (1 + (r >> 8) as usize % 128);
        ring[(r >> 32) as usize % RING] = Some(vec![i as u8; size].into_boxed_slice());
        if i % 20_000 == 0 {
            let s = sampling::stats();
            if s.memory_bytes > most.memory_bytes {
                most = s;
            }
        }
    }
    let s1 = sampling::stats();
    if s1.memory_bytes > most.memory_bytes {
        most = s1;
    }
    eprintln!("churn: {s1:?}; largest resident figure seen {most:?}");
    assert!(
        points(&s1) - points(&s0) > 20_000,
        "many thousands of samples were taken: {s0:?} -> {s1:?}"
    );
    assert!(
        s1.live_samples > 50 && s1.live_samples < 1_000,
        "a few hundred sampled blocks live: {s1:?}"
    );
    // the caps are unchanged: the address space is the defaults' (over
    // 16 MiB), and most of it is never touched
    assert_eq!(sampling::limits(), sampling::Limits::default());
    assert!(s1.reserved_bytes > 16 * MIB, "{s1:?}");
    // (resident memory is read with mincore: elsewhere the figure is the
    // reserved size)
    let resident_known = cfg!(target_os = "linux");
    assert!(
        most.memory_bytes < 2 * MIB || !resident_known,
        "the sampler's resident memory follows its live samples, not its caps: {most:?}"
    );
    drop(ring);

    // 2. 20,000 sampled blocks live at once: the memory grows with them
    sampling::set_interval(1);
    let s2a = sampling::stats();
    let kept: Vec<Box<[u8; 64]>> =
        std::hint::black_box((0..20_000).map(|i| Box::new([i as u8; 64])).collect());
    let s2 = sampling::stats();
    sampling::set_interval(prev);
    eprintln!("20,000 kept: {s2:?}");
    let dropped = s2.dropped_samples - s2a.dropped_samples;
    assert!(
        s2.live_samples + dropped >= 20_000,
        "every block was sampled: {s2a:?} -> {s2:?}"
    );
    assert!(
        (s2.memory_bytes > s1.memory_bytes && s2.memory_bytes >= 20_000 * 16) || !resident_known,
        "the resident memory grows with the live samples: {s1:?} -> {s2:?}"
    );
    assert!(s2.memory_bytes <= s2.reserved_bytes, "{s2:?}");
    assert_eq!(s2.reserved_bytes, s1.reserved_bytes, "{s1:?} -> {s2:?}");
    drop(kept);
    // every one of them is found and removed when freed, whichever segment
    // of the live set it was inserted in
    let s3 = sampling::stats();
    assert!(
        s3.live_samples <= s2a.live_samples + 10,
        "frees remove samples: {s2a:?} -> {s2:?} -> {s3:?}"
    );

    // 3. more segments opened while other threads free blocks inserted in
    // earlier ones: 4 threads sample every allocation and pass each block
    // to the next thread, which frees it later (a sampled block the live
    // set missed would be freed with the wrong layout: glibc aborts)
    sampling::set_interval(1);
    let boxes: Arc<Vec<Mailbox>> = Arc::new((0..4).map(|_| Mutex::new(Vec::new())).collect());
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let boxes = boxes.clone();
            std::thread::spawn(move || {
                let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ (t as u64 + 1);
                let mut held: Vec<Box<[u8]>> = Vec::with_capacity(16_000);
                for i in 0..40_000 {
                    let r = rng(&mut x);
                    let b = vec![i as u8; 16 * (1 + r as usize % 32)].into_boxed_slice();
                    boxes[(t + 1) % 4].lock().unwrap().push(b);
                    if i % 64 == 0 {
                        held.extend(boxes[t].lock().unwrap().drain(..));
                    }
                    while held.len() > 15_000 {
                        drop(held.swap_remove((r >> 32) as usize % held.len()));
                    }
                }
                held
            })
        })
        .collect();
    let held: Vec<Vec<Box<[u8]>>> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    sampling::set_interval(prev);
    let s4 = sampling::stats();
    eprintln!("4 threads: {s4:?}");
    assert!(
        s4.live_samples > 30_000,
        "tens of thousands live at once: {s4:?}"
    );
    drop(held);
    for b in boxes.iter() {
        b.lock().unwrap().clear();
    }
    let s5 = sampling::stats();
    assert!(
        s5.live_samples <= s3.live_samples + 10,
        "every block sampled on one thread was found when freed on another: {s3:?} -> {s4:?} -> {s5:?}"
    );
}

/// Not a check: the figures of docs/measurements.md ("The heap sampler").
/// Every allocation sampled, `MEASURE_LIVE` (default 20,000) blocks of 16 B
/// to 512 B are made live, then `MEASURE_CHURN` (default 100,000) more
/// replace them one at a time at random; prints the sampler's resident
/// memory after each. Then, with `MEASURE_PHASE=hit`, frees the live ones
/// (every free a sampled one); with `MEASURE_PHASE=miss`, allocates and frees
/// 100,000 over-aligned blocks, none sampled (those that pass the counting
/// filter probe the live set and miss); otherwise nothing (the live blocks
/// are leaked). Under callgrind, the difference in the instructions and the
/// calls of `allocscope::sampling::take` between a phase and nothing is the
/// cost of a free that probes the live set:
///
/// ```text
/// MEASURE_LIVE=20000 MEASURE_PHASE=hit setarch -R valgrind --tool=callgrind \
///   --compress-strings=no target/release/deps/sampler_memory-HASH --ignored --exact figures
/// ```
#[test]
#[ignore]
fn figures() {
    let var = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let live = var("MEASURE_LIVE", 20_000);
    let churn = var("MEASURE_CHURN", 100_000);
    let phase = std::env::var("MEASURE_PHASE").unwrap_or_default();
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    // 16 B .. 512 B: the addresses spread over the heap as a service's do
    let mut block = |i: usize| {
        let size = 16 * (1 + rng(&mut x) as usize % 32);
        Some(vec![i as u8; size].into_boxed_slice())
    };
    let mut blocks: Vec<Option<Box<[u8]>>> = Vec::with_capacity(live);
    let prev = sampling::set_interval(1);
    blocks.extend((0..live).map(&mut block));
    let s = sampling::stats();
    eprintln!(
        "{} samples, {} live: {} bytes resident",
        s.samples_total, s.live_samples, s.memory_bytes
    );
    let mut y = 0x9E37_79B9_7F4A_7C15u64;
    for i in 0..churn {
        let k = rng(&mut y) as usize % live.max(1);
        blocks[k] = block(i);
    }
    sampling::set_interval(0);
    let s = sampling::stats();
    eprintln!(
        "{} samples, {} live: {} bytes resident, {} reserved",
        s.samples_total, s.live_samples, s.memory_bytes, s.reserved_bytes
    );
    let t = std::time::Instant::now();
    match phase.as_str() {
        "hit" => {
            drop(blocks);
            eprintln!("{:?} per sampled free", t.elapsed() / live.max(1) as u32);
        }
        "miss" => {
            let mut held = Vec::with_capacity(1000);
            for _ in 0..100 {
                for i in 0..1000 {
                    let layout = std::alloc::Layout::from_size_align(64 * (1 + i % 8), 64).unwrap();
                    // SAFETY: a non-zero size; freed below with its layout.
                    held.push((unsafe { std::alloc::alloc(layout) }, layout));
                }
                for (p, layout) in held.drain(..) {
                    // SAFETY: allocated above with this layout, freed once.
                    unsafe { std::alloc::dealloc(p, layout) };
                }
            }
            eprintln!("{:?} per over-aligned pair", t.elapsed() / 100_000);
            std::mem::forget(blocks);
        }
        _ => std::mem::forget(blocks),
    }
    sampling::set_interval(prev);
}
