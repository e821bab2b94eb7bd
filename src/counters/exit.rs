//! Thread-exit notification through a `pthread` key destructor
//! (`crate::sys::ThreadKey`): it needs no Rust TLS destructor, works for
//! threads not started by Rust, and runs after Rust's own thread-local
//! destructors. At exit the destructor releases the thread's block
//! (`local::release_current`).

use super::block::Block;

#[cfg(unix)]
mod imp {
    use std::sync::atomic::{AtomicUsize, Ordering::*};

    use super::Block;
    use crate::sys::ThreadKey;

    const UNSET: usize = usize::MAX;
    /// The key, created by the first thread that needs it (`ThreadKey`'s
    /// raw value), or `UNSET`.
    static KEY: AtomicUsize = AtomicUsize::new(UNSET);

    extern "C" fn on_thread_exit(_value: *mut libc::c_void) {
        super::super::local::release_current();
    }

    fn key() -> Option<ThreadKey> {
        let k = KEY.load(Acquire);
        if k != UNSET {
            // SAFETY: `KEY` only ever holds a live key's raw value (keys
            // stored there are never deleted).
            return Some(unsafe { ThreadKey::from_raw(k) });
        }
        let new = ThreadKey::create(on_thread_exit)?.into_raw();
        match KEY.compare_exchange(UNSET, new, AcqRel, Acquire) {
            // SAFETY: created just above.
            Ok(_) => Some(unsafe { ThreadKey::from_raw(new) }),
            Err(winner) => {
                // Another thread created the key first: use theirs.
                // SAFETY: `new` was created above and never used.
                unsafe { ThreadKey::from_raw(new) }.delete();
                // SAFETY: `winner` is a live key's raw value (as above).
                Some(unsafe { ThreadKey::from_raw(winner) })
            }
        }
    }

    /// See [`super::register`].
    pub(in crate::counters) fn register(block: *mut Block) -> bool {
        let Some(k) = key() else { return false };
        // the value only needs to be non-null for the destructor to run
        k.set(block.cast())
    }
}

#[cfg(not(unix))]
mod imp {
    use super::Block;

    /// No portable thread-exit hook without a TLS destructor: the block stays
    /// attached and counts only in itself, off the fast path (counts remain
    /// exact; blocks of exited threads are not reused).
    pub(in crate::counters) fn register(_block: *mut Block) -> bool {
        false
    }
}

/// Arranges for `block` to be handed back when this thread exits; false if
/// that cannot be arranged (keys exhausted, or no such hook on this OS).
/// The block then stays attached forever and counts only in itself: counts
/// are still exact, only the fast path and the block's reuse are lost.
#[inline]
pub(super) fn register(block: *mut Block) -> bool {
    imp::register(block)
}
