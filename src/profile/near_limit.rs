//! Heap profiles written near the memory limit (feature `profile`), so the
//! evidence of what filled the heap survives an OOM kill.
//!
//! Owns the setting ([`NearLimitProfiles`]), the rate limit and the files.
//! The collection layer does not know this module: setting a profile
//! directory registers it as the collector's limit watcher
//! (`crate::gc::set_limit_watcher`). The collector thread only compares live
//! bytes with the threshold here
//! (two atomic loads when off or below it); capturing, symbolising and
//! writing happen on a short-lived thread of their own
//! (`allocscope-near-limit`), one at a time, so cycles are not delayed.
//!
//! Files are `heap-near-limit-<unix ms, 13 digits>-<pid>-<n>.pb.gz`
//! (gzipped pprof, as `/debug/pprof/heap`), written to a hidden temporary
//! file, synced, then renamed into place: a reader never sees a partial
//! profile. After each write only the newest `keep` such files in the
//! directory are kept (by name, i.e. by time, whichever process wrote
//! them).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::*};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::Error;

const PREFIX: &str = "heap-near-limit-";
const SUFFIX: &str = ".pb.gz";

/// Where and when to write heap profiles near the memory limit.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct NearLimitProfiles {
    /// The directory (created if missing).
    pub dir: PathBuf,
    /// Write when live bytes reach this share of the memory limit, above 0
    /// and at most 1. Default 0.9.
    pub ratio: f64,
    /// How many of the newest profiles to keep in `dir`, at least 1.
    /// Default 5.
    pub keep: usize,
    /// At most one profile per this interval. Default 60 s.
    pub min_interval: Duration,
}

impl NearLimitProfiles {
    /// Profiles in `dir` with the defaults: at 90% of the limit, the newest
    /// 5 kept, at most one a minute.
    pub fn new(dir: impl Into<PathBuf>) -> NearLimitProfiles {
        NearLimitProfiles {
            dir: dir.into(),
            ratio: 0.9,
            keep: 5,
            min_interval: Duration::from_secs(60),
        }
    }
}

crate::macros::setters!(NearLimitProfiles {
    /// Sets [`NearLimitProfiles::ratio`].
    ratio(ratio: f64);
    /// Sets [`NearLimitProfiles::keep`].
    keep(keep: usize);
    /// Sets [`NearLimitProfiles::min_interval`].
    min_interval(every: Duration);
});

/// Whether [`NearLimitProfiles::ratio`] (`near_limit_ratio`) is accepted.
pub(crate) fn valid_ratio(ratio: &f64) -> bool {
    *ratio > 0.0 && *ratio <= 1.0
}

/// Whether [`NearLimitProfiles::keep`] (`near_limit_profiles_keep`) is
/// accepted.
pub(crate) fn valid_keep(keep: &usize) -> bool {
    (1..=1000).contains(keep)
}

/// Whether [`NearLimitProfiles::min_interval`]
/// (`near_limit_profile_interval`) is accepted.
pub(crate) fn valid_interval(every: &Duration) -> bool {
    *every >= Duration::from_millis(100)
}

/// What `near_limit_profile_interval` accepts.
pub(crate) const INTERVAL_EXPECTED: &str = "a duration of at least 100ms, such as 1s or 1m";

/// What `near_limit_ratio` accepts.
pub(crate) const RATIO_EXPECTED: &str =
    "a share of the memory limit above 0 and at most 1, such as 0.9";
/// What `near_limit_profiles_keep` accepts.
pub(crate) const KEEP_EXPECTED: &str = "a whole number of files from 1 to 1000";

static CONFIG: Mutex<Option<NearLimitProfiles>> = Mutex::new(None);
/// Fast path of the check: whether a setting exists, and its ratio's bits.
static ENABLED: AtomicBool = AtomicBool::new(false);
static RATIO_BITS: AtomicU64 = AtomicU64::new(0);
static LAST_WRITE: Mutex<Option<Instant>> = Mutex::new(None);
static WRITING: AtomicBool = AtomicBool::new(false);
static WRITTEN: AtomicU64 = AtomicU64::new(0);
static SEQ: AtomicU64 = AtomicU64::new(0);

