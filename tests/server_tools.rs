//! Scenario: the exporter read by the real tools. `promtool check metrics`
//! on a scrape and `go tool pprof -top` on the CPU and heap profiles, skipped
//! (with a message) when a tool is missing, failing instead when
//! `ALLOCSCOPE_REQUIRE_TOOLS=1`.
mod http;

use std::time::{Duration, Instant};

use allocscope::server::{self, Config, ServerHandle};
use http::{get, have_tool};

#[global_allocator]
static A: allocscope::AllocScope = allocscope::AllocScope::system();

fn start() -> ServerHandle {
    server::start(
        Config::default()
            .addr("127.0.0.1:0".parse().unwrap())
            .log_interval(Duration::ZERO),
    )
    .expect("start")
}

fn check_metrics(text: &str) {
    http::promtool_check(text)
}

#[test]
fn promtool_check_metrics_reports_nothing() {
    if !have_tool("promtool", &["--version"]) {
        return;
    }
    let s = start();
    let r = get(s.local_addr(), "/metrics");
    assert_eq!(r.status, 200);
    check_metrics(&r.text());
    s.shutdown();
    // the full size-class switch too
    let s = server::start(
        Config::default()
            .addr("127.0.0.1:0".parse().unwrap())
            .log_interval(Duration::ZERO)
            .full_size_classes(true),
    )
    .unwrap();
    check_metrics(&get(s.local_addr(), "/metrics").text());
    s.shutdown();
}

fn go_pprof_top(url: &str, tmp: &std::path::Path) -> String {
    go_pprof("-top", url, tmp)
}

fn go_pprof(view: &str, url: &str, tmp: &std::path::Path) -> String {
    let (stdout, stderr) = http::go_pprof_output(&[view], url, tmp);
    assert!(
        !stderr.contains("symbolize") || !stderr.to_lowercase().contains("fail"),
        "symbolization trouble: {stderr}"
    );
    stdout
}

/// Allocates 4 MiB in 4 KiB blocks and keeps them.
#[inline(never)]
fn retained_by_tool_test() -> Vec<Vec<u8>> {
    (0..1024)
        .map(|i| std::hint::black_box(vec![i as u8; 4096]))
        .collect()
}

#[test]
fn go_tool_pprof_reads_cpu_and_heap_profiles() {
    if !have_tool("go", &["version"]) {
        return;
    }
    let tmp = std::env::temp_dir().join(format!("allocscope-pprof-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let s = start();
    let base = format!("http://{}", s.local_addr());

    let spin = std::thread::spawn(|| {
        let t = Instant::now();
        let mut v: Vec<u64> = Vec::new();
        while t.elapsed() < Duration::from_secs(3) {
            v.push(std::hint::black_box(v.len() as u64 * 31));
            if v.len() > 10_000 {
                v = Vec::new();
            }
        }
    });
    let cpu = go_pprof_top(&format!("{base}/debug/pprof/profile?seconds=2"), &tmp);
    spin.join().unwrap();
    assert!(cpu.contains("Type: cpu"), "{cpu}");
    assert!(cpu.contains("flat%"), "{cpu}");

    // a known allocation site, sampled densely and kept live
    let prev = allocscope::sampling::set_interval(4096);
    let kept = retained_by_tool_test();
    allocscope::sampling::set_interval(prev);
    for (path, ty) in [("heap", "inuse_space"), ("allocs", "alloc_space")] {
        let heap = go_pprof_top(&format!("{base}/debug/pprof/{path}"), &tmp);
        assert!(heap.contains(&format!("Type: {ty}")), "{heap}");
        // the test's own function is in the stacks, by name, with no binary
        let traces = go_pprof("-traces", &format!("{base}/debug/pprof/{path}"), &tmp);
        assert!(
            traces.contains("server_tools::retained_by_tool_test"),
            "{traces}"
        );
        assert!(
            !traces.contains("allocscope::sampling::"),
            "allocscope's own frames are dropped: {traces}"
        );
    }
    drop(kept);
    s.shutdown();
    let _ = std::fs::remove_dir_all(&tmp);
}
