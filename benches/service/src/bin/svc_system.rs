//! The service on the default allocator (no `#[global_allocator]`: std's
//! `System`, glibc's malloc).

fn main() -> std::io::Result<()> {
    allocscope_service_bench::run(axum::Router::new())
}
