//! Scenario: snapshots taken while threads allocate, free and exit never go
//! backwards.
//!
//! A running thread's exact-size counters live in its thread-local storage
//! and are folded into its block when it exits (`counters::block::Block::read_small`
//! and `fold_local`). A snapshot that overlapped a fold and counted its
//! events twice, or missed them, would show a total that later shrinks: a
//! counter reset to Prometheus. Here an observer takes snapshots as fast as
//! it can while waves of short-lived threads churn, and every cumulative
//! figure (totals and per class) must be non-decreasing from one snapshot to
//! the next.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use allocscope::AllocScope;

#[global_allocator]
static ALLOC: AllocScope = AllocScope::system();

fn churn(seed: u64) {
    let mut x = seed | 1;
    let mut keep = Vec::with_capacity(64);
    for i in 0..2_000u64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        // mostly small sizes (thread-local counters), some large ones
        let size = if i % 16 == 0 {
            (x % 20_000) as usize + 257
        } else {
            (x % 256) as usize + 1
        };
        keep.push(std::hint::black_box(vec![0u8; size]));
        if keep.len() == 64 {
            keep.clear();
        }
    }
}

/// Every cumulative figure of a snapshot, in a fixed order.
fn figures(s: &allocscope::Stats) -> Vec<u64> {
    let mut v = vec![
        s.allocations,
        s.deallocations,
        s.reallocations,
        s.allocated_bytes,
        s.freed_bytes,
    ];
    for c in &s.size_classes {
        v.extend([
            c.allocations,
            c.deallocations,
            c.allocated_bytes,
            c.freed_bytes,
        ]);
    }
    v
}

#[test]
fn snapshots_never_go_backwards_while_threads_exit() {
    let stop = Arc::new(AtomicBool::new(false));
    let observer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut prev = figures(&allocscope::stats());
            let mut n = 0u64;
            while !stop.load(Relaxed) {
                let cur = figures(&allocscope::stats());
                for (i, (a, b)) in prev.iter().zip(&cur).enumerate() {
                    assert!(
                        b >= a,
                        "figure {i} went backwards between two snapshots: {a} -> {b}"
                    );
                }
                prev = cur;
                n += 1;
            }
            n
        })
    };
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut waves = 0u64;
    while Instant::now() < deadline {
        let threads: Vec<_> = (0..4)
            .map(|t| std::thread::spawn(move || churn(waves * 8 + t)))
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        waves += 1;
    }
    stop.store(true, Relaxed);
    let snapshots = observer
        .join()
        .expect("the observer saw a figure go backwards");
    assert!(waves > 10, "threads came and went: {waves} waves");
    assert!(
        snapshots > 100,
        "snapshots were taken throughout: {snapshots}"
    );
}
