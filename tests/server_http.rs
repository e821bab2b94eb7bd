//! Scenario: the HTTP exporter, end to end over real sockets. Every
//! endpoint, status code, header and bad input of issue 4.
mod http;

use std::io::Read;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use allocscope::server::{self, Config, ServerHandle};
use http::{get, request};

#[global_allocator]
static A: allocscope::AllocScope = allocscope::AllocScope::system();

const TOKEN: &str = "s3cret-token-0123456789";
/// Every server of this binary sets this interval (start() applies it).
const INTERVAL: u64 = 256 * 1024;

fn config() -> Config {
    Config::default()
        .addr("127.0.0.1:0".parse().unwrap())
        .log_interval(Duration::ZERO)
        .sample_interval(INTERVAL)
}

fn start(c: Config) -> ServerHandle {
    server::start(c).expect("start")
}

fn assert_go_error(r: &http::Resp, status: u16, needle: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    assert_eq!(r.header("x-go-pprof"), Some("1"), "X-Go-Pprof on errors");
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert!(
        r.header("content-type").unwrap().starts_with("text/plain"),
        "errors are text/plain"
    );
    assert!(
        r.text().contains(needle),
        "{needle:?} not in {:?}",
        r.text()
    );
}

#[test]
fn landing_page_metrics_index_cmdline() {
    let s = start(config());
    let a = s.local_addr();
    assert_ne!(a.port(), 0);
    assert_eq!(s.url(), format!("http://{a}/"));

    let r = get(a, "/");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    let page = r.text();
    for link in [
        "/metrics",
        "/debug/pprof/",
        "/debug/pprof/heap",
        "/debug/pprof/allocs",
        "/debug/pprof/heap.svg?sample=inuse_space",
        "/debug/pprof/heap.svg?sample=alloc_objects",
        "/debug/pprof/heap.svg?diff=baseline",
        "/debug/pprof/profile",
        "/debug/pprof/cmdline",
        "action=\"/debug/pprof/baseline\"",
        "<object id=\"fg\"",
        "<svg",
        "<script>",
    ] {
        assert!(page.contains(link), "{link} not on the landing page");
    }
    assert!(
        !page.contains("http://") || !page.contains("src=\"http"),
        "no external assets"
    );
    assert!(!page.contains("<link") && !page.contains("src=\"//"));

    let r = get(a, "/metrics");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let m = r.text();
    for name in [
        "allocscope_heap_live_bytes",
        "allocscope_heap_live_objects",
        "allocscope_heap_allocated_bytes_total",
        "allocscope_heap_freed_bytes_total",
        "allocscope_heap_allocations_total",
        "allocscope_heap_deallocations_total",
        "allocscope_heap_reallocations_total",
        "allocscope_heap_allocation_failures_total",
        "allocscope_heap_allocation_size_bytes_bucket{le=\"8\"}",
        "allocscope_heap_allocation_size_bytes_bucket{le=\"1073741824\"}",
        "allocscope_heap_allocation_size_bytes_bucket{le=\"+Inf\"}",
        "allocscope_heap_size_class_live_bytes{max_size=\"4096\"}",
        "allocscope_sampler_live_samples",
        "allocscope_sampler_dropped_samples_total",
        "allocscope_sampler_memory_bytes",
        "allocscope_build_info{",
        "process_resident_memory_bytes",
        "process_threads",
    ] {
        assert!(m.contains(name), "{name} missing from /metrics");
    }
    assert!(
        m.contains(&format!("\nallocscope_sampler_interval_bytes {INTERVAL}\n")),
        "start() applies the configured sample interval"
    );
    assert_eq!(allocscope::sampling::interval(), INTERVAL);
    // the per-scope and per-thread-group series depend on the process's
    // threads (tests/scope_metrics.rs budgets them)
    let series = m
        .lines()
        .filter(|l| {
            !l.starts_with('#')
                && !l.starts_with("allocscope_scope_")
                && !l.starts_with("allocscope_thread_")
        })
        .count();
    assert!(series < 250, "{series} series");
    for name in [
        "allocscope_scope_allocations_total{scope=\"allocscope\"}",
        "allocscope_scope_allocated_bytes_total{scope=\"unscoped\"}",
        "allocscope_scope_inuse_bytes{scope=\"other\"}",
        "allocscope_scope_inuse_objects{scope=\"allocscope\"}",
        "allocscope_scope_folded_names_total ",
        "allocscope_thread_allocations_total{thread=\"allocscope-http\"}",
        "allocscope_thread_allocated_bytes_total{thread=",
        "allocscope_thread_deallocations_total{thread=",
        "allocscope_thread_freed_bytes_total{thread=",
    ] {
        assert!(m.contains(name), "{name} missing from /metrics");
    }

    let r = get(a, "/debug/pprof/");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    for p in ["heap", "allocs", "profile", "cmdline", "heap.svg"] {
        assert!(
            r.text().contains(&format!("href=\"/debug/pprof/{p}\"")),
            "{p}"
        );
    }
    assert_eq!(get(a, "/debug/pprof").status, 200);

    let r = get(a, "/debug/pprof/cmdline");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    let args: Vec<String> = std::env::args().collect();
    assert_eq!(r.text(), args.join("\0"));

    // HEAD answers like GET, without a body.
    let r = request(a, "HEAD", "/metrics", &[], b"");
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    s.shutdown();
}

