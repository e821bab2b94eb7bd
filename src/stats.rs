//! Snapshots: [`Stats`] (process-wide), [`ThreadStats`] (this thread) and
//! [`measure`].
//!
//! Owns the plain-data views of the counters. Taking a snapshot folds every
//! thread's counter block; it runs on an ordinary thread and may allocate.
//! Snapshots never stop or slow the allocating threads.

use crate::counters;
use crate::size_class::{class_max_size, NUM_CLASSES};

/// Process-wide allocation statistics since the process started.
///
/// Exact once the threads that allocated are joined (or otherwise
/// synchronised with); while they run, each field is a close, monotonic
/// approximation and the derived live figures saturate at zero.
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
    pub allocations: u64,
    pub deallocations: u64,
    pub allocated_bytes: u64,
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
    /// every counter and class as a difference (saturating at zero).
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
    pub allocations: u64,
    pub deallocations: u64,
    pub reallocations: u64,
    pub allocated_bytes: u64,
    pub freed_bytes: u64,
    pub alloc_failures: u64,
}

impl ThreadStats {
    /// Net bytes this thread allocated and did not free itself (negative if
    /// it freed more than it allocated, e.g. blocks from other threads).
    pub fn net_bytes(&self) -> i64 {
        (self.allocated_bytes as i64).wrapping_sub(self.freed_bytes as i64)
    }

    /// What happened between `earlier` and `self`.
    pub fn delta(&self, earlier: &ThreadStats) -> ThreadStats {
        ThreadStats {
            allocations: self.allocations.wrapping_sub(earlier.allocations),
            deallocations: self.deallocations.wrapping_sub(earlier.deallocations),
            reallocations: self.reallocations.wrapping_sub(earlier.reallocations),
            allocated_bytes: self.allocated_bytes.wrapping_sub(earlier.allocated_bytes),
            freed_bytes: self.freed_bytes.wrapping_sub(earlier.freed_bytes),
            alloc_failures: self.alloc_failures.wrapping_sub(earlier.alloc_failures),
        }
    }
}

/// A process-wide snapshot of every counter and size class.
///
/// Cost: folds each thread's counter block (about 1,100 relaxed loads per
/// thread that ever ran), allocates the class vector; never blocks an
/// allocating thread.
pub fn stats() -> Stats {
    let (t, classes) = counters::fold_all();
    let size_classes = (0..NUM_CLASSES)
        .map(|c| SizeClassStats {
            min_size: crate::size_class::class_min_size(c),
            max_size: class_max_size(c),
            allocations: classes[c][0],
            deallocations: classes[c][1],
            allocated_bytes: classes[c][2],
            freed_bytes: classes[c][3],
        })
        .collect();
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
