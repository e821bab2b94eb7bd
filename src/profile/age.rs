//! Ages and lifetimes of sampled blocks: the age of each live sample
//! ([`Bucket::oldest_age`], [`HeapProfile::min_age`], the pprof `age`
//! label's groups) and the lifetime histograms of the freed ones
//! ([`Bucket::lifetimes`], [`Lifetimes`], the "temporary allocations" view
//! [`HeapProfile::short_lived`] and [`HeapProfile::temporary_stacks`]).
//!
//! The sampler stores each sampled block's birth time (a `CLOCK_MONOTONIC`
//! read, nanoseconds) in its live-set slot, and when the block is freed adds
//! its lifetime to its bucket's histogram: classes doubling from 1 µs to
//! past 1 h. Nothing here runs inside the allocator.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use super::{Bucket, Frame, HeapProfile, SampleType};
use crate::sampling::{LifetimeCounts, LIFETIME_CLASSES};

/// A bucket's lifetime histogram: how many of its sampled blocks were freed
/// after a lifetime in each class. Class 0 holds lifetimes under 1 µs,
/// class `k` (1 to 32) those from `2^(k-1)` µs to under `2^k` µs, the last
/// class those of `2^32` µs (71.6 minutes) or more. Counts of *sampled*
/// blocks (not un-sampled estimates); blocks still live are not in it.
///
/// Counts are 32-bit, saturating (as the sampler keeps them).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Lifetimes {
    /// `None`: all zero (no heap for the buckets that freed nothing).
    counts: LifetimeCounts,
}

impl std::fmt::Debug for Lifetimes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // the non-empty classes, as (lower bound, count)
        f.debug_map()
            .entries(
                self.counts()
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| **c > 0)
                    .map(|(k, c)| (Lifetimes::class_bounds(k).0, c)),
            )
            .finish()
    }
}

impl Lifetimes {
    /// How many classes there are (34).
    pub const CLASSES: usize = LIFETIME_CLASSES;

    #[cfg(test)]
    pub(crate) fn from_counts(counts: LifetimeCounts) -> Lifetimes {
        Lifetimes { counts }
    }

    /// Adds `other`'s counts (saturating), taking its box when this one
    /// has none.
    pub(crate) fn merge(&mut self, other: LifetimeCounts) {
        match (&mut self.counts, other) {
            (_, None) => {}
            (None, o) => self.counts = o,
            (Some(c), Some(o)) => {
                for (c, o) in c.iter_mut().zip(o.iter()) {
                    *c = c.saturating_add(*o);
                }
            }
        }
    }

    /// The count of each class, shortest lifetimes first
    /// ([`Lifetimes::CLASSES`] of them).
    pub fn counts(&self) -> [u64; LIFETIME_CLASSES] {
        match &self.counts {
            Some(c) => c.map(u64::from),
            None => [0; LIFETIME_CLASSES],
        }
    }

    /// The lifetimes class `k` holds: from the first bound up to, not
    /// including, the second (`None`: no upper bound). `(0, Some(1 µs))`
    /// for class 0; past the last class, `(Duration::MAX, None)`.
    pub fn class_bounds(k: usize) -> (Duration, Option<Duration>) {
        match k {
            0 => (Duration::ZERO, Some(Duration::from_micros(1))),
            k if k + 1 < LIFETIME_CLASSES => (
                Duration::from_micros(1 << (k - 1)),
                Some(Duration::from_micros(1 << k)),
            ),
            k if k + 1 == LIFETIME_CLASSES => (Duration::from_micros(1 << (k - 1)), None),
            _ => (Duration::MAX, None),
        }
    }

    /// Sampled blocks freed, all lifetimes.
    pub fn freed(&self) -> u64 {
        self.counts().iter().sum()
    }

