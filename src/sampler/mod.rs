//! The heap sampler (cold path): Poisson sampling of allocations, raw stack
//! capture, and the set of live sampled blocks.
//!
//! INTERFACE PLACEHOLDER on the way to the real sampler: the profile module
//! consumes `raw_buckets()`.

mod api_placeholder;
pub use api_placeholder::{sample_interval, sampler_stats, set_sample_interval, SamplerStats};

/// One bucket of sampled allocations: same stack, same object size, same
/// sampling interval.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RawBucket {
    /// Return addresses, leaf first, as captured (allocscope's own frames
    /// and the `__rust_alloc`-style shims are still present at the leaf end;
    /// symbolisation drops them).
    pub stack: Vec<usize>,
    /// Requested object size in bytes.
    pub size: u64,
    /// The sampling interval in force when these were sampled (>= 1).
    pub interval: u64,
    /// Sampled allocations in this bucket.
    pub allocs: u64,
    /// Of those, how many were freed since.
    pub frees: u64,
}

/// Every bucket recorded so far.
#[allow(dead_code)]
pub(crate) fn raw_buckets() -> Vec<RawBucket> {
    Vec::new()
}

/// The sampling interval in force now, in bytes, as a heap profile reports
/// it (its pprof `period`). PLACEHOLDER: Go's default, until the sampler
/// owns the real setting.
#[allow(dead_code)]
pub(crate) fn current_interval_for_profile() -> u64 {
    512 * 1024
}
