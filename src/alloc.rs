//! The hot path: [`AllocScope`], the `GlobalAlloc` wrapper.
//!
//! Owns the forwarding of every allocator call to the wrapped allocator and
//! the counting around it. It must never allocate, lock, block or panic: it
//! runs inside every allocation of the process, and a panic here aborts it.
//!
//! # Where the instructions go
//! An `alloc` adds, around the inner call:
//! 1. one thread-local load of this thread's counter block pointer
//!    (`mov reg, fs:[off]`) and a null test (first event of a thread, or a
//!    thread past its exit hook: out-of-line slow path);
//! 2. one compare of the size against 256 (exact per-size slots below it);
//! 3. one non-atomic-RMW increment of `small_allocs[size]` in the thread's own
//!    block (`add qword [block + size*8], 1`): the byte total of an exact-size
//!    slot is `count × size`, so no second add is needed.
//!
//! A `dealloc` does the same with `small_frees`. Sizes above 256 bytes add a
//! `lzcnt`-based class computation and a second add for the byte sum. No
//! atomic read-modify-write, no lock and no cache line written by another
//! thread is touched: snapshots fold the blocks on demand
//! ([`crate::counters`]).

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::cold_path;

use crate::counters;

/// A global allocator that counts every allocation of the allocator it wraps.
///
/// ```
/// use allocscope::AllocScope;
///
/// #[global_allocator]
/// static ALLOC: AllocScope = AllocScope::system();
///
/// let before = allocscope::stats();
/// let v = vec![0u8; 1000];
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
fn count_realloc(old: usize, new: usize) {
    let (b, shared) = counters::current_or_attach();
    if shared {
        b.on_realloc::<true>(old, new)
    } else {
        b.on_realloc::<false>(old, new)
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

impl<A: GlobalAlloc> AllocScope<A> {
    /// `alloc` of a large block or on a thread without a block.
    ///
    /// # Safety
    /// As `GlobalAlloc::alloc`.
    #[inline(never)]
    unsafe fn alloc_slow(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
        let p = unsafe { self.inner.alloc(layout) };
        count_result(p, layout.size());
        p
    }

    /// `alloc_zeroed` of a large block or on a thread without a block.
    ///
    /// # Safety
    /// As `GlobalAlloc::alloc_zeroed`.
    #[inline(never)]
    unsafe fn alloc_zeroed_slow(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::alloc_zeroed`'s contract.
        let p = unsafe { self.inner.alloc_zeroed(layout) };
        count_result(p, layout.size());
        p
    }

    /// `dealloc` of a large block or on a thread without a block: kept out of
    /// line so the fast path needs no stack frame and tail-calls the inner
    /// `dealloc`.
    ///
    /// # Safety
    /// As `GlobalAlloc::dealloc`.
    #[inline(never)]
    unsafe fn dealloc_slow(&self, ptr: *mut u8, layout: Layout) {
        let (b, shared) = counters::current_or_attach();
        if shared {
            b.on_dealloc::<true>(layout.size())
        } else {
            b.on_dealloc::<false>(layout.size())
        }
        // SAFETY: the caller upholds `GlobalAlloc::dealloc`'s contract.
        unsafe { self.inner.dealloc(ptr, layout) }
    }
}

// SAFETY: every method forwards to the inner allocator with the caller's
// arguments unchanged and returns its result unchanged; the counting around
// it neither allocates nor touches the returned memory.
unsafe impl<A: GlobalAlloc> GlobalAlloc for AllocScope<A> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        counters::with_fast_block(
            layout.size(),
            |b| {
                // Count first, so that no register but the result has to
                // survive the inner call; a refused allocation is un-counted.
                b.on_small_alloc_in_flight(layout.size());
                // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
                let p = unsafe { self.inner.alloc(layout) };
                if p.is_null() {
                    cold_path();
                    counters::undo_small_alloc();
                }
                p
            },
            // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
            || unsafe { self.alloc_slow(layout) },
        )
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        counters::with_fast_block(
            layout.size(),
            |b| {
                // Count first, so that no register but the result has to
                // survive the inner call; a refused allocation is un-counted.
                b.on_small_alloc_in_flight(layout.size());
                // SAFETY: the caller upholds `GlobalAlloc::alloc_zeroed`'s contract.
                let p = unsafe { self.inner.alloc_zeroed(layout) };
                if p.is_null() {
                    cold_path();
                    counters::undo_small_alloc();
                }
                p
            },
            // SAFETY: the caller upholds `GlobalAlloc::alloc_zeroed`'s contract.
            || unsafe { self.alloc_zeroed_slow(layout) },
        )
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        counters::with_fast_block(
            layout.size(),
            |b| {
                b.on_small_dealloc(layout.size());
                // SAFETY: the caller upholds `GlobalAlloc::dealloc`'s contract.
                unsafe { self.inner.dealloc(ptr, layout) }
            },
            // SAFETY: the caller upholds `GlobalAlloc::dealloc`'s contract.
            || unsafe { self.dealloc_slow(ptr, layout) },
        )
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::realloc`'s contract.
        let p = unsafe { self.inner.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            count_realloc(layout.size(), new_size);
        } else {
            count_failure();
        }
        p
    }
}
