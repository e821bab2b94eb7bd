//! Per-thread counter blocks: the contention-free half of the hot path.
//!
//! Owns the blocks that every allocation event is counted in, the registry
//! that lets a snapshot find them, and the thread-local the hot path reads.
//! [`info`] reports their footprint; the rest is the crate's own.
//!
//! A thread's exact-size counters (sizes up to 256 bytes, nearly every
//! event) live in its own thread-local storage, so the hot path addresses
//! them directly (`inc qword fs:[OFF + size*8]`, no pointer to load). Its
//! block points at them while the thread runs, and the thread's exit hook
//! folds them into the block before the thread-local storage goes away
//! (see `Block::read_small` for how snapshots read them safely).
//!
//! Where things are:
//! - `block`: the `Block` (one thread's counters), what an event adds to
//!   it, and the protocol by which a snapshot reads a running owner's
//!   thread-local counters while that owner may be exiting;
//! - `registry`: the lock-free, append-only list of every block, and
//!   acquiring and releasing them;
//! - `local`: the thread-local (`Current`) and every function the hot path
//!   calls: the fast-path limits, the counting, the sampling countdown,
//!   attaching a thread's block on its first event and releasing it at exit;
//! - `fold`: summing every block into a snapshot (`fold_all`) or into
//!   the live bytes the collector polls (`live_bytes`);
//! - `exit`: the `pthread` key whose destructor releases a thread's block;
//! - `fork`: what a child forked without `exec` does with the blocks of the
//!   threads that did not survive the fork.
//!
//! Rules this module keeps (it runs inside the global allocator):
//! - **never allocate, lock, block or panic** on a counting path. Blocks come
//!   from `mmap` (`crate::sys`, not the allocator being wrapped), the
//!   registry is a lock-free, append-only list, and ownership is a single
//!   compare-and-swap;
//! - **no shared written cache line per event**: each thread writes only its
//!   own thread-local counters and its own block, with a plain relaxed load +
//!   store (no `lock` prefix); other threads only read them (snapshots);
//! - **nothing is lost**: blocks are never freed. When a thread exits, a
//!   `pthread` key destructor (not a Rust TLS destructor) hands its block back
//!   for reuse with all its counts in it, so sums over all blocks stay exact.
//!   Events that happen on a thread after that (other keys' destructors) and
//!   while a thread is acquiring its block go to one shared `ORPHAN` block
//!   with atomic read-modify-writes: rare, and still exact.
//! - the thread-locals are `const`-initialised, of types without a `Drop`
//!   (`Cell`s and atomics): no lazy initialisation and no destructor
//!   registration, so they are safe to touch before `main`, in threads not
//!   started by Rust and during thread-local destruction.
//! - **fork**: a child forked without `exec` folds the counters of the
//!   threads that did not survive into their blocks before it can start a
//!   thread (see `fork`).
//! - the thread-local counters are used only on Linux with glibc or musl,
//!   where static thread-local storage outlives every `pthread` key
//!   destructor; elsewhere, and on a thread whose exit hook cannot be
//!   registered, every event is counted in the block itself, out of line
//!   (exact, but slower). They take about 8 KiB of thread-local storage per
//!   thread (the counters and the two 2 KiB limit tables), which glibc takes
//!   from each thread's stack.

mod block;
mod exit;
mod fold;
mod fork;
mod local;
mod registry;

pub(crate) use fold::{fold_all, live_bytes};
pub(crate) use block::{Totals as ThreadTotals, SCOPE_SLOTS};
pub(crate) use local::{
    book_shared, count_scope_alloc, countdown, current_or_attach, current_scope,
    fast_free_limit, fast_limit_for, realloc_in_flight, sample_point, set_countdown,
    small_alloc_in_flight, small_dealloc, switch_scope, thread_totals, uncount_bytes,
    undo_realloc, undo_small_alloc,
};

/// Allocations and allocated bytes by scope id, summed over every block
/// into `acc` (see `crate::scope`). Does not allocate.
pub(crate) fn by_scope(acc: &mut [(u64, u64)]) {
    registry::for_each_block(|b| b.add_by_scope(acc));
}

/// One live thread's exact counts since it started, with its thread group
/// (see `crate::threads`).
pub(crate) struct LiveThread {
    pub(crate) group: u32,
    pub(crate) allocations: u64,
    pub(crate) allocated_bytes: u64,
    pub(crate) deallocations: u64,
    pub(crate) freed_bytes: u64,
}

/// Visits every live thread that has a block of its own. Reads
/// `/proc/self/task/<tid>/comm` for a thread whose group is not resolved
/// yet (allocates: never from the allocator).
pub(crate) fn for_each_live_thread(mut f: impl FnMut(LiveThread)) {
    let mut b = registry::first();
    while let Some(block) = b {
        b = block.next_registered();
        if !block.in_use() {
            continue;
        }
        let t = block.totals_since_acquired();
        f(LiveThread {
            group: block.group_or_resolve(false),
            allocations: t.allocations,
            allocated_bytes: t.allocated_bytes,
            deallocations: t.deallocations,
            freed_bytes: t.freed_bytes,
        });
    }
}

/// The calling thread's group, resolved and cached in its block on first
/// use (for the sampler's `thread` label; no allocation, no lock: one
/// `prctl` the first time). `threads::OTHER` for a thread without a block.
pub(crate) fn current_group() -> u32 {
    let p = local::current();
    if p.is_null() {
        return crate::threads::OTHER;
    }
    // SAFETY: blocks are never freed.
    unsafe { &*p }.group_or_resolve(true)
}

/// The counting core's own state and footprint, for monitoring allocscope
/// itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Info {
    /// Counter blocks ever created (one per concurrently live thread, reused
    /// after threads exit).
    pub blocks: usize,
    /// Blocks currently attached to a live thread.
    pub attached_blocks: usize,
    /// Memory used by counter blocks, in bytes.
    pub memory_bytes: usize,
}

/// Reports the counting core's own footprint.
pub fn info() -> Info {
    let counts = registry::block_counts();
    Info {
        blocks: counts.created,
        attached_blocks: counts.attached,
        memory_bytes: registry::blocks_memory(),
    }
}
