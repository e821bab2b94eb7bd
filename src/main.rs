//! The allocscope demo service: a workload that allocates the way services
//! do (request-like churn, a cache that grows, a slow leak), with allocscope
//! as its global allocator and the exporter serving every view of it.
//!
//! It uses scopes as a service would, so that the landing page's "Memory
//! by scope" table says who holds what: the request workers' requests run
//! in `handle_request`, the async API handlers in `api` (`in_scope` on
//! their futures, which move between the runtime's workers), the cache in
//! `cache`, the leak in `leak`; the exporter's own work is `allocscope`.
//!
//! `cargo run --release`, then open the printed URL (Ctrl-C to stop;
//! `ALLOCSCOPE_DEMO_SECONDS=N` stops after N seconds). Configuration as for
//! any allocscope service: `config/allocscope.toml` or `ALLOCSCOPE_<KEY>`,
//! e.g. `ALLOCSCOPE_ADDR=127.0.0.1:0` for any free port.
use std::collections::HashMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use allocscope::scope::{InScope, Scope};
use allocscope::server::{self, Config};
use allocscope::AllocScope;

#[global_allocator]
static ALLOC: AllocScope = AllocScope::system();

/// The request workers' requests.
static HANDLE_REQUEST: Scope = Scope::new("handle_request");
/// The async API handlers (futures on a tokio runtime).
static API: Scope = Scope::new("api");
/// The cache: its fills, and its shedding when a collection cycle asks.
static CACHE: Scope = Scope::new("cache");
/// The slow leak.
static LEAK: Scope = Scope::new("leak");

/// One async API request: a lookup that awaits, then a JSON answer.
async fn api_request(i: u64) -> usize {
    let ids: Vec<u64> = (0..i % 32).collect();
    tokio::task::yield_now().await;
    let body = format!("{{\"request\":{i},\"ids\":{ids:?}}}");
    body.len()
}

/// The async API: 20 requests every 20 ms, each a task in the scope `api`
/// on a runtime of two workers named `api-worker` (so the tasks move
/// between threads, and the scope follows them).
fn spawn_api() -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("api-worker")
        .enable_time()
        .build()?;
    std::thread::Builder::new()
        .name("api-acceptor".into())
        .spawn(move || {
            rt.block_on(async {
                let mut tick = tokio::time::interval(Duration::from_millis(20));
                let mut i = 0u64;
                loop {
                    tick.tick().await;
                    for _ in 0..20 {
                        i += 1;
                        tokio::spawn(async move {
                            std::hint::black_box(api_request(i).in_scope(&API).await);
                        });
                    }
                }
            })
        })?;
    Ok(())
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

/// A cache that grows by 200 entries a second and keeps the last 20
/// seconds' (4,000 entries, about 3 MiB: it grows, then holds steady as old
/// entries are dropped), and sheds half when a collection cycle asks (its
/// reclaimer). A cache, not a leak: `/debug/leaks` must not name it.
struct Cache {
    map: HashMap<u64, Vec<u8>>,
}

impl Cache {
    /// Drops the older half of the entries; returns the bytes it freed.
    fn shed(&mut self) -> usize {
        let mut keys: Vec<u64> = self.map.keys().copied().collect();
        keys.sort_unstable();
        let mut freed = 0;
        for k in &keys[..keys.len() / 2] {
            freed += self.map.remove(k).map_or(0, |v| v.capacity());
        }
        self.map.shrink_to_fit();
        freed
    }

    fn fill(&mut self, tick: u64) {
        for k in 0..200 {
            self.map
                .insert(tick * 1000 + k, vec![0u8; 512 + (k as usize % 7) * 100]);
        }
        // drop the entries filled 20 seconds ago
        if let Some(old) = tick.checked_sub(20) {
            for k in 0..200 {
                self.map.remove(&(old * 1000 + k));
            }
        }
    }
}

/// A slow leak: 64 KiB a second, never freed. With the default settings it
/// tops `/debug/leaks` and the landing page's leak suspects after 5
/// snapshots (4 minutes).
fn leak_a_little(leaked: &mut Vec<Box<[u8]>>) {
    leaked.push(vec![1u8; 64 * 1024].into_boxed_slice());
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_target(false)
        .with_max_level(tracing::Level::INFO)
        .init();
    let config = match Config::load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("allocscope demo: {e}");
            return ExitCode::from(2);
        }
    };
    let server = match server::start(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("allocscope demo: {e}");
            return ExitCode::from(1);
        }
    };
    let url = server.url();
    println!("allocscope demo: a workload with allocscope as its allocator (Ctrl-C to stop)");
    println!("  landing page:   {url}");
    println!("  metrics:        {url}metrics");
    println!("  heap profile:   go tool pprof {url}debug/pprof/heap");
    println!("  CPU profile:    go tool pprof -seconds 5 {url}debug/pprof/profile");
    println!("  flamegraph:     {url}debug/pprof/heap.svg");

    let limit = std::env::var("ALLOCSCOPE_DEMO_SECONDS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok());
    let start = Instant::now();
    for w in 0..2u64 {
        std::thread::Builder::new()
            .name(format!("request-worker-{w}"))
            .spawn(move || {
                let mut i = 0u64;
                loop {
                    std::hint::black_box(HANDLE_REQUEST.within(|| handle_request(i * 2 + w)));
                    i += 1;
                    // bursts of requests with pauses: busy, not a CPU hog
                    if i.is_multiple_of(200) {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
            })
            .expect("spawn a worker");
    }
    if let Err(e) = spawn_api() {
        eprintln!("allocscope demo: cannot start the async API ({e}); going on without it");
    }
    let cache = std::sync::Arc::new(std::sync::Mutex::new(Cache {
        map: HashMap::new(),
    }));
    // a collection cycle (threshold, memory limit, `POST /gc/collect`) sheds
    // half of the cache
    let shed = cache.clone();
    let _reclaimer = allocscope::gc::register_reclaimer("demo-cache", move |_pressure| {
        CACHE.within(|| shed.lock().map_or(0, |mut c| c.shed()))
    });
    let mut leaked = Vec::new();
    let mut tick = 0u64;
    loop {
        std::thread::sleep(Duration::from_secs(1));
        tick += 1;
        if let Ok(mut c) = cache.lock() {
            CACHE.within(|| c.fill(tick));
        }
        LEAK.within(|| leak_a_little(&mut leaked));
        if limit.is_some_and(|l| start.elapsed().as_secs() >= l) {
            break;
        }
    }
    server.shutdown();
    ExitCode::SUCCESS
}
