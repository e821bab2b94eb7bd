//! # allocscope
//!
//! A global allocator that makes a process's heap observable and
//! controllable in production: exact, contention-free allocation statistics
//! per size class, cheap enough to leave on forever; Poisson-sampled heap
//! profiles (pprof, flamegraphs); GOGC-style collection cycles; and an HTTP
//! exporter for Prometheus and `go tool pprof`.
//!
//! ## The everyday path
//! ```
//! use allocscope::AllocScope;
//!
//! #[global_allocator]
//! static ALLOC: AllocScope = AllocScope::system();
//!
//! let s = allocscope::stats();
//! println!("{} live bytes in {} objects", s.live_bytes(), s.live_objects());
//!
//! // what one piece of code allocates, on this thread
//! let (v, t) = allocscope::measure(|| vec![0u8; 1024]);
//! assert!(t.allocations >= 1 && v.len() == 1024);
//! ```
//! With the default feature `server`, one more line serves `/metrics`,
//! `/debug/pprof/*`, flamegraphs and `/gc`:
//! `allocscope::server::start(allocscope::server::Config::load()?)?`.
//!
//! ## Topics
//! - [`gc`] — collection cycles: a GOGC-style threshold
//!   ([`gc::set_threshold`]), a soft memory limit ([`gc::set_memory_limit`]),
//!   the application's reclaimers ([`gc::register_reclaimer`]), returning
//!   free memory to the OS.
//! - [`sampling`] — the heap sampler: its interval ([`sampling::set_interval`]),
//!   stack capture, caps and its own statistics.
//! - `profile` (feature `profile`) — heap profiles ([`profile::HeapProfile`]):
//!   folded stacks, pprof, flamegraphs, diffs; near-limit profiles.
//! - `server` (feature `server`, default) — the HTTP exporter.
//! - [`size_class`] — the size classes of [`Stats::size_classes`].
//! - [`counters`] — the counting core's own footprint.
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
//! ## Features
//! - `profile`: heap profile formats (symbolisation, pprof, flamegraphs).
//! - `server` (default, implies `profile`): the exporter on warp and tokio.
//! - `test-util`: hooks for allocscope's own tests and fuzz targets, with no
//!   stability promise.
//!
//! The path of one allocation through the modules is described in
//! `docs/architecture.md`.

mod alloc;
pub mod counters;
mod error;
pub mod gc;
mod macros;
#[cfg(feature = "profile")]
pub mod profile;
pub mod sampling;
pub mod scope;
#[cfg(feature = "server")]
pub mod server;
pub mod size_class;
mod stats;
mod sys;
pub mod threads;
#[cfg(feature = "test-util")]
pub mod test_util;

pub use alloc::AllocScope;
pub use error::Error;
pub use stats::{measure, stats, thread_stats, SizeClassStats, Stats, ThreadStats};
