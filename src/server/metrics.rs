//! `/metrics`: the Prometheus view of allocscope.
//!
//! Owns the metric names, their help texts and the [`HeapCollector`], which
//! takes ONE snapshot of each source per scrape ([`crate::stats`],
//! [`crate::sampling::stats`], [`crate::counters::info`]) so that every figure of a
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

use crate::gc::{CycleReason, Stats as CollectionStats};
use crate::sampling::Stats as SamplerStats;
use crate::{counters, Stats};

/// The Content-Type of `/metrics` answers.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Label of the per-class live bytes: the class's largest size in bytes
/// (`+Inf` for the last class).
const CLASS_LABEL: &str = "max_size";

use MetricType::{COUNTER, GAUGE, HISTOGRAM};

/// Every metric the [`HeapCollector`] exports: name, help, type.
pub const METRICS: &[(&str, &str, MetricType)] = &[
    ("allocscope_heap_live_bytes", "Bytes allocated through the global allocator and not yet freed (requested sizes).", GAUGE),
    ("allocscope_heap_live_objects", "Blocks allocated through the global allocator and not yet freed.", GAUGE),
    ("allocscope_heap_allocated_bytes_total", "Bytes requested by successful allocations, the allocation half of reallocations included.", COUNTER),
    ("allocscope_heap_freed_bytes_total", "Bytes released by deallocations, the free half of reallocations included.", COUNTER),
    ("allocscope_heap_allocations_total", "Successful allocations, the allocation half of reallocations included.", COUNTER),
    ("allocscope_heap_deallocations_total", "Deallocations, the free half of reallocations included.", COUNTER),
    ("allocscope_heap_reallocations_total", "Successful reallocations.", COUNTER),
    ("allocscope_heap_allocation_failures_total", "Allocations and reallocations the inner allocator refused.", COUNTER),
    ("allocscope_heap_allocation_size_bytes", "Requested size of every successful allocation (powers of two, or every size class when full_size_classes is set).", HISTOGRAM),
    ("allocscope_heap_size_class_live_bytes", "Live bytes per size class; max_size is the largest size in the class (powers of two, or every size class when full_size_classes is set).", GAUGE),
    ("allocscope_sampler_interval_bytes", "Mean bytes allocated between heap samples (0 = sampling off).", GAUGE),
    ("allocscope_sampler_live_samples", "Sampled allocations not yet freed.", GAUGE),
    ("allocscope_sampler_samples_total", "Allocations sampled so far.", COUNTER),
    ("allocscope_sampler_dropped_samples_total", "Samples not recorded because the sampler was at its memory cap.", COUNTER),
    ("allocscope_sampler_stacks", "Distinct stacks the sampler holds.", GAUGE),
    ("allocscope_sampler_buckets", "Distinct (stack, size) buckets the sampler holds.", GAUGE),
    ("allocscope_sampler_memory_bytes", "Memory used by the sampler itself.", GAUGE),
    ("allocscope_core_blocks", "Per-thread counter blocks ever created (one per concurrently live thread).", GAUGE),
    ("allocscope_core_blocks_attached", "Counter blocks attached to a live thread.", GAUGE),
    ("allocscope_core_memory_bytes", "Memory used by the counter blocks.", GAUGE),
    ("allocscope_collections_total", "Collection cycles run, by reason: threshold (live bytes passed the heap goal), limit (passed the memory limit), manual.", COUNTER),
    ("allocscope_collection_duration_seconds", "Duration of collection cycles: reclaimers, release to the OS and measurements.", HISTOGRAM),
    ("allocscope_heap_goal_bytes", "Live bytes at which the next automatic collection cycle runs: the smaller of the threshold's goal and the memory limit (+Inf when neither is set).", GAUGE),
    ("allocscope_collection_threshold_ratio", "Collection threshold as a ratio (1 = GOGC 100: collect when the heap doubles); -1 when off.", GAUGE),
    ("allocscope_memory_limit_bytes", "Soft limit on live heap bytes (+Inf when off).", GAUGE),
    ("allocscope_collection_time_share_ratio", "Share of wall time automatic collection cycles may take (the CPU limiter).", GAUGE),
    ("allocscope_collection_skipped_triggers_total", "Automatic collection triggers skipped because cycles had used their share of wall time.", COUNTER),
    ("allocscope_collection_released_bytes_total", "Resident memory returned to the OS by collection cycles.", COUNTER),
    ("allocscope_collection_reclaimed_bytes_total", "Bytes the registered reclaimers reported freeing in collection cycles.", COUNTER),
    ("allocscope_collection_reclaimer_panics_total", "Reclaimer calls that panicked (caught; the cycle went on).", COUNTER),
    ("allocscope_collection_reclaimers", "Reclaimers registered.", GAUGE),
    ("allocscope_collection_near_limit_profiles_total", "Heap profiles written to near_limit_profile_dir near the memory limit.", COUNTER),
    ("allocscope_collection_poll_seconds_total", "Time the collector thread spent checking live bytes against the goal and the limit.", COUNTER),
    ("allocscope_exporter_scrape_errors_total", "Metric sections left out of a scrape because reading them failed.", COUNTER),
    ("allocscope_build_info", "Always 1; labels name the allocscope version and its compiled features.", GAUGE),
];

