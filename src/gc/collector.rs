//! The collector's state (settings, counters, recent cycles, CPU budget),
//! its thread, and the running of one cycle.
//!
//! Locks: `SHARED` guards settings and counters and is held only for
//! reads and updates, never while a reclaimer runs; `CYCLE` serialises
//! cycles and is held while one runs. Neither is reachable from the
//! allocator.

use std::cell::Cell;
use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread::Thread;
use std::time::{Duration, Instant, SystemTime};

use super::{
    os, reclaim, threshold_goal, Cycle, CycleReason, LimitBackoff, Pressure, ReleaseMode, Stats,
    CYCLE_HISTORY, DEFAULT_THRESHOLD, DEFAULT_TIME_SHARE, DURATION_BUCKETS, POLL_INTERVAL,
};
use crate::{counters, sys};

/// The CPU limiter's burst: the bucket holds `share × BURST` of cycle time.
const BURST: Duration = Duration::from_secs(1);

/// The settings users change.
#[derive(Debug)]
pub(super) struct Settings {
    pub(super) threshold: Option<u32>,
    pub(super) memory_limit: Option<u64>,
    pub(super) release: ReleaseMode,
    pub(super) time_share: f64,
    /// When to stop triggering on the limit ([`LimitBackoff`]).
    pub(super) backoff: Option<LimitBackoff>,
    /// Until when limit triggers are paused (a backoff in progress).
    paused_until: Option<Instant>,
    /// Live bytes after the last cycle (before the first one: when the
    /// collector started).
    base: u64,
}

impl Settings {
    /// The heap goal: the smaller of the threshold's goal and the limit.
    pub(super) fn goal(&self) -> u64 {
        let by_threshold = self
            .threshold
            .map_or(u64::MAX, |t| threshold_goal(self.base, t));
        by_threshold.min(self.limit_in_force().unwrap_or(u64::MAX))
    }

    /// The memory limit, unless a backoff pauses its triggers.
    fn limit_in_force(&self) -> Option<u64> {
        self.memory_limit
            .filter(|_| self.paused_until.is_none_or(|t| Instant::now() >= t))
    }

    /// Whether a backoff pauses the limit's triggers now.
    fn paused(&self) -> bool {
        self.paused_until.is_some_and(|t| Instant::now() < t)
    }

    /// Whether anything can trigger an automatic cycle.
    fn watching(&self) -> bool {
        self.threshold.is_some() || self.memory_limit.is_some()
    }

    fn pressure(&self, reason: CycleReason, live: u64) -> Pressure {
        let goal = self.goal();
        Pressure {
            reason,
            live_bytes: live,
            goal_bytes: goal,
            memory_limit: self.memory_limit,
            over_goal_bytes: live.saturating_sub(goal),
            over_limit_bytes: self.memory_limit.map_or(0, |l| live.saturating_sub(l)),
        }
    }
}

/// The CPU limiter: a token bucket of cycle time that fills at
/// `time_share` seconds per second, up to `time_share × BURST`.
#[derive(Debug)]
struct Budget {
    /// Seconds of cycle time available (negative: owed).
    tokens: f64,
    at: Instant,
}

impl Budget {
    fn refill(&mut self, now: Instant, share: f64) {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + dt * share).min(share * BURST.as_secs_f64());
        self.at = now;
    }

    /// `Ok` if an automatic cycle may start now, else how long until one
    /// may.
    fn check(&mut self, now: Instant, share: f64) -> Result<(), Duration> {
        self.refill(now, share);
        if self.tokens > 0.0 {
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (-self.tokens / share).clamp(0.0, 3600.0),
            ))
        }
    }

    fn charge(&mut self, now: Instant, share: f64, spent: Duration) {
        self.refill(now, share);
        self.tokens -= spent.as_secs_f64();
    }
}

#[derive(Debug, Default)]
struct Counters {
    cycles_by_reason: [u64; 3],
    skipped_triggers: u64,
    total_duration: Duration,
    duration_buckets: [u64; DURATION_BUCKETS.len() + 1],
    released_bytes: u64,
    reclaimed_bytes: u64,
    reclaimer_panics: u64,
    polls: u64,
    poll_time: Duration,
    /// Number of the last cycle started.
    last_number: u64,
    /// Time live bytes spent above the limit (between checks that found
    /// them so).
    limit_exceeded: Duration,
    /// Backoffs started.
    limit_backoffs: u64,
    /// The current stretch above the limit: since when, the last check that
    /// saw it, and the limit cycles run before it began.
    over: Option<OverLimit>,
}

