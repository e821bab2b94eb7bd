//! `/metrics`: the Prometheus view of allocscope.
//!
//! Owns the metric names, their help texts and the [`HeapCollector`], which
//! takes ONE snapshot of each source per scrape ([`crate::stats`],
//! [`crate::sampling::stats`], [`crate::counters::info`], [`crate::scope::stats`],
//! [`crate::threads::stats`]) so that every figure of a
//! scrape comes from the same moment. A section that fails is left out and
//! counted in `allocscope_exporter_scrape_errors_total`: a scrape returns
//! partial data rather than none, never an error.
//!
//! Extension point: a later metrics source adds a field to [`Snapshot`],
//! its rows to [`METRICS`] and a section to `SECTIONS` (as the collector's
//! [`crate::gc::Stats`] did).

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{
    Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType,
};
use prometheus::{Encoder, Registry, TextEncoder};

use crate::gc::{ContainerMemory, CycleReason, LimitSource, Stats as CollectionStats};
use crate::sampling::Stats as SamplerStats;
use crate::{counters, Stats};

/// The Content-Type of `/metrics` answers.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

use MetricType::{COUNTER, GAUGE, HISTOGRAM};

/// One metric family, declared once: everything that emits it, describes
/// it or documents it takes these from its declaration.
#[derive(Debug)]
pub(crate) struct Def {
    /// The family's name.
    pub(crate) name: &'static str,
    /// Its type.
    pub(crate) kind: MetricType,
    /// Its label names (none for most).
    pub(crate) labels: &'static [&'static str],
    /// Its help text.
    pub(crate) help: &'static str,
}

/// Declares each metric once as a constant, and [`METRICS`], the list of
/// them all, in the order of the reference (`docs/metrics.md`).
macro_rules! metrics {
    ($($id:ident = $kind:ident $name:literal $([$($label:literal),+])?: $help:literal;)+) => {
        $(
            #[doc = $help]
            const $id: Def = Def {
                name: $name,
                kind: $kind,
                labels: &[$($($label),+)?],
                help: $help,
            };
        )+
        /// Every metric the [`HeapCollector`] exports.
        pub(crate) const METRICS: &[Def] = &[$($id),+];
    };
}

