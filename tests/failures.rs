//! Scenario: `AllocScope<Refusing>`, an inner allocator that refuses some
//! sizes. A refused allocation counts one failure and nothing else, on the
//! small fast path (counted before the inner call, then taken back), on the
//! large path and for `realloc` (the old block stays live), with sampling off
//! and with every allocation sampled.
use std::alloc::{GlobalAlloc, Layout, System};

use allocscope::AllocScope;

struct Refusing;

const REFUSED: [usize; 3] = [13, 200, 5000];

thread_local! {
    /// Refusals only while this thread runs the scenario (the test harness
    /// must still be able to allocate).
    static REFUSE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// A refused size, or the larger request a sampled block of it makes
/// (16 more bytes): so sampling's fallback to the plain layout is exercised.
fn refused(size: usize) -> bool {
    REFUSE.with(|r| r.get())
        && (REFUSED.contains(&size) || REFUSED.contains(&size.wrapping_sub(16)))
}

// SAFETY: forwards to System, or returns null (a refusal).
unsafe impl GlobalAlloc for Refusing {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if refused(l.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded with this method's own arguments, under the caller's GlobalAlloc guarantees.
        unsafe { System.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        if refused(l.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded with this method's own arguments, under the caller's GlobalAlloc guarantees.
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: forwarded with this method's own arguments, under the caller's GlobalAlloc guarantees.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        if refused(n) {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded with this method's own arguments, under the caller's GlobalAlloc guarantees.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static ALLOC: AllocScope<Refusing> = AllocScope::new(Refusing);

fn refusals() {
    for interval in [0u64, 1] {
        let prev = allocscope::sampling::set_interval(interval);
        let before = allocscope::stats();
        REFUSE.with(|r| r.set(true));
        let (_, d) = allocscope::measure(|| {
            for &size in &REFUSED {
                for align in [1usize, 8, 64] {
                    let l = Layout::from_size_align(size, align).unwrap();
                    // SAFETY: valid layouts; nulls are not used.
                    unsafe {
                        assert!(ALLOC.alloc(l).is_null());
                        assert!(ALLOC.alloc_zeroed(l).is_null());
                        let keep = Layout::from_size_align(64, align).unwrap();
                        let p = ALLOC.alloc(keep);
                        assert!(!p.is_null());
                        assert!(ALLOC.realloc(p, keep, size).is_null(), "refused realloc");
                        p.write(7); // the old block is still valid
                        ALLOC.dealloc(p, keep);
                    }
                }
            }
        });
        REFUSE.with(|r| r.set(false));
        let after = allocscope::stats();
        allocscope::sampling::set_interval(prev);
        assert_eq!(d.alloc_failures, 27, "interval {interval}: {d:?}");
        assert_eq!(
            (d.allocations, d.deallocations, d.reallocations),
            (9, 9, 0),
            "interval {interval}: {d:?}"
        );
        assert_eq!(d.allocated_bytes, 9 * 64, "interval {interval}: {d:?}");
        // the refused sizes' classes did not move
        for &size in &REFUSED {
            let (a, b) = (
                before.class_for(size).unwrap(),
                after.class_for(size).unwrap(),
            );
            if size != 13 || a.max_size != 64 {
                assert_eq!(
                    a.allocations, b.allocations,
                    "class of {size}, interval {interval}"
                );
            }
        }
    }
}

#[test]
fn refused_allocations_count_only_as_failures() {
    refusals();
}
