//! Scenario: what serving a heap profile costs the host (issue 14). A
//! small-heap host with 2,000 buckets of known stacks serves
//! `/debug/pprof/heap.svg`, `heap` and `allocs` through
//! `allocscope::server::start`, the first request and later ones, with and
//! without `lines=1`; around each request the test samples live bytes
//! (another thread polls `allocscope::stats()`), resident memory
//! (`/proc/self/statm`) and the collector's threshold cycles, and asserts
//! the budgets: at most 8 MiB added to the peak live heap, at most 10 MiB
//! added to resident memory, no threshold cycle during the request.
//!
//! Time is not asserted here (a loaded machine would make it flaky): the
//! figures come from `cargo run --release -p allocscope-bench --bin
//! capture_timing` (docs/measurements.md, "Capturing a profile"). Run with
//! `--nocapture` to see what each request cost.
use std::hint::black_box;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use allocscope::gc::CycleReason;
use allocscope::server::{self, Config};

#[global_allocator]
static A: allocscope::AllocScope = allocscope::AllocScope::system();

const MIB: u64 = 1 << 20;
/// Most a request may add to the host's peak live heap.
const PEAK_BUDGET: u64 = 8 * MIB;
/// Most a request may add to the host's resident memory.
const RSS_BUDGET: i64 = 10 * MIB as i64;

type Site = fn(&[usize], &mut Vec<Vec<u8>>);

/// Allocation sites with distinct code (the constants keep the linker from
/// merging them): each one a stack of its own.
macro_rules! sites {
    ($($name:ident = $k:literal),* $(,)?) => {
        $(
            #[inline(never)]
            fn $name(sizes: &[usize], keep: &mut Vec<Vec<u8>>) {
                for &s in sizes {
                    keep.push(black_box(vec![black_box($k as u8); s]));
                }
            }
        )*
        const SITES: &[Site] = &[$($name),*];
    };
}

sites!(
    site00 = 0,
    site01 = 1,
    site02 = 2,
    site03 = 3,
    site04 = 4,
    site05 = 5,
    site06 = 6,
    site07 = 7,
    site08 = 8,
    site09 = 9,
    site10 = 10,
    site11 = 11,
    site12 = 12,
    site13 = 13,
    site14 = 14,
    site15 = 15,
    site16 = 16,
    site17 = 17,
    site18 = 18,
    site19 = 19,
    site20 = 20,
    site21 = 21,
    site22 = 22,
    site23 = 23,
    site24 = 24,
    site25 = 25,
    site26 = 26,
    site27 = 27,
    site28 = 28,
    site29 = 29,
    site30 = 30,
    site31 = 31,
    site32 = 32,
    site33 = 33,
    site34 = 34,
    site35 = 35,
    site36 = 36,
    site37 = 37,
    site38 = 38,
    site39 = 39,
);

/// 40 sites × 50 object sizes, every allocation sampled: 2,000 buckets,
/// kept live (about 0.5 MiB).
fn workload() -> Vec<Vec<u8>> {
    let sizes: Vec<usize> = (0..50).map(|j| 64 + 8 * j).collect();
    let mut keep = Vec::with_capacity(SITES.len() * sizes.len());
    let before = allocscope::sampling::set_interval(1);
    for site in SITES {
        site(&sizes, &mut keep);
    }
    allocscope::sampling::set_interval(before);
    keep
}

static PEAK: AtomicU64 = AtomicU64::new(0);
static WATCHING: AtomicBool = AtomicBool::new(false);

fn resident() -> i64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: i64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    // SAFETY: sysconf has no preconditions.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as i64
}

/// What one request cost.
#[derive(Debug)]
struct Cost {
    path: String,
    status: u16,
    bytes: usize,
    time: Duration,
    live_before: u64,
    peak_added: u64,
    rss_added: i64,
    threshold_cycles: u64,
}

/// `GET path`, reading the answer in small pieces and keeping only its
/// status and size: the client's own memory stays out of the figures.
fn get(addr: SocketAddr, path: &str) -> (u16, usize) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = [0u8; 16 * 1024];
    let mut head: Vec<u8> = Vec::new();
    let mut total = 0usize;
    loop {
        let n = s.read(&mut buf).expect("read the answer");
        if n == 0 {
            break;
        }
        if head.len() < 4096 {
            head.extend_from_slice(&buf[..n.min(4096 - head.len())]);
        }
        total += n;
    }
    let text = String::from_utf8_lossy(&head);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let header_len = text.find("\r\n\r\n").map_or(total, |i| i + 4);
    (status, total - header_len)
}

