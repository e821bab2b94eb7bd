//! The HTTP exporter (feature `server`): Prometheus `/metrics`, Go-style
//! `/debug/pprof/*`, heap flamegraphs and a landing page, on warp.
//!
//! Owns the routing table, the request pipeline (route → method → access →
//! body and query limits → handler), the response conventions (Go's pprof
//! headers) and the background server ([`start`], [`ServerHandle`]).
//! Submodules: [`config`](Config) (keys, loading, parsers), `conn` (the
//! accept loop, connection timeouts and cap), `metrics`, `pprof` (profiles,
//! render queue), `gc` (collection cycles), `auth`, `landing`, `log`.
//!
//! ```no_run
//! # #[global_allocator]
//! # static A: allocscope::AllocScope = allocscope::AllocScope::system();
//! let server = allocscope::server::start(allocscope::server::Config::load()?)?;
//! println!("allocscope on http://{}/", server.local_addr());
//! # Ok::<(), allocscope::Error>(())
//! ```
//!
//! Extension point: a control endpoint adds a `Route` variant, its line in
//! `route()` and `Route::methods` (POST for changes) and `Access::Control`;
//! the pipeline then gives it the 405, 401 and 403 answers the others get.
//! `/gc` answers GET (read, `Access::Page`) and POST (change,
//! `Access::Control`) on one path, so its access depends on the method, a
//! GET carrying a change is a 405, and its errors are JSON.

mod auth;
mod config;
mod conn;
mod gc;
mod landing;
mod leaks;
mod log;
mod metrics;
mod pprof;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use warp::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use warp::Filter;

use crate::scope::{InScope, ALLOCSCOPE};
use crate::Error;
use auth::{Access, Policy, Verdict};

pub use config::{parse_duration, parse_size, Config, DEFAULT_CONFIG_FILE, KEYS, MIN_TOKEN_LEN};
pub use metrics::{HeapCollector, Metrics, Snapshot, CONTENT_TYPE as METRICS_CONTENT_TYPE};
pub use pprof::{DEFAULT_CPU_SECONDS, MAX_CPU_SECONDS, MAX_DELTA_SECONDS};

/// Longest accepted query string, in bytes (longer: 414).
pub const MAX_QUERY_BYTES: usize = 1024;
/// Longest accepted request body, in bytes (longer: 413).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// How long [`ServerHandle::shutdown`] lets open requests finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// An answer: status, headers, body. Turned into a warp response with
/// `X-Content-Type-Options: nosniff` on every answer, as Go's pprof does.
#[derive(Debug)]
pub(crate) struct Reply {
    status: StatusCode,
    headers: Vec<(header::HeaderName, HeaderValue)>,
    body: Vec<u8>,
}

