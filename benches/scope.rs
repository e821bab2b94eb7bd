//! Cost of allocation scopes (`allocscope::scope`), each contender beside
//! its bare case in the same criterion group, in the same process:
//! - `scope_enter_leave`: `let _g = S.enter();` dropped at once, against an
//!   empty iteration;
//! - `scope_poll_ready`: polling a future that is ready on every poll,
//!   bare and `in_scope`;
//! - `scope_poll_pending`: polling a future that stays pending (it wakes
//!   itself through a no-op waker, as a future polled many times does),
//!   bare and `in_scope`.
//!
//! Each group is measured twice: in wall-clock time (`scope_*`), and in the
//! benchmarking thread's own CPU time (`cpu_scope_*`,
//! `CLOCK_THREAD_CPUTIME_ID`), which leaves out the time the thread waited
//! for a core on a shared machine.
//!
//! allocscope is the global allocator here, so the benchmarking thread owns
//! a counter block and a scope switch books into it, as in a service.
//!
//! `cargo bench --bench scope -- --warm-up-time 1 --measurement-time 3`.
//! Instruction counts of the same loops: `benches/harness`, `scope_cost`
//! (docs/measurements.md, "Scopes").
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Waker};

#[path = "support/clock.rs"]
mod clock;
#[path = "support/futures.rs"]
mod futures;

use allocscope::scope::{InScope, Scope};
use allocscope::AllocScope;
use clock::thread_cpu_ns;
use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use futures::{AlwaysReady, Spin};

#[global_allocator]
static ALLOC: AllocScope = AllocScope::system();

static S: Scope = Scope::new("bench");

/// The calling thread's CPU time, in nanoseconds.
struct ThreadCpu;

impl Measurement for ThreadCpu {
    type Intermediate = u64;
    type Value = u64;

    fn start(&self) -> u64 {
        thread_cpu_ns()
    }
    fn end(&self, start: u64) -> u64 {
        thread_cpu_ns() - start
    }
    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }
    fn zero(&self) -> u64 {
        0
    }
    fn to_f64(&self, v: &u64) -> f64 {
        *v as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        &Nanoseconds
    }
}

/// Values in nanoseconds, shown as they are.
struct Nanoseconds;

impl ValueFormatter for Nanoseconds {
    fn scale_values(&self, _: f64, _: &mut [f64]) -> &'static str {
        "ns"
    }
    fn scale_throughputs(&self, _: f64, t: &Throughput, values: &mut [f64]) -> &'static str {
        let n = match t {
            Throughput::Elements(n) | Throughput::Bytes(n) | Throughput::BytesDecimal(n) => *n,
            _ => 1,
        };
        for v in values {
            *v = n as f64 * 1e9 / *v;
        }
        "/s"
    }
    fn scale_for_machines(&self, _: &mut [f64]) -> &'static str {
        "ns"
    }
}

/// `cpu_` for the thread-CPU-time run, nothing for wall-clock time.
trait Prefix {
    const PREFIX: &'static str;
}
impl Prefix for criterion::measurement::WallTime {
    const PREFIX: &'static str = "";
}
impl Prefix for ThreadCpu {
    const PREFIX: &'static str = "cpu_";
}

fn enter_leave<M: Measurement + Prefix>(c: &mut Criterion<M>) {
    let mut g = c.benchmark_group(format!("{}scope_enter_leave", M::PREFIX));
    g.bench_function("bare", |b| b.iter(|| black_box(&S)));
    g.bench_function("enter_leave", |b| {
        b.iter(|| {
            let _g = black_box(&S).enter();
        })
    });
    g.finish();
}

/// `bare` and `in_scope` polls of `make()`'s future, in group `name`.
fn polls<M: Measurement + Prefix, F: Future>(
    c: &mut Criterion<M>,
    name: &str,
    make: impl Fn() -> F,
) {
    let mut g = c.benchmark_group(format!("{}{name}", M::PREFIX));
    let mut cx = Context::from_waker(Waker::noop());
    g.bench_function("bare", |b| {
        let mut f = pin!(make());
        b.iter(|| black_box(f.as_mut()).poll(&mut cx).is_ready())
    });
    g.bench_function("in_scope", |b| {
        let mut f = pin!(make().in_scope(&S));
        b.iter(|| black_box(f.as_mut()).poll(&mut cx).is_ready())
    });
    g.finish();
}

fn poll_ready<M: Measurement + Prefix>(c: &mut Criterion<M>) {
    polls(c, "scope_poll_ready", || AlwaysReady(1));
}

fn poll_pending<M: Measurement + Prefix>(c: &mut Criterion<M>) {
    polls(c, "scope_poll_pending", || Spin(0));
}

criterion_group!(benches, enter_leave, poll_ready, poll_pending);
criterion_group! {
    name = benches_cpu;
    config = Criterion::default().with_measurement(ThreadCpu);
    targets = enter_leave, poll_ready, poll_pending
}
criterion_main!(benches, benches_cpu);
