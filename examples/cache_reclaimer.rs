//! A cache that gives memory back when the process is under pressure:
//! it registers a reclaimer, which allocscope's collection cycles call
//! (Go's `GOGC` and `GOMEMLIMIT`, for memory a Rust program holds on
//! purpose).
//!
//! `cargo run --release --example cache_reclaimer`: fills the cache past a
//! 24 MiB memory limit, lets the collector shed it, then runs a cycle by
//! hand.
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use allocscope::gc::{self, CycleReason, Pressure};
use allocscope::AllocScope;

#[global_allocator]
static ALLOC: AllocScope = AllocScope::system();

const MIB: u64 = 1 << 20;

/// Responses by key, oldest first (keys are handed out in order).
#[derive(Default)]
struct Cache {
    entries: BTreeMap<u64, Vec<u8>>,
    bytes: usize,
    next_key: u64,
}

impl Cache {
    fn insert(&mut self, value: Vec<u8>) {
        self.bytes += value.capacity();
        self.entries.insert(self.next_key, value);
        self.next_key += 1;
    }

    /// Drops the oldest entries until `want` bytes are freed (or the cache
    /// is empty); returns the bytes freed.
    fn shed(&mut self, want: usize) -> usize {
        let mut freed = 0;
        while freed < want {
            let Some((_, value)) = self.entries.pop_first() else {
                break;
            };
            freed += value.capacity();
        }
        self.bytes -= freed;
        freed
    }

    /// What to give back under `p`: what takes the heap back under its goal
    /// and its limit, plus a margin; for a manual cycle with no pressure
    /// ("give back what is cheap"), the older half.
    fn reclaim(&mut self, p: &Pressure) -> usize {
        let want = if p.excess_bytes() > 0 {
            p.excess_bytes() as usize + self.bytes / 4
        } else if p.reason == CycleReason::Manual {
            self.bytes / 2
        } else {
            0
        };
        self.shed(want)
    }
}

fn main() -> Result<(), allocscope::Error> {
    let cache = Arc::new(Mutex::new(Cache::default()));

    // Called in every cycle, in registration order, on the collector's
    // thread (never inside an allocation): it may lock and allocate. It
    // returns the bytes it believes it freed. Keep the handle: dropping it
    // unregisters the reclaimer.
    let shared = Arc::clone(&cache);
    let _reclaimer = gc::register_reclaimer("response cache", move |p: &Pressure| {
        shared.lock().map_or(0, |mut c| c.reclaim(p))
    });

    // GOGC=200: a cycle when the heap has tripled since the last one; the
    // previous setting (100 by default) comes back, like SetGCPercent.
    let previous = gc::set_threshold(Some(200));
    // GOMEMLIMIT=24MiB: a cycle whenever live bytes pass it, even with the
    // threshold off. Zero is refused, as in the configuration file.
    gc::set_memory_limit(Some(24 * MIB))?;
    println!(
        "threshold {previous:?} -> {:?}, memory limit 24 MiB",
        gc::threshold()
    );

    // The service fills its cache: 40 MiB of 64 KiB responses. Cycles run on
    // allocscope's collector thread as live bytes pass the goal or the limit.
    for i in 0..640u32 {
        let response = vec![(i % 251) as u8; 64 * 1024];
        cache.lock().expect("cache lock").insert(response);
        if i % 64 == 0 {
            std::thread::sleep(Duration::from_millis(10)); // the collector polls every 5 ms
        }
    }
    std::thread::sleep(Duration::from_millis(50));
    for c in gc::cycles() {
        println!(
            "cycle {} ({}): live {:.1} -> {:.1} MiB, reclaimers freed {:.1} MiB, took {:?}",
            c.number,
            c.reason,
            c.live_bytes_before as f64 / MIB as f64,
            c.live_bytes_after as f64 / MIB as f64,
            c.reclaimed_bytes as f64 / MIB as f64,
            c.duration
        );
    }

    // A cycle now, on this thread (blocking, not CPU-limited): what
    // `POST /gc/collect` runs. Do not hold the cache's lock while calling
    // it: the reclaimer takes that lock.
    let c = gc::collect();
    println!(
        "manual cycle: live {:.1} -> {:.1} MiB, {} bytes released to the OS",
        c.live_bytes_before as f64 / MIB as f64,
        c.live_bytes_after as f64 / MIB as f64,
        c.released_bytes
    );
    let s = gc::stats();
    println!(
        "{} cycles ({} threshold, {} limit, {} manual); cache holds {} entries",
        s.cycles(),
        s.cycles_for(CycleReason::Threshold),
        s.cycles_for(CycleReason::Limit),
        s.cycles_for(CycleReason::Manual),
        cache.lock().expect("cache lock").entries.len()
    );
    Ok(())
}
