//! Leak suspects: a bounded ring of per-stack in-use snapshots and a robust
//! trend test over it.
//!
//! [`LeakTracker::record`] takes one [`HeapProfile`] (every
//! `leak_snapshot_interval`, the exporter calls it off the request path)
//! and keeps, per stack, a few numbers: the estimated in-use bytes, the
//! sampled allocation and live counts, and the age of the oldest live
//! sample. Whole profiles are never kept. The exporter's own allocations
//! (stacks through `allocscope::profile::` or `allocscope::server::`: the
//! symbol cache, profiles being built, this tracker) are left out: they are
//! bounded by their own caps, and they are not the host's leak. [`LeakTracker::report`] ranks the
//! stacks whose in-use bytes grow steadily.
//!
//! # The trend test, and why
//! Sampled in-use bytes are noisy (a Poisson count of samples times a
//! scale), come in at a handful of points (5..60), jump when a cache is
//! trimmed and have many ties (no new sample in an interval). Least squares
//! is dragged by one jump and its p-value assumes normal noise; so:
//!
//! - **Mann–Kendall** `S = Σ_{i<j} sign(y_j − y_i)` counts rising minus
//!   falling pairs: rank-based, blind to the size of jumps, with the tie
//!   correction of its variance `(n(n−1)(2n+5) − Σ t(t−1)(2t+5)) / 18`. The
//!   continuity-corrected `z = (S − 1) / √var` is the stack's evidence of a
//!   monotone rise (one-sided p ≈ 1 − Φ(z); a strictly rising series gives
//!   z = 2.2 at 5 snapshots, 3.9 at 10, 10.6 at 60).
//! - **Theil–Sen**: the median of the pairwise slopes, the growth in bytes
//!   per hour. Robust to a third of the points being outliers; a stack whose
//!   slope is not positive scores 0.
//! - **Retention**: of the samples the stack allocated over the window, the
//!   share still live at its end. A leak keeps everything (1); request churn
//!   whose in-use happens to drift keeps almost nothing of its many
//!   allocations (≈ 0). It weighs the score linearly up to
//!   [`RETENTION_FULL`] (10%) and fully above.
//! - **Drawdown**: the largest fall from the running peak, as a share of
//!   it. A leak does not give back what it holds; a cache that is trimmed
//!   does: the score is weighed by `1 − drawdown` (a cache trimmed to a
//!   tenth keeps a tenth of its score, so a trimmed cache whose growth
//!   phases happen to line up with the snapshots is not a suspect; a stack
//!   that freed much once is judged again when that fall leaves the ring).
//! - **Age**: when the sampler knows the age of the oldest live sample
//!   ([`Bucket::oldest_age`]), a leak's oldest sample ages as fast as the
//!   clock, while a trimmed cache's or churn's does not: the score is
//!   weighed by `Δ oldest age / Δ time` (0..1) over the window. Unknown ages
//!   weigh 1.
//!
//! `score = z × min(1, retention / 0.1) × (1 − drawdown) × age factor`, and a stack is a
//! suspect when its score is at least [`LEAK_SCORE_THRESHOLD`] (2.0: a
//! strictly rising, fully retained series passes at
//! [`MIN_LEAK_SNAPSHOTS`] = 5 snapshots, one-sided p ≈ 0.014; noise needs
//! both an unlikely run and a high retention).
//!
//! # Bounds
//! At most [`MAX_TRACKED_STACKS`] (256) stacks are tracked: each snapshot
//! adds up to [`NEW_STACKS_PER_SNAPSHOT`] (64) untracked stacks with the
//! most in-use bytes, evicting the tracked stack with the fewest in-use
//! bytes when full. A tracked stack keeps one 24-byte point per snapshot of
//! the ring (reserved when it is first tracked), its name once, and the
//! report keeps the top [`MAX_REPORTED`] entries: about 256 × 60 × 24 =
//! 369 KB of points at the defaults, plus the names.
//! [`LeakTracker::memory_bytes`] counts it all.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Bucket, HeapProfile, SampleType};

/// The score from which a stack is a leak suspect (see the module docs).
pub const LEAK_SCORE_THRESHOLD: f64 = 2.0;
/// Snapshots a stack needs in the ring before it is scored.
pub const MIN_LEAK_SNAPSHOTS: usize = 5;
/// Most stacks tracked at once.
pub const MAX_TRACKED_STACKS: usize = 256;
/// Most untracked stacks a snapshot starts tracking (those with the most
/// in-use bytes).
pub const NEW_STACKS_PER_SNAPSHOT: usize = 64;
/// Most ranked stacks a report keeps.
pub const MAX_REPORTED: usize = 20;
/// The retention (share of the window's sampled allocations still live at
/// its end) from which it no longer lowers the score.
pub const RETENTION_FULL: f64 = 0.1;

