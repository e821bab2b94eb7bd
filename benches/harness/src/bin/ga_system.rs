//! `System` as every Rust program has it by default: no `#[global_allocator]`
//! (allocations go through std's `__rdl_alloc` to `malloc`). The baseline.

fn main() {
    ga_workload::run()
}
