//! Size-class mapping: every size maps to a class whose bounds contain it.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "common/size_class.rs"]
mod body;

fuzz_target!(|data: &[u8]| body::run(data));
