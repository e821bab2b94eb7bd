//! Folding every block: into a snapshot of every counter and class
//! ([`fold_all`], for `crate::stats`), into the process's live bytes
//! ([`live_bytes`], for the collector's periodic check), or one thread's
//! own totals ([`thread_totals`](super::local::thread_totals)). Runs on
//! ordinary threads, never on an allocation path; does not allocate, so a
//! snapshot contains exactly the events that happened before it.

use std::sync::atomic::Ordering::Relaxed;

use super::block::{Block, Totals, ORPHAN};
use super::registry;
use crate::size_class::{class_of, class_of_large_slot, NUM_CLASSES, SMALL_SLOTS};

/// The counts of one public size class.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub(crate) struct ClassCounts {
    pub(crate) allocations: u64,
    pub(crate) deallocations: u64,
    pub(crate) allocated_bytes: u64,
    pub(crate) freed_bytes: u64,
}

impl ClassCounts {
    /// Adds counts (wrapping, as the counters themselves).
    #[inline]
    fn add(
        &mut self,
        allocations: u64,
        deallocations: u64,
        allocated_bytes: u64,
        freed_bytes: u64,
    ) {
        self.allocations = self.allocations.wrapping_add(allocations);
        self.deallocations = self.deallocations.wrapping_add(deallocations);
        self.allocated_bytes = self.allocated_bytes.wrapping_add(allocated_bytes);
        self.freed_bytes = self.freed_bytes.wrapping_add(freed_bytes);
    }
}

/// Every block summed: the totals and each public class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Snapshot {
    pub(crate) totals: Totals,
    /// By class index (`crate::size_class::class_of`).
    pub(crate) classes: [ClassCounts; NUM_CLASSES],
}

/// Sums every block. Does not allocate, so a snapshot contains exactly the
/// events that happened before it.
pub(crate) fn fold_all() -> Snapshot {
    let mut classes = [ClassCounts::default(); NUM_CLASSES];
    let mut reallocs = 0u64;
    let mut failures = 0u64;
    registry::for_each_block(|b| {
        classes = b.read_small(classes, |small, classes| {
            for size in 0..SMALL_SLOTS {
                let a = small.allocs[size].load(Relaxed);
                let f = small.frees[size].load(Relaxed);
                classes[class_of(size)].add(
                    a,
                    f,
                    a.wrapping_mul(size as u64),
                    f.wrapping_mul(size as u64),
                );
            }
        });
        for (slot, s) in b.large.iter().enumerate() {
            classes[class_of_large_slot(slot)].add(
                s.allocs.load(Relaxed),
                s.frees.load(Relaxed),
                s.alloc_bytes.load(Relaxed),
                s.freed_bytes.load(Relaxed),
            );
        }
        reallocs = reallocs.wrapping_add(b.reallocs.load(Relaxed));
        failures = failures.wrapping_add(b.failures.load(Relaxed));
    });
    let mut sum = ClassCounts::default();
    for c in &classes {
        sum.add(
            c.allocations,
            c.deallocations,
            c.allocated_bytes,
            c.freed_bytes,
        );
    }
    Snapshot {
        totals: Totals {
            allocations: sum.allocations,
            deallocations: sum.deallocations,
            reallocations: reallocs,
            allocated_bytes: sum.allocated_bytes,
            freed_bytes: sum.freed_bytes,
            alloc_failures: failures,
        },
        classes,
    }
}

/// Live bytes of the whole process (allocated minus freed bytes, 0 if a
/// racing read makes that negative), folding only what that needs: the
/// exact-size slots' net counts times their size and the large slots' byte
/// sums, about 700 relaxed loads per block and no class arrays. Used by the
/// collector's periodic check (`crate::gc::collect`); never on the hot path.
/// Does not allocate.
///
/// Cost: about 0.5 µs per block whose lines are cached, 1-2.5 µs per cold
/// block; the next block is prefetched while one is summed, and four
/// accumulators keep the adds independent.
pub(crate) fn live_bytes() -> u64 {
    let mut net = block_net_bytes(&ORPHAN);
    let mut next = registry::first();
    while let Some(b) = next {
        next = b.next_registered();
        prefetch_block(next);
        net = net.wrapping_add(block_net_bytes(b));
    }
    // Wrapping sums: the true value is allocated - freed >= 0 once the
    // writers are synchronised; a racing read may be slightly negative.
    if (net as i64) < 0 {
        0
    } else {
        net
    }
}

/// One block's allocated minus freed bytes (wrapping).
#[inline]
fn block_net_bytes(b: &Block) -> u64 {
    // four independent accumulators (not a record: slot `i` adds to `i & 3`)
    let mut acc = b.read_small([0u64; 4], |small, acc| {
        for (i, (a, f)) in small.allocs.iter().zip(&small.frees).enumerate() {
            let n = a.load(Relaxed).wrapping_sub(f.load(Relaxed));
            acc[i & 3] = acc[i & 3].wrapping_add(n.wrapping_mul(i as u64));
        }
    });
    for (i, l) in b.large.iter().enumerate() {
        let n = l
            .alloc_bytes
            .load(Relaxed)
            .wrapping_sub(l.freed_bytes.load(Relaxed));
        acc[i & 3] = acc[i & 3].wrapping_add(n);
    }
    acc[0]
        .wrapping_add(acc[1])
        .wrapping_add(acc[2])
        .wrapping_add(acc[3])
}

/// Asks the CPU to start loading the counters of block `b` (a hint: no
/// effect on correctness, none elsewhere than x86-64).
#[inline]
fn prefetch_block(b: Option<&Block>) {
    #[cfg(target_arch = "x86_64")]
    if let Some(b) = b {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let end = std::mem::offset_of!(Block, reallocs);
        let base = std::ptr::from_ref(b).cast::<i8>();
        let mut off = 0;
        while off < end {
            // SAFETY: `off < size_of::<Block>()`, so the address lies in
            // the block's mapping; a prefetch never faults anyway.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(base.add(off)) };
            off += 64;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = b;
}