metrics! {
    HEAP_LIVE_BYTES = GAUGE "allocscope_heap_live_bytes":
        "Bytes allocated through the global allocator and not yet freed (requested sizes).";
    HEAP_LIVE_OBJECTS = GAUGE "allocscope_heap_live_objects":
        "Blocks allocated through the global allocator and not yet freed.";
    HEAP_ALLOCATED_BYTES_TOTAL = COUNTER "allocscope_heap_allocated_bytes_total":
        "Bytes requested by successful allocations, the allocation half of reallocations included.";
    HEAP_FREED_BYTES_TOTAL = COUNTER "allocscope_heap_freed_bytes_total":
        "Bytes released by deallocations, the free half of reallocations included.";
    HEAP_ALLOCATIONS_TOTAL = COUNTER "allocscope_heap_allocations_total":
        "Successful allocations, the allocation half of reallocations included.";
    HEAP_DEALLOCATIONS_TOTAL = COUNTER "allocscope_heap_deallocations_total":
        "Deallocations, the free half of reallocations included.";
    HEAP_REALLOCATIONS_TOTAL = COUNTER "allocscope_heap_reallocations_total":
        "Successful reallocations.";
    HEAP_ALLOCATION_FAILURES_TOTAL = COUNTER "allocscope_heap_allocation_failures_total":
        "Allocations and reallocations the inner allocator refused.";
    HEAP_ALLOCATION_SIZE_BYTES = HISTOGRAM "allocscope_heap_allocation_size_bytes":
        "Requested size of every successful allocation (powers of two, or every size class when full_size_classes is set).";
    HEAP_SIZE_CLASS_LIVE_BYTES = GAUGE "allocscope_heap_size_class_live_bytes" ["max_size"]:
        "Live bytes per size class; max_size is the largest size in the class (powers of two, or every size class when full_size_classes is set).";
    SAMPLER_INTERVAL_BYTES = GAUGE "allocscope_sampler_interval_bytes":
        "Mean bytes allocated between heap samples (0 = sampling off).";
    SAMPLER_LIVE_SAMPLES = GAUGE "allocscope_sampler_live_samples":
        "Sampled allocations not yet freed.";
    SAMPLER_SAMPLES_TOTAL = COUNTER "allocscope_sampler_samples_total":
        "Allocations sampled so far.";
    SAMPLER_DROPPED_SAMPLES_TOTAL = COUNTER "allocscope_sampler_dropped_samples_total":
        "Samples not recorded because the sampler was at its memory cap.";
    SAMPLER_STACKS = GAUGE "allocscope_sampler_stacks":
        "Distinct stacks the sampler holds.";
    SAMPLER_BUCKETS = GAUGE "allocscope_sampler_buckets":
        "Distinct (stack, size) buckets the sampler holds.";
    SAMPLER_MEMORY_BYTES = GAUGE "allocscope_sampler_memory_bytes":
        "Memory used by the sampler itself.";
    CORE_BLOCKS = GAUGE "allocscope_core_blocks":
        "Per-thread counter blocks ever created (one per concurrently live thread).";
    CORE_BLOCKS_ATTACHED = GAUGE "allocscope_core_blocks_attached":
        "Counter blocks attached to a live thread.";
    CORE_MEMORY_BYTES = GAUGE "allocscope_core_memory_bytes":
        "Memory used by the counter blocks.";
    COLLECTIONS_TOTAL = COUNTER "allocscope_collections_total" ["reason"]:
        "Collection cycles run, by reason: threshold (live bytes passed the heap goal), limit (passed the memory limit), manual.";
    COLLECTION_DURATION_SECONDS = HISTOGRAM "allocscope_collection_duration_seconds":
        "Duration of collection cycles: reclaimers, release to the OS and measurements.";
    HEAP_GOAL_BYTES = GAUGE "allocscope_heap_goal_bytes":
        "Live bytes at which the next automatic collection cycle runs: the smaller of the threshold's goal and the memory limit (+Inf when neither is set).";
    COLLECTION_THRESHOLD_RATIO = GAUGE "allocscope_collection_threshold_ratio":
        "Collection threshold as a ratio (1 = GOGC 100: collect when the heap doubles); -1 when off.";
    MEMORY_LIMIT_BYTES = GAUGE "allocscope_memory_limit_bytes":
        "Soft limit on live heap bytes (+Inf when off).";
    MEMORY_LIMIT_SOURCE = GAUGE "allocscope_memory_limit_source" ["source"]:
        "Where the soft memory limit comes from: 1 for the source in force (off, manual, or container: memory_limit = auto), 0 for the others.";
    CONTAINER_MEMORY_LIMIT_BYTES = GAUGE "allocscope_container_memory_limit_bytes":
        "Memory limit of the process's cgroup (+Inf when unlimited); absent outside a memory cgroup.";
    CONTAINER_MEMORY_USAGE_BYTES = GAUGE "allocscope_container_memory_usage_bytes":
        "Memory the kernel charges to the process's cgroup, page cache included; absent outside a memory cgroup.";
    MEMORY_LIMIT_EXCEEDED_SECONDS_TOTAL = COUNTER "allocscope_memory_limit_exceeded_seconds_total":
        "Time live bytes spent above the soft memory limit, measured between the collector's checks.";
    MEMORY_LIMIT_BACKOFFS_TOTAL = COUNTER "allocscope_memory_limit_backoffs_total":
        "Times cycles on the memory limit were paused because they could not bring live bytes under it.";
    HEAP_RETAINED_BYTES = GAUGE "allocscope_heap_retained_bytes":
        "Resident memory minus live heap bytes: what the allocator and the rest of the process hold that the program's live blocks do not; absent where resident memory cannot be read.";
    COLLECTION_TIME_SHARE_RATIO = GAUGE "allocscope_collection_time_share_ratio":
        "Share of wall time automatic collection cycles may take (the CPU limiter).";
    COLLECTION_SKIPPED_TRIGGERS_TOTAL = COUNTER "allocscope_collection_skipped_triggers_total":
        "Automatic collection triggers skipped because cycles had used their share of wall time.";
    COLLECTION_RELEASED_BYTES_TOTAL = COUNTER "allocscope_collection_released_bytes_total":
        "Resident memory returned to the OS by collection cycles.";
    COLLECTION_RECLAIMED_BYTES_TOTAL = COUNTER "allocscope_collection_reclaimed_bytes_total":
        "Bytes the registered reclaimers reported freeing in collection cycles.";
    COLLECTION_RECLAIMER_PANICS_TOTAL = COUNTER "allocscope_collection_reclaimer_panics_total":
        "Reclaimer calls that panicked (caught; the cycle went on).";
    COLLECTION_RECLAIMERS = GAUGE "allocscope_collection_reclaimers":
        "Reclaimers registered.";
    COLLECTION_NEAR_LIMIT_PROFILES_TOTAL = COUNTER "allocscope_collection_near_limit_profiles_total":
        "Heap profiles written to near_limit_profile_dir near the memory limit.";
    COLLECTION_POLL_SECONDS_TOTAL = COUNTER "allocscope_collection_poll_seconds_total":
        "Time the collector thread spent checking live bytes against the goal and the limit.";
    SCOPE_ALLOCATIONS_TOTAL = COUNTER "allocscope_scope_allocations_total" ["scope"]:
        "Allocations made in each scope (exact; a reallocation counts as one): the innermost scope entered, unscoped outside any, allocscope for the exporter's own work, other past max_scopes.";
    SCOPE_ALLOCATED_BYTES_TOTAL = COUNTER "allocscope_scope_allocated_bytes_total" ["scope"]:
        "Bytes allocated in each scope (exact; a reallocation counts its new size).";
    SCOPE_INUSE_BYTES = GAUGE "allocscope_scope_inuse_bytes" ["scope"]:
        "Estimated bytes allocated in each scope and not yet freed, from the heap sampler (un-biased as the heap profile; 0 with sampling off).";
    SCOPE_INUSE_OBJECTS = GAUGE "allocscope_scope_inuse_objects" ["scope"]:
        "Estimated objects allocated in each scope and not yet freed, from the heap sampler (0 with sampling off).";
    SCOPE_FOLDED_NAMES_TOTAL = COUNTER "allocscope_scope_folded_names_total":
        "Distinct scope names counted under other because max_scopes names were already in use.";
    SCOPE_REJECTED_NAMES_TOTAL = COUNTER "allocscope_scope_rejected_names_total":
        "Run-time scope names refused as not valid (empty, longer than 64 bytes, control characters) and counted under other.";
    THREAD_ALLOCATIONS_TOTAL = COUNTER "allocscope_thread_allocations_total" ["thread"]:
        "Allocations made by the threads of each thread group (the thread name without trailing digits and separators), exited threads included.";
    THREAD_ALLOCATED_BYTES_TOTAL = COUNTER "allocscope_thread_allocated_bytes_total" ["thread"]:
        "Bytes allocated by the threads of each thread group, exited threads included.";
    THREAD_DEALLOCATIONS_TOTAL = COUNTER "allocscope_thread_deallocations_total" ["thread"]:
        "Frees made by the threads of each thread group, whichever thread allocated the blocks.";
    THREAD_FREED_BYTES_TOTAL = COUNTER "allocscope_thread_freed_bytes_total" ["thread"]:
        "Bytes freed by the threads of each thread group, whichever thread allocated the blocks.";
    LEAK_SUSPECTS = GAUGE "allocscope_leak_suspects":
        "Stacks whose leak score is at least the threshold (2.0): their in-use bytes grow steadily and are kept (GET /debug/leaks); exported by the exporter's /metrics.";
    LEAK_SNAPSHOTS_MEMORY_BYTES = GAUGE "allocscope_leak_snapshots_memory_bytes":
        "Memory used by the leak snapshots' ring (per-stack points, names, report); exported by the exporter's /metrics.";
    EXPORTER_SCRAPE_ERRORS_TOTAL = COUNTER "allocscope_exporter_scrape_errors_total":
        "Metric sections left out of a scrape because reading them failed.";
    BUILD_INFO = GAUGE "allocscope_build_info" ["version", "features"]:
        "Always 1; labels name the allocscope version and its compiled features.";
}

