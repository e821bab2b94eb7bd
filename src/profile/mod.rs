//! Heap profiles: sampled stacks turned into symbolised, un-biased
//! estimates, and the formats people read them in.
//!
//! Owns [`HeapProfile`] (a snapshot of the sampler's buckets, symbolised and
//! scaled), its exports — folded stacks ([`HeapProfile::folded`]), pprof
//! protobuf ([`HeapProfile::to_pprof`]), Go's `debug=1` text
//! ([`HeapProfile::to_text`]), inferno flamegraphs
//! ([`HeapProfile::flamegraph`]) — the leak-hunting diff
//! ([`HeapProfile::diff`]), Go's delta profile
//! ([`HeapProfile::delta_pprof`]) and the leak suspects of a ring of
//! snapshots ([`LeakTracker`]).
//!
//! # Labels
//! Every sample records the [scope](crate::scope) and the [thread
//! group](crate::threads) it was taken in: each [`Bucket`] has a
//! [`scope`](Bucket::scope) and a [`thread`](Bucket::thread) name, buckets
//! that differ only by them stay apart, and the pprof export labels every
//! sample with both (`go tool pprof -tags`, `-tagfocus scope=checkout`).
//! [`HeapProfile::scope`] and [`HeapProfile::thread`] keep one of them.
//! Views by stack (folded stacks, flamegraphs, diffs, leak suspects,
//! temporary stacks) add the labels of a stack up.
//!
//! Nothing here runs inside the allocator: capturing a profile copies the
//! sampler's buckets (the sampler guarantees that never blocks an
//! allocating thread) and then symbolises and formats on the calling thread,
//! allocating and locking freely.
//!
//! # Un-sampling
//! The sampler records an allocation of `size` bytes with probability
//! `1 - exp(-size / interval)`. Like Go's `scaleHeapSample`, each bucket
//! (one stack, one object size, one interval) is scaled by
//! `1 / (1 - exp(-size / interval))`: estimated objects = sampled objects ×
//! scale, estimated bytes = sampled objects × size × scale, separately for
//! the allocated and the in-use (allocated − freed) pairs. An interval of 1
//! (every allocation recorded) means no scaling. Because buckets are keyed by
//! the exact object size, the scaling is exact per bucket (not an average
//! over mixed sizes).
//!
//! # Names
//! Return addresses are symbolised when a profile is captured, through a
//! bounded cache ([`symbol_cache_len`], [`SYMBOL_CACHE_CAPACITY`]). Frames are
//! demangled paths without the hash (`myapp::cache::Cache::insert`), inlined
//! functions expanded into frames of their own, unresolvable addresses
//! `0x…`. allocscope's own frames, the stack capture's and the allocator
//! shims' (`__rust_alloc`, `__rg_alloc`, …) are dropped from the leaf end;
//! so is std's allocation machinery (`alloc::alloc::realloc`,
//! `RawVecInner::finish_grow`, `Vec::push`, …: see [`Frames`] and
//! [`ALLOCATION_MACHINERY`]), so that each stack's leaf is the function that
//! asked for the memory. [`Frames::Raw`] keeps std's frames.
//!
//! Every function gets its full path from its object's symbol table, read
//! in place from the mapped file and kept as a compact table (16 bytes a
//! function) for the life of the process. Inlined functions come from the
//! debug info when the binary has it, read for the addresses of one capture
//! and forgotten after it: `debug = "limited"` gives them full paths,
//! `debug = "line-tables-only"` their bare names (`insert`,
//! `{closure#0}`); without debug info there are no inlined frames. Files
//! and lines cost more reading and are asked for explicitly:
//! [`HeapProfile::capture_with`]`(`[`Symbols::Lines`]`)`.

mod age;
mod diff;
mod dwarf;
mod flamegraph;
mod folded;
mod leaks;
mod machinery;
mod near_limit;
mod pprof;
mod symbolize;
mod symtab;
mod text;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::SystemTime;

use crate::sampling::RawBucket;

pub use age::{
    set_temporary_lifetime, temporary_lifetime, Lifetimes, TemporaryStack, MAX_TEMPORARY_LIFETIME,
    MIN_TEMPORARY_LIFETIME,
};
#[cfg(feature = "server")]
pub(crate) use age::{valid_temporary_lifetime, TEMPORARY_LIFETIME_EXPECTED};
pub use diff::{DiffStack, HeapDiff};
#[cfg(feature = "server")]
pub(crate) use flamegraph::xml_escape;
pub use flamegraph::{FlamegraphColors, FlamegraphOptions};
pub use leaks::{
    LeakReport, LeakSuspect, LeakTracker, LEAK_SCORE_THRESHOLD, MAX_REPORTED, MAX_TRACKED_STACKS,
    MIN_LEAK_SNAPSHOTS, NEW_STACKS_PER_SNAPSHOT, RETENTION_FULL,
};
pub use machinery::{Frames, ALLOCATION_MACHINERY};
pub use near_limit::{near_limit_profiles, set_near_limit_profiles, NearLimitProfiles};
#[cfg(feature = "server")]
pub(crate) use near_limit::{
    valid_interval, valid_keep, valid_ratio, INTERVAL_EXPECTED, KEEP_EXPECTED, RATIO_EXPECTED,
};
pub use symbolize::{clear_symbol_cache, symbol_cache_len, Frame, Symbols, SYMBOL_CACHE_CAPACITY};

