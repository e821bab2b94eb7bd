//! `/debug/leaks`: the leak suspects, and the loop that feeds them.
//!
//! Owns the exporter's [`LeakTracker`] (one per exporter), the background
//! task that records a snapshot every `leak_snapshot_interval` (the heap
//! profile is captured and reduced on a blocking thread, never on the
//! request path nor an async worker), the JSON answer and the landing
//! page's table. The statistics are [`crate::profile::LeakTracker`]'s.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::watch;
use warp::http::StatusCode;

use super::landing::escape;
use super::{query_get, Reply};
use crate::profile::{
    HeapProfile, LeakReport, LeakSuspect, LeakTracker, LEAK_SCORE_THRESHOLD, MIN_LEAK_SNAPSHOTS,
};

/// The exporter's leak snapshots.
#[derive(Debug)]
pub(crate) struct Leaks {
    /// Zero: snapshots are off.
    interval: Duration,
    tracker: Mutex<LeakTracker>,
    /// Wall time of the newest snapshot (capture and record), in ns.
    last_snapshot_ns: AtomicU64,
}

impl Leaks {
    pub(crate) fn new(interval: Duration, ring: usize) -> Leaks {
        Leaks {
            interval,
            tracker: Mutex::new(LeakTracker::new(ring)),
            last_snapshot_ns: AtomicU64::new(0),
        }
    }

    fn tracker(&self) -> MutexGuard<'_, LeakTracker> {
        self.tracker.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The newest report and the tracker's memory.
    pub(crate) fn report(&self) -> (LeakReport, usize) {
        let t = self.tracker();
        (t.report().clone(), t.memory_bytes())
    }

    /// `(suspects over the threshold, the tracker's memory in bytes)`, for
    /// `/metrics`.
    pub(crate) fn gauges(&self) -> (usize, usize) {
        let t = self.tracker();
        (t.report().suspects, t.memory_bytes())
    }

    /// Captures the heap profile and records it: on a blocking thread.
    fn snapshot(&self) {
        let t = Instant::now();
        let profile = HeapProfile::capture();
        self.tracker().record(&profile);
        drop(profile);
        let ns = u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last_snapshot_ns.store(ns, Relaxed);
    }
}

/// Records a snapshot every interval (the first at once) until `shutdown`
/// says stop. Returns at once when snapshots are off.
pub(crate) async fn run(leaks: Arc<Leaks>, mut shutdown: watch::Receiver<bool>) {
    if leaks.interval.is_zero() {
        return;
    }
    let mut tick = tokio::time::interval(leaks.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = super::shutting_down(&mut shutdown) => return,
        }
        let l = leaks.clone();
        if let Err(e) =
            tokio::task::spawn_blocking(move || crate::scope::ALLOCSCOPE.within(|| l.snapshot()))
                .await
        {
            tracing::warn!(target: "allocscope", "leak snapshot failed: {e}");
        }
    }
}

/// Parses `/debug/leaks`'s `all` (0 or 1: also list the stacks below the
/// threshold).
pub(crate) fn all_param(q: &[(String, String)]) -> Result<bool, Reply> {
    match query_get(q, "all") {
        None | Some("0") => Ok(false),
        Some("1") => Ok(true),
        Some(v) => Err(Reply::error(
            400,
            &format!("invalid all {v:?}: expected 0 (suspects only, the default) or 1"),
        )),
    }
}

fn suspect_json(s: &LeakSuspect) -> Value {
    json!({
        "stack": s.stack,
        "inuse_bytes": s.inuse_bytes,
        "growth_bytes_per_hour": s.growth_bytes_per_hour.round(),
        "oldest_age_seconds": s.oldest_age.map(|a| a.as_secs_f64()),
        "score": (s.score * 1000.0).round() / 1000.0,
    })
}

/// `GET /debug/leaks[?all=1]`: the suspects as JSON, most suspicious first.
pub(crate) fn get(leaks: &Leaks, q: &[(String, String)]) -> Reply {
    let all = match all_param(q) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let (report, memory) = leaks.report();
    let suspects: Vec<Value> = report.suspects().iter().map(suspect_json).collect();
    let mut body = json!({
        "interval_seconds": leaks.interval.as_secs_f64(),
        "snapshots": report.snapshots,
        "suspects": suspects,
        "span_seconds": report.span.as_secs_f64(),
        "min_snapshots": MIN_LEAK_SNAPSHOTS,
        "score_threshold": LEAK_SCORE_THRESHOLD,
        "suspects_over_threshold": report.suspects,
        "tracked_stacks": report.tracked_stacks,
        "memory_bytes": memory,
        "last_snapshot_seconds": leaks.last_snapshot_ns.load(Relaxed) as f64 / 1e9,
    });
    if leaks.interval.is_zero() {
        body["note"] = json!("leak snapshots are off: set leak_snapshot_interval");
    } else if report.snapshots < MIN_LEAK_SNAPSHOTS {
        body["note"] = json!(format!(
            "stacks are judged from {MIN_LEAK_SNAPSHOTS} snapshots on ({} so far, one every {} s)",
            report.snapshots,
            leaks.interval.as_secs_f64()
        ));
    }
    if all {
        let below: Vec<Value> = report.ranked[report.suspects().len()..]
            .iter()
            .map(suspect_json)
            .collect();
        body["below_threshold"] = json!(below);
    }
    let mut text = body.to_string().into_bytes();
    text.push(b'\n');
    Reply::new(StatusCode::OK, "application/json", text)
}

/// `12 s`, `3.5 min`, `2.0 h`.
fn human_age(secs: f64) -> String {
    if secs < 120.0 {
        format!("{secs:.0} s")
    } else if secs < 7200.0 {
        format!("{:.1} min", secs / 60.0)
    } else {
        format!("{:.1} h", secs / 3600.0)
    }
}

