//! Size-class mapping: every size maps to a class whose bounds contain it.
#![no_main]
use allocscope::size_class::{class_max_size, class_min_size, class_of, NUM_CLASSES};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|size: usize| {
    let c = class_of(size);
    assert!(c < NUM_CLASSES);
    assert!(class_min_size(c) <= size && size <= class_max_size(c));
});
