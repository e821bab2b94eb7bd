//! Workloads and allocators shared by the criterion bench (`overhead.rs`)
//! and the stand-alone runner `bench_pairs` (in `benches/harness`, used
//! with `benches/roundrobin.py` and callgrind). Every allocator is called
//! through `GlobalAlloc` directly, so they all run in the same process.
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use allocscope::AllocScope;

/// The naive wrapper peers resemble: one global relaxed atomic per counter.
pub struct Naive<A>(pub A);

static N_ALLOCS: AtomicU64 = AtomicU64::new(0);
static N_FREES: AtomicU64 = AtomicU64::new(0);
static N_ABYTES: AtomicU64 = AtomicU64::new(0);
static N_FBYTES: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is forwarded to the inner allocator with the caller's
// arguments; the counting around it touches only atomics.
unsafe impl<A: GlobalAlloc> GlobalAlloc for Naive<A> {
    #[inline]
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `alloc`'s contract.
        let p = unsafe { self.0.alloc(l) };
        if !p.is_null() {
            N_ALLOCS.fetch_add(1, Relaxed);
            N_ABYTES.fetch_add(l.size() as u64, Relaxed);
        }
        p
    }
    #[inline]
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        N_FREES.fetch_add(1, Relaxed);
        N_FBYTES.fetch_add(l.size() as u64, Relaxed);
        // SAFETY: the caller upholds `dealloc`'s contract.
        unsafe { self.0.dealloc(p, l) }
    }
    #[inline]
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        // SAFETY: the caller upholds `realloc`'s contract.
        let q = unsafe { self.0.realloc(p, l, n) };
        if !q.is_null() {
            N_ALLOCS.fetch_add(1, Relaxed);
            N_FREES.fetch_add(1, Relaxed);
            N_ABYTES.fetch_add(n as u64, Relaxed);
            N_FBYTES.fetch_add(l.size() as u64, Relaxed);
        }
        q
    }
}

use ga_workload::floor_failure;
/// The floor of exact failure counting (see [`ga_workload::CallFloor`]).
pub use ga_workload::CallFloor;

/// The floor of allocscope's own structure, counting nothing: the same
/// per-thread limit lookups (by the alignment's low byte on alloc, by the
/// low byte of `ptr - align` on free) and the same direct `malloc` call and
/// null test as allocscope's fast paths, without the counters, the sampling
/// countdown or the in-flight size. Not a peer: what is left of the overhead
/// when counting is free.
pub struct TlsFloor;

/// allocscope's limit tables: 257 for alignments 1 to 8, 0 otherwise (by
/// the alignment's low byte); and 257 where bit 3 of `ptr - align` is set.
const fn floor_limits(free: bool) -> [std::cell::Cell<usize>; 256] {
    let mut t = [const { std::cell::Cell::new(0) }; 256];
    let mut i = 0;
    while i < 256 {
        let on = if free {
            i & 8 != 0
        } else {
            matches!(i, 1 | 2 | 4 | 8)
        };
        if on {
            t[i] = std::cell::Cell::new(257);
        }
        i += 1;
    }
    t
}

thread_local! {
    static TLS_FLOOR_LIMITS: [std::cell::Cell<usize>; 256] = const { floor_limits(false) };
    static TLS_FLOOR_FREE_LIMITS: [std::cell::Cell<usize>; 256] = const { floor_limits(true) };
}

#[cold]
#[inline(never)]
unsafe fn tls_floor_alloc_slow(l: Layout) -> *mut u8 {
    // SAFETY: the caller upholds `alloc`'s contract.
    let p = unsafe { System.alloc(l) };
    if p.is_null() {
        floor_failure();
    }
    p
}

