//! Scenario: Debian's `prometheus` scrapes the demo. The demo and a
//! Prometheus server (1 s scrape interval, a temp dir for its TSDB) run on
//! loopback; after two scrapes the test reads `allocscope_heap_live_bytes`
//! and `rate(allocscope_heap_allocations_total[30s])` through Prometheus's
//! HTTP API and checks that the target is up, then the per-scope and
//! per-thread-group series of the demo's scopes and workers. Skipped (with a message) when
//! `prometheus` is missing, failing instead when `ALLOCSCOPE_REQUIRE_TOOLS=1`.
mod demo;
mod http;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use demo::{Demo, TempDir};
use http::{get, have_tool};

/// A running Prometheus; killed on drop.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    log: std::path::PathBuf,
}

impl Prometheus {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn ready(addr: SocketAddr) -> bool {
    std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
        && get(addr, "/-/ready").status == 200
}

/// Starts Prometheus scraping `target` every second; waits (bounded) until
/// it is ready. Retries on another port if the first one was taken between
/// the probe and the bind.
fn start_prometheus(dir: &std::path::Path, target: SocketAddr) -> Prometheus {
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: allocscope\n    metrics_path: /metrics\n    \
             static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    let mut last_log = String::new();
    for attempt in 0..3 {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let log = dir.join(format!("prometheus-{attempt}.log"));
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join(format!("tsdb-{attempt}")).display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .current_dir(dir)
            .spawn()
            .expect("spawn prometheus");
        let mut p = Prometheus { child, addr, log };
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(30) {
            if !matches!(p.child.try_wait(), Ok(None)) {
                break;
            }
            if ready(addr) {
                return p;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        last_log = p.log();
    }
    panic!("prometheus did not become ready; its log:\n{last_log}");
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The values of an instant query's result vector.
fn query(p: &Prometheus, q: &str) -> Vec<f64> {
    let r = get(p.addr, &format!("/api/v1/query?query={}", encode(q)));
    assert_eq!(r.status, 200, "query {q}: {}", r.text());
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["status"], "success", "{v}");
    assert_eq!(v["data"]["resultType"], "vector", "{v}");
    v["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["value"][1].as_str().unwrap().parse::<f64>().unwrap())
        .collect()
}

#[test]
fn prometheus_scrapes_the_demo() {
    if !have_tool("prometheus", &["--version"]) {
        return;
    }
    let tmp = TempDir::new("prometheus");
    let mut demo = Demo::start(&tmp.0, &[], 90);
    let prom = start_prometheus(&tmp.0, demo.addr);

    // two scrapes, bounded
    let t = Instant::now();
    let scrapes = loop {
        let n = query(&prom, "count_over_time(up{job=\"allocscope\"}[1m])");
        let n = n.first().copied().unwrap_or(0.0);
        if n >= 2.0 {
            break n;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "fewer than two scrapes in 30 s ({n}); prometheus log:\n{}",
            prom.log()
        );
        assert!(
            demo.running(),
            "the demo exited: {}",
            demo.output.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    assert!(scrapes >= 2.0);

    // the target is up, as the targets API reports it too
    assert_eq!(query(&prom, "up{job=\"allocscope\"}"), vec![1.0]);
    let r = get(prom.addr, "/api/v1/targets?state=active");
    assert_eq!(r.status, 200);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let targets = v["data"]["activeTargets"].as_array().unwrap();
    assert_eq!(targets.len(), 1, "{v}");
    assert_eq!(targets[0]["health"], "up", "{v}");
    assert_eq!(targets[0]["lastError"], "", "{v}");
    assert_eq!(
        targets[0]["scrapeUrl"],
        format!("http://{}/metrics", demo.addr),
        "{v}"
    );

    // live heap: the demo holds a cache, a leak and the exporter's own state
    let live = query(&prom, "allocscope_heap_live_bytes");
    assert_eq!(live.len(), 1, "{live:?}");
    assert!(
        live[0] > 64.0 * 1024.0 && live[0] < 1024.0 * 1024.0 * 1024.0,
        "live bytes {}",
        live[0]
    );

    // allocation rate over two or more scrapes: the request workers allocate
    // continuously
    let rate = query(&prom, "rate(allocscope_heap_allocations_total[30s])");
    assert_eq!(rate.len(), 1, "{rate:?}");
    assert!(
        rate[0] > 100.0 && rate[0].is_finite(),
        "allocations/s {}",
        rate[0]
    );

    // counters only go up between scrapes as Prometheus saw them
    let resets = query(&prom, "resets(allocscope_heap_allocations_total[1m])");
    assert_eq!(resets, vec![0.0]);

    // who allocates: the demo's scopes and thread groups, as series
    // Prometheus stored with their labels
    let by_scope = query(
        &prom,
        "rate(allocscope_scope_allocations_total{scope=\"handle_request\"}[30s])",
    );
    assert_eq!(by_scope.len(), 1, "{by_scope:?}");
    assert!(
        by_scope[0] > 100.0,
        "handle_request allocations/s {by_scope:?}"
    );
    for scope in ["cache", "leak", "api", "allocscope", "unscoped"] {
        let v = query(
            &prom,
            &format!("allocscope_scope_allocated_bytes_total{{scope=\"{scope}\"}}"),
        );
        assert!(v.len() == 1 && v[0] > 0.0, "scope {scope}: {v:?}");
    }
    let workers = query(
        &prom,
        "rate(allocscope_thread_allocations_total{thread=\"request-worker\"}[30s])",
    );
    assert!(
        workers.len() == 1 && workers[0] > 100.0,
        "request-worker allocations/s {workers:?}"
    );
    let resets = query(
        &prom,
        "sum(resets(allocscope_scope_allocations_total[1m])) + \
         sum(resets(allocscope_thread_allocations_total[1m]))",
    );
    assert_eq!(resets, vec![0.0], "scope and thread counters only go up");

    assert!(
        demo.running(),
        "the demo exited: {}",
        demo.output.lock().unwrap()
    );
    drop(prom);
    drop(demo);
}