/// A stretch of checks that found live bytes above the memory limit.
#[derive(Debug, Clone, Copy)]
struct OverLimit {
    since: Instant,
    last_check: Instant,
    limit_cycles_before: u64,
}

impl Shared {
    /// Books one check of live bytes against the limit: the time above it,
    /// and a backoff when cycles have not brought live bytes under it for
    /// [`LimitBackoff::after`]. Returns the backoff started, if any.
    fn book_limit_check(&mut self, live: u64, now: Instant) -> Option<LimitBackoff> {
        let limit_cycles = self.counters.cycles_by_reason[CycleReason::Limit.index()];
        if self.settings.memory_limit.is_none_or(|l| live <= l) {
            self.counters.over = None;
            return None;
        }
        let c = &mut self.counters;
        let over = c.over.get_or_insert(OverLimit {
            since: now,
            last_check: now,
            limit_cycles_before: limit_cycles,
        });
        c.limit_exceeded += now.saturating_duration_since(over.last_check);
        over.last_check = now;
        let backoff = self.settings.backoff?;
        let stuck = now.saturating_duration_since(over.since) >= backoff.after
            && limit_cycles > over.limit_cycles_before;
        if !stuck || self.settings.paused() {
            return None;
        }
        self.settings.paused_until = Some(now + backoff.pause);
        c.limit_backoffs += 1;
        // the next stretch is counted from the end of the pause
        over.since = now + backoff.pause;
        over.limit_cycles_before = limit_cycles;
        Some(backoff)
    }
}

#[derive(Debug)]
struct Shared {
    settings: Settings,
    counters: Counters,
    history: VecDeque<Cycle>,
    budget: Budget,
}

fn shared() -> MutexGuard<'static, Shared> {
    static SHARED: OnceLock<Mutex<Shared>> = OnceLock::new();
    SHARED
        .get_or_init(|| {
            let share = DEFAULT_TIME_SHARE;
            Mutex::new(Shared {
                settings: Settings {
                    threshold: Some(DEFAULT_THRESHOLD),
                    memory_limit: None,
                    release: ReleaseMode::Auto,
                    time_share: share,
                    backoff: Some(LimitBackoff::default()),
                    paused_until: None,
                    base: counters::live_bytes(),
                },
                counters: Counters::default(),
                history: VecDeque::with_capacity(CYCLE_HISTORY),
                budget: Budget {
                    tokens: share * BURST.as_secs_f64(),
                    at: Instant::now(),
                },
            })
        })
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

/// Reads the settings.
pub(super) fn read_settings<R>(f: impl FnOnce(&Settings) -> R) -> R {
    f(&shared().settings)
}

/// Changes the settings and wakes the collector thread so that it acts on
/// them at once.
pub(super) fn update_settings<R>(f: impl FnOnce(&mut Settings) -> R) -> R {
    let r = f(&mut shared().settings);
    FORCE_CHECK.store(true, Relaxed);
    wake();
    r
}

// ---------------------------------------------------------------------------
// The collector thread.
// ---------------------------------------------------------------------------

static THREAD: OnceLock<Thread> = OnceLock::new();
static STARTING: Mutex<()> = Mutex::new(());

fn wake() {
    if let Some(t) = THREAD.get() {
        t.unpark();
    }
}

/// Starts the collector thread once. A failure to spawn is logged and
/// retried at the next call.
pub(super) fn start() {
    if THREAD.get().is_some() {
        return;
    }
    let _once = STARTING.lock().unwrap_or_else(PoisonError::into_inner);
    if THREAD.get().is_some() {
        return;
    }
    {
        // "live bytes at collector start" is the first goal's base
        let mut s = shared();
        if s.counters.last_number == 0 {
            s.settings.base = counters::live_bytes();
        }
    }
    match std::thread::Builder::new()
        .name("allocscope-collect".into())
        .spawn(run)
    {
        Ok(h) => {
            let _ = THREAD.set(h.thread().clone());
        }
        Err(e) => log::error!(
            target: "allocscope",
            "cannot start the collector thread ({e}): no automatic collection cycles until \
             it can be started (it is retried at the next set_threshold, set_memory_limit, \
             register_reclaimer or collect)"
        ),
    }
}

