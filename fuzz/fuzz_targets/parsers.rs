//! Size/duration parsers and the config loader: never panic; accepted values round-trip.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "common/parsers.rs"]
mod body;

fuzz_target!(|data: &[u8]| body::run(data));
