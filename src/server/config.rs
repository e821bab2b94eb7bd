//! The exporter's configuration: [`Config`], its loading from a file and
//! the environment, and the size and duration parsers.
//!
//! Owns every configuration key, its default and its validation. Never
//! panics on bad input: every bad value is an [`Error`] naming the key, the
//! value and what is accepted.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::gc::ReleaseMode;
use crate::Error;

/// The file read by [`Config::load`] when `ALLOCSCOPE_CONFIG` is not set
/// (relative to the working directory; optional).
pub const DEFAULT_CONFIG_FILE: &str = "config/allocscope.toml";

/// Every key a configuration file or `ALLOCSCOPE_<KEY>` may set.
pub const KEYS: &[&str] = &[
    "addr",
    "sample_interval",
    "log_interval",
    "token",
    "allow_remote_control",
    "full_size_classes",
    "render_timeout",
    "worker_threads",
    "threshold",
    "memory_limit",
    "release_to_os",
    "collector_time_share",
    "near_limit_profile_dir",
    "near_limit_ratio",
    "near_limit_profiles_keep",
    "near_limit_profile_interval",
    "header_read_timeout",
    "idle_timeout",
    "max_connections",
];

const SIZE_EXPECTED: &str =
    "a size: a whole number with a unit B, KiB, MiB or GiB (e.g. 512KiB, 4MiB), or 0 for off";
const DURATION_EXPECTED: &str =
    "a duration: a whole number with a unit ms, s, m or h (e.g. 250ms, 10s, 5m), or 0 for off";
const ADDR_EXPECTED: &str =
    "a socket address IP:PORT such as 127.0.0.1:6060, 0.0.0.0:9100 or [::1]:6060";
const BOOL_EXPECTED: &str = "true or false";
const TOKEN_EXPECTED: &str =
    "at least 16 visible ASCII characters without spaces (e.g. the output of `openssl rand -hex 16`)";
const RENDER_TIMEOUT_EXPECTED: &str = "a duration from 1s to 10m, such as 30s";
const WORKERS_EXPECTED: &str = "a whole number from 1 to 16";
const HEADER_READ_TIMEOUT_EXPECTED: &str = "a duration from 1s to 5m, such as 10s";
const IDLE_TIMEOUT_EXPECTED: &str = "a duration from 1s to 1h, such as 60s";
const MAX_CONNECTIONS_EXPECTED: &str = "a whole number from 1 to 65536";
/// The accepted range of `header_read_timeout`.
const HEADER_READ_TIMEOUT_RANGE: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(300));
/// The accepted range of `idle_timeout`.
const IDLE_TIMEOUT_RANGE: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(3600));
/// The accepted range of `max_connections`.
const MAX_CONNECTIONS_RANGE: std::ops::RangeInclusive<usize> = 1..=65536;
/// What `threshold` (and `POST /gc?set=`) accepts.
pub(crate) const THRESHOLD_EXPECTED: &str =
    "a whole number of percent from 0 to 4294967295 (e.g. 100, 200), or off";
/// What `memory_limit` (and `POST /gc?memory_limit=`) accepts.
pub(crate) const MEMORY_LIMIT_EXPECTED: &str =
    "a size above 0: a whole number with a unit B, KiB, MiB, GiB or TiB (e.g. 512MiB, 2GiB), or off";
const INTERVAL_EXPECTED: &str = "a duration of at least 1s, such as 30s or 1m";

/// Shortest accepted bearer token.
pub const MIN_TOKEN_LEN: usize = 16;

