//! Scenario: `/gc` and `/gc/collect` over real sockets (issue 5): round
//! trips, every bad input, methods, the token and remote rules, the
//! metrics, the landing page and the configuration `start()` applies.
//! One test: the collector's settings are process-wide and every `start()`
//! applies its configuration's.
mod http;

use std::net::SocketAddr;
use std::time::Duration;

use allocscope::server::{self, Config};
use http::{get, request};
use serde_json::Value;

#[global_allocator]
static A: allocscope::AllocScope = allocscope::AllocScope::system();

const TOKEN: &str = "s3cret-token-0123456789";

fn config() -> Config {
    Config::default()
        .addr("127.0.0.1:0".parse().unwrap())
        .log_interval(Duration::ZERO)
}

fn post(a: SocketAddr, path: &str) -> http::Resp {
    request(a, "POST", path, &[], b"")
}

fn json(r: &http::Resp) -> Value {
    assert_eq!(
        r.header("content-type"),
        Some("application/json"),
        "{}",
        r.text()
    );
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.text()))
}

/// A JSON error with `status` whose message contains `needle`.
fn assert_json_error(r: &http::Resp, status: u16, needle: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    let v = json(r);
    let m = v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{}", r.text()));
    assert!(m.contains(needle), "{needle:?} not in {m:?}");
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
}

