//! The service on jemalloc, as tikv-jemallocator's README sets it up. Built
//! with the package's features (`profiling` among them, for
//! `svc_jemalloc_prof`), but the profiler stays off: jemalloc's default
//! `opt.prof` is false.

use tikv_jemallocator::Jemalloc;

#[global_allocator]
static GLOBAL: Jemalloc = Jemalloc;

fn main() -> std::io::Result<()> {
    allocscope_service_bench::run(axum::Router::new())
}
