//! Collection cycles: allocscope's GC for a language without one.
//!
//! Owns the collection threshold (GOGC), the soft memory limit (GOMEMLIMIT),
//! the reclaimers the application registers, the collector thread that
//! decides when a cycle runs, the release of free memory to the OS, the
//! CPU limiter and the record of recent cycles. (Writing the heap profile
//! to disk near the memory limit is the profile layer's:
//! `profile::set_near_limit_profiles`.)
//!
//! ```
//! use allocscope::gc;
//! # #[global_allocator]
//! # static A: allocscope::AllocScope = allocscope::AllocScope::system();
//! # let cache = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Vec<u8>>::new()));
//! // A cache that can give memory back when the heap grows.
//! let c = cache.clone();
//! let reclaimer = gc::register_reclaimer("cache", move |pressure: &gc::Pressure| {
//!     let mut c = c.lock().unwrap();
//!     let freed: usize = c.iter().map(Vec::len).sum();
//!     c.clear();
//!     freed
//! });
//! gc::set_threshold(Some(200)); // collect when live bytes triple (GOGC=200)
//! gc::set_memory_limit(Some(512 << 20))?; // and above 512 MiB, whatever the threshold
//! let cycle = gc::collect(); // one cycle now
//! println!("reclaimed {} bytes; {} cycles so far", cycle.reclaimed_bytes, gc::stats().cycles());
//! # drop(reclaimer);
//! # gc::set_memory_limit(None)?;
//! # Ok::<(), allocscope::Error>(())
//! ```
//!
//! It must never run inside an allocation call: the hot path knows nothing
//! of it. The collector thread reads live bytes through a fold of the
//! counter blocks (`crate::counters`), paced by the sampler's global count
//! of sample points, and calls the reclaimers on an ordinary thread, where
//! they may allocate, lock and log. Nothing here is reachable from the
//! allocator, and nothing was added to any allocation path.
//!
//! # When a cycle runs
//! - **Threshold** (Go's `GOGC`, default 100): the heap goal is
//!   `max(4 MiB × threshold/100, live bytes after the last cycle ×
//!   (1 + threshold/100))`; before the first cycle the live bytes when the
//!   collector's state was created stand in for "after the last cycle".
//!   When live bytes pass the goal, a cycle runs. `None` turns it off.
//! - **Memory limit** (Go's `GOMEMLIMIT`, default off): a soft limit on live
//!   heap bytes, honoured even with the threshold off. When live bytes pass
//!   it, a cycle runs. [`heap_goal`] is the smaller of the two.
//! - **Manual**: [`collect`] runs one now, on the calling thread.
//!
//! Automatic cycles run on the collector thread (`allocscope-collect`),
//! never on an allocating thread. It starts at the first call of
//! [`start_collector`], [`set_threshold`], [`set_memory_limit`],
//! [`register_reclaimer`] or [`collect`] (and `server::start`, which calls
//! `start_collector`); reading settings or records does not start it. It
//! parks when neither a threshold nor a limit is set.
//!
//! # How the trigger is detected
//! Live bytes are exact only as a fold of every counter block: about 1 µs
//! per block (thread that ever ran), too much to do every few milliseconds
//! in a process with hundreds of threads. So the collector wakes every
//! [`POLL_INTERVAL`] (5 ms) and first reads the sampler's global count of
//! sample points (two loads; each sample stands for about
//! `sample_interval` bytes allocated). It folds ("a full check") when:
//! - a fold is cheap (a few threads: at most 0.2% of a core at 5 ms), or
//! - the samples since the last full check suggest that a quarter of the
//!   headroom it left below the goal has been allocated, or the heap is
//!   within 4 sample intervals (at least 1 MiB) of the goal, or
//! - 100 ms passed (the backstop, for growth the sampler does not see:
//!   sampling off, an unsampled large block),
//!
//! and never more often than 1% of a core allows (0.25% for the backstop
//! alone.
//!
//! An idle process lets the collector sleep: once no allocation has
//! reached the sampler's cold path (a sample point, or a thread's check-in
//! at least every 1 MiB it allocates) for 200 ms, it polls every 500 ms
//! instead of every 5 ms (at most two wake-ups a second), and the next
//! allocation that reaches the cold path wakes it at once (a futex wake
//! from the sampler's cold path, no lock, no allocation). It stays awake
//! while live bytes are above, or within 1 MiB of, the level it watches,
//! where a few small allocations could cross it unseen.
//!
//! Measured (`cargo run --release -p allocscope-bench --bin
//! collect_poll_cost`, docs/measurements.md): with up to ~100 threads a trigger is acted
//! on within 10 ms at a cost of about 0.1% of a core; with 1,000 threads
//! within ~20-200 ms for under 0.5% of a core while idle.
//!
//! # What a cycle does
//! 1. Calls the registered reclaimers in registration order with a
//!    [`Pressure`]; each returns the bytes it believes it freed. A
//!    panicking reclaimer is caught, logged and counted; the others still
//!    run. (With `panic = "abort"` a panic aborts the process, as anywhere.)
//! 2. Releases free memory to the OS ([`ReleaseMode`]): `malloc_trim(0)`
//!    when the wrapped allocator is glibc's malloc, nothing elsewhere.
//! 3. Records a [`Cycle`]: live and resident bytes before and after, bytes
//!    released, the reclaimers' reported bytes, panics, duration, the goal.
//!
//! # CPU limiter
//! Like Go's GC CPU limiter, automatic cycles may take at most
//! [`time_share`] (default 0.1) of wall time: a token bucket
//! that fills at that rate and holds at most one second's worth
//! (`share × 1 s`). A trigger that finds it empty is skipped (counted in
//! [`Stats::skipped_triggers`]) and the collector waits until
//! it refills, so an unreclaimable heap above its limit cannot spin the
//! collector. Manual cycles are not limited and do not use the budget.

