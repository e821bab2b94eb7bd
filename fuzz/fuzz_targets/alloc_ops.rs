//! Allocation op sequences through `AllocScope` against a model: the
//! thread's `measure()` delta equals what the operations imply.
#![no_main]
use allocscope::AllocScope;
use libfuzzer_sys::fuzz_target;

#[path = "common/alloc_ops.rs"]
mod body;

#[global_allocator]
static ALLOC: AllocScope = AllocScope::system();

fuzz_target!(|data: &[u8]| body::run(&ALLOC, data));
