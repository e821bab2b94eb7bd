//! stats_alloc 0.1 (four shared atomics per alloc+free pair, counted before
//! the inner call; tail-calls `malloc`).

#[global_allocator]
static A: stats_alloc::StatsAlloc<std::alloc::System> = stats_alloc::StatsAlloc::system();

fn main() {
    ga_workload::run()
}