fn running() -> bool {
    THREAD.get().is_some()
}

/// Set by setters and manual cycles: the next poll folds at once.
static FORCE_CHECK: AtomicBool = AtomicBool::new(true);

/// Full checks (a fold of every counter block, about 1 µs per block) take
/// at most this share of one core...
const CHECK_SHARE: f64 = 0.01;
/// ...and happen at every poll while that costs at most this share (a
/// process with a few threads: exact 5 ms checks).
const CHEAP_CHECK_SHARE: f64 = 0.002;
/// Longest time between two full checks, whatever the samples say: the
/// backstop for growth the sampler does not see (sampling off, a large
/// allocation that happened not to be sampled, frees)...
const BACKSTOP: Duration = Duration::from_millis(100);
/// ...or longer, so that backstop checks alone take at most this share of
/// a core (an idle process with very many threads).
const BACKSTOP_SHARE: f64 = 0.0025;

/// Closer to the level than this many sample intervals (and than
/// `NEAR_SAMPLES × NEAR_MIN`), full checks run at the budget's pace.
const NEAR_SAMPLES: u64 = 4;
const NEAR_MIN: u64 = 256 * 1024;

/// When the collector thread folds the counters ("a full check").
///
/// Every [`POLL_INTERVAL`] it reads the sampler's global count of sample
/// points (two relaxed loads): each stands for about `sample_interval`
/// bytes allocated, so `new samples × interval` estimates the allocation
/// since the last full check without reading any counter block. A full
/// check runs when the estimate reaches a quarter of the headroom the last
/// check left below the goal (or the near-limit level), whenever that
/// headroom is within [`NEAR_SAMPLES`] sample intervals, at least every
/// [`BACKSTOP`] (or [`BACKSTOP_SHARE`] of a core), and at every poll when a
/// fold is cheap; never more often than [`CHECK_SHARE`] of a core allows.
#[derive(Debug)]
struct Checks {
    last: Option<Instant>,
    /// Moving average of a fold's duration, seconds.
    cost: f64,
    samples: u64,
    live: u64,
}

impl Checks {
    fn due(&self, now: Instant, level: u64, interval: u64) -> bool {
        let Some(last) = self.last else { return true };
        let since = now.saturating_duration_since(last);
        let spacing = POLL_INTERVAL.max(Duration::from_secs_f64(self.cost / CHECK_SHARE));
        if since < spacing {
            return false;
        }
        let backstop = BACKSTOP.max(Duration::from_secs_f64(self.cost / BACKSTOP_SHARE));
        if self.cost <= POLL_INTERVAL.as_secs_f64() * CHEAP_CHECK_SHARE || since >= backstop {
            return true;
        }
        // Within a few samples' worth of bytes of the level, the samples
        // cannot tell: check as often as the budget allows.
        if self.near(level, interval) {
            return true;
        }
        let headroom = level.saturating_sub(self.live);
        let grown = crate::sampling::sample_points()
            .wrapping_sub(self.samples)
            .saturating_mul(interval);
        grown >= headroom / 4
    }

    /// Whether the last check left live bytes within [`NEAR_SAMPLES`]
    /// sample intervals of `level`.
    fn near(&self, level: u64, interval: u64) -> bool {
        level.saturating_sub(self.live) <= NEAR_SAMPLES * interval.max(NEAR_MIN)
    }

    /// Folds the counters: live bytes now.
    fn fold(&mut self, now: Instant) -> (u64, Duration) {
        let samples = crate::sampling::sample_points();
        let t0 = Instant::now();
        let live = counters::live_bytes();
        let took = t0.elapsed();
        let secs = took.as_secs_f64();
        self.cost = if self.last.is_none() {
            secs
        } else {
            0.8 * self.cost + 0.2 * secs
        };
        self.last = Some(now);
        self.samples = samples;
        self.live = live;
        (live, took)
    }
}

/// No allocation reached the sampler's cold path for this long: the
/// process is idle...
const IDLE_AFTER: Duration = Duration::from_millis(200);
/// ...and the collector polls this seldom (at most two wake-ups a second),
/// woken at once by the next allocation that reaches the cold path.
pub(super) const IDLE_POLL: Duration = Duration::from_millis(500);

