//! Scenario: `AllocScope::system()` with small sampler caps set before the
//! first sample: past the caps samples are dropped and counted, memory stays
//! bounded, and room freed by frees is reused.
use allocscope::sampling::Limits;
use allocscope::AllocScope;

#[global_allocator]
static ALLOC: AllocScope = AllocScope::system();

/// Limits can only be set before the first sample: keep the sampler off
/// from before `main` (the test harness allocates before the test runs).
extern "C" fn sampling_off() {
    allocscope::sampling::set_interval(0);
}

#[used]
#[link_section = ".init_array"]
static SAMPLING_OFF: extern "C" fn() = sampling_off;

#[test]
fn caps_bound_the_sampler() {
    allocscope::sampling::set_interval(0);
    allocscope::sampling::set_limits(
        Limits::default()
            .max_live_samples(100)
            .max_stacks(64)
            .max_buckets(128)
            .max_frames(4096),
    )
    .expect("limits before the first sample");
    assert_eq!(allocscope::sampling::limits().max_live_samples, 100);
    allocscope::sampling::set_interval(1);
    let v: Vec<Box<u64>> = std::hint::black_box((0..1000).map(Box::new).collect());
    let s = allocscope::sampling::stats();
    assert_eq!(s.live_samples, 100, "{s:?}");
    assert!(s.dropped_samples >= 900, "{s:?}");
    assert!(
        s.stacks <= 64 && s.buckets <= 128 && s.frames <= 4096,
        "{s:?}"
    );
    // the reserved address space is what the caps imply (small)
    assert!(s.reserved_bytes < 1 << 20, "{s:?}");
    drop(v);
    let s2 = allocscope::sampling::stats();
    assert!(s2.live_samples <= 1, "{s2:?}");
    let w: Vec<Box<u64>> = std::hint::black_box((0..50).map(Box::new).collect());
    let s3 = allocscope::sampling::stats();
    allocscope::sampling::set_interval(0);
    assert!(s3.live_samples >= 50, "room is reused after frees: {s3:?}");
    drop(w);
}
