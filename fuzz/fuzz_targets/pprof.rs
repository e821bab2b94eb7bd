//! The pprof encoder: the decoded output matches the profile built from raw samples.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "common/pprof.rs"]
mod body;

fuzz_target!(|data: &[u8]| body::run(data));