mod cgroup;
mod collector;
mod container;
mod os;
mod reclaim;

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

pub use cgroup::CgroupVersion;
pub use container::{
    container_memory, set_memory_limit_auto, ContainerMemory, LimitSource, AUTO_REFRESH,
    DEFAULT_AUTO_RATIO, MIN_AUTO_LIMIT,
};
#[cfg(feature = "server")]
pub(crate) use container::{
    valid_ratio as valid_auto_ratio, RATIO_EXPECTED as AUTO_RATIO_EXPECTED,
};
pub use reclaim::Reclaimer;

/// Something a higher layer wants run while live bytes near the memory
/// limit: the profile layer's near-limit profiles
/// (`profile::set_near_limit_profiles` registers them), so that this layer
/// needs no profile code. Called on the collector thread only.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LimitWatcher {
    /// The live bytes under `limit` at which it wants [`LimitWatcher::check`]
    /// called (`None`: not now). The collector then polls at least that
    /// level, as it polls the heap goal.
    pub(crate) level: fn(limit: u64) -> Option<u64>,
    /// Called after each check of live bytes while a limit is set.
    pub(crate) check: fn(live: u64, limit: u64),
    /// How many times it acted, for [`Stats::near_limit_profiles`].
    pub(crate) count: fn() -> u64,
}

static LIMIT_WATCHER: OnceLock<LimitWatcher> = OnceLock::new();

/// Registers the limit watcher; the first registration stays.
#[cfg_attr(not(feature = "profile"), allow(dead_code))]
pub(crate) fn set_limit_watcher(w: LimitWatcher) {
    let _ = LIMIT_WATCHER.set(w);
}

fn limit_watcher() -> Option<&'static LimitWatcher> {
    LIMIT_WATCHER.get()
}

