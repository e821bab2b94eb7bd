//! PLACEHOLDER for the sampler's public API, so that the exporter compiles
//! before the real sampler lands; deleted when it does. Same names and
//! signatures as the real API; the bodies only remember the interval.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

static INTERVAL: AtomicU64 = AtomicU64::new(512 * 1024);

/// The sampler's own figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SamplerStats {
    pub interval: u64,
    pub live_samples: u64,
    pub dropped_samples: u64,
    pub samples_total: u64,
    pub stacks: u64,
    pub buckets: u64,
    pub memory_bytes: u64,
}

/// The mean number of bytes between samples (0 = off, 1 = every allocation).
pub fn sample_interval() -> u64 {
    INTERVAL.load(Relaxed)
}

/// Sets the sampling interval; returns the previous one.
pub fn set_sample_interval(bytes: u64) -> u64 {
    INTERVAL.swap(bytes, Relaxed)
}

/// The sampler's own figures.
pub fn sampler_stats() -> SamplerStats {
    SamplerStats {
        interval: sample_interval(),
        ..SamplerStats::default()
    }
}
