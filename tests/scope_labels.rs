//! Scenario: `AllocScope::system()` sampling at a 4 KiB interval, and the
//! exporter. Two scopes, `checkout` and `search`, each allocate and keep
//! memory from a function of their own on named threads
//! (`request-worker-1`, `indexer-2`). Who holds the memory is read back
//! from the API (`Bucket::scope`, `Bucket::thread`, the filters), from the
//! exporter (`heap.svg?scope=…`, `?thread=…`, `debug=1`, the pprof labels,
//! a delta profile) and with `go tool pprof -tags` and `-tagfocus`
//! (skipped with a message without `go`, a failure with
//! `ALLOCSCOPE_REQUIRE_TOOLS=1`).
#![cfg(feature = "server")]
mod http;

use std::io::Read;
use std::sync::Mutex;
use std::time::Duration;

use allocscope::profile::{Bucket, HeapProfile, PprofKind, SampleType};
use allocscope::scope::Scope;
use allocscope::server::ServerHandle;
use http::{get, go_pprof, have_tool};
use pprof::protos::{Message, Profile};

#[global_allocator]
static A: allocscope::AllocScope = allocscope::AllocScope::system();

static CHECKOUT: Scope = Scope::new("checkout");
static SEARCH: Scope = Scope::new("search");

/// The tests share the sampler and the exporter's render turn.
static SAMPLER: Mutex<()> = Mutex::new(());

const CHECKOUT_FN: &str = "scope_labels::checkout_cart";
const SEARCH_FN: &str = "scope_labels::search_index";

fn start() -> ServerHandle {
    http::start_sampling(4096)
}

/// Allocates `n` 4 KiB carts and keeps them (a body unlike
/// `search_index`'s, so that the linker cannot fold the two).
#[inline(never)]
fn checkout_cart(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| std::hint::black_box(vec![i as u8; 4096]))
        .collect()
}

/// Allocates `n` 6000-byte index pages and keeps them.
#[inline(never)]
fn search_index(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| std::hint::black_box(vec![(i as u8) ^ 0xa5; 6000]))
        .collect()
}

/// Runs `f` on a thread named `name` and returns what it kept.
fn on_thread(name: &str, f: impl FnOnce() -> Vec<Vec<u8>> + Send + 'static) -> Vec<Vec<u8>> {
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(f)
        .expect("spawn")
        .join()
        .expect("join")
}

/// What the two scopes keep: `n` blocks each, in their scopes, on their
/// threads.
fn allocate(n: usize) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let carts = on_thread("request-worker-1", move || {
        CHECKOUT.within(|| checkout_cart(n))
    });
    let pages = on_thread("indexer-2", move || {
        let _g = SEARCH.enter();
        search_index(n)
    });
    (carts, pages)
}

/// Whether a frame of `b` is `name` or in it (`collect` may be a tail
/// call: the leaf is then the function's closure, `…::checkout_cart::{{closure}}`).
fn has_frame(b: &Bucket, name: &str) -> bool {
    b.frames().iter().any(|f| f.name().contains(name))
}

/// The in-use bytes of the buckets with a frame `name`.
fn inuse(p: &HeapProfile, name: &str) -> u64 {
    p.buckets()
        .iter()
        .filter(|b| has_frame(b, name))
        .map(|b| b.estimate(SampleType::InuseSpace))
        .sum()
}

fn decode(gz: &[u8]) -> Profile {
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(gz)
        .read_to_end(&mut raw)
        .expect("gzip");
    Profile::decode(raw.as_slice()).expect("pprof")
}