#[test]
fn heap_profiles_flamegraphs_and_baseline() {
    let s = start(config());
    let a = s.local_addr();
    for (path, name) in [
        ("/debug/pprof/heap", "heap"),
        ("/debug/pprof/allocs", "allocs"),
    ] {
        let r = get(a, path);
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(r.header("content-type"), Some("application/octet-stream"));
        assert_eq!(
            r.header("content-disposition"),
            Some(format!("attachment; filename=\"{name}\"").as_str())
        );
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(&r.body[..2], &[0x1f, 0x8b], "gzipped");
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(&r.body[..])
            .read_to_end(&mut raw)
            .unwrap();
        let text = String::from_utf8_lossy(&raw);
        for t in [
            "alloc_objects",
            "alloc_space",
            "inuse_objects",
            "inuse_space",
        ] {
            assert!(text.contains(t), "{t} sample type in {path}");
        }
        let r = get(a, &format!("{path}?debug=1"));
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
        assert!(r.text().starts_with("heap profile: "), "{}", r.text());
        assert_go_error(&get(a, &format!("{path}?debug=x")), 400, "debug");
        assert_go_error(
            &get(a, &format!("{path}?seconds=5&debug=1")),
            400,
            "incompatible",
        );
        assert_go_error(&get(a, &format!("{path}?seconds=0")), 400, "1 to 300");
        assert_go_error(&get(a, &format!("{path}?raw=x")), 400, "raw=1");
    }
    assert_eq!(get(a, "/debug/pprof/heap?gc=1").status, 200);

    for sample in [
        "inuse_space",
        "inuse_objects",
        "alloc_space",
        "alloc_objects",
    ] {
        let r = get(a, &format!("/debug/pprof/heap.svg?sample={sample}"));
        assert_eq!(r.status, 200, "{sample}: {}", r.text());
        assert_eq!(r.header("content-type"), Some("image/svg+xml"));
        assert!(r.text().contains("<svg"), "{sample}");
    }
    assert_eq!(get(a, "/debug/pprof/heap.svg").status, 200);
    assert_go_error(
        &get(a, "/debug/pprof/heap.svg?sample=inuse_bytes"),
        400,
        "inuse_space",
    );
    assert_go_error(
        &get(a, "/debug/pprof/heap.svg?diff=yesterday"),
        400,
        "diff=baseline",
    );

    // No baseline yet; GET cannot save one; POST does.
    assert_go_error(
        &get(a, "/debug/pprof/heap.svg?diff=baseline"),
        409,
        "POST /debug/pprof/baseline",
    );
    let r = get(a, "/debug/pprof/baseline");
    assert_go_error(&r, 405, "POST");
    assert_eq!(r.header("allow"), Some("POST"));
    let r = request(a, "POST", "/debug/pprof/baseline", &[], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("baseline saved"));
    let r = get(a, "/debug/pprof/heap.svg?diff=baseline&sample=inuse_space");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("<svg"));
    s.shutdown();
}