use symbolize::Location;

/// One of the four values of a heap profile, named as Go names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SampleType {
    /// Objects allocated since the process started (`alloc_objects`).
    AllocObjects,
    /// Bytes allocated since the process started (`alloc_space`).
    AllocSpace,
    /// Objects allocated and not yet freed (`inuse_objects`).
    InuseObjects,
    /// Bytes allocated and not yet freed (`inuse_space`).
    InuseSpace,
}

impl SampleType {
    /// All four, in the order of a Go heap profile's sample types.
    pub const ALL: [SampleType; 4] = [
        SampleType::AllocObjects,
        SampleType::AllocSpace,
        SampleType::InuseObjects,
        SampleType::InuseSpace,
    ];

    /// Go's name: `alloc_objects`, `alloc_space`, `inuse_objects` or
    /// `inuse_space`.
    pub const fn name(self) -> &'static str {
        match self {
            SampleType::AllocObjects => "alloc_objects",
            SampleType::AllocSpace => "alloc_space",
            SampleType::InuseObjects => "inuse_objects",
            SampleType::InuseSpace => "inuse_space",
        }
    }

    /// The pprof unit: `count` or `bytes`.
    pub const fn unit(self) -> &'static str {
        if self.is_bytes() {
            "bytes"
        } else {
            "count"
        }
    }

    /// Whether the value is in bytes (rather than objects).
    pub const fn is_bytes(self) -> bool {
        matches!(self, SampleType::AllocSpace | SampleType::InuseSpace)
    }

    /// A human description, e.g. "Heap in use (bytes)".
    pub const fn description(self) -> &'static str {
        match self {
            SampleType::AllocObjects => "Allocated since start (objects)",
            SampleType::AllocSpace => "Allocated since start (bytes)",
            SampleType::InuseObjects => "Heap in use (objects)",
            SampleType::InuseSpace => "Heap in use (bytes)",
        }
    }
}

impl fmt::Display for SampleType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for SampleType {
    type Err = crate::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SampleType::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| crate::Error::InvalidArgument {
                what: "sample type",
                value: s.to_string(),
                expected: "one of alloc_objects, alloc_space, inuse_objects, inuse_space",
            })
    }
}

/// Which Go profile a pprof or text export stands for: the same data, with a
/// different default sample type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum PprofKind {
    /// `/debug/pprof/heap`: shows `inuse_space` by default.
    #[default]
    Heap,
    /// `/debug/pprof/allocs`: shows `alloc_space` by default.
    Allocs,
}

impl PprofKind {
    /// The profile's name, as Go's `net/http/pprof` serves it: `heap` or
    /// `allocs`.
    pub const fn name(self) -> &'static str {
        match self {
            PprofKind::Heap => "heap",
            PprofKind::Allocs => "allocs",
        }
    }

    /// The sample type `go tool pprof` shows unless told otherwise.
    pub const fn default_sample_type(self) -> SampleType {
        match self {
            PprofKind::Heap => SampleType::InuseSpace,
            PprofKind::Allocs => SampleType::AllocSpace,
        }
    }
}

/// The un-sampled estimate of one sampled bucket, as Go's
/// `scaleHeapSample` computes it: `(objects, bytes)` for `count` sampled
/// objects of `size` bytes each, sampled every `interval` bytes on average.
pub(crate) fn scale_heap_sample(count: u64, size: u64, interval: u64) -> (f64, f64) {
    if count == 0 || size == 0 {
        return (0.0, 0.0);
    }
    let bytes = (u128::from(count) * u128::from(size)) as f64;
    if interval <= 1 {
        return (count as f64, bytes);
    }
    let scale = 1.0 / (1.0 - (-(size as f64) / interval as f64).exp());
    (count as f64 * scale, bytes * scale)
}

