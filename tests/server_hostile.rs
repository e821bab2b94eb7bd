//! Scenario: hostile HTTP against the in-process exporter (issue 6).
//! Oversized headers and query strings, garbage request lines, idle and
//! half-sent connections held open, unknown paths, wrong methods, missing
//! and bad bearer tokens: each gets a clean HTTP error or a closed
//! connection, the requests of well-behaved clients still succeed meanwhile,
//! and afterwards the exporter still answers and the host process is fine.
//! Slow clients (silent, half-sent, trickling, idle on keep-alive, slow
//! bodies) are closed by the server after `header_read_timeout` or
//! `idle_timeout`, and `max_connections` caps the open connections.
//! Every socket operation is bounded by a timeout; the timeout tests assert
//! that a close happened within a generous bound (timeout × 3 + 2 s), not
//! exact times.
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use allocscope::server::{self, Config, ServerHandle};

#[global_allocator]
static A: allocscope::AllocScope = allocscope::AllocScope::system();

const TOKEN: &str = "hostile-test-token-0123456789";
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// The tests of this binary run one at a time: the file-descriptor count
/// of the process is compared before and after.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn start() -> ServerHandle {
    start_with(|c| c)
}

/// The test configuration, changed by `f`.
fn start_with(f: impl FnOnce(Config) -> Config) -> ServerHandle {
    server::start(f(Config::default()
        .addr("127.0.0.1:0".parse().unwrap())
        .log_interval(Duration::ZERO)
        .token(TOKEN)))
    .expect("start")
}

/// The longest a close may take past its timeout, on a loaded machine.
fn close_bound(timeout: Duration) -> Duration {
    timeout * 3 + Duration::from_secs(2)
}

/// What became of one raw exchange.
#[derive(Debug)]
enum Outcome {
    /// A complete HTTP response: status, headers (lower-cased names), body.
    Response(u16, Vec<(String, String)>, String),
    /// The server closed (or reset) the connection without an answer.
    Closed,
}

impl Outcome {
    fn status(&self) -> Option<u16> {
        match self {
            Outcome::Response(s, ..) => Some(*s),
            Outcome::Closed => None,
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        match self {
            Outcome::Response(_, h, _) => {
                h.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
            }
            Outcome::Closed => None,
        }
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("connect");
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    s
}

/// Sends `raw` (write errors tolerated: the server may answer and close
/// before reading everything), then reads until the server closes. A read
/// timeout is a failure: the server must answer or close, not hang.
fn exchange(addr: SocketAddr, raw: &[u8]) -> Outcome {
    let mut s = connect(addr);
    let _ = s.write_all(raw);
    let _ = s.flush();
    let mut got = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let t = Instant::now();
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!(
                    "no answer and no close within {:?} for {:?}",
                    t.elapsed(),
                    String::from_utf8_lossy(&raw[..raw.len().min(200)])
                )
            }
            // reset: the server closed with our bytes unread
            Err(_) => break,
        }
    }
    parse(&got)
}

fn parse(raw: &[u8]) -> Outcome {
    let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        assert!(
            raw.is_empty(),
            "a partial answer: {:?}",
            String::from_utf8_lossy(raw)
        );
        return Outcome::Closed;
    };
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    assert!(status_line.starts_with("HTTP/1.1 "), "{status_line}");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("status line {status_line:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Outcome::Response(
        status,
        headers,
        String::from_utf8_lossy(&raw[end + 4..]).into_owned(),
    )
}

fn req(addr: SocketAddr, method: &str, target: &str, extra: &str) -> Outcome {
    exchange(
        addr,
        format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{extra}\r\n")
            .as_bytes(),
    )
}

fn get_metrics_ok(addr: SocketAddr) {
    let r = req(addr, "GET", "/metrics", "");
    assert_eq!(r.status(), Some(200), "{r:?}");
    let Outcome::Response(_, _, body) = r else {
        unreachable!()
    };
    assert!(body.contains("allocscope_heap_live_bytes"), "{body}");
}