    /// How many of the freed sampled blocks lived less than `d`: the
    /// classes below `d`, and of the class `d` falls in, the share of its
    /// width below `d` (lifetimes taken as spread evenly within a class).
    pub fn shorter_than(&self, d: Duration) -> f64 {
        let mut n = 0.0;
        let Some(counts) = &self.counts else {
            return 0.0;
        };
        for (k, &c) in counts.iter().enumerate() {
            let (lo, hi) = Lifetimes::class_bounds(k);
            if d <= lo {
                break;
            }
            match hi {
                Some(hi) if d < hi => {
                    let share = (d - lo).as_secs_f64() / (hi - lo).as_secs_f64();
                    n += c as f64 * share;
                }
                // the open-ended class counts only past its lower bound
                // by as far as one more doubling would go
                None => {
                    let share = ((d - lo).as_secs_f64() / lo.as_secs_f64()).min(1.0);
                    n += c as f64 * share;
                }
                Some(_) => n += c as f64,
            }
        }
        n
    }
}

/// The lifetime under which a freed block counts as temporary, in
/// nanoseconds (1 ms by default).
static TEMPORARY_NS: AtomicU64 = AtomicU64::new(1_000_000);

/// The shortest lifetime [`set_temporary_lifetime`] accepts: 1 µs.
pub const MIN_TEMPORARY_LIFETIME: Duration = Duration::from_micros(1);
/// The longest lifetime [`set_temporary_lifetime`] accepts: 1 h.
pub const MAX_TEMPORARY_LIFETIME: Duration = Duration::from_secs(3600);

/// Whether `d` is a lifetime [`set_temporary_lifetime`] accepts.
pub(crate) fn valid_temporary_lifetime(d: &Duration) -> bool {
    (MIN_TEMPORARY_LIFETIME..=MAX_TEMPORARY_LIFETIME).contains(d)
}

/// What [`set_temporary_lifetime`] (and the `temporary_lifetime` key)
/// accepts.
pub(crate) const TEMPORARY_LIFETIME_EXPECTED: &str =
    "a duration from 1ms to 1h, such as 1ms (blocks freed sooner are temporary)";

/// Sets the lifetime under which a freed sampled block counts as
/// temporary in the exporter's temporary-allocations view
/// (`/debug/pprof/heap.svg?sample=temporary`, the landing page); the
/// configuration key `temporary_lifetime`. Default 1 ms.
///
/// # Errors
/// [`crate::Error::InvalidArgument`] outside 1 µs ..= 1 h.
pub fn set_temporary_lifetime(d: Duration) -> Result<(), crate::Error> {
    if !valid_temporary_lifetime(&d) {
        return Err(crate::Error::InvalidArgument {
            what: "temporary_lifetime",
            value: format!("{d:?}"),
            expected: TEMPORARY_LIFETIME_EXPECTED,
        });
    }
    TEMPORARY_NS.store(d.as_nanos() as u64, Relaxed);
    Ok(())
}

/// The lifetime under which a freed sampled block counts as temporary
/// (see [`set_temporary_lifetime`]).
pub fn temporary_lifetime() -> Duration {
    Duration::from_nanos(TEMPORARY_NS.load(Relaxed))
}

/// A stack whose sampled blocks mostly die young: what
/// [`HeapProfile::temporary_stacks`] lists.
#[derive(Clone, Debug)]
pub struct TemporaryStack {
    frames: Arc<[Frame]>,
    short_lived_bytes: u64,
    short_lived_share: f64,
    sampled_allocs: u64,
}

impl TemporaryStack {
    /// The stack, leaf first (as [`Bucket::frames`]).
    pub fn frames(&self) -> &[Frame] {
        &self.frames
    }

    /// Estimated bytes allocated (since the start) by blocks of this stack
    /// that were freed within the threshold.
    pub fn short_lived_bytes(&self) -> u64 {
        self.short_lived_bytes
    }

    /// The share of its sampled allocations freed within the threshold
    /// (over 0.5: "mostly").
    pub fn short_lived_share(&self) -> f64 {
        self.short_lived_share
    }

    /// Allocations the sampler recorded for this stack (all sizes).
    pub fn sampled_allocs(&self) -> u64 {
        self.sampled_allocs
    }
}

