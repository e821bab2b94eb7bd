//! Scenario: `AllocScope::system()` with the exporter, soaked. Eight
//! threads churn allocations (cross-thread frees, sampling every 4 KiB)
//! while short-lived threads come and go, and a client at the same time
//! scrapes `/metrics`, pulls heap and allocs profiles and flamegraphs, saves
//! baselines, changes the threshold and the sample interval and runs
//! collections. Runs ALLOCSCOPE_SOAK_SECS seconds (default 60). A watchdog
//! fails the run, printing every thread's progress, if anything stops making
//! progress. Afterwards every thread's counts equal its model, every HTTP
//! answer was a success, and the sampler stayed within its caps.
use std::alloc::{GlobalAlloc, Layout};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use allocscope::server::{self, Config};
use allocscope::{AllocScope, ThreadStats};

mod http;

#[global_allocator]
static ALLOC: AllocScope = AllocScope::system();

const WORKERS: usize = 8;

struct Block(usize, Layout);

fn rng(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// Churns until `until`, passing one block in four to `outbox` and freeing
/// what arrives in `inbox`; returns (measured, model).
fn churn(
    id: u64,
    until: Instant,
    inbox: &Mutex<Vec<Block>>,
    outbox: &Mutex<Vec<Block>>,
    progress: &AtomicU64,
) -> (ThreadStats, ThreadStats) {
    let mut model = ThreadStats::default();
    let mut x = id.wrapping_mul(0x9E37_79B9) | 1;
    let mut live: Vec<Block> = Vec::with_capacity(256);
    let mut got: Vec<Block> = Vec::with_capacity(1024);
    let (_, measured) = allocscope::measure(|| {
        let mut i = 0u64;
        while Instant::now() < until {
            i += 1;
            progress.store(i, SeqCst);
            let r = rng(&mut x);
            let size = match r % 8 {
                0..=4 => (r >> 8) as usize % 256 + 1,
                5 | 6 => 256 + (r >> 8) as usize % 16_000,
                _ => 16_000 + (r >> 8) as usize % 200_000,
            };
            let layout = Layout::from_size_align(size, 1 << ((r >> 40) % 5)).unwrap();
            // SAFETY: valid layouts; each block is freed once with its layout.
            let p = unsafe { ALLOC.alloc(layout) };
            assert!(!p.is_null());
            model.allocations += 1;
            model.allocated_bytes += size as u64;
            if r.is_multiple_of(4) {
                let mut out = outbox.lock().unwrap();
                if out.len() < out.capacity() {
                    out.push(Block(p as usize, layout));
                    continue;
                }
            }
            if live.len() == live.capacity() {
                let old = live.swap_remove((r >> 20) as usize % live.len());
                // SAFETY: a live block of this allocator, freed once, with the layout it was allocated with.
                unsafe { ALLOC.dealloc(old.0 as *mut u8, old.1) };
                model.deallocations += 1;
                model.freed_bytes += old.1.size() as u64;
            }
            live.push(Block(p as usize, layout));
            if i.is_multiple_of(32) {
                got.extend(inbox.lock().unwrap().drain(..));
                for b in got.drain(..) {
                    // SAFETY: a live block of this allocator, freed once, with the layout it was allocated with.
                    unsafe { ALLOC.dealloc(b.0 as *mut u8, b.1) };
                    model.deallocations += 1;
                    model.freed_bytes += b.1.size() as u64;
                }
            }
            if i.is_multiple_of(1024) {
                std::thread::yield_now();
            }
        }
        for b in live.drain(..) {
            // SAFETY: a live block of this allocator, freed once, with the layout it was allocated with.
            unsafe { ALLOC.dealloc(b.0 as *mut u8, b.1) };
            model.deallocations += 1;
            model.freed_bytes += b.1.size() as u64;
        }
    });
    (measured, model)
}

fn free_all(m: &Mutex<Vec<Block>>) {
    for b in m.lock().unwrap().drain(..) {
        // SAFETY: a live block with its layout.
        unsafe { ALLOC.dealloc(b.0 as *mut u8, b.1) };
    }
}

fn ok(addr: SocketAddr, method: &str, path: &str) -> usize {
    let r = http::request(addr, method, path, &[], b"");
    assert!(
        r.status == 200,
        "{method} {path}: {} {}",
        r.status,
        r.text()
    );
    r.body.len()
}

#[test]
fn soak_exporter_and_allocator_together() {
    let secs: u64 = std::env::var("ALLOCSCOPE_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let start = Instant::now();
    let until = start + Duration::from_secs(secs);
    let srv = server::start(
        Config::default()
            .addr("127.0.0.1:0".parse().unwrap())
            .log_interval(Duration::ZERO)
            .sample_interval(4096),
    )
    .expect("start the exporter");
    let addr = srv.local_addr();
    let done = Arc::new(AtomicBool::new(false));
    let progress: Arc<Vec<AtomicU64>> =
        Arc::new((0..WORKERS + 2).map(|_| AtomicU64::new(0)).collect());

    let (wd_done, wd_progress) = (done.clone(), progress.clone());
    std::thread::spawn(move || {
        let mut last: Vec<u64> = wd_progress.iter().map(|p| p.load(SeqCst)).collect();
        let mut since = Instant::now();
        while !wd_done.load(SeqCst) {
            std::thread::sleep(Duration::from_millis(500));
            let now: Vec<u64> = wd_progress.iter().map(|p| p.load(SeqCst)).collect();
            if now != last {
                since = Instant::now();
                last = now;
            } else if since.elapsed() > Duration::from_secs(30) {
                eprintln!("watchdog: no progress for 30 s; progress (workers 0..8, spawner, client): {last:?}");
                std::process::abort();
            }
        }
    });

    let boxes: Arc<Vec<Mutex<Vec<Block>>>> = Arc::new(
        (0..WORKERS)
            .map(|_| Mutex::new(Vec::with_capacity(512)))
            .collect(),
    );
    let workers: Vec<_> = (0..WORKERS)
        .map(|k| {
            let (boxes, progress) = (boxes.clone(), progress.clone());
            std::thread::spawn(move || {
                churn(
                    k as u64,
                    until,
                    &boxes[k],
                    &boxes[(k + 1) % WORKERS],
                    &progress[k],
                )
            })
        })
        .collect();

    let sp = progress.clone();
    let spawner = std::thread::spawn(move || {
        let mut n = 0u64;
        while Instant::now() < until {
            let (measured, model) = std::thread::spawn(move || {
                let (a, b) = (
                    Mutex::new(Vec::with_capacity(64)),
                    Mutex::new(Vec::with_capacity(64)),
                );
                let p = AtomicU64::new(0);
                let r = churn(
                    10_000 + n,
                    Instant::now() + Duration::from_millis(30),
                    &a,
                    &b,
                    &p,
                );
                free_all(&b);
                r
            })
            .join()
            .unwrap();
            assert_eq!(measured, model, "short-lived thread {n}");
            n += 1;
            sp[WORKERS].store(n, SeqCst);
        }
        n
    });

    let cp = progress.clone();
    let client = std::thread::spawn(move || {
        let mut n = 0u64;
        let mut bytes = 0usize;
        while Instant::now() < until {
            bytes += ok(addr, "GET", "/metrics");
            match n % 10 {
                0 => bytes += ok(addr, "GET", "/debug/pprof/heap"),
                1 => bytes += ok(addr, "GET", "/debug/pprof/allocs"),
                2 => bytes += ok(addr, "GET", "/debug/pprof/heap.svg?sample=inuse_space"),
                3 => bytes += ok(addr, "POST", "/debug/pprof/baseline"),
                4 => bytes += ok(addr, "GET", "/debug/pprof/heap.svg?diff=baseline"),
                5 => {
                    bytes += ok(
                        addr,
                        "POST",
                        &format!("/gc?set={}", [50, 100, 200][(n / 10 % 3) as usize]),
                    )
                }
                6 => bytes += ok(addr, "POST", "/gc/collect"),
                7 => {
                    allocscope::sampling::set_interval([4096, 65536][(n / 10 % 2) as usize]);
                    bytes += ok(addr, "GET", "/gc");
                }
                8 => bytes += ok(addr, "GET", "/"),
                _ => bytes += ok(addr, "GET", "/debug/pprof/heap?debug=1"),
            }
            n += 1;
            cp[WORKERS + 1].store(n, SeqCst);
        }
        (n, bytes)
    });

    for (k, w) in workers.into_iter().enumerate() {
        let (measured, model) = w.join().unwrap();
        assert_eq!(measured, model, "worker {k}");
    }
    for m in boxes.iter() {
        free_all(m);
    }
    let short_lived = spawner.join().unwrap();
    let (requests, bytes) = client.join().unwrap();
    done.store(true, SeqCst);
    let sp = allocscope::sampling::stats();
    let limits = allocscope::sampling::limits();
    assert!(
        sp.live_samples <= limits.max_live_samples as u64 && sp.memory_bytes <= sp.reserved_bytes,
        "{sp:?}"
    );
    let profile = allocscope::profile::HeapProfile::capture();
    let inuse = profile.folded(allocscope::profile::SampleType::InuseObjects);
    assert!(
        !inuse.lines().any(|l| l.contains("soak::churn")),
        "blocks the workers freed are still in use in the profile"
    );
    assert!(
        requests >= 3 && short_lived > 10,
        "requests {requests}, short-lived threads {short_lived}"
    );
    srv.shutdown();
    eprintln!(
        "soak: {secs} s, {requests} requests ({bytes} bytes), {short_lived} short-lived threads, {} collections, {sp:?}",
        allocscope::gc::stats().cycles()
    );
}
