//! Scenario: allocations outside ordinary Rust threads. Before `main` (an
//! `.init_array` constructor), in a thread created with `pthread_create`
//! directly, and inside thread-local destructors at thread exit: all are
//! counted exactly and nothing crashes.
mod common;

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};

use allocscope::AllocScope;
use common::{assert_exact, Truth};

#[global_allocator]
static ALLOC: AllocScope<Truth> = AllocScope::new(Truth {
    inner: std::alloc::System,
});

static BEFORE_MAIN_ALLOCS: AtomicU64 = AtomicU64::new(0);

extern "C" fn before_main() {
    let v: Vec<u8> = Vec::with_capacity(4000);
    let s = String::from("allocated before main");
    std::hint::black_box((&v, &s));
    BEFORE_MAIN_ALLOCS.store(allocscope::stats().allocations, SeqCst);
    std::mem::forget(v); // stays live
}

#[used]
#[link_section = ".init_array"]
static CTOR: extern "C" fn() = before_main;

extern "C" fn c_thread(_: *mut libc::c_void) -> *mut libc::c_void {
    let (_, d) = allocscope::measure(|| {
        let v: Vec<u64> = (0..1000).collect();
        let b = Box::new([0u8; 300]);
        std::hint::black_box((v, b));
    });
    assert_eq!(d.allocations, 2);
    assert_eq!(d.deallocations, 2);
    assert_eq!(d.allocated_bytes, 8000 + 300);
    std::ptr::null_mut()
}

struct AllocatesOnDrop(Vec<u8>);
impl Drop for AllocatesOnDrop {
    fn drop(&mut self) {
        // allocate and free during thread-local destruction
        let v: Vec<u8> = vec![7u8; self.0.len() * 2];
        let s = format!("{}", v.len());
        std::hint::black_box(s);
    }
}

thread_local! {
    static DTOR: RefCell<Option<AllocatesOnDrop>> = const { RefCell::new(None) };
}

#[test]
fn outside_ordinary_threads() {
    assert!(
        BEFORE_MAIN_ALLOCS.load(SeqCst) >= 2,
        "allocations before main are counted"
    );
    assert_exact("after main started");

    // a thread not started by Rust
    let mut t: libc::pthread_t = 0;
    // SAFETY: valid out-pointer and a C-ABI entry point that does not unwind.
    let rc =
        unsafe { libc::pthread_create(&mut t, std::ptr::null(), c_thread, std::ptr::null_mut()) };
    assert_eq!(rc, 0);
    // SAFETY: `t` was created above and is joined once.
    assert_eq!(unsafe { libc::pthread_join(t, std::ptr::null_mut()) }, 0);
    assert_exact("after a pthread_create thread");

    // threads whose TLS destructors allocate and free
    for i in 0..50 {
        std::thread::spawn(move || {
            DTOR.with(|d| *d.borrow_mut() = Some(AllocatesOnDrop(vec![1u8; 100 + i])));
        })
        .join()
        .unwrap();
    }
    assert_exact("after TLS destructors allocated at thread exit");
    let info = allocscope::counters::info();
    assert!(
        info.blocks < 10,
        "exited threads' blocks are reused: {info:?}"
    );
}
