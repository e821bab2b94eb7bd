//! Instruction counts of allocation scopes, for callgrind: the loops of the
//! criterion bench `scope` (benches/scope.rs), one per run.
//!
//! `scope_cost MODE ITERS` runs ITERS iterations of MODE:
//! - `empty`: the loop alone;
//! - `enter_leave`: `let _g = S.enter();`, dropped at once;
//! - `ready_bare`, `ready_scoped`: one poll of a future that is ready on
//!   every poll, bare or `in_scope`;
//! - `pending_bare`, `pending_scoped`: one poll of a future that stays
//!   pending, waking itself through a no-op waker;
//! - `pairs_unscoped`, `pairs_scoped`: alloc+free pairs of 8..256 bytes
//!   through the global allocator, outside any scope or inside one (the
//!   same hot path: the scope is only read when it is switched).
//!
//! `scope_cost interleaved [ROUNDS] [ITERS]` times the same loops instead,
//! in this one process: each round runs every mode once (ITERS iterations,
//! default 200,000), in turn, and the figures are the medians over ROUNDS
//! (default 101) of the per-round nanoseconds per iteration and of the
//! per-round differences to the bare case. Neighbouring runs share this
//! machine's speed state, as in `bench_pairs interleaved`.
//!
//! ```text
//! for n in 1000000 2000000; do
//!   setarch -R valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/scope_cost enter_leave $n
//! done   # per iteration: (I(2000000) - I(1000000)) / 1000000, minus `empty`'s
//! ```
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Waker};

#[path = "../../../support/futures.rs"]
mod futures;

use allocscope::scope::{InScope, Scope};
use allocscope::AllocScope;
use futures::{AlwaysReady, Spin};

#[global_allocator]
static ALLOC: AllocScope = AllocScope::system();

static S: Scope = Scope::new("scope_cost");

#[inline(never)]
fn empty(n: u64) {
    for _ in 0..n {
        black_box(&S);
    }
}

#[inline(never)]
fn enter_leave(n: u64) {
    for _ in 0..n {
        let _g = black_box(&S).enter();
    }
}

#[inline(never)]
fn polls<F: Future>(f: F, n: u64) {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..n {
        black_box(black_box(f.as_mut()).poll(&mut cx).is_ready());
    }
}

#[inline(never)]
fn pairs(n: u64) {
    let mut ring: Vec<Box<[u8]>> = (0..64)
        .map(|i| vec![0u8; 8 + 8 * (i % 32)].into())
        .collect();
    for i in 0..n as usize {
        ring[i % 64] = black_box(vec![i as u8; 8 + 8 * (i % 32)].into_boxed_slice());
    }
    black_box(ring);
}

/// The timed modes of `interleaved`, each with the bare case it is
/// compared to.
const TIMED: [(&str, &str); 6] = [
    ("empty", "empty"),
    ("enter_leave", "empty"),
    ("ready_bare", "ready_bare"),
    ("ready_scoped", "ready_bare"),
    ("pending_bare", "pending_bare"),
    ("pending_scoped", "pending_bare"),
];

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn run(mode: &str, n: u64) {
    match mode {
        "empty" => empty(n),
        "enter_leave" => enter_leave(n),
        "ready_bare" => polls(AlwaysReady(1), n),
        "ready_scoped" => polls(AlwaysReady(1).in_scope(&S), n),
        "pending_bare" => polls(Spin(0), n),
        "pending_scoped" => polls(Spin(0).in_scope(&S), n),
        "pairs_unscoped" => pairs(n),
        "pairs_scoped" => S.within(|| pairs(n)),
        other => {
            eprintln!(
                "unknown mode {other:?}: empty, enter_leave, ready_bare, ready_scoped, \
                 pending_bare, pending_scoped, pairs_unscoped, pairs_scoped, interleaved"
            );
            std::process::exit(2);
        }
    }
}

/// Every timed mode in turn, `rounds` times (see the module docs).
fn interleaved(rounds: usize, iters: u64) {
    let modes: Vec<&str> = TIMED.iter().map(|(m, _)| *m).collect();
    let mut ns: Vec<Vec<f64>> = vec![Vec::with_capacity(rounds); modes.len()];
    for m in &modes {
        run(m, iters / 10); // warm up
    }
    for r in 0..rounds {
        // rotate the order each round
        for k in 0..modes.len() {
            let i = (k + r) % modes.len();
            let t = std::time::Instant::now();
            run(modes[i], iters);
            ns[i].push(t.elapsed().as_nanos() as f64 / iters as f64);
        }
    }
    for (i, (m, base)) in TIMED.iter().enumerate() {
        let j = modes.iter().position(|b| b == base).unwrap();
        let diffs: Vec<f64> = ns[i].iter().zip(&ns[j]).map(|(a, b)| a - b).collect();
        let mut sorted = ns[i].clone();
        sorted.sort_by(|a, b| a.total_cmp(b));
        println!(
            "{m}_ns={:.3} (p10 {:.3}, p90 {:.3}) over_{base}_ns={:.3}",
            median(ns[i].clone()),
            sorted[rounds / 10],
            sorted[rounds * 9 / 10],
            median(diffs),
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map(String::as_str).unwrap_or("enter_leave");
    if mode == "interleaved" {
        let rounds = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(101);
        let iters = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(200_000);
        return interleaved(rounds.max(1), iters);
    }
    let n: u64 = args
        .get(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    run(mode, n);
}
