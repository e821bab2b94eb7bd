//! Size classes: which bucket an allocation of `size` bytes is counted in.
//!
//! Owns the mapping from a requested size to a public size class and to the
//! internal counter slot the hot path bumps. Pure functions only; nothing here
//! allocates, locks or panics.
//!
//! Public classes (what [`crate::Stats::size_classes`] reports, ascending):
//! - 16 classes in 8-byte steps: `1..=8`, `9..=16`, …, `121..=128` (size 0 is
//!   counted in the first class);
//! - then four classes per power of two, each at most 25% wider than the bound
//!   below it: `129..=160`, `161..=192`, `193..=224`, `225..=256`, `257..=320`, …
//!   up to `..=1 GiB`;
//! - one last class for everything larger (`max_size == usize::MAX`).
//!
//! Internally the hot path counts sizes up to 256 bytes (`SMALL_MAX`) *exactly* (one
//! counter per byte size, so byte totals are `count × size` and need no second
//! add), and larger sizes per class with a count and a byte sum.

/// Largest size counted in an exact per-size slot on the hot path.
pub(crate) const SMALL_MAX: usize = 256;
/// Number of exact per-size slots (`0..=SMALL_MAX`).
pub(crate) const SMALL_SLOTS: usize = SMALL_MAX + 1;

/// log2 of the bound below which classes are 8-byte steps (128).
const LINEAR_LOG2: u32 = 7;
/// Number of 8-byte classes (`..=8` to `..=128`).
const LINEAR_CLASSES: usize = 16;
/// The last power-of-two exponent whose four classes are separate: classes
/// exist up to `2^(TOP_LOG2 + 1)` = 1 GiB.
const TOP_LOG2: u32 = 29;
/// Number of public size classes, the overflow class included.
pub const NUM_CLASSES: usize = LINEAR_CLASSES + ((TOP_LOG2 - LINEAR_LOG2 + 1) as usize) * 4 + 1;

/// First exponent handled by the large slots (sizes above `SMALL_MAX` = 2^8).
const LARGE_FIRST_LOG2: u32 = 8;
/// Number of large slots: four per exponent from 2^8 to 2^29, plus overflow.
pub(crate) const LARGE_SLOTS: usize = ((TOP_LOG2 - LARGE_FIRST_LOG2 + 1) as usize) * 4 + 1;
/// Public class index of large slot 0.
const LARGE_CLASS_OFFSET: usize = NUM_CLASSES - LARGE_SLOTS;

/// The public size class index of an allocation of `size` bytes.
#[inline]
pub fn class_of(size: usize) -> usize {
    if size <= 128 {
        // 0 and 1..=8 -> 0; 9..=16 -> 1; ...; 121..=128 -> 15
        size.saturating_sub(1) >> 3
    } else {
        let (k, j) = log_split(size);
        if k > TOP_LOG2 {
            NUM_CLASSES - 1
        } else {
            LINEAR_CLASSES + ((k - LINEAR_LOG2) as usize) * 4 + j
        }
    }
}

/// For `size > 1`: `k` with `2^k < size <= 2^(k+1)` and the quarter `j` (0..4)
/// of that range the size falls in.
#[inline(always)]
fn log_split(size: usize) -> (u32, usize) {
    let s = size - 1;
    let k = usize::BITS - 1 - s.leading_zeros();
    let j = (s >> (k - 2)) & 3;
    (k, j)
}

/// Sizes up to this many bytes find their large slot in [`LARGE_SLOT_TABLE`].
const TABLE_MAX: usize = 64 * 1024;

/// The large slot of every size in `SMALL_MAX + 1 ..= TABLE_MAX`, indexed by
/// `(size - 1) / 64`: every class bound in that range is a multiple of 64,
/// so the 64 sizes sharing an index share a class. 1 KiB, read-only.
static LARGE_SLOT_TABLE: [u8; TABLE_MAX / 64] = {
    let mut t = [0u8; TABLE_MAX / 64];
    let mut i = SMALL_MAX / 64;
    while i < TABLE_MAX / 64 {
        t[i] = large_slot_computed(i * 64 + 1) as u8;
        i += 1;
    }
    t
};

/// The large counter slot of a size above [`SMALL_MAX`]. Never panics.
///
/// Up to 64 KiB (nearly every large allocation: vector growth, buffers) a
/// table lookup (`lea`, `shr`, `movzx`); above, [`large_slot_computed`].
#[inline(always)]
pub(crate) fn large_slot(size: usize) -> usize {
    debug_assert!(size > SMALL_MAX);
    let slot = if size <= TABLE_MAX {
        // `size - 1 < TABLE_MAX`: in range (`get` keeps it panic-free).
        LARGE_SLOT_TABLE
            .get(size.wrapping_sub(1) >> 6)
            .map_or(0, |&slot| usize::from(slot))
    } else {
        large_slot_computed(size)
    };
    // SAFETY: `large_slot_computed` returns at most `LARGE_SLOTS - 1`, and
    // the table holds its values (`slot_table_matches_arithmetic`).
    unsafe { std::hint::assert_unchecked(slot < LARGE_SLOTS) };
    slot
}

