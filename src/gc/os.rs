//! The collector's release step: whether to return free memory to the OS
//! in this cycle, and how much resident memory that gave back. The calls
//! themselves (`malloc_trim`, the glibc probe, resident memory) are in
//! `crate::sys`.
//!
//! Runs on the collector thread or the thread calling `collect()`, never
//! inside the allocator.

use super::ReleaseMode;
use crate::sys;

/// Releases free memory to the OS as `mode` says (`malloc_trim`, where the
/// C library is glibc; nothing elsewhere). Returns whether it did and the
/// drop in resident memory across the release.
pub(super) fn release(mode: ReleaseMode) -> (bool, u64) {
    let go = match mode {
        ReleaseMode::Never => false,
        ReleaseMode::Always => true,
        ReleaseMode::Auto => sys::glibc_malloc_serves_global_allocator(),
    };
    if !go {
        return (false, 0);
    }
    let before = sys::resident_bytes();
    if !sys::malloc_trim() {
        return (false, 0);
    }
    let after = sys::resident_bytes();
    let released = match (before, after) {
        (Some(b), Some(a)) => b.saturating_sub(a),
        _ => 0,
    };
    (true, released)
}

#[cfg(test)]
mod tests {
    #[test]
    fn never_releases_nothing() {
        assert_eq!(super::release(super::ReleaseMode::Never), (false, 0));
    }
}
