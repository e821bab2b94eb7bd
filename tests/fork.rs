//! Scenario: `AllocScope::system()` and `fork()` without `exec`. Children
//! forked while other threads allocate and sample every allocation neither
//! deadlock nor miscount: each child allocates, samples and checks its own
//! counts, and must exit within a deadline.
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use allocscope::AllocScope;

#[global_allocator]
static ALLOC: AllocScope = AllocScope::system();

/// What a child does; returns its exit code (0 = all good).
fn child() -> i32 {
    let before = allocscope::sampling::stats().samples_total;
    let (v, d) = allocscope::measure(|| {
        let v: Vec<Vec<u8>> = (0..500).map(|i| vec![i as u8; 16 + i]).collect();
        std::hint::black_box(v)
    });
    let ok_counts = d.allocations == 501
        && d.allocated_bytes as usize == 500 * 8 * 3 + (0..500).map(|i| 16 + i).sum::<usize>();
    drop(v);
    let sampled = allocscope::sampling::stats().samples_total > before;
    let s = allocscope::stats();
    if !ok_counts {
        return 2;
    }
    if !sampled {
        return 3;
    }
    if s.live_objects() == 0 {
        return 4;
    }
    0
}

#[test]
fn forked_children_allocate_and_sample() {
    let prev = allocscope::sampling::set_interval(1);
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|k| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut keep = Vec::new();
                while !stop.load(SeqCst) {
                    keep.push(vec![k as u8; 100]);
                    if keep.len() > 1000 {
                        keep.clear();
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(50));
    for round in 0..30 {
        // SAFETY: the child only runs `child()` and `_exit`s.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let code = child();
            // SAFETY: ends the child without running the parent's atexit
            // handlers or test harness.
            unsafe { libc::_exit(code) };
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut status = 0;
        loop {
            // SAFETY: waiting for our own child.
            let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            if r == pid {
                break;
            }
            if Instant::now() > deadline {
                // SAFETY: killing our own child.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                stop.store(true, SeqCst);
                panic!("round {round}: the forked child hung (deadlock)");
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        assert!(
            libc::WIFEXITED(status),
            "round {round}: child died: status {status}"
        );
        assert_eq!(
            libc::WEXITSTATUS(status),
            0,
            "round {round}: child check failed (2 counts, 3 sampling, 4 stats)"
        );
    }
    stop.store(true, SeqCst);
    for w in workers {
        w.join().unwrap();
    }
    allocscope::sampling::set_interval(prev);
}
