//! The hot path: [`AllocScope`], the `GlobalAlloc` wrapper.
//!
//! Owns the forwarding of every allocator call to the wrapped allocator, the
//! counting around it and the sampling decision. It must never allocate,
//! lock, block or panic: it runs inside every allocation of the process, and
//! a panic here aborts it.
//!
//! # Where the instructions go
//! An `alloc` of at most 256 bytes on a thread with a counter block adds,
//! around the inner call (x86-64, as compiled):
//! 1. the thread-local's address (`mov $off, reg`) and one compare of the
//!    size against the thread's fast-path limit (`cmp fs:[reg+8], size;
//!    jae`): 257 while the thread owns a block, 0 before it has one or after
//!    its exit hook, so this one compare also proves the block pointer valid;
//! 2. the block pointer load (`mov blk, fs:[reg]`);
//! 3. the in-flight size, stored beside it (`mov fs:[reg+24], size`), so a
//!    refused allocation can be un-counted out of line without keeping a
//!    register alive across the inner call;
//! 4. one non-atomic increment of `small[size]` in the thread's own block
//!    (`inc qword [blk + size*8]`): the byte total of an exact-size slot is
//!    `count × size`, so no second add is needed;
//! 5. the sampling countdown, in place in the thread-local
//!    (`sub fs:[reg+16], size; jb sample`);
//! 6. the null test of the result (`test; je`).
//!
//! A `dealloc` adds the two bit tests that rule out a sampled block
//! (`test $8; jne` and `test $0xff7; je`: sampled blocks sit at 8 mod 16 or
//! 0 mod 4096), then steps 1, 2 and 4 on the free counter, and tail-calls
//! the inner `dealloc`. Measured with callgrind (README, "Measured
//! overhead"), an alloc+free pair of small blocks costs about 24
//! instructions more than the wrapped allocator's own with sampling off,
//! and the sampling at the default interval adds about 1 with the
//! frame-pointer walk. Sizes above 256 bytes, threads without a block, sampled
//! allocations and candidate sampled frees take out-of-line paths; `realloc`
//! counts inline on the owner's block after the inner call. No atomic
//! read-modify-write, no lock and no cache line written by another thread is
//! touched on the fast paths: snapshots fold the blocks on demand
//! ([`crate::counters`]).

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::cold_path;

use crate::counters::{self, if_fast_block};
use crate::sampler;

/// A global allocator that counts every allocation of the allocator it
/// wraps, and samples allocation stacks for heap profiles.
///
/// ```
/// use allocscope::AllocScope;
///
/// #[global_allocator]
/// static ALLOC: AllocScope = AllocScope::system();
///
/// let before = allocscope::stats();
/// let v = std::hint::black_box(vec![0u8; 1000]);
/// let after = allocscope::stats();
/// assert!(after.allocations > before.allocations);
/// # drop(v);
/// ```
///
/// All instances count into the same process-wide statistics
/// ([`crate::stats`]); normally there is exactly one, the global allocator.
#[derive(Debug, Default, Clone, Copy)]
pub struct AllocScope<A = System> {
    inner: A,
}

impl AllocScope<System> {
    /// Wraps the system allocator (`malloc` on Linux).
    pub const fn system() -> Self {
        AllocScope { inner: System }
    }
}

impl<A> AllocScope<A> {
    /// Wraps any global allocator, e.g. `AllocScope::new(mimalloc::MiMalloc)`.
    pub const fn new(inner: A) -> Self {
        AllocScope { inner }
    }

    /// The wrapped allocator.
    pub const fn inner(&self) -> &A {
        &self.inner
    }
}

/// Counts an allocation outside the fast path: sizes above 256 bytes,
/// threads without a block of their own yet.
#[inline(never)]
fn count_alloc(size: usize) {
    let (b, shared) = counters::current_or_attach();
    if shared {
        b.on_alloc::<true>(size)
    } else {
        b.on_alloc::<false>(size)
    }
}

#[inline(never)]
fn count_dealloc(size: usize) {
    let (b, shared) = counters::current_or_attach();
    if shared {
        b.on_dealloc::<true>(size)
    } else {
        b.on_dealloc::<false>(size)
    }
}

