//! Scenario: frames users care about. A host whose functions allocate
//! through `Vec::with_capacity`, `vec![..]`, `String::push` and `Box::new`:
//! in a trimmed profile (the default) each of their buckets has the host's
//! own function as its leaf frame; with [`Frames::Raw`] (the exporter's
//! `raw=1`) std's allocation frames are there; `go tool pprof -top` on the
//! exporter's allocs profile puts the host's function first in `flat`
//! (skipped with a message without `go`, failing instead when
//! `ALLOCSCOPE_REQUIRE_TOOLS=1`).
#![cfg(feature = "server")]
mod http;

use std::hint::black_box;
use std::time::Duration;

use allocscope::profile::{Frames, HeapProfile, Symbols, ALLOCATION_MACHINERY};
use allocscope::server::{self, Config};
use http::{get, have_tool};

#[global_allocator]
static A: allocscope::AllocScope = allocscope::AllocScope::system();

#[inline(never)]
fn via_with_capacity() -> Vec<u8> {
    let mut v = Vec::with_capacity(black_box(1 << 20));
    v.push(1);
    v
}

#[inline(never)]
fn via_vec_macro() -> Vec<u64> {
    vec![7u64; black_box(256 * 1024)]
}

#[inline(never)]
fn via_string_push() -> String {
    let mut s = String::new();
    for i in 0..black_box(100_000u32) {
        s.push(char::from(b'a' + (i % 26) as u8));
    }
    s
}

/// Boxes on purpose: each `Box::new` is an allocation.
#[allow(clippy::vec_box)]
#[inline(never)]
fn via_box_new() -> Vec<Box<[u64; 64]>> {
    (0..black_box(100u64)).map(|i| Box::new([i; 64])).collect()
}

const OURS: [&str; 4] = [
    "via_with_capacity",
    "via_vec_macro",
    "via_string_push",
    "via_box_new",
];

/// Runs every allocating function `rounds` times, keeping the last results.
fn allocate(rounds: usize) -> Vec<Box<dyn std::any::Any>> {
    let mut kept: Vec<Box<dyn std::any::Any>> = Vec::new();
    for _ in 0..rounds {
        kept.clear();
        kept.push(Box::new(black_box(via_with_capacity())));
        kept.push(Box::new(black_box(via_vec_macro())));
        kept.push(Box::new(black_box(via_string_push())));
        kept.push(Box::new(black_box(via_box_new())));
    }
    kept
}

/// Whether a frame name is under one of the declared machinery prefixes
/// (a plain path or a `<Type …>` path).
fn is_std_alloc_frame(name: &str) -> bool {
    let n = name.strip_prefix('<').unwrap_or(name);
    let n = n.strip_prefix("&mut ").unwrap_or(n);
    ALLOCATION_MACHINERY
        .iter()
        .any(|(p, _)| n.starts_with(p) || name.contains(&format!(" as {p}")))
}

fn go_pprof_top(url: &str, tmp: &std::path::Path) -> String {
    http::go_pprof(&["-top"], url, tmp)
}

/// The function of the first row of a `-top` listing.
fn first_flat_row(top: &str) -> String {
    let mut rows = top.lines().skip_while(|l| !l.contains("flat%")).skip(1);
    let row = rows.next().unwrap_or_else(|| panic!("no rows: {top}"));
    // flat flat% sum% cum cum% name…
    row.split_whitespace().skip(5).collect::<Vec<_>>().join(" ")
}

