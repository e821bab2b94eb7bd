//! Shared test helpers: `Truth`, an inner allocator that records the ground
//! truth of every call it receives, with one shared atomic per counter (slow,
//! but obviously right), so allocscope's lock-free counts can be compared
//! with it exactly.
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};

use allocscope::size_class::{class_of, NUM_CLASSES};

/// Requests of exactly this size fail (the inner allocator returns null).
pub const FAIL_SIZE: usize = 777_777;

pub struct Truth<A = System> {
    pub inner: A,
}

#[allow(clippy::declare_interior_mutable_const)]
const Z: AtomicU64 = AtomicU64::new(0);
#[allow(clippy::declare_interior_mutable_const)]
const ROW: [AtomicU64; 4] = [Z; 4];
static CLASSES: [[AtomicU64; 4]; NUM_CLASSES] = [ROW; NUM_CLASSES];
static REALLOCS: AtomicU64 = Z;
static FAILURES: AtomicU64 = Z;
pub static ZEROED_CALLS: AtomicU64 = Z;
pub static REALLOC_CALLS: AtomicU64 = Z;

fn on_alloc(size: usize) {
    let c = &CLASSES[class_of(size)];
    c[0].fetch_add(1, SeqCst);
    c[2].fetch_add(size as u64, SeqCst);
}

fn on_free(size: usize) {
    let c = &CLASSES[class_of(size)];
    c[1].fetch_add(1, SeqCst);
    c[3].fetch_add(size as u64, SeqCst);
}

// SAFETY: every method forwards to the inner allocator with the caller's arguments, so the inner allocator's GlobalAlloc contract is this one's; the bookkeeping around it touches no allocated memory.
unsafe impl<A: GlobalAlloc> GlobalAlloc for Truth<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() == FAIL_SIZE {
            FAILURES.fetch_add(1, SeqCst);
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded with this method's own arguments, under the caller's GlobalAlloc guarantees.
        let p = unsafe { self.inner.alloc(layout) };
        if p.is_null() {
            FAILURES.fetch_add(1, SeqCst);
        } else {
            on_alloc(layout.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ZEROED_CALLS.fetch_add(1, SeqCst);
        if layout.size() == FAIL_SIZE {
            FAILURES.fetch_add(1, SeqCst);
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded with this method's own arguments, under the caller's GlobalAlloc guarantees.
        let p = unsafe { self.inner.alloc_zeroed(layout) };
        if p.is_null() {
            FAILURES.fetch_add(1, SeqCst);
        } else {
            on_alloc(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        on_free(layout.size());
        // SAFETY: forwarded with this method's own arguments, under the caller's GlobalAlloc guarantees.
        unsafe { self.inner.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        REALLOC_CALLS.fetch_add(1, SeqCst);
        if new_size == FAIL_SIZE {
            FAILURES.fetch_add(1, SeqCst);
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded with this method's own arguments, under the caller's GlobalAlloc guarantees.
        let p = unsafe { self.inner.realloc(ptr, layout, new_size) };
        if p.is_null() {
            FAILURES.fetch_add(1, SeqCst);
        } else {
            REALLOCS.fetch_add(1, SeqCst);
            on_free(layout.size());
            on_alloc(new_size);
        }
        p
    }
}

/// Compares allocscope's snapshot with the ground truth, field by field and
/// class by class. Call it when the test's own threads do not allocate.
/// Threads outside the test's control (the test harness's main thread, a
/// sanitizer's) may be inside an allocation at that moment: allocscope
/// counts it before the inner call, the ground truth after, so the two can
/// differ for that instant. Up to a second of equal-or-not comparisons
/// (each taking the snapshot without allocating first) waits that out; a
/// difference that lasts fails, with the last comparison's figures.
pub fn assert_exact(context: &str) {
    for _ in 0..1000 {
        if compare_exact(context, false) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    compare_exact(context, true);
}

/// One comparison; with `assert`, panics naming the first difference,
/// else says whether everything is equal.
fn compare_exact(context: &str, assert: bool) -> bool {
    let mut truth = [[0u64; 4]; NUM_CLASSES];
    for (t, c) in truth.iter_mut().zip(CLASSES.iter()) {
        for i in 0..4 {
            t[i] = c[i].load(SeqCst);
        }
    }
    let reallocs = REALLOCS.load(SeqCst);
    let failures = FAILURES.load(SeqCst);
    let s = allocscope::stats();
    assert_eq!(s.size_classes.len(), NUM_CLASSES);
    for (c, (t, sc)) in truth.iter().zip(&s.size_classes).enumerate() {
        let got = [
            sc.allocations,
            sc.deallocations,
            sc.allocated_bytes,
            sc.freed_bytes,
        ];
        if !assert && &got != t {
            return false;
        }
        assert_eq!(
            &got, t,
            "{context}: class {c} (..={}) [allocs, frees, alloc bytes, freed bytes]",
            sc.max_size
        );
    }
    let sum = |i: usize| truth.iter().map(|t| t[i]).sum::<u64>();
    let totals = [
        (s.allocations, sum(0), "allocations"),
        (s.deallocations, sum(1), "deallocations"),
        (s.allocated_bytes, sum(2), "allocated_bytes"),
        (s.freed_bytes, sum(3), "freed_bytes"),
        (s.reallocations, reallocs, "reallocations"),
        (s.alloc_failures, failures, "alloc_failures"),
    ];
    for (got, want, what) in totals {
        if !assert && got != want {
            return false;
        }
        assert_eq!(got, want, "{context}: {what}");
    }
    true
}

/// Exactness against `Truth` needs the inner allocator to see the caller's
/// layouts, so these scenarios run with heap sampling off (a sampled block
/// is requested from the inner allocator with a larger layout). Set before
/// `main` by a constructor.
extern "C" fn sampling_off() {
    allocscope::sampling::set_interval(0);
}

#[used]
#[link_section = ".init_array"]
static SAMPLING_OFF: extern "C" fn() = sampling_off;
