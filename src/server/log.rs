//! The periodic info line, like the Go seed's
//! `heap=5200 KB, sys=10240 KB, num_gc=15, goroutines=9`:
//!
//! `heap=5.1 MiB live (52013 objects), rss=10.0 MiB, allocs/s=1834, collections=0, threads=9`
//!
//! Owns the line's format and the loop that emits it through `tracing`
//! (target `allocscope`; with no tracing subscriber installed the event goes
//! to the `log` facade). Reads snapshots only.

use std::time::{Duration, Instant};

/// What the line reports at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct LogSample {
    pub live_bytes: u64,
    pub live_objects: u64,
    pub allocations: u64,
    /// Resident set size, when the OS tells.
    pub rss_bytes: Option<u64>,
    /// Collection cycles run so far, all reasons.
    pub collections: u64,
    /// OS threads of the process, when the OS tells.
    pub threads: Option<u64>,
}

impl LogSample {
    pub(crate) fn take() -> LogSample {
        let s = crate::stats();
        let p = ProcInfo::read();
        LogSample {
            live_bytes: s.live_bytes(),
            live_objects: s.live_objects(),
            allocations: s.allocations,
            rss_bytes: p.map(|p| p.rss_bytes),
            collections: crate::gc::stats().cycles(),
            threads: p.map(|p| p.threads),
        }
    }
}

/// Bytes as MiB with one decimal.
pub(crate) fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
}

/// The info line for `now`, with rates against `prev` taken `elapsed` ago.
pub(crate) fn format_line(now: &LogSample, prev: &LogSample, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64();
    let rate = if secs > 0.0 {
        (now.allocations.saturating_sub(prev.allocations) as f64 / secs).round() as u64
    } else {
        0
    };
    let or_na = |v: Option<String>| v.unwrap_or_else(|| "n/a".to_string());
    format!(
        "heap={} live ({} objects), rss={}, allocs/s={}, collections={}, threads={}",
        mib(now.live_bytes),
        now.live_objects,
        or_na(now.rss_bytes.map(mib)),
        rate,
        now.collections,
        or_na(now.threads.map(|t| t.to_string())),
    )
}

/// Emits the line every `every` until `shutdown` says stop.
pub(crate) async fn run(every: Duration, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    if every.is_zero() {
        return;
    }
    let mut prev = LogSample::take();
    let mut at = Instant::now();
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = super::shutting_down(&mut shutdown) => return,
        }
        let now = LogSample::take();
        let line = format_line(&now, &prev, at.elapsed());
        tracing::info!(target: "allocscope", "{line}");
        prev = now;
        at = Instant::now();
    }
}

/// What the OS says about this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ProcInfo {
    pub rss_bytes: u64,
    pub threads: u64,
}

impl ProcInfo {
    /// Asks the OS (`crate::sys`: Linux's `/proc/self/statm` and
    /// `/proc/self/stat`); `None` elsewhere or on failure.
    pub(crate) fn read() -> Option<ProcInfo> {
        Some(ProcInfo {
            rss_bytes: crate::sys::resident_bytes()?,
            threads: crate::sys::thread_count()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_format() {
        let prev = LogSample {
            allocations: 1_000,
            ..Default::default()
        };
        let now = LogSample {
            live_bytes: 5_347_738,
            live_objects: 52013,
            allocations: 21_000,
            rss_bytes: Some(10 * 1024 * 1024),
            collections: 17,
            threads: Some(9),
        };
        assert_eq!(
            format_line(&now, &prev, Duration::from_secs(10)),
            "heap=5.1 MiB live (52013 objects), rss=10.0 MiB, allocs/s=2000, collections=17, threads=9"
        );
        let unknown = LogSample::default();
        assert_eq!(
            format_line(&unknown, &unknown, Duration::ZERO),
            "heap=0.0 MiB live (0 objects), rss=n/a, allocs/s=0, collections=0, threads=n/a"
        );
    }

    /// The loop emits the line through `tracing` every interval and stops
    /// when told.
    #[test]
    fn loop_emits_through_tracing() {
        use std::sync::{Arc, Mutex};
        #[derive(Clone)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf(Arc::new(Mutex::new(Vec::new())));
        let w = buf.clone();
        let sub = tracing_subscriber::fmt()
            .with_writer(move || w.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(sub, || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let (tx, rx) = tokio::sync::watch::channel(false);
                let h = tokio::spawn(run(Duration::from_millis(30), rx));
                tokio::time::sleep(Duration::from_millis(200)).await;
                tx.send(true).unwrap();
                tokio::time::timeout(Duration::from_secs(2), h)
                    .await
                    .expect("the loop stops when told")
                    .unwrap();
            });
        });
        let out = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines = out.lines().filter(|l| l.contains("heap=")).count();
        assert!(lines >= 2, "{out}");
        assert!(
            out.contains("INFO") && out.contains("collections=0"),
            "{out}"
        );
    }

    #[test]
    fn proc_info_is_read() {
        // (the parsing of `/proc/self/stat` and `statm` is tested in
        // `crate::sys`)
        #[cfg(target_os = "linux")]
        {
            let me = ProcInfo::read().unwrap();
            assert!(me.threads >= 1 && me.rss_bytes > 0);
        }
    }
}
