//! One thread's counters: the [`Block`], what an event adds to it, and how
//! a snapshot reads the exact-size counters of a running owner (in the
//! owner's thread-local storage) while that owner may be exiting.

use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering::*};

use super::fork::{lock_folds, unlock_folds};
use crate::size_class::{large_slot, LARGE_SLOTS, SMALL_MAX, SMALL_SLOTS};

/// Count and byte sums of one large size class slot.
#[repr(C)]
pub(crate) struct LargeSlot {
    pub(crate) allocs: AtomicU64,
    pub(crate) frees: AtomicU64,
    pub(crate) alloc_bytes: AtomicU64,
    pub(crate) freed_bytes: AtomicU64,
}

impl LargeSlot {
    const fn new() -> LargeSlot {
        LargeSlot {
            allocs: AtomicU64::new(0),
            frees: AtomicU64::new(0),
            alloc_bytes: AtomicU64::new(0),
            freed_bytes: AtomicU64::new(0),
        }
    }
}

/// Totals of one block (or of all blocks), derived from its slots.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub(crate) struct Totals {
    pub(crate) allocations: u64,
    pub(crate) deallocations: u64,
    pub(crate) reallocations: u64,
    pub(crate) allocated_bytes: u64,
    pub(crate) freed_bytes: u64,
    pub(crate) alloc_failures: u64,
}

impl Totals {
    /// `self - earlier`, field by field, wrapping: the counters are wrapping
    /// sums, and a block's totals only grow while one owner holds it.
    fn wrapping_sub(self, earlier: Totals) -> Totals {
        Totals {
            allocations: self.allocations.wrapping_sub(earlier.allocations),
            deallocations: self.deallocations.wrapping_sub(earlier.deallocations),
            reallocations: self.reallocations.wrapping_sub(earlier.reallocations),
            allocated_bytes: self.allocated_bytes.wrapping_sub(earlier.allocated_bytes),
            freed_bytes: self.freed_bytes.wrapping_sub(earlier.freed_bytes),
            alloc_failures: self.alloc_failures.wrapping_sub(earlier.alloc_failures),
        }
    }
}

/// [`Totals`] kept in a block: its totals when its current owner acquired
/// it. Written by that owner only, when it acquires the block.
#[repr(C)]
struct Baseline {
    allocations: AtomicU64,
    deallocations: AtomicU64,
    reallocations: AtomicU64,
    allocated_bytes: AtomicU64,
    freed_bytes: AtomicU64,
    alloc_failures: AtomicU64,
}

impl Baseline {
    const fn new() -> Baseline {
        Baseline {
            allocations: AtomicU64::new(0),
            deallocations: AtomicU64::new(0),
            reallocations: AtomicU64::new(0),
            allocated_bytes: AtomicU64::new(0),
            freed_bytes: AtomicU64::new(0),
            alloc_failures: AtomicU64::new(0),
        }
    }

    fn store(&self, t: Totals) {
        self.allocations.store(t.allocations, Relaxed);
        self.deallocations.store(t.deallocations, Relaxed);
        self.reallocations.store(t.reallocations, Relaxed);
        self.allocated_bytes.store(t.allocated_bytes, Relaxed);
        self.freed_bytes.store(t.freed_bytes, Relaxed);
        self.alloc_failures.store(t.alloc_failures, Relaxed);
    }

    fn load(&self) -> Totals {
        Totals {
            allocations: self.allocations.load(Relaxed),
            deallocations: self.deallocations.load(Relaxed),
            reallocations: self.reallocations.load(Relaxed),
            allocated_bytes: self.allocated_bytes.load(Relaxed),
            freed_bytes: self.freed_bytes.load(Relaxed),
            alloc_failures: self.alloc_failures.load(Relaxed),
        }
    }
}

/// Exact-size counters: events of exactly `size` bytes, `size <=
/// SMALL_MAX`, so that the bytes are `count × size`.
#[repr(C)]
pub(crate) struct Small {
    pub(crate) allocs: [AtomicU64; SMALL_SLOTS],
    pub(crate) frees: [AtomicU64; SMALL_SLOTS],
}

impl Small {
    pub(super) const fn new() -> Small {
        #[allow(clippy::declare_interior_mutable_const)]
        const Z: AtomicU64 = AtomicU64::new(0);
        Small {
            allocs: [Z; SMALL_SLOTS],
            frees: [Z; SMALL_SLOTS],
        }
    }
}