/// (function names of the stack, scope, thread, inuse_space) of every
/// sample of a pprof profile; a sample without both labels fails.
fn labelled_samples(p: &Profile) -> Vec<(Vec<String>, String, String, i64)> {
    let s = |i: i64| p.string_table[usize::try_from(i).unwrap()].clone();
    let fname = |id: u64| {
        p.function
            .iter()
            .find(|f| f.id == id)
            .map(|f| s(f.name))
            .unwrap_or_default()
    };
    p.sample
        .iter()
        .map(|smp| {
            let names: Vec<String> = smp
                .location_id
                .iter()
                .filter_map(|id| p.location.iter().find(|l| l.id == *id))
                .flat_map(|l| l.line.iter().map(|line| fname(line.function_id)))
                .collect();
            let label = |k: &str| {
                let l: Vec<_> = smp.label.iter().filter(|l| s(l.key) == k).collect();
                assert_eq!(l.len(), 1, "one {k} label on every sample: {:?}", smp.label);
                assert_ne!(l[0].str, 0, "{k} is a string label");
                s(l[0].str)
            };
            (names, label("scope"), label("thread"), smp.value[3])
        })
        .collect()
}

/// (leaf, scope, thread) of each sample: what a failure message shows.
fn summary(samples: &[(Vec<String>, String, String, i64)]) -> Vec<String> {
    samples
        .iter()
        .map(|(names, scope, thread, _)| {
            let leaf = names.first().map_or("", String::as_str);
            format!("{leaf} [{scope}, {thread}]")
        })
        .collect()
}

/// The block of `go tool pprof -tags` output for tag `key`.
fn tag_block<'a>(tags: &'a str, key: &str) -> &'a str {
    tags.split("\n\n")
        .find(|b| b.trim_start().starts_with(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key} tag: {tags}"))
}