/// Splits `total` in proportion to `weights`, in whole units that add up
/// to `total` exactly (cumulative rounding: each part is the difference of
/// two rounded running sums).
pub(crate) fn split(total: u64, weights: &[f64]) -> Vec<u64> {
    let sum: f64 = weights.iter().sum();
    if weights.is_empty() {
        return Vec::new();
    }
    if sum <= 0.0 || !sum.is_finite() {
        let mut v = vec![0; weights.len()];
        if let Some(l) = v.last_mut() {
            *l = total;
        }
        return v;
    }
    let mut out = Vec::with_capacity(weights.len());
    let mut run = 0.0;
    let mut prev = 0u64;
    for (i, w) in weights.iter().enumerate() {
        run += w;
        let upto = if i + 1 == weights.len() {
            total
        } else {
            ((total as f64) * (run / sum)).floor().min(total as f64) as u64
        };
        let upto = upto.max(prev);
        out.push(upto - prev);
        prev = upto;
    }
    out
}

/// One age group of a bucket's live samples, as the pprof export writes
/// it: the youngest age in the group, in whole seconds (rounded down: a
/// lower bound), and its in-use estimates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct AgeGroup {
    pub age_seconds: u64,
    pub objects: u64,
    pub bytes: u64,
}

impl Bucket {
    /// The age of the oldest live sample of this bucket when the profile
    /// was captured; `None` when none of its sampled blocks is live. A
    /// block the sampler counted as live but whose slot was not read at
    /// capture (sampled or freed meanwhile) counts as age 0.
    pub fn oldest_age(&self) -> Option<std::time::Duration> {
        self.live
            .first()
            .map(|&ns| std::time::Duration::from_nanos(ns))
    }

    /// The lifetimes of this bucket's freed sampled blocks (see
    /// [`Lifetimes`]).
    pub fn lifetimes(&self) -> &Lifetimes {
        &self.lifetimes
    }

    /// Of the sampled allocations of this bucket, how many were freed
    /// within `threshold` ([`Lifetimes::shorter_than`]).
    pub fn short_lived(&self, threshold: Duration) -> f64 {
        self.lifetimes.shorter_than(threshold)
    }

    /// The share of `t`'s estimate (an `alloc_*` one) due to blocks freed
    /// within `threshold`.
    fn short_lived_estimate(&self, t: SampleType, threshold: Duration) -> u64 {
        if self.sampled_allocs == 0 {
            return 0;
        }
        let share = (self.short_lived(threshold) / self.sampled_allocs as f64).clamp(0.0, 1.0);
        (self.estimate(t) as f64 * share) as u64
    }

    /// The live samples in age groups, oldest first: log-scale classes
    /// (doubling from 1 µs, as the lifetimes), labelled with the youngest
    /// age in each in whole seconds, groups with the same label merged.
    /// The groups' estimates add up to the bucket's in-use estimates
    /// exactly. Empty when nothing is in use.
    pub(crate) fn age_groups(&self) -> Vec<AgeGroup> {
        let (objs, bytes) = (
            self.estimate(SampleType::InuseObjects),
            self.estimate(SampleType::InuseSpace),
        );
        if self.live.is_empty() || (objs == 0 && bytes == 0) {
            return Vec::new();
        }
        // (label, live samples), oldest first; every live sample carries
        // an equal share of the bucket's in-use estimates
        let mut groups: Vec<(u64, f64)> = Vec::new();
        let mut class = usize::MAX;
        for &age_ns in self.live.iter() {
            let c = crate::sampling::lifetime_class(age_ns);
            let label = age_ns / 1_000_000_000;
            match groups.last_mut() {
                Some(g) if c == class || g.0 == label => {
                    // `live` is oldest first: this one is the youngest yet
                    g.0 = label;
                    g.1 += 1.0;
                }
                _ => groups.push((label, 1.0)),
            }
            class = c;
        }
        let weights: Vec<f64> = groups.iter().map(|g| g.1).collect();
        let o = split(objs, &weights);
        let b = split(bytes, &weights);
        groups
            .iter()
            .zip(o.into_iter().zip(b))
            .map(|(g, (objects, bytes))| AgeGroup {
                age_seconds: g.0,
                objects,
                bytes,
            })
            .collect()
    }
}

