//! The heap sampler (cold path): Poisson sampling of allocations over
//! allocated bytes, raw stack capture, and the set of live sampled blocks.
//!
//! Owns: the sample interval, each thread's countdown (stored in its
//! thread-local, next to its counters: `crate::counters`), stack capture,
//! and the bounded store of stacks, buckets and live samples. Runs inside the allocator on a sampled allocation (about one per
//! 512 KiB allocated per thread by default), so it never allocates, never
//! waits on a lock (it tries one and drops the sample), and records raw
//! instruction pointers only: symbolisation happens at profile export.
//!
//! **How sampled blocks are recognised on free.**
//! - alignment up to 8 (most Rust allocations): a sampled block is placed
//!   where ordinary blocks are not. The inner allocator is asked for 16 more
//!   bytes at alignment 16 and the block starts 8 bytes in, so its address
//!   is 8 mod 16. glibc's malloc never returns such an address (its
//!   alignment is 16); allocators with 8-byte size classes sometimes do;
//! - larger alignments (rare): the block is allocated as asked, not moved.
//!
//! A free of alignment up to 8 at 0 mod 16 therefore cannot be a sampled
//! block. Three checks, from cheap to exact, each named for what it looks at:
//! - `placed_as_sampled`: is the address where sampled blocks are placed?
//!   A `sub` and a bit test, on every free;
//! - `filter_may_contain`: for those (8 mod 16, or over-aligned), may a
//!   16 KiB counting filter hold it? One load; false positives only;
//! - `live_set_contains` (or `take`, which also removes it): on a
//!   filter hit, is it in the live set? A lock-free table probe.
//!
//! The cost in memory is 16 bytes per sampled block.

mod countdown;
mod stack;
mod store;

use std::alloc::Layout;
use std::cell::Cell;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::OnceLock;
use std::thread::Thread;

pub use countdown::{probability, DEFAULT_INTERVAL};
pub(crate) use stack::{frame_buf, FrameBuf};
pub use stack::{set_stack_capture, stack_capture, StackCapture};
#[cfg(feature = "profile")]
pub(crate) use store::lifetime_class;
pub use store::Limits;
pub(crate) use store::LIFETIME_CLASSES;

/// A lifetime histogram as copied out of the sampler: saturating 32-bit
/// counts per class, boxed (136 bytes) only when one is not zero.
pub(crate) type LifetimeCounts = Option<Box<[u32; LIFETIME_CLASSES]>>;

use crate::counters;

/// Where a sampled block lies in what the inner allocator returned.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Placement {
    /// The layout requested from the inner allocator.
    pub inner: Layout,
    /// Offset of the user's block in it.
    pub offset: usize,
}

/// One bucket of sampled allocations: same stack, same object size, same
/// sampling interval.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct RawBucket {
    /// The scope the samples were taken in (`crate::scope` id).
    pub scope: u32,
    /// The thread group that took them (`crate::threads` id).
    pub thread: u32,
    /// Return addresses, leaf first, as captured (allocscope's own frames
    /// and the `__rust_alloc`-style shims are still present at the leaf end;
    /// symbolisation drops them).
    pub stack: Vec<usize>,
    /// Requested object size in bytes.
    pub size: u64,
    /// The sampling interval in force when these were sampled (>= 1).
    pub interval: u64,
    /// Sampled allocations in this bucket.
    pub allocs: u64,
    /// Of those, how many were freed since.
    pub frees: u64,
    /// The ages, in nanoseconds at capture, of this bucket's sampled
    /// blocks found in the live set (read apart from the counts: a block
    /// sampled or freed meanwhile may be in one and not the other).
    pub ages: Vec<u64>,
    /// Its lifetime histogram: sampled blocks freed, by lifetime class
    /// ([`LIFETIME_CLASSES`]); `None` when none was freed (no heap then).
    pub lifetimes: LifetimeCounts,
}

/// Every bucket recorded so far (never blocks the sampling threads).
#[allow(dead_code)]
pub(crate) fn raw_buckets() -> Vec<RawBucket> {
    store::maintain();
    store::raw_buckets()
}

/// The interval profiles are scaled with for their period.
#[allow(dead_code)]
pub(crate) fn current_interval_for_profile() -> u64 {
    interval()
}

