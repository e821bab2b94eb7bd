//! Not a peer: [`ga_workload::CallFloor`], a wrapper that only *calls*
//! `malloc` and tests the result, as any wrapper that counts refused
//! allocations exactly must, and does nothing else.

#[global_allocator]
static A: ga_workload::CallFloor = ga_workload::CallFloor;

fn main() {
    ga_workload::run()
}