/// How often the collector thread wakes while a threshold or a limit is
/// set and the process allocates: 5 ms, so that a trigger is acted on
/// within 10 ms with room for the fold and the wake-up (an idle process:
/// see the module docs). Each wake-up reads two counters; the full fold of
/// the counter blocks runs as the module docs ("How the trigger is
/// detected") say.
pub const POLL_INTERVAL: Duration = Duration::from_millis(5);

/// The threshold's minimum heap goal at 100%: 4 MiB, scaled by
/// threshold/100 (Go's `heapMinimum`).
pub const MIN_HEAP_GOAL: u64 = 4 << 20;

/// The default threshold, in percent (Go's `GOGC` default).
pub const DEFAULT_THRESHOLD: u32 = 100;

/// The default share of wall time automatic cycles may take.
pub const DEFAULT_TIME_SHARE: f64 = 0.1;

/// How many cycle records [`cycles`] keeps.
pub const CYCLE_HISTORY: usize = 64;

/// Upper bounds, in seconds, of the cycle duration histogram
/// ([`Stats::duration_buckets`]); a last bucket counts the rest.
pub const DURATION_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Why a cycle ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CycleReason {
    /// Live bytes passed the threshold's heap goal.
    Threshold,
    /// Live bytes passed the memory limit.
    Limit,
    /// [`collect`] (or `POST /gc/collect`).
    Manual,
}

impl CycleReason {
    /// All reasons, in the order of [`Stats::cycles_by_reason`].
    pub const ALL: [CycleReason; 3] = [
        CycleReason::Threshold,
        CycleReason::Limit,
        CycleReason::Manual,
    ];

    /// `"threshold"`, `"limit"` or `"manual"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            CycleReason::Threshold => "threshold",
            CycleReason::Limit => "limit",
            CycleReason::Manual => "manual",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for CycleReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a reclaimer is told: why the cycle runs and how far the heap is
/// over its goal and its limit.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Pressure {
    /// Why the cycle runs.
    pub reason: CycleReason,
    /// Live heap bytes when the cycle started.
    pub live_bytes: u64,
    /// The heap goal ([`heap_goal`]) when the cycle was triggered;
    /// `u64::MAX` when neither a threshold nor a limit is set.
    pub goal_bytes: u64,
    /// The memory limit, if set.
    pub memory_limit: Option<u64>,
    /// Live bytes above the goal (0 when under it).
    pub over_goal_bytes: u64,
    /// Live bytes above the memory limit (0 when under it or unset).
    pub over_limit_bytes: u64,
}

impl Pressure {
    /// Bytes to free to be back under both the goal and the limit: a hint
    /// for how much a reclaimer should give back (0 for a manual cycle
    /// under both, when "as much as is cheap" is the answer).
    pub fn excess_bytes(&self) -> u64 {
        self.over_goal_bytes.max(self.over_limit_bytes)
    }

    /// Whether the heap is over the memory limit: free what you can.
    pub fn is_over_limit(&self) -> bool {
        self.over_limit_bytes > 0
    }
}

/// The record of one collection cycle.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Cycle {
    /// 1 for the process's first cycle, then consecutive. 0 only for the
    /// record [`collect`] returns when called from inside a reclaimer
    /// (cycles do not nest; nothing ran).
    pub number: u64,
    /// Why it ran.
    pub reason: CycleReason,
    /// When it started (wall clock).
    pub start: SystemTime,
    /// How long it took: reclaimers, release to the OS and measurements.
    pub duration: Duration,
    /// The heap goal when it was triggered (`u64::MAX`: none).
    pub goal_bytes: u64,
    /// The memory limit then, if set.
    pub memory_limit: Option<u64>,
    /// The threshold then, in percent (`None`: off).
    pub threshold: Option<u32>,
    /// Live heap bytes at its start.
    pub live_bytes_before: u64,
    /// Live heap bytes at its end: the base of the next heap goal.
    pub live_bytes_after: u64,
    /// Resident memory of the process at its start (Linux:
    /// `/proc/self/statm`; `None` elsewhere).
    pub resident_bytes_before: Option<u64>,
    /// Resident memory at its end.
    pub resident_bytes_after: Option<u64>,
    /// Whether free memory was released to the OS (see [`ReleaseMode`]).
    pub released_to_os: bool,
    /// The drop in resident memory across the release step (0 if none).
    pub released_bytes: u64,
    /// The sum of the bytes the reclaimers reported freeing.
    pub reclaimed_bytes: u64,
    /// Reclaimers called.
    pub reclaimers: usize,
    /// Of those, how many panicked.
    pub reclaimer_panics: usize,
    /// The heap goal after it (`u64::MAX`: none).
    pub next_goal_bytes: u64,
}

