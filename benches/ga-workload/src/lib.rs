//! Workloads of the `ga_*` overhead binaries: each binary sets a different
//! `#[global_allocator]` and runs the same ordinary Rust code, so the figures
//! are what an application sees through `__rust_alloc`, `Box` and `Vec`
//! (where `bench_pairs` calls `GlobalAlloc` methods directly).
//!
//! `ga_NAME [ITERS]` prints `NAME=NUMBER` lines for `roundrobin.py`:
//! nanoseconds per small `Box<[u8]>` replaced in a ring (one alloc+free
//! pair) and per 1,000-element `Vec<u64>` built by push, on one and on two
//! threads; `_ns` is the median of `GA_REPS` (default 31) repetitions,
//! `_min_ns` the fastest (the least disturbed by this machine's speed
//! changes). `GA_ONLY=box_1t` (or `box_2t`, `vec_1t`, `vec_2t`; several
//! separated by commas) runs only those, e.g. for instruction counts.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

const RING: usize = 64;

/// `iters` times: a `Box<[u8]>` of 8..=256 bytes (cycling in 8-byte steps)
/// replaces the one allocated 64 boxes earlier (a ring of 64 live blocks).
#[inline(never)]
pub fn box_ring(iters: u64) {
    let mut ring: Vec<Box<[MaybeUninit<u8>]>> = (0..RING)
        .map(|i| Box::new_uninit_slice(8 * (1 + i % 32)))
        .collect();
    let mut step = 0usize;
    for i in 0..iters as usize {
        step = if step == 31 { 0 } else { step + 1 };
        let mut b = Box::new_uninit_slice(8 + 8 * step);
        b[0].write(i as u8);
        ring[i % RING] = b;
    }
    black_box(&ring);
}

/// `iters` times: push 1,000 `u64`s into a new `Vec` (capacity 4, 8, ...,
/// 1024 through `realloc`), then drop it.
#[inline(never)]
pub fn vec_push(iters: u64) {
    for _ in 0..iters {
        let mut v = Vec::new();
        for i in 0..1000u64 {
            v.push(i);
        }
        black_box(&v);
    }
}

/// Runs `f(iters)` on `threads` threads at once (each first runs `f(1)`, so
/// that allocscope attaches its block before the clock starts) and returns
/// the span from the earliest start to the latest end, as the workers clock
/// themselves. (Clocked by the spawning thread, the span can miss the work:
/// with more threads than cores it may be descheduled between the starting
/// barrier and reading the clock, which made some earlier 2-thread figures
/// too small.) Shared with `benches/support`.
pub fn clocked_on_threads<F>(threads: usize, iters: u64, f: F) -> Duration
where
    F: Fn(u64) + Send + Copy + 'static,
{
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(threads));
    let hs: Vec<_> = (0..threads)
        .map(|_| {
            let b = barrier.clone();
            std::thread::spawn(move || {
                f(1);
                b.wait();
                let start = Instant::now();
                f(iters);
                (start, Instant::now())
            })
        })
        .collect();
    let spans: Vec<(Instant, Instant)> = hs
        .into_iter()
        .map(|h| h.join().expect("workload thread"))
        .collect();
    let start = spans
        .iter()
        .map(|s| s.0)
        .min()
        .expect("at least one thread");
    let end = spans
        .iter()
        .map(|s| s.1)
        .max()
        .expect("at least one thread");
    end - start
}

/// Nanoseconds per iteration of `f(iters)`: on this thread, or on
/// `threads` threads at once ([`clocked_on_threads`]).
pub fn ns_per_iter<F>(threads: usize, iters: u64, f: F) -> f64
where
    F: Fn(u64) + Send + Copy + 'static,
{
    let span = if threads == 1 {
        let t = Instant::now();
        f(iters);
        t.elapsed()
    } else {
        clocked_on_threads(threads, iters, f)
    };
    span.as_nanos() as f64 / iters as f64
}

/// Runs every workload and prints the figures (see the module docs).
pub fn run() {
    let iters: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(200_000);
    let reps: usize = std::env::var("GA_REPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(31)
        .max(1);
    let vecs = (iters / 200).max(1);
    for (name, f, n) in [
        ("box", box_ring as fn(u64), iters),
        ("vec", vec_push as fn(u64), vecs),
    ] {
        for threads in [1, 2] {
            let label = format!("{name}_{threads}t");
            if let Ok(only) = std::env::var("GA_ONLY") {
                if !only.split(',').any(|o| o.trim() == label) {
                    continue;
                }
            }
            let mut v: Vec<f64> = (0..reps).map(|_| ns_per_iter(threads, n, f)).collect();
            v.sort_by(f64::total_cmp);
            println!("{label}_ns={:.3}", v[reps / 2]);
            println!("{label}_min_ns={:.3}", v[0]);
        }
    }
}

/// Not a peer: a wrapper that only *calls* `System` and tests the result,
/// as any wrapper that counts refused allocations exactly must (`System`
/// and stats_alloc tail-jump to `malloc` instead), and does nothing else.
/// The floor of exact failure counting (`ga_call_floor`, and `call_floor`
/// in `benches/support`).
pub struct CallFloor;

/// Refused allocations seen by [`CallFloor`] (and the floor wrappers of
/// `benches/support`).
pub static FLOOR_FAILURES: AtomicU64 = AtomicU64::new(0);

/// Counts one refused allocation, out of line.
#[cold]
#[inline(never)]
pub fn floor_failure() {
    FLOOR_FAILURES.fetch_add(1, Relaxed);
}

// SAFETY: forwards every call to `System` unchanged.
unsafe impl GlobalAlloc for CallFloor {
    #[inline]
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `alloc`'s contract.
        let p = unsafe { System.alloc(l) };
        if p.is_null() {
            floor_failure();
        }
        p
    }
    #[inline]
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: the caller upholds `dealloc`'s contract.
        unsafe { System.dealloc(p, l) }
    }
    #[inline]
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        // SAFETY: the caller upholds `realloc`'s contract.
        let q = unsafe { System.realloc(p, l, n) };
        if q.is_null() {
            floor_failure();
        }
        q
    }
}
