//! The current thread's side: the thread-local every fast path reads
//! (`Current`), the counting functions the hot path calls, the sampling
//! countdown, and attaching a block on a thread's first event and releasing
//! it at the thread's exit.
//!
//! Everything here may run inside the allocator: nothing allocates, locks
//! (the fold lock in `Block::fold_local` is held for 514 adds at a thread's
//! exit, and only against `fork`) or panics; the fast-path functions are
//! `#[inline(always)]` and touch only this thread's thread-local.

use std::cell::Cell;
use std::ptr;
use std::sync::atomic::Ordering::Relaxed;

use super::block::{bump, Block, Small, Totals, ORPHAN};
use super::{exit, fork, registry};
use crate::size_class::SMALL_SLOTS;

const FRESH: u8 = 0;
const ACQUIRING: u8 = 1;
const ACTIVE: u8 = 2;
const EXITED: u8 = 3;

/// Number of entries of the fast path's limit table: one per value of an
/// alignment's low byte.
const LIMITS: usize = 256;

/// The largest alignment whose fast-path limit is non-zero.
const FAST_MAX_ALIGN: usize = 8;

/// What the hot path reads, in one thread-local so that one thread-local
/// offset serves the whole fast path.
struct Current {
    block: Cell<*const Block>,
    /// The fast path's exclusive size limit, by the low byte of the
    /// alignment: `SMALL_SLOTS` for alignments 1 to 8 while this thread
    /// counts in its thread-local `small` counters (its own block is
    /// attached and points at them), 0 for every other entry and for every
    /// entry otherwise. So `size < limits[align as u8]` alone proves the
    /// fast path safe, its counts visible and the alignment at most 8
    /// (alignments from 256 on have a low byte of 0): one `movzx` and one
    /// compare.
    limits: [Cell<usize>; LIMITS],
    /// The `dealloc` fast path's exclusive size limit, by the low byte of
    /// `ptr - align` (see `sampling::placed_as_sampled`): like `limits`, but
    /// non-zero only at the bytes with bit 3 set, those of blocks that
    /// cannot be sampled. So one `movzx` and one compare also rule out a
    /// sampled block.
    free_limits: [Cell<usize>; LIMITS],
    /// Bytes left before this thread's next sampling point (see
    /// `sampling`): the hot path subtracts from it in place
    /// (`sub fs:[OFF], size`).
    countdown: Cell<u64>,
    /// Size of the allocation in flight on the fast path, counted before the
    /// inner call: lets a failed call be un-counted.
    in_flight: Cell<usize>,
    /// Old size of the `realloc` in flight on the fast path (its new size is
    /// in `in_flight`).
    in_flight_old: Cell<usize>,
    /// Allocations this thread counted in its own block, for its scope
    /// switches: one `inc` on the fast path (see `crate::scope`).
    scope_allocs: Cell<u64>,
    /// With `countdown`, the bytes this thread counted in its own block:
    /// `bytes_epoch - countdown` (wrapping). Every allocation it counts
    /// there takes its size off the countdown (`sample_point`), so the
    /// bytes cost the fast path nothing; a new countdown moves the epoch
    /// with it (`set_countdown`), a refused allocation takes its bytes back
    /// (`uncount_bytes`).
    bytes_epoch: Cell<u64>,
    /// `scope_allocs` and the bytes at this thread's last scope switch.
    scope_base_allocs: Cell<u64>,
    scope_base_bytes: Cell<u64>,
    /// This thread's current scope (`crate::scope`; 0 = unscoped).
    scope: Cell<u32>,
    /// This thread's exact-size counters, read by snapshots through its
    /// block's `local` pointer while the thread runs. In the same
    /// thread-local as the fields above, so that one thread-local offset
    /// serves the whole fast path.
    small: Small,
}

thread_local! {
    /// This thread's block, or null (not acquired yet, or handed back at exit).
    static CURRENT: Current = const {
        Current {
            block: Cell::new(ptr::null()),
            limits: [const { Cell::new(0) }; LIMITS],
            free_limits: [const { Cell::new(0) }; LIMITS],
            countdown: Cell::new(0),
            in_flight: Cell::new(0),
            in_flight_old: Cell::new(0),
            scope_allocs: Cell::new(0),
            bytes_epoch: Cell::new(0),
            scope_base_allocs: Cell::new(0),
            scope_base_bytes: Cell::new(0),
            scope: Cell::new(0),
            small: Small::new(),
        }
    };
    static STATE: Cell<u8> = const { Cell::new(FRESH) };
}

