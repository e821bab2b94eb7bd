//! Scenario: `Recorder<AllocScope<Failing>>` as the global allocator: the
//! outer `Recorder` books every successful allocation to the scope the
//! thread is in when it asks (`scope::current()`), the ground truth. Eight
//! threads allocate in nested, static and run-time scopes (with threads
//! that exit mid-run, reallocs, refused allocations, frees on other
//! threads and sampling on), then a multi-thread tokio runtime runs
//! in-scope tasks that move between workers. Afterwards every scope's
//! `allocations` and `allocated_bytes` equal the truth, and the scopes
//! partition `allocscope::stats()`.
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::mpsc;

use allocscope::scope::{self, Scope};
use allocscope::AllocScope;

const FAIL_SIZE: usize = 777_777;

/// Refuses every request of `FAIL_SIZE` bytes (or up to 16 more: a sampled
/// block is placed in a larger one).
fn refused(size: usize) -> bool {
    (FAIL_SIZE..=FAIL_SIZE + 16).contains(&size)
}

struct Failing;

// SAFETY: forwards to `System`, or returns null (a refusal).
unsafe impl GlobalAlloc for Failing {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if refused(l.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller's contract.
        unsafe { System.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        if refused(l.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller's contract.
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: the caller's contract.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        if refused(n) {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller's contract.
        unsafe { System.realloc(p, l, n) }
    }
}

static INNER: AllocScope<Failing> = AllocScope::new(Failing);

/// The scopes of this test, in truth-table order (`?` for any other).
const NAMES: [&str; 12] = [
    "unscoped",
    "other",
    "allocscope",
    "outer-a",
    "outer-b",
    "inner",
    "tenant-0",
    "tenant-1",
    "tenant-2",
    "task",
    "reader",
    "?",
];
static TRUTH: [[AtomicU64; 2]; NAMES.len()] =
    [const { [AtomicU64::new(0), AtomicU64::new(0)] }; NAMES.len()];

fn book(size: usize) {
    let cur = scope::current();
    let i = NAMES
        .iter()
        .position(|n| *n == cur)
        .unwrap_or(NAMES.len() - 1);
    TRUTH[i][0].fetch_add(1, SeqCst);
    TRUTH[i][1].fetch_add(size as u64, SeqCst);
}

struct Recorder;

// SAFETY: forwards every call to `INNER` with the caller's arguments; the
// bookkeeping touches no allocated memory and does not allocate.
unsafe impl GlobalAlloc for Recorder {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: the caller's contract.
        let p = unsafe { INNER.alloc(l) };
        if !p.is_null() {
            book(l.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        // SAFETY: the caller's contract.
        let p = unsafe { INNER.alloc_zeroed(l) };
        if !p.is_null() {
            book(l.size());
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: the caller's contract.
        unsafe { INNER.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        // SAFETY: the caller's contract.
        let q = unsafe { INNER.realloc(p, l, n) };
        if !q.is_null() {
            book(n);
        }
        q
    }
}

#[global_allocator]
static ALLOC: Recorder = Recorder;

static OUTER_A: Scope = Scope::new("outer-a");
static OUTER_B: Scope = Scope::new("outer-b");
static INNER_SCOPE: Scope = Scope::new("inner");
static TASK: Scope = Scope::new("task");
static READER: Scope = Scope::new("reader");

struct Block(*mut u8, Layout);
// SAFETY: the block is owned by whoever holds the message.
unsafe impl Send for Block {}

fn sizes(seed: u64) -> impl Iterator<Item = usize> {
    let mut x = seed | 1;
    std::iter::from_fn(move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        Some(match x % 10 {
            0..=5 => 1 + (x >> 8) as usize % 256,
            6..=8 => 257 + (x >> 8) as usize % 20_000,
            _ => 1 << (8 + (x >> 8) % 12),
        })
    })
}

/// Allocates, reallocates, frees (some on the other side of `tx`) and asks
/// for refused blocks, `n` times.
fn churn(seed: u64, n: usize, tx: &mpsc::Sender<Block>, rx: &mpsc::Receiver<Block>) {
    let mut kept: Vec<Block> = Vec::new();
    for (i, size) in sizes(seed).take(n).enumerate() {
        let l = Layout::from_size_align(size, 1 << (i % 5)).unwrap();
        // SAFETY: a non-zero size.
        let p = unsafe {
            if i % 3 == 0 {
                ALLOC.alloc_zeroed(l)
            } else {
                ALLOC.alloc(l)
            }
        };
        assert!(!p.is_null());
        match i % 4 {
            0 => tx.send(Block(p, l)).unwrap(),
            1 => {
                let new = size * 3 / 2 + 1;
                // SAFETY: a live block with its layout; a non-zero size.
                let q = unsafe { ALLOC.realloc(p, l, new) };
                assert!(!q.is_null());
                kept.push(Block(q, Layout::from_size_align(new, l.align()).unwrap()));
            }
            _ => kept.push(Block(p, l)),
        }
        if i % 101 == 0 {
            let f = Layout::from_size_align(FAIL_SIZE, 8).unwrap();
            // SAFETY: a non-zero size.
            assert!(unsafe { ALLOC.alloc(f) }.is_null());
            if let Some(b) = kept.last() {
                // SAFETY: a live block with its layout; a non-zero size.
                assert!(unsafe { ALLOC.realloc(b.0, b.1, FAIL_SIZE) }.is_null());
            }
        }
        while let Ok(b) = rx.try_recv() {
            // SAFETY: a live block, freed once, with its layout.
            unsafe { ALLOC.dealloc(b.0, b.1) };
        }
        if kept.len() > 48 {
            let b = kept.swap_remove(i % kept.len());
            // SAFETY: a live block, freed once, with its layout.
            unsafe { ALLOC.dealloc(b.0, b.1) };
        }
    }
    for b in kept {
        // SAFETY: a live block, freed once, with its layout.
        unsafe { ALLOC.dealloc(b.0, b.1) };
    }
}

fn worker(id: u64, tx: mpsc::Sender<Block>, rx: mpsc::Receiver<Block>) {
    let outer = if id.is_multiple_of(2) {
        &OUTER_A
    } else {
        &OUTER_B
    };
    churn(id * 31 + 1, 3000, &tx, &rx); // unscoped
    let _o = outer.enter();
    churn(id * 31 + 2, 3000, &tx, &rx);
    INNER_SCOPE.within(|| {
        churn(id * 31 + 3, 2000, &tx, &rx);
        // a run-time name, nested three deep
        let tenant = Scope::named(format!("tenant-{}", id % 3));
        let _t = tenant.enter();
        churn(id * 31 + 4, 2000, &tx, &rx);
    });
    assert_eq!(scope::current(), outer.name());
    // a thread that exits mid-run, in its own scopes
    let (tx2, rx2) = (tx.clone(), mpsc::channel::<Block>().1);
    std::thread::spawn(move || {
        INNER_SCOPE.within(|| churn(id * 31 + 5, 1000, &tx2, &rx2));
        churn(id * 31 + 6, 500, &tx2, &rx2);
    })
    .join()
    .unwrap();
    // a panic unwinds through a guard: the outer scope is back
    let r = std::panic::catch_unwind(|| {
        let _g = INNER_SCOPE.enter();
        let _v = std::hint::black_box(vec![0u8; 100]);
        panic!("unwinding through a scope");
    });
    assert!(r.is_err());
    assert_eq!(scope::current(), outer.name());
    churn(id * 31 + 7, 1000, &tx, &rx);
    drop(tx);
    // drain what the neighbour still sends
    for b in rx.iter() {
        // SAFETY: a live block, freed once, with its layout.
        unsafe { ALLOC.dealloc(b.0, b.1) };
    }
}

fn truth() -> Vec<(u64, u64)> {
    TRUTH
        .iter()
        .map(|t| (t[0].load(SeqCst), t[1].load(SeqCst)))
        .collect()
}

#[test]
fn scopes_partition_the_exact_counts() {
    // every path: fast, large, sampled (placed), refused
    allocscope::sampling::set_interval(16 * 1024);
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if info.payload().downcast_ref::<&str>() != Some(&"unwinding through a scope") {
            default_hook(info)
        }
    }));

    // eight threads in a ring: each frees blocks its neighbour allocated
    let chans: Vec<_> = (0..8).map(|_| mpsc::channel::<Block>()).collect();
    let mut txs = Vec::new();
    let mut rxs = Vec::new();
    for (tx, rx) in chans {
        txs.push(tx);
        rxs.push(rx);
    }
    txs.rotate_left(1);
    let handles: Vec<_> = txs
        .into_iter()
        .zip(rxs)
        .enumerate()
        .map(|(i, (tx, rx))| std::thread::spawn(move || worker(i as u64, tx, rx)))
        .collect();
    for h in handles {
        h.join().unwrap();
    }

    #[cfg(feature = "server")]
    tasks_move_between_workers();

    // Everything else is joined: only this thread allocates now, in
    // `reader`, so every other scope is frozen and compared exactly.
    let _r = READER.enter();
    let before = truth();
    let t1 = allocscope::stats();
    let stats = scope::stats();
    let t2 = allocscope::stats();
    let after = truth();
    for (i, name) in NAMES.iter().enumerate() {
        let got = stats
            .iter()
            .find(|s| s.name == *name)
            .map_or((0, 0), |s| (s.allocations, s.allocated_bytes));
        if *name == "reader" {
            assert!(
                before[i].0 <= got.0 && got.0 <= after[i].0,
                "reader: {got:?} not within {:?}..{:?}",
                before[i],
                after[i]
            );
        } else {
            assert_eq!(got, before[i], "scope {name}: (allocations, bytes)");
            assert_eq!(before[i], after[i], "scope {name} moved while read");
        }
    }
    assert_eq!(
        before[NAMES.len() - 1],
        (0, 0),
        "allocations in an unknown scope"
    );
    for name in [
        "outer-a", "outer-b", "inner", "tenant-0", "task", "unscoped",
    ] {
        let i = NAMES.iter().position(|n| *n == name).unwrap();
        assert!(before[i].0 > 100, "scope {name} saw only {:?}", before[i]);
    }
    // the scopes partition the totals
    let sum = |f: fn(&scope::ScopeStats) -> u64| stats.iter().map(f).fold(0u64, u64::wrapping_add);
    let (allocs, bytes) = (sum(|s| s.allocations), sum(|s| s.allocated_bytes));
    assert!(
        t1.allocations <= allocs && allocs <= t2.allocations,
        "sum of scopes {allocs} not within {}..{}",
        t1.allocations,
        t2.allocations
    );
    assert!(
        t1.allocated_bytes <= bytes && bytes <= t2.allocated_bytes,
        "sum of scope bytes {bytes} not within {}..{}",
        t1.allocated_bytes,
        t2.allocated_bytes
    );
    assert!(t1.alloc_failures > 0, "no refused allocation was exercised");
}

/// In-scope tasks on a multi-thread tokio runtime, moving between workers
/// (tokio comes with the `server` feature; ThreadSanitizer's run builds
/// without it).
#[cfg(feature = "server")]
fn tasks_move_between_workers() {
    use allocscope::scope::InScope;
    use std::collections::HashSet;
    use std::sync::{Arc, Mutex};

    let threads_seen = Arc::new(Mutex::new(HashSet::new()));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for t in 0..32u64 {
            let seen = Arc::clone(&threads_seen);
            tasks.push(tokio::spawn(
                async move {
                    let mut kept = Vec::new();
                    for (i, size) in sizes(t + 1000).take(300).enumerate() {
                        assert_eq!(scope::current(), "task");
                        kept.push(vec![i as u8; size]);
                        if kept.len() > 20 {
                            kept.swap_remove(0);
                        }
                        seen.lock().unwrap().insert(std::thread::current().id());
                        tokio::task::yield_now().await;
                    }
                }
                .in_scope(&TASK),
            ));
        }
        for t in tasks {
            t.await.unwrap();
        }
        // polled outside the task: the scope does not leak out of a poll
        assert_eq!(scope::current(), "unscoped");
    });
    rt.shutdown_timeout(std::time::Duration::from_secs(10));
    assert!(
        threads_seen.lock().unwrap().len() > 1,
        "the tasks ran on one worker only"
    );
}
