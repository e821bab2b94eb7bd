//! The exact figures the heap profiles are checked against: the service
//! with allocscope around `System` (no exporter), every call of
//! `summarize_order` and `run_search` counted with `allocscope::measure`.
//! `GET /exact` answers `NAME=NUMBER` lines: each function's calls,
//! allocations and allocated bytes, and the process's totals since start.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use allocscope::AllocScope;
use allocscope_service_bench::Handler;
use axum::routing::get;

#[global_allocator]
static ALLOC: AllocScope = AllocScope::system();

/// calls, allocations, allocated bytes: order, then search
static COUNTS: [[AtomicU64; 3]; 2] = [
    [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)],
    [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)],
];

fn meter(h: Handler, f: &mut dyn FnMut()) {
    let ((), d) = allocscope::measure(f);
    let c = &COUNTS[(h == Handler::Search) as usize];
    c[0].fetch_add(1, Relaxed);
    c[1].fetch_add(d.allocations, Relaxed);
    c[2].fetch_add(d.allocated_bytes, Relaxed);
}

async fn exact() -> String {
    let s = allocscope::stats();
    let mut out = String::new();
    for (name, c) in ["order", "search"].iter().zip(&COUNTS) {
        out.push_str(&format!(
            "{name}_calls={}\n{name}_allocations={}\n{name}_bytes={}\n",
            c[0].load(Relaxed),
            c[1].load(Relaxed),
            c[2].load(Relaxed)
        ));
    }
    out.push_str(&format!(
        "total_allocations={}\ntotal_bytes={}\n",
        s.allocations, s.allocated_bytes
    ));
    out
}

fn main() -> std::io::Result<()> {
    allocscope_service_bench::set_meter(meter);
    allocscope_service_bench::run(axum::Router::new().route("/exact", get(exact)))
}
