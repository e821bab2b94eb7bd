//! Hooks for allocscope's own integration tests and fuzz targets (feature
//! `test-util`).
//!
//! **No stability promise:** anything here may change or disappear in any
//! release. The crate's tests and fuzz targets enable the feature; an
//! application has no reason to.

#[cfg(feature = "profile")]
use crate::profile::HeapProfile;
#[cfg(feature = "profile")]
use crate::sampling::RawBucket;

/// A raw sampled bucket, as the sampler records it, for building profiles
/// from made-up stacks.
#[cfg(feature = "profile")]
#[derive(Clone, Debug)]
pub struct RawSample {
    /// Return addresses, leaf first.
    pub stack: Vec<usize>,
    /// Object size in bytes.
    pub size: u64,
    /// Sampling interval in force, in bytes.
    pub interval: u64,
    /// Sampled allocations.
    pub allocs: u64,
    /// Of those, freed.
    pub frees: u64,
}

/// Builds a profile from raw buckets, as
/// [`HeapProfile::capture_with`]`(`[`Symbols::Lines`](crate::profile::Symbols::Lines)`)`
/// builds one from the sampler's (symbolisation, files and lines, and
/// un-sampling included).
#[cfg(feature = "profile")]
pub fn profile_from_raw(raw: Vec<RawSample>, current_interval: u64) -> HeapProfile {
    profile_from_raw_with(raw, current_interval, crate::profile::Symbols::Lines)
}

/// As [`profile_from_raw`], symbolised as `symbols` says.
#[cfg(feature = "profile")]
pub fn profile_from_raw_with(
    raw: Vec<RawSample>,
    current_interval: u64,
    symbols: crate::profile::Symbols,
) -> HeapProfile {
    HeapProfile::from_raw(
        raw.into_iter()
            .map(|r| RawBucket {
                stack: r.stack,
                size: r.size,
                interval: r.interval,
                allocs: r.allocs,
                frees: r.frees,
                ..RawBucket::default()
            })
            .collect(),
        current_interval,
        symbols,
    )
}

#[cfg(feature = "server")]
/// What every endpoint's query parsing makes of one query string, with
/// nothing applied; for the fuzz target `query` and its replay in
/// `cargo test`. Errors are HTTP statuses.
#[derive(Debug)]
#[allow(clippy::type_complexity)]
pub struct ParsedQuery {
    /// The decoded parameters.
    pub params: Vec<(String, String)>,
    /// `/debug/pprof/profile`: the seconds.
    pub cpu_seconds: Result<u64, u16>,
    /// `/debug/pprof/heap` and `allocs`: whether text (`debug` > 0).
    pub heap_text: Result<bool, u16>,
    /// `/debug/pprof/heap` and `allocs`: the window of a delta profile
    /// (`seconds=N`), if asked for.
    pub heap_seconds: Result<Option<u64>, u16>,
    /// `heap`, `allocs`, `heap.svg`: whether `raw=N` keeps std's allocation
    /// frames (`N > 0`).
    pub raw: Result<bool, u16>,
    /// `heap`, `allocs`, `heap.svg`: the `min_age=D` filter (`None`: not
    /// given, or 0).
    pub min_age: Result<Option<std::time::Duration>, u16>,
    /// `heap`, `allocs`, `heap.svg`: the `scope=NAME` filter (`None`: not
    /// given).
    pub scope: Result<Option<String>, u16>,
    /// `heap`, `allocs`, `heap.svg`: the `thread=NAME` filter (`None`: not
    /// given).
    pub thread: Result<Option<String>, u16>,
    /// `/debug/pprof/heap`: whether `gc=N` asks for a collection cycle first.
    pub heap_gc: Result<bool, u16>,
    /// `/debug/pprof/heap.svg`: the sample type and whether `diff=baseline`.
    pub svg: Result<(crate::profile::SampleType, bool), u16>,
    /// `heap`, `allocs`, `heap.svg`: whether `lines=N` asks for files and
    /// lines (`N > 0`).
    pub lines: Result<bool, u16>,
    /// `POST /gc`: `set` and `memory_limit` (outer `None`: not given).
    pub gc_post: Result<(Option<Option<u32>>, Option<crate::gc::MemoryLimit>), u16>,
    /// `GET /gc` with this query: the 405 status if it carries a change.
    pub gc_get_change: Option<u16>,
}

/// Runs every endpoint's query parsing over `query`, applying nothing (see
/// [`ParsedQuery`]); `Err` is the HTTP status the query itself gets.
#[cfg(feature = "server")]
pub fn parse_query(query: &str) -> Result<ParsedQuery, u16> {
    crate::server::parse_query_for_tests(query)
}
