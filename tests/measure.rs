//! Scenario: `AllocScope::system()`; `measure()` and `thread_stats()` report
//! only the calling thread's own activity.
use allocscope::AllocScope;

#[global_allocator]
static ALLOC: AllocScope = AllocScope::system();

#[test]
fn measure_counts_exactly_what_the_closure_did() {
    let (v, d) = allocscope::measure(|| {
        let mut v: Vec<u64> = Vec::with_capacity(10);
        v.extend(0..10);
        v
    });
    assert_eq!(v.len(), 10);
    assert_eq!(d.allocations, 1);
    assert_eq!(d.deallocations, 0);
    assert_eq!(d.allocated_bytes, 80);
    assert_eq!(d.net_bytes(), 80);

    let (_, d) = allocscope::measure(|| drop(v));
    assert_eq!((d.allocations, d.deallocations, d.freed_bytes), (0, 1, 80));

    // growth by push: reallocations, each also an allocation and a free
    let (_, d) = allocscope::measure(|| {
        let mut v = Vec::new();
        for i in 0..1000u64 {
            v.push(i);
        }
        v
    });
    assert!(d.reallocations >= 5, "{d:?}");
    assert_eq!(d.allocations, d.reallocations + 1, "{d:?}");
    assert_eq!(d.deallocations, d.reallocations, "{d:?}");
    assert_eq!(d.net_bytes(), 1024 * 8, "{d:?}");
}

#[test]
fn measure_of_non_allocating_code_is_zero() {
    let (sum, d) = allocscope::measure(|| (0..1000u64).map(|x| x * x).sum::<u64>());
    assert_eq!(sum, 332_833_500);
    assert_eq!(d, allocscope::ThreadStats::default());
}

#[test]
fn other_threads_are_not_included() {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s2 = stop.clone();
    let noisy = std::thread::spawn(move || {
        while !s2.load(std::sync::atomic::Ordering::Relaxed) {
            std::hint::black_box(vec![0u8; 100]);
        }
    });
    for _ in 0..100 {
        let (_, d) = allocscope::measure(|| std::hint::black_box(Box::new(5u32)));
        assert_eq!(d.allocations, 1);
        assert_eq!(d.allocated_bytes, 4);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    noisy.join().unwrap();
}

#[test]
fn thread_stats_of_a_new_thread_start_at_zero_and_accumulate() {
    std::thread::spawn(|| {
        let t0 = allocscope::thread_stats();
        let b = std::hint::black_box(Box::new([0u8; 1000]));
        let t1 = allocscope::thread_stats();
        drop(b);
        let t2 = allocscope::thread_stats();
        assert_eq!(t1.delta(&t0).allocations, 1);
        assert_eq!(t1.delta(&t0).allocated_bytes, 1000);
        assert_eq!(t2.delta(&t1).freed_bytes, 1000);
        assert!(
            t2.allocations >= 1 && t2.allocations < 20,
            "a new thread's own count: {t2:?}"
        );
    })
    .join()
    .unwrap();
}

#[test]
fn stats_delta_and_class_lookup() {
    let a = allocscope::stats();
    let keep = vec![0u8; 5000];
    let b = allocscope::stats();
    let d = b.delta(&a);
    assert!(d.allocations >= 1);
    let class = b.class_for(5000).unwrap();
    assert!(class.min_size <= 5000 && 5000 <= class.max_size);
    assert!(class.live_objects() >= 1);
    assert!(b.live_bytes() >= 5000);
    drop(keep);
}
