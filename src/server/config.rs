//! The exporter's configuration: [`Config`], its loading from a file and
//! the environment, and the size and duration parsers.
//!
//! Every key is declared once, in the `config_keys!` invocation below: its
//! name, type, default, parser, the check of accepted values, the text that
//! says what is accepted, and its doc line. The struct, its `Default`, the
//! builder setters, [`KEYS`], loading, [`Config::validate`], the error texts
//! and `Debug` all follow from that one declaration, and a test checks that
//! `config/default.toml` documents exactly those keys, with those doc lines
//! and defaults. Keys that the library's own setters also take
//! (`memory_limit`, `collector_time_share`, `near_limit_*`) are checked by
//! the functions those setters use.
//!
//! Never panics on bad input: every bad value is an [`Error`] naming the
//! key, the value and what is accepted.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::gc::{self, MemoryLimit, ReleaseMode};
use crate::profile;
use crate::Error;

/// The file read by [`Config::load`] when `ALLOCSCOPE_CONFIG` is not set
/// (relative to the working directory; optional).
pub const DEFAULT_CONFIG_FILE: &str = "config/allocscope.toml";

/// Shortest accepted bearer token.
pub const MIN_TOKEN_LEN: usize = 16;

const SIZE_EXPECTED: &str =
    "a size: a whole number with a unit B, KiB, MiB or GiB (e.g. 512KiB, 4MiB), or 0 for off";
const DURATION_EXPECTED: &str =
    "a duration: a whole number with a unit ms, s, m or h (e.g. 250ms, 10s, 5m), or 0 for off";
const ADDR_EXPECTED: &str =
    "a socket address IP:PORT such as 127.0.0.1:6060, 0.0.0.0:9100 or [::1]:6060";
const BOOL_EXPECTED: &str = "true or false";
const TOKEN_EXPECTED: &str =
    "at least 16 visible ASCII characters without spaces (e.g. the output of `openssl rand -hex 16`)";
/// What `threshold` (and `POST /gc?set=`) accepts.
pub(crate) const THRESHOLD_EXPECTED: &str =
    "a whole number of percent from 0 to 4294967295 (e.g. 100, 200), or off";
pub(crate) use crate::gc::MEMORY_LIMIT_EXPECTED;

/// Declares every configuration key once; see the module docs.
///
/// Each entry: doc lines (the first is the comment line of
/// `config/default.toml`, the rest go to rustdoc only), `name: Type =
/// default`, then `parse` (text to value, `None` if malformed), `valid`
/// (whether a value is accepted, also for values set through the builder),
/// `expected` (what is accepted, for the error), and optionally `set |v: T|
/// expr` when the builder setter takes another type than the field.
macro_rules! config_keys {
    ($(
        #[doc = $line:literal]
        $(#[doc = $more:literal])*
        $name:ident: $ty:ty = $default:expr;
        parse $parse:expr, valid $valid:expr, expected $expected:expr;
        $(set |$v:ident: $arg:ty| $conv:expr;)?
    )+) => {
        /// The exporter's configuration.
        ///
        /// Build one with [`Config::load`] (defaults, then a file, then the
        /// environment) or from [`Config::default`] with the builder-style
        /// setters, then check it with [`Config::validate`] ([`super::start`]
        /// does):
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
            $(
                #[doc = $line]
                $(#[doc = $more])*
                pub $name: $ty,
            )+
        }

        impl Default for Config {
            fn default() -> Self {
                Config { $($name: $default,)+ }
            }
        }

        impl fmt::Debug for Config {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct("Config")
                    $(.field(stringify!($name), &format_args!("{}", Show::show(&self.$name))))+
                    .finish()
            }
        }

        /// Every key a configuration file or `ALLOCSCOPE_<KEY>` may set.
        pub const KEYS: &[&str] = &[$(stringify!($name)),+];

        /// Each key's doc line, as `config/default.toml` must carry it.
        #[cfg(test)]
        const DOC_LINES: &[(&str, &str)] = &[$((stringify!($name), $line)),+];

        impl Config {
            $(config_keys!(@setter $name, $ty $(, $v, $arg, $conv)?);)+

            /// Checks every value against what its key accepts: values set
            /// with the builder setters are not checked until now.
            /// [`super::start`] calls it.
            ///
            /// # Errors
            /// [`Error::InvalidArgument`] naming the first key (in the order
            /// of [`KEYS`]) whose value is not accepted.
            pub fn validate(&self) -> Result<(), Error> {
                $(
                    if !($valid)(&self.$name) {
                        return Err(invalid(stringify!($name), Show::show(&self.$name), $expected));
                    }
                )+
                Ok(())
            }

            /// Sets one key from its text form. The outer error is an
            /// unknown key.
            fn apply(self, key: &str, text: &str) -> Result<Result<Config, Error>, UnknownKey> {
                match key {
                    $(
                        stringify!($name) => Ok(match ($parse)(text) {
                            Some(v) if ($valid)(&v) => Ok(Config { $name: v, ..self }),
                            _ => Err(invalid(
                                stringify!($name),
                                <$ty as Show>::show_input(text),
                                $expected,
                            )),
                        }),
                    )+
                    _ => Err(UnknownKey),
                }
            }
        }
    };
    (@setter $name:ident, $ty:ty) => {
        #[doc = concat!("Sets [`Config::", stringify!($name), "`].")]
        #[must_use]
        pub fn $name(mut self, value: $ty) -> Self {
            self.$name = value;
            self
        }
    };
    (@setter $name:ident, $ty:ty, $v:ident, $arg:ty, $conv:expr) => {
        #[doc = concat!("Sets [`Config::", stringify!($name), "`].")]
        #[must_use]
        pub fn $name(mut self, $v: $arg) -> Self {
            self.$name = $conv;
            self
        }
    };
}

