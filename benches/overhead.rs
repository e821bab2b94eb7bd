//! Overhead of counting: allocscope against System and the peers, every
//! allocator in the same run (called through `GlobalAlloc` directly).
//!
//! `cargo bench --bench overhead` (add `-- small_pairs/1t` to filter).
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

mod support;
use support::*;

fn bench(c: &mut Criterion) {
    for (workload, f, unit) in [
        ("small_pairs", small_pairs_dyn as fn(_, _), 1u64),
        ("vec_growth", vec_growth_dyn as fn(_, _), 1u64),
    ] {
        for threads in [1usize, 2] {
            let mut g = c.benchmark_group(format!("{workload}/{threads}t"));
            g.throughput(Throughput::Elements(unit));
            for (name, a) in allocators() {
                g.bench_function(name, |b| {
                    prepare(name);
                    b.iter_custom(|iters| {
                        if threads == 1 {
                            let t = std::time::Instant::now();
                            f(a, iters);
                            t.elapsed()
                        } else {
                            on_threads(threads, iters, f, a)
                        }
                    })
                });
            }
            g.finish();
        }
    }
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2))
}

criterion_group! { name = benches; config = config(); targets = bench }
criterion_main!(benches);