/// One stack, object size, scope and thread group of a [`HeapProfile`],
/// with its sampled counts and un-sampled estimates.
#[derive(Clone, Debug)]
pub struct Bucket {
    frames: Arc<[Frame]>,
    /// The scope its samples were taken in (one `Arc` per name per
    /// capture).
    scope: Arc<str>,
    /// The thread group that took them.
    thread: Arc<str>,
    /// The folded form of `frames`, computed once per distinct stack.
    key: Arc<str>,
    locations: Arc<[Arc<Location>]>,
    size: u64,
    sampled_allocs: u64,
    sampled_frees: u64,
    estimates: [u64; 4],
    /// The ages of its live samples at capture (nanoseconds), oldest
    /// first; each carries an equal share of the in-use estimates.
    live: Arc<[u64]>,
    lifetimes: Lifetimes,
}

impl Bucket {
    /// The symbolised stack, **leaf first**: `frames()[0]` is the innermost
    /// function that allocated (allocscope's own frames and the allocator
    /// shims already removed; in a profile captured with
    /// [`Frames::Trimmed`], the default, std's allocation machinery too, so
    /// that `frames()[0]` is the user's function that asked for the
    /// memory), the last frame is the thread's entry point.
    /// Inlined functions appear as frames of their own
    /// ([`Frame::is_inlined`]). Empty when nothing could be captured.
    pub fn frames(&self) -> &[Frame] {
        &self.frames
    }

    /// The [scope](crate::scope) its samples were taken in: `unscoped`
    /// outside any, `other` past the bound on names, `allocscope` for the
    /// exporter's own work.
    pub fn scope(&self) -> &str {
        &self.scope
    }

    /// The [thread group](crate::threads) of the threads that allocated
    /// its samples (`request-worker` for `request-worker-1`; `main`,
    /// `unnamed` or `other`).
    pub fn thread(&self) -> &str {
        &self.thread
    }

    /// The requested size of each object in this bucket, in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Allocations the sampler recorded in this bucket.
    pub fn sampled_allocs(&self) -> u64 {
        self.sampled_allocs
    }

    /// Of the recorded allocations, how many are still live.
    pub fn sampled_inuse(&self) -> u64 {
        self.sampled_allocs - self.sampled_frees
    }

    /// The un-sampled estimate of `t` for this bucket (see the module docs).
    pub fn estimate(&self, t: SampleType) -> u64 {
        self.estimates[t as usize]
    }

    /// The folded-stack key: frame names root first, `;`-separated.
    fn folded_key(&self) -> &str {
        &self.key
    }
}

/// A heap profile: what the sampler recorded, symbolised and scaled to
/// estimates of the whole heap.
///
/// ```
/// # #[cfg(feature = "profile")] {
/// let p = allocscope::profile::HeapProfile::capture();
/// let folded = p.folded(allocscope::profile::SampleType::InuseSpace);
/// let pprof = p.to_pprof(allocscope::profile::PprofKind::Heap); // for `go tool pprof`
/// # let _ = (folded, pprof);
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct HeapProfile {
    buckets: Vec<Bucket>,
    interval: u64,
    captured_at: SystemTime,
    symbols: Symbols,
    frames: Frames,
}

impl HeapProfile {
    /// Captures the sampler's current buckets and symbolises them with
    /// function names ([`Symbols::Names`]: no files or lines).
    ///
    /// Costs a copy of the sampler's buckets (never blocking the allocating
    /// threads) and, for addresses not seen before, a look-up in the symbol
    /// table (built once per loaded object, the first time) and in the debug
    /// info for inlined functions. Symbols are cached (see
    /// [`symbol_cache_len`]). What it costs: docs/measurements.md,
    /// "Capturing a profile".
    pub fn capture() -> HeapProfile {
        HeapProfile::capture_with(Symbols::Names)
    }

    /// Captures the sampler's current buckets, symbolised as `symbols`
    /// says: [`Symbols::Lines`] adds the source file and line of every
    /// frame (read from the debug info's line tables for each new address;
    /// the exporter's `?lines=1`).
    ///
    /// ```
    /// # #[cfg(feature = "profile")] {
    /// use allocscope::profile::{HeapProfile, Symbols};
    /// let p = HeapProfile::capture_with(Symbols::Lines);
    /// for f in p.buckets().iter().flat_map(|b| b.frames()) {
    ///     let _ = (f.name(), f.file(), f.line());
    /// }
    /// # }
    /// ```
    pub fn capture_with(symbols: Symbols) -> HeapProfile {
        HeapProfile::capture_frames(symbols, Frames::Trimmed)
    }

    /// Captures the sampler's current buckets, symbolised as `symbols`
    /// says, keeping the frames `frames` says: [`Frames::Trimmed`] (what
    /// [`capture`](Self::capture) and [`capture_with`](Self::capture_with)
    /// do) drops std's allocation machinery from the leaf end of every
    /// stack, [`Frames::Raw`] keeps it (the exporter's `raw=1`).
    ///
    /// ```
    /// # #[cfg(feature = "profile")] {
    /// use allocscope::profile::{Frames, HeapProfile, Symbols};
    /// let raw = HeapProfile::capture_frames(Symbols::Names, Frames::Raw);
    /// assert_eq!(raw.frames(), Frames::Raw);
    /// # }
    /// ```
    pub fn capture_frames(symbols: Symbols, frames: Frames) -> HeapProfile {
        let interval = crate::sampling::current_interval_for_profile();
        HeapProfile::from_raw_frames(crate::sampling::raw_buckets(), interval, symbols, frames)
    }

