use allocscope::scope::{Scope, InScope};
use allocscope::AllocScope;
#[global_allocator]
static A: AllocScope = AllocScope::system();
static CHECKOUT: Scope = Scope::new("checkout");
fn main() {
    allocscope::sampling::set_interval(4096);
    let v = CHECKOUT.within(|| vec![0u8; 100_000]);
    let t = std::thread::Builder::new().name("request-worker-3".into()).spawn(|| { let _g = CHECKOUT.enter(); let x: Vec<Vec<u8>> = (0..100).map(|_| vec![1u8; 1000]).collect(); std::mem::forget(x); }).unwrap();
    t.join().unwrap();
    let _ = async {}.in_scope(&CHECKOUT);
    for s in allocscope::scope::stats() { eprintln!("{:?}", s); }
    let tot = allocscope::stats();
    eprintln!("total {} {}", tot.allocations, tot.allocated_bytes);
    for g in allocscope::threads::stats() { eprintln!("{:?}", g); }
    drop(v);
}