impl HeapProfile {
    /// The profile restricted to the sampled blocks still in use and at
    /// least `age` old at capture: the leak-hunting view (what has been
    /// held that long). In each bucket the in-use estimates become those
    /// of its live samples that old (each live sample carries an equal
    /// share of its bucket's in-use estimates); the `alloc_*` values become
    /// the same figures (those blocks were allocated, and nothing else in
    /// the profile was: freed blocks have no age); buckets without such a
    /// sample are left out, and the lifetimes are empty. `min_age(0)`
    /// keeps every in-use sample.
    ///
    /// ```
    /// # #[cfg(feature = "profile")] {
    /// use allocscope::profile::HeapProfile;
    /// let old = HeapProfile::capture().min_age(std::time::Duration::from_secs(600));
    /// for b in old.buckets() {
    ///     assert!(b.oldest_age().unwrap() >= std::time::Duration::from_secs(600));
    /// }
    /// # }
    /// ```
    pub fn min_age(&self, age: Duration) -> HeapProfile {
        let min = u64::try_from(age.as_nanos()).unwrap_or(u64::MAX);
        let mut buckets: Vec<Bucket> = self
            .buckets
            .iter()
            .filter_map(|b| {
                // oldest first: the kept ones are a prefix
                let kept = b.live.partition_point(|&ns| ns >= min);
                if kept == 0 {
                    return None;
                }
                let live: Arc<[u64]> = Arc::from(&b.live[..kept]);
                // an equal share each (the whole bucket kept: exactly its
                // estimates)
                let share = |t: SampleType| {
                    (u128::from(b.estimate(t)) * kept as u128 / b.live.len() as u128) as u64
                };
                let (objects, bytes) = (
                    share(SampleType::InuseObjects),
                    share(SampleType::InuseSpace),
                );
                Some(Bucket {
                    frames: b.frames.clone(),
                    scope: b.scope.clone(),
                    thread: b.thread.clone(),
                    key: b.key.clone(),
                    locations: b.locations.clone(),
                    size: b.size,
                    sampled_allocs: kept as u64,
                    sampled_frees: 0,
                    estimates: [objects, bytes, objects, bytes],
                    live,
                    lifetimes: Lifetimes::default(),
                })
            })
            .collect();
        super::sort_buckets(&mut buckets);
        HeapProfile {
            buckets,
            interval: self.interval,
            captured_at: self.captured_at,
            symbols: self.symbols,
            frames: self.frames,
        }
    }

    /// The short-lived allocations: every bucket with blocks freed within
    /// `threshold`, its `alloc_objects` and `alloc_space` estimates scaled
    /// to the share of its sampled allocations freed that soon
    /// ([`Bucket::short_lived`]), its in-use values zero. Drawn with
    /// `alloc_space`, the exporter's
    /// `/debug/pprof/heap.svg?sample=temporary`: the churn a reused buffer
    /// would remove.
    pub fn short_lived(&self, threshold: Duration) -> HeapProfile {
        let mut buckets: Vec<Bucket> = self
            .buckets
            .iter()
            .filter_map(|b| {
                let objects = b.short_lived_estimate(SampleType::AllocObjects, threshold);
                let bytes = b.short_lived_estimate(SampleType::AllocSpace, threshold);
                (objects > 0 || bytes > 0).then(|| Bucket {
                    frames: b.frames.clone(),
                    scope: b.scope.clone(),
                    thread: b.thread.clone(),
                    key: b.key.clone(),
                    locations: b.locations.clone(),
                    size: b.size,
                    sampled_allocs: b.short_lived(threshold).round() as u64,
                    sampled_frees: b.short_lived(threshold).round() as u64,
                    estimates: [objects, bytes, 0, 0],
                    live: Arc::from([]),
                    lifetimes: b.lifetimes.clone(),
                })
            })
            .collect();
        super::sort_buckets(&mut buckets);
        HeapProfile {
            buckets,
            interval: self.interval,
            captured_at: self.captured_at,
            symbols: self.symbols,
            frames: self.frames,
        }
    }

