//! A warp app that serves allocscope's endpoints (`/`, `/metrics`,
//! `/debug/pprof/*`, `/gc`) on its own server and port, beside its own
//! routes, instead of starting the exporter's server.
//!
//! `cargo run --release --example warp_mount`: serves on a free port, sends
//! itself a request for one of its routes and one for `/metrics`, and
//! stops.
use std::net::SocketAddr;

use allocscope::server::{self, Config};
use allocscope::AllocScope;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use warp::Filter;

#[global_allocator]
static ALLOC: AllocScope = AllocScope::system();

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Bind first: allocscope's access rules depend on the address served on
    // (loopback, or a token for the profile and control endpoints), so the
    // configuration must name the address the host really listens on.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let config = Config::load()?.addr(addr);

    // What `server::start` would do besides serving: the process-wide
    // settings (sample interval, collection threshold and limit; starts the
    // collector thread) and the periodic log line, on the host's runtime.
    server::apply(&config);
    let log_config = config.clone();
    let log_line = tokio::spawn(async move { server::log_line_loop(&log_config).await });

    // allocscope's routes first: they reject every path they do not serve
    // with `not_found`, so the host's routes get those requests.
    let hello = warp::path!("hello" / String).map(|name: String| format!("hello, {name}\n"));
    let app = server::routes(&config).or(hello);

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(
        warp::serve(app)
            .incoming(listener)
            .graceful(async {
                let _ = stopped.await;
            })
            .run(),
    );
    println!("serving on http://{addr}/ (allocscope's landing page)");

    print!(
        "GET /hello/warp -> {}",
        get_body(addr, "/hello/warp").await?
    );
    let metrics = get_body(addr, "/metrics").await?;
    let series = metrics.lines().filter(|l| !l.starts_with('#')).count();
    println!("GET /metrics -> {series} series, among them:");
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("allocscope_heap_live_objects "))
    {
        println!("  {line}");
    }

    // The host's server owns its connections: connection timeouts and the
    // connection cap of `server::start` do not apply here.
    let _ = stop.send(());
    serving.await?;
    log_line.abort();
    Ok(())
}

/// The body of `GET path` on `addr`: a minimal HTTP/1.1 client, enough for
/// an example (use your HTTP client of choice).
async fn get_body(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    let mut conn = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    conn.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    conn.read_to_end(&mut answer).await?;
    let answer = String::from_utf8_lossy(&answer);
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    if !head.starts_with("HTTP/1.1 200") {
        let status = head.lines().next().unwrap_or("no answer");
        return Err(std::io::Error::other(format!("GET {path}: {status}")));
    }
    Ok(body.to_string())
}
