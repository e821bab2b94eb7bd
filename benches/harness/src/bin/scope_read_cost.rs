//! What reading the scopes and the thread groups costs a scrape:
//! `scope::stats()` and `threads::stats()` with N live threads (each has
//! allocated in a few scopes, then parks) and 16 named scopes, against
//! `allocscope::stats()` (the scrape's existing fold of every block).
//!
//! `cargo run --release -p allocscope-bench --bin scope_read_cost [THREADS]`
//! (default 64). Times are the calling thread's CPU time
//! (`CLOCK_THREAD_CPUTIME_ID`), median and max over 201 reads each, the
//! three interleaved: while the threads are under a second old (a reader
//! reads each one's group from `/proc`), and after (cached in its block).
#[path = "../../../support/clock.rs"]
mod clock;

use std::hint::black_box;
use std::sync::{Arc, Barrier};

use allocscope::scope::Scope;

use clock::thread_cpu_ns;

#[global_allocator]
static A: allocscope::AllocScope = allocscope::AllocScope::system();

fn main() {
    let threads: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(64);
    let scopes: Vec<&'static Scope> = (0..16)
        .map(|i| Scope::named(format!("scope-{i}")))
        .collect();
    let ready = Arc::new(Barrier::new(threads + 1));
    let done = Arc::new(Barrier::new(threads + 1));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (ready, done, scopes) = (ready.clone(), done.clone(), scopes.clone());
            std::thread::Builder::new()
                .name(format!("group-{}-{t}", t % 16))
                .spawn(move || {
                    for (i, s) in scopes.iter().enumerate().skip(t % 4).step_by(4) {
                        s.within(|| black_box(vec![0u8; 64 + i]));
                    }
                    ready.wait();
                    done.wait();
                })
                .unwrap()
        })
        .collect();
    ready.wait();
    let blocks = allocscope::counters::info().blocks;
    println!("{threads} live threads, {blocks} counter blocks, 16 named scopes");
    // at once (the threads' groups read from /proc each time), then after
    // a second (read once, then cached in the blocks)
    for when in ["threads under 1 s old", "threads over 1 s old"] {
        if when.contains("over") {
            std::thread::sleep(std::time::Duration::from_millis(1100));
        }
        let mut times = [Vec::new(), Vec::new(), Vec::new()];
        for _ in 0..201 {
            let t0 = thread_cpu_ns();
            black_box(allocscope::stats());
            let t1 = thread_cpu_ns();
            black_box(allocscope::scope::stats());
            let t2 = thread_cpu_ns();
            black_box(allocscope::threads::stats());
            let t3 = thread_cpu_ns();
            times[0].push(t1 - t0);
            times[1].push(t2 - t1);
            times[2].push(t3 - t2);
        }
        println!("{when}:");
        for (name, t) in ["stats()", "scope::stats()", "threads::stats()"]
            .iter()
            .zip(times.iter_mut())
        {
            t.sort_unstable();
            println!(
                "{name:>18}: median {:>8.1} µs, max {:>8.1} µs",
                t[t.len() / 2] as f64 / 1e3,
                t[t.len() - 1] as f64 / 1e3
            );
        }
    }
    done.wait();
    for h in handles {
        h.join().unwrap();
    }
}
