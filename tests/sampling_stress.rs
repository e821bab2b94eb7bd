//! Scenario: `AllocScope::system()` under fire. Eight threads churn
//! allocations with every allocation sampled (interval 1) while threads are
//! created and exit, blocks are freed on other threads, and another thread
//! keeps taking snapshots and heap profiles. Runs ALLOCSCOPE_STRESS_SECS
//! seconds (default 10). A watchdog fails the run, printing each thread's
//! progress, if anything stops making progress. Afterwards every thread's
//! counts equal its model and the sampler stayed within its caps.
use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use allocscope::{AllocScope, ThreadStats};

#[global_allocator]
static ALLOC: AllocScope = AllocScope::system();

const WORKERS: usize = 8;
const MAILBOX: usize = 256;

struct Block(usize, Layout);

/// A bounded mailbox whose storage never grows (no allocation inside the
/// measured sections).
struct Mailbox(Mutex<Vec<Block>>);

impl Mailbox {
    fn new() -> Self {
        Mailbox(Mutex::new(Vec::with_capacity(MAILBOX)))
    }
}

fn rng(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// Allocates, reallocates and frees for `until`, sending one block in four to
/// the next worker's mailbox and freeing what arrives in its own. Returns
/// the thread's measured counts and the model of them.
fn churn(
    id: u64,
    until: Instant,
    inbox: &Mailbox,
    outbox: &Mailbox,
    progress: &AtomicU64,
) -> (ThreadStats, ThreadStats) {
    let mut model = ThreadStats::default();
    let mut x = id * 0x9E37_79B9 + 1;
    let mut live: Vec<Block> = Vec::with_capacity(128);
    let mut got: Vec<Block> = Vec::with_capacity(MAILBOX);
    let (_, measured) = allocscope::measure(|| {
        let mut i = 0u64;
        while Instant::now() < until {
            i += 1;
            progress.store(i, SeqCst);
            let r = rng(&mut x);
            let size = match r % 8 {
                0..=4 => (r >> 8) as usize % 300,
                5 | 6 => 300 + (r >> 8) as usize % 20_000,
                _ => 20_000 + (r >> 8) as usize % 300_000,
            };
            let layout = Layout::from_size_align(size.max(1), 1 << ((r >> 40) % 6)).unwrap();
            // SAFETY: valid layouts; every block is freed once with its layout.
            let p = unsafe { ALLOC.alloc(layout) };
            assert!(!p.is_null());
            model.allocations += 1;
            model.allocated_bytes += layout.size() as u64;
            let mut b = Block(p as usize, layout);
            if r.is_multiple_of(5) {
                let new = layout.size() * 2 + 1;
                // SAFETY: a live block of this allocator with its layout; the new size is non-zero and does not overflow.
                let q = unsafe { ALLOC.realloc(b.0 as *mut u8, b.1, new) };
                assert!(!q.is_null());
                model.reallocations += 1;
                model.allocations += 1;
                model.deallocations += 1;
                model.allocated_bytes += new as u64;
                model.freed_bytes += b.1.size() as u64;
                b = Block(
                    q as usize,
                    Layout::from_size_align(new, layout.align()).unwrap(),
                );
            }
            if r.is_multiple_of(4) {
                let mut out = outbox.0.lock().unwrap();
                if out.len() < MAILBOX {
                    out.push(b);
                    continue;
                }
            }
            if live.len() == live.capacity() {
                let old = live.swap_remove((r >> 20) as usize % live.len());
                // SAFETY: a live block of this allocator, freed once, with the layout it was allocated with.
                unsafe { ALLOC.dealloc(old.0 as *mut u8, old.1) };
                model.deallocations += 1;
                model.freed_bytes += old.1.size() as u64;
            }
            live.push(b);
            if i.is_multiple_of(16) {
                got.extend(inbox.0.lock().unwrap().drain(..));
                for b in got.drain(..) {
                    // SAFETY: a live block of this allocator, freed once, with the layout it was allocated with.
                    unsafe { ALLOC.dealloc(b.0 as *mut u8, b.1) };
                    model.deallocations += 1;
                    model.freed_bytes += b.1.size() as u64;
                }
            }
        }
        for b in live.drain(..) {
            // SAFETY: a live block of this allocator, freed once, with the layout it was allocated with.
            unsafe { ALLOC.dealloc(b.0 as *mut u8, b.1) };
            model.deallocations += 1;
            model.freed_bytes += b.1.size() as u64;
        }
    });
    (measured, model)
}

/// Frees the blocks left in a mailbox.
fn free_all(m: &Mailbox) {
    for b in m.0.lock().unwrap().drain(..) {
        // SAFETY: a live block with its layout.
        unsafe { ALLOC.dealloc(b.0 as *mut u8, b.1) };
    }
}

#[test]
fn stress_every_allocation_sampled() {
    let secs: u64 = std::env::var("ALLOCSCOPE_STRESS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let start = Instant::now();
    let until = start + Duration::from_secs(secs);
    let prev = allocscope::sampling::set_interval(1);
    let done = Arc::new(AtomicBool::new(false));
    /// Stops the watchdog and restores the interval however the test ends.
    struct Finish(Arc<AtomicBool>, u64);
    impl Drop for Finish {
        fn drop(&mut self) {
            self.0.store(true, SeqCst);
            allocscope::sampling::set_interval(self.1);
        }
    }
    let _finish = Finish(done.clone(), prev);
    let progress: Arc<Vec<AtomicU64>> =
        Arc::new((0..WORKERS + 2).map(|_| AtomicU64::new(0)).collect());

    // watchdog: no progress for 20 s anywhere, or 60 s past the end, fails
    let (wd_done, wd_progress) = (done.clone(), progress.clone());
    std::thread::spawn(move || {
        let mut last: Vec<u64> = wd_progress.iter().map(|p| p.load(SeqCst)).collect();
        let mut stuck_since = Instant::now();
        while !wd_done.load(SeqCst) {
            std::thread::sleep(Duration::from_millis(500));
            let now: Vec<u64> = wd_progress.iter().map(|p| p.load(SeqCst)).collect();
            if now != last {
                stuck_since = Instant::now();
                last = now;
            } else if stuck_since.elapsed() > Duration::from_secs(20)
                || start.elapsed() > Duration::from_secs(secs + 60)
            {
                eprintln!("watchdog: no progress for 20 s; per-thread progress counters (workers 0..8, churn, observer): {last:?}");
                std::process::abort();
            }
        }
    });

    let boxes: Arc<Vec<Mailbox>> = Arc::new((0..WORKERS).map(|_| Mailbox::new()).collect());
    let workers: Vec<_> = (0..WORKERS)
        .map(|k| {
            let (boxes, progress) = (boxes.clone(), progress.clone());
            std::thread::spawn(move || {
                churn(
                    k as u64,
                    until,
                    &boxes[k],
                    &boxes[(k + 1) % WORKERS],
                    &progress[k],
                )
            })
        })
        .collect();

    // threads created and exiting throughout
    let churn_progress = progress.clone();
    let spawner = std::thread::spawn(move || {
        let mut n = 0u64;
        while Instant::now() < until {
            let (measured, model) = std::thread::spawn(move || {
                let (a, b) = (Mailbox::new(), Mailbox::new());
                let p = AtomicU64::new(0);
                let r = churn(
                    1000 + n,
                    Instant::now() + Duration::from_millis(20),
                    &a,
                    &b,
                    &p,
                );
                free_all(&b);
                r
            })
            .join()
            .unwrap();
            assert_eq!(measured, model, "short-lived thread {n}");
            n += 1;
            churn_progress[WORKERS].store(n, SeqCst);
        }
        n
    });

    // an observer taking snapshots, profiles and changing the interval
    let obs_progress = progress.clone();
    let observer = std::thread::spawn(move || {
        let mut n = 0u64;
        let mut max_live = 0;
        while Instant::now() < until {
            let s = allocscope::stats();
            assert!(s.size_classes.len() > 100);
            let sp = allocscope::sampling::stats();
            max_live = max_live.max(sp.live_samples);
            assert!(sp.live_samples <= allocscope::sampling::limits().max_live_samples as u64);
            assert!(sp.memory_bytes <= sp.reserved_bytes, "{sp:?}");
            #[cfg(feature = "profile")]
            {
                let t = Instant::now();
                let profile = allocscope::profile::HeapProfile::capture();
                let t1 = t.elapsed();
                std::hint::black_box(
                    profile
                        .folded(allocscope::profile::SampleType::InuseSpace)
                        .len(),
                );
                if t.elapsed() > Duration::from_millis(500) {
                    eprintln!(
                        "slow profile: capture {t1:?}, folded {:?}, {} buckets",
                        t.elapsed() - t1,
                        profile.buckets().len()
                    );
                }
            }
            if n % 50 == 25 {
                allocscope::sampling::set_interval(4096);
                std::thread::sleep(Duration::from_millis(5));
                allocscope::sampling::set_interval(1);
            }
            n += 1;
            obs_progress[WORKERS + 1].store(n, SeqCst);
            std::thread::sleep(Duration::from_millis(20));
        }
        (n, max_live)
    });

    for (k, w) in workers.into_iter().enumerate() {
        let (measured, model) = w.join().unwrap();
        assert_eq!(measured, model, "worker {k}");
        assert!(
            model.allocations > 1000,
            "worker {k} made progress: {model:?}"
        );
    }
    for m in boxes.iter() {
        free_all(m);
    }
    let short_lived = spawner.join().unwrap();
    let (observations, max_live) = observer.join().unwrap();
    let sp = allocscope::sampling::stats();
    assert!(
        short_lived > 10,
        "threads were created and exited: {short_lived}"
    );
    // (under every-allocation sampling a capture takes a second or more,
    // longer on a loaded machine: at least one ran during the churn)
    assert!(
        observations >= 1,
        "snapshots were taken concurrently: {observations}"
    );
    // (unoptimised builds, e.g. under ThreadSanitizer in CI, run ~10x slower)
    let expected = if cfg!(debug_assertions) {
        10_000
    } else {
        100_000
    };
    assert!(
        sp.samples_total > expected,
        "everything was sampled: {sp:?}"
    );
    assert!(max_live > 0);
    // every sampled block the workers made was untracked when freed: the
    // profile shows nothing in use under `churn`
    #[cfg(feature = "profile")]
    {
        let p = allocscope::profile::HeapProfile::capture();
        let inuse = p.folded(allocscope::profile::SampleType::InuseObjects);
        let churn: Vec<&str> = inuse
            .lines()
            .filter(|l| l.contains("sampling_stress::churn"))
            .collect();
        assert!(
            churn.is_empty(),
            "blocks freed by the workers still counted in use: {churn:?}"
        );
        let allocs = p.folded(allocscope::profile::SampleType::AllocObjects);
        assert!(
            allocs.contains("sampling_stress::churn"),
            "the workers' allocations are in the profile"
        );
    }
    assert!(sp.memory_bytes <= sp.reserved_bytes, "{sp:?}");
    eprintln!("stress: {short_lived} short-lived threads, {observations} observations, max live samples {max_live}, {sp:?}");
}