/// What one scrape reads: every source, once.
#[derive(Debug)]
pub struct Snapshot {
    /// The counting core.
    pub stats: Stats,
    /// The heap sampler.
    pub sampler: SamplerStats,
    /// The counting core's own footprint.
    pub core: counters::Info,
    /// The collector: settings and cycle counters.
    pub collection: CollectionStats,
    /// Where the soft memory limit came from.
    pub limit_source: LimitSource,
    /// The container's memory, where the process is in a memory cgroup.
    pub container: Option<ContainerMemory>,
    /// The process's resident memory, where it can be read.
    pub resident_bytes: Option<u64>,
    /// Every scope's counts.
    pub scopes: Vec<crate::scope::ScopeStats>,
    /// The scope registry's state (names folded into `other`).
    pub scope_info: crate::scope::Info,
    /// Every thread group's counts.
    pub threads: Vec<crate::threads::GroupStats>,
}

impl Snapshot {
    /// Reads every source once.
    pub fn take() -> Snapshot {
        Snapshot {
            stats: crate::stats(),
            sampler: crate::sampling::stats(),
            core: crate::counters::info(),
            collection: crate::gc::stats(),
            limit_source: crate::gc::limit_source(),
            container: crate::gc::container_memory(),
            resident_bytes: crate::sys::resident_bytes(),
            scopes: crate::scope::stats(),
            scope_info: crate::scope::info(),
            threads: crate::threads::stats(),
        }
    }
}

type Section = fn(&Snapshot, bool, &mut Vec<MetricFamily>);

/// The parts of a scrape, each of which may fail on its own.
const SECTIONS: &[(&str, Section)] = &[
    ("heap", heap_section),
    ("size classes", size_class_section),
    ("sampler", sampler_section),
    ("counters", counters_section),
    ("collector", collector_section),
    ("memory limit", limit_section),
    ("scopes", scope_section),
    ("thread groups", thread_section),
];