/// Runs `f` on this thread's exact-size counters.
#[inline(always)]
fn with_small<R>(f: impl FnOnce(&Small) -> R) -> R {
    CURRENT.with(|c| f(&c.small))
}

/// The current thread's block, or null. One thread-local load.
#[inline(always)]
pub(super) fn current() -> *const Block {
    CURRENT.with(|c| c.block.get())
}

/// The exclusive size limit of the fast path: `SMALL_SLOTS` while this
/// thread counts in its thread-local counters, 0 otherwise.
#[inline(always)]
fn fast_limit() -> usize {
    CURRENT.with(|c| c.limits[1].get())
}

/// The exclusive size limit of the fast path for alignment `align`: that
/// of [`fast_limit`] if `align <= FAST_MAX_ALIGN`, 0 otherwise.
#[inline(always)]
pub(crate) fn fast_limit_for(align: usize) -> usize {
    // Alignments are powers of two: the low byte of one above 128 is 0.
    CURRENT.with(|c| c.limits[usize::from(align as u8)].get())
}

/// The exclusive size limit of the `dealloc` fast path for a block at
/// `ptr` of alignment `align`, given `shifted = ptr - align`: that of
/// [`fast_limit`] if the block cannot be sampled, 0 otherwise.
#[inline(always)]
pub(crate) fn fast_free_limit(shifted: *mut u8) -> usize {
    CURRENT.with(|c| c.free_limits[usize::from(shifted as usize as u8)].get())
}

/// Sets the fast-path limits of this thread (see `Current::limits`).
fn set_limit(limit: usize) {
    CURRENT.with(|c| {
        let mut a = 1;
        while a <= FAST_MAX_ALIGN {
            c.limits[a].set(limit);
            a *= 2;
        }
        for (byte, l) in c.free_limits.iter().enumerate() {
            l.set(if byte & 8 != 0 { limit } else { 0 });
        }
    })
}

/// Counts an allocation of `size < SMALL_SLOTS` bytes on the fast path
/// before the inner allocator is called, remembering the size in case the
/// call fails (`undo_small_alloc`). Requires `size < fast_limit()`.
#[inline(always)]
pub(crate) fn small_alloc_in_flight(size: usize) {
    CURRENT.with(|c| {
        c.in_flight.set(size);
        c.scope_allocs.set(c.scope_allocs.get().wrapping_add(1));
    });
    // Only this thread writes its thread-local counters: a plain increment
    // (relaxed load + store, no `lock` prefix).
    with_small(|s| bump::<false>(&s.allocs[size], 1));
}

/// Counts a deallocation of `size < SMALL_SLOTS` bytes on the fast path.
/// Requires `size < fast_limit()`.
#[inline(always)]
pub(crate) fn small_dealloc(size: usize) {
    with_small(|s| bump::<false>(&s.frees[size], 1));
}

/// Counts a `realloc` from `old` to `new` bytes on the fast path before the
/// inner call, remembering both sizes in case it fails (`undo_realloc`), so
/// that no register has to survive the call. Requires `fast_limit() != 0`
/// (the thread's own block is attached).
#[inline(always)]
pub(crate) fn realloc_in_flight(old: usize, new: usize) {
    CURRENT.with(|c| {
        c.in_flight.set(new);
        c.in_flight_old.set(old);
    });
    count_realloc_owned(old, new, 1);
}

/// Adds `n` (1, or -1 as a wrapping `u64`) `realloc`s from `old` to `new`
/// bytes to this thread's counters.
#[inline(always)]
fn count_realloc_owned(old: usize, new: usize, n: u64) {
    let b = current();
    // SAFETY: a non-zero limit means `block` is this thread's own block;
    // blocks are never freed.
    let b = unsafe { &*b };
    count_scope_alloc(n);
    bump::<false>(&b.reallocs, n);
    if old < SMALL_SLOTS {
        with_small(|s| bump::<false>(&s.frees[old], n));
    } else {
        b.on_large_dealloc::<false>(old, n);
    }
    if new < SMALL_SLOTS {
        with_small(|s| bump::<false>(&s.allocs[new], n));
    } else {
        b.on_large_alloc::<false>(new, n);
    }
}

