//! Body of the `parsers` fuzz target (also run by `tests/fuzz_replay.rs`):
//! `parse_size`, `parse_duration` and `Config::load_from` never panic, and
//! what the parsers accept round-trips.
//!
//! Input: NUL-separated parts. Every part is given to `parse_size` and
//! `parse_duration`; the first part is also written to a TOML file for
//! `Config::load_from`, and the other parts are `KEY=VALUE` environment
//! entries for it.
use std::time::Duration;

use allocscope::server::{parse_duration, parse_size, Config};

pub fn run(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('\0');
    let toml = parts.next().unwrap_or("");
    let env: Vec<(String, String)> = parts
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.to_string(), v.to_string())
        })
        .collect();
    for s in std::iter::once(toml).chain(env.iter().map(|(k, _)| k.as_str())) {
        sizes_and_durations(s);
    }
    for (_, v) in &env {
        sizes_and_durations(v);
    }
    load(toml, env);
}

fn sizes_and_durations(s: &str) {
    if let Ok(n) = parse_size(s) {
        assert_eq!(parse_size(&n.to_string()), Ok(n), "{s:?}");
        assert_eq!(parse_size(&format!("{n} B")), Ok(n), "{s:?}");
        if n % (1 << 10) == 0 {
            assert_eq!(parse_size(&format!("{}KiB", n >> 10)), Ok(n), "{s:?}");
        }
        if n % (1 << 30) == 0 {
            assert_eq!(parse_size(&format!("{}gib", n >> 30)), Ok(n), "{s:?}");
        }
    }
    if let Ok(d) = parse_duration(s) {
        let ms = u64::try_from(d.as_millis()).expect("built from u64 milliseconds");
        assert_eq!(
            d,
            Duration::from_millis(ms),
            "{s:?}: finer than a millisecond"
        );
        assert_eq!(parse_duration(&format!("{ms}ms")), Ok(d), "{s:?}");
        if ms % 1000 == 0 {
            assert_eq!(parse_duration(&format!("{}s", ms / 1000)), Ok(d), "{s:?}");
        }
    }
}

fn load(toml: &str, env: Vec<(String, String)>) {
    thread_local! {
        static FILE: std::path::PathBuf = std::env::temp_dir().join(format!(
            "allocscope-fuzz-parsers-{}-{:?}.toml",
            std::process::id(),
            std::thread::current().id()
        ));
    }
    FILE.with(|path| {
        std::fs::write(path, toml).expect("write the TOML file");
        let loaded = Config::load_from(Some(path), env);
        if let Ok(cfg) = loaded {
            assert!(
                cfg.validate().is_ok(),
                "load_from accepted an invalid config: {cfg:?}"
            );
        }
    });
}
