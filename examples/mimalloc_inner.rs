//! allocscope wrapping mimalloc: mimalloc does the allocating, allocscope
//! counts and samples on top of it. Any `GlobalAlloc` can be the inner
//! allocator (jemalloc through tikv-jemallocator the same way).
//!
//! `cargo run --release --example mimalloc_inner`
use allocscope::AllocScope;
use mimalloc::MiMalloc;

#[global_allocator]
static ALLOC: AllocScope<MiMalloc> = AllocScope::new(MiMalloc);

fn main() {
    // Some work on a few threads: blocks freed on another thread than the
    // one that allocated them, and threads that exit, are counted exactly.
    let (tx, rx) = std::sync::mpsc::channel::<Vec<String>>();
    let workers: Vec<_> = (0..4)
        .map(|t| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let batch: Vec<String> = (0..10_000)
                    .map(|i| format!("worker {t} item {i}"))
                    .collect();
                tx.send(batch).expect("the receiver is alive");
            })
        })
        .collect();
    drop(tx);
    for w in workers {
        w.join().expect("worker");
    }
    let kept: Vec<Vec<String>> = rx.iter().collect();

    let s = allocscope::stats();
    println!(
        "{} allocations, {} deallocations, {} reallocations, {} failures",
        s.allocations, s.deallocations, s.reallocations, s.alloc_failures
    );
    println!(
        "live: {} bytes in {} objects (requested sizes, not mimalloc's rounded ones)",
        s.live_bytes(),
        s.live_objects()
    );
    println!("size classes holding the most live bytes:");
    let mut classes: Vec<_> = s
        .size_classes
        .iter()
        .filter(|c| c.live_bytes() > 0)
        .collect();
    classes.sort_by_key(|c| std::cmp::Reverse(c.live_bytes()));
    for c in classes.iter().take(5) {
        println!(
            "  {:>6}..={:<6} bytes: {:>8} live bytes in {:>6} objects",
            c.min_size,
            c.max_size,
            c.live_bytes(),
            c.live_objects()
        );
    }

    // With mimalloc inside, collection cycles do not call glibc's
    // `malloc_trim` (release to the OS is detected as not applicable); a
    // reclaimer can ask mimalloc to purge instead (`mi_collect`, from
    // libmimalloc-sys with its `extended` feature).
    let strings: usize = kept.iter().map(Vec::len).sum();
    println!("kept {strings} strings from {} workers", kept.len());
}
