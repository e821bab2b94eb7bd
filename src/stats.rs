//! Snapshots: [`Stats`] (process-wide), [`ThreadStats`] (this thread) and
//! [`measure`].
//!
//! Owns the plain-data views of the counters. Taking a snapshot folds every
//! thread's counter block; it runs on an ordinary thread and may allocate.
//! Snapshots never stop or slow the allocating threads.

use crate::counters;
use crate::size_class::{class_max_size, class_min_size};

/// Process-wide allocation statistics since the process started.
///
/// Exact once the threads that allocated are joined (or otherwise
/// synchronised with); while they run, each field is a close approximation
/// that does not go backwards from one snapshot to the next, with one
/// exception: the hot path counts an allocation or `realloc` before it calls
/// the inner allocator, and takes the counts back if that call fails, so a
/// snapshot taken meanwhile on another thread can be ahead by the refused
/// request. The derived live figures saturate at zero.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Successful allocations (`alloc`, `alloc_zeroed`, and the allocation
    /// half of every successful `realloc`).
    pub allocations: u64,
    /// Deallocations (`dealloc`, and the free half of every successful `realloc`).
    pub deallocations: u64,
    /// Successful reallocations.
    pub reallocations: u64,
    /// Bytes requested by the counted allocations.
    pub allocated_bytes: u64,
    /// Bytes released by the counted deallocations.
    pub freed_bytes: u64,
    /// Allocations and reallocations the inner allocator refused (null).
    pub alloc_failures: u64,
    /// Per size class, ascending by [`SizeClassStats::max_size`].
    pub size_classes: Vec<SizeClassStats>,
}

/// Counts of one size class: requests of `min_size..=max_size` bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SizeClassStats {
    /// Smallest size counted in this class (0 for the first).
    pub min_size: usize,
    /// Largest size counted in this class; `usize::MAX` for the last.
    pub max_size: usize,
    /// Successful allocations of a size in this class (`realloc`s to one
    /// included).
    pub allocations: u64,
    /// Deallocations of a size in this class (`realloc`s from one
    /// included).
    pub deallocations: u64,
    /// Bytes requested by those allocations.
    pub allocated_bytes: u64,
    /// Bytes released by those deallocations.
    pub freed_bytes: u64,
}

impl SizeClassStats {
    /// Bytes allocated in this class and not yet freed.
    pub fn live_bytes(&self) -> u64 {
        self.allocated_bytes.saturating_sub(self.freed_bytes)
    }

    /// Objects allocated in this class and not yet freed.
    pub fn live_objects(&self) -> u64 {
        self.allocations.saturating_sub(self.deallocations)
    }
}

impl Stats {
    /// Bytes allocated and not yet freed.
    pub fn live_bytes(&self) -> u64 {
        self.allocated_bytes.saturating_sub(self.freed_bytes)
    }

    /// Objects allocated and not yet freed.
    pub fn live_objects(&self) -> u64 {
        self.allocations.saturating_sub(self.deallocations)
    }

    /// What happened between `earlier` and `self` (both from [`stats`]):
    /// every counter, and every class's, as `self - earlier`, saturating at
    /// 0. The same meaning as [`ThreadStats::delta`].
    ///
    /// Every counter is a total since the process started, so the
    /// difference is the number of events (or bytes) in between. It
    /// saturates rather than wraps because a process-wide total can step
    /// back (see [`Stats`]: a request refused by the inner allocator while
    /// `earlier` was being taken) and then the delta is 0, not a count
    /// near 2^64; swapped arguments also give 0s. The totals are `u64`s,
    /// which do not wrap in practice. `min_size` and `max_size` are not
    /// counts: they are `self`'s. Classes are matched by position; a class
    /// that `earlier` lacks counts from 0.
    pub fn delta(&self, earlier: &Stats) -> Stats {
        Stats {
            allocations: self.allocations.saturating_sub(earlier.allocations),
            deallocations: self.deallocations.saturating_sub(earlier.deallocations),
            reallocations: self.reallocations.saturating_sub(earlier.reallocations),
            allocated_bytes: self.allocated_bytes.saturating_sub(earlier.allocated_bytes),
            freed_bytes: self.freed_bytes.saturating_sub(earlier.freed_bytes),
            alloc_failures: self.alloc_failures.saturating_sub(earlier.alloc_failures),
            size_classes: self
                .size_classes
                .iter()
                .zip(
                    earlier
                        .size_classes
                        .iter()
                        .chain(std::iter::repeat(&SizeClassStats::default())),
                )
                .map(|(a, b)| SizeClassStats {
                    min_size: a.min_size,
                    max_size: a.max_size,
                    allocations: a.allocations.saturating_sub(b.allocations),
                    deallocations: a.deallocations.saturating_sub(b.deallocations),
                    allocated_bytes: a.allocated_bytes.saturating_sub(b.allocated_bytes),
                    freed_bytes: a.freed_bytes.saturating_sub(b.freed_bytes),
                })
                .collect(),
        }
    }

    /// The class an allocation of `size` bytes is counted in.
    pub fn class_for(&self, size: usize) -> Option<&SizeClassStats> {
        self.size_classes.get(crate::size_class::class_of(size))
    }
}

