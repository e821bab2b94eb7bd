//! The service with pprof-alloc's wrapper around `System`, as its README
//! sets it up (`PprofAlloc::new().with_pprof().with_stats()`: the wrapper
//! sampler at its default 512 KiB, `declare_allocator_kind!`), its profile
//! (`generate_pprof()`) served on `GET /debug/pprof/allocs`.

use axum::http::StatusCode;
use axum::routing::get;

#[global_allocator]
static GLOBAL: pprof_alloc::PprofAlloc = pprof_alloc::PprofAlloc::new().with_pprof().with_stats();

pprof_alloc::declare_allocator_kind!(pprof_alloc::allocator::AllocatorKind::Glibc);

async fn allocs() -> Result<Vec<u8>, (StatusCode, String)> {
    pprof_alloc::generate_pprof().map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

fn main() -> std::io::Result<()> {
    allocscope_service_bench::run(axum::Router::new().route("/debug/pprof/allocs", get(allocs)))
}