config_keys! {
    /// Address the exporter listens on (127.0.0.1:6060 is where Go's pprof lives; "0.0.0.0:9100" serves remotely as the Go seed did).
    addr: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 6060));
    parse |t: &str| t.trim().parse().ok(), valid any, expected ADDR_EXPECTED;

    /// Mean bytes allocated between heap samples, as Go's MemProfileRate ("0" = sampling off, "1B" = every allocation).
    ///
    /// Applied by [`super::start`] and [`super::apply`] through
    /// [`crate::sampling::set_interval`].
    sample_interval: u64 = crate::sampling::DEFAULT_INTERVAL;
    parse |t: &str| parse_size(t).ok(), valid any, expected SIZE_EXPECTED;

    /// How often one info line (heap, rss, allocs/s, collections, threads) is logged ("0" = never).
    log_interval: Duration = Duration::from_secs(10);
    parse |t: &str| parse_duration(t).ok(), valid any, expected DURATION_EXPECTED;

    /// Bearer token required by every endpoint except /metrics; unset by default, at least 16 characters when set.
    ///
    /// Never shown: `Debug` and error messages give its length only.
    token: Option<String> = None;
    parse |t: &str| Some(Some(t.to_string())), valid valid_token, expected TOKEN_EXPECTED;
    set |token: impl Into<String>| Some(token.into());

    /// Serve profile and control endpoints on a non-loopback addr without a token (otherwise they answer 403).
    allow_remote_control: bool = false;
    parse parse_bool, valid any, expected BOOL_EXPECTED;

    /// Export every size class in the size histogram and per-class live bytes, instead of power-of-two buckets (about 128 -> 288 series on Linux, process metrics included, plus 4 per allocation scope and 4 per thread group).
    full_size_classes: bool = false;
    parse parse_bool, valid any, expected BOOL_EXPECTED;

    /// Longest a heap/CPU profile or flamegraph render may take, waiting for the previous one included (1s..10m).
    ///
    /// A request that waits longer gets 503.
    render_timeout: Duration = Duration::from_secs(30);
    parse |t: &str| parse_duration(t).ok(),
    valid within(Duration::from_secs(1), Duration::from_secs(600)),
    expected "a duration from 1s to 10m, such as 30s";

    /// Async worker threads of the exporter's own tokio runtime (1..16).
    worker_threads: usize = 1;
    parse |t: &str| t.trim().parse().ok(), valid within(1, 16),
    expected "a whole number from 1 to 16";

    /// Close a connection that has not sent complete request headers this long after connecting (or after the first byte of a later request); a request body must also arrive this soon after its headers, else 408 (1s..5m).
    header_read_timeout: Duration = Duration::from_secs(10);
    parse |t: &str| parse_duration(t).ok(),
    valid within(Duration::from_secs(1), Duration::from_secs(300)),
    expected "a duration from 1s to 5m, such as 10s";

    /// Close a keep-alive connection that has had no request in flight this long (1s..1h).
    idle_timeout: Duration = Duration::from_secs(60);
    parse |t: &str| parse_duration(t).ok(),
    valid within(Duration::from_secs(1), Duration::from_secs(3600)),
    expected "a duration from 1s to 1h, such as 60s";

    /// Most connections open at once; further clients wait in the listen backlog until one closes (1..65536).
    max_connections: usize = 256;
    parse |t: &str| t.trim().parse().ok(), valid within(1, 65536),
    expected "a whole number from 1 to 65536";

    /// Collection threshold in percent, as Go's GOGC: a cycle runs when live bytes pass max(4MiB x threshold/100, live after the last cycle x (1 + threshold/100)) ("off" = never).
    ///
    /// See [`crate::gc::set_threshold`].
    threshold: Option<u32> = Some(gc::DEFAULT_THRESHOLD);
    parse |t: &str| parse_threshold(t.trim()).ok(), valid any, expected THRESHOLD_EXPECTED;

    /// Soft limit on live heap bytes, as Go's GOMEMLIMIT: a cycle runs when live bytes pass it, even with the threshold off ("off", a size with B, KiB, MiB, GiB or TiB, or "auto": memory_limit_ratio of the container's cgroup memory limit, re-read every 30s).
    ///
    /// See [`crate::gc::set_memory_limit`] and
    /// [`crate::gc::set_memory_limit_auto`].
    memory_limit: MemoryLimit = MemoryLimit::Off;
    parse parse_limit, valid gc::valid_limit, expected MEMORY_LIMIT_EXPECTED;
    set |limit: impl Into<MemoryLimit>| limit.into();

    /// Share of the container's memory limit used as the soft limit when memory_limit = "auto" (0 < ratio <= 1).
    memory_limit_ratio: f64 = gc::DEFAULT_AUTO_RATIO;
    parse |t: &str| t.trim().parse().ok(), valid gc::valid_auto_ratio,
    expected gc::AUTO_RATIO_EXPECTED;

    /// Pause cycles on the memory limit when they have not brought live bytes under it for this long, against a collection death spiral ("0" = never pause).
    ///
    /// See [`crate::gc::set_limit_backoff`].
    memory_limit_backoff_after: Duration = gc::LimitBackoff::default().after;
    parse |t: &str| parse_duration(t).ok(),
    valid |d: &Duration| d.is_zero() || gc::valid_backoff_duration(d),
    expected "0 (never pause), or a duration of at least 10ms, such as 10s";

    /// How long cycles on the memory limit pause then (the threshold still applies).
    memory_limit_backoff_pause: Duration = gc::LimitBackoff::default().pause;
    parse |t: &str| parse_duration(t).ok(), valid gc::valid_backoff_duration,
    expected gc::BACKOFF_EXPECTED;

    /// Return free memory to the OS after the reclaimers: true (malloc_trim(0) when the allocator is glibc's malloc), "always", or false.
    ///
    /// See [`crate::gc::set_release_mode`].
    release_to_os: ReleaseMode = ReleaseMode::Auto;
    parse |t: &str| t.trim().parse().ok(), valid any, expected ReleaseMode::EXPECTED;

    /// Share of wall time automatic cycles may take (0 < share <= 1), as Go's GC CPU limiter; skipped triggers are counted.
    ///
    /// See [`crate::gc::set_time_share`].
    collector_time_share: f64 = gc::DEFAULT_TIME_SHARE;
    parse |t: &str| t.trim().parse().ok(), valid gc::valid_time_share,
    expected gc::TIME_SHARE_EXPECTED;

    /// Directory where the heap profile (pprof) is written when live bytes near the memory limit; unset = never.
    ///
    /// See [`crate::profile::set_near_limit_profiles`].
    near_limit_profile_dir: Option<PathBuf> = None;
    parse |t: &str| Some((!t.trim().is_empty()).then(|| PathBuf::from(t.trim()))),
    valid any, expected "a directory path";

    /// Share of memory_limit at which the near-limit profile is written (0 < ratio <= 1).
    near_limit_ratio: f64 = 0.9;
    parse |t: &str| t.trim().parse().ok(), valid profile::valid_ratio,
    expected profile::RATIO_EXPECTED;

    /// How many of the newest near-limit profiles are kept in the directory (1..1000).
    near_limit_profiles_keep: usize = 5;
    parse |t: &str| t.trim().parse().ok(), valid profile::valid_keep,
    expected profile::KEEP_EXPECTED;

    /// At most one near-limit profile per this interval (at least 100ms).
    near_limit_profile_interval: Duration = Duration::from_secs(60);
    parse |t: &str| parse_duration(t).ok(), valid profile::valid_interval,
    expected profile::INTERVAL_EXPECTED;

    /// A freed sampled block that lived less than this is temporary: /debug/pprof/heap.svg?sample=temporary and the landing page's temporary allocations (1ms..1h).
    ///
    /// See [`crate::profile::set_temporary_lifetime`].
    temporary_lifetime: Duration = Duration::from_millis(1);
    parse |t: &str| parse_duration(t).ok(), valid profile::valid_temporary_lifetime,
    expected profile::TEMPORARY_LIFETIME_EXPECTED;

    /// How often the exporter records each stack's in-use bytes for the leak suspects of /debug/leaks ("0" = never; 1s..24h).
    ///
    /// See [`crate::profile::LeakTracker`] and docs/profiles.md, "Leak
    /// suspects".
    leak_snapshot_interval: Duration = Duration::from_secs(60);
    parse |t: &str| parse_duration(t).ok(),
    valid |d: &Duration| d.is_zero() || within(Duration::from_secs(1), Duration::from_secs(86_400))(d),
    expected "0 (never), or a duration from 1s to 24h, such as 60s";

    /// How many leak snapshots are kept: the trend of each stack is judged over them (5..1440).
    leak_snapshots: usize = 60;
    parse |t: &str| t.trim().parse().ok(), valid within(crate::profile::MIN_LEAK_SNAPSHOTS, 1440),
    expected "a whole number from 5 to 1440";

    /// Most allocation scope names told apart (allocscope::scope); new names past it are counted under "other" (1..509).
    ///
    /// Applied by [`super::start`] and [`super::apply`] through
    /// [`crate::scope::set_max_scopes`]; names already in use stay.
    max_scopes: usize = crate::scope::DEFAULT_MAX_SCOPES;
    parse |t: &str| t.trim().parse().ok(), valid within(1, crate::scope::MAX_SCOPES_LIMIT),
    expected "a whole number of scope names from 1 to 509";
}