/// One thread's counters. Written by its owner thread only (or, for
/// [`ORPHAN`], with atomic RMWs by anyone); read by snapshots.
///
/// All-zero bytes are a valid block (atomics of 0, null pointers): the
/// registry maps fresh blocks zeroed.
#[repr(C, align(128))]
pub(crate) struct Block {
    /// Exact-size events counted in the block itself: those of the owners
    /// that have exited (folded in at exit), those counted off the fast
    /// path, and all of [`ORPHAN`]'s. The running owner's fast-path events
    /// are in its thread-local [`Small`], at `local`.
    pub(crate) retired: Small,
    pub(crate) large: [LargeSlot; LARGE_SLOTS],
    pub(crate) reallocs: AtomicU64,
    pub(crate) failures: AtomicU64,
    // --- cold: ownership and per-owner baseline ---
    /// Whether a thread owns the block (see `registry`).
    pub(super) in_use: AtomicBool,
    /// The next block of the registry's list, or null.
    pub(super) next: AtomicPtr<Block>,
    /// The running owner's thread-local exact-size counters, or null (no
    /// owner, or an owner that counts in `retired` only).
    local: AtomicPtr<Small>,
    /// Snapshots reading through `local` right now: the owner's exit waits
    /// for them before its thread-local storage can go away.
    readers: AtomicUsize,
    /// A sequence count, odd while the exiting owner folds `local` into
    /// `retired`: a snapshot that overlaps the fold reads again, so it never
    /// counts an event twice or misses it.
    seq: AtomicU64,
    /// The block's totals when its current owner acquired it, so that
    /// `thread_stats()` reports the owner's own cumulative counts.
    base: Baseline,
    // --- scopes and thread groups (see `crate::scope`, `crate::threads`) ---
    /// A sequence count, odd while the owner books a scope switch: a
    /// reader of `scope_cur` and `scopes` that overlaps one reads again.
    scope_seq: AtomicU64,
    /// The scope the owner's events since its last switch belong to
    /// (all of them, for a block without an owner).
    scope_cur: AtomicU32,
    /// The owner's OS thread id (0: not known).
    pub(crate) tid: AtomicU32,
    /// The owner's thread group, plus one (0: not resolved yet).
    pub(crate) group: AtomicU32,
    /// When the owner attached the block (`CLOCK_MONOTONIC` ns): a reader
    /// caches the group it reads from `/proc` only once the thread is a
    /// second old (named by then).
    pub(crate) attached_ns: AtomicU64,
    /// Allocations and bytes booked to each scope at the owners' scope
    /// switches (for [`ORPHAN`]: every event, with atomic RMWs). What the
    /// block counted beyond their sum belongs to `scope_cur`.
    scopes: [ScopeSlot; SCOPE_SLOTS],
}

/// Scope ids a block books (see `crate::scope`: the three built-in scopes
/// and at most [`crate::scope::MAX_SCOPES_LIMIT`] names).
pub(crate) const SCOPE_SLOTS: usize = 512;

/// Allocations and allocated bytes booked to one scope.
#[repr(C)]
pub(crate) struct ScopeSlot {
    allocs: AtomicU64,
    bytes: AtomicU64,
}

impl ScopeSlot {
    const fn new() -> ScopeSlot {
        ScopeSlot {
            allocs: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        }
    }
}

/// Where the hot path's counting goes: a plain owner-only update, or an
/// atomic RMW on a block shared by several threads.
#[inline(always)]
pub(super) fn bump<const SHARED: bool>(c: &AtomicU64, v: u64) {
    if SHARED {
        c.fetch_add(v, Relaxed);
    } else {
        // Only the owner thread writes this counter: a load and a store (no
        // `lock` prefix, no cache line shared with other writers).
        c.store(c.load(Relaxed).wrapping_add(v), Relaxed);
    }
}

impl Block {
    /// Counts a successful allocation of `size` bytes.
    #[inline(always)]
    pub(crate) fn on_alloc<const SHARED: bool>(&self, size: usize) {
        if size <= SMALL_MAX {
            bump::<SHARED>(&self.retired.allocs[size], 1);
        } else {
            self.on_large_alloc::<SHARED>(size, 1);
        }
    }

    /// Counts a deallocation of `size` bytes.
    #[inline(always)]
    pub(crate) fn on_dealloc<const SHARED: bool>(&self, size: usize) {
        if size <= SMALL_MAX {
            bump::<SHARED>(&self.retired.frees[size], 1);
        } else {
            self.on_large_dealloc::<SHARED>(size, 1);
        }
    }