#[inline(never)]
fn count_realloc(old: usize, new: usize) {
    let (b, shared) = counters::current_or_attach();
    if shared {
        b.on_realloc::<true>(old, new)
    } else {
        b.on_realloc::<false>(old, new)
    }
}

#[inline(never)]
#[cold]
fn count_failure() {
    let (b, shared) = counters::current_or_attach();
    if shared {
        b.on_failure::<true>()
    } else {
        b.on_failure::<false>()
    }
}

#[inline]
fn count_result(p: *mut u8, size: usize) {
    if p.is_null() {
        count_failure();
    } else {
        count_alloc(size);
    }
}

/// How an allocation that reached the sampled path was already counted.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Counted {
    /// By the fast path, before the inner call (undo on failure).
    InFlight,
    /// Not yet (count after the inner call).
    No,
}

impl<A: GlobalAlloc> AllocScope<A> {
    /// # Safety
    /// As `GlobalAlloc::alloc` / `alloc_zeroed`.
    #[inline(always)]
    unsafe fn inner_alloc(&self, layout: Layout, zeroed: bool) -> *mut u8 {
        // SAFETY: the caller upholds the contract of the method it names.
        unsafe {
            if zeroed {
                self.inner.alloc_zeroed(layout)
            } else {
                self.inner.alloc(layout)
            }
        }
    }

    /// The fast path of `alloc` and `alloc_zeroed`.
    ///
    /// # Safety
    /// As `GlobalAlloc::alloc`.
    #[inline(always)]
    unsafe fn alloc_impl(&self, layout: Layout, zeroed: bool) -> *mut u8 {
        if_fast_block!(layout.size(), |b| {
            // Count first, so that no register but the result has to
            // survive the inner call; a refused allocation is un-counted.
            b.on_small_alloc_in_flight(layout.size());
            if counters::sample_point(layout.size()) {
                cold_path();
                // SAFETY: the caller upholds the contract.
                return unsafe { self.alloc_sampled(layout, zeroed, Counted::InFlight) };
            }
            // SAFETY: the caller upholds the contract.
            let p = unsafe { self.inner_alloc(layout, zeroed) };
            if p.is_null() {
                cold_path();
                counters::undo_small_alloc();
            }
            p
        }, else {
            // SAFETY: the caller upholds the contract.
            unsafe { self.alloc_slow(layout, zeroed) }
        })
    }

    /// Allocates a block of `layout`: placed as a sampled block and recorded
    /// when `pending` is a sample being taken (falling back to an ordinary
    /// block if the larger request fails or the sample cannot be recorded),
    /// an ordinary block otherwise. Does not count.
    ///
    /// # Safety
    /// As `GlobalAlloc::alloc`.
    #[cold]
    #[inline(never)]
    unsafe fn alloc_placed(
        &self,
        layout: Layout,
        zeroed: bool,
        pending: Option<sampler::Pending>,
    ) -> *mut u8 {
        // SAFETY (all inner calls): the caller upholds the contract; the
        // placement only enlarges a valid layout.
        let (Some(pending), Some(pl)) = (pending, sampler::placement(layout)) else {
            return unsafe { self.inner_alloc(layout, zeroed) };
        };
        let base = unsafe { self.inner_alloc(pl.inner, zeroed) };
        if base.is_null() {
            // the larger request may be what failed
            return unsafe { self.inner_alloc(layout, zeroed) };
        }
        // SAFETY: `offset + size <= pl.inner.size()`.
        let p = unsafe { base.add(pl.offset) };
        if sampler::commit(&pending, p, layout.size()) {
            return p;
        }
        // not recorded: give the block back and allocate it with its own
        // layout, as an ordinary block
        unsafe {
            self.inner.dealloc(base, pl.inner);
            self.inner_alloc(layout, zeroed)
        }
    }

    /// `alloc` of a large block or on a thread without a block.
    ///
    /// # Safety
    /// As `GlobalAlloc::alloc`.
    #[inline(never)]
    unsafe fn alloc_slow(&self, layout: Layout, zeroed: bool) -> *mut u8 {
        let (_, shared) = counters::current_or_attach();
        if !shared && counters::sample_point(layout.size()) {
            // SAFETY: the caller upholds the contract.
            return unsafe { self.alloc_sampled(layout, zeroed, Counted::No) };
        }
        // SAFETY: the caller upholds the contract.
        let p = unsafe { self.inner_alloc(layout, zeroed) };
        count_result(p, layout.size());
        p
    }