/// Writes the heap profile to `dir` when live bytes near the memory limit
/// (`None` = never, the default); returns the previous setting. Only
/// active while a memory limit is set ([`crate::gc::set_memory_limit`]).
///
/// # Errors
/// [`Error::InvalidArgument`] for a ratio outside `(0, 1]`, `keep` outside
/// `1..=1000` or an interval under 100 ms (as the configuration refuses them);
/// nothing is changed then.
pub fn set_near_limit_profiles(
    p: Option<NearLimitProfiles>,
) -> Result<Option<NearLimitProfiles>, Error> {
    if let Some(p) = &p {
        let invalid = |what, value: String, expected| {
            Err(Error::InvalidArgument {
                what,
                value,
                expected,
            })
        };
        if !valid_ratio(&p.ratio) {
            return invalid("near_limit_ratio", p.ratio.to_string(), RATIO_EXPECTED);
        }
        if !valid_keep(&p.keep) {
            return invalid(
                "near_limit_profiles_keep",
                p.keep.to_string(),
                KEEP_EXPECTED,
            );
        }
        if !valid_interval(&p.min_interval) {
            return invalid(
                "near_limit_profile_interval",
                format!("{:?}", p.min_interval),
                INTERVAL_EXPECTED,
            );
        }
    }
    crate::gc::set_limit_watcher(crate::gc::LimitWatcher {
        level,
        check,
        count: written,
    });
    let mut c = CONFIG.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(p) = &p {
        RATIO_BITS.store(p.ratio.to_bits(), Relaxed);
    }
    ENABLED.store(p.is_some(), Relaxed);
    Ok(std::mem::replace(&mut *c, p))
}

/// The current setting.
pub fn near_limit_profiles() -> Option<NearLimitProfiles> {
    CONFIG
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
}

/// Profiles written so far.
fn written() -> u64 {
    WRITTEN.load(Relaxed)
}

/// The live bytes at which a profile is written under `limit`, if
/// near-limit profiles are on.
fn level(limit: u64) -> Option<u64> {
    ENABLED.load(Relaxed).then(|| {
        let ratio = f64::from_bits(RATIO_BITS.load(Relaxed));
        (ratio * limit as f64) as u64
    })
}

/// Called by the collector thread after each check of live bytes while a
/// memory limit is set.
fn check(live: u64, limit: u64) {
    if level(limit).is_none_or(|l| live < l) {
        return;
    }
    let Some(cfg) = near_limit_profiles() else {
        return;
    };
    {
        let mut last = LAST_WRITE.lock().unwrap_or_else(PoisonError::into_inner);
        if last.is_some_and(|t| t.elapsed() < cfg.min_interval) {
            return;
        }
        if WRITING.swap(true, Acquire) {
            return;
        }
        *last = Some(Instant::now());
    }
    let spawned = std::thread::Builder::new()
        .name("allocscope-near-limit".into())
        .spawn(move || {
            match write(&cfg.dir, cfg.keep) {
                Ok(path) => {
                    WRITTEN.fetch_add(1, Relaxed);
                    log::warn!(
                        target: "allocscope",
                        "live heap at {live} bytes, {:.0}% of the memory limit ({limit} bytes): \
                         heap profile written to {}",
                        live as f64 * 100.0 / limit.max(1) as f64,
                        path.display()
                    );
                }
                Err(e) => log::error!(
                    target: "allocscope",
                    "could not write the near-limit heap profile: {e}"
                ),
            }
            WRITING.store(false, Release);
        });
    if let Err(e) = spawned {
        WRITING.store(false, Release);
        log::error!(
            target: "allocscope",
            "could not start a thread to write the near-limit heap profile: {e}"
        );
    }
}

/// Captures the heap profile and writes it into `dir` atomically, then
/// keeps the newest `keep` profiles there.
fn write(dir: &Path, keep: usize) -> Result<PathBuf, Error> {
    let io = |what: String| {
        move |source| Error::Io {
            context: what,
            source,
        }
    };
    std::fs::create_dir_all(dir).map_err(io(format!(
        "cannot create the near-limit profile directory {} (near_limit_profile_dir)",
        dir.display()
    )))?;
    let bytes = super::HeapProfile::capture().to_pprof(super::PprofKind::Heap);
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let name = format!(
        "{PREFIX}{ms:013}-{}-{}{SUFFIX}",
        std::process::id(),
        SEQ.fetch_add(1, Relaxed)
    );
    let path = dir.join(&name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let written = std::fs::File::create(&tmp)
        .and_then(|mut f| {
            f.write_all(&bytes)?;
            f.sync_all()
        })
        .and_then(|()| std::fs::rename(&tmp, &path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(format!(
            "cannot write the heap profile {}",
            path.display()
        ))(e));
    }
    prune(dir, keep);
    Ok(path)
}

/// Deletes all but the newest `keep` profiles in `dir`.
fn prune(dir: &Path, keep: usize) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(PREFIX) && n.ends_with(SUFFIX))
        .collect();
    names.sort_unstable_by(|a, b| b.cmp(a));
    for old in names.iter().skip(keep) {
        if let Err(e) = std::fs::remove_file(dir.join(old)) {
            log::warn!(
                target: "allocscope",
                "cannot delete the old near-limit heap profile {old}: {e}"
            );
        }
    }
}
