//! Scenario: `AllocScope::system()` sampling 4 KiB blocks at a 4 KiB
//! interval, and the exporter. The ages of live samples (`min_age`, the
//! pprof `age` label, read back with `go tool pprof -tags`: skipped without
//! go, a failure with `ALLOCSCOPE_REQUIRE_TOOLS=1`) and the lifetimes of
//! freed ones (the temporary-allocations view, its flamegraph and the
//! landing page's list).
mod http;

use std::sync::Mutex;
use std::time::Duration;

use allocscope::profile::{HeapProfile, SampleType};
use allocscope::sampling;
use allocscope::server::{Config, ServerHandle};
use http::{get, go_pprof, have_tool};

#[global_allocator]
static A: allocscope::AllocScope = allocscope::AllocScope::system();

/// The tests share the sampler: one at a time.
static SAMPLER: Mutex<()> = Mutex::new(());

fn start() -> ServerHandle {
    http::start_sampling(4096)
}

/// Allocates `n` 4 KiB blocks and keeps them: the old leak.
#[inline(never)]
fn old_leak(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| std::hint::black_box(vec![i as u8; 4096]))
        .collect()
}

/// Allocates and frees `n` 4 KiB blocks, and keeps `keep` more: young
/// churn.
#[inline(never)]
fn young_churn(n: usize, keep: usize) -> Vec<Vec<u8>> {
    for i in 0..n {
        std::hint::black_box(vec![i as u8; 4096]);
    }
    // (not the same code as `old_leak`'s closure: identical functions may
    // be folded into one, named after either)
    (0..keep)
        .map(|i| std::hint::black_box(vec![(i as u8) ^ 0x5a; 4096]))
        .collect()
}

/// Replaces the young blocks with new ones.
fn renew(young: &mut Vec<Vec<u8>>) {
    *young = young_churn(3000, 300);
}

/// Allocates and frees one 4 KiB buffer per call.
#[inline(never)]
fn churn_4k(i: usize) -> u8 {
    let v = std::hint::black_box(vec![i as u8; 4096]);
    v[i % 4096]
}

/// Allocates one 4 KiB buffer per call and keeps it.
#[inline(never)]
fn keep_4k(i: usize, kept: &mut Vec<Vec<u8>>) {
    kept.push(std::hint::black_box(vec![i as u8; 4096]));
}

fn has_frame(b: &allocscope::profile::Bucket, name: &str) -> bool {
    b.frames().iter().any(|f| f.name().contains(name))
}