/// [`large_slot`] by arithmetic: with `s = size - 1` and `k = ilog2(s)`, the
/// slot is `4(k - 8) + j` where `j` is the two bits below the top one: a
/// `bsr`, a shift and a `lea`. The bounds are written so the compiler sees
/// the slot is in range.
#[inline(always)]
const fn large_slot_computed(size: usize) -> usize {
    let s = size.wrapping_sub(1);
    let k = (s | 1).ilog2(); // `| 1`: never 0, so no panic branch
    if k > TOP_LOG2 {
        return LARGE_SLOTS - 1;
    }
    let k = if k < LARGE_FIRST_LOG2 {
        LARGE_FIRST_LOG2
    } else {
        k
    };
    let j = (s >> (k - 2)) & 3;
    (k - LARGE_FIRST_LOG2) as usize * 4 + j
}

/// Public class index of large slot `slot`.
#[inline]
pub(crate) const fn class_of_large_slot(slot: usize) -> usize {
    LARGE_CLASS_OFFSET + slot
}

/// Inclusive upper bound of public class `class` (`usize::MAX` for the last).
///
/// # Panics
/// Panics if `class >= NUM_CLASSES` (an API misuse, never on the hot path).
pub fn class_max_size(class: usize) -> usize {
    assert!(
        class < NUM_CLASSES,
        "size class {class} out of range (0..{NUM_CLASSES})"
    );
    if class < LINEAR_CLASSES {
        (class + 1) * 8
    } else if class == NUM_CLASSES - 1 {
        usize::MAX
    } else {
        let c = class - LINEAR_CLASSES;
        let k = LINEAR_LOG2 + (c / 4) as u32;
        let j = c % 4;
        (1usize << k) + (j + 1) * (1usize << (k - 2))
    }
}

/// Inclusive lower bound of public class `class`.
pub fn class_min_size(class: usize) -> usize {
    if class == 0 {
        0
    } else {
        class_max_size(class - 1) + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every size under test, or (under Miri, ~1000x slower) every 61st:
    /// 61 is prime to 64, so every residue around the table's granules is
    /// still met.
    const STEP: usize = if cfg!(miri) { 61 } else { 1 };

    #[test]
    fn slot_table_matches_arithmetic() {
        for size in (SMALL_MAX + 1..=TABLE_MAX + 1000).step_by(STEP) {
            assert_eq!(large_slot(size), large_slot_computed(size), "size {size}");
            assert_eq!(
                class_of_large_slot(large_slot(size)),
                class_of(size),
                "size {size}"
            );
        }
    }

    #[test]
    fn bounds_are_ascending_and_consistent() {
        let mut prev = 0usize;
        for c in 0..NUM_CLASSES {
            let max = class_max_size(c);
            assert!(c == 0 || max > prev, "class {c} not ascending");
            assert_eq!(class_of(max), c, "max of class {c}");
            if c > 0 {
                assert_eq!(class_of(prev + 1), c, "min of class {c}");
                // at most 25% wider than the bound below it (beyond the linear part)
                if (LINEAR_CLASSES..NUM_CLASSES - 1).contains(&c) {
                    assert!((max - prev) * 4 <= prev, "class {c} wider than 25%");
                }
            }
            prev = max;
        }
        assert_eq!(class_max_size(NUM_CLASSES - 1), usize::MAX);
        assert_eq!(class_max_size(NUM_CLASSES - 2), 1 << 30);
        assert_eq!(class_of(0), 0);
        assert_eq!(class_of(usize::MAX), NUM_CLASSES - 1);
        assert_eq!(class_of((1 << 30) + 1), NUM_CLASSES - 1);
    }

    #[test]
    fn linear_steps() {
        for s in 1..=128usize {
            assert_eq!(class_max_size(class_of(s)), s.div_ceil(8) * 8);
        }
        assert_eq!(class_max_size(class_of(129)), 160);
        assert_eq!(class_max_size(class_of(257)), 320);
        assert_eq!(class_max_size(class_of(4096)), 4096);
        assert_eq!(class_max_size(class_of(4097)), 5120);
    }

    #[test]
    fn large_slots_match_classes() {
        let mut sizes = vec![
            257usize,
            300,
            320,
            321,
            512,
            513,
            1 << 20,
            (1 << 30) - 1,
            1 << 30,
        ];
        sizes.extend([(1 << 30) + 1, usize::MAX, usize::MAX / 2]);
        for s in (257..70_000).step_by(STEP) {
            sizes.push(s);
        }
        for s in sizes {
            let slot = large_slot(s);
            assert!(slot < LARGE_SLOTS);
            assert_eq!(class_of_large_slot(slot), class_of(s), "size {s}");
        }
        assert_eq!(class_of(SMALL_MAX), LARGE_CLASS_OFFSET - 1);
    }
}