/// A prometheus [`Collector`] for everything allocscope knows. Register it
/// in your own registry, or let the exporter's `/metrics` serve it.
#[derive(Debug)]
pub struct HeapCollector {
    descs: Vec<Desc>,
    full_size_classes: bool,
    errors: Arc<AtomicU64>,
    /// The exporter's leak snapshots, for its `/metrics` only.
    leaks: Option<Arc<super::leaks::Leaks>>,
}

impl HeapCollector {
    /// A collector with power-of-two size buckets, or every size class.
    pub fn new(full_size_classes: bool) -> HeapCollector {
        let descs = METRICS
            .iter()
            .filter_map(|d| {
                let labels = d.labels.iter().map(|l| l.to_string()).collect();
                Desc::new(
                    d.name.to_string(),
                    d.help.to_string(),
                    labels,
                    HashMap::new(),
                )
                .ok()
            })
            .collect();
        HeapCollector {
            descs,
            full_size_classes,
            errors: Arc::new(AtomicU64::new(0)),
            leaks: None,
        }
    }

    /// The families of one scrape from `snap`.
    pub fn families(&self, snap: &Snapshot) -> Vec<MetricFamily> {
        let mut out = Vec::with_capacity(METRICS.len());
        for (name, section) in SECTIONS {
            let mut part = Vec::new();
            match catch_unwind(AssertUnwindSafe(|| {
                section(snap, self.full_size_classes, &mut part)
            })) {
                Ok(()) => out.append(&mut part),
                Err(_) => {
                    self.errors.fetch_add(1, Relaxed);
                    tracing::warn!(target: "allocscope", "metrics section {name} failed; left out of this scrape");
                }
            }
        }
        if let Some(leaks) = &self.leaks {
            let (suspects, memory) = leaks.gauges();
            out.push(gauge(&LEAK_SUSPECTS, suspects as f64));
            out.push(gauge(&LEAK_SNAPSHOTS_MEMORY_BYTES, memory as f64));
        }
        out.push(counter(
            &EXPORTER_SCRAPE_ERRORS_TOTAL,
            self.errors.load(Relaxed) as f64,
        ));
        out.push(build_info());
        out
    }
}

impl Collector for HeapCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        // the exporter's own work: counted under the scope `allocscope`
        crate::scope::ALLOCSCOPE.within(|| self.collect_now())
    }
}

impl HeapCollector {
    fn collect_now(&self) -> Vec<MetricFamily> {
        match catch_unwind(Snapshot::take) {
            Ok(snap) => self.families(&snap),
            Err(_) => {
                self.errors.fetch_add(1, Relaxed);
                vec![counter(
                    &EXPORTER_SCRAPE_ERRORS_TOTAL,
                    self.errors.load(Relaxed) as f64,
                )]
            }
        }
    }
}

/// The `/metrics` registry: the [`HeapCollector`] and, on Linux, the
/// prometheus crate's process metrics (`process_resident_memory_bytes`,
/// `process_threads`, CPU, file descriptors).
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
}

impl Metrics {
    /// A registry with allocscope's collectors in it.
    pub fn new(full_size_classes: bool) -> Metrics {
        Metrics::with_collector(HeapCollector::new(full_size_classes))
    }

    /// The exporter's registry: its collector also exports the leak
    /// snapshots' gauges.
    pub(crate) fn with_leaks(full_size_classes: bool, leaks: Arc<super::leaks::Leaks>) -> Metrics {
        let mut c = HeapCollector::new(full_size_classes);
        c.leaks = Some(leaks);
        Metrics::with_collector(c)
    }

    fn with_collector(collector: HeapCollector) -> Metrics {
        let registry = Registry::new();
        if let Err(e) = registry.register(Box::new(collector)) {
            tracing::warn!(target: "allocscope", "cannot register the heap collector: {e}");
        }
        #[cfg(target_os = "linux")]
        if let Err(e) = registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        )) {
            tracing::warn!(target: "allocscope", "cannot register the process collector: {e}");
        }
        Metrics { registry }
    }

    /// The registry, to add the host's own collectors to `/metrics`.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// One scrape in the Prometheus text format ([`CONTENT_TYPE`]). Never
    /// fails: what could not be encoded is left out and logged.
    pub fn render(&self) -> Vec<u8> {
        crate::scope::ALLOCSCOPE.within(|| self.render_now())
    }

    fn render_now(&self) -> Vec<u8> {
        let families = self.registry.gather();
        let mut buf = Vec::with_capacity(16 * 1024);
        if let Err(e) = TextEncoder::new().encode(&families, &mut buf) {
            tracing::warn!(target: "allocscope", "metrics encoding stopped early: {e}");
        }
        buf
    }
}