// SAFETY: every block comes from `malloc` (the fast path: alignment up to
// 8, which glibc's malloc meets) or from `System` (`malloc` or
// `posix_memalign`), and both kinds may be freed with `free`, which both
// free paths end in.
unsafe impl GlobalAlloc for TlsFloor {
    #[inline]
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let limit = TLS_FLOOR_LIMITS.with(|t| t[usize::from(l.align() as u8)].get());
        if l.size() >= limit {
            // SAFETY: the caller upholds `alloc`'s contract.
            return unsafe { tls_floor_alloc_slow(l) };
        }
        // SAFETY: align <= 8 (the table), which glibc's malloc meets; the
        // size is non-zero.
        let p = unsafe { libc::malloc(l.size()) }.cast::<u8>();
        if p.is_null() {
            floor_failure();
        }
        p
    }
    #[inline]
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        let byte = (p as usize).wrapping_sub(l.align()) as u8;
        let limit = TLS_FLOOR_FREE_LIMITS.with(|t| t[usize::from(byte)].get());
        if l.size() >= limit {
            // SAFETY: the caller upholds `dealloc`'s contract.
            return unsafe { System.dealloc(p, l) };
        }
        // SAFETY: allocated by `malloc` above (or by `System`, which frees
        // with `free` too).
        unsafe { libc::free(p.cast()) }
    }
    #[inline]
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        // SAFETY: the caller upholds `realloc`'s contract.
        let q = unsafe { System.realloc(p, l, n) };
        if q.is_null() {
            floor_failure();
        }
        q
    }
}

/// A tracker for tracking-allocator that counts like the others do.
pub struct CountingTracker;
impl tracking_allocator::AllocationTracker for CountingTracker {
    fn allocated(
        &self,
        _a: usize,
        size: usize,
        _w: usize,
        _g: tracking_allocator::AllocationGroupId,
    ) {
        N_ALLOCS.fetch_add(1, Relaxed);
        N_ABYTES.fetch_add(size as u64, Relaxed);
    }
    fn deallocated(
        &self,
        _a: usize,
        size: usize,
        _w: usize,
        _s: tracking_allocator::AllocationGroupId,
        _c: tracking_allocator::AllocationGroupId,
    ) {
        N_FREES.fetch_add(1, Relaxed);
        N_FBYTES.fetch_add(size as u64, Relaxed);
    }
}

pub static SYSTEM: System = System;
pub static SCOPE: AllocScope = AllocScope::system();
pub static NAIVE: Naive<System> = Naive(System);
pub static STATS_ALLOC: stats_alloc::StatsAlloc<System> = stats_alloc::StatsAlloc::system();
pub static CAP: cap::Cap<System> = cap::Cap::new(System, usize::MAX);
pub static TRACKING: tracking_allocator::Allocator<System> =
    tracking_allocator::Allocator::system();
pub static MIMALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;
pub static CALL_FLOOR: CallFloor = CallFloor;
pub static TLS_FLOOR: TlsFloor = TlsFloor;
pub static SCOPE_MIMALLOC: AllocScope<mimalloc::MiMalloc> = AllocScope::new(mimalloc::MiMalloc);

/// Installs the tracking-allocator tracker (once) and enables it.
pub fn setup_tracking() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = tracking_allocator::AllocationRegistry::set_global_tracker(CountingTracker);
        tracking_allocator::AllocationRegistry::enable_tracking();
    });
}

/// Every allocator under test, by name. `allocscope` runs with heap
/// sampling at its default interval (512 KiB), `allocscope_nosample` with
/// sampling off and `allocscope_4k` at a 4 KiB interval; [`prepare`] sets the
/// interval for a name. `call_floor` ([`CallFloor`]) and `tls_floor`
/// ([`TlsFloor`]) are not peers.
pub fn allocators() -> Vec<(&'static str, &'static (dyn GlobalAlloc + Sync))> {
    setup_tracking();
    vec![
        ("system", &SYSTEM),
        ("allocscope", &SCOPE),
        ("allocscope_nosample", &SCOPE),
        ("allocscope_4k", &SCOPE),
        ("naive_atomic", &NAIVE),
        ("stats_alloc", &STATS_ALLOC),
        ("cap", &CAP),
        ("tracking_allocator", &TRACKING),
        ("mimalloc", &MIMALLOC),
        ("allocscope_mimalloc", &SCOPE_MIMALLOC),
        ("call_floor", &CALL_FLOOR),
        ("tls_floor", &TLS_FLOOR),
    ]
}