    /// An allocation that ran its thread's sampling countdown out.
    ///
    /// # Safety
    /// As `GlobalAlloc::alloc`.
    #[cold]
    #[inline(never)]
    unsafe fn alloc_sampled(&self, layout: Layout, zeroed: bool, counted: Counted) -> *mut u8 {
        let size = layout.size();
        // SAFETY: the caller upholds the contract.
        let p = unsafe { self.alloc_placed(layout, zeroed, sampler::begin()) };
        match counted {
            Counted::InFlight if p.is_null() => counters::undo_small_alloc(),
            Counted::InFlight => {}
            Counted::No => count_result(p, size),
        }
        p
    }

    /// `dealloc` of a block known not to be sampled: counted on the owner's
    /// exact-size slot, then a tail call of the inner `dealloc`.
    ///
    /// # Safety
    /// As `GlobalAlloc::dealloc`.
    #[inline(always)]
    unsafe fn dealloc_unsampled(&self, ptr: *mut u8, layout: Layout) {
        if_fast_block!(layout.size(), |b| {
            b.on_small_dealloc(layout.size());
            // SAFETY: the caller upholds `GlobalAlloc::dealloc`'s contract.
            unsafe { self.inner.dealloc(ptr, layout) }
        }, else {
            // SAFETY: the caller upholds `GlobalAlloc::dealloc`'s contract.
            unsafe { self.dealloc_slow(ptr, layout) }
        })
    }

    /// `dealloc` of a large block or on a thread without a block: kept out of
    /// line so the fast path needs no stack frame and tail-calls the inner
    /// `dealloc`.
    ///
    /// # Safety
    /// As `GlobalAlloc::dealloc`.
    #[inline(never)]
    unsafe fn dealloc_slow(&self, ptr: *mut u8, layout: Layout) {
        count_dealloc(layout.size());
        // SAFETY: the caller upholds `GlobalAlloc::dealloc`'s contract.
        unsafe { self.inner.dealloc(ptr, layout) }
    }

    /// `dealloc` of a pointer placed where sampled blocks are (see
    /// [`sampler::may_be_sampled`]). An ordinary block goes on as in
    /// `dealloc` after one filter lookup.
    ///
    /// # Safety
    /// As `GlobalAlloc::dealloc`.
    #[inline(never)]
    unsafe fn dealloc_candidate(&self, ptr: *mut u8, layout: Layout) {
        if sampler::maybe_sampled(ptr) {
            cold_path();
            // SAFETY: the caller upholds `GlobalAlloc::dealloc`'s contract.
            return unsafe { self.dealloc_maybe_sampled(ptr, layout) };
        }
        // SAFETY: the caller upholds `GlobalAlloc::dealloc`'s contract.
        unsafe { self.dealloc_unsampled(ptr, layout) }
    }

    /// `dealloc` of a pointer the sampler's filter says may be sampled.
    ///
    /// # Safety
    /// As `GlobalAlloc::dealloc`.
    #[cold]
    #[inline(never)]
    unsafe fn dealloc_maybe_sampled(&self, ptr: *mut u8, layout: Layout) {
        count_dealloc(layout.size());
        // SAFETY: the caller upholds `GlobalAlloc::dealloc`'s contract.
        unsafe { self.free_block(ptr, layout) }
    }

    /// Frees a block that may be sampled, with the layout and address it was
    /// allocated with. Does not count.
    ///
    /// # Safety
    /// As `GlobalAlloc::dealloc`.
    unsafe fn free_block(&self, ptr: *mut u8, layout: Layout) {
        match sampler::take(ptr)
            .then(|| sampler::placement(layout))
            .flatten()
        {
            // SAFETY: a sampled block was allocated as its placement says.
            Some(pl) => unsafe { self.inner.dealloc(ptr.sub(pl.offset), pl.inner) },
            // SAFETY: the caller upholds `GlobalAlloc::dealloc`'s contract.
            None => unsafe { self.inner.dealloc(ptr, layout) },
        }
    }