    /// Builds a profile from raw sampler buckets. `current_interval` is the
    /// sampling interval in force now (the pprof `period`); each raw bucket
    /// is scaled with its own interval.
    #[cfg(any(test, feature = "test-util"))]
    pub(crate) fn from_raw(
        raw: Vec<RawBucket>,
        current_interval: u64,
        symbols: Symbols,
    ) -> HeapProfile {
        HeapProfile::from_raw_frames(raw, current_interval, symbols, Frames::Trimmed)
    }

    /// [`from_raw`](Self::from_raw), keeping the frames `frames` says.
    pub(crate) fn from_raw_frames(
        raw: Vec<RawBucket>,
        current_interval: u64,
        symbols: Symbols,
        frames: Frames,
    ) -> HeapProfile {
        let captured_at = SystemTime::now();
        let addrs: HashSet<usize> = raw.iter().flat_map(|b| b.stack.iter().copied()).collect();
        let resolved = symbolize::resolve_many(addrs, symbols);

        #[derive(Default)]
        struct Acc {
            allocs: u64,
            frees: u64,
            est: [f64; 4],
            live: Vec<u64>,
            lifetimes: Lifetimes,
        }
        use symbolize::FrameKey;
        /// One symbolised stack, shared by every bucket of its raw stacks.
        struct Stack {
            locations: Arc<[Arc<Location>]>,
            frames: Arc<[Frame]>,
            key: Arc<str>,
        }
        // Symbolise each distinct raw stack once (a stack typically has
        // many buckets: one per object size), then merge raw stacks that
        // symbolise alike.
        let mut stacks: Vec<Stack> = Vec::new();
        let mut by_symbols: HashMap<Vec<FrameKey>, usize> = HashMap::new();
        let mut by_raw: HashMap<Vec<usize>, usize> = HashMap::new();
        let mut groups: HashMap<(usize, u64, usize, usize), Acc> = HashMap::new();
        let mut labels = LabelNames::default();
        for rb in raw {
            if rb.allocs == 0 {
                continue;
            }
            let scope = labels.scope(rb.scope);
            let thread = labels.thread(rb.thread);
            let id = match by_raw.get(&rb.stack) {
                Some(&id) => id,
                None => {
                    // A null return address ends some unwinds: not a frame.
                    let locs: Vec<Arc<Location>> = rb
                        .stack
                        .iter()
                        .filter(|a| **a != 0)
                        .filter_map(|a| resolved.get(a).cloned())
                        .collect();
                    let locs = machinery::trim(symbolize::trim_leaf(&locs), frames);
                    let key: Vec<FrameKey> = locs
                        .iter()
                        .flat_map(|l| l.frames.iter())
                        .map(Frame::key)
                        .collect();
                    let id = *by_symbols.entry(key).or_insert_with(|| {
                        let frames: Arc<[Frame]> =
                            locs.iter().flat_map(|l| l.frames.iter().cloned()).collect();
                        stacks.push(Stack {
                            key: folded::stack_key(&frames, Symbols::Names).into(),
                            frames,
                            locations: locs.into(),
                        });
                        stacks.len() - 1
                    });
                    by_raw.insert(rb.stack.clone(), id);
                    id
                }
            };
            let frees = rb.frees.min(rb.allocs);
            let inuse = rb.allocs - frees;
            let (ao, asp) = scale_heap_sample(rb.allocs, rb.size, rb.interval);
            let (io, isp) = scale_heap_sample(inuse, rb.size, rb.interval);
            let acc = groups.entry((id, rb.size, scope, thread)).or_default();
            acc.allocs = acc.allocs.saturating_add(rb.allocs);
            acc.frees = acc.frees.saturating_add(frees);
            for (e, v) in acc.est.iter_mut().zip([ao, asp, io, isp]) {
                *e += v;
            }
            acc.lifetimes.merge(rb.lifetimes);
            // Each live sample found carries an equal share of the in-use
            // estimates; blocks counted live whose slots were not read (a
            // race with the capture) count as one sample of age 0.
            if inuse > 0 {
                if rb.ages.is_empty() {
                    acc.live.push(0);
                } else if acc.live.is_empty() {
                    acc.live = rb.ages;
                } else {
                    acc.live.extend_from_slice(&rb.ages);
                }
            }
        }

        let mut buckets: Vec<Bucket> = groups
            .into_iter()
            .map(|((id, size, scope, thread), mut acc)| {
                let st = &stacks[id];
                acc.live.sort_unstable_by(|a, b| b.cmp(a));
                Bucket {
                    frames: st.frames.clone(),
                    scope: labels.names[scope].clone(),
                    thread: labels.names[thread].clone(),
                    key: st.key.clone(),
                    locations: st.locations.clone(),
                    size,
                    sampled_allocs: acc.allocs,
                    sampled_frees: acc.frees,
                    // `as` truncates like Go's int64(float64), saturating.
                    estimates: acc.est.map(|v| v as u64),
                    live: acc.live.into(),
                    lifetimes: acc.lifetimes,
                }
            })
            .collect();
        sort_buckets(&mut buckets);
        let (table_bytes, objects) = symtab::footprint();
        log::debug!(
            "allocscope: heap profile with {} buckets, {} cached symbols, symbol tables of {} \
             objects in {} bytes",
            buckets.len(),
            symbol_cache_len(),
            objects,
            table_bytes
        );
        HeapProfile {
            buckets,
            interval: current_interval,
            captured_at,
            symbols,
            frames,
        }
    }