/// A refusal: a 4xx answer, or the connection closed without one.
fn assert_refused(what: &str, r: &Outcome) {
    match r.status() {
        None => {}
        Some(s) => assert!((400..500).contains(&s), "{what}: {r:?}"),
    }
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Waits (at most 10 s) until the process has no more than `before + 2`
/// file descriptors: the server keeps none for connections gone.
fn assert_fds_back_to(before: usize) {
    let t = Instant::now();
    loop {
        let now = open_fds();
        if now <= before + 2 {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "file descriptors: {before} before, {now} 10 s after the clients left"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits for the server to close `s` (end of stream or reset) without
/// sending anything, and returns the time from `since`. Fails if `s` is
/// still open `limit` after `since`.
fn wait_closed(s: &mut TcpStream, since: Instant, limit: Duration, what: &str) -> Duration {
    let mut buf = [0u8; 4096];
    loop {
        let left = limit.saturating_sub(since.elapsed());
        assert!(
            !left.is_zero(),
            "{what}: still open {:?} after it started (bound {limit:?})",
            since.elapsed()
        );
        s.set_read_timeout(Some(left.max(Duration::from_millis(10))))
            .unwrap();
        match s.read(&mut buf) {
            Ok(0) => return since.elapsed(),
            Ok(n) => panic!(
                "{what}: the server sent {:?} instead of closing",
                String::from_utf8_lossy(&buf[..n])
            ),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            // reset: the server closed with our bytes unread
            Err(_) => return since.elapsed(),
        }
    }
}

/// Reads one response (with a Content-Length) from a keep-alive
/// connection, leaving it open.
fn read_response(s: &mut TcpStream) -> Outcome {
    let mut got = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .unwrap_or_else(|| panic!("no content-length in {head:?}"))
                .trim()
                .parse()
                .unwrap();
            if got.len() >= end + 4 + len {
                assert_eq!(got.len(), end + 4 + len, "bytes past the response");
                return parse(&got);
            }
        }
        match s.read(&mut buf) {
            Ok(0) => panic!(
                "closed in the middle of a response: {:?}",
                String::from_utf8_lossy(&got)
            ),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("reading a response: {e}"),
        }
    }
}

#[test]
fn oversized_headers_and_queries() {
    let _serial = serial();
    let s = start();
    let a = s.local_addr();
    let auth = format!("Authorization: Bearer {TOKEN}\r\n");

    // one 100 KiB header: below hyper's read buffer (about 400 KiB), so it
    // may be served; whatever happens, a clean answer or a close
    let big = format!("X-Big: {}\r\n", "a".repeat(100 * 1024));
    let r = req(a, "GET", "/metrics", &big);
    match r.status() {
        None | Some(200) | Some(400) | Some(413) | Some(431) => {}
        other => panic!("100 KiB header: {other:?}"),
    }
    // 1 MiB of headers: 431 (or the connection reset, our bytes unread)
    let huge = format!("X-Huge: {}\r\n", "b".repeat(1024 * 1024));
    let r = req(a, "GET", "/metrics", &huge);
    assert!(
        matches!(r.status(), None | Some(431)),
        "1 MiB header: {r:?}"
    );
    // many headers (hyper allows 100)
    let many: String = (0..500).map(|i| format!("X-H{i}: v\r\n")).collect();
    let r = req(a, "GET", "/metrics", &many);
    assert!(matches!(r.status(), None | Some(431)), "500 headers: {r:?}");
    // an oversized token header on a protected endpoint: 401 or refused
    let long_auth = format!("Authorization: Bearer {}\r\n", "t".repeat(64 * 1024));
    let r = req(a, "GET", "/debug/pprof/heap", &long_auth);
    assert_refused("64 KiB bearer token", &r);

    // query strings: over the 1 KiB limit is a 414, on every endpoint that
    // reads one, with or without a token
    for path in [
        "/metrics",
        "/debug/pprof/heap",
        "/debug/pprof/profile",
        "/gc",
    ] {
        let q = format!("{path}?x={}", "q".repeat(4096));
        let r = req(a, "GET", &q, &auth);
        assert_eq!(r.status(), Some(414), "{path}: {r:?}");
    }
    // a 64 KiB request target: 414 from us, or refused by hyper
    let q = format!("/debug/pprof/heap?x={}", "q".repeat(64 * 1024));
    assert_refused("64 KiB query", &req(a, "GET", &q, &auth));
    // a 1 MiB request line: refused
    let q = format!("/debug/pprof/heap?x={}", "q".repeat(1024 * 1024));
    assert_refused("1 MiB query", &req(a, "GET", &q, &auth));
    // bad percent-encoding is a 400
    let r = req(a, "GET", "/debug/pprof/heap?gc=%zz", &auth);
    assert_eq!(r.status(), Some(400), "{r:?}");

    // garbage
    for raw in [
        &b"hello\r\n\r\n"[..],
        b"GET\r\n\r\n",
        b"GET /metrics HTTP/9.9\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"\x00\x01\x02\xff\xfe\r\n\r\n",
    ] {
        let r = exchange(a, raw);
        // hyper answers 400 and closes
        assert!(
            matches!(r.status(), None | Some(400)),
            "{:?}: {r:?}",
            String::from_utf8_lossy(raw)
        );
    }

    get_metrics_ok(a);
    s.shutdown();
}

#[test]
fn unknown_paths_wrong_methods_and_tokens() {
    let _serial = serial();
    let s = start();
    let a = s.local_addr();
    let auth = format!("Authorization: Bearer {TOKEN}\r\n");

    for p in [
        "/nope",
        "/metrics/",
        "/../etc/passwd",
        "/debug/pprof/../../x",
        "/%00",
    ] {
        let r = req(a, "GET", p, &auth);
        assert_eq!(r.status(), Some(404), "{p}: {r:?}");
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"), "{p}");
    }
    let r = req(a, "GET", "/debug/pprof/goroutine", &auth);
    assert_eq!(r.status(), Some(404), "{r:?}");

    for (m, p) in [
        ("POST", "/metrics"),
        ("DELETE", "/"),
        ("PUT", "/debug/pprof/heap"),
        ("PATCH", "/debug/pprof/profile"),
        ("GET", "/debug/pprof/baseline"),
        ("GET", "/gc/collect"),
        ("BREW", "/metrics"),
    ] {
        let r = req(a, m, p, &auth);
        assert_eq!(r.status(), Some(405), "{m} {p}: {r:?}");
        assert!(r.header("allow").is_some(), "{m} {p}: {r:?}");
    }

    // missing and bad tokens: 401 with a challenge, on reads and on changes
    for (m, p) in [
        ("GET", "/"),
        ("GET", "/debug/pprof/heap"),
        ("GET", "/debug/pprof/cmdline"),
        ("GET", "/debug/pprof/profile?seconds=1"),
        ("POST", "/gc/collect"),
        ("POST", "/debug/pprof/baseline"),
    ] {
        for bad in [
            String::new(),
            "Authorization: Bearer nope\r\n".to_string(),
            format!("Authorization: Bearer {TOKEN}0\r\n"),
            format!("Authorization: Bearer {}\r\n", &TOKEN[..TOKEN.len() - 1]),
            format!("Authorization: Basic {TOKEN}\r\n"),
            format!("Authorization: {TOKEN}\r\n"),
            "Authorization: Bearer \r\n".to_string(),
            "Authorization: \u{00e9}\u{00e9}\r\n".to_string(),
        ] {
            let r = req(a, m, p, &bad);
            assert_eq!(r.status(), Some(401), "{m} {p} with {bad:?}: {r:?}");
            assert!(
                r.header("www-authenticate")
                    .is_some_and(|v| v.starts_with("Bearer")),
                "{r:?}"
            );
        }
    }
    // the right token still works, /metrics needs none
    let r = req(a, "GET", "/debug/pprof/cmdline", &auth);
    assert_eq!(r.status(), Some(200), "{r:?}");
    get_metrics_ok(a);
    s.shutdown();
}

#[test]
fn idle_and_half_sent_connections_do_not_block_others() {
    let _serial = serial();
    let s = start();
    let a = s.local_addr();
    let fds_before = open_fds();

    // connections that send nothing, a partial request line, partial
    // headers, or headers promising a body that never comes
    let mut held = Vec::new();
    for i in 0..64 {
        let mut c = connect(a);
        let partial: &[u8] = match i % 4 {
            0 => b"",
            1 => b"GET /met",
            2 => b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ",
            _ => b"POST /gc/collect HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nab",
        };
        c.write_all(partial).unwrap();
        held.push(c);
    }
    // a client that half-closes after a partial request
    let mut half = connect(a);
    half.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    half.shutdown(Shutdown::Write).unwrap();

    // meanwhile, well-behaved clients are served, promptly
    for _ in 0..20 {
        let t = Instant::now();
        get_metrics_ok(a);
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    }
    let r = req(
        a,
        "GET",
        "/debug/pprof/heap",
        &format!("Authorization: Bearer {TOKEN}\r\n"),
    );
    assert_eq!(r.status(), Some(200), "{r:?}");

    // the half-closed one is answered or closed, never left hanging
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match half.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("a half-closed partial request was left open")
            }
            Err(_) => break,
        }
    }
    if let Outcome::Response(s, ..) = parse(&got) {
        assert!((400..500).contains(&s), "{s}");
    }

    // the held connections all go away when their clients do: the server
    // does not leak a socket per abandoned connection
    drop(held);
    drop(half);
    let t = Instant::now();
    loop {
        let now = open_fds();
        if now <= fds_before + 2 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "file descriptors: {fds_before} before, {now} 10 s after the clients left"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    get_metrics_ok(a);

    // the host process is fine: it allocates, counts and the exporter
    // still shuts down promptly
    let v: Vec<Vec<u8>> = (0..1000).map(|i| vec![i as u8; 100]).collect();
    assert_eq!(v.len(), 1000);
    drop(v);
    let t = Instant::now();
    s.shutdown();
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
}

