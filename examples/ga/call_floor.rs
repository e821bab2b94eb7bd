//! Not a peer: a wrapper that only *calls* `malloc` and tests the result,
//! as any wrapper that counts refused allocations exactly must (`System`
//! and stats_alloc tail-jump to `malloc` instead), and does nothing else.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

static FAILURES: AtomicU64 = AtomicU64::new(0);

#[cold]
#[inline(never)]
fn failure() {
    FAILURES.fetch_add(1, Relaxed);
}

struct CallFloor;

// SAFETY: forwards every call to `System` unchanged.
unsafe impl GlobalAlloc for CallFloor {
    #[inline]
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `alloc`'s contract.
        let p = unsafe { System.alloc(l) };
        if p.is_null() {
            failure();
        }
        p
    }
    #[inline]
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: the caller upholds `dealloc`'s contract.
        unsafe { System.dealloc(p, l) }
    }
    #[inline]
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        // SAFETY: the caller upholds `realloc`'s contract.
        let q = unsafe { System.realloc(p, l, n) };
        if q.is_null() {
            failure();
        }
        q
    }
}

#[global_allocator]
static A: CallFloor = CallFloor;

fn main() {
    ga_workload::run()
}
