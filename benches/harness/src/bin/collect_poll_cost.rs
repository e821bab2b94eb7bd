//! Measures the collector's periodic check (docs/measurements.md, "Collection cycles"):
//! for 1, 10, 100 and 1,000 counter blocks (threads that allocated, then
//! park): the cost of one full check of live bytes, the checks' share of
//! one core while the heap is idle, and how long after live bytes pass the
//! goal a cycle starts; then what the checks cost an allocating thread
//! (alloc+free pairs with the collector watching vs parked).
//!
//! `cargo run --release -p allocscope-bench --bin collect_poll_cost`
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use allocscope::AllocScope;

#[global_allocator]
static A: AllocScope = AllocScope::system();

fn park_threads(n: usize, keep: &mut Vec<mpsc::Sender<()>>) {
    for _ in 0..n {
        let (tx, rx) = mpsc::channel::<()>();
        let (ready_tx, ready_rx) = mpsc::channel::<()>();
        std::thread::spawn(move || {
            // touch a few exact-size and large slots, like a real thread
            let v: Vec<Box<[u8]>> = [16usize, 64, 200, 1000, 5000]
                .iter()
                .map(|&s| vec![0u8; s].into_boxed_slice())
                .collect();
            std::hint::black_box(&v);
            ready_tx.send(()).unwrap();
            let _ = rx.recv();
        });
        ready_rx.recv().unwrap();
        keep.push(tx);
    }
}

fn main() {
    println!(
        "per number of counter blocks (threads that ever ran): the cost of one check of live \
         bytes, the checks' share of one core with the heap idle, and how long after live bytes \
         pass the goal a cycle starts (30 triggers)"
    );
    allocscope::gc::set_threshold(Some(100));
    let mut keep = Vec::new();
    let mut have = 0;
    for n in [1usize, 10, 100, 1000] {
        park_threads(n - have.min(n), &mut keep);
        have = n;
        std::thread::sleep(Duration::from_millis(200));
        let s0 = allocscope::gc::stats();
        let t0 = Instant::now();
        std::thread::sleep(Duration::from_secs(2));
        let s1 = allocscope::gc::stats();
        let wall = t0.elapsed();

        let polls = s1.polls - s0.polls;
        let spent = s1.poll_time - s0.poll_time;
        println!(
            "   {:>5} blocks: {:>8.2} us per check, {:>4.0} checks/s, {:.3}% of one core",
            allocscope::counters::info().blocks,
            spent.as_secs_f64() * 1e6 / polls.max(1) as f64,
            polls as f64 / wall.as_secs_f64(),
            spent.as_secs_f64() * 100.0 / wall.as_secs_f64()
        );
        latency();
    }
    drop(keep);
    interference();
}

fn latency() {
    let mut held: Vec<Box<[u8]>> = Vec::new();
    let mut lat = Vec::new();
    for _ in 0..30 {
        let goal = allocscope::gc::heap_goal();
        let n = allocscope::gc::stats().cycles();
        while allocscope::stats().live_bytes() + 64 * 1024 <= goal {
            held.push(vec![0u8; 64 * 1024].into_boxed_slice());
        }
        // a pause, so that the trigger falls anywhere in the poll period
        std::thread::sleep(Duration::from_micros(1000 + (lat.len() as u64 * 97) % 5000));
        let crossed = SystemTime::now();
        held.push(vec![0u8; 128 * 1024].into_boxed_slice());
        while allocscope::gc::stats().cycles() == n {
            std::thread::sleep(Duration::from_micros(200));
        }
        let c = allocscope::gc::cycles().pop().unwrap();
        lat.push(c.start.duration_since(crossed).unwrap_or_default());
        // back to a small heap for the next round
        held.clear();
        held.shrink_to_fit();
        allocscope::gc::collect();
    }
    lat.sort();
    println!(
        "          trigger acted on after: median {:?}, p90 {:?}, max {:?}",
        lat[lat.len() / 2],
        lat[lat.len() * 9 / 10],
        lat[lat.len() - 1]
    );
}

fn pairs_per_second(d: Duration) -> f64 {
    let t = Instant::now();
    let mut n = 0u64;
    while t.elapsed() < d {
        for i in 0..1000 {
            let b = std::hint::black_box(Box::new([i as u8; 64]));
            drop(b);
        }
        n += 1000;
    }
    n as f64 / t.elapsed().as_secs_f64()
}

fn interference() {
    println!("64-byte alloc+free pairs on one thread, checks on vs off (5 rounds each):");
    let (mut on, mut off) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        allocscope::gc::set_threshold(Some(100_000)); // checks, never triggers
        on.push(1e9 / pairs_per_second(Duration::from_millis(400)));
        allocscope::gc::set_threshold(None); // parked
        off.push(1e9 / pairs_per_second(Duration::from_millis(400)));
    }
    on.sort_by(f64::total_cmp);
    off.sort_by(f64::total_cmp);
    println!(
        "   median {:.2} ns per pair with checks, {:.2} ns parked",
        on[2], off[2]
    );
}