/// Whether cycles return free memory to the OS.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ReleaseMode {
    /// `malloc_trim(0)` when the wrapped allocator is glibc's malloc (Linux
    /// with glibc, detected once by watching glibc's counters while
    /// allocating a 64 KiB probe through the global allocator); nothing
    /// otherwise. For another allocator, register a reclaimer that calls
    /// its own purge (e.g. mimalloc's `mi_collect(true)`). The default.
    #[default]
    Auto,
    /// `malloc_trim(0)` wherever glibc is the C library, even if the probe
    /// did not see glibc's malloc serve the global allocator (it still
    /// trims what C code and other users of `malloc` hold).
    Always,
    /// Never release.
    Never,
}

impl ReleaseMode {
    /// `"auto"`, `"always"` or `"never"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ReleaseMode::Auto => "auto",
            ReleaseMode::Always => "always",
            ReleaseMode::Never => "never",
        }
    }

    /// What [`FromStr`] accepts.
    pub const EXPECTED: &'static str =
        "true or auto (release when the allocator is glibc's malloc), always, false or never";
}

impl fmt::Display for ReleaseMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ReleaseMode {
    type Err = crate::Error;

    /// `true`/`auto`, `always`, `false`/`never` (case-insensitive).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "true" | "auto" | "yes" | "on" => Ok(ReleaseMode::Auto),
            "always" => Ok(ReleaseMode::Always),
            "false" | "never" | "no" | "off" => Ok(ReleaseMode::Never),
            _ => Err(crate::Error::InvalidArgument {
                what: "release_to_os",
                value: s.to_string(),
                expected: ReleaseMode::EXPECTED,
            }),
        }
    }
}

/// The collector's settings and counters, read at one moment (for
/// metrics and `/gc`).
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct Stats {
    /// The threshold in percent (`None`: off).
    pub threshold: Option<u32>,
    /// The memory limit in bytes (`None`: off).
    pub memory_limit: Option<u64>,
    /// The heap goal ([`heap_goal`]; `u64::MAX`: none).
    pub heap_goal: u64,
    /// Live bytes at the last check (or now, if the collector is not
    /// running).
    pub live_bytes: u64,
    /// Cycles run, per [`CycleReason::ALL`] (threshold, limit, manual).
    pub cycles_by_reason: [u64; 3],
    /// Automatic triggers skipped because cycles had used their share of
    /// wall time ([`time_share`]).
    pub skipped_triggers: u64,
    /// Time spent in cycles, all reasons.
    pub total_duration: Duration,
    /// Cycles per duration bucket: `duration_buckets[i]` counts cycles of
    /// at most `DURATION_BUCKETS[i]` seconds (and more than the bound
    /// before); the last element counts longer ones. Not cumulative.
    pub duration_buckets: [u64; DURATION_BUCKETS.len() + 1],
    /// Resident bytes released to the OS by cycles, in all.
    pub released_bytes: u64,
    /// Bytes the reclaimers reported freeing, in all.
    pub reclaimed_bytes: u64,
    /// Reclaimer calls that panicked, in all.
    pub reclaimer_panics: u64,
    /// Reclaimers registered now.
    pub reclaimers: usize,
    /// Heap profiles written near the memory limit.
    pub near_limit_profiles: u64,
    /// Full checks of live bytes (folds of every counter block) by the
    /// collector thread.
    pub polls: u64,
    /// Time those checks took, in all: the collector's cost while no cycle
    /// runs.
    pub poll_time: Duration,
    /// Whether the collector thread is running.
    pub collector_running: bool,
    /// How cycles release memory ([`release_mode`]).
    pub release_to_os: ReleaseMode,
    /// Whether the glibc probe saw glibc's malloc serve the global
    /// allocator (`None` until the first cycle ran it, or not glibc).
    pub glibc_malloc_detected: Option<bool>,
    /// The share of wall time automatic cycles may take.
    pub time_share: f64,
    /// Time live bytes spent above the memory limit, in all (measured
    /// between the collector's checks).
    pub limit_exceeded: Duration,
    /// Backoffs: times cycles on the limit were paused because they could
    /// not bring live bytes under it ([`set_limit_backoff`]).
    pub limit_backoffs: u64,
    /// Whether cycles on the limit are paused now.
    pub limit_paused: bool,
}