    /// Adds `n` allocations of `size > SMALL_MAX` bytes (`n` is 1, or -1 as
    /// a wrapping `u64` to take one back).
    #[inline]
    pub(super) fn on_large_alloc<const SHARED: bool>(&self, size: usize, n: u64) {
        let slot = &self.large[large_slot(size)];
        bump::<SHARED>(&slot.allocs, n);
        bump::<SHARED>(&slot.alloc_bytes, n.wrapping_mul(size as u64));
    }

    /// Adds `n` deallocations of `size > SMALL_MAX` bytes (as above).
    #[inline]
    pub(super) fn on_large_dealloc<const SHARED: bool>(&self, size: usize, n: u64) {
        let slot = &self.large[large_slot(size)];
        bump::<SHARED>(&slot.frees, n);
        bump::<SHARED>(&slot.freed_bytes, n.wrapping_mul(size as u64));
    }

    /// Counts a successful reallocation from `old` to `new` bytes.
    #[inline(always)]
    pub(crate) fn on_realloc<const SHARED: bool>(&self, old: usize, new: usize) {
        bump::<SHARED>(&self.reallocs, 1);
        self.on_dealloc::<SHARED>(old);
        self.on_alloc::<SHARED>(new);
    }

    /// Counts a failed allocation or reallocation.
    #[inline]
    pub(crate) fn on_failure<const SHARED: bool>(&self) {
        bump::<SHARED>(&self.failures, 1);
    }

    /// Sums this block's slots (relaxed reads: exact once the writers are
    /// joined, a close approximation while they run).
    pub(crate) fn totals(&self) -> Totals {
        let mut t = self.read_small(Totals::default(), |small, t| {
            for (size, (a, f)) in small.allocs.iter().zip(&small.frees).enumerate() {
                let (a, f) = (a.load(Relaxed), f.load(Relaxed));
                t.allocations = t.allocations.wrapping_add(a);
                t.deallocations = t.deallocations.wrapping_add(f);
                t.allocated_bytes = t.allocated_bytes.wrapping_add(a.wrapping_mul(size as u64));
                t.freed_bytes = t.freed_bytes.wrapping_add(f.wrapping_mul(size as u64));
            }
        });
        for s in &self.large {
            t.allocations = t.allocations.wrapping_add(s.allocs.load(Relaxed));
            t.deallocations = t.deallocations.wrapping_add(s.frees.load(Relaxed));
            t.allocated_bytes = t.allocated_bytes.wrapping_add(s.alloc_bytes.load(Relaxed));
            t.freed_bytes = t.freed_bytes.wrapping_add(s.freed_bytes.load(Relaxed));
        }
        t.reallocations = self.reallocs.load(Relaxed);
        t.alloc_failures = self.failures.load(Relaxed);
        t
    }

    /// Records the block's totals as its new owner's starting point (called
    /// by that owner when it acquires the block).
    pub(super) fn mark_acquired(&self) -> Totals {
        let t = self.totals();
        self.base.store(t);
        t
    }

    /// This block's totals since its current owner acquired it.
    pub(crate) fn totals_since_acquired(&self) -> Totals {
        self.totals().wrapping_sub(self.base.load())
    }

    /// Is a thread currently attached to this block?
    pub(crate) fn in_use(&self) -> bool {
        self.in_use.load(Relaxed)
    }

    /// Folds the exact-size counters, `retired` and the running owner's
    /// thread-local ones, into `acc` with `visit` (called once per set; the
    /// whole read starts over with `init` if it overlapped the owner's exit).
    /// Never blocks on the owner: it only waits out the fold of 514 counters
    /// at its exit (a fork never leaves one half done: see `fork`).
    /// Does not allocate.
    ///
    /// Memory safety: `readers` is raised before `local` is read, and the
    /// exiting owner clears `local` before it waits for `readers` to drop to
    /// zero (both sequentially consistent), so either this read sees null or
    /// the owner's thread-local storage outlives it.
    pub(crate) fn read_small<T: Copy>(&self, init: T, mut visit: impl FnMut(&Small, &mut T)) -> T {
        let mut spins = 0u32;
        loop {
            let s1 = self.seq.load(Acquire);
            if s1 & 1 == 1 {
                backoff(&mut spins);
                continue;
            }
            let mut acc = init;
            visit(&self.retired, &mut acc);
            self.readers.fetch_add(1, SeqCst);
            let p = self.local.load(SeqCst);
            if !p.is_null() {
                // SAFETY: see above: the owner's exit waits for this reader.
                visit(unsafe { &*p }, &mut acc);
            }
            self.readers.fetch_sub(1, Release);
            std::sync::atomic::fence(Acquire);
            if self.seq.load(Relaxed) == s1 {
                return acc;
            }
            backoff(&mut spins);
        }
    }

