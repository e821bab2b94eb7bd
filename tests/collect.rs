//! Scenarios: collection cycles (issue 5). The collector's settings and
//! counters are process-wide, so every scenario runs in a fresh process:
//! each `#[test]` re-runs this test binary on itself alone
//! (`<test> --exact`) with `ALLOCSCOPE_COLLECT_SCENARIO=<test>` set, and the
//! child runs the scenario. Heap growth is driven with 64 KiB blocks held
//! in a `Vec`; waits are bounded.
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use allocscope::gc::{CycleReason, Pressure, ReleaseMode};

#[global_allocator]
static A: allocscope::AllocScope = allocscope::AllocScope::system();

const CHUNK: usize = 64 * 1024;
const MIB: u64 = 1 << 20;

/// Runs `scenario` in a fresh process (this binary, this test only).
fn fresh_process(name: &str, scenario: fn()) {
    if std::env::var("ALLOCSCOPE_COLLECT_SCENARIO").as_deref() == Ok(name) {
        scenario();
        return;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env("ALLOCSCOPE_COLLECT_SCENARIO", name)
        .output()
        .expect("run the scenario's process");
    let said = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "scenario {name} failed:\n{said}");
    assert!(
        said.contains("1 passed"),
        "scenario {name} did not run:\n{said}"
    );
    eprintln!("{said}");
}

fn live() -> u64 {
    allocscope::stats().live_bytes()
}

/// Allocates 64 KiB blocks until live bytes reach `target`.
fn grow_to(held: &mut Vec<Box<[u8]>>, target: u64) {
    while live() < target {
        held.push(vec![0u8; CHUNK].into_boxed_slice());
    }
}

fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(t.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn goal_for(base: u64, t: u32) -> u64 {
    let floor = 4 * MIB * t as u64 / 100;
    floor.max(base * (100 + t as u64) / 100)
}

/// Two rounds: grow to 90% of the goal (no cycle), pass it (one cycle,
/// acted on promptly, with the goal the formula says).
fn threshold_scenario(t: u32) {
    assert_eq!(allocscope::gc::threshold(), Some(100), "default");
    assert_eq!(allocscope::gc::set_threshold(Some(t)), Some(100));
    assert_eq!(allocscope::gc::threshold(), Some(t));
    let start_live = live();
    assert!(start_live < MIB, "test process starts small: {start_live}");
    let mut goal = allocscope::gc::heap_goal();
    assert_eq!(goal, goal_for(start_live, t), "{goal}");
    assert_eq!(
        goal,
        4 * MIB * t as u64 / 100,
        "the floor, before any cycle"
    );
    let mut held = Vec::new();
    for round in 1..=3u64 {
        grow_to(&mut held, goal * 9 / 10);
        let polls = allocscope::gc::stats().polls;
        std::thread::sleep(Duration::from_millis(60));
        assert!(
            allocscope::gc::stats().polls > polls + 3,
            "the collector checks"
        );
        assert_eq!(
            allocscope::gc::cycles().len() as u64,
            round - 1,
            "no cycle below the goal ({} of {goal})",
            live()
        );
        let crossed = SystemTime::now();
        grow_to(&mut held, goal + CHUNK as u64);
        wait_for("a threshold cycle", Duration::from_secs(3), || {
            allocscope::gc::cycles().len() as u64 == round
        });
        let c = allocscope::gc::cycles().pop().unwrap();
        let latency = c.start.duration_since(crossed).unwrap_or_default();
        eprintln!(
            "threshold {t}, round {round}: goal {goal}, live {} -> {}, acted on after {latency:?}, took {:?}",
            c.live_bytes_before, c.live_bytes_after, c.duration
        );
        assert!(latency < Duration::from_millis(500), "{latency:?}");
        assert_eq!(c.number, round);
        assert_eq!(c.reason, CycleReason::Threshold);
        assert_eq!(c.threshold, Some(t));
        assert_eq!(c.goal_bytes, goal, "the goal it was triggered at");
        assert!(c.live_bytes_before > goal);
        assert_eq!(c.memory_limit, None);
        assert_eq!(c.reclaimers, 0);
        let next = goal_for(c.live_bytes_after, t);
        assert_eq!(c.next_goal_bytes, next);
        assert_eq!(allocscope::gc::heap_goal(), next);
        assert!(next > goal, "the goal grows with the heap");
        goal = next;
    }
    let s = allocscope::gc::stats();
    assert_eq!(s.cycles(), 3);
    assert_eq!(s.cycles_for(CycleReason::Threshold), 3);
    assert_eq!(s.skipped_triggers, 0);
    assert_eq!(s.duration_buckets.iter().sum::<u64>(), 3);
    assert!(s.collector_running);
}

#[test]
fn threshold_50() {
    fresh_process("threshold_50", || threshold_scenario(50));
}

#[test]
fn threshold_100() {
    fresh_process("threshold_100", || threshold_scenario(100));
}

#[test]
fn threshold_200() {
    fresh_process("threshold_200", || threshold_scenario(200));
}

#[test]
fn threshold_off() {
    fresh_process("threshold_off", || {
        assert_eq!(allocscope::gc::set_threshold(None), Some(100));
        assert_eq!(allocscope::gc::threshold(), None);
        assert_eq!(allocscope::gc::heap_goal(), u64::MAX);
        let mut held = Vec::new();
        grow_to(&mut held, 48 * MIB);
        std::thread::sleep(Duration::from_millis(100));
        let s = allocscope::gc::stats();
        assert!(allocscope::gc::cycles().is_empty());
        assert_eq!(s.cycles(), 0);
        assert!(s.collector_running);
        assert_eq!(s.polls, 0, "nothing to watch: the collector parks");
        // Turning it back on acts at once: 48 MiB is past the 4 MiB floor.
        assert_eq!(allocscope::gc::set_threshold(Some(100)), None);
        wait_for("a cycle after turning on", Duration::from_secs(2), || {
            !allocscope::gc::cycles().is_empty()
        });
        assert_eq!(allocscope::gc::cycles()[0].reason, CycleReason::Threshold);
    });
}

#[test]
fn memory_limit_with_threshold_off() {
    fresh_process("memory_limit_with_threshold_off", || {
        assert_eq!(allocscope::gc::set_threshold(None), Some(100));
        let limit = live() + 24 * MIB;
        // a limit of 0 is refused, as the configuration refuses it, and changes nothing
        assert!(allocscope::gc::set_memory_limit(Some(0)).is_err());
        assert_eq!(allocscope::gc::memory_limit(), None);
        assert_eq!(allocscope::gc::set_memory_limit(Some(limit)).unwrap(), None);
        assert_eq!(allocscope::gc::memory_limit(), Some(limit));
        assert_eq!(allocscope::gc::heap_goal(), limit);
        let held = Arc::new(Mutex::new(Vec::new()));
        let seen: Arc<Mutex<Vec<Pressure>>> = Arc::default();
        let (h, s) = (held.clone(), seen.clone());
        // Frees half of the held blocks, as a cache would.
        let _r = allocscope::gc::register_reclaimer("half", move |p| {
            s.lock().unwrap().push(p.clone());
            let mut h = h.lock().unwrap();
            let n = h.len() / 2;
            h.truncate(n);
            h.shrink_to_fit();
            0
        });
        grow_to(&mut held.lock().unwrap(), limit - 2 * MIB);
        std::thread::sleep(Duration::from_millis(60));
        assert!(allocscope::gc::cycles().is_empty(), "below the limit");
        grow_to(&mut held.lock().unwrap(), limit + MIB);
        wait_for("a limit cycle", Duration::from_secs(3), || {
            !allocscope::gc::cycles().is_empty()
        });
        let c = &allocscope::gc::cycles()[0];
        assert_eq!(c.reason, CycleReason::Limit);
        assert_eq!(c.threshold, None);
        assert_eq!(c.memory_limit, Some(limit));
        assert_eq!(c.goal_bytes, limit);
        assert!(c.live_bytes_before > limit);
        assert!(c.live_bytes_after < limit, "the reclaimer freed half");
        let p = seen.lock().unwrap()[0].clone();
        assert_eq!(p.reason, CycleReason::Limit);
        assert!(p.is_over_limit() && p.over_limit_bytes == p.live_bytes - limit);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(allocscope::gc::cycles().len(), 1, "under the limit again");
        assert_eq!(allocscope::gc::set_memory_limit(None).unwrap(), Some(limit));
        assert_eq!(allocscope::gc::heap_goal(), u64::MAX);
    });
}

#[test]
fn reclaimers_run_in_order_and_free() {
    fresh_process("reclaimers_run_in_order_and_free", || {
        const CACHE: usize = 16 << 20;
        let cache: Arc<Mutex<Vec<Box<[u8]>>>> = Arc::default();
        cache
            .lock()
            .unwrap()
            .extend((0..CACHE / CHUNK).map(|_| vec![0u8; CHUNK].into_boxed_slice()));
        let order: Arc<Mutex<Vec<&'static str>>> = Arc::default();
        let (c, o) = (cache.clone(), order.clone());
        let r1 = allocscope::gc::register_reclaimer("cache", move |_| {
            o.lock().unwrap().push("cache");
            let mut c = c.lock().unwrap();
            let freed = c.len() * CHUNK;
            *c = Vec::new();
            freed
        });
        assert_eq!(r1.name(), "cache");
        let o = order.clone();
        let _r2 = allocscope::gc::register_reclaimer(String::from("second"), move |_| {
            o.lock().unwrap().push("second");
            0
        });
        // collector start: the goal's base includes the cache
        let goal = allocscope::gc::heap_goal();
        assert!(goal >= 32 * MIB, "{goal}");
        let mut held = Vec::new();
        grow_to(&mut held, goal + CHUNK as u64);
        wait_for("a cycle", Duration::from_secs(3), || {
            !allocscope::gc::cycles().is_empty()
        });
        let c = allocscope::gc::cycles()[0].clone();
        assert_eq!(*order.lock().unwrap(), ["cache", "second"]);
        assert_eq!(c.reclaimers, 2);
        assert_eq!(c.reclaimed_bytes, CACHE as u64);
        assert!(
            c.live_bytes_after + CACHE as u64 <= c.live_bytes_before + MIB / 4,
            "the freed cache shows in live bytes: {} -> {}",
            c.live_bytes_before,
            c.live_bytes_after
        );
        assert_eq!(c.next_goal_bytes, goal_for(c.live_bytes_after, 100));
        assert_eq!(allocscope::gc::stats().reclaimers, 2);
        assert_eq!(allocscope::gc::stats().reclaimed_bytes, CACHE as u64);

        // Dropped: not called again.
        drop(r1);
        order.lock().unwrap().clear();
        let m = allocscope::gc::collect();
        assert_eq!(m.reason, CycleReason::Manual);
        assert_eq!(m.number, 2);
        assert_eq!(m.reclaimers, 1);
        assert_eq!(*order.lock().unwrap(), ["second"]);
        assert_eq!(allocscope::gc::stats().reclaimers, 1);
        assert_eq!(allocscope::gc::stats().cycles_for(CycleReason::Manual), 1);

        // collect() inside a reclaimer does not nest.
        let inner = Arc::new(Mutex::new(None));
        let i = inner.clone();
        let _r3 = allocscope::gc::register_reclaimer("reentrant", move |_| {
            *i.lock().unwrap() = Some(allocscope::gc::collect());
            0
        });
        let m = allocscope::gc::collect();
        assert_eq!(m.number, 3);
        assert_eq!(inner.lock().unwrap().as_ref().unwrap().number, 0);
        assert_eq!(allocscope::gc::cycles().len(), 3);
    });
}

#[test]
fn panicking_reclaimer() {
    fresh_process("panicking_reclaimer", || {
        let calls: Arc<Mutex<Vec<&'static str>>> = Arc::default();
        let c = calls.clone();
        let _a = allocscope::gc::register_reclaimer("a", move |_| {
            c.lock().unwrap().push("a");
            100
        });
        let c = calls.clone();
        let _b = allocscope::gc::register_reclaimer("b", move |_| {
            c.lock().unwrap().push("b");
            panic!("reclaimer b fails on purpose");
        });
        let c = calls.clone();
        let _z = allocscope::gc::register_reclaimer("z", move |_| {
            c.lock().unwrap().push("z");
            200
        });
        let m = allocscope::gc::collect();
        assert_eq!(*calls.lock().unwrap(), ["a", "b", "z"]);
        assert_eq!(m.reclaimers, 3);
        assert_eq!(m.reclaimer_panics, 1);
        assert_eq!(m.reclaimed_bytes, 300);
        // On the collector thread too, which survives it.
        let mut held = Vec::new();
        grow_to(&mut held, allocscope::gc::heap_goal() + CHUNK as u64);
        wait_for("an automatic cycle", Duration::from_secs(3), || {
            allocscope::gc::cycles().len() == 2
        });
        let c = allocscope::gc::cycles()[1].clone();
        assert_eq!(c.reason, CycleReason::Threshold);
        assert_eq!(c.reclaimer_panics, 1);
        assert_eq!(c.reclaimed_bytes, 300);
        let polls = allocscope::gc::stats().polls;
        std::thread::sleep(Duration::from_millis(50));
        let s = allocscope::gc::stats();
        assert!(s.polls > polls, "the collector thread still runs");
        assert_eq!(s.reclaimer_panics, 2);
        assert_eq!(allocscope::gc::collect().reclaimer_panics, 1);
    });
}

#[test]
fn time_share_limits_an_unreclaimable_heap() {
    fresh_process("time_share_limits_an_unreclaimable_heap", || {
        assert_eq!(allocscope::gc::set_threshold(None), Some(100));
        let share = 0.1;
        assert_eq!(allocscope::gc::set_time_share(share).unwrap(), 0.1);
        assert!(allocscope::gc::set_time_share(0.0).is_err());
        assert!(allocscope::gc::set_time_share(1.5).is_err());
        assert!(allocscope::gc::set_time_share(f64::NAN).is_err());
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        // Works for 10 ms and frees nothing.
        let _r = allocscope::gc::register_reclaimer("stubborn", move |_| {
            c.fetch_add(1, SeqCst);
            std::thread::sleep(Duration::from_millis(10));
            0
        });
        let mut held = Vec::new();
        grow_to(&mut held, 8 * MIB);
        let t0 = Instant::now();
        allocscope::gc::set_memory_limit(Some(4 * MIB)).unwrap(); // always over it
        std::thread::sleep(Duration::from_millis(2000));
        allocscope::gc::set_memory_limit(None).unwrap();
        let elapsed = t0.elapsed();
        std::thread::sleep(Duration::from_millis(30)); // a running cycle ends
        let s = allocscope::gc::stats();
        let busy = s.total_duration;
        let n = s.cycles_for(CycleReason::Limit);
        eprintln!(
            "share {share}: {n} cycles took {busy:?} of {elapsed:?} ({:.1}%), {} triggers skipped",
            busy.as_secs_f64() * 100.0 / elapsed.as_secs_f64(),
            s.skipped_triggers
        );
        assert_eq!(calls.load(SeqCst) as u64, n);
        // share x T, the 1 s burst (share x 1 s), one cycle over, slack
        let longest = allocscope::gc::cycles()
            .iter()
            .map(|c| c.duration)
            .max()
            .unwrap_or_default();
        let bound = elapsed.mul_f64(share) + Duration::from_millis(100 + 10) + longest;
        assert!(busy <= bound, "{busy:?} > {bound:?}");
        assert!(n >= 15, "the budget is used: {n} cycles");
        assert!(s.skipped_triggers >= 5, "{}", s.skipped_triggers);
        assert!(s.skipped_triggers < 1000, "skips wait for the budget");
    });
}

/// The collector thread's context switches (voluntary: its own sleeps and
/// wake-ups), from its `/proc/self/task/<tid>/status`.
///
/// Reading them does not allocate (the path is found once, the file read
/// into a buffer on the stack): an allocation of the reading thread could
/// reach the sampler's cold path and wake the collector, the very thing
/// measured (it did once in CI: one such wake-up kept the collector at the
/// busy poll for 200 ms, 40 wake-ups).
#[cfg(target_os = "linux")]
struct CollectorSwitches(std::path::PathBuf);

#[cfg(target_os = "linux")]
impl CollectorSwitches {
    /// The collector thread names itself once it runs, which on a loaded
    /// machine can be a while after `start_collector` returns.
    fn find() -> CollectorSwitches {
        let t = Instant::now();
        loop {
            for task in std::fs::read_dir("/proc/self/task").unwrap() {
                let dir = task.unwrap().path();
                let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
                if comm.trim() == "allocscope-coll" {
                    return CollectorSwitches(dir.join("status"));
                }
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "no allocscope-collect thread"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn read(&self) -> u64 {
        use std::io::Read;
        let mut buf = [0u8; 8192];
        let mut file = std::fs::File::open(&self.0).unwrap();
        let mut len = 0;
        loop {
            let n = file.read(&mut buf[len..]).unwrap();
            if n == 0 {
                break;
            }
            len += n;
            assert!(len < buf.len(), "status longer than the buffer");
        }
        let key = b"voluntary_ctxt_switches:";
        let text = &buf[..len];
        let at = text
            .windows(key.len())
            .position(|w| w == key)
            .expect("voluntary_ctxt_switches in status");
        text[at + key.len()..]
            .iter()
            .skip_while(|b| b.is_ascii_whitespace())
            .take_while(|b| b.is_ascii_digit())
            .fold(0, |n, d| n * 10 + u64::from(d - b'0'))
    }
}

#[test]
#[cfg(target_os = "linux")]
fn an_idle_process_lets_the_collector_sleep() {
    fresh_process("an_idle_process_lets_the_collector_sleep", || {
        // the default threshold (100) is watched
        allocscope::gc::start_collector();
        let mut held = Vec::new();
        grow_to(&mut held, 2 * MIB);
        // idle: the collector goes down to at most 2 wake-ups a second
        let switches = CollectorSwitches::find();
        std::thread::sleep(Duration::from_millis(500));
        let allocated = allocscope::thread_stats().allocated_bytes;
        let (s0, t0) = (switches.read(), Instant::now());
        std::thread::sleep(Duration::from_secs(2));
        let idle = switches.read() - s0;
        let elapsed = t0.elapsed();
        assert_eq!(
            allocscope::thread_stats().allocated_bytes,
            allocated,
            "the idle stretch allocated"
        );
        let per_second = idle as f64 / elapsed.as_secs_f64();
        eprintln!("idle: {idle} wake-ups in {elapsed:?}");
        assert!(
            per_second <= 2.5,
            "{per_second:.1} wake-ups a second while idle"
        );
        // allocating again: a crossing of the goal is acted on at once
        let cycles = allocscope::gc::stats().cycles();
        let goal = allocscope::gc::heap_goal();
        let crossing = Instant::now();
        grow_to(&mut held, goal + 1);
        let crossed = crossing.elapsed();
        wait_for(
            "a cycle after the idle stretch",
            Duration::from_millis(200),
            || allocscope::gc::stats().cycles() > cycles,
        );
        let reacted = crossing.elapsed();
        eprintln!("grew past the goal in {crossed:?}; the cycle came {reacted:?} after the start");
        assert!(
            reacted < crossed + Duration::from_millis(50),
            "reacted {reacted:?}, crossed {crossed:?}"
        );
        // and while the process allocates, the collector polls as before
        let (s0, t0) = (switches.read(), Instant::now());
        while t0.elapsed() < Duration::from_millis(500) {
            drop(vec![0u8; CHUNK]);
            std::thread::sleep(Duration::from_micros(200));
        }
        let busy = switches.read() - s0;
        eprintln!("allocating: {busy} wake-ups in {:?}", t0.elapsed());
        assert!(busy >= 20, "{busy} wake-ups while allocating");
    });
}

#[test]
fn limit_backoff_pauses_cycles_that_cannot_help() {
    fresh_process("limit_backoff_pauses_cycles_that_cannot_help", || {
        use allocscope::gc::LimitBackoff;
        assert_eq!(allocscope::gc::set_threshold(None), Some(100));
        assert_eq!(
            allocscope::gc::limit_backoff(),
            Some(LimitBackoff::default())
        );
        assert!(allocscope::gc::set_limit_backoff(Some(LimitBackoff::new(
            Duration::ZERO,
            Duration::from_secs(1)
        )))
        .is_err());
        let (after, pause) = (Duration::from_millis(300), Duration::from_millis(1500));
        allocscope::gc::set_limit_backoff(Some(LimitBackoff::new(after, pause))).unwrap();
        // Works for 5 ms and frees nothing.
        let _r = allocscope::gc::register_reclaimer("stubborn", |_| {
            std::thread::sleep(Duration::from_millis(5));
            0
        });
        let mut held = Vec::new();
        grow_to(&mut held, 8 * MIB);
        let t0 = Instant::now();
        allocscope::gc::set_memory_limit(Some(4 * MIB)).unwrap(); // always over it
        let limit_cycles = || allocscope::gc::stats().cycles_for(CycleReason::Limit);
        wait_for("a backoff", Duration::from_secs(5), || {
            allocscope::gc::stats().limit_backoffs == 1
        });
        let backoff_at = t0.elapsed();
        assert!(backoff_at >= after, "backed off after {backoff_at:?}");
        std::thread::sleep(Duration::from_millis(50)); // a running cycle ends
        let s = allocscope::gc::stats();
        assert!(s.limit_paused);
        assert!(
            s.limit_exceeded >= after.mul_f64(0.9),
            "{:?}",
            s.limit_exceeded
        );
        let paused_at = limit_cycles();
        assert!(paused_at >= 2, "cycles ran before the backoff: {paused_at}");
        // paused: no cycle on the limit, though live bytes stay above it
        std::thread::sleep(Duration::from_millis(700));
        assert_eq!(limit_cycles(), paused_at, "a cycle ran during the pause");
        assert!(allocscope::gc::stats().limit_paused);
        // the pause ends: cycles resume
        wait_for("cycles after the pause", Duration::from_secs(3), || {
            limit_cycles() > paused_at
        });
        assert!(t0.elapsed() >= backoff_at + pause.mul_f64(0.9));
        allocscope::gc::set_memory_limit(None).unwrap();
        let s = allocscope::gc::stats();
        eprintln!(
            "backoff after {backoff_at:?}; {} s above the limit in all; {} limit cycles",
            s.limit_exceeded.as_secs_f64(),
            s.cycles_for(CycleReason::Limit)
        );
    });
}

#[test]
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn release_returns_freed_pages_to_the_os() {
    fresh_process("release_returns_freed_pages_to_the_os", || {
        assert_eq!(allocscope::gc::set_threshold(None), Some(100));
        const BLOCK: usize = 4096;
        let n = (96 << 20) / BLOCK;
        // Touched blocks; keep every 32nd so that glibc cannot shrink the
        // heap from its top: the freed pages stay resident until trimmed.
        let mut blocks: Vec<Option<Box<[u8]>>> = (0..n)
            .map(|_| Some(vec![1u8; BLOCK].into_boxed_slice()))
            .collect();
        for (i, b) in blocks.iter_mut().enumerate() {
            if i % 32 != 0 {
                *b = None;
            }
        }
        assert_eq!(
            allocscope::gc::set_release_mode(ReleaseMode::Never),
            ReleaseMode::Auto
        );
        let kept = allocscope::gc::collect();
        assert!(!kept.released_to_os);
        assert_eq!(kept.released_bytes, 0);
        let rss_kept = kept.resident_bytes_after.unwrap();
        allocscope::gc::set_release_mode(ReleaseMode::Auto);
        let c = allocscope::gc::collect();
        let before = c.resident_bytes_before.unwrap();
        let after = c.resident_bytes_after.unwrap();
        eprintln!(
            "resident {} MiB -> {} MiB, released {} MiB in {:?}",
            before >> 20,
            after >> 20,
            c.released_bytes >> 20,
            c.duration
        );
        assert!(c.released_to_os);
        assert_eq!(allocscope::gc::stats().glibc_malloc_detected, Some(true));
        assert!(rss_kept + (16 << 20) >= before, "nothing released before");
        assert!(before - after >= 64 << 20, "{before} -> {after}");
        assert!(c.released_bytes >= 64 << 20, "{}", c.released_bytes);
        assert_eq!(allocscope::gc::stats().released_bytes, c.released_bytes);
        drop(blocks);
    });
}

#[test]
fn near_limit_profiles_are_written_and_pruned() {
    use pprof::protos::Message;
    use std::io::Read;
    fresh_process("near_limit_profiles_are_written_and_pruned", || {
        let dir = std::env::temp_dir().join(format!("allocscope-near-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // Older profiles of an earlier process (e.g. one that was killed).
        for i in 1..=3 {
            std::fs::write(
                dir.join(format!("heap-near-limit-000000000000{i}-1-0.pb.gz")),
                b"old",
            )
            .unwrap();
        }
        std::fs::write(dir.join("unrelated.txt"), b"keep me").unwrap();
        assert!(allocscope::profile::set_near_limit_profiles(Some(
            allocscope::profile::NearLimitProfiles::new(&dir).ratio(1.5)
        ))
        .is_err());
        assert!(allocscope::profile::set_near_limit_profiles(Some(
            allocscope::profile::NearLimitProfiles::new(&dir).keep(0)
        ))
        .is_err());
        allocscope::profile::set_near_limit_profiles(Some(
            allocscope::profile::NearLimitProfiles::new(&dir)
                .keep(2)
                .min_interval(Duration::from_millis(150)),
        ))
        .unwrap();
        allocscope::sampling::set_interval(64 * 1024);
        allocscope::gc::set_threshold(None);
        let limit = live() + 32 * MIB;
        allocscope::gc::set_memory_limit(Some(limit)).unwrap();
        let profiles = || {
            let mut v: Vec<String> = std::fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .filter(|n| n != "unrelated.txt")
                .collect();
            v.sort();
            v
        };
        let mut held = Vec::new();
        grow_to(&mut held, limit * 85 / 100);
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(profiles().len(), 3, "nothing below 90%: {:?}", profiles());
        grow_to(&mut held, limit * 92 / 100);
        wait_for("two near-limit profiles", Duration::from_secs(20), || {
            allocscope::gc::stats().near_limit_profiles >= 2
        });
        // the pruning of the second write is done once the file count is 2
        wait_for("pruning", Duration::from_secs(5), || profiles().len() == 2);
        let names = profiles();
        assert!(
            names
                .iter()
                .all(|n| !n.starts_with("heap-near-limit-0000") && n.ends_with(".pb.gz")),
            "the newest 2, no temporary files: {names:?}"
        );
        assert!(dir.join("unrelated.txt").exists());
        for n in &names {
            let gz = std::fs::read(dir.join(n)).unwrap();
            assert_eq!(&gz[..2], &[0x1f, 0x8b], "gzip");
            let mut raw = Vec::new();
            flate2::read::GzDecoder::new(&gz[..])
                .read_to_end(&mut raw)
                .unwrap();
            let p = pprof::protos::Profile::decode(raw.as_slice()).expect("pprof");
            let types: Vec<&str> = p
                .sample_type
                .iter()
                .map(|t| p.string_table[t.ty as usize].as_str())
                .collect();
            assert_eq!(
                types,
                [
                    "alloc_objects",
                    "alloc_space",
                    "inuse_objects",
                    "inuse_space"
                ]
            );
            assert!(!p.sample.is_empty(), "samples in {n}");
        }
        allocscope::profile::set_near_limit_profiles(None).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    });
}

/// With many threads' counter blocks a full check is expensive (about
/// 1 µs a block): checks stay under a small share of a core while the heap
/// is idle, and a trigger is still acted on promptly.
#[test]
fn many_threads_bound_the_checks() {
    fresh_process("many_threads_bound_the_checks", || {
        let mut parked = Vec::new();
        for _ in 0..300 {
            let (tx, rx) = std::sync::mpsc::channel::<()>();
            let (ready, go) = std::sync::mpsc::channel::<()>();
            let h = std::thread::spawn(move || {
                let v = std::hint::black_box(vec![0u8; 100]);
                ready.send(()).unwrap();
                let _ = rx.recv();
                drop(v);
            });
            go.recv().unwrap();
            parked.push((tx, h));
        }
        allocscope::gc::start_collector();
        std::thread::sleep(Duration::from_millis(300));
        let s0 = allocscope::gc::stats();
        let t0 = Instant::now();
        std::thread::sleep(Duration::from_millis(1500));
        let s1 = allocscope::gc::stats();
        let share = (s1.poll_time - s0.poll_time).as_secs_f64() / t0.elapsed().as_secs_f64();
        let per = (s1.poll_time - s0.poll_time) / (s1.polls - s0.polls).max(1) as u32;
        eprintln!(
            "{} blocks: {} checks in 1.5 s, {per:?} each, {:.3}% of a core",
            allocscope::counters::info().blocks,
            s1.polls - s0.polls,
            share * 100.0
        );
        assert!(s1.polls > s0.polls, "the backstop checks");
        assert!(
            share < 0.01,
            "idle checks take {:.3}% of a core",
            share * 100.0
        );
        let mut held = Vec::new();
        let goal = allocscope::gc::heap_goal();
        let crossed = SystemTime::now();
        grow_to(&mut held, goal + CHUNK as u64);
        wait_for("a cycle", Duration::from_secs(3), || {
            !allocscope::gc::cycles().is_empty()
        });
        let c = &allocscope::gc::cycles()[0];
        let latency = c.start.duration_since(crossed).unwrap_or_default();
        eprintln!("acted on {latency:?} after the growth started");
        assert!(latency < Duration::from_millis(300), "{latency:?}");
        for (tx, h) in parked {
            drop(tx);
            h.join().unwrap();
        }
    });
}
