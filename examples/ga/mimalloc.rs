//! mimalloc, bare.
#[path = "workload.rs"]
mod workload;

#[global_allocator]
static A: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    workload::run()
}
