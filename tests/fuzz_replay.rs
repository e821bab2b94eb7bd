//! Replays every fuzz target's corpus (`fuzz/corpus/<target>/`) and kept
//! crashes (`fuzz/regressions/<target>/`) through the targets' own bodies
//! (`fuzz/fuzz_targets/common/*.rs`, shared with the cargo-fuzz targets):
//! what the fuzzers found stays fixed, without nightly or cargo-fuzz.
use std::path::{Path, PathBuf};

use allocscope::AllocScope;

#[global_allocator]
static ALLOC: AllocScope = AllocScope::system();

#[path = "../fuzz/fuzz_targets/common/alloc_ops.rs"]
mod alloc_ops;
#[cfg(feature = "server")]
#[path = "../fuzz/fuzz_targets/common/parsers.rs"]
mod parsers;
#[cfg(feature = "profile")]
#[path = "../fuzz/fuzz_targets/common/pprof.rs"]
mod pprof;
#[cfg(feature = "server")]
#[path = "../fuzz/fuzz_targets/common/query.rs"]
mod query;
#[path = "../fuzz/fuzz_targets/common/size_class.rs"]
mod size_class;

/// The inputs of `target`: its corpus and its kept crashes, sorted. The
/// corpus must not be empty.
fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut files = Vec::new();
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for e in entries {
            let path = e.expect("read the directory").path();
            if path.is_file() {
                files.push(path);
            }
        }
    }
    files.sort();
    assert!(
        files
            .iter()
            .any(|p| p.components().any(|c| c.as_os_str() == "corpus")),
        "no corpus for fuzz target {target}"
    );
    files
        .into_iter()
        .map(|p| {
            let data = std::fs::read(&p).expect("read an input");
            (p, data)
        })
        .collect()
}

/// Runs `body` over every input of `target`, naming the input that fails.
fn replay(target: &str, body: impl Fn(&[u8])) {
    for (path, data) in inputs(target) {
        if let Err(e) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(&data))) {
            std::panic::resume_unwind(Box::new(format!(
                "fuzz target {target} fails on {}: {:?}",
                path.display(),
                e.downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| e.downcast_ref::<&str>().copied())
            )));
        }
    }
}

#[test]
fn size_class_corpus() {
    replay("size_class", size_class::run);
}

#[test]
fn alloc_ops_corpus() {
    replay("alloc_ops", |d| alloc_ops::run(&ALLOC, d));
}

#[cfg(feature = "server")]
#[test]
fn parsers_corpus() {
    replay("parsers", parsers::run);
}

#[cfg(feature = "server")]
#[test]
fn query_corpus() {
    replay("query", query::run);
}

#[cfg(feature = "profile")]
#[test]
fn pprof_corpus() {
    replay("pprof", pprof::run);
}
