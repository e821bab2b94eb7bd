//! What a heap profile costs the process that serves it: time, peak live
//! heap and resident memory of each request, the first and later ones, on
//! a host with 2,000 buckets of known stacks and a small heap.
//!
//! `cargo run --release -p allocscope-bench --bin capture_timing` (the
//! repository's release profile: `debug = "limited"`);
//! `CARGO_PROFILE_RELEASE_DEBUG=false cargo run --release -p allocscope-bench
//! --bin capture_timing` for a host without debug info (symbols only).
//! `CAPTURE_TIMING_ROUNDS=N` sets the later requests of each kind (default 5).
//!
//! A request is what the exporter does for it: capture (symbolisation
//! included) and encode (gzipped pprof for `heap` and `allocs`, an inferno
//! SVG for `heap.svg`), the answer then dropped (as once sent). "peak" is
//! the highest live heap seen during the request (`allocscope::stats()`,
//! polled by another thread) minus live bytes before it; "RSS peak" the
//! same for resident memory (`/proc/self/statm`, polled less often); "RSS
//! after" what resident memory kept after the request; "cycles" the
//! collector's threshold cycles that ran during it (the collector runs,
//! with its default threshold). For the later requests: the median time,
//! the largest peaks, the summed change of resident memory, all cycles.
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use allocscope::gc::CycleReason;
use allocscope::profile::{FlamegraphOptions, HeapProfile, PprofKind, SampleType, Symbols};

#[global_allocator]
static A: allocscope::AllocScope = allocscope::AllocScope::system();

type Site = fn(&[usize], &mut Vec<Vec<u8>>);

/// Allocation sites with distinct code (the constants keep the linker
/// from merging them), each a stack of its own.
macro_rules! sites {
    ($($name:ident = $k:literal),* $(,)?) => {
        $(
            #[inline(never)]
            fn $name(sizes: &[usize], keep: &mut Vec<Vec<u8>>) {
                for &s in sizes {
                    keep.push(black_box(vec![black_box($k as u8); s]));
                }
            }
        )*
        const SITES: &[Site] = &[$($name),*];
    };
}

sites!(
    s00 = 0,
    s01 = 1,
    s02 = 2,
    s03 = 3,
    s04 = 4,
    s05 = 5,
    s06 = 6,
    s07 = 7,
    s08 = 8,
    s09 = 9,
    s10 = 10,
    s11 = 11,
    s12 = 12,
    s13 = 13,
    s14 = 14,
    s15 = 15,
    s16 = 16,
    s17 = 17,
    s18 = 18,
    s19 = 19,
    s20 = 20,
    s21 = 21,
    s22 = 22,
    s23 = 23,
    s24 = 24,
    s25 = 25,
    s26 = 26,
    s27 = 27,
    s28 = 28,
    s29 = 29,
    s30 = 30,
    s31 = 31,
    s32 = 32,
    s33 = 33,
    s34 = 34,
    s35 = 35,
    s36 = 36,
    s37 = 37,
    s38 = 38,
    s39 = 39,
);

/// 40 sites × 50 object sizes: 2,000 buckets, every allocation sampled.
#[inline(never)]
fn workload() -> Vec<Vec<u8>> {
    let sizes: Vec<usize> = (0..50).map(|j| 64 + 8 * j).collect();
    let mut keep = Vec::with_capacity(SITES.len() * sizes.len());
    let before = allocscope::sampling::set_interval(1);
    for site in SITES {
        site(&sizes, &mut keep);
    }
    allocscope::sampling::set_interval(before);
    keep
}

static PEAK: AtomicU64 = AtomicU64::new(0);
static PEAK_RSS: AtomicU64 = AtomicU64::new(0);
static WATCHING: AtomicBool = AtomicBool::new(false);

