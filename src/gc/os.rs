//! What the collector asks the OS and the C library: resident memory
//! (`/proc/self/statm`) and returning free memory (`malloc_trim`).
//!
//! Runs on the collector thread or the thread calling `collect()`, never
//! inside the allocator.

use super::ReleaseMode;

/// Resident memory of the process in bytes (Linux: `/proc/self/statm`,
/// field 2, in pages); `None` elsewhere or on failure.
pub(super) fn resident_bytes() -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
        let pages: u64 = statm.split_ascii_whitespace().nth(1)?.parse().ok()?;
        // SAFETY: sysconf has no memory-safety preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        Some(pages.saturating_mul(u64::try_from(page).ok()?))
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// Releases free memory to the OS as `mode` says. Returns whether it did
/// and the drop in resident memory across the release.
pub(super) fn release(mode: ReleaseMode) -> (bool, u64) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let go = match mode {
            ReleaseMode::Never => false,
            ReleaseMode::Always => true,
            ReleaseMode::Auto => glibc::serves_global_allocator(),
        };
        if !go {
            return (false, 0);
        }
        let before = resident_bytes();
        // SAFETY: malloc_trim has no preconditions; it takes glibc's arena
        // locks itself and returns free pages with madvise/sbrk.
        unsafe { libc::malloc_trim(0) };
        let after = resident_bytes();
        let released = match (before, after) {
            (Some(b), Some(a)) => b.saturating_sub(a),
            _ => 0,
        };
        (true, released)
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        let _ = mode;
        (false, 0)
    }
}

/// Whether the glibc probe found glibc's malloc behind the global
/// allocator (`None`: not probed yet, or not glibc).
pub(super) fn glibc_malloc_detected() -> Option<bool> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        glibc::DETECTED.get().copied()
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        None
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod glibc {
    //! Is the global allocator's memory glibc's malloc's?
    //!
    //! `AllocScope<A>` is a `const` static of the user's crate: no code of
    //! ours runs when it is created, and the hot path must not record its
    //! inner type. So the answer is observed instead: allocate a 64 KiB
    //! block through the global allocator and see whether glibc's own
    //! in-use count (`mallinfo`: arena chunks in use plus mmapped chunks)
    //! grew by at least that much. 64 KiB is above glibc's thread cache and
    //! below its mmap threshold, so glibc serves it from an arena. A
    //! concurrent free on another thread can hide the growth, so three
    //! tries; a concurrent glibc allocation of 64 KiB or more could fake it
    //! with another allocator, which costs one harmless `malloc_trim`.
    //! `mallinfo` (not `mallinfo2`) keeps old glibc versions loadable; its
    //! `int` fields wrap above 2 GiB, so differences are taken modulo 2^32.
    use std::alloc::Layout;
    use std::sync::OnceLock;

    pub(super) static DETECTED: OnceLock<bool> = OnceLock::new();

    const PROBE: usize = 64 * 1024;

    pub(super) fn serves_global_allocator() -> bool {
        *DETECTED.get_or_init(probe)
    }

    fn in_use() -> u32 {
        // SAFETY: mallinfo has no preconditions (it locks the arenas).
        let m = unsafe { libc::mallinfo() };
        (m.uordblks as u32).wrapping_add(m.hblkhd as u32)
    }

    fn probe() -> bool {
        let Ok(layout) = Layout::from_size_align(PROBE, 16) else {
            return false;
        };
        for _ in 0..3 {
            let before = in_use();
            // SAFETY: a non-zero-sized layout. `black_box`: the compiler
            // may otherwise elide an allocation that is freed unused.
            let p = std::hint::black_box(unsafe { std::alloc::alloc(layout) });
            if p.is_null() {
                return false;
            }
            let after = in_use();
            // SAFETY: allocated just above with this layout.
            unsafe { std::alloc::dealloc(p, layout) };
            let grew = after.wrapping_sub(before);
            if grew as usize >= PROBE && grew < 1 << 31 {
                log::debug!(
                    target: "allocscope",
                    "glibc's malloc serves the global allocator: collection cycles call malloc_trim"
                );
                return true;
            }
        }
        log::info!(
            target: "allocscope",
            "the global allocator is not glibc's malloc: collection cycles do not call \
             malloc_trim (release_to_os = \"always\" forces it; a reclaimer can purge \
             another allocator)"
        );
        false
    }
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(target_os = "linux")]
    fn resident_is_read() {
        let r = super::resident_bytes().unwrap();
        assert!(r > 0);
    }
}