/// Sets the heap sample interval in bytes and returns the previous one:
/// on average one allocation is sampled per `bytes` allocated (a Poisson
/// process, like Go's `runtime.MemProfileRate`). 0 turns sampling off, 1
/// samples every allocation. The default is 512 KiB. The calling thread uses
/// the new interval from its next allocation on, every other thread within
/// its next 1 MiB of allocations (when it next checks in), so a change
/// reaches running threads, not only new ones, at no cost to the hot path.
pub fn set_interval(bytes: u64) -> u64 {
    let prev = countdown::INTERVAL.swap(bytes, Relaxed);
    // this thread: at once (its next allocation checks in)
    AT_CHECK_IN.with(|c| c.set(true));
    counters::set_countdown(0);
    prev
}

/// The heap sample interval in bytes (0 = off).
pub fn interval() -> u64 {
    countdown::INTERVAL.load(Relaxed)
}

/// Sets the caps on the sampler's memory. Only possible before the first
/// sample is recorded (e.g. first thing in `main`, or before setting a
/// non-zero interval with the sampler off by configuration).
pub fn set_limits(limits: Limits) -> Result<(), crate::Error> {
    store::set_limits(limits)
}

/// The caps in force.
pub fn limits() -> Limits {
    store::limits()
}

/// The sampler's own state and footprint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Current sample interval in bytes (0 = off).
    pub interval: u64,
    /// Sampled blocks not yet freed.
    pub live_samples: u64,
    /// Samples not recorded: a cap was reached, or the sampler was busy.
    pub dropped_samples: u64,
    /// Samples recorded since the start.
    pub samples_total: u64,
    /// Distinct stacks stored.
    pub stacks: u64,
    /// Distinct (stack, size, interval) buckets.
    pub buckets: u64,
    /// Stack frames stored (bounded by `Limits::max_frames`).
    pub frames: u64,
    /// Resident memory of the sampler's arenas, in bytes.
    pub memory_bytes: u64,
    /// Address space reserved for the arenas (the bound on
    /// `memory_bytes`), in bytes.
    pub reserved_bytes: u64,
}

/// The sampler's counters and memory use.
pub fn stats() -> Stats {
    let i = store::info();
    Stats {
        interval: interval(),
        live_samples: i.live_samples,
        dropped_samples: store::HOT.dropped.load(Relaxed),
        samples_total: store::HOT.samples.load(Relaxed),
        stacks: i.stacks,
        buckets: i.buckets,
        frames: i.frames,
        memory_bytes: i.resident_bytes,
        reserved_bytes: i.reserved_bytes,
    }
}

/// Estimated live objects and bytes by scope id (`acc[id] += (objects,
/// bytes)`), un-biased like the heap profile: each live sample of a
/// bucket stands for `1 / probability(size, interval)` objects. Lock-free,
/// does not allocate.
pub(crate) fn inuse_by_scope(acc: &mut [(f64, f64)]) {
    store::for_each_bucket(|labels, size, interval, allocs, frees| {
        let live = allocs.saturating_sub(frees);
        if live == 0 {
            return;
        }
        let p = probability(size, interval);
        if p <= 0.0 {
            return;
        }
        if let Some(a) = acc.get_mut(labels.scope() as usize) {
            let objects = live as f64 / p;
            a.0 += objects;
            a.1 += objects * size as f64;
        }
    });
}

/// Sample points reached so far, recorded or dropped: each stands for
/// about [`interval`] bytes allocated (a Poisson process over
/// allocated bytes), so their growth estimates allocation without folding
/// the counters. Two relaxed loads; read by the collector's periodic check
/// (`crate::gc::collect`), never on an allocation path.
pub(crate) fn sample_points() -> u64 {
    store::HOT
        .samples
        .load(Relaxed)
        .wrapping_add(store::HOT.dropped.load(Relaxed))
}

/// Whether a thread waits to be woken at the next allocation that reaches
/// this cold path (a sample point or a check-in): the collector, while the
/// process is idle ([`wake_on_activity`]).
static WAKE_ARMED: AtomicBool = AtomicBool::new(false);
/// The thread [`wake_on_activity`] wakes.
static WAKEE: OnceLock<Thread> = OnceLock::new();

/// Arms a wake-up of the calling thread (the first to call this; later
/// callers' threads are not woken) at the next allocation that reaches the
/// sampler's cold path: a sample point or a check-in, at least once per
/// [`CHECK_IN`] bytes a thread allocates, whatever the interval. Returns
/// false if the calling thread is not the one woken. Disarmed by the
/// wake-up.
pub(crate) fn wake_on_activity() -> bool {
    let me = WAKEE.get_or_init(std::thread::current);
    if me.id() != std::thread::current().id() {
        return false;
    }
    WAKE_ARMED.store(true, SeqCst);
    true
}

