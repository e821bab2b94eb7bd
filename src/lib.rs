//! # allocscope
//!
//! A global allocator that makes a process's heap observable in production:
//! exact, contention-free allocation statistics per size class, cheap enough
//! to leave on forever.
//!
//! ```
//! use allocscope::AllocScope;
//!
//! #[global_allocator]
//! static ALLOC: AllocScope = AllocScope::system();
//!
//! let s = allocscope::stats();
//! println!("{} live bytes in {} objects", s.live_bytes(), s.live_objects());
//! ```
//!
//! ## Counting rules
//! All counts are exact: once the threads that allocated are joined,
//! [`stats()`] equals the sums of what happened, in every field and class,
//! including blocks freed on another thread than the one that allocated them
//! and everything done by threads that have exited.
//! - A successful `alloc` or `alloc_zeroed`: +1 allocation and +size allocated
//!   bytes, in the class of `layout.size()`. A null result counts only
//!   `alloc_failures`.
//! - `dealloc`: +1 deallocation and +size freed bytes, in that size's class.
//! - A successful `realloc`: +1 reallocation, and also a deallocation of the
//!   old size and an allocation of the new size (classes included), so
//!   `live_objects` is unchanged and `live_bytes` moves by the difference. A
//!   failed `realloc` counts one failure and leaves the old block live.
//! - Sizes are the requested `layout.size()`, not what the allocator rounded
//!   up to. `alloc_zeroed` and `realloc` forward to the inner allocator's own
//!   `alloc_zeroed` and `realloc`.
//! - Size classes: 8-byte steps up to 128 bytes, then four per power of two
//!   (each at most 25% wider than the bound below it) up to 1 GiB, then one
//!   class for everything larger. See [`size_class`].
//!
//! ## Architecture
//! - [`alloc`](crate::AllocScope) — the hot path: forwarding and counting.
//! - `counters` — per-thread counter blocks and their registry.
//! - [`size_class`] — size to class mapping.
//! - `stats` — snapshots ([`Stats`], [`ThreadStats`], [`measure`]).
//! - `collect` — collection cycles: the threshold ([`set_threshold`]), the
//!   memory limit ([`set_memory_limit`]), reclaimers
//!   ([`register_reclaimer`]), the collector thread, release to the OS
//!   ([`collect`], [`cycles`], [`collection_stats`]).
//! - `profile` (feature `profile`) — heap profiles: symbolisation,
//!   un-sampling, folded stacks, pprof, flamegraphs, diffs (`HeapProfile`).
//! - [`server`] (feature `server`, default) — the HTTP exporter: Prometheus
//!   `/metrics`, Go-style `/debug/pprof/*`, flamegraphs, a landing page,
//!   configuration and the periodic log line.
#![warn(unsafe_op_in_unsafe_fn)]
#![warn(missing_debug_implementations)]

mod alloc;
mod collect;
mod counters;
mod error;
#[cfg(feature = "profile")]
mod profile;
mod sampler;
#[cfg(feature = "server")]
pub mod server;
pub mod size_class;
mod stats;

pub use alloc::AllocScope;
pub use collect::{
    collect, collection_stats, collector_time_share, cycles, heap_goal, memory_limit,
    register_reclaimer, release_to_os, set_collector_time_share, set_memory_limit,
    set_release_to_os, set_threshold, start_collector, threshold, CollectionStats, Cycle,
    CycleReason, Pressure, Reclaimer, ReleaseToOs, CYCLE_HISTORY, DEFAULT_THRESHOLD,
    DEFAULT_TIME_SHARE, DURATION_BUCKETS, MIN_HEAP_GOAL, POLL_INTERVAL,
};
#[cfg(feature = "profile")]
pub use collect::{near_limit_profiles, set_near_limit_profiles, NearLimitProfiles};
pub use error::Error;
#[cfg(feature = "profile")]
#[doc(hidden)]
pub use profile::{__profile_from_raw_for_tests, RawSampleForTests};
#[cfg(feature = "profile")]
pub use profile::{
    clear_symbol_cache, symbol_cache_len, Bucket, DiffStack, FlamegraphColors, FlamegraphOptions,
    Frame, HeapDiff, HeapProfile, PprofKind, SampleType, SYMBOL_CACHE_CAPACITY,
};
pub use sampler::{
    sample_interval, sample_probability, sampler_limits, sampler_stats, set_sample_interval,
    set_sampler_limits, set_stack_capture, stack_capture, SamplerLimits, SamplerStats,
    StackCapture, DEFAULT_INTERVAL,
};
pub use stats::{
    core_info, measure, stats, thread_stats, CoreInfo, SizeClassStats, Stats, ThreadStats,
};