    /// Points the block at its owner's thread-local counters: from now on
    /// snapshots read them through it (the owner, once, when it attaches).
    pub(super) fn attach_local(&self, local: &Small) {
        self.local.store(ptr::from_ref(local).cast_mut(), SeqCst);
    }

    /// Adds `local`'s exact-size counts into `retired`: only by the owner, or
    /// for an owner that no longer exists (a forked child's dead threads).
    fn add_retired(&self, local: &Small) {
        for (r, l) in self.retired.allocs.iter().zip(&local.allocs) {
            r.store(r.load(Relaxed).wrapping_add(l.load(Relaxed)), Relaxed);
        }
        for (r, l) in self.retired.frees.iter().zip(&local.frees) {
            r.store(r.load(Relaxed).wrapping_add(l.load(Relaxed)), Relaxed);
        }
    }

    /// Called by the owner at its exit: moves its thread-local exact-size
    /// counts into `retired` and detaches them, then waits until no snapshot
    /// still reads them.
    pub(super) fn fold_local(&self, local: &Small) {
        if self.local.load(Relaxed).is_null() {
            return;
        }
        // no `fork` while a fold is half done (see `fork`)
        lock_folds();
        self.seq.fetch_add(1, Relaxed);
        std::sync::atomic::fence(Release);
        self.add_retired(local);
        self.local.store(ptr::null_mut(), SeqCst);
        self.seq.fetch_add(1, Release);
        unlock_folds();
        let mut spins = 0u32;
        while self.readers.load(SeqCst) != 0 {
            backoff(&mut spins);
        }
    }

    /// In a forked child, for a block whose owner did not survive the fork:
    /// moves the dead owner's thread-local counts into `retired` if
    /// `still_mapped` says their storage is there to read (they are dropped
    /// otherwise), then detaches them. Only with every fold excluded
    /// (`fork`'s prepare handler holds the fold lock) and no other thread
    /// running.
    pub(super) fn adopt_after_fork(&self, still_mapped: impl FnOnce(*const Small) -> bool) {
        let p = self.local.load(Acquire);
        if !p.is_null() {
            if still_mapped(p) {
                // SAFETY: checked mapped just now; the owner is gone, so
                // nothing writes it any more.
                self.add_retired(unsafe { &*p });
            }
            self.local.store(ptr::null_mut(), SeqCst);
        }
    }

    /// In a forked child: clears the reader count of the snapshots that the
    /// fork cut off (their threads do not exist there).
    pub(super) fn reset_readers_after_fork(&self) {
        self.readers.store(0, Relaxed);
    }
}

impl Block {
    /// Books `allocs` allocations of `bytes` bytes to scope `from`, the
    /// owner's scope until now, and makes `to` its scope: the owner only,
    /// at a scope switch. Plain stores; readers see the switch whole or
    /// not at all (`scope_seq`).
    #[inline]
    pub(super) fn switch_scope(&self, from: u32, to: u32, allocs: u64, bytes: u64) {
        let seq = self.scope_seq.load(Relaxed);
        self.scope_seq.store(seq.wrapping_add(1), Relaxed);
        std::sync::atomic::fence(Release);
        if let Some(slot) = self.scopes.get(from as usize) {
            bump::<false>(&slot.allocs, allocs);
            bump::<false>(&slot.bytes, bytes);
        }
        self.scope_cur.store(to, Relaxed);
        self.scope_seq.store(seq.wrapping_add(2), Release);
    }

    /// Books an event of a thread without a block of its own to its scope
    /// (on [`ORPHAN`], with atomic RMWs).
    #[inline]
    pub(super) fn book_shared(&self, scope: u32, allocs: u64, bytes: u64) {
        if let Some(slot) = self.scopes.get(scope as usize) {
            slot.allocs.fetch_add(allocs, Relaxed);
            slot.bytes.fetch_add(bytes, Relaxed);
        }
    }

    /// A new owner's start (given the block's totals now): books what the
    /// previous owners counted beyond their bookings (an owner that did not
    /// survive a fork never booked its last scope) to the block's scope,
    /// and makes `scope` the block's scope.
    pub(super) fn settle_scopes(&self, totals: Totals, scope: u32) {
        let (allocs, bytes) = self.booked();
        let cur = self.scope_cur.load(Relaxed);
        self.switch_scope(
            cur,
            scope,
            totals.allocations.wrapping_sub(allocs),
            totals.allocated_bytes.wrapping_sub(bytes),
        );
    }

