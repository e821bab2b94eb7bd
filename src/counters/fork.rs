//! `fork` without `exec`: the child has only the forking thread. The other
//! threads' blocks still point at their thread-local counters, which glibc
//! hands to its stack cache in the child (to be unmapped or reused by the
//! child's next threads), and they will never run their exit hooks. So the
//! child, before it can start a thread, folds those counters into their
//! blocks and hands the blocks back for reuse (`pthread_atfork` handlers,
//! registered through `crate::sys::at_fork` when a thread first counts in
//! thread-local counters).
//!
//! The fold lock keeps a fork from happening while an exiting thread is
//! halfway through folding its counters (`Block::fold_local`), so the child
//! never starts with a fold half done.

use std::sync::atomic::{AtomicBool, Ordering::*};

use super::block::backoff;

/// Held while an exiting thread folds its counters, and by `fork` from its
/// prepare handler to its parent or child handler. Folds are short (514
/// adds).
static FOLD_LOCK: AtomicBool = AtomicBool::new(false);

pub(super) fn lock_folds() {
    let mut spins = 0u32;
    while FOLD_LOCK.swap(true, Acquire) {
        backoff(&mut spins);
    }
}

pub(super) fn unlock_folds() {
    FOLD_LOCK.store(false, Release);
}

#[cfg(unix)]
mod imp {
    use std::ptr;
    use std::sync::atomic::{AtomicBool, Ordering::*};

    use super::super::block::{Small, ORPHAN};
    use super::super::{local, registry};
    use super::{lock_folds, unlock_folds};
    use crate::sys;

    static REGISTERED: AtomicBool = AtomicBool::new(false);

    /// See [`super::register`].
    pub(in crate::counters) fn register() {
        if REGISTERED.swap(true, AcqRel) {
            return;
        }
        sys::at_fork(Some(prepare), Some(parent), Some(child));
    }

    /// Before the fork: waits for any fold in progress and keeps new ones
    /// from starting, so the child never sees one half done.
    extern "C" fn prepare() {
        lock_folds();
    }

    extern "C" fn parent() {
        unlock_folds();
    }

    /// In the child, before it can start a thread: moves the counts of every
    /// thread that did not survive the fork into its block (their storage
    /// is still mapped then; its pages are checked with `mincore`, and counts
    /// whose storage is gone are dropped rather than read), detaches them and
    /// hands their blocks back for reuse; clears the reader counts of
    /// snapshots that were cut off.
    extern "C" fn child() {
        let own = local::current();
        registry::for_each_block(|b| {
            b.reset_readers_after_fork();
            if ptr::eq(b, own) || ptr::eq(b, &ORPHAN) || !b.in_use() {
                return;
            }
            b.adopt_after_fork(mapped);
            // its owner will never exit here: its counts stay in its
            // thread group (resolved already, or `unnamed`: the thread is
            // gone, its name with it) and the block is free for reuse
            let group = match b.group.load(std::sync::atomic::Ordering::Relaxed) {
                0 => crate::threads::UNNAMED_AFTER_FORK,
                g => g - 1,
            };
            crate::threads::retire(group, b.totals_since_acquired());
            registry::release(b);
        });
        unlock_folds();
    }

    /// Whether every page of the counters at `p` is mapped.
    fn mapped(p: *const Small) -> bool {
        sys::residency(p.cast(), std::mem::size_of::<Small>()).is_some()
    }
}

#[cfg(not(unix))]
mod imp {
    pub(in crate::counters) fn register() {}
}

/// Registers the fork handlers, once per process (a thread calls it when
/// it starts counting in thread-local counters).
#[inline]
pub(super) fn register() {
    imp::register()
}