#[test]
fn min_age_keeps_the_old_blocks_and_drops_the_young() {
    const OLD: Duration = Duration::from_secs(4);
    let _turn = SAMPLER.lock().unwrap_or_else(|p| p.into_inner());
    let s = start();
    let addr = s.local_addr();
    // symbol tables read before the clock matters (the first capture
    // takes longest)
    let _ = HeapProfile::capture();
    let old = old_leak(300);
    std::thread::sleep(OLD);
    // the young blocks are allocated anew before each look, so that they
    // stay younger than MIN_AGE however slow the machine
    let mut young = young_churn(3000, 300);

    let p = HeapProfile::capture();
    let age = |name: &str| {
        p.buckets()
            .iter()
            .filter(|b| has_frame(b, name))
            .filter_map(|b| b.oldest_age())
            .max()
    };
    let (old_age, young_age) = (age("heap_age::old_leak"), age("heap_age::young_churn"));
    assert!(
        old_age.is_some_and(|a| a >= OLD),
        "the old blocks are 4 s old: {old_age:?}"
    );
    assert!(
        young_age.is_some_and(|a| a < Duration::from_secs(2)),
        "the young ones are not: {young_age:?}"
    );
    let filtered = p.min_age(Duration::from_secs(2));
    let kept = |p: &HeapProfile, name: &str| {
        p.buckets()
            .iter()
            .filter(|b| has_frame(b, name))
            .map(|b| b.estimate(SampleType::InuseSpace))
            .sum::<u64>()
    };
    // ~300 x 4 KiB each, before and after the filter
    assert!(
        kept(&p, "heap_age::old_leak") > 600 * 1024,
        "{}",
        kept(&p, "heap_age::old_leak")
    );
    assert!(kept(&p, "heap_age::young_churn") > 600 * 1024);
    assert_eq!(
        kept(&filtered, "heap_age::old_leak"),
        kept(&p, "heap_age::old_leak"),
        "min_age keeps every old sample"
    );
    assert_eq!(
        kept(&filtered, "heap_age::young_churn"),
        0,
        "and no young one"
    );
    for b in filtered.buckets() {
        assert!(b.oldest_age().unwrap() >= Duration::from_secs(2));
    }
    assert!(filtered
        .folded(SampleType::InuseSpace)
        .lines()
        .all(|l| !l.contains("heap_age::young_churn")));

    // the exporter: min_age on the text profile, the svg and the pprof
    renew(&mut young);
    let text = get(addr, "/debug/pprof/heap?debug=1&min_age=2s").text();
    assert!(text.contains("heap_age::old_leak"), "{text}");
    assert!(!text.contains("heap_age::young_churn"), "{text}");
    let all = get(addr, "/debug/pprof/heap?debug=1").text();
    assert!(all.contains("heap_age::young_churn"), "{all}");
    renew(&mut young);
    let svg = get(addr, "/debug/pprof/heap.svg?min_age=2000ms").text();
    assert!(svg.contains("heap_age::old_leak") && !svg.contains("heap_age::young_churn"));
    renew(&mut young);
    let svg = get(addr, "/debug/pprof/allocs?debug=1&min_age=2s").text();
    assert!(svg.contains("heap_age::old_leak") && !svg.contains("heap_age::young_churn"));

    if have_tool("go", &["version"]) {
        let tmp = std::env::temp_dir().join(format!("allocscope-heap-age-{}", std::process::id()));
        std::fs::create_dir_all(&tmp).unwrap();
        let url = format!("http://{addr}/debug/pprof/heap");
        // the age label, read back: a tag `age` in seconds
        renew(&mut young);
        let tags = go_pprof(&["-tags"], &url, &tmp);
        eprintln!("{tags}");
        let age_block = tags
            .split("\n\n")
            .find(|b| b.trim_start().starts_with("age:"))
            .unwrap_or_else(|| panic!("no age tag: {tags}"));
        // the old blocks' group says at least 4 s, the young ones' 0
        assert!(
            age_block.contains(": 0s") || age_block.contains(": 0"),
            "{age_block}"
        );
        assert!(
            age_block
                .lines()
                .skip(1)
                .any(|l| l.trim_end().ends_with('s') && !l.trim_end().ends_with(": 0s")),
            "{age_block}"
        );
        // -tagfocus on the age keeps the old leak only, as min_age does
        renew(&mut young);
        let top = go_pprof(&["-top", "-tagfocus=age=2s:"], &url, &tmp);
        assert!(top.contains("heap_age::old_leak"), "{top}");
        assert!(!top.contains("heap_age::young_churn"), "{top}");
        renew(&mut young);
        let top = go_pprof(&["-top"], &format!("{url}?min_age=2s"), &tmp);
        assert!(top.contains("heap_age::old_leak"), "{top}");
        assert!(!top.contains("heap_age::young_churn"), "{top}");
        let _ = std::fs::remove_dir_all(&tmp);
    }
    drop((old, young));
    s.shutdown();
}

