//! `#[global_allocator] static A: System`: the same `malloc`, without std's
//! default shim in between (the fastest way to call it).
#[path = "workload.rs"]
mod workload;

#[global_allocator]
static A: std::alloc::System = std::alloc::System;

fn main() {
    workload::run()
}