    /// `realloc` on a thread without a block, of a block placed where
    /// sampled blocks are, or that ran the sampling countdown out (`counted`:
    /// the countdown ran out: `sample_point`).
    ///
    /// # Safety
    /// As `GlobalAlloc::realloc`.
    #[inline(never)]
    unsafe fn realloc_slow(
        &self,
        ptr: *mut u8,
        layout: Layout,
        new_size: usize,
        sample_point: bool,
    ) -> *mut u8 {
        let old_sampled = sampler::may_be_sampled(ptr) && sampler::is_sampled(ptr);
        let (_, shared) = counters::current_or_attach();
        let pending = if sample_point || (!shared && counters::sample_point(new_size)) {
            sampler::begin()
        } else {
            None
        };
        if old_sampled || pending.is_some() {
            // SAFETY: the caller upholds `GlobalAlloc::realloc`'s contract.
            return unsafe { self.realloc_moving(ptr, layout, new_size, old_sampled, pending) };
        }
        // SAFETY: the caller upholds `GlobalAlloc::realloc`'s contract.
        let p = unsafe { self.inner.realloc(ptr, layout, new_size) };
        if p.is_null() {
            count_failure();
        } else {
            count_realloc(layout.size(), new_size);
        }
        p
    }

    /// `realloc` that moves the block by hand: the old block was sampled
    /// (allocated with a raised alignment) or the new one is to be sampled.
    ///
    /// # Safety
    /// As `GlobalAlloc::realloc`.
    #[cold]
    #[inline(never)]
    unsafe fn realloc_moving(
        &self,
        ptr: *mut u8,
        layout: Layout,
        new_size: usize,
        old_sampled: bool,
        pending: Option<sampler::Pending>,
    ) -> *mut u8 {
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
            count_failure();
            return std::ptr::null_mut();
        };
        // SAFETY: the caller upholds the contract.
        let q = unsafe { self.alloc_placed(new_layout, false, pending) };
        if q.is_null() {
            // the old block stays live (and sampled, if it was)
            count_failure();
            return q;
        }
        // SAFETY: both blocks are live, distinct, and valid for the copied
        // length.
        unsafe { std::ptr::copy_nonoverlapping(ptr, q, layout.size().min(new_size)) };
        if old_sampled {
            // SAFETY: the caller upholds `GlobalAlloc::realloc`'s contract.
            unsafe { self.free_block(ptr, layout) };
        } else {
            // SAFETY: the caller upholds `GlobalAlloc::realloc`'s contract.
            unsafe { self.inner.dealloc(ptr, layout) };
        }
        count_realloc(layout.size(), new_size);
        q
    }
}

// SAFETY: every method returns memory from the inner allocator that is
// valid for the caller's layout (a sampled block lies inside a larger inner
// block, see `sampler::placement`, and is freed and reallocated through that
// same placement), and frees
// every block with the layout it was allocated with. The counting around the
// calls neither allocates nor touches the returned memory.
unsafe impl<A: GlobalAlloc> GlobalAlloc for AllocScope<A> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { self.alloc_impl(layout, false) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::alloc_zeroed`'s contract.
        unsafe { self.alloc_impl(layout, true) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if sampler::may_be_sampled(ptr) {
            cold_path();
            // SAFETY: the caller upholds `GlobalAlloc::dealloc`'s contract.
            return unsafe { self.dealloc_candidate(ptr, layout) };
        }
        // SAFETY: the caller upholds `GlobalAlloc::dealloc`'s contract.
        unsafe { self.dealloc_unsampled(ptr, layout) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let (block, limit) = counters::fast_state();
        if limit == 0 || sampler::may_be_sampled(ptr) {
            cold_path();
            // SAFETY: the caller upholds `GlobalAlloc::realloc`'s contract.
            return unsafe { self.realloc_slow(ptr, layout, new_size, false) };
        }
        if counters::sample_point(new_size) {
            cold_path();
            // SAFETY: the caller upholds `GlobalAlloc::realloc`'s contract.
            return unsafe { self.realloc_slow(ptr, layout, new_size, true) };
        }
        // SAFETY: the caller upholds `GlobalAlloc::realloc`'s contract.
        let p = unsafe { self.inner.realloc(ptr, layout, new_size) };
        if p.is_null() {
            cold_path();
            count_failure();
        } else {
            // SAFETY: a non-zero limit means `block` is this thread's own
            // block (see `counters::if_fast_block`); blocks are never freed.
            unsafe { &*block }.on_realloc::<false>(layout.size(), new_size);
        }
        p
    }
}