/// How the collector waits between polls: [`POLL_INTERVAL`] while the
/// process allocates, [`IDLE_POLL`] once no allocation has reached the
/// sampler's cold path (a sample point or a check-in, at least once per
/// 1 MiB a thread allocates) for [`IDLE_AFTER`], woken by the next one.
///
/// Within a check-in of the level, or above it, it stays awake
/// ([`stay_awake`]); farther away, one thread cannot allocate its way past
/// the level without reaching the cold path and waking it. Several threads
/// allocating less than a check-in each can (rare after an idle stretch):
/// then the crossing is seen at the next idle poll at the latest.
#[derive(Debug, Default)]
struct Idle {
    /// Since when a wake-up is armed and no allocation came.
    armed_at: Option<Instant>,
}

impl Idle {
    /// Waits until the next poll; `awake`: poll every [`POLL_INTERVAL`]
    /// even when idle ([`stay_awake`]).
    fn pause(&mut self, awake: bool) {
        let now = Instant::now();
        let quiet = match self.armed_at {
            Some(t) if crate::sampling::wake_armed() => now.saturating_duration_since(t),
            _ => {
                // activity (or nothing armed yet): arm the next wake-up
                self.armed_at = crate::sampling::wake_on_activity().then_some(now);
                Duration::ZERO
            }
        };
        let wait = if quiet >= IDLE_AFTER && !awake {
            IDLE_POLL
        } else {
            POLL_INTERVAL
        };
        std::thread::park_timeout(wait);
    }
}

/// The collector thread: watches live bytes while a threshold or a limit
/// is set (see [`Checks`]), parks otherwise.
fn run() {
    let mut idle = Idle::default();
    let mut checks = Checks {
        last: None,
        cost: 0.0,
        samples: 0,
        live: 0,
    };
    loop {
        super::container::refresh();
        let (watching, level) = read_settings(|s| {
            let goal = s.goal();
            let goal = s
                .memory_limit
                .and_then(|limit| (super::limit_watcher()?.level)(limit))
                .map_or(goal, |l| l.min(goal));
            (s.watching(), goal)
        });
        if !watching {
            // Woken by a setter (or, in auto mode, to re-read the
            // container's limit).
            if super::container::auto_active() {
                std::thread::park_timeout(super::AUTO_REFRESH);
            } else {
                std::thread::park();
            }
            continue;
        }
        let now = Instant::now();
        let forced = FORCE_CHECK.swap(false, Relaxed);
        let interval = crate::sampling::interval();
        if !forced && !checks.due(now, level, interval) {
            idle.pause(stay_awake(checks.live, level));
            continue;
        }
        let (live, took) = checks.fold(now);
        let (due, limit) = {
            let mut s = shared();
            s.counters.polls += 1;
            s.counters.poll_time += took;
            let limit = s.settings.memory_limit;
            if let Some(b) = s.book_limit_check(live, now) {
                let n = s.counters.limit_backoffs;
                let text = format!(
                    "live bytes ({live}) stayed above the memory limit ({} bytes) for {:?} \
                     although collection cycles ran: cycles on the limit are paused for {:?} \
                     (backoff {n}; gc::set_limit_backoff, memory_limit_backoff_after and \
                     memory_limit_backoff_pause); the threshold still applies",
                    limit.unwrap_or(0),
                    b.after,
                    b.pause
                );
                if n == 1 {
                    log::warn!(target: "allocscope", "{text}");
                } else {
                    log::info!(target: "allocscope", "{text}");
                }
            }
            let due = if live > s.settings.goal() {
                let share = s.settings.time_share;
                match s.budget.check(Instant::now(), share) {
                    Ok(()) => Some(Ok(())),
                    Err(wait) => {
                        s.counters.skipped_triggers += 1;
                        Some(Err(wait))
                    }
                }
            } else {
                None
            };
            (due, limit)
        };
        if let (Some(limit), Some(w)) = (limit, super::limit_watcher()) {
            (w.check)(live, limit);
        }
        match due {
            Some(Ok(())) => {
                if let Some(c) = run_automatic() {
                    // the cycle measured live bytes at its end
                    checks.live = c.live_bytes_after;
                    checks.samples = crate::sampling::sample_points();
                }
            }
            Some(Err(wait)) => {
                // The budget is spent: wait until it refills (or a setter
                // wakes us), then look again.
                std::thread::park_timeout(wait.max(POLL_INTERVAL));
                continue;
            }
            None => {}
        }
        idle.pause(stay_awake(checks.live, level));
    }
}

