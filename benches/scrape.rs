//! Cost of one `/metrics` scrape (the collector's snapshot, the process
//! collector and the text encoding) with 1,000 live threads parked, each
//! with its own counter block to fold.
//!
//! `cargo bench --bench scrape`
use std::sync::mpsc;
use std::time::Duration;

use allocscope::server::{HeapCollector, Metrics, Snapshot};
use allocscope::AllocScope;
use criterion::{criterion_group, criterion_main, Criterion};

#[global_allocator]
static ALLOC: AllocScope = AllocScope::system();

const THREADS: usize = 1000;

/// Starts `n` threads that allocate (so each owns a counter block) and
/// park until the returned senders are dropped.
fn park_threads(n: usize) -> Vec<mpsc::Sender<()>> {
    let (ready_tx, ready_rx) = mpsc::channel();
    let stops = (0..n)
        .map(|_| {
            let (stop_tx, stop_rx) = mpsc::channel::<()>();
            let ready = ready_tx.clone();
            std::thread::Builder::new()
                .stack_size(64 * 1024)
                .spawn(move || {
                    let v: Vec<u64> = (0..64).collect();
                    ready.send(()).unwrap();
                    let _ = stop_rx.recv();
                    drop(v);
                })
                .expect("spawn");
            stop_tx
        })
        .collect();
    for _ in 0..n {
        ready_rx.recv().unwrap();
    }
    stops
}

fn bench(c: &mut Criterion) {
    let stops = park_threads(THREADS);
    assert!(allocscope::counters::info().attached_blocks >= THREADS);
    let metrics = Metrics::new(false);
    let mut g = c.benchmark_group("scrape_1000_threads");
    g.measurement_time(Duration::from_secs(5));
    g.bench_function("metrics_render", |b| b.iter(|| metrics.render()));
    let full = Metrics::new(true);
    g.bench_function("metrics_render_full_size_classes", |b| {
        b.iter(|| full.render())
    });
    let collector = HeapCollector::new(false);
    g.bench_function("snapshot_and_families", |b| {
        b.iter(|| collector.families(&Snapshot::take()))
    });
    g.finish();
    drop(stops);
}

criterion_group!(benches, bench);
criterion_main!(benches);
