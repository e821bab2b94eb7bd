//! Scenario: `Recorder<AllocScope>` as the global allocator: the outer
//! `Recorder` books every allocation and free to the thread group of the
//! thread that makes it (read from the kernel's name of the thread, with
//! `threads::group_name`), the ground truth. Named threads (some exiting
//! mid-run, some still alive when read), unnamed threads and the main
//! thread allocate and free, some frees on other threads. Afterwards every
//! group's four counts equal the truth.
use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering::SeqCst};
use std::sync::{mpsc, Arc, Barrier};

use allocscope::threads;
use allocscope::AllocScope;

static INNER: AllocScope = AllocScope::system();

/// The test's own thread is named after the test, which the kernel keeps
/// as its first 15 bytes.
const SELF: &str = "thread_groups_c";
const GROUPS: [&str; 7] = [
    "main",
    SELF,
    "unnamed",
    "request-worker",
    "indexer",
    "tokio-runtime-worker",
    "?",
];
/// allocations, allocated bytes, frees, freed bytes
static TRUTH: [[AtomicU64; 4]; GROUPS.len()] =
    [const { [const { AtomicU64::new(0) }; 4] }; GROUPS.len()];

/// The kernel's name of the calling thread, as allocscope groups it.
fn group_index() -> usize {
    // SAFETY: plain system calls; PR_GET_NAME writes at most 16 bytes.
    let (tid, pid) = unsafe { (libc::gettid() as u32, libc::getpid() as u32) };
    if tid == pid {
        return 0;
    }
    let mut buf = [0u8; 16];
    // SAFETY: see above.
    unsafe { libc::prctl(libc::PR_GET_NAME, buf.as_mut_ptr(), 0, 0, 0) };
    let len = buf.iter().position(|&b| b == 0).unwrap_or(16);
    if is_program_comm(&buf[..len]) {
        return 2; // unnamed
    }
    let name = std::str::from_utf8(&buf[..len]).unwrap_or("?");
    let g = threads::group_name(name);
    GROUPS
        .iter()
        .position(|n| *n == g)
        .unwrap_or(GROUPS.len() - 1)
}

/// The main thread's kernel name (the program's name, at most 15 bytes),
/// set once at the start of the test.
static PROGRAM: [AtomicU8; 16] = [const { AtomicU8::new(0) }; 16];
static PROGRAM_LEN: AtomicUsize = AtomicUsize::new(usize::MAX);

fn is_program_comm(name: &[u8]) -> bool {
    PROGRAM_LEN.load(SeqCst) == name.len()
        && PROGRAM.iter().zip(name).all(|(a, b)| a.load(SeqCst) == *b)
}

fn set_program_comm(name: &str) {
    for (a, b) in PROGRAM.iter().zip(name.as_bytes()) {
        a.store(*b, SeqCst);
    }
    PROGRAM_LEN.store(name.len().min(16), SeqCst);
}

fn book(what: usize, size: usize) {
    let g = &TRUTH[group_index()];
    g[what].fetch_add(1, SeqCst);
    g[what + 1].fetch_add(size as u64, SeqCst);
}

struct Recorder;