/// Sets allocscope's sample interval for the allocator called `name`
/// (`allocscope`: the default interval, or `BENCH_INTERVAL` bytes when that
/// variable is set).
pub fn prepare(name: &str) {
    allocscope::sampling::set_interval(match name {
        "allocscope_nosample" => 0,
        "allocscope_4k" => 4096,
        _ => std::env::var("BENCH_INTERVAL")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(allocscope::sampling::DEFAULT_INTERVAL),
    });
}

pub fn by_name(name: &str) -> Option<&'static (dyn GlobalAlloc + Sync)> {
    allocators()
        .into_iter()
        .find(|(n, _)| *n == name)
        .map(|(_, a)| a)
}

const RING: usize = 64;

/// `iters` alloc+free pairs of small blocks: sizes cycle through 8..=256 in
/// 8-byte steps, and each allocation frees the block allocated 64 pairs
/// earlier (a ring of 64 live blocks, so frees are not LIFO).
#[inline(never)]
pub fn small_pairs<A: GlobalAlloc + ?Sized>(a: &A, iters: u64) {
    let mut ring = [(std::ptr::null_mut::<u8>(), Layout::new::<u8>()); RING];
    for (i, slot) in ring.iter_mut().enumerate() {
        let l = Layout::from_size_align(8 * (1 + i % 32), 8).unwrap();
        // SAFETY: non-zero size.
        *slot = (unsafe { a.alloc(l) }, l);
    }
    let mut size_step = 0usize;
    for i in 0..iters as usize {
        let slot = &mut ring[i % RING];
        // SAFETY: the slot holds a live block with its layout.
        unsafe { a.dealloc(slot.0, slot.1) };
        size_step = if size_step == 31 { 0 } else { size_step + 1 };
        // SAFETY: 8..=256 bytes, align 8: a valid layout.
        let l = unsafe { Layout::from_size_align_unchecked(8 + 8 * size_step, 8) };
        // SAFETY: a non-zero size.
        let p = unsafe { a.alloc(l) };
        if p.is_null() {
            std::process::abort();
        }
        // SAFETY: at least 8 bytes.
        unsafe { p.write(i as u8) };
        *slot = (p, l);
    }
    for slot in ring {
        // SAFETY: live blocks.
        unsafe { a.dealloc(slot.0, slot.1) };
    }
}

/// `iters` times: grow a vector of u64 by push to 1,000 elements the way
/// `Vec` does (capacity 4, doubling through `realloc`), then free it.
#[inline(never)]
pub fn vec_growth<A: GlobalAlloc + ?Sized>(a: &A, iters: u64) {
    for _ in 0..iters {
        let mut cap = 0usize;
        let mut ptr: *mut u64 = std::ptr::null_mut();
        for i in 0..1000usize {
            if i == cap {
                let new_cap = if cap == 0 { 4 } else { cap * 2 };
                let nl = Layout::array::<u64>(new_cap).unwrap();
                // SAFETY: valid layouts; `ptr` is live with the old layout.
                ptr = unsafe {
                    if cap == 0 {
                        a.alloc(nl)
                    } else {
                        a.realloc(ptr.cast(), Layout::array::<u64>(cap).unwrap(), nl.size())
                    }
                }
                .cast();
                if ptr.is_null() {
                    std::process::abort();
                }
                cap = new_cap;
            }
            // SAFETY: i < cap.
            unsafe { ptr.add(i).write(i as u64) };
        }
        std::hint::black_box(ptr);
        // SAFETY: live with this layout.
        unsafe { a.dealloc(ptr.cast(), Layout::array::<u64>(cap).unwrap()) };
    }
}

/// Runs `f(iters)` on `threads` threads at once; returns the time from the
/// earliest start to the latest end, as the workers clock themselves (see
/// [`ga_workload::clocked_on_threads`]).
pub fn on_threads(
    threads: usize,
    iters: u64,
    f: fn(&'static (dyn GlobalAlloc + Sync), u64),
    a: &'static (dyn GlobalAlloc + Sync),
) -> std::time::Duration {
    ga_workload::clocked_on_threads(threads, iters, move |n| f(a, n))
}

pub fn small_pairs_dyn(a: &'static (dyn GlobalAlloc + Sync), iters: u64) {
    small_pairs(a, iters)
}

pub fn vec_growth_dyn(a: &'static (dyn GlobalAlloc + Sync), iters: u64) {
    vec_growth(a, iters)
}
