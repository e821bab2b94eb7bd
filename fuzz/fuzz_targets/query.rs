//! Every endpoint's query parsing: never panic; accepted values within documented ranges.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "common/query.rs"]
mod body;

fuzz_target!(|data: &[u8]| body::run(data));
