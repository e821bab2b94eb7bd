//! Scenario: `AllocScope::system()` with the heap sampler driven through
//! its public API: intervals, every-allocation sampling, placement of
//! sampled blocks (alignment, contents, realloc, zeroing), exact counts
//! while sampling, and a new interval reaching running threads.
use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};

use allocscope::AllocScope;

#[global_allocator]
static ALLOC: AllocScope = AllocScope::system();

/// The interval is process-wide: tests that change it run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Sampling points reached: recorded samples plus samples dropped because
/// another thread (the test harness's) held the sampler's lock at that
/// moment, which is allowed.
fn points(s: &allocscope::sampling::Stats) -> u64 {
    s.samples_total + s.dropped_samples
}

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn interval_api() {
    let _g = serial();
    assert_eq!(allocscope::sampling::DEFAULT_INTERVAL, 512 * 1024);
    let prev = allocscope::sampling::set_interval(4096);
    assert_eq!(allocscope::sampling::interval(), 4096);
    assert_eq!(allocscope::sampling::set_interval(prev), 4096);
    assert_eq!(allocscope::sampling::interval(), prev);
    assert_eq!(allocscope::sampling::stats().interval, prev);
}

#[test]
fn off_samples_nothing_and_one_samples_everything() {
    let _g = serial();
    let prev = allocscope::sampling::set_interval(0);
    let before = points(&allocscope::sampling::stats());
    let v: Vec<Box<[u8; 100]>> = (0..1000).map(|_| Box::new([1u8; 100])).collect();
    // this thread samples nothing; the harness's threads may still run out
    // a countdown drawn before (they check in within 1 MiB)
    let after = points(&allocscope::sampling::stats());
    assert!(
        after <= before + 3,
        "interval 0 samples nothing: {before} -> {after}"
    );
    drop(v);

    allocscope::sampling::set_interval(1);
    let s0 = allocscope::sampling::stats();
    let v: Vec<Box<[u8; 100]>> =
        std::hint::black_box((0..1000).map(|_| Box::new([1u8; 100])).collect());
    let s1 = allocscope::sampling::stats();
    allocscope::sampling::set_interval(prev);
    // the 1000 boxes and the vector itself, at least (other tests' threads
    // may sample too, never fewer)
    let dropped = s1.dropped_samples - s0.dropped_samples;
    assert!(points(&s1) - points(&s0) >= 1001, "{s0:?} -> {s1:?}");
    assert!(
        s1.live_samples + dropped >= s0.live_samples + 1000,
        "{s0:?} -> {s1:?}"
    );
    drop(v);
    let s2 = allocscope::sampling::stats();
    assert!(
        s2.live_samples + 1000 <= s1.live_samples + dropped + 5,
        "frees remove samples: {s1:?} -> {s2:?}"
    );
    assert!(
        s2.memory_bytes > 0 && s2.memory_bytes <= s2.reserved_bytes,
        "{s2:?}"
    );
    assert!(s2.stacks >= 1 && s2.buckets >= 1);
}

#[test]
fn sampled_blocks_keep_alignment_contents_and_zeroing() {
    let _g = serial();
    let prev = allocscope::sampling::set_interval(1);
    let s0 = points(&allocscope::sampling::stats());
    for align_log2 in 0..=13u32 {
        for size in [1usize, 7, 8, 24, 100, 4096, 70_000] {
            let l = Layout::from_size_align(size, 1 << align_log2).unwrap();
            // SAFETY: valid non-zero layouts, freed with the same layout.
            unsafe {
                let p = ALLOC.alloc_zeroed(l);
                assert!(!p.is_null());
                assert_eq!(p as usize % l.align(), 0, "alignment {l:?}");
                assert!(
                    std::slice::from_raw_parts(p, size).iter().all(|&b| b == 0),
                    "zeroed {l:?}"
                );
                for i in 0..size {
                    *p.add(i) = (i % 251) as u8;
                }
                // grow and shrink: sampled blocks are moved by hand
                let q = ALLOC.realloc(p, l, size * 3);
                assert!(!q.is_null());
                assert_eq!(q as usize % l.align(), 0, "alignment after realloc {l:?}");
                for i in 0..size {
                    assert_eq!(*q.add(i), (i % 251) as u8, "contents after grow {l:?}");
                }
                let l3 = Layout::from_size_align(size * 3, l.align()).unwrap();
                let r = ALLOC.realloc(q, l3, size.div_ceil(2));
                assert!(!r.is_null());
                for i in 0..size.div_ceil(2) {
                    assert_eq!(*r.add(i), (i % 251) as u8, "contents after shrink {l:?}");
                }
                ALLOC.dealloc(
                    r,
                    Layout::from_size_align(size.div_ceil(2), l.align()).unwrap(),
                );
            }
        }
    }
    let s1 = points(&allocscope::sampling::stats());
    allocscope::sampling::set_interval(prev);
    assert!(
        s1 - s0 >= 14 * 7 * 3,
        "every allocation and reallocation was sampled: {s0} -> {s1}"
    );
}

