//! Scenario: delta heap profiles (`/debug/pprof/heap?seconds=N`,
//! `allocs?seconds=N`) served by the exporter of a host that allocates
//! from one function before the request and from another during its
//! window. The delta shows the second and not the first, read back from
//! the protobuf and by `go tool pprof -top` (skipped with a message without
//! `go`, failing instead when `ALLOCSCOPE_REQUIRE_TOOLS=1`); one delta at a
//! time (409); bad windows are 400s.
#![cfg(feature = "server")]
mod http;

use std::io::Read;
use std::time::{Duration, Instant};

use allocscope::server::ServerHandle;
use http::{get, have_tool};
use pprof::protos::{Message, Profile};

#[global_allocator]
static A: allocscope::AllocScope = allocscope::AllocScope::system();

fn start() -> ServerHandle {
    // 64 KiB blocks are all but surely sampled
    http::start_sampling(4096)
}

/// 4 MiB in 128 KiB blocks, kept: allocated before the window (not the
/// same code as the window's, which the linker could fold into one).
#[inline(never)]
fn allocated_before_the_window() -> Vec<Vec<u8>> {
    (0..32)
        .map(|i| std::hint::black_box(vec![i as u8 ^ 0x5a; 128 * 1024]))
        .collect()
}

/// 4 MiB in 64 KiB blocks, kept: allocated during the window.
#[inline(never)]
fn allocated_in_the_window() -> Vec<Vec<u8>> {
    (0..64)
        .map(|i| std::hint::black_box(vec![i as u8; 64 * 1024]))
        .collect()
}

/// A sample's function names (leaf first) and values.
type NamedSample = (Vec<String>, Vec<i64>);

/// Function names of the samples of a gzipped pprof body, with their
/// values (every name of each sample's stack).
fn names_and_values(gz: &[u8]) -> (Profile, Vec<NamedSample>) {
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(gz)
        .read_to_end(&mut raw)
        .expect("gzip");
    let p = Profile::decode(raw.as_slice()).expect("pprof");
    let s = |i: i64| p.string_table[i as usize].clone();
    let samples = p
        .sample
        .iter()
        .map(|smp| {
            let names = smp
                .location_id
                .iter()
                .flat_map(|id| p.location[(*id - 1) as usize].line.iter())
                .map(|l| s(p.function[(l.function_id - 1) as usize].name))
                .collect();
            (names, smp.value.clone())
        })
        .collect();
    (p, samples)
}

/// Once the request had `lead` to arrive: asserts that it runs (a second
/// delta gets 409), then waits for its first capture to be over.
fn wait_for_window(a: std::net::SocketAddr, lead: Duration) {
    std::thread::sleep(lead);
    let r = get(a, "/debug/pprof/allocs?seconds=1");
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.text().contains("one at a time"), "{}", r.text());
    // the first capture of the running delta: symbols are cached, but the
    // machine may be busy (CI)
    std::thread::sleep(Duration::from_millis(1500));
}

fn go_pprof_top(url: &str, tmp: &std::path::Path) -> String {
    http::go_pprof(&["-top"], url, tmp)
}

/// All delta requests in one test: one delta runs at a time per process.
#[test]
fn delta_profiles_show_the_window_and_not_before() {
    let s = start();
    let a = s.local_addr();
    // symbol tables built before any window
    assert_eq!(get(a, "/debug/pprof/heap").status, 200);
    let before = allocated_before_the_window();
    let mut kept = Vec::new();

    // Read back from the protobuf: allocs and heap.
    for (path, default_type) in [("allocs", "alloc_space"), ("heap", "inuse_space")] {
        let req = std::thread::spawn(move || get(a, &format!("/debug/pprof/{path}?seconds=5")));
        wait_for_window(a, Duration::from_millis(300));
        kept.push(allocated_in_the_window());
        let r = req.join().unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("content-type"), Some("application/octet-stream"));
        assert_eq!(
            r.header("content-disposition"),
            Some(format!("attachment; filename=\"{path}-delta\"").as_str())
        );
        let (p, samples) = names_and_values(&r.body);
        assert_eq!(
            p.string_table[p.default_sample_type as usize], default_type,
            "{path}"
        );
        assert!(
            p.duration_nanos >= 5_000_000_000,
            "{path}: the window is the time between the captures: {}",
            p.duration_nanos
        );
        let has = |f: &str| samples.iter().any(|(n, _)| n.iter().any(|x| x.contains(f)));
        assert!(
            !has("allocated_before_the_window"),
            "{path}: allocated before the window, yet in the delta: {samples:?}"
        );
        // The window's 4 MiB: every value positive, leaf first (trimmed).
        let window: Vec<&NamedSample> = samples
            .iter()
            .filter(|(n, _)| n.iter().any(|x| x.contains("allocated_in_the_window")))
            .collect();
        assert!(!window.is_empty(), "{path}: {samples:?}");
        let bytes: i64 = window.iter().map(|(_, v)| v[1]).sum();
        let inuse: i64 = window.iter().map(|(_, v)| v[3]).sum();
        assert!(
            (3 << 20..6 << 20).contains(&bytes) && (3 << 20..6 << 20).contains(&inuse),
            "{path}: alloc_space {bytes}, inuse_space {inuse} (4 MiB allocated, kept): {window:?}"
        );
        // the user's function (or its closure) is the leaf: std's
        // allocation frames are trimmed
        for (names, _) in &window {
            assert!(
                names[0].contains("allocated_in_the_window"),
                "{path}: leaf {names:?}"
            );
        }
    }

    // go tool pprof -top on the URL, as a Go user would.
    if have_tool("go", &["version"]) {
        let tmp = std::env::temp_dir().join(format!("allocscope-delta-{}", std::process::id()));
        std::fs::create_dir_all(&tmp).unwrap();
        for (path, ty) in [("allocs", "alloc_space"), ("heap", "inuse_space")] {
            let url = format!("http://{a}/debug/pprof/{path}?seconds=5");
            let tool = {
                let tmp = tmp.clone();
                std::thread::spawn(move || go_pprof_top(&url, &tmp))
            };
            wait_for_window(a, Duration::from_millis(1500));
            kept.push(allocated_in_the_window());
            let top = tool.join().unwrap();
            assert!(top.contains(&format!("Type: {ty}")), "{top}");
            assert!(top.contains("allocated_in_the_window"), "{top}");
            assert!(!top.contains("allocated_before_the_window"), "{top}");
        }
        let _ = std::fs::remove_dir_all(&tmp);
    }

    // free again; shutdown abandons a running window
    let running = std::thread::spawn(move || get(a, "/debug/pprof/heap?seconds=300"));
    std::thread::sleep(Duration::from_millis(500));
    let t = Instant::now();
    s.shutdown();
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    let r = running.join().unwrap();
    assert_eq!(r.status, 503, "{}", r.text());
    drop((before, kept));
}

#[test]
fn bad_windows_are_400s() {
    let s = start();
    let a = s.local_addr();
    for path in ["heap", "allocs"] {
        for bad in ["0", "301", "abc", "-1", "1.5", ""] {
            let r = get(a, &format!("/debug/pprof/{path}?seconds={bad}"));
            assert_eq!(r.status, 400, "{path} seconds={bad}: {}", r.text());
            assert!(r.text().contains("from 1 to 300"), "{}", r.text());
        }
        let r = get(a, &format!("/debug/pprof/{path}?seconds=1&debug=1"));
        assert_eq!(r.status, 400);
        assert!(r.text().contains("incompatible"), "{}", r.text());
    }
    s.shutdown();
}