impl Config {
    /// The limit backoff this configuration asks for.
    pub(crate) fn limit_backoff(&self) -> Option<gc::LimitBackoff> {
        (!self.memory_limit_backoff_after.is_zero()).then(|| {
            gc::LimitBackoff::new(
                self.memory_limit_backoff_after,
                self.memory_limit_backoff_pause,
            )
        })
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

/// Whether a bearer token is acceptable (long enough, visible ASCII).
fn valid_token(t: &Option<String>) -> bool {
    t.as_ref()
        .is_none_or(|t| t.len() >= MIN_TOKEN_LEN && t.bytes().all(|b| b.is_ascii_graphic()))
}

/// Every value is accepted.
fn any<T>(_: &T) -> bool {
    true
}

/// Values from `min` to `max`, both included.
fn within<T: PartialOrd>(min: T, max: T) -> impl Fn(&T) -> bool {
    move |v| *v >= min && *v <= max
}

/// A value as `Debug` and error messages show it.
trait Show {
    /// The value.
    fn show(&self) -> String;
    /// A value's text as given, for an error.
    fn show_input(text: &str) -> String {
        text.trim().to_string()
    }
}

macro_rules! show_with_display {
    ($($t:ty),*) => {$(
        impl Show for $t {
            fn show(&self) -> String {
                self.to_string()
            }
        }
    )*};
}
show_with_display!(SocketAddr, u64, usize, f64, bool, ReleaseMode);

impl Show for MemoryLimit {
    fn show(&self) -> String {
        match self {
            MemoryLimit::Off => "off".to_string(),
            MemoryLimit::Bytes(b) => b.to_string(),
            MemoryLimit::Auto => "auto".to_string(),
        }
    }
}

impl Show for Duration {
    fn show(&self) -> String {
        format!("{self:?}")
    }
}

impl<T: Show> Show for Option<T> {
    fn show(&self) -> String {
        self.as_ref().map_or_else(|| "off".to_string(), Show::show)
    }
    fn show_input(text: &str) -> String {
        T::show_input(text)
    }
}

impl Show for u32 {
    fn show(&self) -> String {
        self.to_string()
    }
}

impl Show for PathBuf {
    fn show(&self) -> String {
        self.display().to_string()
    }
}

/// The only text-valued key is the token, a secret: it is never shown.
impl Show for String {
    fn show(&self) -> String {
        Self::show_input(self)
    }
    fn show_input(text: &str) -> String {
        format!("<{} characters, not shown>", text.chars().count())
    }
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

/// Parses a memory limit as the configuration and `POST /gc` take it:
/// `auto` (any case), or as [`parse_memory_limit`].
pub(crate) fn parse_limit(s: &str) -> Option<MemoryLimit> {
    if s.trim().eq_ignore_ascii_case("auto") {
        return Some(MemoryLimit::Auto);
    }
    parse_memory_limit(s).ok().map(MemoryLimit::from)
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
        // every key is documented there, once, in the declared order, under
        // its declared doc line (commented out where unset by default)
        let text = std::fs::read_to_string(&p).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let mut documented = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            let assignment = line.strip_prefix("# ").unwrap_or(line);
            let Some((key, _)) = assignment.split_once(" = ") else {
                continue;
            };
            if !key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
                continue;
            }
            let (_, doc) = DOC_LINES
                .iter()
                .find(|(k, _)| *k == key)
                .unwrap_or_else(|| panic!("default.toml documents `{key}`, which is no key"));
            assert_eq!(
                lines[i.checked_sub(1).unwrap()],
                format!("#{doc}"),
                "the comment above `{key}` in default.toml is not its declared doc line"
            );
            documented.push(key);
        }
        assert_eq!(
            documented, KEYS,
            "default.toml's keys differ from the declared keys"
        );
    }