impl Reply {
    fn new(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Reply {
        Reply {
            status,
            headers: vec![(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
            body,
        }
    }

    /// An error: `text/plain` with `X-Go-Pprof: 1`, as Go's `serveError`.
    pub(crate) fn error(status: u16, message: &str) -> Reply {
        let mut body = message.to_string();
        if !body.ends_with('\n') {
            body.push('\n');
        }
        Reply::new(
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            "text/plain; charset=utf-8",
            body.into_bytes(),
        )
        .header("x-go-pprof", "1")
    }

    pub(crate) fn text(body: String) -> Reply {
        Reply::new(
            StatusCode::OK,
            "text/plain; charset=utf-8",
            body.into_bytes(),
        )
    }

    pub(crate) fn html(body: String) -> Reply {
        Reply::new(
            StatusCode::OK,
            "text/html; charset=utf-8",
            body.into_bytes(),
        )
    }

    pub(crate) fn svg(body: Vec<u8>) -> Reply {
        Reply::new(StatusCode::OK, "image/svg+xml", body)
    }

    /// A profile file: `application/octet-stream` with
    /// `Content-Disposition: attachment; filename="<name>"`, as Go.
    pub(crate) fn binary(body: Vec<u8>, filename: &'static str) -> Reply {
        let disposition = match filename {
            "heap" => "attachment; filename=\"heap\"",
            "allocs" => "attachment; filename=\"allocs\"",
            "heap-delta" => "attachment; filename=\"heap-delta\"",
            "allocs-delta" => "attachment; filename=\"allocs-delta\"",
            _ => "attachment; filename=\"profile\"",
        };
        Reply::new(StatusCode::OK, "application/octet-stream", body)
            .header("content-disposition", disposition)
    }

    pub(crate) fn header(mut self, name: &'static str, value: &'static str) -> Reply {
        self.headers.push((
            header::HeaderName::from_static(name),
            HeaderValue::from_static(value),
        ));
        self
    }

    fn into_response(self) -> warp::reply::Response {
        let mut r = warp::reply::Response::new(self.body.into());
        *r.status_mut() = self.status;
        let h = r.headers_mut();
        for (k, v) in self.headers {
            h.insert(k, v);
        }
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        r
    }
}

/// The endpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Route {
    Landing,
    Metrics,
    PprofIndex,
    Heap,
    Allocs,
    HeapSvg,
    Baseline,
    CpuProfile,
    Cmdline,
    /// `/gc`: GET reads the collector's state, POST changes it.
    Gc,
    /// `/gc/collect`: POST runs a collection cycle.
    GcCollect,
    /// `/debug/leaks`: the leak suspects (JSON).
    Leaks,
    /// `/debug/pprof/<name>` for a profile allocscope does not have.
    UnknownProfile(String),
}

impl Route {
    /// The methods the endpoint answers; state changes are POST-only.
    fn methods(&self) -> &'static [Method] {
        const READ: &[Method] = &[Method::GET, Method::HEAD];
        const CHANGE: &[Method] = &[Method::POST];
        const BOTH: &[Method] = &[Method::GET, Method::HEAD, Method::POST];
        match self {
            Route::Baseline | Route::GcCollect => CHANGE,
            Route::Gc => BOTH,
            _ => READ,
        }
    }

    fn access(&self, method: &Method) -> Access {
        match self {
            Route::Metrics => Access::Public,
            Route::Landing => Access::Page,
            Route::Gc if method != Method::POST => Access::Page,
            Route::Baseline | Route::Gc | Route::GcCollect => Access::Control,
            _ => Access::Profile,
        }
    }

    /// Whether errors are JSON (the `/gc` endpoints and `/debug/leaks`)
    /// rather than Go's text.
    fn json_errors(&self) -> bool {
        matches!(self, Route::Gc | Route::GcCollect | Route::Leaks)
    }
}

/// The endpoint of a path, `None` for paths allocscope does not serve.
pub(crate) fn route(path: &str) -> Option<Route> {
    Some(match path {
        "/" => Route::Landing,
        "/metrics" => Route::Metrics,
        "/debug/pprof" | "/debug/pprof/" => Route::PprofIndex,
        "/debug/pprof/heap" => Route::Heap,
        "/debug/pprof/allocs" => Route::Allocs,
        "/debug/pprof/heap.svg" => Route::HeapSvg,
        "/debug/pprof/baseline" => Route::Baseline,
        "/debug/pprof/profile" => Route::CpuProfile,
        "/debug/pprof/cmdline" => Route::Cmdline,
        "/gc" => Route::Gc,
        "/gc/collect" => Route::GcCollect,
        "/debug/leaks" => Route::Leaks,
        p => Route::UnknownProfile(p.strip_prefix("/debug/pprof/")?.to_string()),
    })
}

/// What every request of one exporter shares.
pub(crate) struct State {
    policy: Policy,
    addr: SocketAddr,
    metrics: Metrics,
    render_timeout: Duration,
    /// How long a request's body may take after its headers.
    body_timeout: Duration,
    shutdown: watch::Receiver<bool>,
    started: Instant,
    baseline: Mutex<Option<Arc<crate::profile::HeapProfile>>>,
    /// The leak snapshots, fed by [`leaks::run`].
    leaks: Arc<leaks::Leaks>,
    /// Whether the leak snapshots' task must be started by the first
    /// request (a host mounting [`routes`]), and whether it was.
    leaks_lazy: std::sync::atomic::AtomicBool,
    /// The landing page's earlier sample of the scope and thread-group
    /// counters, for its rates.
    rates: landing::Rates,
}

impl State {
    fn new(config: &Config, addr: SocketAddr, shutdown: watch::Receiver<bool>) -> State {
        let leaks = Arc::new(leaks::Leaks::new(
            config.leak_snapshot_interval,
            config.leak_snapshots,
        ));
        State {
            policy: Policy::new(config.token.as_deref(), addr, config.allow_remote_control),
            addr,
            metrics: Metrics::with_leaks(config.full_size_classes, leaks.clone()),
            leaks,
            leaks_lazy: std::sync::atomic::AtomicBool::new(false),
            render_timeout: config.render_timeout,
            body_timeout: config.header_read_timeout,
            shutdown,
            started: Instant::now(),
            baseline: Mutex::new(None),
            rates: landing::Rates::new(),
        }
    }

