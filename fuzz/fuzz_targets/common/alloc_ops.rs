//! Body of the `alloc_ops` fuzz target (also run by `tests/fuzz_replay.rs`):
//! allocation op sequences through `AllocScope` against a model; the
//! thread's `measure()` delta equals what the operations imply.
use std::alloc::{GlobalAlloc, Layout};

use allocscope::{AllocScope, ThreadStats};

/// `alloc` must be the process's `#[global_allocator]` (`measure()` counts
/// through it). Four bytes per op: `op a b c`.
pub fn run(alloc: &AllocScope, data: &[u8]) {
    let mut live: Vec<(*mut u8, Layout)> = Vec::with_capacity(data.len());
    let mut model = ThreadStats::default();
    let ((), got) = allocscope::measure(|| {
        for chunk in data.chunks(4) {
            let [op, a, b, c] = match *chunk {
                [op, a, b, c] => [op, a, b, c],
                _ => break,
            };
            let size = (usize::from(a) << 8 | usize::from(b)) << (c % 8);
            match op % 4 {
                0 | 1 => {
                    let layout = Layout::from_size_align(size, 1 << (c % 13)).unwrap();
                    // SAFETY: a zero size is allowed by AllocScope (it
                    // counts it and forwards to the system allocator).
                    let p = unsafe {
                        if op % 4 == 0 {
                            alloc.alloc(layout)
                        } else {
                            alloc.alloc_zeroed(layout)
                        }
                    };
                    if p.is_null() {
                        model.alloc_failures += 1;
                    } else {
                        model.allocations += 1;
                        model.allocated_bytes += size as u64;
                        live.push((p, layout));
                    }
                }
                2 if !live.is_empty() => {
                    let i = usize::from(a) % live.len();
                    let (p, l) = live[i];
                    let new = size.max(1);
                    // SAFETY: `p` is live with layout `l`; `new` is non-zero.
                    let q = unsafe { alloc.realloc(p, l, new) };
                    if q.is_null() {
                        model.alloc_failures += 1;
                    } else {
                        model.reallocations += 1;
                        model.allocations += 1;
                        model.deallocations += 1;
                        model.allocated_bytes += new as u64;
                        model.freed_bytes += l.size() as u64;
                        live[i] = (q, Layout::from_size_align(new, l.align()).unwrap());
                    }
                }
                3 if !live.is_empty() => {
                    let (p, l) = live.swap_remove(usize::from(a) % live.len());
                    // SAFETY: `p` is live with layout `l`.
                    unsafe { alloc.dealloc(p, l) };
                    model.deallocations += 1;
                    model.freed_bytes += l.size() as u64;
                }
                _ => {}
            }
        }
        for (p, l) in live.drain(..) {
            // SAFETY: `p` is live with layout `l`.
            unsafe { alloc.dealloc(p, l) };
            model.deallocations += 1;
            model.freed_bytes += l.size() as u64;
        }
    });
    assert_eq!(got, model);
}