fn help(name: &str) -> &'static str {
    METRICS
        .iter()
        .find(|m| m.0 == name)
        .map(|m| m.1)
        .unwrap_or("")
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
}

impl Snapshot {
    /// Reads every source once.
    pub fn take() -> Snapshot {
        Snapshot {
            stats: crate::stats(),
            sampler: crate::sampling::stats(),
            core: crate::counters::info(),
            collection: crate::gc::stats(),
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
];

/// A prometheus [`Collector`] for everything allocscope knows. Register it
/// in your own registry, or let the exporter's `/metrics` serve it.
#[derive(Debug)]
pub struct HeapCollector {
    descs: Vec<Desc>,
    full_size_classes: bool,
    errors: Arc<AtomicU64>,
}

impl HeapCollector {
    /// A collector with power-of-two size buckets, or every size class.
    pub fn new(full_size_classes: bool) -> HeapCollector {
        let descs = METRICS
            .iter()
            .filter_map(|(name, help, _)| {
                let labels = if *name == "allocscope_heap_size_class_live_bytes" {
                    vec![CLASS_LABEL.to_string()]
                } else if *name == "allocscope_collections_total" {
                    vec!["reason".to_string()]
                } else if *name == "allocscope_build_info" {
                    vec!["version".to_string(), "features".to_string()]
                } else {
                    vec![]
                };
                Desc::new(name.to_string(), help.to_string(), labels, HashMap::new()).ok()
            })
            .collect();
        HeapCollector {
            descs,
            full_size_classes,
            errors: Arc::new(AtomicU64::new(0)),
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
        out.push(counter(
            "allocscope_exporter_scrape_errors_total",
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
        match catch_unwind(Snapshot::take) {
            Ok(snap) => self.families(&snap),
            Err(_) => {
                self.errors.fetch_add(1, Relaxed);
                vec![counter(
                    "allocscope_exporter_scrape_errors_total",
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
        let registry = Registry::new();
        if let Err(e) = registry.register(Box::new(HeapCollector::new(full_size_classes))) {
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
        let families = self.registry.gather();
        let mut buf = Vec::with_capacity(16 * 1024);
        if let Err(e) = TextEncoder::new().encode(&families, &mut buf) {
            tracing::warn!(target: "allocscope", "metrics encoding stopped early: {e}");
        }
        buf
    }
}

fn family(name: &str, kind: MetricType, metrics: Vec<Metric>) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(name.to_string());
    f.set_help(help(name).to_string());
    f.set_field_type(kind);
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

fn gauge(name: &str, v: f64) -> MetricFamily {
    family(name, GAUGE, vec![gauge_metric(v, vec![])])
}

fn counter(name: &str, v: f64) -> MetricFamily {
    let mut c = Counter::default();
    c.set_value(v);
    let mut m = Metric::default();
    m.set_counter(c);
    family(name, COUNTER, vec![m])
}

fn label(name: &str, value: &str) -> LabelPair {
    let mut l = LabelPair::default();
    l.set_name(name.to_string());
    l.set_value(value.to_string());
    l
}

fn heap_section(s: &Snapshot, _: bool, out: &mut Vec<MetricFamily>) {
    let st = &s.stats;
    out.push(gauge("allocscope_heap_live_bytes", st.live_bytes() as f64));
    out.push(gauge(
        "allocscope_heap_live_objects",
        st.live_objects() as f64,
    ));
    for (name, v) in [
        ("allocscope_heap_allocated_bytes_total", st.allocated_bytes),
        ("allocscope_heap_freed_bytes_total", st.freed_bytes),
        ("allocscope_heap_allocations_total", st.allocations),
        ("allocscope_heap_deallocations_total", st.deallocations),
        ("allocscope_heap_reallocations_total", st.reallocations),
        (
            "allocscope_heap_allocation_failures_total",
            st.alloc_failures,
        ),
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
    out.push(family(
        "allocscope_heap_allocation_size_bytes",
        HISTOGRAM,
        vec![m],
    ));
    let live = bounds
        .iter()
        .map(|b| b.to_string())
        .chain(std::iter::once("+Inf".to_string()))
        .zip(&per)
        .map(|(b, &(_, live))| gauge_metric(live as f64, vec![label(CLASS_LABEL, &b)]))
        .collect();
    out.push(family("allocscope_heap_size_class_live_bytes", GAUGE, live));
}

fn sampler_section(s: &Snapshot, _: bool, out: &mut Vec<MetricFamily>) {
    let sm = &s.sampler;
    out.push(gauge(
        "allocscope_sampler_interval_bytes",
        sm.interval as f64,
    ));
    out.push(gauge(
        "allocscope_sampler_live_samples",
        sm.live_samples as f64,
    ));
    out.push(counter(
        "allocscope_sampler_samples_total",
        sm.samples_total as f64,
    ));
    out.push(counter(
        "allocscope_sampler_dropped_samples_total",
        sm.dropped_samples as f64,
    ));
    out.push(gauge("allocscope_sampler_stacks", sm.stacks as f64));
    out.push(gauge("allocscope_sampler_buckets", sm.buckets as f64));
    out.push(gauge(
        "allocscope_sampler_memory_bytes",
        sm.memory_bytes as f64,
    ));
}

fn counters_section(s: &Snapshot, _: bool, out: &mut Vec<MetricFamily>) {
    out.push(gauge("allocscope_core_blocks", s.core.blocks as f64));
    out.push(gauge(
        "allocscope_core_blocks_attached",
        s.core.attached_blocks as f64,
    ));
    out.push(gauge(
        "allocscope_core_memory_bytes",
        s.core.memory_bytes as f64,
    ));
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
        .map(|r| counter_metric(c.cycles_for(*r) as f64, vec![label("reason", r.as_str())]))
        .collect();
    out.push(family("allocscope_collections_total", COUNTER, by_reason));

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
    out.push(family(
        "allocscope_collection_duration_seconds",
        HISTOGRAM,
        vec![m],
    ));

    let inf_if_max = |v: u64| {
        if v == u64::MAX {
            f64::INFINITY
        } else {
            v as f64
        }
    };
    out.push(gauge("allocscope_heap_goal_bytes", inf_if_max(c.heap_goal)));
    out.push(gauge(
        "allocscope_collection_threshold_ratio",
        c.threshold.map_or(-1.0, |t| f64::from(t) / 100.0),
    ));
    out.push(gauge(
        "allocscope_memory_limit_bytes",
        c.memory_limit.map_or(f64::INFINITY, |l| l as f64),
    ));
    out.push(gauge(
        "allocscope_collection_time_share_ratio",
        c.time_share,
    ));
    for (name, v) in [
        (
            "allocscope_collection_skipped_triggers_total",
            c.skipped_triggers as f64,
        ),
        (
            "allocscope_collection_released_bytes_total",
            c.released_bytes as f64,
        ),
        (
            "allocscope_collection_reclaimed_bytes_total",
            c.reclaimed_bytes as f64,
        ),
        (
            "allocscope_collection_reclaimer_panics_total",
            c.reclaimer_panics as f64,
        ),
        (
            "allocscope_collection_near_limit_profiles_total",
            c.near_limit_profiles as f64,
        ),
        (
            "allocscope_collection_poll_seconds_total",
            c.poll_time.as_secs_f64(),
        ),
    ] {
        out.push(counter(name, v));
    }
    out.push(gauge(
        "allocscope_collection_reclaimers",
        c.reclaimers as f64,
    ));
}

/// Compiled features, for `allocscope_build_info`.
pub(crate) const FEATURES: &str = if cfg!(feature = "profile") {
    "profile,server"
} else {
    "server"
};

fn build_info() -> MetricFamily {
    family(
        "allocscope_build_info",
        GAUGE,
        vec![gauge_metric(
            1.0,
            vec![
                label("features", FEATURES),
                label("version", env!("CARGO_PKG_VERSION")),
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
        for (name, _, _) in METRICS {
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
    fn series_budget() {
        let series = |t: &str| t.lines().filter(|l| !l.starts_with('#')).count();
        let default = series(&scrape(false));
        assert!(default < 250, "{default} series by default");
        let full = series(&scrape(true));
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
