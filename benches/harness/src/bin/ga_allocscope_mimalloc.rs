//! allocscope wrapping mimalloc (`BENCH_INTERVAL` as in `ga_allocscope`).

#[global_allocator]
static A: allocscope::AllocScope<mimalloc::MiMalloc> =
    allocscope::AllocScope::new(mimalloc::MiMalloc);

fn main() {
    if let Some(iv) = std::env::var("BENCH_INTERVAL")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        allocscope::sampling::set_interval(iv);
    }
    ga_workload::run()
}