/// Whether the collector keeps polling every [`POLL_INTERVAL`] though the
/// process is idle: live bytes above the level (cycles are due, paced by
/// the CPU limiter), or within one check-in (1 MiB) of it, where a few
/// small allocations could cross it without reaching the sampler's cold
/// path. Farther away, a thread cannot allocate the headroom without
/// reaching the cold path first (its countdown is at most a check-in),
/// which wakes the collector.
fn stay_awake(live: u64, level: u64) -> bool {
    level.saturating_sub(live) <= crate::sampling::CHECK_IN
}

// ---------------------------------------------------------------------------
// One cycle.
// ---------------------------------------------------------------------------

static CYCLE: Mutex<()> = Mutex::new(());

thread_local! {
    /// Set on the thread running a cycle, while it runs.
    static IN_CYCLE: Cell<bool> = const { Cell::new(false) };
}

struct InCycle;

impl InCycle {
    fn enter() -> InCycle {
        IN_CYCLE.with(|c| c.set(true));
        InCycle
    }
}

impl Drop for InCycle {
    fn drop(&mut self) {
        IN_CYCLE.with(|c| c.set(false));
    }
}

/// A manual cycle ([`super::collect`]).
pub(super) fn run_manual() -> Cycle {
    if IN_CYCLE.with(Cell::get) {
        log::warn!(
            target: "allocscope",
            "allocscope::collect() called from inside a reclaimer: cycles do not nest, nothing ran"
        );
        let (live, s) = (counters::live_bytes(), shared());
        let goal = s.settings.goal();
        return Cycle {
            number: 0,
            reason: CycleReason::Manual,
            start: SystemTime::now(),
            duration: Duration::ZERO,
            goal_bytes: goal,
            memory_limit: s.settings.memory_limit,
            threshold: s.settings.threshold,
            live_bytes_before: live,
            live_bytes_after: live,
            resident_bytes_before: None,
            resident_bytes_after: None,
            released_to_os: false,
            released_bytes: 0,
            reclaimed_bytes: 0,
            reclaimers: 0,
            reclaimer_panics: 0,
            next_goal_bytes: goal,
        };
    }
    let turn = CYCLE.lock().unwrap_or_else(PoisonError::into_inner);
    let (start, t0, live) = (SystemTime::now(), Instant::now(), counters::live_bytes());
    let c = run_locked(&turn, CycleReason::Manual, start, t0, live);
    // the goal moved: the collector looks again at once
    FORCE_CHECK.store(true, Relaxed);
    c
}

/// An automatic cycle, if its trigger still holds once the cycle lock is
/// held (a manual cycle may have run meanwhile).
fn run_automatic() -> Option<Cycle> {
    let turn = CYCLE.lock().unwrap_or_else(PoisonError::into_inner);
    let (start, t0, live) = (SystemTime::now(), Instant::now(), counters::live_bytes());
    let reason = {
        let s = shared();
        if s.settings.limit_in_force().is_some_and(|l| live > l) {
            CycleReason::Limit
        } else if live > s.settings.goal() {
            CycleReason::Threshold
        } else {
            return None;
        }
    };
    Some(run_locked(&turn, reason, start, t0, live))
}