/// The age from which a suspect's flamegraph shows blocks: half the time
/// its oldest sample has lived, or half the ring's span when ages are not
/// known; whole seconds, at least 1.
fn min_age_secs(s: &LeakSuspect, span: Duration) -> u64 {
    let basis = s.oldest_age.unwrap_or(span).as_secs_f64();
    ((basis / 2.0).floor() as u64).max(1)
}

/// The landing page's section: the top suspects, with links to their
/// age-filtered flamegraphs.
pub(crate) fn landing_section(leaks: &Leaks) -> String {
    let (report, _) = leaks.report();
    let head = format!(
        "<p>Every {} s the exporter records each stack's in-use bytes (last {} snapshots, \
         {} kept); a stack whose in-use bytes grow steadily and are kept scores \
         {LEAK_SCORE_THRESHOLD} or more. <a href=\"/debug/leaks?all=1\">JSON</a></p>",
        leaks.interval.as_secs_f64(),
        report.snapshots,
        leaks.tracker().ring_len(),
    );
    if leaks.interval.is_zero() {
        return "<p id=\"leaks-note\">Leak snapshots are off \
                (<code>leak_snapshot_interval = \"0\"</code>).</p>"
            .to_string();
    }
    let suspects = report.suspects();
    if suspects.is_empty() {
        let why = if report.snapshots < MIN_LEAK_SNAPSHOTS {
            format!(
                "judged from {MIN_LEAK_SNAPSHOTS} snapshots on; {} so far",
                report.snapshots
            )
        } else {
            "no stack grows steadily".to_string()
        };
        return format!("{head}<p id=\"leaks-note\">No leak suspects ({why}).</p>");
    }
    let rows: String = suspects
        .iter()
        .take(5)
        .enumerate()
        .map(|(i, s)| {
            let leaf = s.stack.first().map_or("?", String::as_str);
            let min_age = min_age_secs(s, report.span);
            let href = format!(
                "/debug/pprof/heap.svg?sample=inuse_space&amp;min_age={min_age}s&amp;s={}",
                super::encode_query_value(leaf)
            );
            format!(
                "<tr class=\"suspect\"><td>{}</td><td style=\"text-align:left\" \
                 title=\"{}\"><code class=\"leaf\">{}</code></td><td>{}</td><td>{}/h</td>\
                 <td>{}</td><td>{:.2}</td><td><a href=\"{href}\">blocks older than {}</a></td></tr>",
                i + 1,
                escape(&s.stack.join(" \u{2190} ")),
                escape(leaf),
                super::log::mib(s.inuse_bytes),
                super::log::mib(s.growth_bytes_per_hour.max(0.0) as u64),
                s.oldest_age
                    .map_or_else(|| "n/a".to_string(), |a| human_age(a.as_secs_f64())),
                s.score,
                human_age(min_age as f64),
            )
        })
        .collect();
    format!(
        "{head}<table id=\"leaks\"><thead><tr><th>#</th><th>function</th><th>in use</th>\
         <th>growth</th><th>oldest sample</th><th>score</th><th>flamegraph</th></tr></thead>\
         <tbody>{rows}</tbody></table>"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_and_encoding() {
        let q = |s: &str| super::super::parse_query(s).unwrap();
        assert!(!all_param(&q("")).unwrap());
        assert!(all_param(&q("all=1")).unwrap());
        assert!(!all_param(&q("all=0")).unwrap());
        for bad in ["all=yes", "all=", "all=2"] {
            assert_eq!(all_param(&q(bad)).unwrap_err().status, 400, "{bad}");
        }
        assert_eq!(
            super::super::encode_query_value("a::b<T> c"),
            "a%3A%3Ab%3CT%3E%20c"
        );
        // what a link encodes, the query parser decodes back
        let name = "<app::Cache as core::ops::Drop>::drop {{closure}} +&=%";
        let link = format!("s={}", super::super::encode_query_value(name));
        assert_eq!(
            super::super::parse_query(&link).unwrap(),
            [("s".to_string(), name.to_string())]
        );
        assert_eq!(human_age(30.0), "30 s");
        assert_eq!(human_age(600.0), "10.0 min");
        assert_eq!(human_age(7200.0), "2.0 h");
        let s = LeakSuspect {
            stack: vec!["f".into()],
            inuse_bytes: 1,
            growth_bytes_per_hour: 1.0,
            oldest_age: None,
            score: 3.0,
        };
        assert_eq!(min_age_secs(&s, Duration::from_secs(240)), 120);
        assert_eq!(min_age_secs(&s, Duration::ZERO), 1);
        let s = LeakSuspect {
            oldest_age: Some(Duration::from_secs(601)),
            ..s
        };
        assert_eq!(min_age_secs(&s, Duration::from_secs(240)), 300);
    }

    #[test]
    fn answers_before_and_without_snapshots() {
        let l = Leaks::new(Duration::from_secs(60), 60);
        let r = get(&l, &[]);
        assert_eq!(r.status, 200);
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["interval_seconds"], 60.0);
        assert_eq!(v["snapshots"], 0);
        assert_eq!(v["suspects"], json!([]));
        assert!(v["note"].as_str().unwrap().contains("5 snapshots"));
        assert!(landing_section(&l).contains("0 so far"));
        let off = Leaks::new(Duration::ZERO, 60);
        let v: Value = serde_json::from_slice(&get(&off, &[]).body).unwrap();
        assert!(v["note"].as_str().unwrap().contains("off"));
        assert!(landing_section(&off).contains("off"));
        assert_eq!(get(&l, &[("all".into(), "x".into())]).status, 400);
    }
}
