//! The exporter's connections: its accept loop, the per-connection
//! header-read and idle timeouts, and the cap on open connections.
//!
//! Owns how [`super::start`] serves the routes: warp's filter as a hyper
//! service (`warp::service`), one hyper-util `auto` connection (HTTP/1.1
//! with keep-alive, or HTTP/2 with prior knowledge, as `warp::serve` did)
//! per accepted socket, hyper-util's `GracefulShutdown` for the shutdown.
//!
//! The timeouts, as Go's `ReadHeaderTimeout` and `IdleTimeout`:
//! - from the accept until the first request's headers are complete:
//!   `header_read_timeout`;
//! - from the end of a response, with no request in flight, until the next
//!   request's first byte: `idle_timeout`; from that byte until its headers
//!   are complete: `header_read_timeout` again;
//! - while a request is being handled: none here (its body is bounded by
//!   `header_read_timeout` in the pipeline, renders by `render_timeout`).
//!
//! A connection past its deadline is closed (dropped, without an answer).
//! hyper's own `header_read_timeout` is not used: it also runs while a
//! keep-alive connection is idle (one value for both), and hyper-util's
//! `auto` builder applies none while it reads the first bytes to choose the
//! protocol, which is where a client that sends nothing waits.
//!
//! At most `max_connections` connections are open: past that, the loop
//! stops accepting until one closes, and new clients wait in the kernel's
//! listen backlog (holding no descriptor of the process).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, Semaphore};

use super::Config;

/// The connection limits of one exporter, from its [`Config`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Limits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

impl Limits {
    pub(crate) fn new(config: &Config) -> Limits {
        Limits {
            header_read_timeout: config.header_read_timeout,
            idle_timeout: config.idle_timeout,
            max_connections: config.max_connections,
        }
    }
}

/// What a connection is doing, for its deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Waiting for (the rest of) a request's headers.
    Head,
    /// A keep-alive connection with no request in flight and no byte of the
    /// next one yet.
    Idle,
    /// At least one request is being handled or answered.
    Busy,
}

#[derive(Debug)]
struct ClockState {
    phase: Phase,
    in_flight: usize,
    /// `None` while busy.
    deadline: Option<Instant>,
}

/// The deadline of one connection, moved by its reads (the IO wrapper), its
/// requests (the service wrapper) and its responses' ends (the body
/// wrapper), and watched by [`Clock::expired`].
#[derive(Debug)]
pub(crate) struct Clock {
    header_read_timeout: Duration,
    idle_timeout: Duration,
    state: Mutex<ClockState>,
    changed: Notify,
}

impl Clock {
    /// A connection accepted at `now`: its first request's headers are due
    /// by `now + header_read_timeout`.
    pub(crate) fn new(limits: &Limits, now: Instant) -> Clock {
        Clock {
            header_read_timeout: limits.header_read_timeout,
            idle_timeout: limits.idle_timeout,
            state: Mutex::new(ClockState {
                phase: Phase::Head,
                in_flight: 0,
                deadline: Some(now + limits.header_read_timeout),
            }),
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ClockState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bytes arrived. On an idle connection they start the next request:
    /// its headers are due by `now + header_read_timeout`. Otherwise the
    /// deadline stays (a client trickling bytes does not push it back).
    pub(crate) fn on_read(&self, now: Instant) {
        let mut s = self.lock();
        if s.phase == Phase::Idle {
            s.phase = Phase::Head;
            s.deadline = Some(now + self.header_read_timeout);
            drop(s);
            self.changed.notify_one();
        }
    }

    /// A request's headers are complete and it is handed to the routes.
    pub(crate) fn on_request(&self) {
        let mut s = self.lock();
        s.in_flight += 1;
        s.phase = Phase::Busy;
        s.deadline = None;
    }

    /// A response is finished (its body sent or dropped). With no other
    /// request in flight the connection is idle until `now + idle_timeout`.
    pub(crate) fn on_response_end(&self, now: Instant) {
        let mut s = self.lock();
        s.in_flight = s.in_flight.saturating_sub(1);
        if s.in_flight == 0 {
            s.phase = Phase::Idle;
            s.deadline = Some(now + self.idle_timeout);
            drop(s);
            self.changed.notify_one();
        }
    }

    /// The phase and the deadline now.
    pub(crate) fn deadline(&self) -> (Phase, Option<Instant>) {
        let s = self.lock();
        (s.phase, s.deadline)
    }

    /// Resolves when the deadline passes, with the phase it passed in.
    pub(crate) async fn expired(&self) -> Phase {
        loop {
            // A change made after this read stores a permit in `changed`,
            // so the wait below wakes for it.
            match self.deadline() {
                (phase, Some(d)) if Instant::now() >= d => return phase,
                (_, Some(d)) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(tokio::time::Instant::from_std(d)) => {}
                        () = self.changed.notified() => {}
                    }
                }
                (_, None) => self.changed.notified().await,
            }
        }
    }
}

