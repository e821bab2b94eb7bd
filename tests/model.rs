//! Scenario: `AllocScope<Truth>`; a model-based property test. Random
//! sequences of alloc / alloc_zeroed / realloc / dealloc with sizes up to
//! 4 MiB and alignments up to 4096 are run through the allocator; the
//! thread's `measure()` delta must equal the model computed from the
//! operations alone, and the global snapshot must equal the ground truth in
//! every class.
mod common;

use std::alloc::{GlobalAlloc, Layout};

use allocscope::{AllocScope, ThreadStats};
use common::{assert_exact, Truth, FAIL_SIZE};
use proptest::prelude::*;

#[global_allocator]
static ALLOC: AllocScope<Truth> = AllocScope::new(Truth {
    inner: std::alloc::System,
});

#[derive(Debug, Clone)]
enum Op {
    Alloc {
        size: usize,
        align_log2: u32,
        zeroed: bool,
    },
    Realloc {
        idx: usize,
        new_size: usize,
    },
    Dealloc {
        idx: usize,
    },
}

fn size() -> impl Strategy<Value = usize> {
    prop_oneof![
        4 => 0usize..=300,
        3 => 0usize..=70_000,
        2 => 0usize..=(4 << 20),
        1 => Just(FAIL_SIZE),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (size(), 0u32..=12, any::<bool>()).prop_map(|(size, align_log2, zeroed)| Op::Alloc { size, align_log2, zeroed }),
        2 => (any::<usize>(), size()).prop_map(|(idx, new_size)| Op::Realloc { idx, new_size: new_size.max(1) }),
        3 => any::<usize>().prop_map(|idx| Op::Dealloc { idx }),
    ]
}

fn run(ops: &[Op]) -> Result<(), TestCaseError> {
    let mut live: Vec<(*mut u8, Layout)> = Vec::with_capacity(ops.len());
    let mut model = ThreadStats::default();
    // the model, computed from the operations and their results
    let (_, got) = allocscope::measure(|| {
        for op in ops {
            match *op {
                Op::Alloc {
                    size,
                    align_log2,
                    zeroed,
                } => {
                    let layout = Layout::from_size_align(size, 1 << align_log2).unwrap();
                    // SAFETY: valid layout (size 0 is accepted by System).
                    let p = unsafe {
                        if zeroed {
                            ALLOC.alloc_zeroed(layout)
                        } else {
                            ALLOC.alloc(layout)
                        }
                    };
                    if p.is_null() {
                        model.alloc_failures += 1;
                    } else {
                        if zeroed && size > 0 {
                            // SAFETY: `p` is valid for `size` bytes.
                            let s = unsafe { std::slice::from_raw_parts(p, size) };
                            assert!(s.iter().all(|&b| b == 0));
                        }
                        model.allocations += 1;
                        model.allocated_bytes += size as u64;
                        live.push((p, layout));
                    }
                }
                Op::Realloc { idx, new_size } if !live.is_empty() => {
                    let i = idx % live.len();
                    let (p, layout) = live[i];
                    // SAFETY: `p` is live with `layout`; new_size > 0.
                    let q = unsafe { ALLOC.realloc(p, layout, new_size) };
                    if q.is_null() {
                        model.alloc_failures += 1;
                    } else {
                        model.reallocations += 1;
                        model.allocations += 1;
                        model.deallocations += 1;
                        model.allocated_bytes += new_size as u64;
                        model.freed_bytes += layout.size() as u64;
                        live[i] = (
                            q,
                            Layout::from_size_align(new_size, layout.align()).unwrap(),
                        );
                    }
                }
                Op::Dealloc { idx } if !live.is_empty() => {
                    let (p, layout) = live.swap_remove(idx % live.len());
                    // SAFETY: `p` is live with `layout`.
                    unsafe { ALLOC.dealloc(p, layout) };
                    model.deallocations += 1;
                    model.freed_bytes += layout.size() as u64;
                }
                _ => {}
            }
        }
        for (p, layout) in live.drain(..) {
            // SAFETY: every remaining block is live with its layout.
            unsafe { ALLOC.dealloc(p, layout) };
            model.deallocations += 1;
            model.freed_bytes += layout.size() as u64;
        }
    });
    prop_assert_eq!(got, model);
    assert_exact("after a random sequence");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
    #[test]
    fn random_sequences_match_the_model(ops in proptest::collection::vec(op(), 1..200)) {
        run(&ops)?;
    }
}
