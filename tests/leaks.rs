//! Scenario: `AllocScope::system()` with the exporter taking a leak
//! snapshot every second (`leak_snapshot_interval = 1s`, sampling every
//! 32 KiB), in a host that allocates the way services do: request-like
//! churn on two threads, a cache that grows for 3 s and is then trimmed to
//! a tenth, and (in the leak scenario) a steady leak of 240 KiB/s
//! (3 × 4 KiB every 50 ms). Each scenario runs in a fresh process (this
//! binary, one test), so that the sampler holds only its own allocations.
//!
//! - `leak_is_suspect_one_within_ten_snapshots`: by the 10th snapshot the
//!   leaking function is suspect number one of `GET /debug/leaks`, with a
//!   growth near its rate; the cache's and the churn's functions are never
//!   suspects; `/metrics` and the landing page agree.
//! - `no_suspect_without_the_leak`: the same host without the leak has no
//!   suspect over the threshold at any of its first 12 snapshots.
//! - `false_positive_rate` (ignored; `cargo test --release --test leaks --
//!   --ignored --nocapture`, `ALLOCSCOPE_LEAK_RUNS=20`): runs both scenarios
//!   that many times in fresh processes and prints how often each failed.
use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use allocscope::server::{self, Config};
use serde_json::Value;

#[global_allocator]
static ALLOC: allocscope::AllocScope = allocscope::AllocScope::system();

const SCENARIO: &str = "ALLOCSCOPE_LEAKS_SCENARIO";
/// The leak's rate: 3 blocks of 4 KiB every 50 ms.
const LEAK_BYTES_PER_SECOND: f64 = 3.0 * 4096.0 * 20.0;

/// Runs the test `name` in a fresh process; its success and output.
fn run_fresh(name: &str) -> (bool, String) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(SCENARIO, name)
        .output()
        .expect("run the scenario's process");
    let said = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success() && said.contains("1 passed"), said)
}

/// Runs `scenario` here when this process is the fresh one, else starts it.
fn fresh_process(name: &str, scenario: fn()) {
    if std::env::var(SCENARIO).as_deref() == Ok(name) {
        scenario();
        return;
    }
    let (ok, said) = run_fresh(name);
    assert!(ok, "scenario {name} failed:\n{said}");
    eprintln!("{said}");
}

/// `GET path`: status and body.
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read the answer");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_string());
    (status, body)
}

/// The leak: 3 blocks of 4 KiB, kept forever.
#[inline(never)]
fn leak_step(kept: &mut Vec<Box<[u8]>>) {
    for _ in 0..3 {
        kept.push(std::hint::black_box(vec![0x5a_u8; 4096]).into_boxed_slice());
    }
}

/// The cache's growth: 16 entries of 2 KiB.
#[inline(never)]
fn cache_fill(cache: &mut VecDeque<Box<[u8]>>) {
    for i in 0..16u8 {
        cache.push_back(std::hint::black_box(vec![i; 2048]).into_boxed_slice());
    }
}

/// The cache's trim: keeps the newest tenth.
#[inline(never)]
fn cache_trim(cache: &mut VecDeque<Box<[u8]>>) {
    let keep = cache.len() / 10;
    while cache.len() > keep {
        cache.pop_front();
    }
}

/// One request: a body, its parts, a response; the last 64 responses are
/// kept (a small, steady working set).
#[inline(never)]
fn handle_request(i: u64, recent: &mut VecDeque<Vec<u8>>) {
    let body: String = (0..(i % 200) + 20).map(|x| format!("{x},")).collect();
    let parts: Vec<&str> = body.split(',').collect();
    let mut resp = Vec::with_capacity(body.len() + 64);
    for p in &parts {
        resp.extend_from_slice(p.as_bytes());
        resp.push(b'\n');
    }
    recent.push_back(resp);
    if recent.len() > 64 {
        recent.pop_front();
    }
}