fn family(def: &Def, metrics: Vec<Metric>) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(def.name.to_string());
    f.set_help(def.help.to_string());
    f.set_field_type(def.kind);
    f.set_metric(metrics);
    f
}

fn gauge_metric(v: f64, labels: Vec<LabelPair>) -> Metric {
    let mut g = Gauge::default();
    g.set_value(v);
    let mut m = Metric::from_gauge(g);
    m.set_label(labels);
    m
}

fn gauge(def: &Def, v: f64) -> MetricFamily {
    family(def, vec![gauge_metric(v, vec![])])
}

fn counter(def: &Def, v: f64) -> MetricFamily {
    family(def, vec![counter_metric(v, vec![])])
}

fn label(name: &str, value: &str) -> LabelPair {
    let mut l = LabelPair::default();
    l.set_name(name.to_string());
    l.set_value(value.to_string());
    l
}

fn heap_section(s: &Snapshot, _: bool, out: &mut Vec<MetricFamily>) {
    let st = &s.stats;
    out.push(gauge(&HEAP_LIVE_BYTES, st.live_bytes() as f64));
    out.push(gauge(&HEAP_LIVE_OBJECTS, st.live_objects() as f64));
    for (name, v) in [
        (&HEAP_ALLOCATED_BYTES_TOTAL, st.allocated_bytes),
        (&HEAP_FREED_BYTES_TOTAL, st.freed_bytes),
        (&HEAP_ALLOCATIONS_TOTAL, st.allocations),
        (&HEAP_DEALLOCATIONS_TOTAL, st.deallocations),
        (&HEAP_REALLOCATIONS_TOTAL, st.reallocations),
        (&HEAP_ALLOCATION_FAILURES_TOTAL, st.alloc_failures),
    ] {
        out.push(counter(name, v as f64));
    }
}

/// The upper bounds of the exported buckets: every class's `max_size`, or
/// the powers of two from 8 bytes up (which are all class bounds). The last
/// class (`usize::MAX`) is the `+Inf` bucket.
fn bucket_bounds(s: &Stats, full: bool) -> Vec<usize> {
    s.size_classes
        .iter()
        .map(|c| c.max_size)
        .filter(|&m| m != usize::MAX && (full || m.is_power_of_two()))
        .collect()
}

fn size_class_section(s: &Snapshot, full: bool, out: &mut Vec<MetricFamily>) {
    let bounds = bucket_bounds(&s.stats, full);
    // (allocations, live bytes) per exported bucket, the last one +Inf.
    let mut per = vec![(0u64, 0u64); bounds.len() + 1];
    let (mut count, mut sum) = (0u64, 0u64);
    for c in &s.stats.size_classes {
        let i = bounds.partition_point(|&b| b < c.max_size);
        per[i].0 += c.allocations;
        per[i].1 += c.live_bytes();
        count += c.allocations;
        sum = sum.wrapping_add(c.allocated_bytes);
    }
    let mut h = Histogram::default();
    h.set_sample_count(count);
    h.set_sample_sum(sum as f64);
    let mut cumulative = 0;
    let buckets = bounds
        .iter()
        .zip(&per)
        .map(|(&b, &(n, _))| {
            cumulative += n;
            let mut bk = Bucket::default();
            bk.set_upper_bound(b as f64);
            bk.set_cumulative_count(cumulative);
            bk
        })
        .collect();
    h.set_bucket(buckets);
    let mut m = Metric::default();
    m.set_histogram(h);
    out.push(family(&HEAP_ALLOCATION_SIZE_BYTES, vec![m]));
    let live = bounds
        .iter()
        .map(|b| b.to_string())
        .chain(std::iter::once("+Inf".to_string()))
        .zip(&per)
        .map(|(b, &(_, live))| {
            gauge_metric(
                live as f64,
                vec![label(HEAP_SIZE_CLASS_LIVE_BYTES.labels[0], &b)],
            )
        })
        .collect();
    out.push(family(&HEAP_SIZE_CLASS_LIVE_BYTES, live));
}

fn sampler_section(s: &Snapshot, _: bool, out: &mut Vec<MetricFamily>) {
    let sm = &s.sampler;
    out.push(gauge(&SAMPLER_INTERVAL_BYTES, sm.interval as f64));
    out.push(gauge(&SAMPLER_LIVE_SAMPLES, sm.live_samples as f64));
    out.push(counter(&SAMPLER_SAMPLES_TOTAL, sm.samples_total as f64));
    out.push(counter(
        &SAMPLER_DROPPED_SAMPLES_TOTAL,
        sm.dropped_samples as f64,
    ));
    out.push(gauge(&SAMPLER_STACKS, sm.stacks as f64));
    out.push(gauge(&SAMPLER_BUCKETS, sm.buckets as f64));
    out.push(gauge(&SAMPLER_MEMORY_BYTES, sm.memory_bytes as f64));
}