/// Polls live bytes (and, every 20th time, resident memory) while a
/// request runs, keeping the highest.
fn watcher() {
    std::thread::Builder::new()
        .name("peak-watcher".into())
        .spawn(|| {
            let mut n = 0u32;
            loop {
                if WATCHING.load(Relaxed) {
                    PEAK.fetch_max(allocscope::stats().live_bytes(), Relaxed);
                    if n.is_multiple_of(20) {
                        PEAK_RSS.fetch_max(rss(), Relaxed);
                    }
                    n = n.wrapping_add(1);
                    std::thread::yield_now();
                } else {
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
        })
        .expect("spawn the watcher");
}

fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

struct Cost {
    time: Duration,
    peak_added: u64,
    peak_rss_added: u64,
    rss_added: i64,
    cycles: u64,
    bytes: usize,
    buckets: usize,
}

/// One request: capture with `symbols`, then encode as `what` says.
fn request(what: &str, symbols: Symbols) -> Cost {
    let cycles = allocscope::gc::stats().cycles_for(CycleReason::Threshold);
    let live = allocscope::stats().live_bytes();
    let rss0 = rss();
    PEAK.store(live, Relaxed);
    PEAK_RSS.store(rss0, Relaxed);
    WATCHING.store(true, Relaxed);
    let t = Instant::now();
    let p = HeapProfile::capture_with(symbols);
    let out = match what {
        "heap" => p.to_pprof(PprofKind::Heap),
        "allocs" => p.to_pprof(PprofKind::Allocs),
        _ => {
            let mut svg = Vec::new();
            p.flamegraph(
                SampleType::InuseSpace,
                &FlamegraphOptions::default(),
                &mut svg,
            )
            .expect("render");
            svg
        }
    };
    let buckets = p.buckets().len();
    drop(p);
    let bytes = black_box(out).len();
    // (the answer, sent)
    let time = t.elapsed();
    // let the watcher see the end of the request
    std::thread::sleep(Duration::from_millis(2));
    WATCHING.store(false, Relaxed);
    Cost {
        time,
        peak_added: PEAK.load(Relaxed).saturating_sub(live),
        peak_rss_added: PEAK_RSS.load(Relaxed).saturating_sub(rss0),
        rss_added: rss() as i64 - rss0 as i64,
        cycles: allocscope::gc::stats().cycles_for(CycleReason::Threshold) - cycles,
        bytes,
        buckets,
    }
}

fn mib(b: f64) -> f64 {
    b / (1024.0 * 1024.0)
}

fn main() {
    allocscope::gc::start_collector();
    watcher();
    let keep = workload();
    let rounds: usize = std::env::var("CAPTURE_TIMING_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5)
        .max(1);
    println!(
        "host: live heap {:.2} MiB, RSS {:.1} MiB, {} objects kept",
        mib(allocscope::stats().live_bytes() as f64),
        mib(rss() as f64),
        keep.len()
    );
    println!(
        "{:<30} {:>7} {:>8} {:>9} {:>9} {:>9} {:>6} {:>7}",
        "request", "buckets", "time ms", "peak MiB", "RSS peak", "RSS after", "cycles", "bytes"
    );
    let plan: [(&str, Symbols); 4] = [
        ("heap.svg", Symbols::Names),
        ("heap", Symbols::Names),
        ("allocs", Symbols::Names),
        ("heap", Symbols::Lines),
    ];
    // the budgets of issue 14, over the requests without lines
    let (mut first_ms, mut later_ms, mut peak, mut rss_peak, mut cycles_all) =
        (0.0, 0.0f64, 0, 0, 0);
    for (i, (what, symbols)) in plan.into_iter().enumerate() {
        let label = match symbols {
            Symbols::Lines => format!("{what}?lines=1"),
            _ => what.to_string(),
        };
        let mut costs: Vec<Cost> = Vec::new();
        for _ in 0..=rounds {
            costs.push(request(what, symbols));
        }
        let first = costs.remove(0);
        let kind = if i == 0 { "first" } else { "first of kind" };
        if symbols == Symbols::Names {
            if i == 0 {
                first_ms = first.time.as_secs_f64() * 1e3;
            }
            for c in std::iter::once(&first).chain(&costs) {
                peak = peak.max(c.peak_added);
                rss_peak = rss_peak.max(c.peak_rss_added);
                cycles_all += c.cycles;
            }
        }
        println!(
            "{:<30} {:>7} {:>8.1} {:>+9.2} {:>+9.2} {:>+9.2} {:>6} {:>7}",
            format!("{label} ({kind})"),
            first.buckets,
            first.time.as_secs_f64() * 1e3,
            mib(first.peak_added as f64),
            mib(first.peak_rss_added as f64),
            mib(first.rss_added as f64),
            first.cycles,
            first.bytes
        );
        // later ones: the median time, the largest peaks, the summed
        // change of resident memory, every cycle
        costs.sort_by_key(|c| c.time);
        let med = &costs[costs.len() / 2];
        let max_peak = costs.iter().map(|c| c.peak_added).max().unwrap_or(0);
        let max_rss = costs.iter().map(|c| c.peak_rss_added).max().unwrap_or(0);
        let rss_sum: i64 = costs.iter().map(|c| c.rss_added).sum();
        let cycles: u64 = costs.iter().map(|c| c.cycles).sum();
        if symbols == Symbols::Names {
            later_ms = later_ms.max(med.time.as_secs_f64() * 1e3);
        }
        println!(
            "{:<30} {:>7} {:>8.1} {:>+9.2} {:>+9.2} {:>+9.2} {:>6} {:>7}",
            format!("{label} (later, x{rounds})"),
            med.buckets,
            med.time.as_secs_f64() * 1e3,
            mib(max_peak as f64),
            mib(max_rss as f64),
            mib(rss_sum as f64),
            cycles,
            med.bytes
        );
    }
    println!(
        "budgets (heap, allocs, heap.svg): first request {first_ms:.1} ms (at most 200), later \
         {later_ms:.1} ms (median of the slowest kind; at most 50), peak heap added {:.2} MiB (at \
         most 8), peak RSS added {:.2} MiB (at most 10), threshold cycles {cycles_all} (none)",
        mib(peak as f64),
        mib(rss_peak as f64)
    );
    println!(
        "after: live heap {:.2} MiB, RSS {:.1} MiB, {} cached symbols; threshold cycles in all: {}",
        mib(allocscope::stats().live_bytes() as f64),
        mib(rss() as f64),
        allocscope::profile::symbol_cache_len(),
        allocscope::gc::stats().cycles_for(CycleReason::Threshold)
    );
    black_box(keep);
}