/// Whether `name` is std's allocation machinery (see [`suspect_stack`]):
/// the one list, [`super::ALLOCATION_MACHINERY`]. A trimmed profile (the
/// default capture) has none at its leaves already; a raw one does.
fn is_machinery(name: &str) -> bool {
    super::machinery::is_machinery_name(name)
}

/// Whether a bucket is allocscope's own exporter at work (profiles, the
/// symbol cache, the leak snapshots; sampled in the `allocscope` scope or
/// with allocscope's frames): bounded by their own caps, and not the
/// host's leak.
fn is_exporters_own(b: &Bucket) -> bool {
    b.scope() == crate::scope::ALLOCSCOPE.name()
        || b.frames().iter().any(|f| {
            let n = f.name();
            n.starts_with("allocscope::profile::") || n.starts_with("allocscope::server::")
        })
}

/// The stack a suspect is grouped and shown by: function names, leaf
/// first, std's allocation machinery skipped at the leaf end (the whole
/// stack when it is all machinery).
pub(crate) fn suspect_stack(b: &Bucket) -> Vec<String> {
    let frames = b.frames();
    let skip = frames.iter().take_while(|f| is_machinery(f.name())).count();
    let rest = if skip == frames.len() {
        frames
    } else {
        &frames[skip..]
    };
    rest.iter().map(|f| f.name().to_string()).collect()
}

/// One stack at one snapshot. 24 bytes.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Point {
    /// Estimated in-use bytes.
    inuse: u64,
    /// Sampled allocations so far (saturating).
    allocs: u32,
    /// Sampled allocations live now (saturating).
    live: u32,
    /// Age of the oldest live sample, seconds; NaN when unknown.
    age: f32,
}

impl Point {
    const EMPTY: Point = Point {
        inuse: 0,
        allocs: 0,
        live: 0,
        age: f32::NAN,
    };
}

/// A tracked stack: its points, the last one at the newest snapshot.
#[derive(Debug)]
struct Tracked {
    /// Snapshot number of `points[0]`.
    since: u64,
    points: VecDeque<Point>,
}

/// One ranked stack of a [`LeakReport`].
#[derive(Clone, Debug, PartialEq)]
pub struct LeakSuspect {
    /// Function names, leaf first, std's allocation machinery skipped.
    pub stack: Vec<String>,
    /// Estimated in-use bytes at the newest snapshot.
    pub inuse_bytes: u64,
    /// Theil–Sen slope of the in-use bytes over the window, per hour.
    pub growth_bytes_per_hour: f64,
    /// Age of the stack's oldest live sample at the newest snapshot, when
    /// the sampler knows it.
    pub oldest_age: Option<Duration>,
    /// The leak score (see the module docs); a suspect from
    /// [`LEAK_SCORE_THRESHOLD`].
    pub score: f64,
}

/// What a [`LeakTracker`] concludes after its newest snapshot.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LeakReport {
    /// Snapshots in the ring.
    pub snapshots: usize,
    /// Time from the oldest to the newest snapshot of the ring.
    pub span: Duration,
    /// Stacks tracked.
    pub tracked_stacks: usize,
    /// Stacks scoring at least [`LEAK_SCORE_THRESHOLD`].
    pub suspects: usize,
    /// The scored stacks, highest score first (ties: faster growth first),
    /// at most [`MAX_REPORTED`]; the first [`LeakReport::suspects`] of them
    /// (or all, if fewer are kept) are the suspects.
    pub ranked: Vec<LeakSuspect>,
}

impl LeakReport {
    /// The suspects: ranked stacks scoring at least
    /// [`LEAK_SCORE_THRESHOLD`], most suspicious first.
    pub fn suspects(&self) -> &[LeakSuspect] {
        &self.ranked[..self.suspects.min(self.ranked.len())]
    }
}

/// A bounded ring of per-stack in-use snapshots and the leak suspects it
/// shows (see the module docs).
///
/// ```
/// # #[cfg(feature = "profile")] {
/// use allocscope::profile::{HeapProfile, LeakTracker};
/// let mut t = LeakTracker::new(60);
/// t.record(&HeapProfile::capture()); // every minute, say
/// for s in t.report().suspects() {
///     println!("{:?} grows {:.0} B/h", s.stack.first(), s.growth_bytes_per_hour);
/// }
/// # }
/// ```
#[derive(Debug)]
pub struct LeakTracker {
    ring: usize,
    start: Instant,
    /// Snapshots recorded so far; the newest is number `seq - 1`.
    seq: u64,
    /// Seconds since `start` of the snapshots in the ring, oldest first.
    times: VecDeque<f64>,
    /// Per snapshot of the ring: whether every stack with in-use bytes was
    /// tracked then (so an untracked stack had none).
    complete: VecDeque<bool>,
    stacks: HashMap<Arc<str>, Tracked>,
    report: LeakReport,
}