#[test]
fn samples_know_their_scope_and_thread_group() {
    let _turn = SAMPLER.lock().unwrap_or_else(|p| p.into_inner());
    let s = start();
    let addr = s.local_addr();
    let (carts, pages) = allocate(300);

    // the API: every bucket of each function is in its scope and group
    let p = HeapProfile::capture();
    for (name, scope, thread) in [
        (CHECKOUT_FN, "checkout", "request-worker"),
        (SEARCH_FN, "search", "indexer"),
    ] {
        let mine: Vec<&Bucket> = p.buckets().iter().filter(|b| has_frame(b, name)).collect();
        assert!(!mine.is_empty(), "{name} sampled");
        for b in &mine {
            assert_eq!((b.scope(), b.thread()), (scope, thread), "{name}: {b:?}");
        }
        // ~300 blocks of 4 KiB or more each
        assert!(inuse(&p, name) > 600 * 1024, "{name}: {}", inuse(&p, name));
    }
    let checkout = p.scope("checkout");
    assert_eq!(inuse(&checkout, CHECKOUT_FN), inuse(&p, CHECKOUT_FN));
    assert_eq!(inuse(&checkout, SEARCH_FN), 0);
    assert!(checkout.buckets().iter().all(|b| b.scope() == "checkout"));
    let indexer = p.thread("indexer");
    assert_eq!(inuse(&indexer, SEARCH_FN), inuse(&p, SEARCH_FN));
    assert_eq!(inuse(&indexer, CHECKOUT_FN), 0);
    // a thread's own name selects its group
    assert_eq!(
        inuse(&p.thread("request-worker-1"), CHECKOUT_FN),
        inuse(&p, CHECKOUT_FN)
    );
    assert!(p.scope("no-such-scope").is_empty());
    assert!(p.scope("checkout").thread("indexer").is_empty());
    // the folded stacks of a scope
    let folded = checkout.folded(SampleType::InuseSpace);
    assert!(folded.contains(CHECKOUT_FN) && !folded.contains(SEARCH_FN));

    // the pprof export: every sample labelled, the functions' samples with
    // their own scope and group
    let heap = decode(&p.to_pprof(PprofKind::Heap));
    let samples = labelled_samples(&heap);
    let with = |name: &str| {
        samples
            .iter()
            .filter(|(names, ..)| names.iter().any(|n| n.contains(name)))
            .map(|(_, scope, thread, _)| (scope.as_str(), thread.as_str()))
            .collect::<std::collections::BTreeSet<_>>()
    };
    assert_eq!(
        with(CHECKOUT_FN).into_iter().collect::<Vec<_>>(),
        [("checkout", "request-worker")]
    );
    assert_eq!(
        with(SEARCH_FN).into_iter().collect::<Vec<_>>(),
        [("search", "indexer")]
    );

    // the exporter's flamegraphs, filtered
    let svg = |path: &str| {
        let r = get(addr, path);
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        r.text()
    };
    let c = svg("/debug/pprof/heap.svg?scope=checkout");
    assert!(
        c.contains(CHECKOUT_FN) && !c.contains(SEARCH_FN),
        "heap.svg?scope=checkout draws checkout's function only"
    );
    assert!(c.contains("scope checkout"), "the subtitle says so");
    let x = svg("/debug/pprof/heap.svg?scope=search&sample=alloc_space");
    assert!(x.contains(SEARCH_FN) && !x.contains(CHECKOUT_FN));
    let t = svg("/debug/pprof/heap.svg?thread=indexer");
    assert!(t.contains(SEARCH_FN) && !t.contains(CHECKOUT_FN));
    let t = svg("/debug/pprof/heap.svg?thread=request-worker-1&min_age=0");
    assert!(t.contains(CHECKOUT_FN) && !t.contains(SEARCH_FN));
    // an unknown name is no error: nothing to draw
    let none = svg("/debug/pprof/heap.svg?scope=checkout&thread=indexer");
    assert!(!none.contains(CHECKOUT_FN) && !none.contains(SEARCH_FN));
    let none = svg("/debug/pprof/heap.svg?scope=nobody");
    assert!(!none.contains(CHECKOUT_FN) && !none.contains(SEARCH_FN));

    // Go's debug=1 text: the filter, and a `# labels:` comment per record
    let text = get(addr, "/debug/pprof/heap?debug=1&scope=search").text();
    assert!(
        text.contains(SEARCH_FN) && !text.contains(CHECKOUT_FN),
        "{text}"
    );
    assert!(
        text.contains("# labels: {\"scope\":\"search\", \"thread\":\"indexer\"}"),
        "{text}"
    );
    let text = get(addr, "/debug/pprof/allocs?debug=1&thread=request-worker").text();
    assert!(text.contains(CHECKOUT_FN) && !text.contains(SEARCH_FN));
    let all = get(addr, "/debug/pprof/heap?debug=1").text();
    assert!(all.contains("\"scope\":\"checkout\", \"thread\":\"request-worker\""));

    // the served pprof: filtered, labelled
    for path in [
        "/debug/pprof/heap?scope=checkout",
        "/debug/pprof/allocs?scope=checkout&lines=1",
    ] {
        let r = get(addr, path);
        assert_eq!(r.status, 200, "{path}");
        let got = labelled_samples(&decode(&r.body));
        assert!(!got.is_empty(), "{path}");
        assert!(
            got.iter().all(|(_, scope, ..)| scope == "checkout"),
            "{path}: {:#?}",
            summary(&got)
        );
        assert!(got
            .iter()
            .any(|(names, ..)| names.iter().any(|n| n.contains(CHECKOUT_FN))));
    }

    if have_tool("go", &["version"]) {
        let tmp =
            std::env::temp_dir().join(format!("allocscope-scope-labels-{}", std::process::id()));
        std::fs::create_dir_all(&tmp).unwrap();
        let url = format!("http://{addr}/debug/pprof/heap");
        let tags = go_pprof(&["-tags"], &url, &tmp);
        eprintln!("{tags}");
        let scope = tag_block(&tags, "scope");
        assert!(
            scope.contains("checkout") && scope.contains("search"),
            "{scope}"
        );
        let thread = tag_block(&tags, "thread");
        assert!(
            thread.contains("request-worker") && thread.contains("indexer"),
            "{thread}"
        );
        let top = go_pprof(&["-top", "-tagfocus=scope=checkout"], &url, &tmp);
        assert!(top.contains(CHECKOUT_FN), "{top}");
        assert!(!top.contains(SEARCH_FN), "{top}");
        let top = go_pprof(&["-top", "-tagfocus=thread=indexer"], &url, &tmp);
        assert!(top.contains(SEARCH_FN), "{top}");
        assert!(!top.contains(CHECKOUT_FN), "{top}");
        let top = go_pprof(
            &["-top", "-sample_index=alloc_space"],
            &format!("http://{addr}/debug/pprof/allocs?scope=search"),
            &tmp,
        );
        assert!(
            top.contains(SEARCH_FN) && !top.contains(CHECKOUT_FN),
            "{top}"
        );
        let _ = std::fs::remove_dir_all(&tmp);
    }
    drop((carts, pages));
    s.shutdown();
}