/// Whether the wake-up armed by [`wake_on_activity`] is still pending: no
/// allocation reached the cold path since.
pub(crate) fn wake_armed() -> bool {
    WAKE_ARMED.load(SeqCst)
}

/// The cold path's side of [`wake_on_activity`]: a relaxed load, and a
/// futex wake (no allocation, no lock) when armed.
#[inline]
fn wake_armed_thread() {
    if WAKE_ARMED.load(Relaxed) && WAKE_ARMED.swap(false, SeqCst) {
        if let Some(t) = WAKEE.get() {
            t.unpark();
        }
    }
}

/// The longest countdown a thread runs before it checks in: re-reads the
/// interval (so a new one reaches every allocating thread within this many
/// of its bytes) and continues the Poisson process without sampling.
pub(crate) const CHECK_IN: u64 = 1024 * 1024;

thread_local! {
    /// This thread's sampling random state.
    static RNG: Cell<u64> = const { Cell::new(0) };
    /// Whether the current countdown ends at a check-in rather than at a
    /// sampling point. A thread starts at a check-in with a countdown of 0.
    static AT_CHECK_IN: Cell<bool> = const { Cell::new(true) };
    /// Set while this thread is inside the sampler: an allocation made from
    /// there (none is expected) is never sampled.
    static IN_SAMPLER: Cell<bool> = const { Cell::new(false) };
}

/// A sample being taken: the stack is captured (into the caller's
/// [`FrameBuf`], so nothing is copied) before the block exists.
pub(crate) struct Pending<'a> {
    frames: &'a [usize],
    interval: u64,
}

/// Starts the next countdown: a fresh exponential gap, cut at [`CHECK_IN`].
fn next_countdown(gap: u64) {
    let check_in = gap > CHECK_IN;
    AT_CHECK_IN.with(|c| c.set(check_in));
    counters::set_countdown(if check_in { CHECK_IN } else { gap });
}

/// Called when an allocation ran its thread's countdown out. Decides
/// whether it is sampled and starts the next countdown; if it is sampled
/// and a sample can be taken, captures the stack. `None` means "allocate
/// normally".
///
/// Sampling stays an exact Poisson process over allocated bytes across
/// check-ins: at a check-in the gap to the next point is drawn afresh
/// (memorylessness), and the allocation that crossed the check-in is
/// sampled if that point falls within its bytes past the check-in.
#[cold]
#[inline(never)]
pub(crate) fn begin(buf: &mut FrameBuf) -> Option<Pending<'_>> {
    wake_armed_thread();
    let interval = interval();
    // how far the allocation went past the end of the countdown
    let overshoot = 0u64.wrapping_sub(counters::countdown());
    let sampled = if AT_CHECK_IN.with(Cell::get) {
        let gap = RNG.with(|r| countdown::draw(interval, r));
        if gap < overshoot {
            true
        } else {
            next_countdown(gap - overshoot);
            false
        }
    } else {
        true
    };
    if !sampled {
        return None;
    }
    next_countdown(RNG.with(|r| countdown::draw(interval, r)));
    if interval == 0 || IN_SAMPLER.with(Cell::get) {
        return None;
    }
    if !store::has_room() {
        store::HOT.dropped.fetch_add(1, Relaxed);
        return None;
    }
    IN_SAMPLER.with(|c| c.set(true));
    let frames = stack::capture(buf);
    IN_SAMPLER.with(|c| c.set(false));
    Some(Pending { frames, interval })
}

/// Records the sampled block `ptr` of `size` bytes. False if it could not
/// be recorded (the caller then re-allocates it with its own layout).
#[cold]
#[inline(never)]
pub(crate) fn commit(p: &Pending<'_>, ptr: *mut u8, size: usize) -> bool {
    IN_SAMPLER.with(|c| c.set(true));
    let labels = store::Labels::new(counters::current_scope(), counters::current_group());
    let ok = store::record(ptr as usize, size as u64, p.interval, labels, p.frames);
    IN_SAMPLER.with(|c| c.set(false));
    ok
}

/// Where a sampled block of `layout` is placed (see the module docs).
/// `None` for a size too close to `isize::MAX` to allow it (such a block is
/// simply not sampled).
#[inline]
pub(crate) fn placement(layout: Layout) -> Option<Placement> {
    if layout.align() <= 8 {
        let inner = Layout::from_size_align(layout.size().checked_add(16)?, 16).ok()?;
        Some(Placement { inner, offset: 8 })
    } else {
        Some(Placement {
            inner: layout,
            offset: 0,
        })
    }
}