fn serve(addr: SocketAddr, path: &str) -> Cost {
    let cycles = allocscope::gc::stats().cycles_for(CycleReason::Threshold);
    let rss = resident();
    let live = allocscope::stats().live_bytes();
    PEAK.store(live, Relaxed);
    WATCHING.store(true, Relaxed);
    let t = Instant::now();
    let (status, bytes) = get(addr, path);
    let time = t.elapsed();
    std::thread::sleep(Duration::from_millis(5));
    WATCHING.store(false, Relaxed);
    let c = Cost {
        path: path.to_string(),
        status,
        bytes,
        time,
        live_before: live,
        peak_added: PEAK.load(Relaxed).saturating_sub(live),
        rss_added: resident() - rss,
        threshold_cycles: allocscope::gc::stats().cycles_for(CycleReason::Threshold) - cycles,
    };
    eprintln!(
        "{:<32} {} {:>7} bytes {:>7.1} ms; live {:.2} MiB, peak +{:.2} MiB, RSS {:+.2} MiB, \
         threshold cycles {}",
        c.path,
        c.status,
        c.bytes,
        c.time.as_secs_f64() * 1e3,
        c.live_before as f64 / MIB as f64,
        c.peak_added as f64 / MIB as f64,
        c.rss_added as f64 / MIB as f64,
        c.threshold_cycles
    );
    c
}

#[test]
fn a_profile_costs_the_host_almost_nothing() {
    let exporter = server::start(
        Config::default()
            .addr("127.0.0.1:0".parse().unwrap())
            .log_interval(Duration::ZERO),
    )
    .expect("start the exporter");
    let addr = exporter.local_addr();
    // the host: a small heap (the collector's goal is its 4 MiB floor)
    let keep = workload();
    assert_eq!(allocscope::gc::threshold(), Some(100));
    let heap = allocscope::stats().live_bytes();
    assert!(heap < 2 * MIB, "the host's heap is not small: {heap}");
    std::thread::Builder::new()
        .name("peak-watcher".into())
        .spawn(|| loop {
            if WATCHING.load(Relaxed) {
                PEAK.fetch_max(allocscope::stats().live_bytes(), Relaxed);
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_micros(200));
            }
        })
        .unwrap();
    // an exporter request that renders nothing: the connection's own cost
    let m = serve(addr, "/gc");
    assert_eq!(m.status, 200);

    let mut costs = Vec::new();
    for path in [
        // the first view of a new user: symbol tables built here
        "/debug/pprof/heap.svg",
        "/debug/pprof/heap",
        "/debug/pprof/allocs",
        "/debug/pprof/heap.svg",
        "/debug/pprof/heap",
        "/debug/pprof/allocs",
        // files and lines, asked for: the first and a later one
        "/debug/pprof/heap?lines=1",
        "/debug/pprof/heap.svg?lines=1",
        "/debug/pprof/heap?lines=1",
        "/debug/pprof/heap.svg",
        // Go's text, large for deep stacks (see below)
        "/debug/pprof/allocs?debug=1",
    ] {
        costs.push(serve(addr, path));
    }
    let svg = &costs[0];
    assert!(svg.bytes > 10_000, "{svg:?}");
    for c in &costs {
        assert_eq!(c.status, 200, "{c:?}");
        // Go's debug=1 text holds a comment line per frame of every record
        // (8 MB here): the exporter cannot stream a body (warp 0.4), so the
        // text itself is on the heap while it is sent, on top of the
        // budget.
        let text = if c.path.contains("debug=1") {
            c.bytes as u64
        } else {
            0
        };
        assert!(
            c.peak_added <= PEAK_BUDGET + text,
            "{} added {:.1} MiB to the peak live heap (budget {} MiB): {c:?}",
            c.path,
            c.peak_added as f64 / MIB as f64,
            PEAK_BUDGET / MIB
        );
        assert!(
            c.rss_added <= RSS_BUDGET,
            "{} added {:.1} MiB to resident memory (budget {} MiB): {c:?}",
            c.path,
            c.rss_added as f64 / MIB as f64,
            RSS_BUDGET / MIB as i64
        );
        if text == 0 {
            assert_eq!(
                c.threshold_cycles, 0,
                "{} drove the host's heap past its goal: {c:?}",
                c.path
            );
        }
    }
    // the parameter's errors
    assert_eq!(get(addr, "/debug/pprof/heap?lines=yes").0, 400);
    assert_eq!(
        get(addr, "/debug/pprof/heap.svg?diff=baseline&lines=1").0,
        400
    );
    exporter.shutdown();
    black_box(keep);
}
