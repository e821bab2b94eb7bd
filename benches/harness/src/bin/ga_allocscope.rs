//! allocscope wrapping `System`, sampling at `BENCH_INTERVAL` bytes (default
//! 512 KiB; 0 = sampling off, counting only).

#[global_allocator]
static A: allocscope::AllocScope = allocscope::AllocScope::system();

fn main() {
    if let Some(iv) = std::env::var("BENCH_INTERVAL")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        allocscope::sampling::set_interval(iv);
    }
    ga_workload::run()
}