impl Stats {
    /// Cycles run, all reasons.
    pub fn cycles(&self) -> u64 {
        self.cycles_by_reason.iter().sum()
    }

    /// Cycles run for `reason`.
    pub fn cycles_for(&self, reason: CycleReason) -> u64 {
        self.cycles_by_reason[reason.index()]
    }
}

/// Registers a reclaimer: `f` is called in every collection cycle, after
/// the reclaimers registered before it, with the cycle's [`Pressure`], and
/// returns the bytes it believes it freed (e.g. the size of the cache
/// entries it dropped). `name` identifies it in logs.
///
/// Dropping the returned [`Reclaimer`] unregisters it: no cycle that
/// starts after the drop calls `f` (a cycle already running may still be
/// inside it). Starts the collector thread.
///
/// `f` runs on the collector thread (or the thread calling [`collect`]),
/// never inside an allocation: it may allocate, lock and log. Keep it
/// short: cycles run one at a time, so a reclaimer that blocks holds up
/// every later cycle, and its time counts against the CPU limiter.
///
/// ```
/// # #[global_allocator]
/// # static A: allocscope::AllocScope = allocscope::AllocScope::system();
/// use std::sync::{Arc, Mutex};
/// let cache: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
/// let c = cache.clone();
/// let _reclaimer = allocscope::gc::register_reclaimer("my cache", move |p| {
///     let mut c = c.lock().unwrap();
///     let freed: usize = c.iter().map(|v| v.capacity()).sum();
///     if p.is_over_limit() || p.excess_bytes() > 0 {
///         c.clear();
///         c.shrink_to_fit();
///         return freed;
///     }
///     0
/// });
/// ```
pub fn register_reclaimer<F>(name: impl Into<String>, f: F) -> Reclaimer
where
    F: Fn(&Pressure) -> usize + Send + Sync + 'static,
{
    let r = reclaim::register(name.into(), std::sync::Arc::new(f));
    collector::start();
    r
}

/// Sets the collection threshold in percent (`None` = off) and returns the
/// previous setting, like Go's `debug.SetGCPercent`. Default 100: a cycle
/// runs when the heap has grown by 100% over what the last cycle left (at
/// least 4 MiB × threshold/100). Takes effect at once. Starts the
/// collector thread.
pub fn set_threshold(percent: Option<u32>) -> Option<u32> {
    let prev = collector::update_settings(|s| std::mem::replace(&mut s.threshold, percent));
    collector::start();
    prev
}

/// The collection threshold in percent (`None`: off).
pub fn threshold() -> Option<u32> {
    collector::read_settings(|s| s.threshold)
}