#[test]
fn connections_without_complete_headers_are_closed_after_header_read_timeout() {
    let _serial = serial();
    let header = Duration::from_secs(1);
    // a long idle timeout: what closes these is the header-read timeout
    let s = start_with(|c| {
        c.header_read_timeout(header)
            .idle_timeout(Duration::from_secs(60))
    });
    let a = s.local_addr();
    let fds_before = open_fds();

    let partials: [(&str, &[u8]); 5] = [
        ("nothing sent", b""),
        ("half a request line", b"GET /met"),
        (
            "headers without their end",
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ",
        ),
        ("part of the HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM"),
        ("a request line and no newline", b"GET /metrics HTTP/1.1"),
    ];
    let mut held = Vec::new();
    for (what, bytes) in partials {
        let mut c = connect(a);
        let t0 = Instant::now();
        c.write_all(bytes).unwrap();
        held.push((what, c, t0));
    }
    // a client trickling one header byte every 200 ms does not push the
    // deadline back
    let mut drip = connect(a);
    let drip_t0 = Instant::now();
    let mut w = drip.try_clone().unwrap();
    let dripper = std::thread::spawn(move || {
        let _ = w.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Drip: ");
        for _ in 0..60 {
            if w.write_all(b"a").is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    });

    // meanwhile a well-behaved client is served
    get_metrics_ok(a);

    for (what, mut c, t0) in held {
        let took = wait_closed(&mut c, t0, close_bound(header), what);
        assert!(
            took >= header / 2,
            "{what}: closed after {took:?}, before the timeout"
        );
    }
    let took = wait_closed(&mut drip, drip_t0, close_bound(header), "trickled headers");
    assert!(
        took >= header / 2,
        "trickled headers: closed after {took:?}"
    );
    dripper.join().unwrap();
    drop(drip);

    // a fresh connection is served as before, and nothing leaked
    get_metrics_ok(a);
    assert_fds_back_to(fds_before);
    s.shutdown();
}

#[test]
fn idle_keep_alive_connections_are_closed_after_idle_timeout() {
    let _serial = serial();
    let header = Duration::from_secs(1);
    let idle = Duration::from_secs(4);
    let s = start_with(|c| c.header_read_timeout(header).idle_timeout(idle));
    let a = s.local_addr();
    let fds_before = open_fds();

    let mut c = connect(a);
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {a}\r\n\r\n");
    c.write_all(request.as_bytes()).unwrap();
    let r = read_response(&mut c);
    assert_eq!(r.status(), Some(200), "{r:?}");
    // idle for longer than header_read_timeout but not idle_timeout: the
    // connection is kept alive and serves the next request
    std::thread::sleep(header * 2);
    c.write_all(request.as_bytes()).unwrap();
    let r = read_response(&mut c);
    assert_eq!(
        r.status(),
        Some(200),
        "second request on the connection: {r:?}"
    );
    assert_ne!(r.header("connection"), Some("close"), "{r:?}");
    // then idle: closed after idle_timeout
    let t_idle = Instant::now();
    let took = wait_closed(&mut c, t_idle, close_bound(idle), "idle keep-alive");
    assert!(
        took >= idle - Duration::from_secs(1),
        "idle keep-alive: closed after {took:?}, before idle_timeout ({idle:?})"
    );
    drop(c);

    // the first byte of a request on an idle connection starts the
    // header-read timeout: half a request is closed after it, not after
    // idle_timeout
    let mut c = connect(a);
    c.write_all(request.as_bytes()).unwrap();
    assert_eq!(read_response(&mut c).status(), Some(200));
    c.write_all(b"GET /metr").unwrap();
    let t_half = Instant::now();
    let took = wait_closed(&mut c, t_half, close_bound(header), "half a second request");
    assert!(took < idle, "half a second request: closed after {took:?}");
    drop(c);

    // a fresh connection is served as before, and nothing leaked
    get_metrics_ok(a);
    assert_fds_back_to(fds_before);
    s.shutdown();
}

#[test]
fn slow_request_bodies_get_408() {
    let _serial = serial();
    let header = Duration::from_secs(1);
    let s = start_with(|c| c.header_read_timeout(header));
    let a = s.local_addr();
    let fds_before = open_fds();

    // headers complete, a body promised and never sent in full
    let t = Instant::now();
    let r = exchange(
        a,
        format!(
            "POST /gc/collect HTTP/1.1\r\nHost: {a}\r\nAuthorization: Bearer {TOKEN}\r\n\
             Content-Length: 100\r\n\r\nab"
        )
        .as_bytes(),
    );
    assert_eq!(r.status(), Some(408), "{r:?}");
    assert!(t.elapsed() < close_bound(header), "{:?}", t.elapsed());
    let Outcome::Response(_, _, body) = &r else {
        unreachable!()
    };
    assert!(body.contains("header_read_timeout"), "{body}");

    get_metrics_ok(a);
    assert_fds_back_to(fds_before);
    s.shutdown();
}

#[test]
fn max_connections_caps_open_connections() {
    let _serial = serial();
    let fds_before = open_fds();

    // timeouts far away: only the cap is at work
    let s = start_with(|c| {
        c.max_connections(3)
            .header_read_timeout(Duration::from_secs(60))
            .idle_timeout(Duration::from_secs(60))
    });
    let a = s.local_addr();
    let with_server = open_fds();
    let held: Vec<TcpStream> = (0..3).map(|_| connect(a)).collect();
    // the server has accepted them: one descriptor each on both sides
    let t = Instant::now();
    while open_fds() < with_server + 6 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the server did not accept 3 connections"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // a fourth client waits in the backlog: connected, not answered
    let mut waiting = connect(a);
    waiting
        .write_all(
            format!("GET /metrics HTTP/1.1\r\nHost: {a}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .unwrap();
    waiting
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let mut buf = [0u8; 1024];
    match waiting.read(&mut buf) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("a connection past max_connections was served: {other:?}"),
    }
    // one held connection leaves: the waiting one is accepted and served
    let mut held = held;
    drop(held.pop());
    waiting.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut got = Vec::new();
    loop {
        match waiting.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("the waiting client: {e}"),
        }
    }
    assert_eq!(parse(&got).status(), Some(200));
    drop(waiting);
    drop(held);
    s.shutdown();

    // with a short header-read timeout, silent connections holding every
    // slot are closed by the server and the waiting client is served
    let header = Duration::from_secs(1);
    let s = start_with(|c| c.max_connections(2).header_read_timeout(header));
    let a = s.local_addr();
    let mut held: Vec<TcpStream> = (0..2).map(|_| connect(a)).collect();
    let t = Instant::now();
    let r = req(a, "GET", "/metrics", "");
    assert_eq!(r.status(), Some(200), "{r:?}");
    assert!(
        t.elapsed() < close_bound(header) + Duration::from_secs(1),
        "{:?}",
        t.elapsed()
    );
    for c in &mut held {
        wait_closed(
            c,
            t,
            close_bound(header),
            "a silent connection holding a slot",
        );
    }
    drop(held);
    get_metrics_ok(a);
    s.shutdown();
    assert_fds_back_to(fds_before);
}