/// The current thread's own cumulative counts (see [`thread_stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ThreadStats {
    /// Successful allocations by this thread (as [`Stats::allocations`]).
    pub allocations: u64,
    /// Deallocations by this thread, of blocks allocated on any thread.
    pub deallocations: u64,
    /// Successful reallocations by this thread.
    pub reallocations: u64,
    /// Bytes requested by this thread's allocations.
    pub allocated_bytes: u64,
    /// Bytes released by this thread's deallocations.
    pub freed_bytes: u64,
    /// This thread's allocations and reallocations that the inner
    /// allocator refused.
    pub alloc_failures: u64,
}

impl ThreadStats {
    /// Net bytes this thread allocated and did not free itself (negative if
    /// it freed more than it allocated, e.g. blocks from other threads).
    pub fn net_bytes(&self) -> i64 {
        (self.allocated_bytes as i64).wrapping_sub(self.freed_bytes as i64)
    }

    /// What happened between `earlier` and `self` (both from
    /// [`thread_stats`] on the same thread, as [`measure`] takes them):
    /// every counter as `self - earlier`, saturating at 0, the same meaning
    /// as [`Stats::delta`]. A thread's own totals never step back, so for
    /// two readings of one thread this is exact; readings of different
    /// threads, or swapped arguments, give 0 where `earlier` is larger.
    pub fn delta(&self, earlier: &ThreadStats) -> ThreadStats {
        ThreadStats {
            allocations: self.allocations.saturating_sub(earlier.allocations),
            deallocations: self.deallocations.saturating_sub(earlier.deallocations),
            reallocations: self.reallocations.saturating_sub(earlier.reallocations),
            allocated_bytes: self.allocated_bytes.saturating_sub(earlier.allocated_bytes),
            freed_bytes: self.freed_bytes.saturating_sub(earlier.freed_bytes),
            alloc_failures: self.alloc_failures.saturating_sub(earlier.alloc_failures),
        }
    }
}

/// A process-wide snapshot of every counter and size class.
///
/// Cost: folds each thread's counter block (about 1,100 relaxed loads per
/// thread that ever ran), allocates the class vector; never blocks an
/// allocating thread.
pub fn stats() -> Stats {
    let snap = counters::fold_all();
    let size_classes = snap
        .classes
        .iter()
        .enumerate()
        .map(|(c, counts)| SizeClassStats {
            min_size: class_min_size(c),
            max_size: class_max_size(c),
            allocations: counts.allocations,
            deallocations: counts.deallocations,
            allocated_bytes: counts.allocated_bytes,
            freed_bytes: counts.freed_bytes,
        })
        .collect();
    let t = snap.totals;
    Stats {
        allocations: t.allocations,
        deallocations: t.deallocations,
        reallocations: t.reallocations,
        allocated_bytes: t.allocated_bytes,
        freed_bytes: t.freed_bytes,
        alloc_failures: t.alloc_failures,
        size_classes,
    }
}

/// The current thread's own cumulative counts: every event this thread
/// performed since it started (frees of blocks other threads allocated
/// included). Cheap: reads only this thread's block.
pub fn thread_stats() -> ThreadStats {
    let t = counters::thread_totals();
    ThreadStats {
        allocations: t.allocations,
        deallocations: t.deallocations,
        reallocations: t.reallocations,
        allocated_bytes: t.allocated_bytes,
        freed_bytes: t.freed_bytes,
        alloc_failures: t.alloc_failures,
    }
}

/// Runs `f` and returns its value with what this thread allocated, freed and
/// reallocated inside it. Other threads' activity is not included, so tests
/// can assert allocation budgets without a global lock:
///
/// ```
/// # #[global_allocator]
/// # static A: allocscope::AllocScope = allocscope::AllocScope::system();
/// let (sum, d) = allocscope::measure(|| (0..100u64).sum::<u64>());
/// assert_eq!(sum, 4950);
/// assert_eq!(d.allocations, 0, "summing must not allocate");
/// ```
pub fn measure<R>(f: impl FnOnce() -> R) -> (R, ThreadStats) {
    let before = thread_stats();
    let r = f();
    let after = thread_stats();
    (r, after.delta(&before))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_deltas_subtract_and_saturate_alike() {
        let class = |allocations, freed_bytes| SizeClassStats {
            min_size: 1,
            max_size: 8,
            allocations,
            freed_bytes,
            ..SizeClassStats::default()
        };
        let earlier = Stats {
            allocations: 10,
            allocated_bytes: 1000,
            alloc_failures: 0,
            size_classes: vec![class(10, 5)],
            ..Stats::default()
        };
        // one in-flight allocation that `earlier` saw was taken back
        let later = Stats {
            allocations: 9,
            allocated_bytes: 1500,
            alloc_failures: 1,
            size_classes: vec![class(9, 7), class(3, 0)],
            ..Stats::default()
        };
        let d = later.delta(&earlier);
        assert_eq!(
            (d.allocations, d.allocated_bytes, d.alloc_failures),
            (0, 500, 1)
        );
        assert_eq!(d.size_classes, [class(0, 2), class(3, 0)]);
        assert_eq!(earlier.delta(&later).allocated_bytes, 0);

        let t0 = ThreadStats {
            allocations: 10,
            freed_bytes: 100,
            ..ThreadStats::default()
        };
        let t1 = ThreadStats {
            allocations: 12,
            freed_bytes: 40,
            ..ThreadStats::default()
        };
        let d = t1.delta(&t0);
        assert_eq!((d.allocations, d.freed_bytes), (2, 0));
        assert_eq!(t0.delta(&t1).allocations, 0);
        assert_eq!(t1.delta(&t1), ThreadStats::default());
    }
}