/// The exporter's configuration.
///
/// Build one with [`Config::load`] (defaults, then a file, then the
/// environment) or from [`Config::default`] with the builder-style setters:
///
/// ```
/// use allocscope::server::Config;
/// let c = Config::default()
///     .addr("127.0.0.1:0".parse().unwrap())
///     .log_interval(std::time::Duration::ZERO);
/// assert_eq!(c.sample_interval, 512 * 1024);
/// ```
#[derive(Clone, PartialEq)]
#[non_exhaustive]
pub struct Config {
    /// Where the exporter listens. Default `127.0.0.1:6060` (where Go
    /// programmers look for pprof; 9100 is node_exporter's).
    pub addr: SocketAddr,
    /// Mean bytes between heap samples, applied by [`super::start`]
    /// (0 = off, 1 = every allocation). Default 512 KiB, as Go.
    pub sample_interval: u64,
    /// Period of the info log line; zero = off. Default 10 s.
    pub log_interval: Duration,
    /// Bearer token required by every endpoint but `/metrics`. Default none.
    pub token: Option<String>,
    /// Serve profile and control endpoints on a non-loopback address
    /// without a token. Default false.
    pub allow_remote_control: bool,
    /// Export the allocation size histogram and live bytes per class with
    /// every size class instead of power-of-two buckets. Default false.
    pub full_size_classes: bool,
    /// Longest a profile or flamegraph render may take (waiting for the
    /// previous one included) before the request gets 503. Default 30 s.
    pub render_timeout: Duration,
    /// Async worker threads of the exporter's own runtime. Default 1.
    pub worker_threads: usize,
    /// Collection threshold in percent, as Go's `GOGC` (`None` = off).
    /// Default 100. See [`crate::gc::set_threshold`].
    pub threshold: Option<u32>,
    /// Soft limit on live heap bytes, as Go's `GOMEMLIMIT` (`None` = off,
    /// the default). See [`crate::gc::set_memory_limit`].
    pub memory_limit: Option<u64>,
    /// Whether cycles return free memory to the OS. Default
    /// [`ReleaseMode::Auto`] (`true`).
    pub release_to_os: ReleaseMode,
    /// Share of wall time automatic cycles may take, in `(0, 1]`. Default 0.1.
    pub collector_time_share: f64,
    /// Where heap profiles are written near the memory limit (`None`, the
    /// default: not written).
    pub near_limit_profile_dir: Option<PathBuf>,
    /// Share of the memory limit at which they are written, in `(0, 1]`.
    /// Default 0.9.
    pub near_limit_ratio: f64,
    /// How many of the newest near-limit profiles are kept. Default 5.
    pub near_limit_profiles_keep: usize,
    /// At most one near-limit profile per this interval. Default 1 min.
    pub near_limit_profile_interval: Duration,
    /// Longest a client may take to send a request's complete headers,
    /// counted from the connection's accept (first request) or from the
    /// request's first byte (later requests on a keep-alive connection);
    /// then the connection is closed. A request's body must also arrive
    /// within this time of its headers (else 408). 1 s to 5 min; default
    /// 10 s.
    pub header_read_timeout: Duration,
    /// Longest a keep-alive connection may stay open with no request in
    /// flight; then it is closed. 1 s to 1 h; default 60 s.
    pub idle_timeout: Duration,
    /// Most connections [`super::start`]'s server has open at once; further
    /// clients wait (in the listen backlog) until one closes. 1 to 65536;
    /// default 256.
    pub max_connections: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            addr: SocketAddr::from(([127, 0, 0, 1], 6060)),
            sample_interval: 512 * 1024,
            log_interval: Duration::from_secs(10),
            token: None,
            allow_remote_control: false,
            full_size_classes: false,
            render_timeout: Duration::from_secs(30),
            worker_threads: 1,
            threshold: Some(crate::gc::DEFAULT_THRESHOLD),
            memory_limit: None,
            release_to_os: ReleaseMode::Auto,
            collector_time_share: crate::gc::DEFAULT_TIME_SHARE,
            near_limit_profile_dir: None,
            near_limit_ratio: 0.9,
            near_limit_profiles_keep: 5,
            near_limit_profile_interval: Duration::from_secs(60),
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 256,
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the token.
        f.debug_struct("Config")
            .field("addr", &self.addr)
            .field("sample_interval", &self.sample_interval)
            .field("log_interval", &self.log_interval)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("allow_remote_control", &self.allow_remote_control)
            .field("full_size_classes", &self.full_size_classes)
            .field("render_timeout", &self.render_timeout)
            .field("worker_threads", &self.worker_threads)
            .field("threshold", &self.threshold)
            .field("memory_limit", &self.memory_limit)
            .field("release_to_os", &self.release_to_os)
            .field("collector_time_share", &self.collector_time_share)
            .field("near_limit_profile_dir", &self.near_limit_profile_dir)
            .field("near_limit_ratio", &self.near_limit_ratio)
            .field("near_limit_profiles_keep", &self.near_limit_profiles_keep)
            .field(
                "near_limit_profile_interval",
                &self.near_limit_profile_interval,
            )
            .field("header_read_timeout", &self.header_read_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

impl Config {
    /// Sets [`Config::addr`].
    #[must_use]
    pub fn addr(mut self, addr: SocketAddr) -> Self {
        self.addr = addr;
        self
    }

    /// Sets [`Config::sample_interval`] (bytes; 0 = off).
    #[must_use]
    pub fn sample_interval(mut self, bytes: u64) -> Self {
        self.sample_interval = bytes;
        self
    }

    /// Sets [`Config::log_interval`] (zero = off).
    #[must_use]
    pub fn log_interval(mut self, every: Duration) -> Self {
        self.log_interval = every;
        self
    }

    /// Sets [`Config::token`].
    #[must_use]
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Sets [`Config::allow_remote_control`].
    #[must_use]
    pub fn allow_remote_control(mut self, allow: bool) -> Self {
        self.allow_remote_control = allow;
        self
    }

    /// Sets [`Config::full_size_classes`].
    #[must_use]
    pub fn full_size_classes(mut self, full: bool) -> Self {
        self.full_size_classes = full;
        self
    }

    /// Sets [`Config::render_timeout`].
    #[must_use]
    pub fn render_timeout(mut self, timeout: Duration) -> Self {
        self.render_timeout = timeout;
        self
    }

    /// Sets [`Config::worker_threads`].
    #[must_use]
    pub fn worker_threads(mut self, threads: usize) -> Self {
        self.worker_threads = threads;
        self
    }

    /// Sets [`Config::threshold`] (percent; `None` = off).
    #[must_use]
    pub fn threshold(mut self, percent: Option<u32>) -> Self {
        self.threshold = percent;
        self
    }

    /// Sets [`Config::memory_limit`] (bytes; `None` = off).
    #[must_use]
    pub fn memory_limit(mut self, bytes: Option<u64>) -> Self {
        self.memory_limit = bytes;
        self
    }

    /// Sets [`Config::release_to_os`].
    #[must_use]
    pub fn release_to_os(mut self, mode: ReleaseMode) -> Self {
        self.release_to_os = mode;
        self
    }

    /// Sets [`Config::collector_time_share`].
    #[must_use]
    pub fn collector_time_share(mut self, share: f64) -> Self {
        self.collector_time_share = share;
        self
    }

    /// Sets [`Config::near_limit_profile_dir`].
    #[must_use]
    pub fn near_limit_profile_dir(mut self, dir: Option<PathBuf>) -> Self {
        self.near_limit_profile_dir = dir;
        self
    }

    /// Sets [`Config::near_limit_ratio`].
    #[must_use]
    pub fn near_limit_ratio(mut self, ratio: f64) -> Self {
        self.near_limit_ratio = ratio;
        self
    }

    /// Sets [`Config::near_limit_profiles_keep`].
    #[must_use]
    pub fn near_limit_profiles_keep(mut self, keep: usize) -> Self {
        self.near_limit_profiles_keep = keep;
        self
    }

    /// Sets [`Config::near_limit_profile_interval`].
    #[must_use]
    pub fn near_limit_profile_interval(mut self, every: Duration) -> Self {
        self.near_limit_profile_interval = every;
        self
    }

    /// Sets [`Config::header_read_timeout`].
    #[must_use]
    pub fn header_read_timeout(mut self, timeout: Duration) -> Self {
        self.header_read_timeout = timeout;
        self
    }

    /// Sets [`Config::idle_timeout`].
    #[must_use]
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Sets [`Config::max_connections`].
    #[must_use]
    pub fn max_connections(mut self, max: usize) -> Self {
        self.max_connections = max;
        self
    }

    /// The near-limit profile setting this configuration asks for.
    pub(crate) fn near_limit_profiles(&self) -> Option<crate::profile::NearLimitProfiles> {
        self.near_limit_profile_dir.as_ref().map(|d| {
            crate::profile::NearLimitProfiles::new(d)
                .ratio(self.near_limit_ratio)
                .keep(self.near_limit_profiles_keep)
                .min_interval(self.near_limit_profile_interval)
        })
    }

    /// Checks the values the setters cannot check (the token, the render
    /// timeout, the worker count, the collector's shares and counts, the
    /// connection timeouts and cap).
    /// [`super::start`] calls it.
    pub fn validate(&self) -> Result<(), Error> {
        if let Some(t) = &self.token {
            check_token(t)?;
        }
        if self.render_timeout < Duration::from_secs(1)
            || self.render_timeout > Duration::from_secs(600)
        {
            return Err(invalid(
                "render_timeout",
                format!("{:?}", self.render_timeout),
                RENDER_TIMEOUT_EXPECTED,
            ));
        }
        if !(1..=16).contains(&self.worker_threads) {
            return Err(invalid(
                "worker_threads",
                self.worker_threads.to_string(),
                WORKERS_EXPECTED,
            ));
        }
        if self.memory_limit == Some(0) {
            return Err(invalid("memory_limit", "0", MEMORY_LIMIT_EXPECTED));
        }
        if !valid_share(self.collector_time_share) {
            return Err(invalid(
                "collector_time_share",
                self.collector_time_share.to_string(),
                crate::gc::TIME_SHARE_EXPECTED,
            ));
        }
        if !valid_share(self.near_limit_ratio) {
            return Err(invalid(
                "near_limit_ratio",
                self.near_limit_ratio.to_string(),
                crate::profile::RATIO_EXPECTED,
            ));
        }
        if !(1..=1000).contains(&self.near_limit_profiles_keep) {
            return Err(invalid(
                "near_limit_profiles_keep",
                self.near_limit_profiles_keep.to_string(),
                crate::profile::KEEP_EXPECTED,
            ));
        }
        if self.near_limit_profile_interval < Duration::from_secs(1) {
            return Err(invalid(
                "near_limit_profile_interval",
                format!("{:?}", self.near_limit_profile_interval),
                INTERVAL_EXPECTED,
            ));
        }
        if !in_range(self.header_read_timeout, HEADER_READ_TIMEOUT_RANGE) {
            return Err(invalid(
                "header_read_timeout",
                format!("{:?}", self.header_read_timeout),
                HEADER_READ_TIMEOUT_EXPECTED,
            ));
        }
        if !in_range(self.idle_timeout, IDLE_TIMEOUT_RANGE) {
            return Err(invalid(
                "idle_timeout",
                format!("{:?}", self.idle_timeout),
                IDLE_TIMEOUT_EXPECTED,
            ));
        }
        if !MAX_CONNECTIONS_RANGE.contains(&self.max_connections) {
            return Err(invalid(
                "max_connections",
                self.max_connections.to_string(),
                MAX_CONNECTIONS_EXPECTED,
            ));
        }
        Ok(())
    }

    /// Loads the configuration: the built-in defaults, then the TOML file
    /// named by `ALLOCSCOPE_CONFIG` (which must exist) or else
    /// `config/allocscope.toml` if present, then environment variables
    /// `ALLOCSCOPE_<KEY>` (e.g. `ALLOCSCOPE_ADDR=127.0.0.1:0`).
    ///
    /// # Errors
    /// An unreadable or malformed file, an unknown key in the file, or a bad
    /// value anywhere: the error names the key, the value and what is
    /// accepted.
    pub fn load() -> Result<Config, Error> {
        let file = std::env::var_os("ALLOCSCOPE_CONFIG").map(PathBuf::from);
        let vars = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
        Config::load_from(file.as_deref(), vars)
    }

    /// [`Config::load`] with the file and the environment given: `file`
    /// (which must exist) or else `config/allocscope.toml` if present, then
    /// the `ALLOCSCOPE_<KEY>` entries of `vars` (other entries are ignored).
    ///
    /// # Errors
    /// As [`Config::load`].
    pub fn load_from(
        file: Option<&Path>,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, Error> {
        let (path, required) = match file {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_CONFIG_FILE), false),
        };
        let env: config::Map<String, String> = vars
            .into_iter()
            .filter_map(|(k, v)| {
                let key = k.strip_prefix("ALLOCSCOPE_")?.to_ascii_lowercase();
                KEYS.contains(&key.as_str()).then_some((k, v))
            })
            .collect();
        let file_source = config::File::from(path.as_path())
            .format(config::FileFormat::Toml)
            .required(required);
        let layered = config::Config::builder()
            .add_source(file_source)
            .add_source(
                config::Environment::with_prefix("ALLOCSCOPE")
                    .prefix_separator("_")
                    .try_parsing(false)
                    .source(Some(env)),
            )
            .build()
            .map_err(|e| Error::Config {
                origin: path.display().to_string(),
                message: format!("{e} (the file must be TOML; see config/default.toml)"),
            })?;
        let table = layered.cache.into_table().map_err(|e| Error::Config {
            origin: path.display().to_string(),
            message: e.to_string(),
        })?;
        let mut c = Config::default();
        // Apply in a fixed order so that the first bad key reported is stable.
        let mut entries: Vec<_> = table.into_iter().collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        for (key, value) in entries {
            let origin = value.origin().unwrap_or("the environment").to_string();
            let text = match value.kind {
                config::ValueKind::Nil => continue,
                config::ValueKind::Table(_) | config::ValueKind::Array(_) => {
                    if KEYS.contains(&key.as_str()) {
                        return Err(Error::Config {
                            origin,
                            message: format!("`{key}` must be a single value, not a table or list"),
                        });
                    }
                    String::new()
                }
                config::ValueKind::String(s) => s,
                config::ValueKind::Boolean(b) => b.to_string(),
                config::ValueKind::I64(i) => i.to_string(),
                config::ValueKind::I128(i) => i.to_string(),
                config::ValueKind::U64(i) => i.to_string(),
                config::ValueKind::U128(i) => i.to_string(),
                config::ValueKind::Float(f) => f.to_string(),
            };
            c = c.apply(&key, &text).map_err(|e| match e {
                UnknownKey => Error::Config {
                    origin: origin.clone(),
                    message: format!(
                        "unknown key `{key}`; the keys are: {} (see config/default.toml)",
                        KEYS.join(", ")
                    ),
                },
            })??;
        }
        c.validate()?;
        Ok(c)
    }

    /// Sets one key from its text form. The outer error is an unknown key.
    fn apply(self, key: &str, text: &str) -> Result<Result<Config, Error>, UnknownKey> {
        let t = text.trim();
        Ok(match key {
            "addr" => t
                .parse::<SocketAddr>()
                .map(|a| self.addr(a))
                .map_err(|_| invalid("addr", t, ADDR_EXPECTED)),
            "sample_interval" => parse_size(t)
                .map(|b| self.sample_interval(b))
                .map_err(|_| invalid("sample_interval", t, SIZE_EXPECTED)),
            "log_interval" => parse_duration(t)
                .map(|d| self.log_interval(d))
                .map_err(|_| invalid("log_interval", t, DURATION_EXPECTED)),
            "token" => check_token(text).map(|()| self.token(text)),
            "allow_remote_control" => parse_bool(t)
                .map(|b| self.allow_remote_control(b))
                .ok_or_else(|| invalid("allow_remote_control", t, BOOL_EXPECTED)),
            "full_size_classes" => parse_bool(t)
                .map(|b| self.full_size_classes(b))
                .ok_or_else(|| invalid("full_size_classes", t, BOOL_EXPECTED)),
            "render_timeout" => match parse_duration(t) {
                Ok(d) if d >= Duration::from_secs(1) && d <= Duration::from_secs(600) => {
                    Ok(self.render_timeout(d))
                }
                _ => Err(invalid("render_timeout", t, RENDER_TIMEOUT_EXPECTED)),
            },
            "worker_threads" => match t.parse::<usize>() {
                Ok(n) if (1..=16).contains(&n) => Ok(self.worker_threads(n)),
                _ => Err(invalid("worker_threads", t, WORKERS_EXPECTED)),
            },
            "threshold" => parse_threshold(t)
                .map(|p| self.threshold(p))
                .map_err(|_| invalid("threshold", t, THRESHOLD_EXPECTED)),
            "memory_limit" => parse_memory_limit(t)
                .map(|l| self.memory_limit(l))
                .map_err(|_| invalid("memory_limit", t, MEMORY_LIMIT_EXPECTED)),
            "release_to_os" => t.parse::<ReleaseMode>().map(|m| self.release_to_os(m)),
            "collector_time_share" => match t.parse::<f64>() {
                Ok(v) if valid_share(v) => Ok(self.collector_time_share(v)),
                _ => Err(invalid(
                    "collector_time_share",
                    t,
                    crate::gc::TIME_SHARE_EXPECTED,
                )),
            },
            "near_limit_profile_dir" => {
                Ok(self.near_limit_profile_dir((!t.is_empty()).then(|| PathBuf::from(t))))
            }
            "near_limit_ratio" => match t.parse::<f64>() {
                Ok(v) if valid_share(v) => Ok(self.near_limit_ratio(v)),
                _ => Err(invalid(
                    "near_limit_ratio",
                    t,
                    crate::profile::RATIO_EXPECTED,
                )),
            },
            "near_limit_profiles_keep" => match t.parse::<usize>() {
                Ok(n) if (1..=1000).contains(&n) => Ok(self.near_limit_profiles_keep(n)),
                _ => Err(invalid(
                    "near_limit_profiles_keep",
                    t,
                    crate::profile::KEEP_EXPECTED,
                )),
            },
            "near_limit_profile_interval" => match parse_duration(t) {
                Ok(d) if d >= Duration::from_secs(1) => Ok(self.near_limit_profile_interval(d)),
                _ => Err(invalid("near_limit_profile_interval", t, INTERVAL_EXPECTED)),
            },
            "header_read_timeout" => match parse_duration(t) {
                Ok(d) if in_range(d, HEADER_READ_TIMEOUT_RANGE) => Ok(self.header_read_timeout(d)),
                _ => Err(invalid(
                    "header_read_timeout",
                    t,
                    HEADER_READ_TIMEOUT_EXPECTED,
                )),
            },
            "idle_timeout" => match parse_duration(t) {
                Ok(d) if in_range(d, IDLE_TIMEOUT_RANGE) => Ok(self.idle_timeout(d)),
                _ => Err(invalid("idle_timeout", t, IDLE_TIMEOUT_EXPECTED)),
            },
            "max_connections" => match t.parse::<usize>() {
                Ok(n) if MAX_CONNECTIONS_RANGE.contains(&n) => Ok(self.max_connections(n)),
                _ => Err(invalid("max_connections", t, MAX_CONNECTIONS_EXPECTED)),
            },
            _ => return Err(UnknownKey),
        })
    }
}

/// A key [`Config::apply`] does not know.
struct UnknownKey;

fn invalid(what: &'static str, value: impl Into<String>, expected: &'static str) -> Error {
    Error::InvalidArgument {
        what,
        value: value.into(),
        expected,
    }
}

/// Checks a bearer token; the error never repeats the token itself.
fn check_token(t: &str) -> Result<(), Error> {
    if t.len() >= MIN_TOKEN_LEN && t.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(invalid(
            "token",
            format!("<{} characters, not shown>", t.chars().count()),
            TOKEN_EXPECTED,
        ))
    }
}