    #[test]
    fn debug_shows_every_key_but_never_the_token() {
        let c = Config::default().token("0123456789abcdef-secret");
        let d = format!("{c:?}");
        for k in KEYS {
            assert!(d.contains(&format!("{k}: ")), "{k} missing from {d}");
        }
        assert!(!d.contains("secret") && d.contains("not shown"), "{d}");
        // an invalid token is not shown in the error either
        let e = Config::default()
            .token("short secret")
            .validate()
            .unwrap_err();
        assert!(!e.to_string().contains("secret"), "{e}");
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
    fn leak_keys() {
        let c = Config::load_from(
            None,
            vars(&[
                ("ALLOCSCOPE_LEAK_SNAPSHOT_INTERVAL", "1s"),
                ("ALLOCSCOPE_LEAK_SNAPSHOTS", "10"),
            ]),
        )
        .unwrap();
        assert_eq!(c.leak_snapshot_interval, Duration::from_secs(1));
        assert_eq!(c.leak_snapshots, 10);
        let c =
            Config::load_from(None, vars(&[("ALLOCSCOPE_LEAK_SNAPSHOT_INTERVAL", "0")])).unwrap();
        assert!(c.leak_snapshot_interval.is_zero());
        for (k, v, needle) in [
            ("ALLOCSCOPE_LEAK_SNAPSHOT_INTERVAL", "500ms", "1s to 24h"),
            ("ALLOCSCOPE_LEAK_SNAPSHOT_INTERVAL", "25h", "1s to 24h"),
            ("ALLOCSCOPE_LEAK_SNAPSHOT_INTERVAL", "60", "1s to 24h"),
            ("ALLOCSCOPE_LEAK_SNAPSHOTS", "4", "5 to 1440"),
            ("ALLOCSCOPE_LEAK_SNAPSHOTS", "1441", "5 to 1440"),
            ("ALLOCSCOPE_LEAK_SNAPSHOTS", "many", "5 to 1440"),
        ] {
            let e = err(None, &[(k, v)]);
            let key = k.strip_prefix("ALLOCSCOPE_").unwrap().to_ascii_lowercase();
            assert!(
                e.contains(&key) && e.contains(v) && e.contains(needle),
                "{k}={v}: {e}"
            );
        }
        assert!(Config::default().leak_snapshots(0).validate().is_err());
    }

    #[test]
    fn max_scopes_key() {
        assert_eq!(Config::default().max_scopes, 64);
        assert_eq!(
            crate::scope::MAX_SCOPES_LIMIT,
            509,
            "the key's error text names the limit"
        );
        let c = Config::load_from(None, vars(&[("ALLOCSCOPE_MAX_SCOPES", "16")])).unwrap();
        assert_eq!(c.max_scopes, 16);
        let p = write("scopes.toml", "max_scopes = 509\n");
        assert_eq!(
            Config::load_from(Some(&p), vars(&[])).unwrap().max_scopes,
            509
        );
        for v in ["0", "510", "-1", "lots", "1.5", "99999999999999999999999"] {
            let e = err(None, &[("ALLOCSCOPE_MAX_SCOPES", v)]);
            assert!(
                e.contains("max_scopes") && e.contains(v) && e.contains("1 to 509"),
                "{v}: {e}"
            );
        }
        for bad in [0, 510, usize::MAX] {
            match Config::default().max_scopes(bad).validate() {
                Err(Error::InvalidArgument { what, .. }) => assert_eq!(what, "max_scopes"),
                other => panic!("{bad}: {other:?}"),
            }
        }
        assert!(Config::default()
            .leak_snapshot_interval(Duration::from_millis(10))
            .validate()
            .is_err());
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