#[test]
fn leaves_are_the_users_functions_and_raw_keeps_std() {
    // every allocation recorded (the exporter applies its interval at start)
    let s = server::start(
        Config::default()
            .addr("127.0.0.1:0".parse().unwrap())
            .log_interval(Duration::ZERO)
            .sample_interval(1),
    )
    .expect("start");
    let kept = allocate(20);

    let trimmed = HeapProfile::capture();
    assert_eq!(trimmed.frames(), Frames::Trimmed);
    let raw = HeapProfile::capture_frames(Symbols::Names, Frames::Raw);
    assert_eq!(raw.frames(), Frames::Raw);
    for f in OURS {
        let mine = |p: &HeapProfile| -> Vec<Vec<String>> {
            p.buckets()
                .iter()
                .filter(|b| b.frames().iter().any(|fr| fr.name().contains(f)))
                .map(|b| b.frames().iter().map(|fr| fr.name().to_string()).collect())
                .collect()
        };
        let t = mine(&trimmed);
        assert!(!t.is_empty(), "{f}: no bucket");
        for stack in &t {
            assert!(
                stack[0].contains(f),
                "{f}: the leaf of a trimmed stack is not the host's function: {stack:?}"
            );
        }
        let r = mine(&raw);
        assert!(!r.is_empty(), "{f}: no raw bucket");
        assert!(
            r.iter().all(|stack| is_std_alloc_frame(&stack[0])),
            "{f}: raw stacks keep std's allocation frames at the leaf: {r:?}"
        );
        // trimming merges, never loses: the same bytes either way
        let bytes = |p: &HeapProfile| -> u64 {
            p.buckets()
                .iter()
                .filter(|b| b.frames().iter().any(|fr| fr.name().contains(f)))
                .map(|b| b.estimate(allocscope::profile::SampleType::AllocSpace))
                .sum()
        };
        let (bt, br) = (bytes(&trimmed), bytes(&raw));
        assert!(bt > 0 && bt <= br + br / 10, "{f}: {bt} trimmed, {br} raw");
    }

    // The exporter: raw=1 on heap, allocs and heap.svg.
    let a = s.local_addr();
    for path in ["heap", "allocs", "heap?raw=1", "allocs?raw=1&lines=1"] {
        let r = get(a, &format!("/debug/pprof/{path}"));
        assert_eq!(r.status, 200, "{path}: {}", r.text());
    }
    let svg = get(a, "/debug/pprof/heap.svg?raw=1&sample=alloc_space");
    assert_eq!(svg.status, 200);
    assert!(svg.text().contains("alloc::alloc::"), "raw flamegraph");
    let svg = get(a, "/debug/pprof/heap.svg?sample=alloc_space");
    assert_eq!(svg.status, 200);
    assert!(svg.text().contains("via_vec_macro"));
    for bad in [
        "/debug/pprof/heap?raw=yes",
        "/debug/pprof/allocs?raw=",
        "/debug/pprof/heap.svg?raw=1.0",
    ] {
        let r = get(a, bad);
        assert_eq!(r.status, 400, "{bad}");
        assert!(r.text().contains("raw=1"), "{}", r.text());
    }
    let r = get(a, "/debug/pprof/heap.svg?raw=1&diff=baseline");
    assert_eq!(r.status, 400, "{}", r.text());

    if have_tool("go", &["version"]) {
        // the host's allocations well above the profiles' own (every
        // allocation is recorded, the exporter's too)
        let more = allocate(200);
        let tmp = std::env::temp_dir().join(format!("allocscope-frames-{}", std::process::id()));
        std::fs::create_dir_all(&tmp).unwrap();
        let top = go_pprof_top(&format!("http://{a}/debug/pprof/allocs"), &tmp);
        let first = first_flat_row(&top);
        assert!(
            OURS.iter().any(|f| first.contains(f)),
            "flat's first row is not the host's function: {first:?}\n{top}"
        );
        let top = go_pprof_top(&format!("http://{a}/debug/pprof/allocs?raw=1"), &tmp);
        let first = first_flat_row(&top);
        assert!(
            first.starts_with("alloc::") || first.starts_with("<alloc::"),
            "raw=1 keeps std's frames: {first:?}\n{top}"
        );
        let _ = std::fs::remove_dir_all(&tmp);
        drop(more);
    }
    drop(kept);
    s.shutdown();
}