/// Whether `d` is within `(min, max)`, both included.
fn in_range(d: Duration, (min, max): (Duration, Duration)) -> bool {
    d >= min && d <= max
}

/// A share in `(0, 1]` (NaN is not).
fn valid_share(v: f64) -> bool {
    v > 0.0 && v <= 1.0
}

/// Parses a collection threshold: `off` (any case) is `None`, otherwise a
/// whole number of percent (digits only: no sign, no fraction).
///
/// # Errors
/// A message saying what is wrong with `s`.
pub(crate) fn parse_threshold(s: &str) -> Result<Option<u32>, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{s:?} is not a whole number of percent or off"));
    }
    s.parse::<u32>()
        .map(Some)
        .map_err(|_| format!("{s:?} is too large"))
}

/// Parses a memory limit: `off` (any case) is `None`, otherwise a size as
/// [`parse_size`] takes it, `TiB` included, above 0.
///
/// # Errors
/// A message saying what is wrong with `s`.
pub(crate) fn parse_memory_limit(s: &str) -> Result<Option<u64>, String> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let n = match s.len().checked_sub(3).and_then(|i| s.get(i..)) {
        Some(unit) if unit.eq_ignore_ascii_case("tib") => {
            let (n, rest) = split_number(&s[..s.len() - 3])?;
            if !rest.is_empty() {
                return Err(format!("{s:?} is not a size"));
            }
            n.checked_mul(1 << 40)
                .ok_or_else(|| format!("{s:?} does not fit in 64 bits"))?
        }
        _ => parse_size(s)?,
    };
    if n == 0 {
        return Err("a memory limit of 0 would collect constantly: use off".to_string());
    }
    Ok(Some(n))
}