    /// Every bucket, largest in-use bytes first.
    pub fn buckets(&self) -> &[Bucket] {
        &self.buckets
    }

    /// The profile restricted to the samples taken in the scope named
    /// `name` ([`Bucket::scope`]): every format follows (the exporter's
    /// `scope=NAME`). A name no bucket has gives an empty profile.
    ///
    /// ```
    /// # #[cfg(feature = "profile")] {
    /// use allocscope::profile::{HeapProfile, SampleType};
    /// let checkout = HeapProfile::capture().scope("checkout");
    /// assert!(checkout.buckets().iter().all(|b| b.scope() == "checkout"));
    /// let _ = checkout.folded(SampleType::InuseSpace);
    /// # }
    /// ```
    pub fn scope(&self, name: &str) -> HeapProfile {
        self.retain(|b| b.scope() == name)
    }

    /// The profile restricted to the samples taken by the thread group
    /// named `name` ([`Bucket::thread`]; a thread's own name selects its
    /// group: `request-worker-1` is `request-worker`, see
    /// [`threads::group_name`](crate::threads::group_name)). Every format
    /// follows (the exporter's `thread=NAME`). A name no bucket has gives
    /// an empty profile.
    pub fn thread(&self, name: &str) -> HeapProfile {
        // (the empty name is no thread's: not `unnamed`)
        let group = if name.is_empty() {
            name
        } else {
            crate::threads::group_name(name)
        };
        self.retain(|b| b.thread() == name || b.thread() == group)
    }

    /// The profile with the buckets `keep` says, as they are.
    fn retain(&self, keep: impl Fn(&Bucket) -> bool) -> HeapProfile {
        HeapProfile {
            buckets: self.buckets.iter().filter(|b| keep(b)).cloned().collect(),
            interval: self.interval,
            captured_at: self.captured_at,
            symbols: self.symbols,
            frames: self.frames,
        }
    }

    /// The sum of `t`'s estimates over all buckets.
    pub fn total(&self, t: SampleType) -> u64 {
        self.buckets
            .iter()
            .fold(0u64, |s, b| s.saturating_add(b.estimate(t)))
    }

    /// The sampling interval in force when the profile was captured, in
    /// bytes (1: every allocation recorded).
    pub fn interval(&self) -> u64 {
        self.interval
    }

    /// When the profile was captured.
    pub fn captured_at(&self) -> SystemTime {
        self.captured_at
    }

    /// What its frames say: names alone, or files and lines too.
    pub fn symbols(&self) -> Symbols {
        self.symbols
    }

    /// Whether std's allocation machinery was trimmed from its stacks.
    pub fn frames(&self) -> Frames {
        self.frames
    }

    /// Whether no sampled allocation is in the profile.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// Estimated values per folded stack (all sizes merged), for every
    /// stack in the profile; the keys are the buckets' own.
    fn stack_values(&self) -> BTreeMap<&str, [u64; 4]> {
        let mut m: BTreeMap<&str, [u64; 4]> = BTreeMap::new();
        for b in &self.buckets {
            let e = m.entry(b.folded_key()).or_default();
            for (v, add) in e.iter_mut().zip(b.estimates) {
                *v = v.saturating_add(add);
            }
        }
        m
    }

    /// What the flamegraph title says about the sampling.
    fn sampling_note(&self) -> String {
        sampling_note(self.interval)
    }
}