fn counters_section(s: &Snapshot, _: bool, out: &mut Vec<MetricFamily>) {
    out.push(gauge(&CORE_BLOCKS, s.core.blocks as f64));
    out.push(gauge(&CORE_BLOCKS_ATTACHED, s.core.attached_blocks as f64));
    out.push(gauge(&CORE_MEMORY_BYTES, s.core.memory_bytes as f64));
}

fn counter_metric(v: f64, labels: Vec<LabelPair>) -> Metric {
    let mut c = Counter::default();
    c.set_value(v);
    let mut m = Metric::default();
    m.set_counter(c);
    m.set_label(labels);
    m
}

fn collector_section(s: &Snapshot, _: bool, out: &mut Vec<MetricFamily>) {
    let c = &s.collection;
    let by_reason = CycleReason::ALL
        .iter()
        .map(|r| {
            counter_metric(
                c.cycles_for(*r) as f64,
                vec![label(COLLECTIONS_TOTAL.labels[0], r.as_str())],
            )
        })
        .collect();
    out.push(family(&COLLECTIONS_TOTAL, by_reason));

    let mut h = Histogram::default();
    h.set_sample_count(c.cycles());
    h.set_sample_sum(c.total_duration.as_secs_f64());
    let mut cumulative = 0;
    let buckets = crate::gc::DURATION_BUCKETS
        .iter()
        .zip(&c.duration_buckets)
        .map(|(&bound, &n)| {
            cumulative += n;
            let mut b = Bucket::default();
            b.set_upper_bound(bound);
            b.set_cumulative_count(cumulative);
            b
        })
        .collect();
    h.set_bucket(buckets);
    let mut m = Metric::default();
    m.set_histogram(h);
    out.push(family(&COLLECTION_DURATION_SECONDS, vec![m]));

    let inf_if_max = |v: u64| {
        if v == u64::MAX {
            f64::INFINITY
        } else {
            v as f64
        }
    };
    out.push(gauge(&HEAP_GOAL_BYTES, inf_if_max(c.heap_goal)));
    out.push(gauge(
        &COLLECTION_THRESHOLD_RATIO,
        c.threshold.map_or(-1.0, |t| f64::from(t) / 100.0),
    ));
    out.push(gauge(
        &MEMORY_LIMIT_BYTES,
        c.memory_limit.map_or(f64::INFINITY, |l| l as f64),
    ));
    out.push(gauge(&COLLECTION_TIME_SHARE_RATIO, c.time_share));
    for (name, v) in [
        (
            &COLLECTION_SKIPPED_TRIGGERS_TOTAL,
            c.skipped_triggers as f64,
        ),
        (&COLLECTION_RELEASED_BYTES_TOTAL, c.released_bytes as f64),
        (&COLLECTION_RECLAIMED_BYTES_TOTAL, c.reclaimed_bytes as f64),
        (
            &COLLECTION_RECLAIMER_PANICS_TOTAL,
            c.reclaimer_panics as f64,
        ),
        (
            &COLLECTION_NEAR_LIMIT_PROFILES_TOTAL,
            c.near_limit_profiles as f64,
        ),
        (&COLLECTION_POLL_SECONDS_TOTAL, c.poll_time.as_secs_f64()),
    ] {
        out.push(counter(name, v));
    }
    out.push(gauge(&COLLECTION_RECLAIMERS, c.reclaimers as f64));
}

fn limit_section(s: &Snapshot, _: bool, out: &mut Vec<MetricFamily>) {
    let now = s.limit_source.as_str();
    let sources = ["off", "manual", "container"]
        .iter()
        .map(|src| {
            let v = if *src == now { 1.0 } else { 0.0 };
            gauge_metric(v, vec![label(MEMORY_LIMIT_SOURCE.labels[0], src)])
        })
        .collect();
    out.push(family(&MEMORY_LIMIT_SOURCE, sources));
    if let Some(c) = &s.container {
        out.push(gauge(
            &CONTAINER_MEMORY_LIMIT_BYTES,
            c.limit_bytes.map_or(f64::INFINITY, |l| l as f64),
        ));
        if let Some(u) = c.usage_bytes {
            out.push(gauge(&CONTAINER_MEMORY_USAGE_BYTES, u as f64));
        }
    }
    out.push(counter(
        &MEMORY_LIMIT_EXCEEDED_SECONDS_TOTAL,
        s.collection.limit_exceeded.as_secs_f64(),
    ));
    out.push(counter(
        &MEMORY_LIMIT_BACKOFFS_TOTAL,
        s.collection.limit_backoffs as f64,
    ));
    if let Some(rss) = s.resident_bytes {
        let retained = rss.saturating_sub(s.stats.live_bytes());
        out.push(gauge(&HEAP_RETAINED_BYTES, retained as f64));
    }
}

