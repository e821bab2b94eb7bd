//! Stand-alone overhead runner for `roundrobin.py` and callgrind.
//!
//! `bench_pairs ALLOCATOR [WORKLOAD] [ITERS]` runs the bench workloads with one
//! allocator and prints `NAME=NUMBER` lines (nanoseconds per alloc+free pair,
//! or per 1,000-element vector build), the median of 5 repetitions:
//!
//! ```text
//! cargo build --release -p allocscope-bench --bin bench_pairs
//! python3 benches/roundrobin.py -n 15 -- \
//!   'target/release/bench_pairs system' \
//!   'target/release/bench_pairs allocscope' ...
//! valgrind --tool=callgrind target/release/bench_pairs allocscope small1 1000000
//! ```
//! WORKLOAD is `all` (default), `small1` (small pairs, one thread, one run:
//! for instruction counts), `vec1` or `vec2` (vector builds on two threads,
//! one run, timed).
//!
//! `bench_pairs interleaved [ROUNDS] [ITERS]` runs every allocator in this
//! one process, one short repetition each in turn (ITERS pairs, default
//! 200,000: about 2 ms), for ROUNDS rounds (default 41), and prints for each
//! workload and allocator the median of its per-round ratios to System, with
//! the 10th-90th percentile band. Neighbouring repetitions share this
//! machine's speed state (it changes for seconds at a time), which separate
//! processes do not.
#[path = "../../../support/mod.rs"]
mod support;

use std::time::Instant;
use support::*;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("interleaved") {
        let rounds = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(41);
        let iters = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(200_000);
        return interleaved(rounds, iters);
    }
    let name = args.get(1).map(String::as_str).unwrap_or("system");
    let workload = args.get(2).map(String::as_str).unwrap_or("all");
    let Some(a) = by_name(name) else {
        let names: Vec<_> = allocators().into_iter().map(|(n, _)| n).collect();
        eprintln!("unknown allocator {name:?}; one of {names:?}");
        std::process::exit(2);
    };
    prepare(name);
    let iters: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(0);
    match workload {
        "small1" => small_pairs(a, iters.max(1)),
        "vec1" => vec_growth(a, iters.max(1)),
        "vec2" => {
            let n = iters.max(1);
            let t = on_threads(2, n, vec_growth_dyn, a);
            println!("vec_2t_ns={}", t.as_nanos() as f64 / n as f64);
            eprintln!("{:?}", allocscope::sampling::stats());
        }
        "all" => {
            let small = if iters > 0 { iters } else { 2_000_000 };
            let vecs = (small / 200).max(1);
            let reps = 5;
            let one = |f: fn(&'static (dyn std::alloc::GlobalAlloc + Sync), u64), n: u64| {
                median(
                    (0..reps)
                        .map(|_| {
                            let t = Instant::now();
                            f(a, n);
                            t.elapsed().as_nanos() as f64 / n as f64
                        })
                        .collect(),
                )
            };
            let two = |f, n: u64| {
                median(
                    (0..reps)
                        .map(|_| on_threads(2, n, f, a).as_nanos() as f64 / n as f64)
                        .collect(),
                )
            };
            println!("small_1t_ns={:.3}", one(small_pairs_dyn, small));
            println!("small_2t_ns={:.3}", two(small_pairs_dyn, small));
            println!("vec_1t_ns={:.1}", one(vec_growth_dyn, vecs));
            println!("vec_2t_ns={:.1}", two(vec_growth_dyn, vecs));
        }
        other => {
            eprintln!("unknown workload {other:?}: all, small1 or vec1");
            std::process::exit(2);
        }
    }
}

/// Every allocator in turn, `rounds` times, in this process (see the module
/// docs).
fn interleaved(rounds: usize, iters: u64) {
    type Work = fn(&'static (dyn std::alloc::GlobalAlloc + Sync), u64);
    let allocs = allocators();
    let workloads: [(&str, Work, u64, usize); 4] = [
        ("small_1t", small_pairs_dyn, iters, 1),
        ("small_2t", small_pairs_dyn, iters, 2),
        ("vec_1t", vec_growth_dyn, (iters / 200).max(1), 1),
        ("vec_2t", vec_growth_dyn, (iters / 200).max(1), 2),
    ];
    for (wname, f, n, threads) in workloads {
        // times[a][r]: ns per iteration of allocator a in round r
        let mut times = vec![Vec::with_capacity(rounds); allocs.len()];
        for r in 0..rounds {
            // rotate the order so no allocator always follows the same one
            for k in 0..allocs.len() {
                let i = (k + r) % allocs.len();
                let (name, a) = allocs[i];
                prepare(name);
                times[i].push(ga_workload::ns_per_iter(threads, n, move |k| f(a, k)));
            }
        }
        let base = times[0].clone();
        println!("{wname}: System median {:.3} ns", median(base.clone()));
        for (i, (name, _)) in allocs.iter().enumerate().skip(1) {
            let mut ratios: Vec<f64> = times[i].iter().zip(&base).map(|(t, b)| t / b).collect();
            ratios.sort_by(|a, b| a.total_cmp(b));
            let pct = |p: usize| ratios[(ratios.len() - 1) * p / 100];
            println!(
                "  {name:22} {:.3}x  [{:.3}..{:.3}]",
                median(ratios.clone()),
                pct(10),
                pct(90)
            );
        }
    }
}
