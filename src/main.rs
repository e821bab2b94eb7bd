//! The allocscope demo service: a workload that allocates the way services
//! do (request-like churn, a growing cache, a slow leak), with allocscope as
//! its global allocator, printing what allocscope sees every second.
//!
//! `cargo run --release` (Ctrl-C to stop; `ALLOCSCOPE_DEMO_SECONDS=N` to stop
//! after N seconds).
use std::collections::HashMap;
use std::time::{Duration, Instant};

use allocscope::AllocScope;

#[global_allocator]
static ALLOC: AllocScope = AllocScope::system();

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

/// One request: parse, build a response, throw it all away.
fn handle_request(i: u64) -> usize {
    let body = format!(
        "{{\"id\":{i},\"items\":[{}]}}",
        (0..i % 50)
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    let words: Vec<&str> = body.split(',').collect();
    let mut resp = String::with_capacity(body.len() * 2);
    for w in &words {
        resp.push_str(w);
        resp.push('\n');
    }
    resp.len()
}

fn main() {
    let limit = std::env::var("ALLOCSCOPE_DEMO_SECONDS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok());
    let start = Instant::now();
    let mut cache: HashMap<u64, Vec<u8>> = HashMap::new();
    let mut leak: Vec<Box<[u8]>> = Vec::new();
    let workers: Vec<_> = (0..2)
        .map(|w| {
            std::thread::spawn(move || {
                let mut i = 0u64;
                loop {
                    std::hint::black_box(handle_request(i * 2 + w));
                    i += 1;
                    if i.is_multiple_of(1000) {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
            })
        })
        .collect();
    let mut last = allocscope::stats();
    let mut tick = 0u64;
    println!("allocscope demo: counting every allocation of this process (Ctrl-C to stop)");
    loop {
        std::thread::sleep(Duration::from_secs(1));
        tick += 1;
        // a cache that grows, then is trimmed
        for k in 0..200 {
            cache.insert(tick * 1000 + k, vec![0u8; 512 + (k as usize % 7) * 100]);
        }
        if cache.len() > 20_000 {
            cache.clear();
        }
        // a slow leak
        leak.push(vec![1u8; 64 * 1024].into_boxed_slice());
        let s = allocscope::stats();
        let d = s.delta(&last);
        println!(
            "heap={:.1} MiB live ({} objects), allocs/s={}, frees/s={}, reallocs/s={}, threads={}",
            mib(s.live_bytes()),
            s.live_objects(),
            d.allocations,
            d.deallocations,
            d.reallocations,
            allocscope::core_info().attached_blocks,
        );
        last = s;
        if limit.is_some_and(|l| start.elapsed().as_secs() >= l) {
            break;
        }
    }
    drop(workers);
}