    fn baseline(&self) -> Option<Arc<crate::profile::HeapProfile>> {
        self.baseline
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_baseline(&self, p: crate::profile::HeapProfile) {
        *self.baseline.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(p));
    }
}

/// Resolves once `rx` says stop; never if its sender is gone without
/// saying so (a filter mounted by the host has no shutdown).
pub(crate) async fn shutting_down(rx: &mut watch::Receiver<bool>) {
    loop {
        if *rx.borrow_and_update() {
            return;
        }
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Percent-encodes a query value for a link: every byte but the
/// unreserved ones (RFC 3986), so that [`parse_query`] decodes it back.
pub(crate) fn encode_query_value(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The query string's parameters, percent-decoded (`+` is a space).
pub(crate) fn parse_query(q: &str) -> Result<Vec<(String, String)>, Reply> {
    if q.len() > MAX_QUERY_BYTES {
        return Err(Reply::error(
            414,
            &format!("query string longer than {MAX_QUERY_BYTES} bytes"),
        ));
    }
    fn decode(s: &str) -> Option<String> {
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'+' => out.push(b' '),
                b'%' => {
                    let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                    out.push(u8::from_str_radix(hex, 16).ok()?);
                    i += 2;
                }
                c => out.push(c),
            }
            i += 1;
        }
        String::from_utf8(out).ok()
    }
    q.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            match (decode(k), decode(v)) {
                (Some(k), Some(v)) => Ok((k, v)),
                _ => Err(Reply::error(
                    400,
                    &format!("malformed query parameter {kv:?}: bad percent-encoding or UTF-8"),
                )),
            }
        })
        .collect()
}

/// The first value of `key`.
pub(crate) fn query_get<'a>(q: &'a [(String, String)], key: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// Runs every endpoint's query parsing over `query` (see
/// [`crate::test_util::ParsedQuery`]); `Err` is the status `parse_query`
/// answers with.
#[cfg(feature = "test-util")]
pub(crate) fn parse_query_for_tests(query: &str) -> Result<crate::test_util::ParsedQuery, u16> {
    let q = parse_query(query).map_err(|r| r.status.as_u16())?;
    let st = |r: Reply| r.status.as_u16();
    Ok(crate::test_util::ParsedQuery {
        cpu_seconds: pprof::cpu_seconds(query_get(&q, "seconds")).map_err(st),
        heap_text: pprof::heap_params(&q).map_err(st),
        heap_gc: pprof::heap_gc_param(&q).map_err(st),
        heap_seconds: pprof::delta_seconds(&q).map_err(st),
        raw: pprof::frames_param(&q)
            .map(|f| f == crate::profile::Frames::Raw)
            .map_err(st),
        svg: pprof::svg_params(&q).map_err(st),
        min_age: pprof::min_age_param(&q).map_err(st),
        scope: pprof::scope_param(&q).map_err(st),
        thread: pprof::thread_param(&q).map_err(st),
        lines: pprof::lines_param(&q)
            .map(|s| s == crate::profile::Symbols::Lines)
            .map_err(st),
        gc_post: gc::post_params(&q).map_err(st),
        gc_get_change: gc::read_with_change(&Method::GET, query).map(st),
        params: q,
    })
}