/// Runs one cycle; the caller holds the cycle lock (`_turn`) and measured
/// the live bytes at `t0`.
fn run_locked(
    _turn: &MutexGuard<'_, ()>,
    reason: CycleReason,
    start: SystemTime,
    t0: Instant,
    live_before: u64,
) -> Cycle {
    let _in = InCycle::enter();
    let (number, pressure, threshold, release) = {
        let mut s = shared();
        s.counters.last_number += 1;
        (
            s.counters.last_number,
            s.settings.pressure(reason, live_before),
            s.settings.threshold,
            s.settings.release,
        )
    };
    let resident_before = sys::resident_bytes();

    let mut reclaimed = 0u64;
    let mut called = 0usize;
    let mut panics = 0usize;
    for r in reclaim::snapshot() {
        if !r.active() {
            continue;
        }
        called += 1;
        match catch_unwind(AssertUnwindSafe(|| (r.f)(&pressure))) {
            Ok(n) => reclaimed = reclaimed.saturating_add(n as u64),
            Err(payload) => {
                panics += 1;
                let msg = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a non-string panic payload".to_string());
                log::error!(
                    target: "allocscope",
                    "reclaimer {:?} panicked in collection cycle {number} ({}): {msg}; \
                     the other reclaimers still ran",
                    r.name,
                    pressure.reason
                );
                // Dropping a panic payload can itself panic.
                let _ = catch_unwind(AssertUnwindSafe(move || drop(payload)));
            }
        }
    }
    let (released_to_os, released) = os::release(release);
    let live_after = counters::live_bytes();
    let resident_after = sys::resident_bytes();
    let duration = t0.elapsed();

    let mut s = shared();
    s.settings.base = live_after;
    let next_goal = s.settings.goal();
    let c = &mut s.counters;
    c.cycles_by_reason[pressure.reason.index()] += 1;
    c.total_duration += duration;
    let secs = duration.as_secs_f64();
    let bucket = DURATION_BUCKETS
        .iter()
        .position(|&b| secs <= b)
        .unwrap_or(DURATION_BUCKETS.len());
    c.duration_buckets[bucket] += 1;
    c.released_bytes = c.released_bytes.saturating_add(released);
    c.reclaimed_bytes = c.reclaimed_bytes.saturating_add(reclaimed);
    c.reclaimer_panics += panics as u64;
    if pressure.reason != CycleReason::Manual {
        let share = s.settings.time_share;
        s.budget.charge(Instant::now(), share, duration);
    }
    let cycle = Cycle {
        number,
        reason: pressure.reason,
        start,
        duration,
        goal_bytes: pressure.goal_bytes,
        memory_limit: pressure.memory_limit,
        threshold,
        live_bytes_before: live_before,
        live_bytes_after: live_after,
        resident_bytes_before: resident_before,
        resident_bytes_after: resident_after,
        released_to_os,
        released_bytes: released,
        reclaimed_bytes: reclaimed,
        reclaimers: called,
        reclaimer_panics: panics,
        next_goal_bytes: next_goal,
    };
    if s.history.len() == CYCLE_HISTORY {
        s.history.pop_front();
    }
    s.history.push_back(cycle.clone());
    drop(s);
    log::debug!(
        target: "allocscope",
        "collection cycle {number} ({}): live {live_before} -> {live_after} bytes, \
         reclaimers reported {reclaimed}, released {released}, took {duration:?}",
        pressure.reason
    );
    cycle
}

/// The recent cycles, oldest first.
pub(super) fn history() -> Vec<Cycle> {
    shared().history.iter().cloned().collect()
}