/// Takes back the fast path's early count of the `realloc` in flight on this
/// thread, which the inner allocator refused, and counts a failure.
#[cold]
#[inline(never)]
pub(crate) fn undo_realloc() {
    let (old, new) = CURRENT.with(|c| (c.in_flight_old.get(), c.in_flight.get()));
    if fast_limit() != 0 {
        count_realloc_owned(old, new, u64::MAX);
    }
    uncount_bytes(new);
    count_failure_owned();
}

/// Counts a failure on this thread's own block, if it has one.
fn count_failure_owned() {
    let p = current();
    if !p.is_null() {
        // SAFETY: this thread's own block; blocks are never freed.
        bump::<false>(&unsafe { &*p }.failures, 1);
    }
}

/// Takes `size` bytes off this thread's sampling countdown; true when it
/// runs out (the sampler then decides). One `sub` on a thread-local.
#[inline(always)]
pub(crate) fn sample_point(size: usize) -> bool {
    CURRENT.with(|c| {
        let (left, out) = c.countdown.get().overflowing_sub(size as u64);
        c.countdown.set(left);
        out
    })
}

/// This thread's sampling countdown (after the subtraction that ran out:
/// `0 - countdown` is how far the last allocation went past it).
pub(crate) fn countdown() -> u64 {
    CURRENT.with(|c| c.countdown.get())
}

/// Sets this thread's sampling countdown, keeping the bytes counted
/// (`bytes_epoch - countdown`) as they were.
pub(crate) fn set_countdown(bytes: u64) {
    CURRENT.with(|c| {
        let e = c.bytes_epoch.get().wrapping_sub(c.countdown.get());
        c.bytes_epoch.set(e.wrapping_add(bytes));
        c.countdown.set(bytes);
    })
}

/// Takes back the bytes that an allocation refused by the inner allocator
/// took off this thread's countdown (`sample_point`): called, on a thread
/// with its own block, by every failure path after a `sample_point`.
#[cold]
pub(crate) fn uncount_bytes(size: usize) {
    CURRENT.with(|c| {
        c.bytes_epoch
            .set(c.bytes_epoch.get().wrapping_sub(size as u64))
    })
}

/// Adds `n` (1, or -1 as a wrapping `u64`) allocations of this thread (with
/// its own block) for its scope switches: every path that counts in the
/// block but the fast path's own increment (`small_alloc_in_flight`).
#[inline]
pub(crate) fn count_scope_alloc(n: u64) {
    CURRENT.with(|c| c.scope_allocs.set(c.scope_allocs.get().wrapping_add(n)));
}

/// This thread's current scope (0 = unscoped).
#[inline]
pub(crate) fn current_scope() -> u32 {
    CURRENT.with(|c| c.scope.get())
}

/// Makes `to` this thread's scope and returns the previous one, booking the
/// allocations and bytes since the last switch to the previous scope in
/// the thread's own block. No lock, no allocation, no shared cache line
/// written: the block is the thread's own.
#[inline]
pub(crate) fn switch_scope(to: u32) -> u32 {
    CURRENT.with(|c| {
        let from = c.scope.replace(to);
        let b = c.block.get();
        if !b.is_null() {
            // SAFETY: blocks are never freed; a non-null `block` is this
            // thread's own (only it writes the scope fields).
            let b = unsafe { &*b };
            let n = c.scope_allocs.get();
            let bytes = c.bytes_epoch.get().wrapping_sub(c.countdown.get());
            let dn = n.wrapping_sub(c.scope_base_allocs.replace(n));
            let db = bytes.wrapping_sub(c.scope_base_bytes.replace(bytes));
            b.switch_scope(from, to, dn, db);
        }
        from
    })
}