/// Reads and discards a body of at most [`MAX_BODY_BYTES`], within
/// `timeout` (then 408).
async fn drain_body<S, B>(headers: &HeaderMap, body: S, timeout: Duration) -> Result<(), Reply>
where
    S: warp::Stream<Item = Result<B, warp::Error>>,
    B: warp::Buf,
{
    let too_large = || {
        Reply::error(
            413,
            &format!(
                "request body larger than {MAX_BODY_BYTES} bytes; these endpoints take no body"
            ),
        )
    };
    if let Some(len) = headers.get(header::CONTENT_LENGTH) {
        match len.to_str().ok().and_then(|s| s.parse::<u64>().ok()) {
            Some(n) if n > MAX_BODY_BYTES as u64 => return Err(too_large()),
            Some(_) => {}
            None => return Err(Reply::error(400, "malformed Content-Length")),
        }
    }
    let read = async {
        let mut body = std::pin::pin!(body);
        let mut n = 0usize;
        while let Some(chunk) = std::future::poll_fn(|cx| body.as_mut().poll_next(cx)).await {
            let chunk =
                chunk.map_err(|e| Reply::error(400, &format!("cannot read the body: {e}")))?;
            n += chunk.remaining();
            if n > MAX_BODY_BYTES {
                return Err(too_large());
            }
        }
        Ok(())
    };
    match tokio::time::timeout(timeout, read).await {
        Ok(r) => r,
        Err(_) => Err(Reply::error(
            408,
            &format!(
                "the request body did not arrive within header_read_timeout ({}s) of its headers",
                timeout.as_secs()
            ),
        )),
    }
}

/// The request pipeline: method, access, limits, then the endpoint.
async fn handle<S, B>(
    route: Route,
    method: Method,
    query: String,
    headers: HeaderMap,
    body: S,
    state: Arc<State>,
) -> warp::reply::Response
where
    S: warp::Stream<Item = Result<B, warp::Error>>,
    B: warp::Buf,
{
    if state
        .leaks_lazy
        .swap(false, std::sync::atomic::Ordering::Relaxed)
    {
        tokio::spawn(leaks::run(state.leaks.clone(), state.shutdown.clone()).in_scope(&ALLOCSCOPE));
    }
    let json_errors = route.json_errors();
    let reply = match pipeline(route, method, &query, &headers, body, &state).await {
        Ok(r) | Err(r) => r,
    };
    if json_errors && reply.status.as_u16() >= 400 {
        reply.into_json_error().into_response()
    } else {
        reply.into_response()
    }
}

async fn pipeline<S, B>(
    route: Route,
    method: Method,
    query: &str,
    headers: &HeaderMap,
    body: S,
    state: &State,
) -> Result<Reply, Reply>
where
    S: warp::Stream<Item = Result<B, warp::Error>>,
    B: warp::Buf,
{
    let allowed = route.methods();
    if !allowed.contains(&method) {
        let names: Vec<&str> = allowed.iter().map(Method::as_str).collect();
        let why = if allowed == [Method::POST] {
            " because it changes state"
        } else {
            ""
        };
        let mut r = Reply::error(
            405,
            &format!(
                "method {method} is not allowed here{why}; use {}",
                names.join(" or ")
            ),
        );
        r.headers.push((
            header::ALLOW,
            HeaderValue::from_str(&names.join(", ")).unwrap_or(HeaderValue::from_static("GET")),
        ));
        return Err(r);
    }
    if route == Route::Gc {
        if let Some(r) = gc::read_with_change(&method, query) {
            return Err(r);
        }
    }
    let authorization = headers
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    match state.policy.check(
        route.access(&method),
        authorization,
        &state.addr.to_string(),
    ) {
        Verdict::Allow => {}
        Verdict::Unauthorized(m) => {
            return Err(
                Reply::error(401, m).header("www-authenticate", "Bearer realm=\"allocscope\"")
            )
        }
        Verdict::Forbidden(m) => return Err(Reply::error(403, &m)),
    }
    drain_body(headers, body, state.body_timeout).await?;
    let q = parse_query(query)?;
    Ok(dispatch(route, &method, &q, state).await)
}