    /// The stacks whose sampled blocks mostly die young: more than half of
    /// the sampled allocations of the stack (all object sizes together)
    /// were freed within `threshold`. Largest estimated short-lived bytes
    /// first; at most `limit` of them.
    pub fn temporary_stacks(&self, threshold: Duration, limit: usize) -> Vec<TemporaryStack> {
        struct Acc {
            frames: Arc<[Frame]>,
            allocs: u64,
            short: f64,
            bytes: u64,
        }
        let mut by_stack: HashMap<&str, Acc> = HashMap::new();
        for b in &self.buckets {
            let a = by_stack.entry(b.folded_key()).or_insert_with(|| Acc {
                frames: b.frames.clone(),
                allocs: 0,
                short: 0.0,
                bytes: 0,
            });
            a.allocs = a.allocs.saturating_add(b.sampled_allocs);
            a.short += b.short_lived(threshold);
            a.bytes = a
                .bytes
                .saturating_add(b.short_lived_estimate(SampleType::AllocSpace, threshold));
        }
        let mut out: Vec<TemporaryStack> = by_stack
            .into_values()
            .filter(|a| a.allocs > 0 && a.short / a.allocs as f64 > 0.5)
            .map(|a| TemporaryStack {
                frames: a.frames,
                short_lived_bytes: a.bytes,
                short_lived_share: (a.short / a.allocs as f64).min(1.0),
                sampled_allocs: a.allocs,
            })
            .collect();
        out.sort_by(|a, b| {
            b.short_lived_bytes
                .cmp(&a.short_lived_bytes)
                .then(b.sampled_allocs.cmp(&a.sampled_allocs))
        });
        out.truncate(limit);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{PprofKind, Symbols};
    use crate::sampling::RawBucket;

    const S: u64 = 1_000_000_000;

    fn lifetimes(pairs: &[(usize, u32)]) -> LifetimeCounts {
        let mut l = [0; LIFETIME_CLASSES];
        for &(k, c) in pairs {
            l[k] = c;
        }
        Some(Box::new(l))
    }

    #[test]
    fn class_bounds_tile_the_line() {
        let mut end = Duration::ZERO;
        for k in 0..Lifetimes::CLASSES {
            let (lo, hi) = Lifetimes::class_bounds(k);
            assert_eq!(lo, end, "class {k}");
            // the sampler's bucketing agrees with the bounds
            assert_eq!(
                crate::sampling::lifetime_class(lo.as_nanos() as u64),
                k,
                "class {k}"
            );
            match hi {
                Some(hi) => {
                    assert_eq!(crate::sampling::lifetime_class(hi.as_nanos() as u64 - 1), k);
                    end = hi;
                }
                None => assert_eq!(k, Lifetimes::CLASSES - 1),
            }
        }
        assert!(end > Duration::from_secs(3600), "{end:?}");
        assert_eq!(Lifetimes::class_bounds(99), (Duration::MAX, None));
    }

    #[test]
    fn shorter_than_counts_whole_classes_and_interpolates_the_one_cut() {
        // 10 under 1 us, 20 in [1, 2) us, 40 in [512, 1024) us, 5 in the last
        let l = Lifetimes::from_counts(lifetimes(&[(0, 10), (1, 20), (10, 40), (33, 5)]));
        assert_eq!(l.freed(), 75);
        assert_eq!(l.shorter_than(Duration::ZERO), 0.0);
        assert_eq!(l.shorter_than(Duration::from_micros(1)), 10.0);
        assert_eq!(l.shorter_than(Duration::from_micros(2)), 30.0);
        assert_eq!(l.shorter_than(Duration::from_micros(512)), 30.0);
        // 1 ms cuts [512, 1024) us at 488/512
        let ms = l.shorter_than(Duration::from_millis(1));
        assert!((ms - (30.0 + 40.0 * 488.0 / 512.0)).abs() < 1e-9, "{ms}");
        assert_eq!(l.shorter_than(Duration::from_micros(1024)), 70.0);
        assert_eq!(l.shorter_than(Duration::from_secs(3600)), 70.0);
        assert_eq!(l.shorter_than(Duration::MAX), 75.0);
    }

    #[test]
    fn split_keeps_the_total() {
        assert_eq!(split(10, &[1.0, 1.0]), [5, 5]);
        assert_eq!(split(10, &[1.0, 1.0, 1.0]), [3, 3, 4]);
        assert_eq!(split(7, &[0.0, 0.0]), [0, 7]);
        assert_eq!(split(0, &[1.0, 2.0]), [0, 0]);
        assert!(split(5, &[]).is_empty());
        for total in [0, 1, 99, 12_345, u64::MAX / 2] {
            let w = [0.3, 2.0, 0.0, 7.5, 1.0];
            assert_eq!(split(total, &w).iter().sum::<u64>(), total);
        }
    }

    fn profile_with_ages(ages: Vec<u64>, allocs: u64, frees: u64) -> HeapProfile {
        HeapProfile::from_raw(
            vec![
                RawBucket {
                    stack: vec![0x10, 0x20],
                    size: 4096,
                    interval: 512 * 1024,
                    allocs,
                    frees,
                    ages,
                    lifetimes: lifetimes(&[(1, frees as u32)]),
                    ..RawBucket::default()
                },
                RawBucket {
                    stack: vec![0x30],
                    size: 64,
                    interval: 512 * 1024,
                    allocs: 2,
                    frees: 0,
                    ages: vec![5 * S, 3000 * S],
                    ..RawBucket::default()
                },
            ],
            512 * 1024,
            Symbols::Names,
        )
    }

    #[test]
    fn age_groups_are_log_classes_labelled_by_their_youngest_and_keep_the_totals() {
        // 8 live: ages 0.5 ms, 0.9 s, 1.5 s, 1.9 s, 10 s, 11 s, 600 s, 601 s
        let ages = vec![
            500_000,
            900_000_000,
            1_500_000_000,
            1_900_000_000,
            10 * S,
            11 * S,
            600 * S,
            601 * S,
        ];
        let p = profile_with_ages(ages, 20, 12);
        let b = p.buckets().iter().find(|b| b.size() == 4096).unwrap();
        assert_eq!(b.sampled_inuse(), 8);
        assert_eq!(b.oldest_age(), Some(Duration::from_secs(601)));
        assert_eq!(b.lifetimes().freed(), 12);
        let g = b.age_groups();
        let labels: Vec<u64> = g.iter().map(|g| g.age_seconds).collect();
        // oldest first; 0.9 s and 0.5 ms both label 0: one group
        assert_eq!(labels, [600, 10, 1, 0], "{g:?}");
        assert_eq!(
            g.iter().map(|g| g.objects).sum::<u64>(),
            b.estimate(SampleType::InuseObjects)
        );
        assert_eq!(
            g.iter().map(|g| g.bytes).sum::<u64>(),
            b.estimate(SampleType::InuseSpace)
        );
        // two samples each: equal shares
        let per = b.estimate(SampleType::InuseSpace) / 4;
        for g in &g {
            assert!(g.bytes.abs_diff(per) <= 1, "{g:?} vs {per}");
        }
        // a bucket that is all freed has no groups and no age
        let p = profile_with_ages(vec![], 5, 5);
        let b = p.buckets().iter().find(|b| b.size() == 4096).unwrap();
        assert!(b.age_groups().is_empty());
        assert_eq!(b.oldest_age(), None);
        // in use per the counts but no slot read: one group, age 0
        let p = profile_with_ages(vec![], 5, 3);
        let b = p.buckets().iter().find(|b| b.size() == 4096).unwrap();
        assert_eq!(b.oldest_age(), Some(Duration::ZERO));
        let g = b.age_groups();
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].age_seconds, 0);
        assert_eq!(g[0].bytes, b.estimate(SampleType::InuseSpace));
    }

    #[test]
    fn min_age_keeps_the_old_samples_only() {
        let ages = vec![S / 2, 2 * S, 700 * S, 800 * S];
        let p = profile_with_ages(ages, 10, 6);
        let full = p.buckets().iter().find(|b| b.size() == 4096).unwrap();
        let old = p.min_age(Duration::from_secs(600));
        let names: Vec<(u64, Option<Duration>)> = old
            .buckets()
            .iter()
            .map(|b| (b.size(), b.oldest_age()))
            .collect();
        assert_eq!(
            names,
            [
                (4096, Some(Duration::from_secs(800))),
                (64, Some(Duration::from_secs(3000)))
            ]
        );
        let b = &old.buckets()[0];
        assert_eq!(b.sampled_inuse(), 2);
        let half = full.estimate(SampleType::InuseSpace) / 2;
        assert!(b.estimate(SampleType::InuseSpace).abs_diff(half) <= 1);
        assert_eq!(
            b.estimate(SampleType::AllocSpace),
            b.estimate(SampleType::InuseSpace)
        );
        assert_eq!(b.lifetimes().freed(), 0);
        // nothing that old: empty; zero: every in-use sample, exact totals
        assert!(p.min_age(Duration::from_secs(4000)).is_empty());
        let all = p.min_age(Duration::ZERO);
        assert_eq!(
            all.total(SampleType::InuseSpace),
            p.total(SampleType::InuseSpace)
        );
        assert_eq!(
            all.total(SampleType::AllocSpace),
            p.total(SampleType::InuseSpace)
        );
        // the formats follow the filter
        assert!(!old.folded(SampleType::InuseSpace).is_empty());
        assert!(p
            .min_age(Duration::from_secs(1000))
            .folded(SampleType::InuseSpace)
            .lines()
            .all(|l| l.starts_with("0x30 ")));
        let _ = old.to_text(PprofKind::Heap);
    }

    #[test]
    fn short_lived_and_temporary_stacks() {
        let l_churn = lifetimes(&[(0, 50), (1, 40), (20, 5)]); // 5 at ~1 s
        let l_slow = lifetimes(&[(25, 10), (0, 1)]); // ~30 s
        let raw = vec![
            RawBucket {
                stack: vec![0x10],
                size: 4096,
                interval: 4096,
                allocs: 100,
                frees: 95,
                lifetimes: l_churn,
                ..RawBucket::default()
            },
            RawBucket {
                stack: vec![0x20],
                size: 4096,
                interval: 4096,
                allocs: 20,
                frees: 11,
                lifetimes: l_slow,
                ..RawBucket::default()
            },
            RawBucket {
                stack: vec![0x30],
                size: 4096,
                interval: 4096,
                allocs: 100,
                frees: 0,
                ..RawBucket::default()
            },
        ];
        let p = HeapProfile::from_raw(raw, 4096, Symbols::Names);
        let ms = Duration::from_millis(1);
        let t = p.temporary_stacks(ms, 10);
        assert_eq!(t.len(), 1, "{t:?}");
        assert_eq!(t[0].frames()[0].name(), "0x10");
        assert!((t[0].short_lived_share() - 0.9).abs() < 1e-9);
        let churn = p.buckets().iter().find(|b| b.frames()[0].name() == "0x10");
        let alloc = churn.unwrap().estimate(SampleType::AllocSpace);
        assert_eq!(t[0].short_lived_bytes(), (alloc as f64 * 0.9) as u64);
        // the flamegraph's profile: the churn and the slow one's one block
        let s = p.short_lived(ms);
        let f = s.folded(SampleType::AllocSpace);
        assert!(f.contains("0x10 "), "{f}");
        assert!(f.contains("0x20 "), "{f}");
        assert!(!f.contains("0x30"), "{f}");
        assert_eq!(s.total(SampleType::InuseSpace), 0);
        assert!(s.buckets()[0].frames()[0].name() == "0x10");
        // a longer threshold makes the slow one temporary too
        let t = p.temporary_stacks(Duration::from_secs(60), 10);
        assert_eq!(t.len(), 2, "{t:?}");
        assert!(p.temporary_stacks(ms, 0).is_empty());
    }

    #[test]
    fn the_temporary_lifetime_setting() {
        assert_eq!(temporary_lifetime(), Duration::from_millis(1));
        assert!(set_temporary_lifetime(Duration::ZERO).is_err());
        assert!(set_temporary_lifetime(Duration::from_secs(3601)).is_err());
        assert_eq!(temporary_lifetime(), Duration::from_millis(1));
        set_temporary_lifetime(Duration::from_millis(5)).unwrap();
        assert_eq!(temporary_lifetime(), Duration::from_millis(5));
        set_temporary_lifetime(Duration::from_millis(1)).unwrap();
    }
}