#[test]
fn a_delta_profile_keeps_the_labels_and_takes_the_filters() {
    let _turn = SAMPLER.lock().unwrap_or_else(|p| p.into_inner());
    let s = start();
    let addr = s.local_addr();
    let kept_before = allocate(100);
    // the API: what the window allocated, in its scopes
    let before = HeapProfile::capture();
    let in_window = allocate(200);
    let after = HeapProfile::capture();
    let d = labelled_samples(&decode(&after.delta_pprof(&before, PprofKind::Heap)));
    for (names, scope, thread, inuse) in &d {
        if names.iter().any(|n| n.contains(CHECKOUT_FN)) {
            assert_eq!(
                (scope.as_str(), thread.as_str()),
                ("checkout", "request-worker")
            );
            assert!(*inuse > 0);
        }
        if names.iter().any(|n| n.contains(SEARCH_FN)) {
            assert_eq!((scope.as_str(), thread.as_str()), ("search", "indexer"));
        }
    }
    assert!(d
        .iter()
        .any(|(names, ..)| names.iter().any(|n| n.contains(SEARCH_FN))));
    // a profile minus itself: nothing, labels and all
    assert!(decode(&after.delta_pprof(&after, PprofKind::Allocs))
        .sample
        .is_empty());

    // the exporter's delta, filtered on both captures
    let window = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        allocate(100)
    });
    let r = get(addr, "/debug/pprof/allocs?seconds=1&scope=search");
    let in_served_window = window.join().unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let got = labelled_samples(&decode(&r.body));
    assert!(
        got.iter().all(|(_, scope, ..)| scope == "search"),
        "{:#?}",
        summary(&got)
    );
    assert!(
        got.iter()
            .any(|(names, ..)| names.iter().any(|n| n.contains(SEARCH_FN))),
        "{:#?}",
        summary(&got)
    );
    drop((kept_before, in_window, in_served_window));
    s.shutdown();
}

#[test]
fn invalid_names_are_400s_that_name_the_parameter() {
    let _turn = SAMPLER.lock().unwrap_or_else(|p| p.into_inner());
    let s = start();
    let addr = s.local_addr();
    let long = "x".repeat(65);
    for (path, says) in [
        (
            format!("/debug/pprof/heap.svg?scope={long}"),
            "invalid scope",
        ),
        ("/debug/pprof/heap.svg?scope=".to_string(), "invalid scope"),
        ("/debug/pprof/heap?scope=a%0Ab".to_string(), "invalid scope"),
        (
            "/debug/pprof/allocs?thread=%7F".to_string(),
            "invalid thread",
        ),
        (
            "/debug/pprof/heap?debug=1&thread=a%C2%85b".to_string(),
            "invalid thread",
        ),
        (
            "/debug/pprof/heap?seconds=1&scope=%01".to_string(),
            "invalid scope",
        ),
    ] {
        let r = get(addr, &path);
        assert_eq!(r.status, 400, "{path}: {}", r.text());
        assert!(r.text().contains(says), "{path}: {}", r.text());
    }
    for ok in [
        "/debug/pprof/heap?scope=nobody",
        "/debug/pprof/allocs?thread=nobody-7",
        "/debug/pprof/heap?debug=1&scope=checkout&thread=indexer",
        "/debug/pprof/heap.svg?scope=%E2%9C%93%20ok",
    ] {
        assert_eq!(get(addr, ok).status, 200, "{ok}");
    }
    // a name is text in the flamegraph's subtitle, escaped
    let r = get(addr, "/debug/pprof/heap.svg?scope=%3Cscript%3E");
    assert_eq!(r.status, 200);
    assert!(!r.text().contains("<script>"), "{}", r.text());
    assert!(r.text().contains("scope &lt;script&gt;"), "{}", r.text());
    s.shutdown();
}
