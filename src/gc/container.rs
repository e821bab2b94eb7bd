//! The memory limit from the container: `memory_limit = "auto"`
//! ([`set_memory_limit_auto`]) sets the soft limit to a share of the
//! process's cgroup memory limit, and the collector thread re-reads that
//! limit every [`AUTO_REFRESH`] (a container's limit can be changed while
//! it runs).
//!
//! Where the limit came from ([`LimitSource`]) is reported by
//! [`limit_source`], `GET /gc` and the metrics.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::cgroup::{CgroupVersion, MemoryCgroup};
use crate::Error;

/// How often the collector re-reads the container's limit in auto mode.
pub const AUTO_REFRESH: Duration = Duration::from_secs(30);

/// The smallest soft limit auto mode sets, whatever the container's limit
/// and the ratio: below it every cycle would find the heap over its limit.
pub const MIN_AUTO_LIMIT: u64 = super::MIN_HEAP_GOAL;

/// The default share of the container's limit ([`set_memory_limit_auto`],
/// the configuration key `memory_limit_ratio`).
pub const DEFAULT_AUTO_RATIO: f64 = 0.9;

/// The container's memory, as the kernel accounts it for the process's
/// cgroup.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ContainerMemory {
    /// The cgroup version the figures come from.
    pub version: CgroupVersion,
    /// The cgroup's directory.
    pub path: std::path::PathBuf,
    /// The effective memory limit in bytes (the smallest of the group and
    /// its ancestors); `None` when unlimited.
    pub limit_bytes: Option<u64>,
    /// The memory the kernel counts against it (page cache included).
    pub usage_bytes: Option<u64>,
}

/// Where the soft memory limit in force came from.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum LimitSource {
    /// No limit is set.
    Off,
    /// Set by [`super::set_memory_limit`] (or a size in the configuration).
    Manual,
    /// A share of the container's limit ([`set_memory_limit_auto`]). With
    /// no container limit found, the soft limit is off.
    Container {
        /// The share of the container's limit.
        ratio: f64,
        /// The container's memory when it was last read.
        container: Option<ContainerMemory>,
    },
}

impl LimitSource {
    /// `"off"`, `"manual"` or `"container"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            LimitSource::Off => "off",
            LimitSource::Manual => "manual",
            LimitSource::Container { .. } => "container",
        }
    }
}

/// Auto mode's state: the ratio, the last reading, when it was taken.
#[derive(Debug)]
struct Auto {
    ratio: f64,
    container: Option<ContainerMemory>,
    read_at: Instant,
}

static AUTO: Mutex<Option<Auto>> = Mutex::new(None);

fn auto() -> std::sync::MutexGuard<'static, Option<Auto>> {
    AUTO.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The container's memory now, if the process is in a memory cgroup that
/// can be read (Linux).
pub fn container_memory() -> Option<ContainerMemory> {
    let g = MemoryCgroup::of_this_process()?;
    Some(ContainerMemory {
        version: g.version,
        limit_bytes: g.limit(),
        usage_bytes: g.usage(),
        path: g.dir,
    })
}

/// Whether `ratio` is accepted by [`set_memory_limit_auto`] (and the
/// configuration key `memory_limit_ratio`).
pub(crate) fn valid_ratio(ratio: &f64) -> bool {
    *ratio > 0.0 && *ratio <= 1.0
}

/// What [`set_memory_limit_auto`] accepts.
pub(crate) const RATIO_EXPECTED: &str =
    "a share of the container's memory limit above 0 and at most 1, such as 0.9";

/// The soft limit for a container limit of `limit` bytes at `ratio`.
fn soft_limit(limit: u64, ratio: f64) -> u64 {
    ((limit as f64 * ratio) as u64).max(MIN_AUTO_LIMIT)
}