async fn dispatch(route: Route, method: &Method, q: &[(String, String)], state: &State) -> Reply {
    match route {
        Route::Landing => {
            let temporary = landing::temporary_section(state).await;
            landing::page(state, &temporary)
        }
        Route::Metrics => Reply::new(
            StatusCode::OK,
            metrics::CONTENT_TYPE,
            state.metrics.render(),
        ),
        Route::PprofIndex => pprof::index(),
        Route::Cmdline => pprof::cmdline(),
        Route::CpuProfile => match pprof::cpu_seconds(query_get(q, "seconds")) {
            Ok(s) => pprof::cpu_profile(state, s).await,
            Err(r) => r,
        },
        Route::Heap => pprof::heap(state, crate::profile::PprofKind::Heap, q).await,
        Route::Allocs => pprof::heap(state, crate::profile::PprofKind::Allocs, q).await,
        Route::HeapSvg => pprof::heap_svg(state, q).await,
        Route::Baseline => pprof::save_baseline(state).await,
        Route::Gc if method == Method::POST => gc::post(q),
        Route::Gc => gc::get(q),
        Route::GcCollect => gc::collect(q).await,
        Route::Leaks => leaks::get(&state.leaks, q),
        Route::UnknownProfile(name) => Reply::error(
            404,
            &format!(
                "Unknown profile: {name:?}. allocscope serves heap, allocs, heap.svg, profile and \
                 cmdline; see /debug/pprof/"
            ),
        ),
    }
}

/// The filter of one exporter: allocscope's paths, or a `not_found`
/// rejection for every other path (so that it combines with `.or()`).
fn filter(
    state: Arc<State>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = warp::Rejection>
       + Clone
       + Send
       + Sync
       + 'static {
    let query = warp::query::raw().or(warp::any().map(String::new)).unify();
    warp::path::full()
        .and_then(|p: warp::path::FullPath| async move {
            route(p.as_str()).ok_or_else(warp::reject::not_found)
        })
        .and(warp::method())
        .and(query)
        .and(warp::header::headers_cloned())
        .and(warp::body::stream())
        .and(warp::any().map(move || state.clone()))
        .then(|route, method, query, headers, body, state| {
            // the exporter's own work counts under the scope `allocscope`,
            // on whatever runtime serves it (a host's, for `routes`)
            handle(route, method, query, headers, body, state).in_scope(&ALLOCSCOPE)
        })
}

/// The exporter's routes as a warp filter, for a host that serves them in
/// its own warp app (`routes(&cfg).or(host_routes)`). Paths allocscope does
/// not serve are rejected with `not_found`. Access rules use `config.addr`
/// as the address served on: set it to where the host listens.
///
/// The periodic log line and the sample interval are not applied here: see
/// [`start`], [`apply`] and [`log_line_loop`]. The leak snapshots of
/// `/debug/leaks` start with the first request these routes serve, on the
/// host's runtime. Nor are the connection
/// limits (`header_read_timeout` for the headers, `idle_timeout`,
/// `max_connections`): the host's server owns its connections. A request's
/// body must still arrive within `header_read_timeout` of its headers.
pub fn routes(
    config: &Config,
) -> impl Filter<Extract = (warp::reply::Response,), Error = warp::Rejection>
       + Clone
       + Send
       + Sync
       + 'static {
    let (_tx, rx) = watch::channel(false);
    let state = State::new(config, config.addr, rx);
    state
        .leaks_lazy
        .store(true, std::sync::atomic::Ordering::Relaxed);
    filter(Arc::new(state))
}

/// Applies the process-wide settings of `config`: the sample interval, the
/// bound on scope names (`max_scopes`) and the collector's (threshold, memory limit, release to the OS, time
/// share, near-limit profiles), and starts the collector thread. [`start`]
/// calls it. A value [`Config::validate`] would refuse is logged and left
/// as it was.
pub fn apply(config: &Config) {
    crate::sampling::set_interval(config.sample_interval);
    crate::gc::set_threshold(config.threshold);
    crate::gc::set_release_mode(config.release_to_os);
    let refused = [
        crate::gc::set_limit_backoff(config.limit_backoff()).err(),
        config.memory_limit.apply(config.memory_limit_ratio).err(),
        crate::gc::set_time_share(config.collector_time_share).err(),
        crate::profile::set_near_limit_profiles(config.near_limit_profiles()).err(),
        crate::profile::set_temporary_lifetime(config.temporary_lifetime).err(),
        crate::scope::set_max_scopes(config.max_scopes).err(),
    ];
    for e in refused.into_iter().flatten() {
        tracing::warn!(target: "allocscope", "{e}");
    }
    crate::gc::start_collector();
}

