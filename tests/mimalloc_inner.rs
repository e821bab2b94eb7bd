//! Scenario: `AllocScope<Truth<MiMalloc>>`: wrapping another allocator, and
//! forwarding `alloc_zeroed` and `realloc` to it (not emulated with alloc +
//! copy).
mod common;

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::Ordering::SeqCst;

use allocscope::AllocScope;
use common::{assert_exact, Truth, REALLOC_CALLS, ZEROED_CALLS};
use mimalloc::MiMalloc;

#[global_allocator]
static ALLOC: AllocScope<Truth<MiMalloc>> = AllocScope::new(Truth { inner: MiMalloc });

#[test]
fn wraps_mimalloc_and_forwards_zeroed_and_realloc() {
    let z0 = ZEROED_CALLS.load(SeqCst);
    let r0 = REALLOC_CALLS.load(SeqCst);
    let v = vec![0u64; 100_000]; // alloc_zeroed
    assert!(
        ZEROED_CALLS.load(SeqCst) > z0,
        "vec![0; n] reaches the inner alloc_zeroed"
    );
    let mut w: Vec<u8> = Vec::new();
    for i in 0..10_000 {
        w.push(i as u8);
    }
    assert!(
        REALLOC_CALLS.load(SeqCst) > r0,
        "growth reaches the inner realloc"
    );
    let l = Layout::from_size_align(64, 64).unwrap();
    // SAFETY: valid layout; freed with the same layout.
    unsafe {
        let p = ALLOC.alloc(l);
        assert!(!p.is_null() && (p as usize).is_multiple_of(64));
        ALLOC.dealloc(p, l);
    }
    drop((v, w));
    let threads: Vec<_> = (0..4)
        .map(|i| {
            std::thread::spawn(move || {
                (0..1000)
                    .map(|j| vec![0u8; i * 100 + j].len())
                    .sum::<usize>()
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_exact("wrapping mimalloc");
}