/// Sets the soft memory limit on live heap bytes (`None` = off; the
/// default) and returns the previous one, like Go's
/// `debug.SetMemoryLimit`. A cycle runs when live bytes pass it, even with
/// the threshold off. Starts the collector thread.
///
/// # Errors
/// [`crate::Error::InvalidArgument`] for `Some(0)` (a limit of nothing
/// would collect constantly: `None` turns the limit off), as the
/// configuration key `memory_limit` refuses `0`; nothing is changed then.
pub fn set_memory_limit(bytes: Option<u64>) -> Result<Option<u64>, crate::Error> {
    if !valid_memory_limit(&bytes) {
        return Err(crate::Error::InvalidArgument {
            what: "memory_limit",
            value: format!("{bytes:?}"),
            expected: MEMORY_LIMIT_EXPECTED,
        });
    }
    container::end_auto();
    Ok(apply_memory_limit(bytes))
}

/// Sets the soft limit in force (manual or auto) and starts the collector;
/// returns the previous one.
fn apply_memory_limit(bytes: Option<u64>) -> Option<u64> {
    let prev = collector::update_settings(|s| std::mem::replace(&mut s.memory_limit, bytes));
    collector::start();
    prev
}

/// Where the soft memory limit in force came from: off, set by hand, or a
/// share of the container's limit ([`set_memory_limit_auto`]).
pub fn limit_source() -> LimitSource {
    container::source(memory_limit().is_some())
}

/// A memory limit as the configuration and `POST /gc` give it: off, a
/// size, or `auto` (a share of the container's limit).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MemoryLimit {
    /// No limit (`off`).
    Off,
    /// A soft limit of this many bytes ([`set_memory_limit`]).
    Bytes(u64),
    /// A share of the container's limit ([`set_memory_limit_auto`]), the
    /// share given separately (`memory_limit_ratio`).
    Auto,
}

impl From<Option<u64>> for MemoryLimit {
    fn from(bytes: Option<u64>) -> MemoryLimit {
        bytes.map_or(MemoryLimit::Off, MemoryLimit::Bytes)
    }
}

/// `MemoryLimit::Bytes(n) == Some(n)`, `Off == None`; `Auto` equals no
/// `Option`.
impl PartialEq<Option<u64>> for MemoryLimit {
    fn eq(&self, other: &Option<u64>) -> bool {
        match self {
            MemoryLimit::Auto => false,
            limit => *limit == MemoryLimit::from(*other),
        }
    }
}

impl MemoryLimit {
    /// Applies it: [`set_memory_limit`] or [`set_memory_limit_auto`] with
    /// `ratio`; returns the soft limit now in force.
    ///
    /// # Errors
    /// As those functions.
    pub fn apply(self, ratio: f64) -> Result<Option<u64>, crate::Error> {
        match self {
            MemoryLimit::Off => set_memory_limit(None).map(|_| None),
            MemoryLimit::Bytes(b) => set_memory_limit(Some(b)).map(|_| Some(b)),
            MemoryLimit::Auto => set_memory_limit_auto(ratio),
        }
    }
}

/// Whether [`set_memory_limit`] (and the configuration) accept `bytes`.
pub(crate) fn valid_memory_limit(bytes: &Option<u64>) -> bool {
    *bytes != Some(0)
}

/// Whether the configuration accepts `limit` (a size above 0, off, auto).
#[cfg(feature = "server")]
pub(crate) fn valid_limit(limit: &MemoryLimit) -> bool {
    *limit != MemoryLimit::Bytes(0)
}

/// What [`set_memory_limit`] (and the configuration key `memory_limit`,
/// `POST /gc?memory_limit=`) accepts.
pub(crate) const MEMORY_LIMIT_EXPECTED: &str =
    "a size above 0: a whole number with a unit B, KiB, MiB, GiB or TiB (e.g. 512MiB, 2GiB), or off (or auto, in the configuration and POST /gc)";

/// The soft memory limit in bytes (`None`: off).
pub fn memory_limit() -> Option<u64> {
    collector::read_settings(|s| s.memory_limit)
}

/// Sets how cycles release free memory to the OS; returns the previous
/// setting.
pub fn set_release_mode(mode: ReleaseMode) -> ReleaseMode {
    collector::update_settings(|s| std::mem::replace(&mut s.release, mode))
}

