//! Scenario: `AllocScope<Truth>` as the global allocator; 8 threads allocate
//! blocks of every size class, free some of them on other threads (blocks
//! passed through channels), realloc, hit allocation failures, and threads
//! exit mid-run. Afterwards every field and class equals the ground truth.
mod common;

use std::alloc::{GlobalAlloc, Layout};
use std::sync::mpsc;

use allocscope::AllocScope;
use common::{assert_exact, Truth, FAIL_SIZE};

#[global_allocator]
static ALLOC: AllocScope<Truth> = AllocScope::new(Truth {
    inner: std::alloc::System,
});

struct Block(*mut u8, Layout);
// SAFETY: the block is owned by whoever holds the message.
unsafe impl Send for Block {}

fn sizes(seed: u64) -> impl Iterator<Item = usize> {
    let mut x = seed | 1;
    std::iter::from_fn(move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let s = match x % 10 {
            0..=4 => (x >> 8) as usize % 257,
            5..=7 => 257 + (x >> 8) as usize % 8000,
            8 => 8000 + (x >> 8) as usize % 300_000,
            _ => 1 << (8 + (x >> 8) % 15),
        };
        Some(s)
    })
}

fn worker(id: u64, tx: mpsc::Sender<Block>, rx: mpsc::Receiver<Block>) {
    let mut kept = Vec::new();
    for (i, size) in sizes(id * 7919 + 1).take(20_000).enumerate() {
        let align = 1usize << (i % 7);
        let layout = Layout::from_size_align(size, align).unwrap();
        // SAFETY: valid layout; size 0 is allowed by System (and counted).
        let p = unsafe {
            if i % 3 == 0 {
                ALLOC.alloc_zeroed(layout)
            } else {
                ALLOC.alloc(layout)
            }
        };
        assert!(!p.is_null());
        match i % 4 {
            0 => tx.send(Block(p, layout)).unwrap(),
            1 => {
                // realloc to another size
                let new = (size * 3 / 2 + 1) % 70_000;
                // SAFETY: a live block of this allocator with its layout; the new size is non-zero and does not overflow.
                let q = unsafe { ALLOC.realloc(p, layout, new) };
                assert!(!q.is_null());
                kept.push(Block(q, Layout::from_size_align(new, align).unwrap()));
            }
            _ => kept.push(Block(p, layout)),
        }
        if i % 97 == 0 {
            // failures: alloc and realloc of FAIL_SIZE
            let l = Layout::from_size_align(FAIL_SIZE, 8).unwrap();
            // SAFETY: the layout's size is non-zero.
            assert!(unsafe { ALLOC.alloc(l) }.is_null());
            if let Some(b) = kept.last() {
                // SAFETY: a live block of this allocator with its layout; the new size is non-zero and does not overflow.
                assert!(unsafe { ALLOC.realloc(b.0, b.1, FAIL_SIZE) }.is_null());
            }
        }
        while let Ok(b) = rx.try_recv() {
            // SAFETY: a live block of this allocator, freed once, with the layout it was allocated with.
            unsafe { ALLOC.dealloc(b.0, b.1) };
        }
        if kept.len() > 64 {
            let b = kept.swap_remove(i % kept.len());
            // SAFETY: a live block of this allocator, freed once, with the layout it was allocated with.
            unsafe { ALLOC.dealloc(b.0, b.1) };
        }
    }
    // leave some blocks live, free the rest
    for (i, b) in kept.into_iter().enumerate() {
        // odd ones stay live (leaked) on purpose
        if i % 2 == 0 {
            // SAFETY: a live block of this allocator, freed once, with the layout it was allocated with.
            unsafe { ALLOC.dealloc(b.0, b.1) };
        }
    }
    drop(tx);
    for b in rx {
        // SAFETY: a live block of this allocator, freed once, with the layout it was allocated with.
        unsafe { ALLOC.dealloc(b.0, b.1) };
    }
}

#[test]
fn exact_with_cross_thread_frees_and_thread_exits() {
    assert_exact("at start");
    for wave in 0..3u64 {
        // a ring: thread k sends blocks to thread k+1, which frees them
        let n = 8;
        let (txs, rxs): (Vec<_>, Vec<_>) = (0..n).map(|_| mpsc::channel::<Block>()).unzip();
        let mut rxs: Vec<_> = rxs.into_iter().map(Some).collect();
        let mut handles = Vec::new();
        for k in 0..n {
            let tx = txs[(k + 1) % n].clone();
            let rx = rxs[k].take().unwrap();
            handles.push(std::thread::spawn(move || {
                worker(wave * 100 + k as u64, tx, rx)
            }));
        }
        drop(txs);
        // short-lived threads that exit while the others run
        for j in 0..16u64 {
            std::thread::spawn(move || {
                let v: Vec<u64> = (0..j * 100).collect();
                let s = format!("{v:?}");
                std::hint::black_box(s);
            })
            .join()
            .unwrap();
        }
        for h in handles {
            h.join().unwrap();
        }
        assert_exact(&format!("after wave {wave}"));
    }
    // one allocation past 1 GiB lands in the last class (untouched pages)
    let big = Layout::from_size_align((1 << 30) + 4096, 4096).unwrap();
    // SAFETY: the layout's size is non-zero.
    let p = unsafe { ALLOC.alloc(big) };
    assert!(!p.is_null());
    assert_exact("with a block over 1 GiB");
    let s = allocscope::stats();
    assert_eq!(s.size_classes.last().unwrap().live_objects(), 1);
    // SAFETY: a live block of this allocator, freed once, with the layout it was allocated with.
    unsafe { ALLOC.dealloc(p, big) };
    assert_exact("at end");
    let info = allocscope::counters::info();
    assert!(
        info.blocks >= 1 && info.blocks <= 40,
        "blocks are reused: {info:?}"
    );
}
