//! A minimal HTTP/1.1 client for the exporter's tests: one request per
//! connection (`Connection: close`), raw enough to send what a real client
//! would not (oversized queries, lying Content-Length, odd methods).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends `method path` with `headers` and `body`; panics on I/O errors
/// (these are tests).
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty()
        && !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-length"))
    {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    // The server may answer (413) before reading the whole body.
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .unwrap_or_else(|e| panic!("read {path}: {e}"));
    parse(&raw)
}

pub fn get(addr: SocketAddr, path: &str) -> Resp {
    request(addr, "GET", path, &[], b"")
}

fn parse(raw: &[u8]) -> Resp {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    Resp {
        status,
        headers,
        body,
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let nl = b.windows(2).position(|w| w == b"\r\n").unwrap();
        let n = usize::from_str_radix(std::str::from_utf8(&b[..nl]).unwrap().trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[nl + 2..nl + 2 + n]);
        b = &b[nl + 2 + n + 2..];
    }
}

/// Whether an outside tool is required (`ALLOCSCOPE_REQUIRE_TOOLS=1`).
pub fn tools_required() -> bool {
    std::env::var("ALLOCSCOPE_REQUIRE_TOOLS").is_ok_and(|v| v == "1")
}

/// Whether `tool` can be run; when it cannot, says so and fails the test if
/// tools are required.
pub fn have_tool(tool: &str, probe: &[&str]) -> bool {
    let ok = std::process::Command::new(tool)
        .args(probe)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            !tools_required(),
            "`{tool}` is required (ALLOCSCOPE_REQUIRE_TOOLS=1) but cannot be run"
        );
        // Straight to stderr, past libtest's capture, so that a skip is seen.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: `{tool}` is not installed; set ALLOCSCOPE_REQUIRE_TOOLS=1 to make this a failure"
        );
    }
    ok
}

/// Runs `go tool pprof ARGS URL` (with its caches in `tmp`) and returns its
/// stdout and stderr; fails the test if it fails.
pub fn go_pprof_output(args: &[&str], url: &str, tmp: &std::path::Path) -> (String, String) {
    let out = std::process::Command::new("go")
        .args(["tool", "pprof"])
        .args(args)
        .arg(url)
        .env("PPROF_TMPDIR", tmp)
        .env("HOME", tmp)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "go tool pprof {args:?} {url}: {stderr}\n{stdout}"
    );
    (stdout, stderr)
}

/// [`go_pprof_output`]'s stdout.
pub fn go_pprof(args: &[&str], url: &str, tmp: &std::path::Path) -> String {
    go_pprof_output(args, url, tmp).0
}

/// An exporter on a free loopback port, without the periodic log line,
/// sampling every `interval` bytes.
#[cfg(feature = "server")]
pub fn start_sampling(interval: u64) -> allocscope::server::ServerHandle {
    allocscope::server::start(
        allocscope::server::Config::default()
            .addr("127.0.0.1:0".parse().unwrap())
            .log_interval(Duration::ZERO)
            .sample_interval(interval),
    )
    .expect("start")
}

/// Runs `promtool check metrics` on a scrape: fails the test unless it
/// passes without a word.
pub fn promtool_check(text: &str) {
    use std::process::{Command, Stdio};
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool failed: {said}");
    assert!(said.trim().is_empty(), "promtool reports: {said}");
}