fn sort_buckets(buckets: &mut [Bucket]) {
    buckets.sort_by(|a, b| {
        let k = |b: &Bucket| {
            (
                std::cmp::Reverse(b.estimate(SampleType::InuseSpace)),
                std::cmp::Reverse(b.estimate(SampleType::AllocSpace)),
            )
        };
        k(a).cmp(&k(b))
            .then_with(|| a.folded_key().cmp(b.folded_key()))
            .then(a.size.cmp(&b.size))
            .then_with(|| a.scope.cmp(&b.scope))
            .then_with(|| a.thread.cmp(&b.thread))
    });
}

/// The scope and thread group names of one capture, each name one `Arc`
/// (buckets share them), looked up once per id.
#[derive(Default)]
struct LabelNames {
    names: Vec<Arc<str>>,
    by_name: HashMap<Arc<str>, usize>,
    scopes: HashMap<u32, usize>,
    threads: HashMap<u32, usize>,
}

impl LabelNames {
    fn intern(&mut self, name: &str) -> usize {
        if let Some(&i) = self.by_name.get(name) {
            return i;
        }
        let a: Arc<str> = Arc::from(name);
        self.names.push(a.clone());
        self.by_name.insert(a, self.names.len() - 1);
        self.names.len() - 1
    }

    /// The index of the name of scope `id`.
    fn scope(&mut self, id: u32) -> usize {
        if let Some(&i) = self.scopes.get(&id) {
            return i;
        }
        let i = self.intern(crate::scope::name_of(id));
        self.scopes.insert(id, i);
        i
    }

    /// The index of the name of thread group `id`.
    fn thread(&mut self, id: u32) -> usize {
        if let Some(&i) = self.threads.get(&id) {
            return i;
        }
        let i = self.intern(&crate::threads::name_of(id));
        self.threads.insert(id, i);
        i
    }
}

/// "sampled every 512 KiB" / "every allocation recorded".
pub(crate) fn sampling_note(interval: u64) -> String {
    if interval <= 1 {
        "every allocation recorded".to_string()
    } else {
        format!("sampled every {}", human_bytes(interval))
    }
}