/// One series per name, in the order first seen: values of a name seen
/// twice are added (names are unique in both sources; this keeps a scrape
/// valid should that ever change).
fn by_name<'a, const N: usize>(
    rows: impl Iterator<Item = (&'a str, [u64; N])>,
) -> Vec<(&'a str, [u64; N])> {
    let mut out: Vec<(&str, [u64; N])> = Vec::new();
    for (name, v) in rows {
        match out.iter_mut().find(|(n, _)| *n == name) {
            Some((_, acc)) => {
                for (a, x) in acc.iter_mut().zip(v) {
                    *a = a.wrapping_add(x);
                }
            }
            None => out.push((name, v)),
        }
    }
    out
}

/// The families of labelled rows: `defs[i]` takes value `i` of each row,
/// as a counter or a gauge as declared.
fn labelled<const N: usize>(
    defs: [&Def; N],
    rows: &[(&str, [u64; N])],
    out: &mut Vec<MetricFamily>,
) {
    if rows.is_empty() {
        // a family without series is not valid text format
        return;
    }
    for (i, def) in defs.into_iter().enumerate() {
        let metrics = rows
            .iter()
            .map(|(name, v)| {
                let labels = vec![label(def.labels[0], name)];
                if def.kind == COUNTER {
                    counter_metric(v[i] as f64, labels)
                } else {
                    gauge_metric(v[i] as f64, labels)
                }
            })
            .collect();
        out.push(family(def, metrics));
    }
}

fn scope_section(s: &Snapshot, _: bool, out: &mut Vec<MetricFamily>) {
    let rows = by_name(s.scopes.iter().map(|sc| {
        (
            sc.name,
            [
                sc.allocations,
                sc.allocated_bytes,
                sc.inuse_bytes,
                sc.inuse_objects,
            ],
        )
    }));
    labelled(
        [
            &SCOPE_ALLOCATIONS_TOTAL,
            &SCOPE_ALLOCATED_BYTES_TOTAL,
            &SCOPE_INUSE_BYTES,
            &SCOPE_INUSE_OBJECTS,
        ],
        &rows,
        out,
    );
    out.push(counter(
        &SCOPE_FOLDED_NAMES_TOTAL,
        s.scope_info.folded_names as f64,
    ));
    out.push(counter(
        &SCOPE_REJECTED_NAMES_TOTAL,
        s.scope_info.rejected_names as f64,
    ));
}

fn thread_section(s: &Snapshot, _: bool, out: &mut Vec<MetricFamily>) {
    let rows = by_name(s.threads.iter().map(|g| {
        (
            g.name.as_str(),
            [
                g.allocations,
                g.allocated_bytes,
                g.deallocations,
                g.freed_bytes,
            ],
        )
    }));
    labelled(
        [
            &THREAD_ALLOCATIONS_TOTAL,
            &THREAD_ALLOCATED_BYTES_TOTAL,
            &THREAD_DEALLOCATIONS_TOTAL,
            &THREAD_FREED_BYTES_TOTAL,
        ],
        &rows,
        out,
    );
}

/// Families a scrape leaves out where their source cannot be read here.
#[cfg(test)]
const OPTIONAL: &[&str] = &[
    "allocscope_leak_suspects",
    "allocscope_leak_snapshots_memory_bytes",
    "allocscope_heap_retained_bytes",
    "allocscope_container_memory_limit_bytes",
    "allocscope_container_memory_usage_bytes",
    // no thread group has counts without allocscope as the global
    // allocator (as in these unit tests)
    "allocscope_thread_allocations_total",
    "allocscope_thread_allocated_bytes_total",
    "allocscope_thread_deallocations_total",
    "allocscope_thread_freed_bytes_total",
];

/// Compiled features, for `allocscope_build_info`.
pub(crate) const FEATURES: &str = if cfg!(feature = "profile") {
    "profile,server"
} else {
    "server"
};