/// Sets the soft memory limit to `ratio` of the container's memory limit
/// (cgroup v2 `memory.max` or v1 `memory.limit_in_bytes` of the process's
/// own cgroup, found through `/proc/self/cgroup` and
/// `/proc/self/mountinfo`), at least [`MIN_AUTO_LIMIT`]; the collector
/// re-reads it every [`AUTO_REFRESH`]. Where the process has no container
/// limit (or no cgroup to read), the soft limit is off and a log line says
/// why. Returns the soft limit set. A later [`super::set_memory_limit`]
/// ends auto mode.
///
/// The soft limit applies to live heap bytes, the container's to all the
/// memory the kernel charges to the group (the allocator's free pages, the
/// binary, stacks, page cache), hence a ratio below 1 (default 0.9, as
/// tools that set Go's `GOMEMLIMIT` from the cgroup use).
///
/// # Errors
/// [`Error::InvalidArgument`] for a ratio outside `(0, 1]`; nothing is
/// changed then.
pub fn set_memory_limit_auto(ratio: f64) -> Result<Option<u64>, Error> {
    if !valid_ratio(&ratio) {
        return Err(Error::InvalidArgument {
            what: "memory_limit_ratio",
            value: ratio.to_string(),
            expected: RATIO_EXPECTED,
        });
    }
    let container = container_memory();
    let limit = container
        .as_ref()
        .and_then(|c| c.limit_bytes)
        .map(|l| soft_limit(l, ratio));
    match &container {
        None => log::info!(
            target: "allocscope",
            "memory_limit = auto: no memory cgroup found for this process \
             (/proc/self/cgroup, /proc/self/mountinfo); the soft memory limit is off"
        ),
        Some(c) if c.limit_bytes.is_none() => log::info!(
            target: "allocscope",
            "memory_limit = auto: the container has no memory limit (cgroup {} at {}); \
             the soft memory limit is off",
            c.version.as_str(),
            c.path.display()
        ),
        Some(c) => log::info!(
            target: "allocscope",
            "memory_limit = auto: soft memory limit {} bytes, {ratio} of the container's {} \
             bytes (cgroup {} at {})",
            limit.unwrap_or(0),
            c.limit_bytes.unwrap_or(0),
            c.version.as_str(),
            c.path.display()
        ),
    }
    super::apply_memory_limit(limit);
    *auto() = Some(Auto {
        ratio,
        container,
        read_at: Instant::now(),
    });
    Ok(limit)
}

/// Whether auto mode is on.
pub(super) fn auto_active() -> bool {
    auto().is_some()
}

/// Ends auto mode (a manual limit was set).
pub(super) fn end_auto() {
    *auto() = None;
}

/// In auto mode, re-reads the container's limit when [`AUTO_REFRESH`] has
/// passed and applies a change. Called by the collector thread.
pub(super) fn refresh() {
    let ratio = {
        let a = auto();
        match a.as_ref() {
            Some(a) if a.read_at.elapsed() >= AUTO_REFRESH => a.ratio,
            _ => return,
        }
    };
    let container = container_memory();
    let limit = container
        .as_ref()
        .and_then(|c| c.limit_bytes)
        .map(|l| soft_limit(l, ratio));
    let mut a = auto();
    // a setter may have ended auto mode meanwhile
    let Some(state) = a.as_mut() else { return };
    let before = state
        .container
        .as_ref()
        .and_then(|c| c.limit_bytes)
        .map(|l| soft_limit(l, state.ratio));
    state.container = container;
    state.read_at = Instant::now();
    if before != limit {
        log::info!(
            target: "allocscope",
            "memory_limit = auto: the container's limit changed; soft memory limit {:?} -> {:?} bytes",
            before,
            limit
        );
        super::apply_memory_limit(limit);
    }
}

/// Where the soft limit came from, given whether one is set.
pub(super) fn source(limit_set: bool) -> LimitSource {
    match auto().as_ref() {
        Some(a) => LimitSource::Container {
            ratio: a.ratio,
            container: a.container.clone(),
        },
        None if limit_set => LimitSource::Manual,
        None => LimitSource::Off,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn soft_limit_is_a_share_with_a_floor() {
        assert_eq!(soft_limit(256 << 20, 0.9), (256u64 << 20) * 9 / 10);
        assert_eq!(soft_limit(1 << 30, 1.0), 1 << 30);
        assert_eq!(soft_limit(1 << 20, 0.5), MIN_AUTO_LIMIT);
        assert!(valid_ratio(&0.9) && valid_ratio(&1.0));
        assert!(!valid_ratio(&0.0) && !valid_ratio(&1.5) && !valid_ratio(&f64::NAN));
    }
}
