//! What one leak snapshot costs the exporter: CPU time of the heap capture
//! and of `LeakTracker::record` (grouping by stack, the ring, the trend
//! tests and the report), with 10,000 live samples (every allocation
//! sampled: interval 1 B), and the tracker's memory once its ring is full.
//!
//! `cargo run --release -p allocscope-bench --bin leak_snapshot_cost`
//! (`LEAK_COST_SNAPSHOTS=N` snapshots per layout, default 80: the ring of 60
//! fills, then turns). Two layouts of the 10,000 samples: 100 stacks of 100
//! samples, and 500 stacks of 20 (more stacks than the tracker keeps, 256).
//! Times are the calling thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`),
//! median and max over the snapshots after the first (which symbolises);
//! wall time per snapshot likewise (the host is idle meanwhile).
#[path = "../../../support/clock.rs"]
mod clock;

use std::hint::black_box;
use std::time::Instant;

use allocscope::profile::{HeapProfile, LeakTracker};

use clock::thread_cpu_ns;

#[global_allocator]
static A: allocscope::AllocScope = allocscope::AllocScope::system();

type Site = fn(usize, usize, &mut Vec<Box<[u8]>>);

/// Sites with distinct code, each recursing `depth` times before it
/// allocates: (site, depth) is a stack of its own.
macro_rules! sites {
    ($($name:ident = $k:literal),* $(,)?) => {
        $(
            #[inline(never)]
            fn $name(depth: usize, n: usize, keep: &mut Vec<Box<[u8]>>) {
                if depth > 0 {
                    $name(black_box(depth - 1), n, keep);
                    black_box(depth);
                    return;
                }
                for _ in 0..n {
                    keep.push(black_box(vec![$k as u8; 48]).into_boxed_slice());
                }
            }
        )*
        const SITES: &[Site] = &[$($name),*];
    };
}

sites!(
    s0 = 0,
    s1 = 1,
    s2 = 2,
    s3 = 3,
    s4 = 4,
    s5 = 5,
    s6 = 6,
    s7 = 7,
    s8 = 8,
    s9 = 9
);

fn median(v: &mut [u64]) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

fn main() {
    let snapshots: usize = std::env::var("LEAK_COST_SNAPSHOTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(80);
    for (stacks, per) in [(100usize, 100usize), (500, 20)] {
        allocscope::sampling::set_interval(1);
        let mut keep: Vec<Box<[u8]>> = Vec::with_capacity(stacks * per);
        for i in 0..stacks {
            SITES[i % SITES.len()](i / SITES.len(), per, &mut keep);
        }
        allocscope::sampling::set_interval(0);
        let live = allocscope::sampling::stats().live_samples;
        let mut tracker = LeakTracker::new(60);
        let (mut capture, mut record) = (Vec::new(), Vec::new());
        let mut wall = Instant::now();
        for i in 0..snapshots {
            if i == 1 {
                wall = Instant::now();
            }
            let t0 = thread_cpu_ns();
            let p = HeapProfile::capture();
            let t1 = thread_cpu_ns();
            tracker.record(&p);
            let t2 = thread_cpu_ns();
            drop(p);
            if i > 0 {
                capture.push(t1 - t0);
                record.push(t2 - t1);
            }
        }
        let wall = wall.elapsed() / (snapshots.max(2) - 1) as u32;
        let r = tracker.report();
        println!(
            "{stacks} stacks x {per}: {live} live samples; capture median {:.2} ms (max {:.2}), \
             record median {:.2} ms (max {:.2}); wall {:.2} ms a snapshot; tracker {} stacks, \
             {} snapshots, {} bytes",
            median(&mut capture) as f64 / 1e6,
            capture.iter().max().copied().unwrap_or(0) as f64 / 1e6,
            median(&mut record) as f64 / 1e6,
            record.iter().max().copied().unwrap_or(0) as f64 / 1e6,
            wall.as_secs_f64() * 1e3,
            r.tracked_stacks,
            r.snapshots,
            tracker.memory_bytes(),
        );
        drop(keep);
    }
}