fn parse_bool(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Some(true),
        "false" | "no" | "off" | "0" => Some(false),
        _ => None,
    }
}

/// Splits `"512KiB"` into `(512, "KiB")`; the number must be whole and
/// non-empty, whitespace between number and unit is allowed.
fn split_number(s: &str) -> Result<(u64, &str), String> {
    let s = s.trim();
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    if end == 0 {
        return Err(format!("{s:?} does not start with a whole number"));
    }
    let n = s[..end]
        .parse::<u64>()
        .map_err(|_| format!("{:?} is too large", &s[..end]))?;
    Ok((n, s[end..].trim()))
}

/// Parses a size: a whole number and a unit `B`, `KiB`, `MiB` or `GiB`
/// (units are case-insensitive; a bare number is bytes). `"0"` is 0.
///
/// ```
/// use allocscope::server::parse_size;
/// assert_eq!(parse_size("512KiB"), Ok(512 * 1024));
/// assert_eq!(parse_size("4 MiB"), Ok(4 << 20));
/// assert!(parse_size("4MB").is_err()); // ambiguous: say MiB
/// ```
///
/// # Errors
/// A message saying what is wrong with `s`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let (n, unit) = split_number(s)?;
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "kb" | "k" | "mb" | "m" | "gb" | "g" => {
            return Err(format!(
                "unit {unit:?} is ambiguous: use KiB, MiB or GiB (powers of 1024)"
            ))
        }
        _ => return Err(format!("unknown unit {unit:?}: use B, KiB, MiB or GiB")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} does not fit in 64 bits"))
}

