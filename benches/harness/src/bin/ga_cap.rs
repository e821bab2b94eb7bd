//! cap 0.1 (a shared atomic byte count checked against a limit).

#[global_allocator]
static A: cap::Cap<std::alloc::System> = cap::Cap::new(std::alloc::System, usize::MAX);

fn main() {
    ga_workload::run()
}