/// Is `ptr`, a block of alignment `align`, placed where sampled blocks are?
/// True for every block at 8 mod 16 (where sampled blocks of alignment <= 8
/// are placed) and every block of alignment >= 16 (sampled ones are not
/// displaced; [`filter_may_contain`] and [`live_set_contains`] tell them
/// apart): exactly when bit 3 of `ptr - align` is clear. Cost: a `sub` and
/// a bit test, the only sampler check most frees pay; the `sub` replaces
/// the copy of `ptr` the inner `free` call needs anyway. False means "not
/// sampled", for certain; true means "look further".
///
/// Why: for `ptr` at 0 mod 16 and `align` in 1..=8, `ptr - align` is in
/// `-8..=-1` mod 16, bit 3 set. At 8 mod 16 it is in `0..=7`, bit 3 clear.
/// For `align >= 16`, `ptr - align` is 0 mod 16, bit 3 clear.
#[inline(always)]
pub(crate) fn placed_as_sampled(ptr: *mut u8, align: usize) -> bool {
    placed_as_sampled_shifted(ptr.wrapping_byte_sub(align))
}

/// [`placed_as_sampled`] of `ptr`, given `ptr - align`: a bit test.
#[inline(always)]
pub(crate) fn placed_as_sampled_shifted(shifted: *mut u8) -> bool {
    (shifted as usize) & 8 == 0
}

/// `shifted + align` (the inverse of the shift in `dealloc`), as one `lea`
/// into whichever register the inner call wants it in, on x86-64.
#[inline(always)]
pub(crate) fn unshift(shifted: *mut u8, align: usize) -> *mut u8 {
    #[cfg(target_arch = "x86_64")]
    {
        let p: *mut u8;
        // The pointers are only added, never dereferenced: `nomem` holds.
        #[allow(clippy::pointers_in_nomem_asm_block)]
        // SAFETY: one `lea`: reads two registers, writes a third, touches no
        // memory and no flags. The result is `shifted + align` with
        // `shifted`'s provenance (`ptr - align` of the caller's pointer).
        unsafe {
            std::arch::asm!(
                "lea {p}, [{s} + {a}]",
                p = lateout(reg) p,
                s = in(reg) shifted,
                a = in(reg) align,
                options(pure, nomem, nostack, preserves_flags)
            );
        }
        p
    }
    #[cfg(not(target_arch = "x86_64"))]
    shifted.wrapping_byte_add(align)
}

/// `p`, unchanged, but opaque to the optimiser (an empty `asm!` on
/// x86-64), so that it keeps `p` in place instead of recomputing the value
/// `p` was derived from: the dealloc fast path tests `ptr - align` in the
/// register `ptr` came in, then adds `align` back in the `lea` that passes
/// `ptr` to the inner `free`, instead of copying `ptr` first.
#[inline(always)]
pub(crate) fn opaque(mut p: *mut u8) -> *mut u8 {
    #[cfg(target_arch = "x86_64")]
    // The pointer is never dereferenced: `nomem` holds.
    #[allow(clippy::pointers_in_nomem_asm_block)]
    // SAFETY: an empty instruction sequence: reads and writes nothing but
    // the register holding `p`, which it leaves as it was.
    unsafe {
        std::arch::asm!("/* {0} */", inout(reg) p, options(pure, nomem, nostack, preserves_flags));
    }
    p
}

/// May `ptr` (which passed [`placed_as_sampled`]) be a live sampled block?
/// Cost: one relaxed load from a 16 KiB counting filter (a hash and a
/// byte test), lock-free. False means "not sampled", for certain; true
/// means "maybe" (false positives only): ask [`live_set_contains`] or
/// [`take`].
#[inline(always)]
pub(crate) fn filter_may_contain(ptr: *mut u8) -> bool {
    store::filter_may_contain(ptr as usize)
}

/// If `ptr` is a live sampled block, forgets it (counting the free in its
/// bucket) and returns true: it must then be freed as its [`placement`]
/// says. Cost: a probe of the live set and a compare-and-swap, lock-free.
#[inline(never)]
pub(crate) fn take(ptr: *mut u8) -> bool {
    store::remove(ptr as usize)
}

/// Is `ptr` a live sampled block? The filter, then on a hit a probe of the
/// live set (an open-addressing table, lock-free); exact, changes nothing.
pub(crate) fn live_set_contains(ptr: *mut u8) -> bool {
    store::filter_may_contain(ptr as usize) && store::live_set_contains(ptr as usize)
}