impl LeakTracker {
    /// A tracker keeping the last `ring` snapshots (at least
    /// [`MIN_LEAK_SNAPSHOTS`]; smaller values are raised to it).
    pub fn new(ring: usize) -> LeakTracker {
        let ring = ring.max(MIN_LEAK_SNAPSHOTS);
        LeakTracker {
            ring,
            start: Instant::now(),
            seq: 0,
            times: VecDeque::with_capacity(ring),
            complete: VecDeque::with_capacity(ring),
            stacks: HashMap::new(),
            report: LeakReport::default(),
        }
    }

    /// How many snapshots the ring keeps.
    pub fn ring_len(&self) -> usize {
        self.ring
    }

    /// Records `profile` as the snapshot taken now, and updates the report.
    pub fn record(&mut self, profile: &HeapProfile) {
        self.record_at(profile, Instant::now());
    }

    /// Records `profile` as the snapshot taken at `at` (not before the
    /// previous snapshot's time), and updates the report.
    pub fn record_at(&mut self, profile: &HeapProfile, at: Instant) {
        // Group the buckets by suspect stack; buckets of one symbolised
        // stack share their frames, so each is trimmed and named once.
        let mut names: HashMap<*const super::Frame, Arc<str>> = HashMap::new();
        let mut current: HashMap<Arc<str>, Point> = HashMap::new();
        for b in profile.buckets() {
            if is_exporters_own(b) {
                continue;
            }
            let key = names
                .entry(b.frames().as_ptr())
                .or_insert_with(|| suspect_stack(b).join("\n").into())
                .clone();
            let p = current.entry(key).or_insert(Point {
                age: f32::NAN,
                ..Point::EMPTY
            });
            p.inuse = p.inuse.saturating_add(b.estimate(SampleType::InuseSpace));
            p.allocs = p.allocs.saturating_add(sat32(b.sampled_allocs()));
            p.live = p.live.saturating_add(sat32(b.sampled_inuse()));
            if let Some(age) = b.oldest_age() {
                let a = age.as_secs_f32();
                if p.age.is_nan() || a > p.age {
                    p.age = a;
                }
            }
        }
        drop(names);
        let t = at.saturating_duration_since(self.start).as_secs_f64();
        self.record_points(t, current);
    }

    /// Records one snapshot at `t` seconds: the points of the stacks the
    /// profile had.
    fn record_points(&mut self, t: f64, mut current: HashMap<Arc<str>, Point>) {
        let t = self.times.back().map_or(t, |&last| t.max(last));
        if self.times.len() == self.ring {
            self.times.pop_front();
            self.complete.pop_front();
        }
        self.times.push_back(t);
        let seq = self.seq;
        self.seq += 1;
        let oldest = self.seq - self.times.len() as u64;
        for (key, tr) in &mut self.stacks {
            let p = current.remove(key).unwrap_or_else(|| Point {
                allocs: tr.points.back().map_or(0, |p| p.allocs),
                ..Point::EMPTY
            });
            if tr.points.len() == self.ring {
                tr.points.pop_front();
                tr.since += 1;
            }
            tr.points.push_back(p);
            while tr.since < oldest && !tr.points.is_empty() {
                tr.points.pop_front();
                tr.since += 1;
            }
        }
        // Start tracking the biggest untracked stacks.
        let mut new: Vec<(Arc<str>, Point)> =
            current.into_iter().filter(|(_, p)| p.inuse > 0).collect();
        new.sort_unstable_by(|a, b| b.1.inuse.cmp(&a.1.inuse).then_with(|| a.0.cmp(&b.0)));
        let mut complete = new.len() <= NEW_STACKS_PER_SNAPSHOT;
        new.truncate(NEW_STACKS_PER_SNAPSHOT);
        // A new stack had no in-use bytes at the complete snapshots just
        // before this one: it starts with those zeros (a leak that began
        // after the first snapshot is judged from it).
        let zeros = self
            .complete
            .iter()
            .rev()
            .take_while(|c| **c)
            .count()
            .min(self.ring - 1);
        for (key, p) in new {
            if self.stacks.len() >= MAX_TRACKED_STACKS {
                let smallest = self
                    .stacks
                    .iter()
                    .map(|(k, tr)| (tr.points.back().map_or(0, |p| p.inuse), k))
                    .min();
                complete = false;
                match smallest {
                    Some((inuse, k)) if inuse < p.inuse => {
                        let k = k.clone();
                        self.stacks.remove(&k);
                    }
                    _ => break,
                }
            }
            let mut points = VecDeque::with_capacity(self.ring);
            points.extend(std::iter::repeat_n(Point::EMPTY, zeros));
            points.push_back(p);
            self.stacks.insert(
                key,
                Tracked {
                    since: seq - zeros as u64,
                    points,
                },
            );
        }
        self.complete.push_back(complete);
        self.report = self.compute_report();
    }

