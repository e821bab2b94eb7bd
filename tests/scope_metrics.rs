//! Scenario: the per-scope and per-thread-group series of `/metrics` at
//! the size the issue budgets: 16 scopes and 16 thread groups, and the
//! whole default scrape stays under 300 series. `promtool check metrics`
//! reports nothing on it (skipped with a message without promtool, failing
//! instead when `ALLOCSCOPE_REQUIRE_TOOLS=1`). Then the bound on names:
//! past `max_scopes`, a new name counts under `other` and in
//! `allocscope_scope_folded_names_total`, and adds no series. One test: thread
//! groups and the scope registry are process-wide.
mod http;

use std::time::Duration;

use allocscope::scope::Scope;
use allocscope::server::{self, Config};
use http::{get, have_tool};

#[global_allocator]
static A: allocscope::AllocScope = allocscope::AllocScope::system();

/// The sample lines of a scrape (every series, histogram buckets included).
fn series(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

/// The distinct values of `label` on the lines of `family`.
fn label_values(text: &str, family: &str, label: &str) -> Vec<String> {
    let prefix = format!("{family}{{{label}=\"");
    let mut v: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|rest| rest.rsplit_once("\"} ").map(|(name, _)| name.to_string()))
        .collect();
    v.sort();
    v.dedup();
    v
}

fn value(text: &str, line_prefix: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(line_prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {line_prefix:?} in the scrape"))
}

fn promtool_check(text: &str) {
    http::promtool_check(text)
}

#[test]
fn sixteen_scopes_and_sixteen_thread_groups_stay_under_300_series() {
    let s = server::start(
        Config::default()
            .addr("127.0.0.1:0".parse().unwrap())
            .log_interval(Duration::ZERO),
    )
    .expect("start");
    let addr = s.local_addr();
    // the exporter's threads are running and have allocated
    assert_eq!(get(addr, "/metrics").status, 200);

    // 16 named scopes (besides the built-in unscoped, other, allocscope),
    // one of them a name the text format must escape
    let mut names: Vec<String> = (0..15).map(|i| format!("scope-{i:02}")).collect();
    names.push("tenant \"q\" \\ 7".to_string());
    let mut kept = Vec::new();
    for n in &names {
        let scope = Scope::named(n);
        assert_eq!(scope.name(), n.as_str(), "interned, not folded");
        kept.push(scope.within(|| vec![1u8; 1000]));
    }
    assert_eq!(allocscope::scope::info().scopes, 16);

    // thread groups up to 16: new ones until the scrape shows 16
    let mut next = 0u8;
    let text = loop {
        let text = get(addr, "/metrics").text();
        let groups = label_values(&text, "allocscope_thread_allocations_total", "thread");
        if groups.len() >= 16 {
            break text;
        }
        let name = format!("pool-{}-3", (b'a' + next) as char);
        next += 1;
        assert!(next <= 16, "thread groups do not appear: {groups:?}");
        std::thread::Builder::new()
            .name(name)
            .spawn(|| drop(std::hint::black_box(vec![0u8; 4096])))
            .unwrap()
            .join()
            .unwrap();
    };
    let groups = label_values(&text, "allocscope_thread_allocations_total", "thread");
    let scopes = label_values(&text, "allocscope_scope_allocations_total", "scope");
    eprintln!("groups: {groups:?}\nscopes: {scopes:?}");
    assert_eq!(groups.len(), 16, "{groups:?}");
    assert_eq!(scopes.len(), 16 + 3, "{scopes:?}");
    assert!(
        scopes.iter().any(|s| s == "tenant \\\"q\\\" \\\\ 7"),
        "escaped label value: {scopes:?}"
    );
    for family in [
        "allocscope_scope_allocations_total",
        "allocscope_scope_allocated_bytes_total",
        "allocscope_scope_inuse_bytes",
        "allocscope_scope_inuse_objects",
    ] {
        assert_eq!(label_values(&text, family, "scope").len(), 19, "{family}");
    }
    for family in [
        "allocscope_thread_allocations_total",
        "allocscope_thread_allocated_bytes_total",
        "allocscope_thread_deallocations_total",
        "allocscope_thread_freed_bytes_total",
    ] {
        assert_eq!(label_values(&text, family, "thread").len(), 16, "{family}");
    }
    assert!(
        value(
            &text,
            "allocscope_scope_allocations_total{scope=\"scope-03\"} "
        ) >= 1.0
    );
    assert!(
        value(
            &text,
            "allocscope_scope_allocated_bytes_total{scope=\"scope-03\"} "
        ) >= 1000.0
    );
    assert!(
        value(
            &text,
            "allocscope_thread_allocated_bytes_total{thread=\"pool-a\"} "
        ) >= 4096.0
    );
    assert!(
        value(
            &text,
            "allocscope_scope_allocations_total{scope=\"allocscope\"} "
        ) > 0.0
    );
    let n = series(&text).len();
    eprintln!("{n} series with 16 scopes and 16 thread groups");
    assert!(n < 300, "{n} series:\n{text}");
    if have_tool("promtool", &["--version"]) {
        promtool_check(&text);
    }

    // past the bound: a new name counts under `other`, reported as folded,
    // and adds no series
    let before = value(&text, "allocscope_scope_folded_names_total ");
    allocscope::scope::set_max_scopes(16).unwrap();
    let folded = Scope::named("one-too-many");
    assert_eq!(folded.name(), "other");
    kept.push(folded.within(|| vec![2u8; 100]));
    let text = get(addr, "/metrics").text();
    assert_eq!(
        value(&text, "allocscope_scope_folded_names_total "),
        before + 1.0
    );
    assert!(
        value(
            &text,
            "allocscope_scope_allocations_total{scope=\"other\"} "
        ) >= 1.0
    );
    assert_eq!(
        label_values(&text, "allocscope_scope_allocations_total", "scope").len(),
        19
    );
    assert!(!text.contains("one-too-many"));
    drop(kept);
    s.shutdown();
}
