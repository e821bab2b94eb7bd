//! The service with allocscope around `System`, set up as its README says:
//! the exporter started with `Config::load()` (default sampling every
//! 512 KiB). `benches/service.sh` sets `ALLOCSCOPE_ADDR=127.0.0.1:0` and
//! scrapes `/metrics` once a second.

use allocscope::AllocScope;

#[global_allocator]
static ALLOC: AllocScope = AllocScope::system();

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let exporter = allocscope::server::start(allocscope::server::Config::load()?)?;
    println!("exporter={}", exporter.url());
    allocscope_service_bench::run(axum::Router::new())?;
    Ok(())
}