/// The periodic info line (`heap=… live (… objects), rss=…, allocs/s=…,
/// collections=…, threads=…`) every `config.log_interval`, for a host that
/// mounts [`routes`] itself: spawn it on its runtime. Returns at once when
/// the interval is zero.
pub async fn log_line_loop(config: &Config) {
    let (_tx, rx) = watch::channel(false);
    log::run(config.log_interval, rx)
        .in_scope(&ALLOCSCOPE)
        .await
}

async fn recover(r: warp::Rejection) -> Result<warp::reply::Response, Infallible> {
    let reply = if r.is_not_found() {
        Reply::error(
            404,
            "404 page not found; allocscope serves /, /metrics, /debug/pprof/, /debug/leaks and /gc",
        )
    } else {
        Reply::error(400, &format!("bad request: {r:?}"))
    };
    Ok(reply.into_response())
}

/// A running exporter. Dropping it stops the exporter without waiting;
/// [`ServerHandle::shutdown`] stops it and waits.
#[derive(Debug)]
#[must_use = "dropping the handle stops the exporter"]
pub struct ServerHandle {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ServerHandle {
    /// The address the exporter listens on (with the real port when the
    /// configuration asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The landing page's URL.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// Stops accepting connections, lets open requests finish (a few
    /// seconds at most; a running CPU profile is abandoned), and waits for
    /// the exporter's thread to end. Blocks: call it outside async code.
    pub fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!(target: "allocscope", "the exporter thread panicked");
            }
        }
    }

    /// Keeps the exporter running for the rest of the process without a
    /// handle to stop it.
    pub fn detach(mut self) {
        self.thread.take();
        std::mem::forget(self);
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// The exporter's runtime. Dropped anywhere (even inside the host's async
/// code, on an error path of [`start`]) without blocking or panicking.
struct OwnRuntime(Option<tokio::runtime::Runtime>);

impl OwnRuntime {
    fn handle(&self) -> &tokio::runtime::Handle {
        self.0.as_ref().expect("present until stopped").handle()
    }

    fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.0.as_ref().expect("present until stopped").block_on(f)
    }

    /// Stops the runtime, waiting up to `grace` for blocking tasks.
    fn stop(mut self, grace: Duration) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_timeout(grace);
        }
    }
}

impl Drop for OwnRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// Makes `allocscope` the calling thread's scope for the rest of its life
/// (the exporter's own threads only; the guard is never dropped, so the
/// thread never leaves it).
fn enter_exporter_scope() {
    std::mem::forget(ALLOCSCOPE.enter());
}