    /// The report after the newest snapshot (empty before the first).
    pub fn report(&self) -> &LeakReport {
        &self.report
    }

    /// Bytes the tracker holds: the ring's times and points (their
    /// reserved capacity), the stacks' names, the index and the report.
    pub fn memory_bytes(&self) -> usize {
        use std::mem::size_of;
        let index = self.stacks.capacity() * (size_of::<(Arc<str>, Tracked)>() + 1);
        let stacks: usize = self
            .stacks
            .iter()
            .map(|(k, tr)| {
                k.len() + 2 * size_of::<usize>() + tr.points.capacity() * size_of::<Point>()
            })
            .sum();
        let report: usize = self.report.ranked.capacity() * size_of::<LeakSuspect>()
            + self
                .report
                .ranked
                .iter()
                .map(|s| {
                    s.stack.capacity() * size_of::<String>()
                        + s.stack.iter().map(String::capacity).sum::<usize>()
                })
                .sum::<usize>();
        size_of::<LeakTracker>()
            + self.times.capacity() * size_of::<f64>()
            + self.complete.capacity()
            + index
            + stacks
            + report
    }

    fn compute_report(&self) -> LeakReport {
        let times: Vec<f64> = self.times.iter().copied().collect();
        let oldest = self.seq - times.len() as u64;
        let mut scratch = Vec::new();
        let mut ranked: Vec<(Arc<str>, LeakSuspect)> = Vec::new();
        for (key, tr) in &self.stacks {
            if tr.points.len() < MIN_LEAK_SNAPSHOTS {
                continue;
            }
            let first = (tr.since - oldest) as usize;
            let ts = &times[first..first + tr.points.len()];
            let points: Vec<Point> = tr.points.iter().copied().collect();
            let (score, slope) = score(ts, points, &mut scratch);
            let last = tr.points.back().copied().unwrap_or(Point::EMPTY);
            ranked.push((
                key.clone(),
                LeakSuspect {
                    stack: Vec::new(),
                    inuse_bytes: last.inuse,
                    growth_bytes_per_hour: slope * 3600.0,
                    oldest_age: Duration::try_from_secs_f32(last.age).ok(),
                    score,
                },
            ));
        }
        ranked.sort_by(|a, b| {
            b.1.score
                .total_cmp(&a.1.score)
                .then(
                    b.1.growth_bytes_per_hour
                        .total_cmp(&a.1.growth_bytes_per_hour),
                )
                .then_with(|| a.0.cmp(&b.0))
        });
        let suspects = ranked
            .iter()
            .filter(|(_, s)| s.score >= LEAK_SCORE_THRESHOLD)
            .count();
        ranked.truncate(MAX_REPORTED);
        LeakReport {
            snapshots: times.len(),
            span: Duration::try_from_secs_f64(
                times.last().copied().unwrap_or(0.0) - times.first().copied().unwrap_or(0.0),
            )
            .unwrap_or_default(),
            tracked_stacks: self.stacks.len(),
            suspects,
            ranked: ranked
                .into_iter()
                .map(|(k, mut s)| {
                    s.stack = k.split('\n').map(str::to_string).collect();
                    s
                })
                .collect(),
        }
    }
}

