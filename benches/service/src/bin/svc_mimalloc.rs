//! The service on mimalloc, as mimalloc's README sets it up.

use mimalloc::MiMalloc;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

fn main() -> std::io::Result<()> {
    allocscope_service_bench::run(axum::Router::new())
}