/// Parses a duration: a whole number and a unit `ms`, `s`, `m` or `h`.
/// `"0"` (with or without a unit) is zero, meaning off.
///
/// ```
/// use allocscope::server::parse_duration;
/// use std::time::Duration;
/// assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
/// assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
/// assert!(parse_duration("10").is_err()); // which unit?
/// ```
///
/// # Errors
/// A message saying what is wrong with `s`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (n, unit) = split_number(s)?;
    let ms_per: u64 = match unit {
        "" if n == 0 => return Ok(Duration::ZERO),
        "" => return Err(format!("{s:?} has no unit: add ms, s, m or h")),
        "ms" => 1,
        "s" => 1_000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        _ => return Err(format!("unknown unit {unit:?}: use ms, s, m or h")),
    };
    n.checked_mul(ms_per)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("{s:?} is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("1"), Ok(1));
        assert_eq!(parse_size("100B"), Ok(100));
        assert_eq!(parse_size("512KiB"), Ok(524_288));
        assert_eq!(parse_size("512kib"), Ok(524_288));
        assert_eq!(parse_size(" 2 MiB "), Ok(2 << 20));
        assert_eq!(parse_size("3GiB"), Ok(3 << 30));
        assert_eq!(parse_size("16777216GiB"), Ok(1 << 54));
        for bad in [
            "",
            "KiB",
            "-1",
            "1.5MiB",
            "4MB",
            "4K",
            "4 TiB",
            "12x",
            "99999999999999999999",
            "17179869184GiB",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse_size("4MB").unwrap_err().contains("MiB"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration(" 3 s "), Ok(Duration::from_secs(3)));
        for bad in [
            "",
            "10",
            "s",
            "1.5s",
            "-1s",
            "10 sec",
            "10S",
            "99999999999999999999h",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
    }

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn write(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("allocscope-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn defaults_match_the_documented_file() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/default.toml");
        let c = Config::load_from(Some(&p), vars(&[])).unwrap();
        assert_eq!(c, Config::default());
        // every key is documented there
        let text = std::fs::read_to_string(&p).unwrap();
        for k in KEYS {
            assert!(text.contains(&format!("{k} =")), "{k} not in default.toml");
        }
    }

    #[test]
    fn file_then_environment() {
        let p = write(
            "layer.toml",
            "addr = \"0.0.0.0:9100\"\nsample_interval = \"1MiB\"\nlog_interval = \"0\"\n\
             allow_remote_control = true\nworker_threads = 2\n",
        );
        let c = Config::load_from(
            Some(&p),
            vars(&[
                ("ALLOCSCOPE_ADDR", "127.0.0.1:0"),
                ("ALLOCSCOPE_FULL_SIZE_CLASSES", "true"),
                ("ALLOCSCOPE_TOKEN", "0123456789abcdef0123"),
                ("ALLOCSCOPE_REQUIRE_TOOLS", "1"), // not a key: ignored
                ("ALLOCSCOPE_CONFIG", "x"),        // not a key: ignored
                ("OTHER_ADDR", "nonsense"),
            ]),
        )
        .unwrap();
        assert_eq!(c.addr, "127.0.0.1:0".parse().unwrap());
        assert_eq!(c.sample_interval, 1 << 20);
        assert_eq!(c.log_interval, Duration::ZERO);
        assert!(c.allow_remote_control && c.full_size_classes);
        assert_eq!(c.worker_threads, 2);
        assert_eq!(c.token.as_deref(), Some("0123456789abcdef0123"));
        assert!(
            !format!("{c:?}").contains("0123456789abcdef"),
            "token in Debug"
        );
        // integers in TOML are bytes
        let p = write("int.toml", "sample_interval = 4096\n");
        let c = Config::load_from(Some(&p), vars(&[])).unwrap();
        assert_eq!(c.sample_interval, 4096);
    }

    fn err(file: Option<&str>, env: &[(&str, &str)]) -> String {
        let p = file.map(|t| write(&format!("bad-{}.toml", t.len()), t));
        Config::load_from(p.as_deref(), vars(env))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn bad_values_name_key_value_and_what_is_accepted() {
        let e = err(None, &[("ALLOCSCOPE_SAMPLE_INTERVAL", "4MB")]);
        assert!(
            e.contains("sample_interval") && e.contains("4MB") && e.contains("KiB"),
            "{e}"
        );
        let e = err(None, &[("ALLOCSCOPE_ADDR", "localhost")]);
        assert!(e.contains("addr") && e.contains("localhost") && e.contains("127.0.0.1:6060"));
        let e = err(None, &[("ALLOCSCOPE_LOG_INTERVAL", "10")]);
        assert!(e.contains("log_interval") && e.contains("\"10\"") && e.contains("ms, s"));
        let e = err(None, &[("ALLOCSCOPE_ALLOW_REMOTE_CONTROL", "maybe")]);
        assert!(e.contains("allow_remote_control") && e.contains("maybe") && e.contains("true"));
        let e = err(None, &[("ALLOCSCOPE_TOKEN", "short secret")]);
        assert!(e.contains("token") && e.contains("16") && !e.contains("short secret"));
        let e = err(None, &[("ALLOCSCOPE_RENDER_TIMEOUT", "0")]);
        assert!(e.contains("render_timeout"), "{e}");
        let e = err(None, &[("ALLOCSCOPE_WORKER_THREADS", "0")]);
        assert!(e.contains("worker_threads"), "{e}");
        let e = err(Some("adr = \"127.0.0.1:1\"\n"), &[]);
        assert!(
            e.contains("unknown key `adr`") && e.contains("addr, "),
            "{e}"
        );
        let e = err(Some("addr = \n"), &[]);
        assert!(e.contains("TOML"), "{e}");
        let e = err(Some("addr = [1, 2]\n"), &[]);
        assert!(e.contains("addr") && e.contains("single value"), "{e}");
        let missing = Path::new("/nonexistent/allocscope.toml");
        let e = Config::load_from(Some(missing), vars(&[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/allocscope.toml"), "{e}");
    }

    #[test]
    fn thresholds_and_limits() {
        assert_eq!(parse_threshold("100"), Ok(Some(100)));
        assert_eq!(parse_threshold("0"), Ok(Some(0)));
        assert_eq!(parse_threshold("off"), Ok(None));
        assert_eq!(parse_threshold("OFF"), Ok(None));
        assert_eq!(parse_threshold("4294967295"), Ok(Some(u32::MAX)));
        for bad in ["", "-1", "+5", "1.5", "abc", "4294967296", " 100", "10%"] {
            assert!(parse_threshold(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(parse_memory_limit("off"), Ok(None));
        assert_eq!(parse_memory_limit("2GiB"), Ok(Some(2 << 30)));
        assert_eq!(parse_memory_limit("512 MiB"), Ok(Some(512 << 20)));
        assert_eq!(parse_memory_limit("1TiB"), Ok(Some(1 << 40)));
        assert_eq!(parse_memory_limit("3 tib"), Ok(Some(3 << 40)));
        assert_eq!(parse_memory_limit("4096"), Ok(Some(4096)));
        for bad in [
            "",
            "0",
            "0GiB",
            "-1",
            "2GB",
            "2.5GiB",
            "lots",
            "TiB",
            "x TiB",
            "16777216TiB",
            "99999999999999999999",
        ] {
            assert!(parse_memory_limit(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn collector_keys() {
        let c = Config::load_from(
            None,
            vars(&[
                ("ALLOCSCOPE_THRESHOLD", "200"),
                ("ALLOCSCOPE_MEMORY_LIMIT", "2GiB"),
                ("ALLOCSCOPE_RELEASE_TO_OS", "false"),
                ("ALLOCSCOPE_COLLECTOR_TIME_SHARE", "0.25"),
                ("ALLOCSCOPE_NEAR_LIMIT_PROFILE_DIR", "/var/tmp/heaps"),
                ("ALLOCSCOPE_NEAR_LIMIT_RATIO", "0.8"),
                ("ALLOCSCOPE_NEAR_LIMIT_PROFILES_KEEP", "3"),
                ("ALLOCSCOPE_NEAR_LIMIT_PROFILE_INTERVAL", "30s"),
            ]),
        )
        .unwrap();
        assert_eq!(c.threshold, Some(200));
        assert_eq!(c.memory_limit, Some(2 << 30));
        assert_eq!(c.release_to_os, ReleaseMode::Never);
        assert_eq!(c.collector_time_share, 0.25);
        assert_eq!(
            c.near_limit_profile_dir.as_deref(),
            Some(Path::new("/var/tmp/heaps"))
        );
        assert_eq!(c.near_limit_ratio, 0.8);
        assert_eq!(c.near_limit_profiles_keep, 3);
        assert_eq!(c.near_limit_profile_interval, Duration::from_secs(30));
        let n = c.near_limit_profiles().unwrap();
        assert_eq!((n.ratio, n.keep), (0.8, 3));
        let c = Config::load_from(
            None,
            vars(&[
                ("ALLOCSCOPE_THRESHOLD", "off"),
                ("ALLOCSCOPE_MEMORY_LIMIT", "off"),
                ("ALLOCSCOPE_RELEASE_TO_OS", "always"),
                ("ALLOCSCOPE_NEAR_LIMIT_PROFILE_DIR", ""),
            ]),
        )
        .unwrap();
        assert_eq!(c.threshold, None);
        assert_eq!(c.memory_limit, None);
        assert_eq!(c.release_to_os, ReleaseMode::Always);
        assert!(c.near_limit_profiles().is_none());
        // TOML types: integers, floats, booleans
        let p = write(
            "gc.toml",
            "threshold = 50\nmemory_limit = \"1TiB\"\nrelease_to_os = true\n\
             collector_time_share = 0.5\nnear_limit_ratio = 1\n",
        );
        let c = Config::load_from(Some(&p), vars(&[])).unwrap();
        assert_eq!(c.threshold, Some(50));
        assert_eq!(c.memory_limit, Some(1 << 40));
        assert_eq!(c.release_to_os, ReleaseMode::Auto);
        assert_eq!(c.collector_time_share, 0.5);
        assert_eq!(c.near_limit_ratio, 1.0);
        for (k, v, needle) in [
            ("ALLOCSCOPE_THRESHOLD", "-1", "off"),
            ("ALLOCSCOPE_THRESHOLD", "lots", "percent"),
            ("ALLOCSCOPE_THRESHOLD", "99999999999", "percent"),
            ("ALLOCSCOPE_MEMORY_LIMIT", "2GB", "GiB"),
            ("ALLOCSCOPE_MEMORY_LIMIT", "0", "off"),
            ("ALLOCSCOPE_RELEASE_TO_OS", "maybe", "always"),
            ("ALLOCSCOPE_COLLECTOR_TIME_SHARE", "0", "at most 1"),
            ("ALLOCSCOPE_COLLECTOR_TIME_SHARE", "10%", "0.1"),
            ("ALLOCSCOPE_COLLECTOR_TIME_SHARE", "NaN", "0.1"),
            ("ALLOCSCOPE_NEAR_LIMIT_RATIO", "1.5", "0.9"),
            ("ALLOCSCOPE_NEAR_LIMIT_PROFILES_KEEP", "0", "1 to 1000"),
            ("ALLOCSCOPE_NEAR_LIMIT_PROFILE_INTERVAL", "10ms", "1s"),
        ] {
            let e = err(None, &[(k, v)]);
            let key = k.strip_prefix("ALLOCSCOPE_").unwrap().to_ascii_lowercase();
            assert!(
                e.contains(&key) && e.contains(v) && e.contains(needle),
                "{k}={v}: {e}"
            );
        }
    }

    #[test]
    fn connection_keys() {
        let c = Config::load_from(
            None,
            vars(&[
                ("ALLOCSCOPE_HEADER_READ_TIMEOUT", "2s"),
                ("ALLOCSCOPE_IDLE_TIMEOUT", "5m"),
                ("ALLOCSCOPE_MAX_CONNECTIONS", "32"),
            ]),
        )
        .unwrap();
        assert_eq!(c.header_read_timeout, Duration::from_secs(2));
        assert_eq!(c.idle_timeout, Duration::from_secs(300));
        assert_eq!(c.max_connections, 32);
        // the edges are accepted
        let p = write(
            "conn.toml",
            "header_read_timeout = \"5m\"\nidle_timeout = \"1h\"\nmax_connections = 65536\n",
        );
        let c = Config::load_from(Some(&p), vars(&[])).unwrap();
        assert_eq!(c.header_read_timeout, Duration::from_secs(300));
        assert_eq!(c.idle_timeout, Duration::from_secs(3600));
        assert_eq!(c.max_connections, 65536);
        let c = Config::load_from(
            None,
            vars(&[
                ("ALLOCSCOPE_HEADER_READ_TIMEOUT", "1000ms"),
                ("ALLOCSCOPE_IDLE_TIMEOUT", "1s"),
                ("ALLOCSCOPE_MAX_CONNECTIONS", "1"),
            ]),
        )
        .unwrap();
        assert_eq!(c.header_read_timeout, Duration::from_secs(1));
        assert_eq!(c.idle_timeout, Duration::from_secs(1));
        assert_eq!(c.max_connections, 1);
        for (k, v, needle) in [
            ("ALLOCSCOPE_HEADER_READ_TIMEOUT", "0", "1s to 5m"),
            ("ALLOCSCOPE_HEADER_READ_TIMEOUT", "999ms", "1s to 5m"),
            ("ALLOCSCOPE_HEADER_READ_TIMEOUT", "301s", "1s to 5m"),
            ("ALLOCSCOPE_HEADER_READ_TIMEOUT", "10", "1s to 5m"),
            ("ALLOCSCOPE_HEADER_READ_TIMEOUT", "soon", "1s to 5m"),
            ("ALLOCSCOPE_IDLE_TIMEOUT", "0", "1s to 1h"),
            ("ALLOCSCOPE_IDLE_TIMEOUT", "2h", "1s to 1h"),
            ("ALLOCSCOPE_IDLE_TIMEOUT", "-1s", "1s to 1h"),
            ("ALLOCSCOPE_MAX_CONNECTIONS", "0", "1 to 65536"),
            ("ALLOCSCOPE_MAX_CONNECTIONS", "65537", "1 to 65536"),
            ("ALLOCSCOPE_MAX_CONNECTIONS", "-5", "1 to 65536"),
            ("ALLOCSCOPE_MAX_CONNECTIONS", "lots", "1 to 65536"),
        ] {
            let e = err(None, &[(k, v)]);
            let key = k.strip_prefix("ALLOCSCOPE_").unwrap().to_ascii_lowercase();
            assert!(
                e.contains(&key) && e.contains(v) && e.contains(needle),
                "{k}={v}: {e}"
            );
        }
        // a typed error, from the file as from the environment
        let p = write("conn-bad.toml", "max_connections = 0\n");
        let e = Config::load_from(Some(&p), vars(&[])).unwrap_err();
        assert!(
            matches!(
                e,
                Error::InvalidArgument {
                    what: "max_connections",
                    ..
                }
            ),
            "{e:?}"
        );
    }

    #[test]
    fn validate_catches_setter_values() {
        assert!(Config::default().validate().is_ok());
        assert!(Config::default().token("x").validate().is_err());
        assert!(Config::default().worker_threads(0).validate().is_err());
        assert!(Config::default()
            .render_timeout(Duration::ZERO)
            .validate()
            .is_err());
        for bad in [
            Config::default().collector_time_share(0.0),
            Config::default().collector_time_share(f64::NAN),
            Config::default().near_limit_ratio(2.0),
            Config::default().near_limit_profiles_keep(0),
            Config::default().near_limit_profile_interval(Duration::ZERO),
            Config::default().memory_limit(Some(0)),
            Config::default().header_read_timeout(Duration::ZERO),
            Config::default().header_read_timeout(Duration::from_millis(999)),
            Config::default().header_read_timeout(Duration::from_secs(301)),
            Config::default().idle_timeout(Duration::ZERO),
            Config::default().idle_timeout(Duration::from_secs(3601)),
            Config::default().max_connections(0),
            Config::default().max_connections(65537),
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        for (bad, key) in [
            (
                Config::default().header_read_timeout(Duration::ZERO),
                "header_read_timeout",
            ),
            (
                Config::default().idle_timeout(Duration::from_secs(7200)),
                "idle_timeout",
            ),
            (Config::default().max_connections(0), "max_connections"),
        ] {
            match bad.validate() {
                Err(Error::InvalidArgument { what, .. }) => assert_eq!(what, key),
                other => panic!("{key}: {other:?}"),
            }
        }
        assert!(Config::default()
            .header_read_timeout(Duration::from_secs(1))
            .idle_timeout(Duration::from_secs(3600))
            .max_connections(1)
            .validate()
            .is_ok());
    }
}