// SAFETY: forwards every call to `INNER` with the caller's arguments; the
// bookkeeping does not allocate and touches no allocated memory.
unsafe impl GlobalAlloc for Recorder {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: the caller's contract.
        let p = unsafe { INNER.alloc(l) };
        if !p.is_null() {
            book(0, l.size());
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        book(2, l.size());
        // SAFETY: the caller's contract.
        unsafe { INNER.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        // SAFETY: the caller's contract.
        let q = unsafe { INNER.realloc(p, l, n) };
        if !q.is_null() {
            book(0, n);
            book(2, l.size());
        }
        q
    }
}

#[global_allocator]
static ALLOC: Recorder = Recorder;

fn work(n: usize, give: &mpsc::Sender<Vec<u8>>) -> Vec<Vec<u8>> {
    let mut kept = Vec::new();
    for i in 0..n {
        let mut v = vec![i as u8; 1 + i % 3000];
        if i % 5 == 0 {
            v.extend_from_slice(&[1; 100]);
        }
        if i % 7 == 0 {
            give.send(v).unwrap();
        } else if i % 3 == 0 {
            kept.push(v);
        }
    }
    kept
}

#[test]
fn thread_groups_count_exactly_and_keep_exited_threads() {
    // the program's kernel name, read before the threads start
    let comm = std::fs::read_to_string("/proc/self/comm").unwrap();
    set_program_comm(comm.trim_end());

    let (give, take) = mpsc::channel::<Vec<u8>>();
    // a consumer that frees what others allocated
    let consumer = std::thread::Builder::new()
        .name("indexer-1".into())
        .spawn(move || {
            let mut n = 0u64;
            for v in take {
                n += v.len() as u64;
                drop(v);
            }
            n
        })
        .unwrap();
    // request workers that exit mid-run
    let mut exited = Vec::new();
    for i in 0..6 {
        let give = give.clone();
        exited.push(
            std::thread::Builder::new()
                .name(format!("request-worker-{i}"))
                .spawn(move || drop(work(2000, &give)))
                .unwrap(),
        );
    }
    for h in exited {
        h.join().unwrap();
    }
    // unnamed threads, and a tokio-style long name (kept by the kernel as
    // "tokio-runtime-w")
    // An unnamed thread keeps its creator's kernel name: started from one
    // named as the program (as `main` is), it is `unnamed`. (The test's own
    // thread has the test's name, so a helper takes the program's.)
    let give2 = give.clone();
    std::thread::Builder::new()
        .name(comm.trim_end().to_owned())
        .spawn(move || {
            std::thread::spawn(move || drop(work(500, &give2)))
                .join()
                .unwrap();
        })
        .unwrap()
        .join()
        .unwrap();
    let give3 = give.clone();
    std::thread::Builder::new()
        .name("tokio-runtime-worker".into())
        .spawn(move || drop(work(700, &give3)))
        .unwrap()
        .join()
        .unwrap();
    // still alive when read: an indexer parked at a barrier
    let barrier = Arc::new(Barrier::new(2));
    let b2 = Arc::clone(&barrier);
    let give4 = give.clone();
    let alive = std::thread::Builder::new()
        .name("indexer-2".into())
        .spawn(move || {
            let kept = work(900, &give4);
            drop(give4);
            b2.wait(); // done allocating
            b2.wait(); // read
            drop(kept);
        })
        .unwrap();
    let main_kept = work(300, &give);
    drop(give);
    let freed_by_consumer = consumer.join().unwrap();
    assert!(freed_by_consumer > 0);
    barrier.wait();

    // Only this thread allocates now: every other group is frozen.
    let read = |g: &str, stats: &[threads::GroupStats]| {
        stats
            .iter()
            .find(|s| s.name == g)
            .map(|s| {
                [
                    s.allocations,
                    s.allocated_bytes,
                    s.deallocations,
                    s.freed_bytes,
                ]
            })
            .unwrap_or_default()
    };
    let truth = |i: usize| TRUTH[i].each_ref().map(|c| c.load(SeqCst));
    let before: Vec<_> = (0..GROUPS.len()).map(truth).collect();
    let stats = threads::stats();
    let after: Vec<_> = (0..GROUPS.len()).map(truth).collect();
    for (i, g) in GROUPS.iter().enumerate() {
        let got = read(g, &stats);
        if *g == "main" || *g == SELF {
            for k in 0..4 {
                assert!(
                    before[i][k] <= got[k] && got[k] <= after[i][k],
                    "{g} [{k}]: {} not within {}..{}",
                    got[k],
                    before[i][k],
                    after[i][k]
                );
            }
        } else {
            assert_eq!(
                got, before[i],
                "group {g}: [allocs, bytes, frees, freed bytes]; all: {stats:#?}"
            );
        }
    }
    assert_eq!(
        before[GROUPS.len() - 1],
        [0; 4],
        "a thread in no known group"
    );
    for g in [
        "request-worker",
        "indexer",
        "unnamed",
        "tokio-runtime-worker",
    ] {
        let s = stats.iter().find(|s| s.name == g).unwrap();
        assert!(s.allocations > 100, "{g}: {s:?}");
    }
    let live = |g: &str| stats.iter().find(|s| s.name == g).unwrap().live_threads;
    assert_eq!(live("request-worker"), 0, "the request workers exited");
    assert_eq!(live("indexer"), 1, "indexer-2 is alive, indexer-1 exited");
    assert_eq!(live(SELF), 1);
    // the indexers freed blocks the request workers allocated
    let idx = read("indexer", &stats);
    assert!(
        idx[3] > idx[1],
        "the indexer group freed more than it allocated"
    );
    barrier.wait();
    alive.join().unwrap();
    drop(main_kept);
}
