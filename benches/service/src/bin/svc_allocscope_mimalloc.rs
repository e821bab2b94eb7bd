//! The service with allocscope around mimalloc (`AllocScope<MiMalloc>`),
//! the exporter started as in `svc_allocscope`.

use allocscope::AllocScope;
use mimalloc::MiMalloc;

#[global_allocator]
static ALLOC: AllocScope<MiMalloc> = AllocScope::new(MiMalloc);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let exporter = allocscope::server::start(allocscope::server::Config::load()?)?;
    println!("exporter={}", exporter.url());
    allocscope_service_bench::run(axum::Router::new())?;
    Ok(())
}