#[test]
fn counts_stay_exact_while_sampling_everything() {
    let _g = serial();
    let prev = allocscope::sampling::set_interval(1);
    let (_, d) = allocscope::measure(|| {
        let mut keep = Vec::with_capacity(600);
        for i in 0..600usize {
            let mut v: Vec<u64> = Vec::with_capacity(i % 37 + 1);
            v.push(i as u64);
            if i % 3 == 0 {
                v.reserve(500); // realloc of a sampled block
            }
            keep.push(v);
        }
        drop(keep);
    });
    allocscope::sampling::set_interval(prev);
    // 600 vectors + the outer one; 200 reallocations; everything freed
    assert_eq!(d.allocations, 601 + 200, "{d:?}");
    assert_eq!(d.reallocations, 200, "{d:?}");
    assert_eq!(d.deallocations, 601 + 200, "{d:?}");
    assert_eq!(d.net_bytes(), 0, "{d:?}");
}

#[test]
fn a_new_interval_reaches_running_threads() {
    let _g = serial();
    let prev = allocscope::sampling::set_interval(0);
    let stop = Arc::new(AtomicBool::new(false));
    let sampled_here = Arc::new(AtomicU64::new(0));
    let (s, c) = (stop.clone(), sampled_here.clone());
    let t = std::thread::spawn(move || {
        // allocate continuously; record how many samples appear
        while !s.load(SeqCst) {
            std::hint::black_box(vec![0u8; 64]);
            c.store(points(&allocscope::sampling::stats()), SeqCst);
        }
    });
    std::thread::sleep(std::time::Duration::from_millis(50));
    let before = points(&allocscope::sampling::stats());
    allocscope::sampling::set_interval(1);
    // the thread picks the interval up at its next check-in (within 1 MiB
    // of 64-byte allocations) and then samples each one; under
    // ThreadSanitizer on a loaded machine that took more than 5 s once
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while sampled_here.load(SeqCst) < before + 100 && std::time::Instant::now() < deadline {
        std::thread::yield_now();
    }
    allocscope::sampling::set_interval(prev);
    stop.store(true, SeqCst);
    t.join().unwrap();
    assert!(
        sampled_here.load(SeqCst) >= before + 100,
        "the running thread did not pick up the new interval"
    );
}

#[test]
fn stack_capture_methods_both_work() {
    let _g = serial();
    let default = allocscope::sampling::stack_capture();
    assert_eq!(
        default,
        allocscope::sampling::StackCapture::default_for_build()
    );
    for m in [
        allocscope::sampling::StackCapture::FramePointers,
        allocscope::sampling::StackCapture::Unwinder,
    ] {
        allocscope::sampling::set_stack_capture(m);
        let prev = allocscope::sampling::set_interval(1);
        let s0 = allocscope::sampling::stats();
        let v: Vec<Vec<u8>> = std::hint::black_box((0..50).map(|i| vec![0u8; 10 + i]).collect());
        let s1 = allocscope::sampling::stats();
        allocscope::sampling::set_interval(prev);
        assert!(points(&s1) >= points(&s0) + 51, "{m:?}");
        drop(v);
    }
    allocscope::sampling::set_stack_capture(default);
}

#[test]
fn limits_cannot_change_after_sampling_started() {
    let _g = serial();
    let prev = allocscope::sampling::set_interval(1);
    std::hint::black_box(Box::new(1u64));
    allocscope::sampling::set_interval(prev);
    let err = allocscope::sampling::set_limits(
        allocscope::sampling::Limits::default().max_live_samples(10),
    )
    .unwrap_err();
    assert!(err.to_string().contains("before the first sample"), "{err}");
    let bad =
        allocscope::sampling::set_limits(allocscope::sampling::Limits::default().max_stacks(0))
            .unwrap_err();
    assert!(bad.to_string().contains("max_stacks"), "{bad}");
}

#[test]
fn large_allocations_are_sampled_across_check_ins() {
    // a 4 MiB block at a 512 KiB interval is sampled with probability
    // 1 - exp(-8) = 99.97%: the countdown's check-ins must not hide it
    let _g = serial();
    let prev = allocscope::sampling::set_interval(512 * 1024);
    let s0 = points(&allocscope::sampling::stats());
    for _ in 0..50 {
        let v: Vec<u8> = std::hint::black_box(Vec::with_capacity(4 << 20));
        drop(v);
    }
    let s1 = points(&allocscope::sampling::stats());
    allocscope::sampling::set_interval(prev);
    assert!(s1 - s0 >= 49, "{s0} -> {s1}");
}
