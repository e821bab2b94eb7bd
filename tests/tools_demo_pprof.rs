//! Scenario: `go tool pprof` pointed at the running demo binary. `-top` and
//! `-traces` on `/debug/pprof/heap`, `/debug/pprof/allocs` and a 2-second
//! CPU profile show the demo's own functions by name (`allocscope_demo::`),
//! with no binary at hand (the profiles are symbolized by the exporter).
//! Skipped (with a message) when `go` is missing, failing instead when
//! `ALLOCSCOPE_REQUIRE_TOOLS=1`.
mod demo;
mod http;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use demo::{Demo, TempDir};
use http::have_tool;

/// `go tool pprof VIEW URL`, bounded: killed after `limit`. Its output goes
/// to files (a `-traces` view is larger than a pipe's buffer).
fn go_pprof(view: &[&str], url: &str, tmp: &Path, limit: Duration) -> String {
    let out_path = tmp.join("pprof.out");
    let err_path = tmp.join("pprof.err");
    let mut child = Command::new("go")
        .args(["tool", "pprof"])
        .args(view)
        .arg(url)
        .env("PPROF_TMPDIR", tmp)
        .env("HOME", tmp)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .expect("spawn go tool pprof");
    let t = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if t.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "go tool pprof {view:?} {url} took more than {limit:?}: {}",
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = std::fs::read_to_string(&out_path).unwrap();
    let stderr = std::fs::read_to_string(&err_path).unwrap();
    assert!(
        status.success(),
        "go tool pprof {view:?} {url}: {stderr}\n{stdout}"
    );
    assert!(
        !stderr.to_lowercase().contains("symboliz") || !stderr.to_lowercase().contains("fail"),
        "symbolization trouble: {stderr}"
    );
    stdout
}

/// The demo's own frames (`allocscope_demo::...`) named in a pprof view.
fn demo_frames(view: &str) -> Vec<String> {
    let mut v: Vec<String> = view
        .split_whitespace()
        .filter(|w| w.starts_with("allocscope_demo::"))
        .map(str::to_string)
        .collect();
    v.sort();
    v.dedup();
    v
}

#[test]
fn go_tool_pprof_names_the_demos_functions() {
    if !have_tool("go", &["version"]) {
        return;
    }
    let tmp = TempDir::new("demo-pprof");
    let mut demo = Demo::start(&tmp.0, &[("ALLOCSCOPE_SAMPLE_INTERVAL", "64KiB")], 120);
    let base = demo.url.trim_end_matches('/').to_string();
    let limit = Duration::from_secs(30);

    // Heap and allocs: the demo allocates continuously (request workers,
    // a cache filled every second, a 64 KiB leak a second), so at 64 KiB its
    // own sites are sampled within a few seconds; poll, bounded.
    for (path, ty, expect) in [
        // live: the cache's entries and the leak
        (
            "heap",
            "inuse_space",
            &[
                "allocscope_demo::Cache::fill",
                "allocscope_demo::leak_a_little",
            ][..],
        ),
        // allocated: the request handler above all
        (
            "allocs",
            "alloc_space",
            &["allocscope_demo::handle_request"][..],
        ),
    ] {
        let url = format!("{base}/debug/pprof/{path}");
        let t = Instant::now();
        let traces = loop {
            let traces = go_pprof(&["-traces"], &url, &tmp.0, limit);
            let frames = demo_frames(&traces);
            if expect.iter().any(|e| frames.iter().any(|f| f == e)) {
                break traces;
            }
            assert!(
                t.elapsed() < Duration::from_secs(40),
                "{path}: none of {expect:?} within 40 s; demo frames seen: {frames:?}\n{traces}"
            );
            assert!(
                demo.running(),
                "the demo exited: {}",
                demo.output.lock().unwrap()
            );
            std::thread::sleep(Duration::from_secs(1));
        };
        assert!(traces.contains(&format!("Type: {ty}")), "{traces}");
        // the stacks reach the demo's main or its worker threads
        assert!(
            traces.contains("allocscope_demo::main"),
            "{path}: no allocscope_demo::main in the stacks:\n{traces}"
        );
        assert!(
            !traces.contains("allocscope::sampling::"),
            "allocscope's own frames are dropped: {traces}"
        );
        // -top, narrowed to the demo's stacks: early in its life the demo's
        // own sites are a small share of the heap (the exporter's
        // symbolizer caches dominate it) and fall under -top's node cutoff
        let top = go_pprof(&["-top", "-focus=allocscope_demo::"], &url, &tmp.0, limit);
        assert!(top.contains(&format!("Type: {ty}")), "{top}");
        assert!(top.contains("flat%"), "{top}");
        let frames = demo_frames(&top);
        assert!(
            expect.iter().any(|e| frames.iter().any(|f| f == e)),
            "{path} -top: none of {expect:?}; demo frames: {frames:?}\n{top}"
        );
    }

    // CPU: the request workers burn most of the demo's CPU time
    let url = format!("{base}/debug/pprof/profile?seconds=2");
    let top = go_pprof(&["-top"], &url, &tmp.0, limit);
    assert!(top.contains("Type: cpu"), "{top}");
    assert!(top.contains("flat%"), "{top}");
    assert!(
        !demo_frames(&top).is_empty(),
        "cpu -top: no allocscope_demo:: frame:\n{top}"
    );
    let traces = go_pprof(&["-traces"], &url, &tmp.0, limit);
    assert!(traces.contains("Type: cpu"), "{traces}");
    assert!(
        demo_frames(&traces)
            .iter()
            .any(|f| f == "allocscope_demo::handle_request"),
        "cpu -traces: no allocscope_demo::handle_request:\n{traces}"
    );

    assert!(
        demo.running(),
        "the demo exited: {}",
        demo.output.lock().unwrap()
    );
}