#[test]
fn unknown_paths_methods_and_limits() {
    let s = start(config());
    let a = s.local_addr();
    for p in ["/nope", "/metrics/", "/debug", "/favicon.ico"] {
        let r = get(a, p);
        assert_eq!(r.status, 404, "{p}");
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    }
    assert_go_error(&get(a, "/debug/pprof/goroutine"), 404, "Unknown profile");

    let r = request(a, "POST", "/metrics", &[], b"");
    assert_go_error(&r, 405, "use GET");
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
    assert_go_error(&request(a, "DELETE", "/", &[], b""), 405, "DELETE");
    assert_go_error(
        &request(a, "PUT", "/debug/pprof/heap", &[], b""),
        405,
        "PUT",
    );
    assert_go_error(&get(a, "/debug/pprof/baseline"), 405, "method GET");

    let long = format!("/debug/pprof/heap?x={}", "a".repeat(2000));
    assert_go_error(&get(a, &long), 414, "query string");
    assert_go_error(&get(a, "/debug/pprof/heap.svg?sample=%zz"), 400, "percent");
    let big = vec![b'x'; 100_000];
    assert_go_error(
        &request(a, "POST", "/debug/pprof/baseline", &[], &big),
        413,
        "body",
    );
    assert_go_error(
        &request(
            a,
            "POST",
            "/debug/pprof/baseline",
            &[("Content-Length", "99999999999")],
            b"",
        ),
        413,
        "body",
    );
    // Still serving after all that.
    assert_eq!(get(a, "/metrics").status, 200);
    s.shutdown();
}

#[test]
fn bearer_token() {
    let s = start(config().token(TOKEN));
    let a = s.local_addr();
    // /metrics stays open.
    assert_eq!(get(a, "/metrics").status, 200);
    for path in [
        "/",
        "/debug/pprof/",
        "/debug/pprof/cmdline",
        "/debug/pprof/heap",
    ] {
        let r = get(a, path);
        assert_go_error(&r, 401, "Authorization: Bearer");
        assert!(r.header("www-authenticate").unwrap().starts_with("Bearer"));
        for bad in [
            "Bearer wrong-token-0123456789".to_string(),
            format!("Bearer {TOKEN}x"),
            format!("Basic {TOKEN}"),
            TOKEN.to_string(),
            "Bearer ".to_string(),
        ] {
            let r = request(a, "GET", path, &[("Authorization", &bad)], b"");
            assert_eq!(r.status, 401, "{path} with {bad:?}");
        }
        let good = format!("Bearer {TOKEN}");
        let r = request(a, "GET", path, &[("Authorization", &good)], b"");
        assert_eq!(r.status, 200, "{path}: {}", r.text());
    }
    let r = request(a, "POST", "/debug/pprof/baseline", &[], b"");
    assert_eq!(r.status, 401);
    let good = format!("bearer {TOKEN}");
    let r = request(
        a,
        "POST",
        "/debug/pprof/baseline",
        &[("Authorization", &good)],
        b"",
    );
    assert_eq!(r.status, 200);
    s.shutdown();
}

