//! Scenario: `AllocScope::system()`; named threads start, allocate and exit
//! without pause while another thread reads `threads::stats()` over and
//! over. No group's counts may ever go down between two reads (they are
//! exported as Prometheus counters): a read that overlaps a thread's exit,
//! when its counts move from its live block to its group, must not count
//! them twice or miss them.
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;

use allocscope::threads;
use allocscope::AllocScope;

#[global_allocator]
static ALLOC: AllocScope = AllocScope::system();

#[test]
fn group_counts_never_go_down_while_threads_exit() {
    let stop = Arc::new(AtomicBool::new(false));
    let spawners: Vec<_> = (0..2)
        .map(|k| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(SeqCst) {
                    std::thread::Builder::new()
                        .name(format!("churner-{k}-{n}"))
                        .spawn(move || {
                            for i in 0..200 {
                                std::hint::black_box(vec![0u8; 16 + i]);
                            }
                        })
                        .unwrap()
                        .join()
                        .unwrap();
                    n += 1;
                }
                n
            })
        })
        .collect();
    let mut last = [0u64; 4];
    let mut reads = 0;
    let start = std::time::Instant::now();
    while start.elapsed() < std::time::Duration::from_secs(3) {
        let s = threads::stats();
        let Some(g) = s.iter().find(|g| g.name == "churner") else {
            continue;
        };
        let now = [
            g.allocations,
            g.allocated_bytes,
            g.deallocations,
            g.freed_bytes,
        ];
        for k in 0..4 {
            assert!(
                now[k] >= last[k],
                "read {reads}: count {k} of churner went down: {} -> {}",
                last[k],
                now[k]
            );
        }
        last = now;
        reads += 1;
    }
    stop.store(true, SeqCst);
    let exited: u64 = spawners.into_iter().map(|h| h.join().unwrap()).sum();
    eprintln!("{reads} reads while {exited} threads exited");
    assert!(reads > 100 && exited > 100, "{reads} reads, {exited} exits");
}