#[test]
fn gc_endpoints() {
    let s = server::start(config()).expect("start");
    let a = s.local_addr();

    // GET /gc: the state, in the documented order.
    let r = get(a, "/gc");
    assert_eq!(r.status, 200);
    assert!(
        r.text()
            .starts_with("{\"threshold\":100,\"heap_goal_bytes\":"),
        "{}",
        r.text()
    );
    let v = json(&r);
    assert_eq!(v["threshold"], 100);
    assert!(v["heap_goal_bytes"].as_u64().unwrap() >= 4 << 20);
    assert!(v["live_bytes"].as_u64().unwrap() > 0);
    assert_eq!(v["memory_limit_bytes"], Value::Null);
    assert!(v["cycles"].is_u64());
    assert!(v["last_cycles"].is_array());
    assert_eq!(v["release_to_os"], "auto");
    assert_eq!(v["collector_time_share"], 0.1);
    assert_eq!(v["collector_running"], true, "start() starts the collector");
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
    for k in [
        "threshold",
        "heap_goal_bytes",
        "live_bytes",
        "memory_limit_bytes",
        "cycles",
        "last_cycles",
    ] {
        assert!(keys.contains(&k), "{k}");
    }
    assert_eq!(request(a, "HEAD", "/gc", &[], b"").status, 200);

    // POST /gc?set=…: exact answers, like debug.SetGCPercent.
    let r = post(a, "/gc?set=200");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text().trim(), r#"{"threshold":200,"previous":100}"#);
    assert_eq!(allocscope::gc::threshold(), Some(200));
    assert_eq!(
        post(a, "/gc?set=off").text().trim(),
        r#"{"threshold":null,"previous":200}"#
    );
    let v = json(&get(a, "/gc"));
    assert_eq!(v["threshold"], Value::Null);
    assert_eq!(v["heap_goal_bytes"], Value::Null, "no threshold, no limit");
    assert_eq!(
        post(a, "/gc?set=OFF").text().trim(),
        r#"{"threshold":null,"previous":null}"#
    );
    assert_eq!(
        post(a, "/gc?set=100").text().trim(),
        r#"{"threshold":100,"previous":null}"#
    );

    // POST /gc?memory_limit=…
    assert_eq!(
        post(a, "/gc?memory_limit=2GiB").text().trim(),
        r#"{"memory_limit_bytes":2147483648,"previous_memory_limit_bytes":null}"#
    );
    assert_eq!(allocscope::gc::memory_limit(), Some(2 << 30));
    assert_eq!(json(&get(a, "/gc"))["memory_limit_bytes"], 2u64 << 30);
    assert_eq!(json(&get(a, "/gc"))["memory_limit_source"], "manual");
    assert_eq!(
        post(a, "/gc?memory_limit=off").text().trim(),
        r#"{"memory_limit_bytes":null,"previous_memory_limit_bytes":2147483648}"#
    );
    let r = post(a, "/gc?set=150&memory_limit=1TiB");
    assert_eq!(
        r.text().trim(),
        r#"{"threshold":150,"previous":100,"memory_limit_bytes":1099511627776,"previous_memory_limit_bytes":null}"#
    );
    assert_eq!(post(a, "/gc?set=100&memory_limit=off").status, 200);
    assert_eq!(json(&get(a, "/gc"))["memory_limit_source"], "off");
    // memory_limit=auto: 0.9 of the container's limit, where there is one
    let r = json(&post(a, "/gc?memory_limit=auto"));
    let g = json(&get(a, "/gc"));
    assert_eq!(g["memory_limit_source"], "container");
    assert_eq!(g["memory_limit_ratio"], 0.9);
    assert_eq!(r["memory_limit_bytes"], g["memory_limit_bytes"]);
    match allocscope::gc::container_memory().and_then(|c| c.limit_bytes) {
        Some(l) => assert_eq!(
            g["memory_limit_bytes"],
            ((l as f64 * 0.9) as u64).max(4 << 20)
        ),
        None => assert_eq!(g["memory_limit_bytes"], Value::Null),
    }
    if let Some(c) = allocscope::gc::container_memory() {
        assert_eq!(g["container"]["cgroup"], c.version.as_str());
        assert!(g["container"]["usage_bytes"].as_u64().is_some(), "{g}");
    }
    for k in [
        "memory_limit_exceeded_seconds",
        "memory_limit_backoffs",
        "memory_limit_paused",
    ] {
        assert!(!g[k].is_null(), "{k} missing from {g}");
    }
    assert_eq!(post(a, "/gc?memory_limit=off").status, 200);
    assert_eq!(json(&get(a, "/gc"))["memory_limit_source"], "off");

    // Every bad input: 400, JSON, naming the accepted forms; nothing changes.
    for (q, needle) in [
        ("set=-1", "whole number of percent"),
        ("set=abc", "or off"),
        ("set=1.5", "whole number of percent"),
        ("set=99999999999", "4294967295"),
        ("set=", "or off"),
        ("set=%2B5", "or off"),
        ("memory_limit=", "GiB"),
        ("memory_limit=-1", "GiB"),
        ("memory_limit=2GB", "GiB"),
        ("memory_limit=lots", "or off"),
        ("memory_limit=0", "or off"),
        ("memory_limit=99999999999999999999", "GiB"),
        ("memory_limit=16777216TiB", "TiB"),
        ("nope=1", "set=<percent>|off"),
        ("set=100&set=200", "twice"),
        ("set=300&memory_limit=2GB", "GiB"),
        ("set=300&extra=1", "memory_limit=<size>|off"),
        ("", "nothing to change"),
    ] {
        let r = post(a, &format!("/gc?{q}"));
        assert_json_error(&r, 400, needle);
        assert_eq!(
            allocscope::gc::threshold(),
            Some(100),
            "{q} changed nothing"
        );
        assert_eq!(allocscope::gc::memory_limit(), None, "{q} changed nothing");
    }
    assert_json_error(&post(a, "/gc?set=%zz"), 400, "percent-encoding");

    // Methods: a GET carrying a change is 405; /gc/collect is POST-only.
    for p in ["/gc?set=200", "/gc?memory_limit=1GiB", "/gc?x=1&set=off"] {
        let r = get(a, p);
        assert_json_error(&r, 405, "POST");
        assert_eq!(r.header("allow"), Some("POST"));
    }
    assert_eq!(request(a, "HEAD", "/gc?set=200", &[], b"").status, 405);
    assert_eq!(allocscope::gc::threshold(), Some(100));
    assert_json_error(&get(a, "/gc?x=1"), 400, "no parameters");
    let r = get(a, "/gc/collect");
    assert_json_error(&r, 405, "method GET");
    assert_eq!(r.header("allow"), Some("POST"));
    let r = request(a, "PUT", "/gc", &[], b"");
    assert_json_error(&r, 405, "PUT");
    assert_eq!(r.header("allow"), Some("GET, HEAD, POST"));
    assert_json_error(&post(a, "/gc/collect?x=1"), 400, "no parameters");
    assert_eq!(get(a, "/gc/").status, 404);

    // POST /gc/collect: a manual cycle's record.
    let before = allocscope::gc::stats().cycles();
    let r = post(a, "/gc/collect");
    assert_eq!(r.status, 200, "{}", r.text());
    let c = json(&r);
    assert_eq!(c["reason"], "manual");
    assert_eq!(c["number"].as_u64().unwrap(), before + 1);
    for k in [
        "start_unix_seconds",
        "duration_seconds",
        "goal_bytes",
        "live_bytes_before",
        "live_bytes_after",
        "resident_bytes_before",
        "resident_bytes_after",
        "released_bytes",
        "reclaimed_bytes",
        "reclaimer_panics",
        "next_goal_bytes",
    ] {
        assert!(c.get(k).is_some(), "{k} in {c}");
    }
    let v = json(&get(a, "/gc"));
    assert_eq!(v["cycles"].as_u64().unwrap(), before + 1);
    assert_eq!(v["last_cycles"][0]["number"], c["number"], "newest first");

    // Metrics and the landing page.
    let m = get(a, "/metrics").text();
    for line in [
        "allocscope_collections_total{reason=\"manual\"} ",
        "allocscope_collections_total{reason=\"threshold\"} ",
        "allocscope_collections_total{reason=\"limit\"} ",
        "allocscope_collection_duration_seconds_bucket{le=\"0.001\"} ",
        "allocscope_collection_duration_seconds_count ",
        "allocscope_heap_goal_bytes ",
        "allocscope_collection_threshold_ratio 1\n",
        "allocscope_memory_limit_bytes inf\n",
        "allocscope_collection_skipped_triggers_total ",
        "allocscope_collection_released_bytes_total ",
        "allocscope_collection_reclaimers ",
    ] {
        assert!(m.contains(line), "{line:?} not in /metrics");
    }
    let page = get(a, "/").text();
    for needle in [
        "Collection cycles",
        "id=\"gcform\"",
        "id=\"gcnow\"",
        "id=\"gc_threshold\"",
        "/gc?set=200",
        "<tbody id=\"cycles\"><tr><td>",
    ] {
        assert!(page.contains(needle), "{needle} not on the landing page");
    }
    s.shutdown();

    // The configuration start() applies.
    let s = server::start(
        config()
            .threshold(Some(300))
            .memory_limit(Some(1 << 40))
            .collector_time_share(0.2),
    )
    .unwrap();
    let v = json(&get(s.local_addr(), "/gc"));
    assert_eq!(v["threshold"], 300);
    assert_eq!(v["memory_limit_bytes"], 1u64 << 40);
    assert_eq!(v["collector_time_share"], 0.2);
    s.shutdown();
    let e = server::start(config().collector_time_share(0.0))
        .unwrap_err()
        .to_string();
    assert!(e.contains("collector_time_share"), "{e}");

    // Token: every /gc path needs it, errors stay JSON.
    let s = server::start(config().token(TOKEN)).unwrap();
    let a = s.local_addr();
    for (m, p) in [
        ("GET", "/gc"),
        ("POST", "/gc?set=100"),
        ("POST", "/gc/collect"),
    ] {
        let r = request(a, m, p, &[], b"");
        assert_json_error(&r, 401, "Authorization: Bearer");
        assert!(r.header("www-authenticate").unwrap().starts_with("Bearer"));
        let good = format!("Bearer {TOKEN}");
        let r = request(a, m, p, &[("Authorization", &good)], b"");
        assert_eq!(r.status, 200, "{m} {p}: {}", r.text());
    }
    s.shutdown();

    // Remote without a token: the state is readable (like the landing
    // page), changes are refused.
    let s = server::start(config().addr("0.0.0.0:0".parse().unwrap())).unwrap();
    let a = SocketAddr::from(([127, 0, 0, 1], s.local_addr().port()));
    assert_eq!(get(a, "/gc").status, 200);
    assert_json_error(&post(a, "/gc?set=100"), 403, "allow_remote_control");
    assert_json_error(&post(a, "/gc/collect"), 403, "token");
    let page = get(a, "/").text();
    assert!(!page.contains("id=\"gcform\""), "no controls");
    s.shutdown();
    let s = server::start(
        config()
            .addr("0.0.0.0:0".parse().unwrap())
            .allow_remote_control(true),
    )
    .unwrap();
    let a = SocketAddr::from(([127, 0, 0, 1], s.local_addr().port()));
    assert_eq!(post(a, "/gc?set=100").status, 200);
    s.shutdown();

    // `gc=1` on /debug/pprof/heap runs a cycle first, as Go's handler runs
    // runtime.GC(); gc=0, and gc=1 on allocs, do not; a bad value is a 400.
    let s = server::start(config()).unwrap();
    let a = s.local_addr();
    let manual = || {
        allocscope::gc::cycles()
            .iter()
            .filter(|c| c.reason == allocscope::gc::CycleReason::Manual)
            .count()
    };
    let before = manual();
    let r = get(a, "/debug/pprof/heap?gc=1");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(manual(), before + 1, "gc=1 ran one cycle");
    for p in [
        "/debug/pprof/heap?gc=0",
        "/debug/pprof/allocs?gc=1",
        "/debug/pprof/heap",
    ] {
        assert_eq!(get(a, p).status, 200, "{p}");
    }
    assert_eq!(manual(), before + 1, "no other cycle");
    let r = get(a, "/debug/pprof/heap?gc=yes");
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("invalid gc"), "{}", r.text());
    assert_eq!(r.header("x-go-pprof"), Some("1"));
    s.shutdown();
}