/// The host's threads, stopped and joined on drop.
struct Host {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Host {
    fn start(leak: bool) -> Host {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for w in 0..2u64 {
            let stop = stop.clone();
            threads.push(std::thread::spawn(move || {
                let mut recent = VecDeque::new();
                let mut i = w;
                while !stop.load(Ordering::Relaxed) {
                    handle_request(i, &mut recent);
                    i += 2;
                    if i % 40 == 0 {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
            }));
        }
        let s = stop.clone();
        threads.push(std::thread::spawn(move || {
            let mut cache = VecDeque::new();
            let mut kept = Vec::new();
            let start = Instant::now();
            let mut trims = 0u64;
            let mut tick = 0u64;
            while !s.load(Ordering::Relaxed) {
                tick += 1;
                cache_fill(&mut cache);
                if leak {
                    leak_step(&mut kept);
                }
                // trimmed every 3 s
                if start.elapsed().as_secs() / 3 > trims {
                    trims += 1;
                    cache_trim(&mut cache);
                }
                let next = start + Duration::from_millis(50 * tick);
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
        }));
        Host { stop, threads }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// The leaf function of each suspect.
fn leaves(v: &Value, list: &str) -> Vec<String> {
    v[list]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| s["stack"][0].as_str().unwrap_or("?").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Starts the exporter and the host, and calls `each` with every new
/// `/debug/leaks?all=1` answer until `snapshots` snapshots were taken.
fn observe(leak: bool, snapshots: u64, mut each: impl FnMut(SocketAddr, &Value)) {
    let srv = server::start(
        Config::default()
            .addr("127.0.0.1:0".parse().unwrap())
            .log_interval(Duration::ZERO)
            .sample_interval(32 * 1024)
            .leak_snapshot_interval(Duration::from_secs(1)),
    )
    .expect("start the exporter");
    let addr = srv.local_addr();
    let host = Host::start(leak);
    let t = Instant::now();
    let mut seen = 0;
    while seen < snapshots {
        assert!(t.elapsed() < Duration::from_secs(60), "snapshots stalled");
        std::thread::sleep(Duration::from_millis(200));
        let (status, body) = get(addr, "/debug/leaks?all=1");
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).expect("JSON");
        let n = v["snapshots"].as_u64().expect("snapshots");
        if n > seen {
            seen = n;
            eprintln!(
                "snapshot {n}: suspects {:?} (scores {:?}), below {:?} (scores {:?})",
                leaves(&v, "suspects"),
                v["suspects"]
                    .as_array()
                    .map(|a| a.iter().map(|s| s["score"].clone()).collect::<Vec<_>>()),
                leaves(&v, "below_threshold"),
                v["below_threshold"]
                    .as_array()
                    .map(|a| a.iter().map(|s| s["score"].clone()).collect::<Vec<_>>()),
            );
            each(addr, &v);
        }
    }
    drop(host);
    srv.shutdown();
}

fn leak_scenario() {
    let mut first_top = None;
    let mut last = Value::Null;
    observe(true, 10, |addr, v| {
        let n = v["snapshots"].as_u64().unwrap();
        assert_eq!(v["interval_seconds"], 1.0);
        for f in leaves(v, "suspects") {
            assert!(
                !f.contains("cache_") && !f.contains("handle_request"),
                "snapshot {n}: {f} is a suspect: {v:#}"
            );
        }
        let suspects = v["suspects"].as_array().unwrap();
        if suspects
            .first()
            .and_then(|s| s["stack"][0].as_str())
            .is_some_and(|f| f.ends_with("leak_step"))
        {
            first_top.get_or_insert(n);
        }
        if n == 10 {
            // the landing page and /metrics say the same
            let (status, page) = get(addr, "/");
            assert_eq!(status, 200);
            let table = page
                .split_once("<table id=\"leaks\">")
                .map(|(_, t)| t)
                .expect("a suspects table on the landing page");
            let first = table.split("<tr class=\"suspect\">").nth(1).expect("a row");
            assert!(first.contains("leak_step</code>"), "{first}");
            assert!(first.contains("min_age="), "{first}");
            let (_, metrics) = get(addr, "/metrics");
            let gauge = |name: &str| {
                metrics
                    .lines()
                    .find_map(|l| l.strip_prefix(&format!("{name} ")))
                    .and_then(|x| x.parse::<f64>().ok())
                    .unwrap_or_else(|| panic!("{name} in /metrics"))
            };
            assert!(gauge("allocscope_leak_suspects") >= 1.0);
            assert!(gauge("allocscope_leak_snapshots_memory_bytes") > 0.0);
        }
        last = v.clone();
    });
    let first_top = first_top.unwrap_or_else(|| panic!("the leak never topped: {last:#}"));
    eprintln!("leak_step was suspect one from snapshot {first_top}");
    let top = &last["suspects"][0];
    assert!(
        top["stack"][0].as_str().unwrap().ends_with("leak_step"),
        "the leak is suspect one at the 10th snapshot: {last:#}"
    );
    // allocation machinery trimmed: the leaf is the leaking function
    assert!(!top["stack"][0].as_str().unwrap().starts_with("alloc::"));
    let growth = top["growth_bytes_per_hour"].as_f64().unwrap();
    let expected = LEAK_BYTES_PER_SECOND * 3600.0;
    assert!(
        growth > expected * 0.5 && growth < expected * 2.0,
        "growth {growth} B/h, leaking {expected} B/h"
    );
    assert!(top["inuse_bytes"].as_u64().unwrap() > 0);
    assert!(top["score"].as_f64().unwrap() >= last["score_threshold"].as_f64().unwrap());
    // the field names, exactly
    let fields: Vec<&str> = top
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for f in [
        "stack",
        "inuse_bytes",
        "growth_bytes_per_hour",
        "oldest_age_seconds",
        "score",
    ] {
        assert!(fields.contains(&f), "{f} missing from {top}");
    }
    // the age is reported when the sampler knows it
    let age = &top["oldest_age_seconds"];
    assert!(
        age.is_null() || age.as_f64().is_some_and(|a| a >= 0.0),
        "{age}"
    );
    assert!(last["memory_bytes"].as_u64().unwrap() > 0);
}

fn no_leak_scenario() {
    observe(false, 12, |addr, v| {
        let n = v["snapshots"].as_u64().unwrap();
        assert_eq!(
            v["suspects"].as_array().map(Vec::len),
            Some(0),
            "snapshot {n}: a suspect without a leak: {v:#}"
        );
        assert_eq!(v["suspects_over_threshold"], 0);
        if n == 12 {
            let (_, metrics) = get(addr, "/metrics");
            assert!(
                metrics.contains("\nallocscope_leak_suspects 0\n"),
                "{metrics}"
            );
        }
    });
}

#[test]
fn leak_is_suspect_one_within_ten_snapshots() {
    fresh_process("leak_is_suspect_one_within_ten_snapshots", leak_scenario);
}

#[test]
fn no_suspect_without_the_leak() {
    fresh_process("no_suspect_without_the_leak", no_leak_scenario);
}

#[test]
fn bad_queries_are_400() {
    let srv = server::start(
        Config::default()
            .addr("127.0.0.1:0".parse().unwrap())
            .log_interval(Duration::ZERO),
    )
    .expect("start the exporter");
    for q in ["all=yes", "all=", "all=%zz"] {
        let (status, body) = get(srv.local_addr(), &format!("/debug/leaks?{q}"));
        assert_eq!(status, 400, "{q}: {body}");
        let v: Value = serde_json::from_str(&body).expect("a JSON error");
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{body}");
    }
    let (status, _) = get(srv.local_addr(), "/debug/leaks?all=0");
    assert_eq!(status, 200);
    srv.shutdown();
}

/// How often each scenario fails over `ALLOCSCOPE_LEAK_RUNS` (default 20)
/// fresh runs: the no-leak runs that fail are false positives, the leak
/// runs that fail are misses (or a cache/churn suspect).
#[test]
#[ignore = "a measurement: minutes; run with --ignored --nocapture"]
fn false_positive_rate() {
    let runs: usize = std::env::var("ALLOCSCOPE_LEAK_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    for name in [
        "no_suspect_without_the_leak",
        "leak_is_suspect_one_within_ten_snapshots",
    ] {
        let mut failed = 0;
        for i in 0..runs {
            let (ok, said) = run_fresh(name);
            if !ok {
                failed += 1;
                eprintln!("{name} run {i} failed:\n{said}");
            }
        }
        eprintln!("{name}: {failed} of {runs} runs failed");
    }
}