#[test]
fn remote_without_token_is_forbidden() {
    // Listening on every interface; the test only connects over loopback.
    let s = start(config().addr("0.0.0.0:0".parse().unwrap()));
    let a = SocketAddr::from(([127, 0, 0, 1], s.local_addr().port()));
    assert_eq!(get(a, "/metrics").status, 200);
    let r = get(a, "/");
    assert_eq!(r.status, 200, "the landing page shows numbers");
    assert!(r.text().contains("allow_remote_control"));
    assert!(!r.text().contains("<object id=\"fg\""), "no flamegraph");
    for path in [
        "/debug/pprof/",
        "/debug/pprof/heap",
        "/debug/pprof/allocs",
        "/debug/pprof/heap.svg",
        "/debug/pprof/profile?seconds=1",
        "/debug/pprof/cmdline",
    ] {
        let r = get(a, path);
        assert_go_error(&r, 403, "allow_remote_control");
        assert!(r.text().contains("token"), "{path}");
    }
    assert_go_error(
        &request(a, "POST", "/debug/pprof/baseline", &[], b""),
        403,
        "token",
    );
    s.shutdown();

    let s = start(
        config()
            .addr("0.0.0.0:0".parse().unwrap())
            .allow_remote_control(true),
    );
    let a = SocketAddr::from(([127, 0, 0, 1], s.local_addr().port()));
    assert_eq!(get(a, "/debug/pprof/cmdline").status, 200);
    s.shutdown();

    let s = start(config().addr("0.0.0.0:0".parse().unwrap()).token(TOKEN));
    let a = SocketAddr::from(([127, 0, 0, 1], s.local_addr().port()));
    assert_eq!(get(a, "/debug/pprof/cmdline").status, 401);
    let good = format!("Bearer {TOKEN}");
    let r = request(
        a,
        "GET",
        "/debug/pprof/cmdline",
        &[("Authorization", &good)],
        b"",
    );
    assert_eq!(r.status, 200);
    s.shutdown();
}

/// All CPU profile checks in one test: the profiler is process-wide.
#[test]
fn cpu_profile() {
    let s = start(config());
    let a = s.local_addr();
    for bad in ["0", "301", "-1", "abc", "1.5", ""] {
        let r = get(a, &format!("/debug/pprof/profile?seconds={bad}"));
        assert_go_error(&r, 400, "1 to 300");
    }
    let spin = std::thread::spawn(|| {
        let t = Instant::now();
        let mut x = 0u64;
        while t.elapsed() < Duration::from_secs(3) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
    });
    let first = std::thread::spawn(move || get(a, "/debug/pprof/profile?seconds=2"));
    std::thread::sleep(Duration::from_millis(500));
    let second = get(a, "/debug/pprof/profile?seconds=1");
    assert_go_error(&second, 409, "already");
    let r = first.join().unwrap();
    spin.join().unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    assert_eq!(
        r.header("content-disposition"),
        Some("attachment; filename=\"profile\"")
    );
    assert_eq!(&r.body[..2], &[0x1f, 0x8b]);
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(&r.body[..])
        .read_to_end(&mut raw)
        .unwrap();
    let text = String::from_utf8_lossy(&raw);
    assert!(
        text.contains("samples") && text.contains("cpu"),
        "sample types"
    );
    // free again
    let r = get(a, "/debug/pprof/profile?seconds=1");
    assert_eq!(r.status, 200);

    // Shutdown abandons a running profile instead of waiting 300 s.
    let running = std::thread::spawn(move || get(a, "/debug/pprof/profile?seconds=300"));
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    s.shutdown();
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "shutdown took {:?}",
        t.elapsed()
    );
    let r = running.join().unwrap();
    assert_eq!(r.status, 503, "{}", r.text());
}

#[test]
fn busy_port_is_an_error_naming_the_address() {
    let s = start(config());
    let taken = s.local_addr();
    let e = server::start(config().addr(taken)).unwrap_err();
    assert!(matches!(e, allocscope::Error::Bind { .. }), "{e:?}");
    let m = e.to_string();
    assert!(m.contains(&taken.to_string()), "{m}");
    assert!(m.contains("ALLOCSCOPE_ADDR"), "{m}");
    // the first one still serves
    assert_eq!(get(taken, "/metrics").status, 200);
    s.shutdown();
}

