//! Times heap profile captures (symbolisation included): `cargo run --release -p allocscope-bench --bin capture_timing`.
use std::time::Instant;

#[global_allocator]
static A: allocscope::AllocScope = allocscope::AllocScope::system();

#[inline(never)]
fn work(n: usize) -> Vec<Vec<u8>> {
    (0..n).map(|i| vec![0u8; 100 + i % 1000]).collect()
}

fn main() {
    allocscope::sampling::set_interval(4096);
    let mut keep = Vec::new();
    for round in 0..5 {
        keep.push(work(10_000));
        let t = Instant::now();
        let p = allocscope::profile::HeapProfile::capture();
        let t1 = t.elapsed();
        let f = p.folded(allocscope::profile::SampleType::InuseSpace);
        let t2 = t.elapsed();
        let pp = p.to_pprof(allocscope::profile::PprofKind::Heap);
        let t3 = t.elapsed();
        let rss_kib = std::fs::read_to_string("/proc/self/statm")
            .ok()
            .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
            .map_or(0, |pages| pages * 4);
        println!("round {round}: capture {t1:?}, folded {:?}, pprof {:?}; {} buckets, {} folded bytes, {} pprof bytes, {} cached symbols; heap {} KiB live, RSS {rss_kib} KiB",
            t2 - t1, t3 - t2, p.buckets().len(), f.len(), pp.len(), allocscope::profile::symbol_cache_len(),
            allocscope::stats().live_bytes() / 1024);
    }
}
