//! The hot path: [`AllocScope`], the `GlobalAlloc` wrapper.
//!
//! Owns the forwarding of every allocator call to the wrapped allocator, the
//! counting around it and the sampling decision. It must never allocate,
//! lock, block or panic: it runs inside every allocation of the process, and
//! a panic here aborts it.
//!
//! # Where the instructions go
//! Measured with callgrind (docs/measurements.md, "Measured overhead"): an
//! alloc+free pair of small blocks costs 15 instructions more than
//! `System`'s own with sampling off, about 15.3 with sampling at the default
//! interval (x86-64, frame pointers on). Per call, as compiled:
//!
//! An `alloc` of at most 256 bytes on a thread with counters of its own
//! (9 more than `System::alloc`):
//! 1. the thread-local's offset (`mov $off, rax`; one thread-local holds
//!    everything the fast path touches, see `counters`);
//! 2. one compare of the size against the fast-path limit looked up by the
//!    alignment's low byte (`movzx ecx, sil; cmp rdx, fs:[rax+rcx*8]; jae`):
//!    the limit is 257 for alignments 1 to 8 while the thread counts in its
//!    thread-local counters and 0 otherwise, so this one compare bounds the
//!    size, proves the counters live and the alignment small enough for
//!    `malloc` itself;
//! 3. the in-flight size, so that a refused allocation can be un-counted out
//!    of line without keeping a register alive across the inner call
//!    (`mov fs:[rax+IN], rdx`);
//! 4. one non-atomic increment of the exact-size counter in the thread's own
//!    storage (`inc qword fs:[rax+rdx*8+SMALL]`): bytes are `count × size`;
//!    and one of the thread's running allocation count
//!    (`inc qword fs:[rax+SCOPE]`), which scope switches book from (the
//!    bytes of a scope come from the countdown below: see `crate::scope`);
//! 5. the sampling countdown, in place (`sub fs:[rax+CD], rdx; jb`);
//! 6. the inner call is a `call`, not `System`'s tail `jmp`, so that a null
//!    result can be seen (`test rax, rax; je`, and the return). Wrapping
//!    `System` on glibc or musl, the fast path calls `malloc` itself, which
//!    saves `System`'s own six-instruction alignment check (see
//!    `direct_malloc`).
//!
//! A `dealloc` of at most 256 bytes (7 more than `System::dealloc`):
//! 1. `ptr - align`, in place (`sub rsi, rdx`): its bit 3 is clear for every
//!    block that may be sampled (see `sampling::placed_as_sampled`);
//! 2. the thread-local's offset, and one compare of the size against the
//!    limit looked up by the low byte of `ptr - align` (`movzx; cmp; jae`):
//!    non-zero only where bit 3 is set, so this compare also rules out a
//!    sampled block;
//! 3. the exact-size free counter (`inc qword fs:[...]`);
//! 4. `ptr` is rebuilt by the `lea` that passes it to `free`, which replaces
//!    the copy `System` makes, and the inner `dealloc` is tail-called.
//!
//! Sizes above 256 bytes, threads without counters, sampled allocations,
//! over-aligned blocks and frees of blocks placed as sampled take
//! out-of-line paths (such a free checks the sampler's counting filter,
//! `sampling::filter_may_contain`, and only on a hit its live set).
//! `realloc` is counted before the inner call, like `alloc` (with the
//! running count for scopes). No atomic read-modify-write, no lock and no
//! cache line written by another thread is touched on the fast paths:
//! snapshots fold the counters on demand ([`crate::counters`]).

use std::alloc::{GlobalAlloc, Layout, System};
use std::any::TypeId;
use std::hint::cold_path;

use crate::counters;
use crate::sampling;

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
/// threads without a block of their own yet. Inlined into the out-of-line
/// paths that call it.
#[inline]
fn count_alloc(size: usize) {
    let (b, shared) = counters::current_or_attach();
    if shared {
        b.on_alloc::<true>(size);
        counters::book_shared(b, size);
    } else {
        b.on_alloc::<false>(size);
        counters::count_scope_alloc(1);
    }
}

#[inline]
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
        b.on_realloc::<true>(old, new);
        counters::book_shared(b, new);
    } else {
        b.on_realloc::<false>(old, new);
        counters::count_scope_alloc(1);
    }
}

