//! Body of the `size_class` fuzz target (also run by `tests/fuzz_replay.rs`):
//! every size maps to a class whose bounds contain it.
use allocscope::size_class::{class_max_size, class_min_size, class_of, NUM_CLASSES};

/// The input is a little-endian `usize`: its first 8 bytes (4 on 32-bit),
/// zero-padded when shorter.
pub fn run(data: &[u8]) {
    let mut b = [0u8; std::mem::size_of::<usize>()];
    let n = data.len().min(b.len());
    b[..n].copy_from_slice(&data[..n]);
    check(usize::from_le_bytes(b));
}

/// The property for one size.
pub fn check(size: usize) {
    let c = class_of(size);
    assert!(c < NUM_CLASSES);
    assert!(class_min_size(c) <= size && size <= class_max_size(c));
}