#[test]
fn the_temporary_view_ranks_a_per_call_buffer_above_kept_buffers() {
    let _turn = SAMPLER.lock().unwrap_or_else(|p| p.into_inner());
    let s = start();
    let addr = s.local_addr();
    // room for every buffer: `keep_4k` never grows the vector (whose old
    // buffers would be short-lived blocks of its stack)
    let mut kept = Vec::with_capacity(6000);
    let mut sum = 0u64;
    for i in 0..6000 {
        sum += u64::from(churn_4k(i));
        keep_4k(i, &mut kept);
    }
    // more calls of the per-call buffer, so that it also tops the landing
    // page's list over the other tests' churn in this process
    for i in 6000..20_000 {
        sum += u64::from(churn_4k(i));
    }
    std::hint::black_box(sum);

    let p = HeapProfile::capture();
    let churn: Vec<_> = p
        .buckets()
        .iter()
        .filter(|b| has_frame(b, "heap_age::churn_4k"))
        .collect();
    assert!(!churn.is_empty());
    let freed: u64 = churn.iter().map(|b| b.lifetimes().freed()).sum();
    let short: f64 = churn
        .iter()
        .map(|b| b.short_lived(Duration::from_millis(1)))
        .sum();
    assert!(
        freed > 10_000,
        "most of ~12,600 sampled buffers were freed: {freed}"
    );
    assert!(
        short > 0.9 * freed as f64,
        "within 1 ms: {short} of {freed}"
    );
    let t = p.temporary_stacks(allocscope::profile::temporary_lifetime(), 100);
    let rank = |name: &str| {
        t.iter()
            .position(|s| s.frames().iter().any(|f| f.name().contains(name)))
    };
    let (c, k) = (rank("heap_age::churn_4k"), rank("heap_age::keep_4k"));
    eprintln!("temporary: churn_4k {c:?}, keep_4k {k:?} of {}", t.len());
    let c = c.expect("the per-call buffer is temporary");
    assert!(k.is_none_or(|k| k > c), "{c} vs {k:?}");
    assert!(t[c].short_lived_bytes() > 4 * 1024 * 1024, "{:?}", t[c]);
    assert!(t[c].short_lived_share() > 0.9, "{:?}", t[c]);

    // the flamegraph of short-lived bytes, and the landing page's list
    let r = get(addr, "/debug/pprof/heap.svg?sample=temporary");
    assert_eq!(r.status, 200);
    let svg = r.text();
    assert!(svg.contains("Temporary allocations"), "{svg}");
    assert!(svg.contains("heap_age::churn_4k"));
    assert!(!svg.contains("heap_age::keep_4k"));
    let page = get(addr, "/").text();
    let section = page
        .split("<h2>Temporary allocations</h2>")
        .nth(1)
        .and_then(|s| s.split("<h2>").next())
        .unwrap_or_else(|| panic!("no temporary section: {page}"));
    assert!(section.contains("heap_age::churn_4k"), "{section}");
    assert!(!section.contains("heap_age::keep_4k"), "{section}");
    drop(kept);
    s.shutdown();
}

#[test]
fn bad_min_age_and_temporary_combinations_are_400s() {
    let _turn = SAMPLER.lock().unwrap_or_else(|p| p.into_inner());
    let s = start();
    let addr = s.local_addr();
    for (path, says) in [
        ("/debug/pprof/heap?min_age=10", "no unit"),
        ("/debug/pprof/heap?min_age=abc", "min_age"),
        ("/debug/pprof/allocs?min_age=-1s", "min_age"),
        ("/debug/pprof/heap.svg?min_age=1.5s", "min_age"),
        ("/debug/pprof/heap.svg?min_age=10y", "unknown unit"),
        (
            "/debug/pprof/heap.svg?sample=temporary&min_age=1s",
            "temporary",
        ),
        (
            "/debug/pprof/heap.svg?sample=temporary&diff=baseline",
            "temporary",
        ),
        ("/debug/pprof/heap.svg?diff=baseline&min_age=1s", "min_age"),
        ("/debug/pprof/heap.svg?sample=temporarily", "temporary"),
    ] {
        let r = get(addr, path);
        assert_eq!(r.status, 400, "{path}: {}", r.text());
        assert!(r.text().contains(says), "{path}: {}", r.text());
    }
    for ok in [
        "/debug/pprof/heap?min_age=0",
        "/debug/pprof/heap?min_age=10m",
        "/debug/pprof/allocs?min_age=2h",
        "/debug/pprof/heap.svg?min_age=250ms",
        "/debug/pprof/heap.svg?sample=temporary",
    ] {
        assert_eq!(get(addr, ok).status, 200, "{ok}");
    }
    // the key: parsed, checked, applied
    assert!(Config::default()
        .temporary_lifetime(Duration::ZERO)
        .validate()
        .is_err());
    s.shutdown();
    assert_eq!(sampling::interval(), 4096);
}