/// Exact binary units when they fit, bytes otherwise: `512 KiB`, `1000 B`.
pub(crate) fn human_bytes(n: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (1 << 40, "TiB"),
        (1 << 30, "GiB"),
        (1 << 20, "MiB"),
        (1 << 10, "KiB"),
    ];
    for (u, name) in UNITS {
        if n >= u && n.is_multiple_of(u) {
            return format!("{} {name}", n / u);
        }
    }
    format!("{n} B")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A profile built from synthetic locations (no symbolisation), so that
    /// unit tests control every name. Stacks are given root first.
    pub(crate) fn synthetic(interval: u64, entries: &[(&[&str], u64, u64, u64)]) -> HeapProfile {
        let labelled: Vec<_> = entries
            .iter()
            .map(|&(stack, size, allocs, frees)| (stack, size, allocs, frees, "unscoped", "main"))
            .collect();
        synthetic_labelled(interval, &labelled)
    }

    /// [`synthetic`], each entry with its scope and thread group.
    #[allow(clippy::type_complexity)]
    pub(crate) fn synthetic_labelled(
        interval: u64,
        entries: &[(&[&str], u64, u64, u64, &str, &str)],
    ) -> HeapProfile {
        let mut buckets = Vec::new();
        for (stack, size, allocs, frees, scope, thread) in entries {
            let locations: Vec<Arc<Location>> = stack
                .iter()
                .rev()
                .enumerate()
                .map(|(i, n)| {
                    Arc::new(Location {
                        address: 0x1000 + i,
                        entry: Some(0x1000),
                        frames: Box::new([Frame::synthetic(n, 0x1000 + i, false)]),
                    })
                })
                .collect();
            let frames: Arc<[Frame]> = locations
                .iter()
                .flat_map(|l| l.frames.iter().cloned())
                .collect();
            let (ao, asp) = scale_heap_sample(*allocs, *size, interval);
            let (io, isp) = scale_heap_sample(allocs - frees, *size, interval);
            buckets.push(Bucket {
                key: folded::stack_key(&frames, Symbols::Names).into(),
                frames,
                scope: Arc::from(*scope),
                thread: Arc::from(*thread),
                locations: locations.into(),
                size: *size,
                sampled_allocs: *allocs,
                sampled_frees: *frees,
                estimates: [ao, asp, io, isp].map(|v| v as u64),
                live: if allocs > frees {
                    Arc::from([0])
                } else {
                    Arc::from([])
                },
                lifetimes: Lifetimes::default(),
            });
        }
        sort_buckets(&mut buckets);
        HeapProfile {
            buckets,
            interval,
            captured_at: SystemTime::now(),
            symbols: Symbols::Names,
            frames: Frames::Raw,
        }
    }

    #[test]
    fn sample_type_names_round_trip() {
        for t in SampleType::ALL {
            assert_eq!(t.name().parse::<SampleType>().unwrap(), t);
            assert_eq!(t.to_string(), t.name());
        }
        assert_eq!(
            SampleType::ALL.map(SampleType::name),
            [
                "alloc_objects",
                "alloc_space",
                "inuse_objects",
                "inuse_space"
            ]
        );
        let e = "inuse".parse::<SampleType>().unwrap_err();
        assert!(matches!(e, crate::Error::InvalidArgument { .. }));
        assert!(e.to_string().contains("inuse_space"), "{e}");
    }

    #[test]
    fn scaling_matches_go() {
        // Go: scale = 1 / (1 - exp(-avg / rate)); int64(count * scale).
        let (o, b) = scale_heap_sample(10, 1024, 512 * 1024);
        let scale = 1.0 / (1.0 - (-1024.0f64 / 524288.0).exp());
        assert_eq!(o as u64, (10.0 * scale) as u64);
        assert_eq!(b as u64, (10240.0 * scale) as u64);
        assert_eq!(o as u64, 5125); // ~ 512.5 x
                                    // objects as large as the interval: 1 / (1 - 1/e) ~ 1.582
        let (o, _) = scale_heap_sample(1000, 4096, 4096);
        assert_eq!(o as u64, 1581);
        assert_eq!(scale_heap_sample(3, 100, 1), (3.0, 300.0));
        assert_eq!(scale_heap_sample(3, 100, 0), (3.0, 300.0));
        assert_eq!(scale_heap_sample(0, 100, 512), (0.0, 0.0));
        assert_eq!(scale_heap_sample(5, 0, 512), (0.0, 0.0));
        // Huge values saturate instead of overflowing.
        let (o, b) = scale_heap_sample(u64::MAX, u64::MAX, 2);
        assert_eq!(o as u64, u64::MAX);
        assert_eq!(b as u64, u64::MAX);
    }

    #[test]
    fn from_raw_merges_equal_stacks_and_scales_per_interval() {
        // Unresolvable addresses give `0x…` frames: equal stacks merge.
        let raw = vec![
            RawBucket {
                stack: vec![0x10, 0x20],
                size: 64,
                interval: 1024,
                allocs: 4,
                frees: 1,
                ..RawBucket::default()
            },
            RawBucket {
                stack: vec![0x10, 0x20],
                size: 64,
                interval: 1024,
                allocs: 6,
                frees: 2,
                ..RawBucket::default()
            },
            RawBucket {
                stack: vec![0x10, 0x20],
                size: 64,
                interval: 1,
                allocs: 5,
                frees: 5,
                ..RawBucket::default()
            },
            RawBucket {
                stack: vec![0x10, 0x20],
                size: 128,
                interval: 1024,
                allocs: 1,
                frees: 9,
                ..RawBucket::default()
            },
            RawBucket {
                stack: vec![0x30],
                size: 8,
                interval: 1024,
                allocs: 0,
                frees: 0,
                ..RawBucket::default()
            },
        ];
        let p = HeapProfile::from_raw(raw, 2048, Symbols::Names);
        assert_eq!(p.interval(), 2048);
        assert_eq!(p.buckets().len(), 2);
        let b64 = p.buckets().iter().find(|b| b.size() == 64).unwrap();
        assert_eq!(b64.sampled_allocs(), 15);
        assert_eq!(b64.sampled_inuse(), 7);
        let s = 1.0 / (1.0 - (-64.0f64 / 1024.0).exp());
        assert_eq!(
            b64.estimate(SampleType::AllocObjects),
            (10.0 * s + 5.0) as u64
        );
        assert_eq!(
            b64.estimate(SampleType::AllocSpace),
            (640.0 * s + 320.0) as u64
        );
        assert_eq!(b64.estimate(SampleType::InuseObjects), (7.0 * s) as u64);
        assert_eq!(b64.estimate(SampleType::InuseSpace), (448.0 * s) as u64);
        let names: Vec<&str> = b64.frames().iter().map(Frame::name).collect();
        assert_eq!(names, ["0x10", "0x20"]);
        // frees > allocs is clamped: nothing in use.
        let b128 = p.buckets().iter().find(|b| b.size() == 128).unwrap();
        assert_eq!(b128.sampled_inuse(), 0);
        assert_eq!(b128.estimate(SampleType::InuseSpace), 0);
        assert_eq!(
            p.total(SampleType::AllocObjects),
            b64.estimate(SampleType::AllocObjects) + b128.estimate(SampleType::AllocObjects)
        );
        // Largest in-use first.
        assert_eq!(p.buckets()[0].size(), 64);
    }

    #[test]
    fn labels_keep_buckets_apart_and_filter() {
        let rb = |scope: u32, thread: u32, allocs: u64| RawBucket {
            stack: vec![0x10, 0x20],
            size: 64,
            interval: 1,
            allocs,
            scope,
            thread,
            ..RawBucket::default()
        };
        // thread group ids 32 (the bound), 40 and 99 are all `other`: one
        // name, one bucket
        let raw = vec![rb(0, 32, 1), rb(2, 32, 2), rb(2, 40, 4), rb(0, 99, 8)];
        let p = HeapProfile::from_raw(raw, 1, Symbols::Names);
        let by: Vec<(&str, &str, u64)> = p
            .buckets()
            .iter()
            .map(|b| (b.scope(), b.thread(), b.sampled_allocs()))
            .collect();
        assert_eq!(by, [("unscoped", "other", 9), ("allocscope", "other", 6)]);
        // names are shared within a capture
        assert!(Arc::ptr_eq(&p.buckets()[0].thread, &p.buckets()[1].thread));
        // views by stack add the labels up
        assert_eq!(p.folded(SampleType::AllocObjects), "0x20;0x10 15\n");
        assert_eq!(p.temporary_stacks(std::time::Duration::MAX, 5).len(), 0);
        // filters
        let a = p.scope("allocscope");
        assert_eq!(a.buckets().len(), 1);
        assert_eq!(a.total(SampleType::AllocObjects), 6);
        assert_eq!(a.interval(), p.interval());
        assert!(p.scope("checkout").is_empty());
        assert!(p.scope("").is_empty());
        assert_eq!(p.thread("other").buckets().len(), 2);
        // a thread's own name selects its group
        assert_eq!(p.thread("other-3").buckets().len(), 2);
        assert!(p.thread("").is_empty());
        assert!(p.thread("main").is_empty());
        assert_eq!(
            p.scope("unscoped")
                .thread("other")
                .total(SampleType::AllocObjects),
            9
        );
        assert!(p.scope("unscoped").thread("nope").is_empty());
        // filters compose with the other views and formats
        assert!(p
            .scope("allocscope")
            .min_age(std::time::Duration::ZERO)
            .buckets()[0]
            .scope()
            .eq("allocscope"));
        let _ = p.scope("\u{0}").to_pprof(PprofKind::Heap);
    }

    #[test]
    fn empty_and_degenerate_input_never_panics() {
        let p = HeapProfile::from_raw(Vec::new(), 0, Symbols::Names);
        assert!(p.is_empty());
        assert_eq!(p.total(SampleType::InuseSpace), 0);
        let p = HeapProfile::from_raw(
            vec![RawBucket {
                stack: vec![],
                size: u64::MAX,
                interval: 0,
                allocs: u64::MAX,
                frees: 0,
                ages: vec![u64::MAX, 0, 1],
                lifetimes: Some(Box::new([u32::MAX; crate::sampling::LIFETIME_CLASSES])),
                scope: u32::MAX,
                thread: u32::MAX,
            }],
            u64::MAX,
            Symbols::Lines,
        );
        assert_eq!(p.buckets().len(), 1);
        assert!(p.buckets()[0].frames().is_empty());
        assert_eq!(p.total(SampleType::AllocSpace), u64::MAX);
        let _ = p.folded(SampleType::AllocSpace);
        let _ = p.to_pprof(PprofKind::Heap);
        let _ = p.to_text(PprofKind::Heap);
        let _ = p
            .min_age(std::time::Duration::MAX)
            .to_pprof(PprofKind::Heap);
        let _ = p
            .min_age(std::time::Duration::ZERO)
            .to_pprof(PprofKind::Allocs);
        let _ = p
            .short_lived(std::time::Duration::MAX)
            .folded(SampleType::AllocSpace);
        let _ = p.temporary_stacks(std::time::Duration::from_nanos(1), 5);
        let mut svg = Vec::new();
        p.flamegraph(
            SampleType::AllocSpace,
            &FlamegraphOptions::default(),
            &mut svg,
        )
        .unwrap();
    }

    #[test]
    fn profiles_can_cross_threads() {
        fn check<T: Send + Sync + 'static>() {}
        check::<HeapProfile>();
        check::<HeapDiff>();
        check::<Bucket>();
        assert_eq!(
            PprofKind::Heap.default_sample_type(),
            SampleType::InuseSpace
        );
        assert_eq!(
            PprofKind::Allocs.default_sample_type(),
            SampleType::AllocSpace
        );
    }

    #[test]
    fn human_units() {
        assert_eq!(human_bytes(512 * 1024), "512 KiB");
        assert_eq!(human_bytes(1 << 20), "1 MiB");
        assert_eq!(human_bytes(1000), "1000 B");
        assert_eq!(human_bytes(1536), "1536 B");
        assert_eq!(sampling_note(1), "every allocation recorded");
        assert_eq!(sampling_note(4096), "sampled every 4 KiB");
    }
}