/// The collector's settings and counters.
pub(super) fn stats() -> Stats {
    let live = counters::live_bytes();
    let reclaimers = reclaim::count();
    let s = shared();
    let c = &s.counters;
    Stats {
        threshold: s.settings.threshold,
        memory_limit: s.settings.memory_limit,
        heap_goal: s.settings.goal(),
        live_bytes: live,
        cycles_by_reason: c.cycles_by_reason,
        skipped_triggers: c.skipped_triggers,
        total_duration: c.total_duration,
        duration_buckets: c.duration_buckets,
        released_bytes: c.released_bytes,
        reclaimed_bytes: c.reclaimed_bytes,
        reclaimer_panics: c.reclaimer_panics,
        reclaimers,
        near_limit_profiles: super::limit_watcher().map_or(0, |w| (w.count)()),
        polls: c.polls,
        poll_time: c.poll_time,
        collector_running: running(),
        release_to_os: s.settings.release,
        glibc_malloc_detected: sys::glibc_malloc_detected(),
        time_share: s.settings.time_share,
        limit_exceeded: c.limit_exceeded,
        limit_backoffs: c.limit_backoffs,
        limit_paused: s.settings.paused(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_limits_the_share() {
        let t0 = Instant::now();
        let share = 0.1;
        let mut b = Budget {
            tokens: share * BURST.as_secs_f64(),
            at: t0,
        };
        // Cycles of 20 ms back to back, as often as allowed, for 10 s.
        let mut now = t0;
        let mut busy = Duration::ZERO;
        let end = t0 + Duration::from_secs(10);
        while now < end {
            match b.check(now, share) {
                Ok(()) => {
                    now += Duration::from_millis(20);
                    b.charge(now, share, Duration::from_millis(20));
                    busy += Duration::from_millis(20);
                }
                Err(wait) => now += wait.max(Duration::from_millis(1)),
            }
        }
        let total = now - t0;
        // share × T plus the burst plus one cycle
        let bound = total.mul_f64(share) + BURST.mul_f64(share) + Duration::from_millis(20);
        assert!(busy <= bound, "{busy:?} > {bound:?}");
        assert!(busy >= total.mul_f64(share * 0.9), "{busy:?} too little");
    }

    #[test]
    fn goal_is_the_smaller_of_threshold_and_limit() {
        let mut s = Settings {
            threshold: Some(100),
            memory_limit: None,
            release: ReleaseMode::Never,
            time_share: 0.1,
            backoff: None,
            paused_until: None,
            base: 10 << 20,
        };
        assert_eq!(s.goal(), 20 << 20);
        s.memory_limit = Some(15 << 20);
        assert_eq!(s.goal(), 15 << 20);
        s.threshold = None;
        assert_eq!(s.goal(), 15 << 20);
        s.memory_limit = None;
        assert_eq!(s.goal(), u64::MAX);
        assert!(!s.watching());
        let p = Settings {
            memory_limit: Some(5),
            threshold: Some(100),
            ..s
        }
        .pressure(CycleReason::Limit, 30 << 20);
        assert_eq!(p.over_limit_bytes, (30 << 20) - 5);
        assert_eq!(p.goal_bytes, 5);
    }

    #[test]
    fn backoff_when_cycles_cannot_bring_live_bytes_under_the_limit() {
        let t0 = Instant::now();
        let b = LimitBackoff {
            after: Duration::from_secs(1),
            pause: Duration::from_secs(60),
        };
        let mut sh = Shared {
            settings: Settings {
                threshold: None,
                memory_limit: Some(100),
                release: ReleaseMode::Never,
                time_share: 0.1,
                backoff: Some(b),
                paused_until: None,
                base: 0,
            },
            counters: Counters::default(),
            history: VecDeque::new(),
            budget: Budget {
                tokens: 0.0,
                at: t0,
            },
        };
        let at = |ms| t0 + Duration::from_millis(ms);
        // under the limit: nothing
        assert_eq!(sh.book_limit_check(50, at(0)), None);
        // above it, with no cycle run: time is counted, no backoff
        assert_eq!(sh.book_limit_check(150, at(0)), None);
        assert_eq!(sh.book_limit_check(150, at(1500)), None);
        assert_eq!(sh.counters.limit_exceeded, Duration::from_millis(1500));
        // cycles ran and live bytes are still above it after `after`
        sh.counters.cycles_by_reason[CycleReason::Limit.index()] += 3;
        assert_eq!(sh.book_limit_check(150, at(1600)), Some(b));
        assert_eq!(sh.counters.limit_backoffs, 1);
        assert!(sh.settings.paused());
        // paused: the limit no longer sets the goal, and no second backoff
        assert_eq!(sh.settings.goal(), u64::MAX);
        assert_eq!(sh.settings.limit_in_force(), None);
        sh.counters.cycles_by_reason[CycleReason::Limit.index()] += 1;
        assert_eq!(sh.book_limit_check(150, at(3000)), None);
        assert_eq!(sh.counters.limit_backoffs, 1);
        // back under the limit: the stretch ends
        assert_eq!(sh.book_limit_check(99, at(3100)), None);
        assert!(sh.counters.over.is_none());
        assert_eq!(sh.counters.limit_exceeded, Duration::from_millis(3000));
        // no backoff configured: never
        sh.settings.backoff = None;
        sh.settings.paused_until = None;
        sh.counters.cycles_by_reason[CycleReason::Limit.index()] += 1;
        assert_eq!(sh.book_limit_check(150, at(4000)), None);
        sh.counters.cycles_by_reason[CycleReason::Limit.index()] += 1;
        assert_eq!(sh.book_limit_check(150, at(9000)), None);
    }
}