#[test]
fn bad_configuration_is_refused() {
    let e = server::start(config().token("short"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("token") && !e.contains("short"), "{e}");
    let e = server::start(config().worker_threads(0))
        .unwrap_err()
        .to_string();
    assert!(e.contains("worker_threads"), "{e}");
    let vars = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
    for (k, v, key) in [
        ("ALLOCSCOPE_ADDR", "6060", "addr"),
        ("ALLOCSCOPE_SAMPLE_INTERVAL", "512KB", "sample_interval"),
        ("ALLOCSCOPE_SAMPLE_INTERVAL", "lots", "sample_interval"),
        ("ALLOCSCOPE_LOG_INTERVAL", "10", "log_interval"),
        ("ALLOCSCOPE_LOG_INTERVAL", "-1s", "log_interval"),
        (
            "ALLOCSCOPE_ALLOW_REMOTE_CONTROL",
            "sure",
            "allow_remote_control",
        ),
        ("ALLOCSCOPE_FULL_SIZE_CLASSES", "2", "full_size_classes"),
        ("ALLOCSCOPE_RENDER_TIMEOUT", "1h", "render_timeout"),
    ] {
        let e = Config::load_from(None, vars(k, v)).unwrap_err().to_string();
        assert!(
            e.contains(key) && e.contains(v) && e.contains("expected"),
            "{e}"
        );
    }
    let c = Config::load_from(None, vars("ALLOCSCOPE_ADDR", "127.0.0.1:0")).unwrap();
    assert_eq!(c.addr.port(), 0);
}

#[test]
fn shutdown_with_an_idle_connection_and_drop() {
    let s = start(config());
    let a = s.local_addr();
    // a keep-alive connection left open
    let mut idle = std::net::TcpStream::connect(a).unwrap();
    std::io::Write::write_all(&mut idle, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    s.shutdown();
    assert!(t.elapsed() < Duration::from_secs(6), "{:?}", t.elapsed());
    assert!(std::net::TcpStream::connect(a).is_err(), "still listening");

    // Dropping the handle stops it too (without waiting).
    let s = start(config());
    let a = s.local_addr();
    drop(s);
    let t = Instant::now();
    while std::net::TcpStream::connect(a).is_ok() {
        assert!(
            t.elapsed() < Duration::from_secs(6),
            "still listening after drop"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The counts of the scope `allocscope`: (allocations, allocated bytes).
fn exporter_scope() -> (u64, u64) {
    allocscope::scope::stats()
        .into_iter()
        .find(|s| s.name == "allocscope")
        .map(|s| (s.allocations, s.allocated_bytes))
        .expect("the built-in scope allocscope")
}

/// The counts of the thread group `allocscope-http`, the exporter's
/// runtime threads: (allocations, allocated bytes).
fn exporter_threads() -> (u64, u64) {
    allocscope::threads::stats()
        .into_iter()
        .filter(|g| g.name == "allocscope-http")
        .fold((0, 0), |(a, b), g| {
            (a + g.allocations, b + g.allocated_bytes)
        })
}

/// The exporter's own work runs in the scope `allocscope`: what a scrape,
/// the landing page and a flamegraph allocate is counted there, and
/// everything the exporter's runtime threads allocate is (their group's
/// growth is inside the scope's, read around it).
#[test]
fn the_exporters_work_counts_in_scope_allocscope() {
    let s = start(config());
    let a = s.local_addr();
    // the runtime's threads exist, with the blocking one of a render
    assert_eq!(get(a, "/debug/pprof/heap.svg").status, 200);
    let scope0 = exporter_scope();
    let threads0 = exporter_threads();
    let mut body = 0;
    for _ in 0..5 {
        let r = get(a, "/metrics");
        assert_eq!(r.status, 200);
        body += r.body.len() as u64;
    }
    let threads1 = exporter_threads();
    let scope1 = exporter_scope();
    let (allocs, bytes) = (scope1.0 - scope0.0, scope1.1 - scope0.1);
    eprintln!(
        "5 scrapes: {allocs} allocations, {bytes} bytes in scope allocscope; \
         the exporter's threads: {} allocations, {} bytes",
        threads1.0 - threads0.0,
        threads1.1 - threads0.1
    );
    assert!(allocs >= 5 * 50, "{allocs} allocations in 5 scrapes");
    assert!(bytes >= body, "{bytes} bytes for {body} bytes of scrapes");
    assert!(
        allocs >= threads1.0 - threads0.0,
        "the exporter's threads allocated outside the scope: {allocs} < {}",
        threads1.0 - threads0.0
    );
    assert!(bytes >= threads1.1 - threads0.1);

    // the landing page and a flamegraph (rendered on a blocking thread)
    let before = exporter_scope();
    assert_eq!(get(a, "/").status, 200);
    assert_eq!(
        get(a, "/debug/pprof/heap.svg?sample=alloc_space").status,
        200
    );
    let after = exporter_scope();
    assert!(after.1 - before.1 >= 10_000, "{before:?} -> {after:?}");
    s.shutdown();
}

/// The landing page's "Memory by scope" and "Allocation by thread group"
/// tables: every scope that allocated, each linked to its filtered
/// flamegraph with its name percent-encoded.
#[test]
fn landing_page_tables_of_scopes_and_thread_groups() {
    let s = start(config());
    let a = s.local_addr();
    let odd = allocscope::scope::Scope::named("tenant <7> & co");
    let kept = odd.within(|| vec![7u8; 100_000]);
    let page = get(a, "/").text();
    for needle in [
        "<h2>Memory by scope</h2>",
        "<table id=\"scopes\">",
        "<h2>Allocation by thread group</h2>",
        "<table id=\"threadgroups\">",
        "href=\"/debug/pprof/heap.svg?scope=allocscope\">allocscope</a>",
        "href=\"/debug/pprof/heap.svg?scope=unscoped\">unscoped</a>",
        "href=\"/debug/pprof/heap.svg?scope=tenant%20%3C7%3E%20%26%20co\">tenant &lt;7&gt; &amp; co</a>",
        "href=\"/debug/pprof/heap.svg?thread=allocscope-http\">allocscope-http</a>",
        "allocated/s",
        "share of in use",
        "live threads",
    ] {
        assert!(page.contains(needle), "{needle} not on the landing page");
    }
    assert!(!page.contains("tenant <7>"), "names are escaped");
    // a second view later: rates over the time between the views
    std::thread::sleep(Duration::from_millis(2100));
    let page = get(a, "/").text();
    let window: f64 = page
        .split_once("Rates are over the last ")
        .and_then(|(_, rest)| rest.split_once(" s")?.0.parse().ok())
        .expect("the rates' window on the page");
    assert!(
        (2.0..120.0).contains(&window),
        "rates over {window} s: since the exporter's start, the first view being too recent"
    );
    drop(kept);
    s.shutdown();
}

#[test]
fn routes_mount_in_a_host_warp_app() {
    use warp::Filter;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let host = warp::path("hello").map(|| "hi from the host");
    let app = server::routes(&config()).or(host);
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let a = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let th = std::thread::spawn(move || {
        rt.block_on(
            warp::serve(app)
                .incoming(listener)
                .graceful(async {
                    rx.await.ok();
                })
                .run(),
        )
    });
    assert_eq!(get(a, "/hello").text(), "hi from the host");
    // on the host's runtime too, the exporter's requests count in the
    // scope `allocscope` (their futures are wrapped): at least the text
    // of the scrapes was allocated there
    let before = exporter_scope();
    let mut body = 0;
    for _ in 0..3 {
        let r = get(a, "/metrics");
        assert_eq!(r.status, 200);
        body += r.body.len() as u64;
    }
    let after = exporter_scope();
    assert!(
        after.1 - before.1 >= body,
        "{before:?} -> {after:?} for {body} bytes of scrapes"
    );
    assert_eq!(get(a, "/debug/pprof/").status, 200);
    assert_eq!(get(a, "/nope").status, 404);
    tx.send(()).unwrap();
    th.join().unwrap();
}

/// A host that runs tokio itself: start, use and drop the exporter from
/// inside its async code.
#[test]
fn works_inside_a_host_tokio_runtime() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let s = server::start(config()).expect("start inside tokio");
        let a = s.local_addr();
        let r = tokio::task::spawn_blocking(move || get(a, "/metrics"))
            .await
            .unwrap();
        assert_eq!(r.status, 200);
        // a failing start inside async code returns an error, no panic
        assert!(server::start(config().addr(a)).is_err());
        drop(s); // stops it without blocking or panicking here
        let t = Instant::now();
        while std::net::TcpStream::connect(a).is_ok() {
            assert!(
                t.elapsed() < Duration::from_secs(6),
                "still listening after drop"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
}