/// Marks one request in flight on its connection's [`Clock`] until dropped
/// (with the response's body, or with the request's future if the
/// connection goes first).
struct InFlight(Arc<Clock>);

impl InFlight {
    fn start(clock: &Arc<Clock>) -> InFlight {
        clock.on_request();
        InFlight(clock.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.on_response_end(Instant::now());
    }
}

/// A response body that ends its request's [`InFlight`] when hyper is done
/// with it.
pub(crate) struct Guarded<B> {
    body: B,
    _in_flight: InFlight,
}

impl<B: Body + Unpin> Body for Guarded<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The routes as a hyper service that tells the connection's [`Clock`]
/// when a request starts and when its response ends.
struct Tracked<S> {
    inner: S,
    clock: Arc<Clock>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> hyper::service::Service<Request<Incoming>> for Tracked<S>
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<Guarded<B>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let in_flight = InFlight::start(&self.clock);
        let response = self.inner.call(req);
        Box::pin(async move {
            let r = response.await?;
            Ok(r.map(|body| Guarded {
                body,
                _in_flight: in_flight,
            }))
        })
    }
}

/// The socket, telling the connection's [`Clock`] when bytes arrive.
struct Watched {
    io: TcpStream,
    clock: Arc<Clock>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.clock.on_read(Instant::now());
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Serves `filter` on `listener` until `shutdown` says stop, then stops
/// accepting and waits for the open connections to finish (idle ones close
/// at once). The caller bounds that wait.
pub(crate) async fn serve<F>(
    listener: TcpListener,
    filter: F,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
) where
    F: warp::Filter<Extract = (warp::reply::Response,), Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
{
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper's own header-read timeout stays off (no timer is given): the
    // connection's Clock applies both timeouts (see the module's doc).
    builder.http1().header_read_timeout(None);
    let mut saturated = false;
    loop {
        if slots.available_permits() == 0 && !saturated {
            saturated = true;
            tracing::warn!(
                target: "allocscope",
                "the exporter has max_connections ({}) connections open: new ones wait until one closes",
                limits.max_connections
            );
        }
        let permit = tokio::select! {
            biased;
            () = super::shutting_down(&mut shutdown) => break,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break, // never closed
            },
        };
        let (tcp, peer) = tokio::select! {
            biased;
            () = super::shutting_down(&mut shutdown) => break,
            r = listener.accept() => match r {
                Ok(conn) => conn,
                Err(e) => {
                    drop(permit);
                    accept_error(e).await;
                    continue;
                }
            },
        };
        if saturated && slots.available_permits() > 0 {
            saturated = false;
        }
        let clock = Arc::new(Clock::new(&limits, Instant::now()));
        let io = TokioIo::new(Watched {
            io: tcp,
            clock: clock.clone(),
        });
        let service = Tracked {
            inner: TowerToHyperService::new(warp::service(filter.clone())),
            clock: clock.clone(),
        };
        let conn = graceful.watch(builder.serve_connection(io, service).into_owned());
        tokio::spawn(async move {
            let _slot = permit;
            tokio::select! {
                r = conn => {
                    if let Err(e) = r {
                        tracing::debug!(target: "allocscope", "connection from {peer}: {e}");
                    }
                }
                phase = clock.expired() => {
                    let why = match phase {
                        Phase::Idle => "idle for idle_timeout",
                        _ => "no complete request headers within header_read_timeout",
                    };
                    tracing::debug!(target: "allocscope", "closing the connection from {peer}: {why}");
                }
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// An accept error: a connection that went away before it was accepted is
/// skipped; anything else (out of file descriptors, say) is logged and the
/// loop waits a second, as hyper's and warp's servers do.
async fn accept_error(e: io::Error) {
    if matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(target: "allocscope", "the exporter cannot accept a connection: {e}");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 4,
        }
    }

    #[test]
    fn first_request_headers_are_due_from_the_accept() {
        let t0 = Instant::now();
        let c = Clock::new(&limits(), t0);
        assert_eq!(
            c.deadline(),
            (Phase::Head, Some(t0 + Duration::from_secs(10)))
        );
        // bytes of the first request do not move the deadline
        c.on_read(t0 + Duration::from_secs(5));
        assert_eq!(
            c.deadline(),
            (Phase::Head, Some(t0 + Duration::from_secs(10)))
        );
        c.on_request();
        assert_eq!(c.deadline(), (Phase::Busy, None));
    }

    #[test]
    fn idle_then_the_next_request() {
        let t0 = Instant::now();
        let c = Clock::new(&limits(), t0);
        c.on_request();
        // bytes while busy (a pipelined request) change nothing
        c.on_read(t0 + Duration::from_secs(1));
        assert_eq!(c.deadline(), (Phase::Busy, None));
        let t1 = t0 + Duration::from_secs(2);
        c.on_response_end(t1);
        assert_eq!(
            c.deadline(),
            (Phase::Idle, Some(t1 + Duration::from_secs(60)))
        );
        // the next request's first byte: its headers are due 10 s later
        let t2 = t1 + Duration::from_secs(30);
        c.on_read(t2);
        assert_eq!(
            c.deadline(),
            (Phase::Head, Some(t2 + Duration::from_secs(10)))
        );
        c.on_read(t2 + Duration::from_secs(3));
        assert_eq!(
            c.deadline(),
            (Phase::Head, Some(t2 + Duration::from_secs(10)))
        );
    }

    #[test]
    fn concurrent_requests_keep_the_connection_busy() {
        let t0 = Instant::now();
        let c = Clock::new(&limits(), t0);
        c.on_request();
        c.on_request();
        c.on_response_end(t0);
        assert_eq!(c.deadline(), (Phase::Busy, None));
        c.on_response_end(t0);
        assert_eq!(c.deadline().0, Phase::Idle);
        // an unmatched end does not underflow
        c.on_response_end(t0);
        assert_eq!(c.deadline().0, Phase::Idle);
    }

    #[test]
    fn expired_waits_for_the_deadline_and_follows_changes() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let l = Limits {
                header_read_timeout: Duration::from_millis(100),
                idle_timeout: Duration::from_millis(200),
                max_connections: 1,
            };
            let c = Arc::new(Clock::new(&l, Instant::now()));
            let t = Instant::now();
            assert_eq!(c.expired().await, Phase::Head);
            assert!(
                t.elapsed() >= Duration::from_millis(90),
                "{:?}",
                t.elapsed()
            );

            // busy: no deadline until the response ends, then idle_timeout
            let c = Arc::new(Clock::new(&l, Instant::now()));
            c.on_request();
            let c2 = c.clone();
            let ender = tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                c2.on_response_end(Instant::now());
            });
            let t = Instant::now();
            assert_eq!(c.expired().await, Phase::Idle);
            assert!(
                t.elapsed() >= Duration::from_millis(490),
                "{:?}",
                t.elapsed()
            );
            ender.await.unwrap();
        });
    }
}
