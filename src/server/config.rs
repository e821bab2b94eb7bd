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
#[derive(Clone, PartialEq, Eq)]
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

    /// Checks the values the setters cannot check (the token, the render
    /// timeout, the worker count). [`super::start`] calls it.
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
    fn validate_catches_setter_values() {
        assert!(Config::default().validate().is_ok());
        assert!(Config::default().token("x").validate().is_err());
        assert!(Config::default().worker_threads(0).validate().is_err());
        assert!(Config::default()
            .render_timeout(Duration::ZERO)
            .validate()
            .is_err());
    }
}