/// How cycles release free memory to the OS (default [`ReleaseMode::Auto`]).
pub fn release_mode() -> ReleaseMode {
    collector::read_settings(|s| s.release)
}

/// Sets the share of wall time automatic cycles may take (Go's GC CPU
/// limiter), from just above 0 to 1 (1: no limit); returns the previous
/// one. Default 0.1.
///
/// # Errors
/// [`crate::Error::InvalidArgument`] for a value outside `(0, 1]` or NaN.
pub fn set_time_share(share: f64) -> Result<f64, crate::Error> {
    if !valid_time_share(&share) {
        return Err(crate::Error::InvalidArgument {
            what: "collector_time_share",
            value: share.to_string(),
            expected: TIME_SHARE_EXPECTED,
        });
    }
    Ok(collector::update_settings(|s| {
        std::mem::replace(&mut s.time_share, share)
    }))
}

/// Whether [`set_time_share`] (and the configuration) accept `share`.
pub(crate) fn valid_time_share(share: &f64) -> bool {
    *share > 0.0 && *share <= 1.0
}

/// What [`set_time_share`] accepts.
pub(crate) const TIME_SHARE_EXPECTED: &str =
    "a share of wall time above 0 and at most 1, such as 0.1 (10%) or 0.5";

/// The share of wall time automatic cycles may take.
pub fn time_share() -> f64 {
    collector::read_settings(|s| s.time_share)
}

/// When to stop triggering cycles on a memory limit they cannot meet: the
/// guard against the death spiral of a heap that stays above its limit
/// (Go's `GOMEMLIMIT` users report hours of back-to-back collections,
/// golang/go#48409, #58106).
///
/// When live bytes stay above the memory limit for [`LimitBackoff::after`]
/// although cycles on the limit ran in that time, those cycles are paused
/// for [`LimitBackoff::pause`]: the first time with a warning in the log
/// (later ones at info level), counted in [`Stats::limit_backoffs`]. The
/// threshold still triggers cycles meanwhile, the near-limit profile is
/// still written if configured, and the time above the limit is counted
/// in [`Stats::limit_exceeded`]. After the pause, cycles on the limit
/// resume, and another `after` must pass before the next pause.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LimitBackoff {
    /// How long live bytes may stay above the limit, cycles running,
    /// before the limit's cycles pause. Default 10 s.
    pub after: Duration,
    /// How long they pause. Default 1 min.
    pub pause: Duration,
}

impl Default for LimitBackoff {
    fn default() -> Self {
        LimitBackoff {
            after: Duration::from_secs(10),
            pause: Duration::from_secs(60),
        }
    }
}

impl LimitBackoff {
    /// A backoff after `after` above the limit, for `pause`.
    pub fn new(after: Duration, pause: Duration) -> LimitBackoff {
        LimitBackoff { after, pause }
    }
}

/// Sets when cycles on the memory limit pause (see [`LimitBackoff`];
/// `None`: never, cycles go on as long as the limit is exceeded, within
/// the CPU limiter's share); returns the previous setting. Default
/// `Some(LimitBackoff::default())`: after 10 s, for 1 min.
///
/// # Errors
/// [`crate::Error::InvalidArgument`] for an `after` or `pause` under
/// 10 ms; nothing is changed then.
pub fn set_limit_backoff(
    backoff: Option<LimitBackoff>,
) -> Result<Option<LimitBackoff>, crate::Error> {
    if let Some(b) = backoff {
        for (what, d) in [
            ("memory_limit_backoff_after", b.after),
            ("memory_limit_backoff_pause", b.pause),
        ] {
            if !valid_backoff_duration(&d) {
                return Err(crate::Error::InvalidArgument {
                    what,
                    value: format!("{d:?}"),
                    expected: BACKOFF_EXPECTED,
                });
            }
        }
    }
    Ok(collector::update_settings(|s| {
        std::mem::replace(&mut s.backoff, backoff)
    }))
}