/// Counts a refused allocation or `realloc` of `size` (new) bytes. On a
/// thread with its own block, every such call follows a `sample_point` of
/// `size` (see `counters::uncount_bytes`), whose bytes it takes back.
#[inline(never)]
#[cold]
fn count_failure(size: usize) {
    let (b, shared) = counters::current_or_attach();
    if shared {
        b.on_failure::<true>()
    } else {
        counters::uncount_bytes(size);
        b.on_failure::<false>()
    }
}

#[inline]
fn count_result(p: *mut u8, size: usize) {
    if p.is_null() {
        count_failure(size);
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

/// Does the wrapped allocator `A` hand small blocks straight to `malloc`?
/// True for [`System`] on 64-bit Linux with glibc or musl (x86-64 and
/// AArch64). There the fast path, which only takes alignments up to 8
/// (`counters::local::FAST_MAX_ALIGN`), calls `malloc` itself: the same function
/// `System::alloc` calls, behind a check of `align` against `size` that it
/// needs for alignments above 8. This relies on `malloc` aligning every block
/// to at least 8 bytes, whatever its size: glibc and musl align to 16, and so
/// do (at least to 8) the allocators that replace `malloc` by `LD_PRELOAD`
/// (jemalloc, tcmalloc, mimalloc), whose smallest size class is 8 bytes.
/// `System`'s `dealloc` and `realloc` accept the blocks. The comparison folds
/// to a constant.
#[inline(always)]
fn direct_malloc<A: 'static>() -> bool {
    cfg!(all(
        target_os = "linux",
        any(target_env = "gnu", target_env = "musl"),
        any(target_arch = "x86_64", target_arch = "aarch64")
    )) && TypeId::of::<A>() == TypeId::of::<System>()
}

impl<A: GlobalAlloc + 'static> AllocScope<A> {
    /// The inner allocation of the fast path (with `direct_malloc`, the
    /// alignment is at most `counters::local::FAST_MAX_ALIGN` = 8).
    ///
    /// # Safety
    /// As `GlobalAlloc::alloc` / `alloc_zeroed`.
    #[inline(always)]
    unsafe fn inner_alloc_fast(&self, layout: Layout, zeroed: bool) -> *mut u8 {
        #[cfg(target_os = "linux")]
        if direct_malloc::<A>() {
            // SAFETY: `direct_malloc` holds only where `malloc` aligns every
            // block to at least 8 >= `layout.align()` (the caller); the size is
            // non-zero (the caller's contract). `System` frees and
            // reallocates such blocks with `free` and `realloc`.
            return unsafe {
                if zeroed {
                    libc::calloc(layout.size(), 1).cast()
                } else {
                    libc::malloc(layout.size()).cast()
                }
            };
        }
        // SAFETY: the caller upholds the contract.
        unsafe { self.inner_alloc(layout, zeroed) }
    }

    /// The inner `realloc` of the fast path, for an alignment of at most 8.
    ///
    /// # Safety
    /// As `GlobalAlloc::realloc`.
    #[inline(always)]
    unsafe fn inner_realloc_fast(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        #[cfg(target_os = "linux")]
        if direct_malloc::<A>() {
            // SAFETY: as in `inner_alloc_fast`: `System` allocated `ptr`
            // with `malloc` or `posix_memalign`, which `realloc` accepts, and
            // `realloc`'s blocks are aligned to 16 >= `layout.align()`;
            // `new_size` is non-zero (the caller's contract).
            return unsafe { libc::realloc(ptr.cast(), new_size).cast() };
        }
        // SAFETY: the caller upholds the contract.
        unsafe { self.inner.realloc(ptr, layout, new_size) }
    }

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
        // With `malloc` called directly, the one compare also checks the
        // alignment (see `counters::fast_limit_for`).
        let align = if direct_malloc::<A>() {
            layout.align()
        } else {
            1
        };
        // One compare: a small size, counters of its own (and, with `malloc`
        // called directly, an alignment of at most 8).
        if layout.size() < counters::fast_limit_for(align) {
            // SAFETY: every limit is at most `SMALL_SLOTS`.
            unsafe { std::hint::assert_unchecked(layout.size() < crate::size_class::SMALL_SLOTS) };
            // Count first, so that no register but the result has to
            // survive the inner call; a refused allocation is un-counted.
            counters::small_alloc_in_flight(layout.size());
            if counters::sample_point(layout.size()) {
                cold_path();
                // SAFETY: the caller upholds the contract.
                return unsafe { self.alloc_sampled(layout, zeroed, Counted::InFlight) };
            }
            // SAFETY: the caller upholds the contract; the alignment was
            // checked with the size.
            let p = unsafe { self.inner_alloc_fast(layout, zeroed) };
            if p.is_null() {
                cold_path();
                counters::undo_small_alloc();
            }
            p
        } else {
            // SAFETY: the caller upholds the contract.
            unsafe { self.alloc_slow(layout, zeroed) }
        }
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
        pending: Option<sampling::Pending<'_>>,
    ) -> *mut u8 {
        let (Some(pending), Some(pl)) = (pending, sampling::placement(layout)) else {
            // SAFETY: the caller upholds the contract.
            return unsafe { self.inner_alloc(layout, zeroed) };
        };
        // SAFETY: the caller upholds the contract; the placement only
        // enlarges a valid layout.
        let base = unsafe { self.inner_alloc(pl.inner, zeroed) };
        if base.is_null() {
            // the larger request may be what failed
            // SAFETY: the caller upholds the contract.
            return unsafe { self.inner_alloc(layout, zeroed) };
        }
        // SAFETY: `offset + size <= pl.inner.size()`.
        let p = unsafe { base.add(pl.offset) };
        if sampling::commit(&pending, p, layout.size()) {
            return p;
        }
        if pl.offset == 0 && pl.inner == layout {
            // not recorded, but not moved either: an ordinary block already
            return base;
        }
        // not recorded: give the block back and allocate it with its own
        // layout, as an ordinary block
        // SAFETY: `base` was allocated just above with `pl.inner` and is
        // handed to nobody; the caller upholds the contract for `layout`.
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
        let mut frames = sampling::frame_buf();
        // SAFETY: the caller upholds the contract.
        let p = unsafe { self.alloc_placed(layout, zeroed, sampling::begin(&mut frames)) };
        match counted {
            Counted::InFlight if p.is_null() => counters::undo_small_alloc(),
            Counted::InFlight => {}
            Counted::No => count_result(p, size),
        }
        p
    }

    /// `dealloc` that missed the fast path, given as `shifted = ptr -
    /// align`: a block that may be sampled, a large one, or a thread
    /// without counters of its own.
    ///
    /// # Safety
    /// As `GlobalAlloc::dealloc` of `shifted + layout.align()`.
    #[inline(never)]
    unsafe fn dealloc_other(&self, shifted: *mut u8, layout: Layout) {
        if sampling::placed_as_sampled_shifted(shifted) {
            // SAFETY: the caller upholds `GlobalAlloc::dealloc`'s contract.
            unsafe { self.dealloc_placed_as_sampled(shifted, layout) }
        } else {
            // SAFETY: the caller upholds `GlobalAlloc::dealloc`'s contract.
            unsafe { self.dealloc_slow(shifted, layout) }
        }
    }

    /// `dealloc` of a block that cannot be sampled but missed the fast path
    /// (a large one, an over-aligned or 8-mod-16 one the filter cleared, or
    /// on a thread without counters of its own): kept out of line so the
    /// fast path needs no stack frame and tail-calls the inner `dealloc`.
    ///
    /// # Safety
    /// As `GlobalAlloc::dealloc` of `shifted + layout.align()`.
    #[inline(never)]
    unsafe fn dealloc_slow(&self, shifted: *mut u8, layout: Layout) {
        let ptr = shifted.wrapping_byte_add(layout.align());
        count_dealloc(layout.size());
        // SAFETY: the caller upholds `GlobalAlloc::dealloc`'s contract.
        unsafe { self.inner.dealloc(ptr, layout) }
    }

    /// `dealloc` of a pointer placed where sampled blocks are (see
    /// [`sampling::placed_as_sampled`]), given as `shifted = ptr - align`. An
    /// ordinary block goes on as in `dealloc` after one filter lookup
    /// ([`sampling::filter_may_contain`]).
    ///
    /// # Safety
    /// As `GlobalAlloc::dealloc`.
    #[inline(never)]
    unsafe fn dealloc_placed_as_sampled(&self, shifted: *mut u8, layout: Layout) {
        let ptr = shifted.wrapping_byte_add(layout.align());
        if sampling::filter_may_contain(ptr) {
            cold_path();
            // SAFETY: the caller upholds `GlobalAlloc::dealloc`'s contract.
            return unsafe { self.dealloc_filter_hit(ptr, layout) };
        }
        // SAFETY: the caller upholds `GlobalAlloc::dealloc`'s contract.
        unsafe { self.dealloc_slow(shifted, layout) }
    }

    /// `dealloc` of a pointer the sampler's filter says may be sampled: the
    /// live set tells ([`Self::free_block`]).
    ///
    /// # Safety
    /// As `GlobalAlloc::dealloc`.
    #[cold]
    #[inline(never)]
    unsafe fn dealloc_filter_hit(&self, ptr: *mut u8, layout: Layout) {
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
        match sampling::take(ptr)
            .then(|| sampling::placement(layout))
            .flatten()
        {
            // SAFETY: a sampled block was allocated as its placement says.
            Some(pl) => unsafe { self.inner.dealloc(ptr.sub(pl.offset), pl.inner) },
            // SAFETY: the caller upholds `GlobalAlloc::dealloc`'s contract.
            None => unsafe { self.inner.dealloc(ptr, layout) },
        }
    }

    /// `realloc` that missed the fast path: on a thread without counters of
    /// its own, of a block that may be sampled or is over-aligned, or one
    /// whose new size ran the sampling countdown out (`sample_point` is then
    /// true: the countdown was already taken).
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
        let old_sampled =
            sampling::placed_as_sampled(ptr, layout.align()) && sampling::live_set_contains(ptr);
        let (_, shared) = counters::current_or_attach();
        let mut frames = sampling::frame_buf();
        let pending = if sample_point || (!shared && counters::sample_point(new_size)) {
            sampling::begin(&mut frames)
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
            count_failure(new_size);
        } else {
            count_realloc(layout.size(), new_size);
        }
        p
    }

    /// `realloc` that moves the block by hand: the old block was sampled
    /// (placed inside a larger inner block, or sampled in place) or the new one
    /// is to be sampled.
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
        pending: Option<sampling::Pending<'_>>,
    ) -> *mut u8 {
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
            count_failure(new_size);
            return std::ptr::null_mut();
        };
        // SAFETY: the caller upholds the contract.
        let q = unsafe { self.alloc_placed(new_layout, false, pending) };
        if q.is_null() {
            // the old block stays live (and sampled, if it was)
            count_failure(new_size);
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
// block, see `sampling::placement`, and is freed and reallocated through that
// same placement), and frees
// every block with the layout it was allocated with. The counting around the
// calls neither allocates nor touches the returned memory.
unsafe impl<A: GlobalAlloc + 'static> GlobalAlloc for AllocScope<A> {
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
        // `ptr - align` (see `sampling::placed_as_sampled`), computed in place
        // and added back for the inner call: saves the copy of `ptr`.
        let shifted = sampling::opaque(ptr.wrapping_byte_sub(layout.align()));
        // One compare: a small block, that cannot be sampled, on a thread
        // with counters of its own (see `counters::fast_free_limit`).
        if layout.size() < counters::fast_free_limit(shifted) {
            // SAFETY: every limit is at most `SMALL_SLOTS`.
            unsafe { std::hint::assert_unchecked(layout.size() < crate::size_class::SMALL_SLOTS) };
            counters::small_dealloc(layout.size());
            // SAFETY: the caller upholds `GlobalAlloc::dealloc`'s contract.
            unsafe {
                self.inner
                    .dealloc(sampling::unshift(shifted, layout.align()), layout)
            }
        } else {
            // SAFETY: the caller upholds `GlobalAlloc::dealloc`'s contract.
            unsafe { self.dealloc_other(shifted, layout) }
        }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // One compare rules out a thread without counters, a block that may
        // be sampled and (so) an alignment above 8 (see
        // `counters::fast_free_limit`).
        if counters::fast_free_limit(ptr.wrapping_byte_sub(layout.align())) == 0 {
            cold_path();
            // SAFETY: the caller upholds `GlobalAlloc::realloc`'s contract.
            return unsafe { self.realloc_slow(ptr, layout, new_size, false) };
        }
        if counters::sample_point(new_size) {
            cold_path();
            // SAFETY: the caller upholds `GlobalAlloc::realloc`'s contract.
            return unsafe { self.realloc_slow(ptr, layout, new_size, true) };
        }
        // Count first (the limit was checked above), so that no register
        // has to survive the inner call; a refused call is un-counted.
        counters::realloc_in_flight(layout.size(), new_size);
        // SAFETY: the caller upholds `GlobalAlloc::realloc`'s contract; the
        // alignment is at most 8 (above).
        let p = unsafe { self.inner_realloc_fast(ptr, layout, new_size) };
        if p.is_null() {
            cold_path();
            counters::undo_realloc();
        }
        p
    }
}