/// Starts the exporter on its own small tokio runtime in a background
/// thread (whether or not the host uses tokio), and applies the
/// configuration's sample interval.
///
/// Connections are bounded: a client must send complete request headers
/// within `header_read_timeout` of connecting (and of the first byte of each
/// later request), a keep-alive connection with no request in flight is
/// closed after `idle_timeout`, and at most `max_connections` are open at
/// once (further clients wait to be accepted).
///
/// # Errors
/// A bad configuration value ([`Config::validate`]); the address cannot be
/// listened on (in use, not local): [`Error::Bind`] names it; the runtime
/// or its thread cannot be created. Nothing is changed in the process then.
pub fn start(config: Config) -> Result<ServerHandle, Error> {
    config.validate()?;
    let io = |context: &str| {
        let context = context.to_string();
        move |source| Error::Io { context, source }
    };
    let std_listener = std::net::TcpListener::bind(config.addr).map_err(|source| Error::Bind {
        addr: config.addr,
        source,
    })?;
    std_listener
        .set_nonblocking(true)
        .map_err(io("cannot make the exporter's socket non-blocking"))?;
    let addr = std_listener
        .local_addr()
        .map_err(io("cannot read the exporter's address"))?;
    let rt = OwnRuntime(Some(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.worker_threads)
            .max_blocking_threads(4)
            .thread_name("allocscope-http")
            // everything the exporter's threads do (requests, renders on
            // its blocking threads, leak snapshots, the log line) counts
            // under the scope `allocscope`
            .on_thread_start(enter_exporter_scope)
            .enable_all()
            .build()
            .map_err(io("cannot create the exporter's tokio runtime"))?,
    ));
    let listener = {
        let _in_rt = rt.handle().enter();
        tokio::net::TcpListener::from_std(std_listener)
            .map_err(io("cannot register the exporter's socket"))?
    };
    let (stop, rx) = watch::channel(false);
    let state = Arc::new(State::new(&config, addr, rx.clone()));
    let leak_snapshots = leaks::run(state.leaks.clone(), rx.clone());
    let routes = filter(state).recover(recover).unify();
    let limits = conn::Limits::new(&config);
    let log_every = config.log_interval;
    let thread = std::thread::Builder::new()
        .name("allocscope-server".into())
        .spawn(move || {
            enter_exporter_scope();
            rt.block_on(async move {
                tokio::spawn(log::run(log_every, rx.clone()));
                tokio::spawn(leak_snapshots);
                let server = conn::serve(listener, routes, limits, rx.clone());
                let mut server = std::pin::pin!(server);
                let mut rx = rx;
                tokio::select! {
                    () = &mut server => {}
                    () = shutting_down(&mut rx) => {
                        if tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await.is_err() {
                            tracing::warn!(target: "allocscope", "exporter stopped with requests still open");
                        }
                    }
                }
            });
            rt.stop(Duration::from_secs(1));
        })
        .map_err(io("cannot start the exporter's thread"))?;
    apply(&config);
    if addr.ip().is_loopback() {
        tracing::info!(target: "allocscope", "allocscope exporter on http://{addr}/");
    } else if config.token.is_none() && config.allow_remote_control {
        tracing::warn!(target: "allocscope", "allocscope exporter on http://{addr}/ serves profiles to anyone who can reach it (allow_remote_control without a token)");
    } else {
        tracing::info!(target: "allocscope", "allocscope exporter on http://{addr}/ (remote)");
    }
    Ok(ServerHandle {
        addr,
        stop,
        thread: Some(thread),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing() {
        assert_eq!(route("/"), Some(Route::Landing));
        assert_eq!(route("/metrics"), Some(Route::Metrics));
        assert_eq!(route("/debug/pprof/"), Some(Route::PprofIndex));
        assert_eq!(route("/debug/pprof/heap"), Some(Route::Heap));
        assert_eq!(
            route("/debug/pprof/goroutine"),
            Some(Route::UnknownProfile("goroutine".into()))
        );
        assert_eq!(route("/metrics/"), None);
        assert_eq!(route("/nope"), None);
        assert_eq!(route("/debug/pprofx"), None);
        assert_eq!(route("/gc"), Some(Route::Gc));
        assert_eq!(route("/gc/collect"), Some(Route::GcCollect));
        assert_eq!(route("/gc/"), None);
        assert_eq!(route("/debug/leaks"), Some(Route::Leaks));
        assert_eq!(Route::Leaks.access(&Method::GET), Access::Profile);
    }

    #[test]
    fn queries() {
        let q = parse_query("seconds=5&sample=inuse%5Fspace&x&a=b+c").unwrap();
        assert_eq!(query_get(&q, "seconds"), Some("5"));
        assert_eq!(query_get(&q, "sample"), Some("inuse_space"));
        assert_eq!(query_get(&q, "x"), Some(""));
        assert_eq!(query_get(&q, "a"), Some("b c"));
        assert!(parse_query("a=%zz").is_err());
        assert!(parse_query("a=%f").is_err());
        assert!(parse_query("a=%ff").is_err()); // not UTF-8
        assert_eq!(parse_query(&"a".repeat(2000)).unwrap_err().status, 414);
        assert!(parse_query("").unwrap().is_empty());
    }
}