/// The backoff in force.
pub fn limit_backoff() -> Option<LimitBackoff> {
    collector::read_settings(|s| s.backoff)
}

/// Whether [`set_limit_backoff`] (and the configuration) accept `d`.
pub(crate) fn valid_backoff_duration(d: &Duration) -> bool {
    *d >= Duration::from_millis(10)
}

/// What [`set_limit_backoff`] accepts.
pub(crate) const BACKOFF_EXPECTED: &str = "a duration of at least 10ms, such as 10s or 1m";

/// The heap goal in bytes: the live bytes at which the next automatic
/// cycle runs, the smaller of the threshold's goal and the memory limit;
/// `u64::MAX` when neither is set.
pub fn heap_goal() -> u64 {
    collector::read_settings(|s| s.goal())
}

/// Runs a collection cycle now, on the calling thread, and returns its
/// record. Blocks while the reclaimers run (and while another cycle
/// finishes). Not subject to the CPU limiter. Starts the collector thread.
///
/// Called from inside a reclaimer, it runs nothing (cycles do not nest),
/// logs a warning and returns a record numbered 0.
pub fn collect() -> Cycle {
    collector::start();
    collector::run_manual()
}

/// The most recent cycles, oldest first (at most [`CYCLE_HISTORY`]).
pub fn cycles() -> Vec<Cycle> {
    collector::history()
}

/// The collector's settings and counters at one moment.
pub fn stats() -> Stats {
    collector::stats()
}

/// Starts the collector thread if it is not running, so that automatic
/// cycles run with the current (or default) settings. Idempotent.
/// `server::start` calls it; so do the `set_*` functions,
/// [`register_reclaimer`] and [`collect`].
pub fn start_collector() {
    collector::start();
}

/// The threshold's heap goal for `base` live bytes after the last cycle:
/// `max(MIN_HEAP_GOAL × t/100, base × (1 + t/100))`, saturating.
pub(crate) fn threshold_goal(base: u64, percent: u32) -> u64 {
    let t = u128::from(percent);
    let floor = u128::from(MIN_HEAP_GOAL) * t / 100;
    let grown = u128::from(base) * (100 + t) / 100;
    u64::try_from(floor.max(grown)).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goals() {
        assert_eq!(threshold_goal(0, 100), 4 << 20);
        assert_eq!(threshold_goal(1 << 20, 100), 4 << 20);
        assert_eq!(threshold_goal(10 << 20, 100), 20 << 20);
        assert_eq!(threshold_goal(0, 50), 2 << 20);
        assert_eq!(threshold_goal(10 << 20, 50), 15 << 20);
        assert_eq!(threshold_goal(0, 200), 8 << 20);
        assert_eq!(threshold_goal(10 << 20, 200), 30 << 20);
        assert_eq!(threshold_goal(1000, 0), 1000);
        assert_eq!(threshold_goal(u64::MAX, u32::MAX), u64::MAX);
    }

    #[test]
    fn release_modes_parse() {
        for (s, m) in [
            ("true", ReleaseMode::Auto),
            ("Auto", ReleaseMode::Auto),
            ("always", ReleaseMode::Always),
            ("false", ReleaseMode::Never),
            ("never", ReleaseMode::Never),
        ] {
            assert_eq!(s.parse::<ReleaseMode>().unwrap(), m, "{s}");
        }
        let e = "sometimes".parse::<ReleaseMode>().unwrap_err().to_string();
        assert!(e.contains("release_to_os") && e.contains("sometimes") && e.contains("always"));
    }

    #[test]
    fn pressure_excess() {
        let p = Pressure {
            reason: CycleReason::Limit,
            live_bytes: 10,
            goal_bytes: 8,
            memory_limit: Some(5),
            over_goal_bytes: 2,
            over_limit_bytes: 5,
        };
        assert_eq!(p.excess_bytes(), 5);
        assert!(p.is_over_limit());
    }
}