fn build_info() -> MetricFamily {
    family(
        &BUILD_INFO,
        vec![gauge_metric(
            1.0,
            vec![
                label(BUILD_INFO.labels[1], FEATURES),
                label(BUILD_INFO.labels[0], env!("CARGO_PKG_VERSION")),
            ],
        )],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrape(full: bool) -> String {
        String::from_utf8(Metrics::new(full).render()).unwrap()
    }

    #[test]
    fn every_metric_is_exported_once_with_help() {
        let text = scrape(false);
        for Def { name, kind, .. } in METRICS {
            if OPTIONAL.contains(name) && !text.contains(&format!("# TYPE {name} ")) {
                continue;
            }
            let kind = format!("{kind:?}").to_lowercase();
            assert!(
                text.contains(&format!("# TYPE {name} {kind}\n")),
                "{name} not exported as its declared type {kind}"
            );
            assert_eq!(
                text.matches(&format!("# HELP {name} ")).count(),
                1,
                "{name} in\n{text}"
            );
        }
        #[cfg(target_os = "linux")]
        for p in ["process_resident_memory_bytes", "process_threads"] {
            assert!(text.contains(&format!("\n{p} ")), "{p} missing");
        }
    }

    #[test]
    fn the_exporters_collector_exports_the_leak_gauges() {
        let leaks = Arc::new(super::super::leaks::Leaks::new(
            std::time::Duration::from_secs(60),
            60,
        ));
        let text = String::from_utf8(Metrics::with_leaks(false, leaks).render()).unwrap();
        assert!(text.contains("\nallocscope_leak_suspects 0\n"), "{text}");
        let mem = text
            .lines()
            .find_map(|l| l.strip_prefix("allocscope_leak_snapshots_memory_bytes "))
            .and_then(|v| v.parse::<f64>().ok())
            .expect("the ring's memory");
        assert!(mem > 0.0);
        assert!(!scrape(false).contains("allocscope_leak_suspects"));
    }

    #[test]
    fn every_exported_family_is_declared() {
        let snap = Snapshot::take();
        let names: Vec<String> = HeapCollector::new(false)
            .families(&snap)
            .iter()
            .map(|f| f.name().to_string())
            .collect();
        let declared: Vec<&str> = METRICS.iter().map(|d| d.name).collect();
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(
            sorted.len(),
            names.len(),
            "a family emitted twice: {names:?}"
        );
        for n in &names {
            assert!(declared.contains(&n.as_str()), "{n} is not declared");
        }
    }

    /// The reference `docs/metrics.md` lists exactly the declared metrics:
    /// rows of the form ``| `name` | type | help |``.
    #[test]
    fn reference_matches_the_declarations() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/metrics.md");
        let text = std::fs::read_to_string(&path).unwrap();
        let rows: Vec<(String, String, String)> = text
            .lines()
            .filter_map(|l| {
                let cells: Vec<&str> = l.strip_prefix("| `allocscope_")?.split(" | ").collect();
                let name = format!("allocscope_{}", cells.first()?.strip_suffix('`')?);
                let help = cells.get(2)?.strip_suffix(" |").unwrap_or(cells.get(2)?);
                Some((name, cells.get(1)?.to_string(), help.trim().to_string()))
            })
            .collect();
        let declared: Vec<(String, String, String)> = METRICS
            .iter()
            .map(|d| {
                let kind = format!("{:?}", d.kind).to_lowercase();
                (d.name.to_string(), kind, d.help.to_string())
            })
            .collect();
        for d in &declared {
            assert!(
                rows.contains(d),
                "docs/metrics.md lacks or differs for {d:?}"
            );
        }
        for r in &rows {
            assert!(
                declared.contains(r),
                "docs/metrics.md lists {r:?}, which is not declared"
            );
        }
    }

    #[test]
    fn series_budget() {
        // without the per-scope and per-thread-group series, which depend on
        // the process (tests/scope_metrics.rs budgets them: 16 scopes and 16
        // groups stay under 300 series in all)
        let series = |t: &str| {
            t.lines()
                .filter(|l| {
                    !l.starts_with('#')
                        && !l.starts_with("allocscope_scope_")
                        && !l.starts_with("allocscope_thread_")
                })
                .count()
        };
        let default = series(&scrape(false));
        assert!(default < 250, "{default} series by default");
        let full = series(&scrape(true));
        eprintln!("series: {default} by default, {full} with every size class");
        assert!(full > default, "full size classes add series");
    }

    #[test]
    fn histogram_is_consistent() {
        let snap = Snapshot::take();
        let c = HeapCollector::new(false);
        let fams = c.families(&snap);
        let h = fams
            .iter()
            .find(|f| f.name() == "allocscope_heap_allocation_size_bytes")
            .unwrap()
            .get_metric()[0]
            .get_histogram()
            .clone();
        let b = h.get_bucket();
        assert_eq!(b.first().unwrap().upper_bound(), 8.0);
        assert_eq!(b.last().unwrap().upper_bound(), (1u64 << 30) as f64);
        assert_eq!(b.len(), 28);
        assert!(b
            .windows(2)
            .all(|w| w[0].cumulative_count() <= w[1].cumulative_count()));
        assert!(b.last().unwrap().cumulative_count() <= h.get_sample_count());
        let live: f64 = fams
            .iter()
            .find(|f| f.name() == "allocscope_heap_size_class_live_bytes")
            .unwrap()
            .get_metric()
            .iter()
            .map(|m| m.get_gauge().get_value())
            .sum();
        let per_class: u64 = snap.stats.size_classes.iter().map(|c| c.live_bytes()).sum();
        assert_eq!(live, per_class as f64);
    }
}