    /// The owner's thread group (see `crate::threads`), resolved the first
    /// time it is asked for and cached in the block: by the owner itself
    /// (`owner`: from its kernel name, no allocation), or by a reader (from
    /// `/proc`; cached only once the thread is a second old, so that a
    /// thread read before it was named is read again).
    pub(crate) fn group_or_resolve(&self, owner: bool) -> u32 {
        match self.group.load(Relaxed) {
            0 => {
                let tid = self.tid.load(Relaxed);
                if owner {
                    let g = crate::threads::group_of_current(tid);
                    self.group.store(g + 1, Relaxed);
                    g
                } else {
                    let g = crate::threads::group_of_task(tid);
                    let age =
                        crate::sys::monotonic_ns().saturating_sub(self.attached_ns.load(Relaxed));
                    if age >= 1_000_000_000 {
                        // the owner may have resolved it meanwhile: keep its
                        let _ = self.group.compare_exchange(0, g + 1, Relaxed, Relaxed);
                    }
                    g
                }
            }
            g => g - 1,
        }
    }

    /// The sums of the bookings (wrapping).
    fn booked(&self) -> (u64, u64) {
        self.scopes.iter().fold((0u64, 0u64), |(a, b), s| {
            (
                a.wrapping_add(s.allocs.load(Relaxed)),
                b.wrapping_add(s.bytes.load(Relaxed)),
            )
        })
    }

    /// Adds this block's allocations and bytes by scope into `acc`
    /// (`acc[id] += (allocs, bytes)`, for ids below `acc.len()`; events of
    /// higher ids are not expected). Exact once the owners are joined; a
    /// read that overlaps a scope switch starts over. ([`ORPHAN`] books
    /// every event as it counts it: nothing is left for `scope_cur`.)
    pub(crate) fn add_by_scope(&self, acc: &mut [(u64, u64)]) {
        let mut spins = 0u32;
        loop {
            let s1 = self.scope_seq.load(Acquire);
            if s1 & 1 == 1 {
                backoff(&mut spins);
                continue;
            }
            let totals = self.totals();
            let cur = self.scope_cur.load(Relaxed) as usize;
            let mut table = [(0u64, 0u64); SCOPE_SLOTS];
            for (t, s) in table.iter_mut().zip(&self.scopes) {
                *t = (s.allocs.load(Relaxed), s.bytes.load(Relaxed));
            }
            std::sync::atomic::fence(Acquire);
            if self.scope_seq.load(Relaxed) != s1 {
                backoff(&mut spins);
                continue;
            }
            let (mut allocs, mut bytes) = (0u64, 0u64);
            for (a, t) in acc.iter_mut().zip(&table) {
                a.0 = a.0.wrapping_add(t.0);
                a.1 = a.1.wrapping_add(t.1);
            }
            for t in &table {
                allocs = allocs.wrapping_add(t.0);
                bytes = bytes.wrapping_add(t.1);
            }
            if let Some(a) = acc.get_mut(cur) {
                a.0 = a.0.wrapping_add(totals.allocations.wrapping_sub(allocs));
                a.1 = a.1.wrapping_add(totals.allocated_bytes.wrapping_sub(bytes));
            }
            return;
        }
    }
}

/// Spins briefly, then yields the CPU (`sched_yield`: no allocation, no lock).
pub(super) fn backoff(spins: &mut u32) {
    *spins = spins.saturating_add(1);
    if *spins < 64 {
        std::hint::spin_loop();
    } else {
        std::thread::yield_now();
    }
}

/// The shared block for events on threads that have no block of their own
/// (exiting, or re-entering while acquiring one). Updated with atomic RMWs.
pub(crate) static ORPHAN: Block = Block::new_const();

impl Block {
    const fn new_const() -> Block {
        #[allow(clippy::declare_interior_mutable_const)]
        const L: LargeSlot = LargeSlot::new();
        Block {
            retired: Small::new(),
            large: [L; LARGE_SLOTS],
            reallocs: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            in_use: AtomicBool::new(true),
            next: AtomicPtr::new(ptr::null_mut()),
            local: AtomicPtr::new(ptr::null_mut()),
            readers: AtomicUsize::new(0),
            seq: AtomicU64::new(0),
            base: Baseline::new(),
            scope_seq: AtomicU64::new(0),
            scope_cur: AtomicU32::new(0),
            tid: AtomicU32::new(0),
            group: AtomicU32::new(0),
            attached_ns: AtomicU64::new(0),
            scopes: [const { ScopeSlot::new() }; SCOPE_SLOTS],
        }
    }
}
