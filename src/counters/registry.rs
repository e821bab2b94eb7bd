//! The registry: an append-only, lock-free list of every block ever
//! created, and the acquiring and releasing of blocks by threads.
//!
//! Blocks are mapped from the OS (`crate::sys::map_zeroed`, never the
//! wrapped allocator), published with one compare-and-swap, and never freed
//! or unlinked, so a reader can walk the list at any time without a lock.
//! A thread owns a block from a successful compare-and-swap of its `in_use`
//! flag until it releases it at exit.

use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering::*};

use super::block::{Block, ORPHAN};
use crate::sys;

static HEAD: AtomicPtr<Block> = AtomicPtr::new(ptr::null_mut());
/// Number of blocks ever created.
static BLOCKS: AtomicUsize = AtomicUsize::new(0);
/// Number of blocks released by exited threads and not yet reused: lets a new
/// thread skip the scan when there are none.
static FREE_BLOCKS: AtomicUsize = AtomicUsize::new(0);

/// The first block of the list (the most recently created), if any.
#[inline]
pub(super) fn first() -> Option<&'static Block> {
    // SAFETY: blocks are published with a Release CAS after being fully
    // initialised and are never freed or unpublished.
    unsafe { HEAD.load(Acquire).as_ref() }
}

impl Block {
    /// The block after this one in the registry's list, if any.
    #[inline]
    pub(super) fn next_registered(&self) -> Option<&'static Block> {
        // SAFETY: as in `first`.
        unsafe { self.next.load(Acquire).as_ref() }
    }
}

/// Visits every block: all thread blocks (live or released) and [`ORPHAN`].
pub(super) fn for_each_block(mut f: impl FnMut(&'static Block)) {
    f(&ORPHAN);
    let mut b = first();
    while let Some(block) = b {
        f(block);
        b = block.next_registered();
    }
}

/// How many blocks exist and how many of them a live thread holds.
pub(super) struct BlockCounts {
    /// Blocks ever created.
    pub(super) created: usize,
    /// Blocks attached to a live thread.
    pub(super) attached: usize,
}

pub(super) fn block_counts() -> BlockCounts {
    let mut live = 0;
    for_each_block(|b| live += usize::from(b.in_use()));
    BlockCounts {
        created: BLOCKS.load(Relaxed),
        // `ORPHAN` is always "in use"
        attached: live.saturating_sub(1),
    }
}

/// Bytes of memory used by counter blocks.
pub(super) fn blocks_memory() -> usize {
    BLOCKS.load(Relaxed).saturating_mul(block_alloc_size())
}

/// What one block takes: whole pages (of the running kernel's size), so
/// that blocks never share a cache line.
#[inline]
fn block_alloc_size() -> usize {
    sys::round_to_pages(std::mem::size_of::<Block>())
}

/// Creates a zeroed block outside the wrapped allocator, owned by the
/// caller. Null on failure.
fn new_block() -> *mut Block {
    let p = sys::map_zeroed(block_alloc_size()).cast::<Block>();
    if p.is_null() {
        return p;
    }
    // Zeroed memory is a valid `Block` (atomics of 0, a null `next`), except
    // for the fields initialised here.
    // SAFETY: `p` is a fresh, exclusive, page-aligned mapping of at least
    // `size_of::<Block>()` bytes.
    let b = unsafe { &*p };
    b.in_use.store(true, Relaxed);
    BLOCKS.fetch_add(1, Relaxed);
    let mut head = HEAD.load(Relaxed);
    loop {
        b.next.store(head, Relaxed);
        match HEAD.compare_exchange_weak(head, p, Release, Relaxed) {
            Ok(_) => return p,
            Err(h) => head = h,
        }
    }
}

/// Takes a released block, or creates one, for the calling thread. Null if
/// memory is exhausted.
pub(super) fn acquire_block() -> *mut Block {
    if FREE_BLOCKS.load(Relaxed) > 0 {
        let mut next = first();
        while let Some(b) = next {
            if !b.in_use.load(Relaxed)
                && b.in_use
                    .compare_exchange(false, true, Acquire, Relaxed)
                    .is_ok()
            {
                FREE_BLOCKS.fetch_sub(1, Relaxed);
                return ptr::from_ref(b).cast_mut();
            }
            next = b.next_registered();
        }
    }
    new_block()
}

/// Hands a block back for reuse, with every count in it: by its owner at
/// exit, or in a forked child for an owner that did not survive the fork.
pub(super) fn release(b: &Block) {
    // Release: the next owner's Acquire CAS sees every count made here.
    b.in_use.store(false, Release);
    FREE_BLOCKS.fetch_add(1, Relaxed);
}
