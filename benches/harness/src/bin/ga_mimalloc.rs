//! mimalloc, bare.

#[global_allocator]
static A: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    ga_workload::run()
}
