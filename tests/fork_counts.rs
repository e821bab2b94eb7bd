//! Scenario: `fork()` without `exec` while other threads hold counts in
//! their thread-local counters. The child must start with exactly the
//! parent's counts (the threads that did not survive the fork included), go
//! on counting exactly, and survive its own threads' exits (glibc then
//! recycles the dead threads' stacks, where their counters were). Checked
//! in a child that exits with a code per failure.
use std::sync::mpsc;
use std::time::{Duration, Instant};

use allocscope::AllocScope;

#[global_allocator]
static ALLOC: AllocScope = AllocScope::system();

/// In the child: returns 0 when every check passes.
fn child(at_fork: &allocscope::Stats) -> i32 {
    let s0 = allocscope::stats();
    // exactly one allocation since `at_fork` was folded: its own list of
    // size classes
    let classes = (at_fork.size_classes.capacity()
        * std::mem::size_of::<allocscope::SizeClassStats>()) as u64;
    if s0.allocations != at_fork.allocations + 1 || s0.deallocations != at_fork.deallocations {
        return 10;
    }
    if s0.allocated_bytes != at_fork.allocated_bytes + classes {
        return 11;
    }
    let mut prev = s0;
    for round in 0..4u64 {
        // a thread of the child: allocates 1000 blocks and exits
        let t = std::thread::spawn(move || {
            let v: Vec<Box<[u8; 40]>> = (0..1000).map(|_| Box::new([round as u8; 40])).collect();
            std::hint::black_box(v).len()
        });
        if t.join().unwrap_or(0) != 1000 {
            return 20;
        }
        let s = allocscope::stats();
        // nothing lost, nothing counted twice: at least the 1000 boxes and
        // the vector, and no more than the thread machinery adds around them
        let grew = s.allocations.wrapping_sub(prev.allocations);
        if !(1001..1100).contains(&grew) {
            return 30 + round as i32;
        }
        prev = s;
    }
    0
}

#[test]
fn children_start_with_the_parents_exact_counts_and_survive_thread_exits() {
    // threads that count in their thread-local counters, then wait
    let mut release = Vec::new();
    let mut done = Vec::new();
    let mut handles = Vec::new();
    for k in 0..24u8 {
        let (tx, rx) = mpsc::channel::<()>();
        let (dtx, drx) = mpsc::channel::<()>();
        handles.push(std::thread::spawn(move || {
            let v: Vec<Box<[u8; 24]>> = (0..2000).map(|_| Box::new([k; 24])).collect();
            let _ = dtx.send(());
            let _ = rx.recv();
            drop(v);
        }));
        release.push(tx);
        done.push(drx);
    }
    for d in &done {
        d.recv().unwrap();
    }
    std::thread::sleep(Duration::from_millis(20));
    for _ in 0..3 {
        let at_fork = allocscope::stats();
        // SAFETY: the child only runs `child()` and `_exit`s.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let code = child(&at_fork);
            // SAFETY: ends the child without running the parent's handlers.
            unsafe { libc::_exit(code) };
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        let code = loop {
            let mut status = 0;
            // SAFETY: waits for our own child.
            let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            if r == pid {
                break if libc::WIFEXITED(status) {
                    libc::WEXITSTATUS(status)
                } else {
                    1000 + libc::WTERMSIG(status)
                };
            }
            if Instant::now() > deadline {
                // SAFETY: our own child.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                panic!("the child did not finish within 60 s (deadlock?)");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        assert_eq!(
            code, 0,
            "child failed with code {code} (1000+ = killed by a signal)"
        );
    }
    for r in release {
        let _ = r.send(());
    }
    for h in handles {
        h.join().unwrap();
    }
}