fn sat32(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// The score of one stack's window and its Theil–Sen slope (bytes per
/// second): see the module docs.
fn score(times: &[f64], points: Vec<Point>, scratch: &mut Vec<f64>) -> (f64, f64) {
    let y: Vec<f64> = points.iter().map(|p| p.inuse as f64).collect();
    let slope = theil_sen(times, &y, scratch);
    let mk = mann_kendall(&y, scratch);
    let (Some(first), Some(last)) = (points.first(), points.last()) else {
        return (0.0, slope);
    };
    if slope <= 0.0 || mk.z <= 0.0 {
        return (0.0, slope);
    }
    let allocated = last.allocs.saturating_sub(first.allocs);
    let kept = f64::from(last.live) - f64::from(first.live);
    let retention = if allocated == 0 {
        0.0
    } else {
        (kept / f64::from(allocated)).clamp(0.0, 1.0)
    };
    let weight = (retention / RETENTION_FULL).min(1.0);
    (
        mk.z * weight * (1.0 - drawdown(&y)) * age_factor(times, &points),
        slope,
    )
}

/// The largest fall of the series from its running peak, as a share of
/// that peak (0..1): 0.9 for a cache trimmed to a tenth, 0 for a leak.
fn drawdown(y: &[f64]) -> f64 {
    let mut peak = 0.0f64;
    let mut worst = 0.0f64;
    for &v in y {
        peak = peak.max(v);
        if peak > 0.0 {
            worst = worst.max((peak - v) / peak);
        }
    }
    worst.clamp(0.0, 1.0)
}

/// How fast the oldest live sample aged over the window, against the
/// clock (0..1), from the first and last points whose age is known; 1
/// when fewer than two are.
fn age_factor(times: &[f64], points: &[Point]) -> f64 {
    let known = || times.iter().zip(points).filter(|(_, p)| p.age.is_finite());
    let (Some((t0, p0)), Some((t1, p1))) = (known().next(), known().next_back()) else {
        return 1.0;
    };
    if t1 <= t0 {
        return 1.0;
    }
    ((f64::from(p1.age) - f64::from(p0.age)) / (t1 - t0)).clamp(0.0, 1.0)
}

/// The Mann–Kendall statistic of a series.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct MannKendall {
    /// Rising pairs minus falling pairs.
    pub(crate) s: i64,
    /// Variance of `s` under no trend, corrected for ties.
    pub(crate) var: f64,
    /// `(s ∓ 1) / √var`, 0 when `s` is 0 or there is no variance.
    pub(crate) z: f64,
}

/// Mann–Kendall's S, its tie-corrected variance and continuity-corrected z.
pub(crate) fn mann_kendall(y: &[f64], scratch: &mut Vec<f64>) -> MannKendall {
    let n = y.len();
    let mut s = 0i64;
    for i in 0..n {
        for j in i + 1..n {
            s += match y[j].partial_cmp(&y[i]) {
                Some(std::cmp::Ordering::Greater) => 1,
                Some(std::cmp::Ordering::Less) => -1,
                _ => 0,
            };
        }
    }
    let term = |t: f64| t * (t - 1.0) * (2.0 * t + 5.0);
    scratch.clear();
    scratch.extend_from_slice(y);
    scratch.sort_unstable_by(f64::total_cmp);
    let mut ties = 0.0;
    let mut run = 1usize;
    for i in 1..=scratch.len() {
        if i < scratch.len() && scratch[i] == scratch[i - 1] {
            run += 1;
        } else {
            if run > 1 {
                ties += term(run as f64);
            }
            run = 1;
        }
    }
    let var = ((term(n as f64) - ties) / 18.0).max(0.0);
    let z = if var <= 0.0 || s == 0 {
        0.0
    } else {
        (s - s.signum()) as f64 / var.sqrt()
    };
    MannKendall { s, var, z }
}

