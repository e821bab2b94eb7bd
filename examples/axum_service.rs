//! An axum service on tokio with allocscope as its global allocator and
//! the exporter beside it, on a port of its own.
//!
//! `cargo run --release --example axum_service`: starts both servers on free
//! ports, sends the service two requests, reads the exporter's `/metrics`,
//! and stops. A real service keeps both running and lets `Config::load()`
//! choose the exporter's address (`config/allocscope.toml`,
//! `ALLOCSCOPE_ADDR`; 127.0.0.1:6060 by default).
use std::net::SocketAddr;

use allocscope::server::{self, Config};
use allocscope::AllocScope;
use axum::extract::Path;
use axum::routing::get;
use axum::Router;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// Every allocation of the process, the service's and its libraries', goes
// through allocscope from the first one on.
#[global_allocator]
static ALLOC: AllocScope = AllocScope::system();

async fn index() -> &'static str {
    "orders service\n"
}

/// A handler that allocates the way handlers do: a few strings and a Vec.
async fn order(Path(id): Path<u64>) -> String {
    let items: Vec<String> = (0..id % 10).map(|i| format!("item-{i}")).collect();
    format!("{{\"order\":{id},\"items\":{items:?}}}\n")
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The exporter runs on a small tokio runtime of its own, in a background
    // thread: it keeps answering scrapes and profile requests even when the
    // service's runtime is saturated. `start` also applies the configured
    // sample interval and collection settings. Port 0 here: any free port,
    // so that the example never collides with a running service.
    let config = Config::load()?.addr("127.0.0.1:0".parse()?);
    let exporter = server::start(config)?;
    println!("exporter: {}", exporter.url());

    // The service itself: an ordinary axum app on the host's runtime.
    let app = Router::new()
        .route("/", get(index))
        .route("/orders/{id}", get(order));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let service = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
    });
    println!("service:  http://{addr}/");

    // Stand-ins for the service's clients and for Prometheus.
    for path in ["/", "/orders/7"] {
        print!("GET {path} -> {}", get_body(addr, path).await?);
    }
    let metrics = get_body(exporter.local_addr(), "/metrics").await?;
    for line in metrics.lines().filter(|l| {
        l.starts_with("allocscope_heap_live_bytes ")
            || l.starts_with("allocscope_heap_allocations_total ")
    }) {
        println!("{line}");
    }

    // Stop the service, then the exporter. `ServerHandle::shutdown` waits
    // for the exporter's thread: call it outside async code (dropping the
    // handle stops the exporter without waiting).
    let _ = stop.send(());
    service.await??;
    tokio::task::spawn_blocking(move || exporter.shutdown()).await?;
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