/// Books an allocation of `size` bytes counted on a shared block (a thread
/// without a block of its own) to the thread's scope.
#[inline]
pub(crate) fn book_shared(block: &Block, size: usize) {
    block.book_shared(current_scope(), 1, size as u64);
}

/// Takes back the fast path's early count of the allocation in flight on
/// this thread, which the inner allocator refused, and counts a failure.
/// Reads the size back from the thread-local rather than keeping it live
/// across the inner call.
#[cold]
#[inline(never)]
pub(crate) fn undo_small_alloc() {
    let size = CURRENT.with(|c| c.in_flight.get());
    with_small(|s| {
        if let Some(c) = s.allocs.get(size) {
            c.store(c.load(Relaxed).wrapping_sub(1), Relaxed);
        }
    });
    count_scope_alloc(u64::MAX); // -1
    uncount_bytes(size);
    count_failure_owned();
}

/// The current thread's block, attaching one on a thread's first event, or
/// [`ORPHAN`] when the thread has none (exiting, or re-entering while it
/// attaches). Returns the block and whether it is shared (count with atomic
/// RMWs).
#[inline]
pub(crate) fn current_or_attach() -> (&'static Block, bool) {
    let p = current();
    if !p.is_null() {
        // SAFETY: blocks are never freed.
        return (unsafe { &*p }, false);
    }
    attach()
}

#[cold]
#[inline(never)]
fn attach() -> (&'static Block, bool) {
    if STATE.with(Cell::get) != FRESH {
        return (&ORPHAN, true);
    }
    STATE.with(|s| s.set(ACQUIRING));
    // readers of the thread groups read again if they overlap this (a
    // reused block shows its old owner's counts until its new baseline)
    let _starting = crate::threads::Transition::begin();
    let b = registry::acquire_block();
    if b.is_null() {
        STATE.with(|s| s.set(FRESH));
        return (&ORPHAN, true);
    }
    // SAFETY: `b` is a valid block that this thread now owns.
    let block = unsafe { &*b };
    let totals = block.mark_acquired();
    CURRENT.with(|c| {
        block.settle_scopes(totals, c.scope.get());
        c.scope_base_allocs.set(c.scope_allocs.get());
        c.scope_base_bytes
            .set(c.bytes_epoch.get().wrapping_sub(c.countdown.get()));
    });
    block.tid.store(crate::sys::gettid(), Relaxed);
    block.attached_ns.store(crate::sys::monotonic_ns(), Relaxed);
    block.group.store(0, Relaxed);
    // Count in the thread-local counters only if the exit hook will fold
    // them back before they go away; otherwise everything is counted in the
    // block itself, off the fast path.
    // Only where static thread-local storage outlives every `pthread` key
    // destructor (glibc and musl): elsewhere (macOS) the storage may be
    // freed by an earlier key's destructor before the exit hook runs.
    let registered = exit::register(b);
    let fast = registered
        && cfg!(all(
            target_os = "linux",
            any(target_env = "gnu", target_env = "musl")
        ));
    if fast {
        fork::register();
        with_small(|s| block.attach_local(s));
    }
    CURRENT.with(|c| c.block.set(b));
    set_limit(if fast { SMALL_SLOTS } else { 0 });
    STATE.with(|s| s.set(ACTIVE));
    (block, false)
}

/// Called once per thread at exit (after Rust's own thread-local
/// destructors): detaches the block and hands it back for reuse.
pub(super) fn release_current() {
    let p = current();
    set_limit(0);
    CURRENT.with(|c| c.block.set(ptr::null()));
    STATE.with(|s| s.set(EXITED));
    if !p.is_null() {
        // SAFETY: blocks are never freed.
        let b = unsafe { &*p };
        with_small(|s| b.fold_local(s));
        // the thread's group keeps its counts (readers of the groups read
        // again if they overlap this)
        let _exiting = crate::threads::Transition::begin();
        crate::threads::retire(b.group_or_resolve(true), b.totals_since_acquired());
        registry::release(b);
    }
}

/// The current thread's totals since it attached its block (attaching one
/// if needed).
pub(crate) fn thread_totals() -> Totals {
    let (b, shared) = current_or_attach();
    if shared {
        Totals::default()
    } else {
        b.totals_since_acquired()
    }
}
