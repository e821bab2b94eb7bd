//! `#[global_allocator] static A: System`: the same `malloc`, without std's
//! default shim in between (the fastest way to call it).

#[global_allocator]
static A: std::alloc::System = std::alloc::System;

fn main() {
    ga_workload::run()
}