/// The Theil–Sen slope: the median of the pairwise slopes `(y_j − y_i) /
/// (t_j − t_i)` over the pairs with `t_j > t_i`; 0 with fewer than two
/// distinct times.
pub(crate) fn theil_sen(t: &[f64], y: &[f64], scratch: &mut Vec<f64>) -> f64 {
    scratch.clear();
    for i in 0..t.len().min(y.len()) {
        for j in i + 1..t.len().min(y.len()) {
            let dt = t[j] - t[i];
            if dt > 0.0 {
                scratch.push((y[j] - y[i]) / dt);
            }
        }
    }
    let n = scratch.len();
    if n == 0 {
        return 0.0;
    }
    let (_, &mut hi, _) = scratch.select_nth_unstable_by(n / 2, f64::total_cmp);
    if n % 2 == 1 {
        hi
    } else {
        let lo = scratch[..n / 2]
            .iter()
            .copied()
            .max_by(f64::total_cmp)
            .unwrap_or(hi);
        (lo + hi) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk(y: &[f64]) -> MannKendall {
        mann_kendall(y, &mut Vec::new())
    }

    fn ts(t: &[f64], y: &[f64]) -> f64 {
        theil_sen(t, y, &mut Vec::new())
    }

    fn secs(n: usize) -> Vec<f64> {
        (0..n).map(|i| i as f64).collect()
    }

    #[test]
    fn mann_kendall_known_values() {
        // strictly rising: S = n(n-1)/2, var = n(n-1)(2n+5)/18
        let m = mk(&[1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(m.s, 10);
        assert!((m.var - 300.0 / 18.0).abs() < 1e-9);
        assert!((m.z - 9.0 / (300.0f64 / 18.0).sqrt()).abs() < 1e-9);
        assert!(m.z > 2.2 && m.z < 2.21, "{}", m.z);
        let m = mk(&secs(10));
        assert_eq!(m.s, 45);
        assert!((m.z - 44.0 / 125f64.sqrt()).abs() < 1e-9);
        // falling mirrors rising
        let m = mk(&[5.0, 4.0, 3.0, 2.0, 1.0]);
        assert_eq!(m.s, -10);
        assert!(m.z < -2.2);
        // flat: no evidence, no variance
        let m = mk(&[3.0; 6]);
        assert_eq!((m.s, m.var, m.z), (0, 0.0, 0.0));
        // a hand-computed series, pairs: (1,3)+ (1,2)+ (1,4)+ (3,2)- (3,4)+ (2,4)+ => 4
        assert_eq!(mk(&[1.0, 3.0, 2.0, 4.0]).s, 4);
        // fewer than two points
        assert_eq!(mk(&[]).z, 0.0);
        assert_eq!(mk(&[7.0]).z, 0.0);
    }

    #[test]
    fn mann_kendall_ties() {
        // 0 1 1 2 3: S = 4 + 2·2 + 1 = 9, one tie group of 2
        let m = mk(&[0.0, 1.0, 1.0, 2.0, 3.0]);
        assert_eq!(m.s, 9);
        assert!((m.var - (300.0 - 18.0) / 18.0).abs() < 1e-9, "{}", m.var);
        assert!((m.z - 8.0 / m.var.sqrt()).abs() < 1e-9);
        // ties lower S more than they lower the variance: less evidence
        assert!(m.z < mk(&[0.0, 1.0, 2.0, 3.0, 4.0]).z);
        // 0 0 0 0 1: S = 4; var = (300 - 4·3·13)/18
        let m = mk(&[0.0, 0.0, 0.0, 0.0, 1.0]);
        assert_eq!(m.s, 4);
        assert!((m.var - (300.0 - 156.0) / 18.0).abs() < 1e-9);
    }

    #[test]
    fn theil_sen_known_slopes_and_outliers() {
        let t = secs(10);
        let y: Vec<f64> = t.iter().map(|x| 7.0 + 3.0 * x).collect();
        assert!((ts(&t, &y) - 3.0).abs() < 1e-12);
        let y: Vec<f64> = t.iter().map(|x| -2.5 * x).collect();
        assert!((ts(&t, &y) + 2.5).abs() < 1e-12);
        // uneven times
        let t2 = [0.0, 1.0, 3.0, 7.0];
        let y2: Vec<f64> = t2.iter().map(|x| 10.0 * x).collect();
        assert!((ts(&t2, &y2) - 10.0).abs() < 1e-12);
        // two wild outliers do not move it; least squares would
        let mut y: Vec<f64> = t.iter().map(|x| 100.0 * x).collect();
        y[3] = 1e9;
        y[8] = -1e9;
        assert!((ts(&t, &y) - 100.0).abs() < 1e-9, "{}", ts(&t, &y));
        // even number of pair slopes: the mean of the two middle ones
        assert_eq!(ts(&[0.0, 1.0], &[0.0, 4.0]), 4.0);
        assert_eq!(ts(&[0.0, 1.0, 2.0], &[0.0, 1.0, 5.0]), 2.5); // slopes 1, 2.5, 4
        assert_eq!(ts(&[0.0, 1.0, 2.0, 3.0], &[0.0, 0.0, 0.0, 6.0]), 1.0); // 0,0,0,2,3,6
                                                                           // equal times are skipped; nothing left gives 0
        assert_eq!(ts(&[1.0, 1.0], &[0.0, 5.0]), 0.0);
        assert_eq!(ts(&[], &[]), 0.0);
    }

    /// A deterministic pseudo-random stream (xorshift).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> f64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    #[test]
    fn noise_rarely_passes_the_monotonicity_test() {
        // iid noise: z >= 2 about 2.3% of the time at 10 points
        let mut r = Rng(0x9e3779b97f4a7c15);
        let trials = 4000;
        let over = (0..trials)
            .filter(|_| {
                let y: Vec<f64> = (0..10).map(|_| r.next()).collect();
                mk(&y).z >= LEAK_SCORE_THRESHOLD
            })
            .count();
        let rate = over as f64 / trials as f64;
        assert!(rate < 0.04, "{rate}");
        // a steady rise under noise as large as its whole growth is found
        let t = secs(10);
        let y: Vec<f64> = t.iter().map(|x| 1000.0 * x + 300.0 * r.next()).collect();
        assert!(mk(&y).z > 3.0);
        let slope = ts(&t, &y);
        assert!((slope - 1000.0).abs() < 100.0, "{slope}");
    }

    fn points(series: &[(u64, u32, u32, f32)]) -> Vec<Point> {
        series
            .iter()
            .map(|&(inuse, allocs, live, age)| Point {
                inuse,
                allocs,
                live,
                age,
            })
            .collect()
    }

    #[test]
    fn score_weighs_retention_and_age() {
        let t = secs(6);
        // a leak: keeps all it allocates, ages with the clock
        let leak: Vec<(u64, u32, u32, f32)> = (0..6)
            .map(|i| (i * 4096, i as u32 * 2, i as u32 * 2, f32::NAN))
            .collect();
        let (s, slope) = score(&t, points(&leak), &mut Vec::new());
        assert!((slope - 4096.0).abs() < 1e-9);
        assert!(s >= LEAK_SCORE_THRESHOLD, "{s}");
        assert_eq!(
            s,
            mk(&leak.iter().map(|p| p.0 as f64).collect::<Vec<_>>()).z
        );
        // churn whose in-use drifts up: thousands allocated, a few kept
        let churn: Vec<(u64, u32, u32, f32)> = (0..6)
            .map(|i| (1000 + i * 10, 1000 * i as u32, 10 + i as u32, f32::NAN))
            .collect();
        let (s, _) = score(&t, points(&churn), &mut Vec::new());
        assert!(s < 0.1, "{s}");
        // known ages: rising with the clock keeps the score; reset ages
        // (a trimmed cache) take it away
        let aged: Vec<_> = leak
            .iter()
            .enumerate()
            .map(|(i, p)| (p.0, p.1, p.2, 10.0 + i as f32))
            .collect();
        let (s1, _) = score(&t, points(&aged), &mut Vec::new());
        assert!((s1 - s_of(&leak)).abs() < 1e-9);
        let young: Vec<_> = leak.iter().map(|p| (p.0, p.1, p.2, 0.5)).collect();
        assert_eq!(score(&t, points(&young), &mut Vec::new()).0, 0.0);
        // a trimmed cache: rising, kept, then given back
        let cache: Vec<(u64, u32, u32, f32)> = [10, 20, 30, 3, 13, 23]
            .iter()
            .enumerate()
            .map(|(i, &v)| (v * 1000, i as u32 * 10, v as u32, f32::NAN))
            .collect();
        let (s, _) = score(&t, points(&cache), &mut Vec::new());
        assert!(s < 0.5, "{s}");
        assert!((drawdown(&[10.0, 20.0, 30.0, 3.0, 13.0]) - 0.9).abs() < 1e-12);
        assert_eq!(drawdown(&[0.0, 0.0, 1.0, 2.0]), 0.0);
        assert_eq!(drawdown(&[]), 0.0);
        // falling or flat: 0
        let falling: Vec<_> = leak.iter().rev().copied().collect();
        assert_eq!(score(&t, points(&falling), &mut Vec::new()).0, 0.0);
    }

    fn s_of(series: &[(u64, u32, u32, f32)]) -> f64 {
        score(&secs(series.len()), points(series), &mut Vec::new()).0
    }

    fn snapshot(t: &mut LeakTracker, at: f64, stacks: &[(&str, u64, u32, u32)]) {
        let current = stacks
            .iter()
            .map(|&(k, inuse, allocs, live)| {
                (
                    Arc::<str>::from(k),
                    Point {
                        inuse,
                        allocs,
                        live,
                        age: f32::NAN,
                    },
                )
            })
            .collect();
        t.record_points(at, current);
    }

    #[test]
    fn tracker_ranks_a_leak_over_a_trimmed_cache_and_churn() {
        let mut t = LeakTracker::new(60);
        for i in 0..10u64 {
            let cache = (i % 3) * 50_000; // grows, trimmed every 3
            snapshot(
                &mut t,
                i as f64,
                &[
                    ("leak\nmain", i * 10_000, i as u32 * 3, i as u32 * 3),
                    ("cache\nmain", cache, i as u32 * 20, (i % 3) as u32 * 20),
                    ("churn\nmain", 5000 + (i * 7919) % 3000, i as u32 * 500, 5),
                ],
            );
            let r = t.report();
            assert_eq!(r.snapshots, i as usize + 1);
            if i + 1 < MIN_LEAK_SNAPSHOTS as u64 {
                assert!(r.ranked.is_empty());
            }
            // the leak had nothing in use at the first snapshot, and is
            // judged from it: a suspect at the 5th
            if i + 1 == MIN_LEAK_SNAPSHOTS as u64 {
                assert_eq!(r.suspects().len(), 1, "{r:#?}");
            }
        }
        let r = t.report();
        assert_eq!(r.tracked_stacks, 3);
        assert_eq!(r.span, Duration::from_secs(9));
        assert_eq!(r.suspects, 1, "{r:#?}");
        let s = &r.suspects()[0];
        assert_eq!(s.stack, ["leak", "main"]);
        assert_eq!(s.inuse_bytes, 90_000);
        assert!((s.growth_bytes_per_hour - 10_000.0 * 3600.0).abs() < 1e-6);
        assert_eq!(s.oldest_age, None);
        assert!(t.memory_bytes() > 3 * 60 * 24, "{}", t.memory_bytes());
    }

    #[test]
    fn zeros_are_assumed_only_where_the_snapshot_saw_every_stack() {
        // snapshot 0 holds more new stacks than one snapshot tracks: a
        // stack first tracked later is not assumed to have been at 0 then
        let mut t = LeakTracker::new(60);
        let many: Vec<String> = (0..NEW_STACKS_PER_SNAPSHOT + 1)
            .map(|i| format!("s{i}"))
            .collect();
        let first: Vec<(&str, u64, u32, u32)> =
            many.iter().map(|k| (k.as_str(), 100, 1, 1)).collect();
        snapshot(&mut t, 0.0, &first);
        for i in 1..5u64 {
            snapshot(&mut t, i as f64, &[("leak", i * 1000, i as u32, i as u32)]);
        }
        assert!(t.report().ranked.iter().all(|s| s.stack != ["leak"]));
        snapshot(&mut t, 5.0, &[("leak", 5000, 5, 5)]);
        // the zero at snapshot 1 was not assumed either: 5 points now
        let r = t.report();
        assert!(r.ranked.iter().any(|s| s.stack == ["leak"]), "{r:#?}");
    }

    #[test]
    fn ring_and_stacks_are_bounded() {
        let mut t = LeakTracker::new(5);
        for i in 0..20u64 {
            let stacks: Vec<(String, u64, u32, u32)> = (0..100u64)
                .map(|s| (format!("f{}", i * 100 + s), 1 + s, 1, 1))
                .collect();
            let refs: Vec<(&str, u64, u32, u32)> = stacks
                .iter()
                .map(|(k, a, b, c)| (k.as_str(), *a, *b, *c))
                .collect();
            snapshot(&mut t, i as f64, &refs);
            assert!(t.stacks.len() <= MAX_TRACKED_STACKS);
            assert!(t.times.len() <= 5);
            assert!(t.stacks.values().all(|tr| tr.points.len() <= 5));
        }
        assert_eq!(t.report().snapshots, 5);
        assert_eq!(t.stacks.len(), MAX_TRACKED_STACKS);
        let m = t.memory_bytes();
        assert!(m < 256 * 1024, "{m}");
        // the ring never holds more than its length, even at 1
        assert_eq!(LeakTracker::new(1).ring_len(), MIN_LEAK_SNAPSHOTS);
    }

    #[test]
    fn machinery_is_trimmed() {
        for m in [
            "alloc::alloc::alloc",
            "alloc::raw_vec::RawVecInner<A>::finish_grow",
            "<alloc::vec::Vec<T> as core::clone::Clone>::clone",
            "<u8 as alloc::vec::spec_from_elem::SpecFromElem>::from_elem",
            "core::ptr::drop_in_place<x>",
        ] {
            assert!(is_machinery(m), "{m}");
        }
        for f in [
            "myapp::leak",
            "<myapp::Cache as core::default::Default>::default",
            "main",
        ] {
            assert!(!is_machinery(f), "{f}");
        }
        let p = crate::profile::tests::synthetic(
            1,
            &[
                (
                    &[
                        "main",
                        "myapp::leak",
                        "alloc::raw_vec::grow",
                        "alloc::alloc::alloc",
                    ],
                    8,
                    1,
                    0,
                ),
                (&["main", "alloc::alloc::alloc"], 16, 1, 0),
                (&["alloc::alloc::alloc"], 32, 1, 0),
            ],
        );
        let stacks: Vec<Vec<String>> = p.buckets().iter().map(suspect_stack).collect();
        assert!(
            stacks.contains(&vec!["myapp::leak".into(), "main".into()]),
            "{stacks:?}"
        );
        assert!(stacks.contains(&vec!["main".into()]), "{stacks:?}");
        // all machinery: kept whole
        assert!(
            stacks.contains(&vec!["alloc::alloc::alloc".into()]),
            "{stacks:?}"
        );
    }

    #[test]
    fn stacks_are_tracked_across_scopes_and_the_exporters_scope_is_not() {
        let p = crate::profile::tests::synthetic_labelled(
            1,
            &[
                (&["main", "myapp::leak"], 64, 4, 0, "checkout", "worker"),
                (&["main", "myapp::leak"], 64, 2, 0, "search", "indexer"),
                (&["main", "myapp::render"], 64, 8, 0, "allocscope", "main"),
            ],
        );
        assert!(p.buckets().iter().any(is_exporters_own));
        let mut t = LeakTracker::new(10);
        t.record(&p);
        // one stack, its scopes added up; the exporter's scope left out
        assert_eq!(t.report().tracked_stacks, 1);
    }
}
