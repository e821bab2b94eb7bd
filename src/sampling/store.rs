//! The sampler's memory: fixed-capacity, `mmap`'d arenas, bounded by
//! [`Limits`], created at the first sample.
//!
//! - **stacks**: deduplicated raw stacks (append-only frames arena + index);
//! - **buckets**: one per (stack, object size, interval), with atomic counts
//!   of sampled allocations and frees (append-only + index), and beside
//!   each, in an arena of its own with the same ids, a histogram of the
//!   lifetimes of its freed sampled blocks ([`LIFETIME_CLASSES`] saturating
//!   32-bit counts, 136 bytes);
//! - **live set**: the addresses of sampled blocks not yet freed, with the
//!   time each was sampled (24 bytes a slot), in
//!   open-addressing tables (segments, below). Inserts happen under the
//!   lock in [`HOT`]; lookups and removals (from `dealloc` on any thread)
//!   are lock-free CASes;
//! - **filter**: a small counting filter in front of the live set, so that a
//!   free only probes the tables when its address may be sampled.
//!
//! Appends are published with release stores of the counts, so a profile
//! capture reads stacks and buckets without the lock and never blocks a
//! sampling thread. The lock is only ever *tried* (with a short bounded
//! spin): a sample that cannot get it is dropped and counted.
//!
//! **Resident memory follows the samples, not the caps.** Each arena is one
//! mapping sized by the caps (`MAP_NORESERVE`: address space only), never
//! moved or unmapped, and only its touched pages become resident. The
//! append-only arenas touch what they hold. The hash tables grow within
//! their mappings:
//! - the **live set** is a row of segments, each an open-addressing table
//!   of its own: 4,096 slots, then each next one three times the slots
//!   before it, up to one that could hold the cap alone. Inserts go into
//!   the last segment opened; the next is opened (under the lock) when a
//!   sweep of its tombstones cannot bring the last one below 3/8 full. A
//!   block stays where it was inserted: lookups and removals probe the last
//!   segment, then each earlier one (a linear probe to an empty slot,
//!   wrapping within the segment). Opening a segment changes no slot, so a
//!   lock-free probe is never cut short by one; and since each segment only
//!   takes inserts while it is the last, no segment fills up with the later
//!   ones' blocks;
//! - the **stack and bucket indexes** are only read and written under the
//!   lock (captures read the arenas, not the indexes): they use the first
//!   `2^k` entries of their mappings, and past half full, `k` grows by one
//!   and the index is rebuilt from the arena.
//!
//! Before, one table sized for the caps (8 MiB at the default 204,800 live
//! samples) took scattered inserts, and after a few thousand samples nearly
//! every page of it was resident, however few samples were live at a time.

use std::sync::atomic::{
    AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering::*,
};

use crossbeam_utils::CachePadded;

use super::RawBucket;
use crate::sys;

/// Caps on the sampler's own memory. Past a cap, new samples are dropped
/// and counted ([`crate::sampling::Stats::dropped_samples`]), never unbounded
/// growth.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Sampled blocks tracked at once. Default 204,800: a 100 GiB heap at
    /// the default 512 KiB interval.
    pub max_live_samples: usize,
    /// Distinct stacks stored. Default 32,768.
    pub max_stacks: usize,
    /// Distinct (stack, size, interval) buckets. Default 131,072.
    pub max_buckets: usize,
    /// Stack frames stored across all stacks. Default 1,048,576.
    pub max_frames: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_live_samples: 204_800,
            max_stacks: 32_768,
            max_buckets: 131_072,
            max_frames: 1 << 20,
        }
    }
}

crate::macros::setters!(Limits {
    /// Sets `max_live_samples`.
    max_live_samples(n: usize);
    /// Sets `max_stacks`.
    max_stacks(n: usize);
    /// Sets `max_buckets`.
    max_buckets(n: usize);
    /// Sets `max_frames`.
    max_frames(n: usize);
});

const EMPTY: usize = 0;
const TOMB: usize = 1;

#[repr(C)]
struct LiveSlot {
    key: AtomicUsize,
    bucket: AtomicU32,
    _pad: u32,
    /// When the block was sampled: nanoseconds of `CLOCK_MONOTONIC` since
    /// [`EPOCH_NS`]. Written before `key` is published.
    born: AtomicU64,
}

/// Classes of the lifetime histogram: class 0 holds lifetimes under 1 µs,
/// class `k` in `1..=32` those in `[2^(k-1), 2^k)` µs, class 33 those of
/// `2^32` µs (71.6 minutes) or more: 1 µs to past 1 h in factors of two.
pub(crate) const LIFETIME_CLASSES: usize = 34;

/// The class of a lifetime of `ns` nanoseconds (see [`LIFETIME_CLASSES`]).
#[inline]
pub(crate) fn lifetime_class(ns: u64) -> usize {
    let us = ns / 1000;
    ((u64::BITS - us.leading_zeros()) as usize).min(LIFETIME_CLASSES - 1)
}

/// One bucket's lifetime histogram: how many of its sampled blocks were
/// freed after a lifetime in each class. Saturating counts, updated
/// lock-free by the removal of a sampled block.
#[repr(C)]
struct LifetimeRec {
    classes: [AtomicU32; LIFETIME_CLASSES],
}

/// The process epoch of the live set's birth times (`CLOCK_MONOTONIC`
/// nanoseconds), set when the store is created.
static EPOCH_NS: AtomicU64 = AtomicU64::new(0);

/// Nanoseconds since [`EPOCH_NS`] (a vDSO clock read; see
/// [`sys::monotonic_ns`]).
#[inline]
fn since_epoch() -> u64 {
    match EPOCH_NS.load(Relaxed) {
        // the store is not created yet: the first sample is born at the
        // epoch, which its creation sets right after
        0 => 0,
        epoch => sys::monotonic_ns().saturating_sub(epoch),
    }
}

#[repr(C)]
struct BucketRec {
    stack: AtomicU32,
    /// The scope and thread group the samples were taken in (see
    /// [`Labels`]).
    labels: AtomicU32,
    size: AtomicU64,
    interval: AtomicU64,
    allocs: AtomicU64,
    frees: AtomicU64,
}

#[repr(C)]
struct StackRec {
    offset: AtomicU32,
    len: AtomicU32,
    hash: AtomicU64,
}

/// A zeroed, fixed-size mapping of `cap` `T`s (all-zero is a valid `T`).
struct Region<T> {
    ptr: AtomicPtr<T>,
    cap: AtomicUsize,
}

impl<T> Region<T> {
    const fn new() -> Self {
        Region {
            ptr: AtomicPtr::new(std::ptr::null_mut()),
            cap: AtomicUsize::new(0),
        }
    }

    fn bytes(&self) -> usize {
        self.cap.load(Relaxed) * std::mem::size_of::<T>()
    }

    /// Maps the region; false if out of memory.
    fn map(&self, cap: usize) -> bool {
        let Some(bytes) = cap.checked_mul(std::mem::size_of::<T>()) else {
            return false;
        };
        let p = sys::map_zeroed_noreserve(bytes);
        if p.is_null() {
            return false;
        }
        self.ptr.store(p.cast(), Release);
        self.cap.store(cap, Release);
        true
    }

    #[inline]
    fn get(&self, i: usize) -> Option<&T> {
        self.slice().get(i)
    }

    /// The whole mapping (empty before it is mapped). Creating the slice
    /// touches no page of it.
    #[inline]
    fn slice(&self) -> &[T] {
        let p = self.ptr.load(Acquire);
        if p.is_null() {
            return &[];
        }
        // SAFETY: `p` is a mapping of `cap` `T`s (`cap` is stored after
        // `ptr`: at worst this sees 0), never unmapped; all-zero bytes are a
        // valid `T` (atomics and integers only) and every write to it goes
        // through an atomic, so a shared slice of it is sound.
        unsafe { std::slice::from_raw_parts(p, self.cap.load(Relaxed)) }
    }

    /// Resident bytes of the mapping (`mincore`), or its size where the OS
    /// cannot tell.
    fn resident(&self) -> usize {
        let p = self.ptr.load(Acquire);
        if p.is_null() {
            return 0;
        }
        let bytes = sys::round_to_pages(self.bytes());
        sys::residency(p.cast(), bytes).unwrap_or(bytes)
    }
}

struct Store {
    live: Region<LiveSlot>,
    /// The live set's last open segment, which takes the inserts. Only
    /// grows, under the lock; read by every lookup.
    live_level: AtomicU32,
    /// The live set's segments, as (first slot, slots): set when the store
    /// is created, read-only after.
    live_segments: [(AtomicUsize, AtomicUsize); MAX_SEGMENTS],
    /// How many of them the mapping holds.
    live_segment_count: AtomicU32,
    buckets: Region<BucketRec>,
    /// One lifetime histogram per bucket, same ids.
    lifetimes: Region<LifetimeRec>,
    bucket_index: Index,
    stacks: Region<StackRec>,
    stack_index: Index,
    frames: Region<AtomicUsize>,
    bucket_count: AtomicU32,
    stack_count: AtomicU32,
    frame_count: AtomicUsize,
    /// Set while an index is being rebuilt at a new width (under the lock):
    /// still set when the lock is next taken only in a child forked during
    /// a rebuild, which then rebuilds both.
    index_rebuilding: AtomicBool,
}

static STORE: Store = Store {
    live: Region::new(),
    live_level: AtomicU32::new(0),
    live_segments: [const { (AtomicUsize::new(0), AtomicUsize::new(0)) }; MAX_SEGMENTS],
    live_segment_count: AtomicU32::new(0),
    buckets: Region::new(),
    lifetimes: Region::new(),
    bucket_index: Index::new(),
    stacks: Region::new(),
    stack_index: Index::new(),
    frames: Region::new(),
    bucket_count: AtomicU32::new(0),
    stack_count: AtomicU32::new(0),
    frame_count: AtomicUsize::new(0),
    index_rebuilding: AtomicBool::new(false),
};

/// The live set's first segment: at most 4,096 slots, 64 KiB.
const LIVE_FIRST: usize = 4096;
/// The most segments the live set can have (the largest cap needs 9).
const MAX_SEGMENTS: usize = 16;
/// Log2 of an index's first width: 1,024 entries, 4 KiB.
const INDEX_MIN_BITS: u32 = 10;

/// A hash index of ids into an append-only arena (`id + 1`, 0 = empty),
/// read and written only under the lock. It uses the first `2^bits` entries
/// of its mapping, at most half of them full: one more entry past that
/// doubles the width, and the index is rebuilt at the new width.
struct Index {
    slots: Region<AtomicU32>,
    bits: AtomicU32,
}

impl Index {
    const fn new() -> Self {
        Index {
            slots: Region::new(),
            bits: AtomicU32::new(0),
        }
    }

    /// Maps `cap` entries (a power of two) and starts at the first width.
    fn map(&self, cap: usize) -> bool {
        self.bits
            .store(cap.trailing_zeros().min(INDEX_MIN_BITS), Relaxed);
        self.slots.map(cap)
    }

    /// The entries in use (`2^bits` of them), and `bits`.
    fn table(&self) -> (&[AtomicU32], u32) {
        let all = self.slots.slice();
        let bits = self.bits.load(Relaxed);
        (&all[..all.len().min(1 << bits)], bits)
    }

    /// Makes room for one more entry when ids `0..count` are in the index:
    /// if it would then be more than half full, doubles the width (up to
    /// the mapping, which the caps keep at most half full) and rebuilds the
    /// index from `key_of(id)`, the key each id is indexed under. Under the
    /// lock.
    fn reserve(&self, count: u32, key_of: impl Fn(u32) -> Option<u64>) {
        let bits = self.bits.load(Relaxed);
        let full = (count as usize).saturating_add(1).saturating_mul(2) > 1 << bits;
        if full && 1usize << (bits + 1) <= self.slots.slice().len() {
            self.bits.store(bits + 1, Relaxed);
            self.rebuild(count, key_of);
        }
    }

    /// Empties the entries in use and indexes ids `0..count` again at the
    /// current width. Under the lock. Interrupted (by a fork), it leaves
    /// [`Store::index_rebuilding`] set, and the next holder of the lock
    /// rebuilds again.
    fn rebuild(&self, count: u32, key_of: impl Fn(u32) -> Option<u64>) {
        STORE.index_rebuilding.store(true, Relaxed);
        for e in self.table().0 {
            e.store(0, Relaxed);
        }
        for id in 0..count {
            if let Some(e) = key_of(id).and_then(|key| self.free_entry(key)) {
                e.store(id + 1, Relaxed);
            }
        }
        STORE.index_rebuilding.store(false, Relaxed);
    }

    /// The first empty entry of `key`'s probe (None if the index is full,
    /// which the caps rule out).
    fn free_entry(&self, key: u64) -> Option<&AtomicU32> {
        let (table, bits) = self.table();
        let mut i = index_start(key, bits);
        for _ in 0..table.len() {
            let e = table.get(i)?;
            if e.load(Relaxed) == 0 {
                return Some(e);
            }
            i = (i + 1) & (table.len() - 1);
        }
        None
    }
}

/// Where a probe for `key` starts in a table of `2^bits` slots (`bits` at
/// most 63): the top `bits` bits of `key`.
#[inline]
fn index_start(key: u64, bits: u32) -> usize {
    ((key >> 1) >> (63 - bits)) as usize
}

/// 0 = not created, 1 = created, 2 = creation failed (sampling disabled).
static STATE: AtomicU8 = AtomicU8::new(0);
static LIMITS: parking_free::LimitsCell = parking_free::LimitsCell::new();
/// What every sample and every free of a sampled block writes, from any
/// thread: together on one cache line of their own. A sample takes the
/// lock and then updates the counts, so the line moves to the sampling
/// thread's core once per sample (not once per field, as when each had a
/// line of its own), and the read-mostly `STORE` (region pointers and
/// capacities, read on every access) is never invalidated by them.
pub(crate) struct Hot {
    /// Held while inserting; only ever tried.
    lock: AtomicBool,
    /// Sampled blocks in the live set.
    live_count: AtomicUsize,
    /// Tombstones in the live set (removals count theirs after their CAS,
    /// so a sweep can clear one first: read it through [`tombstones`]).
    tombstones: AtomicUsize,
    /// Slots of the live set's last segment that are not empty (keys and
    /// tombstones): what its probes walk past. Under the lock.
    segment_used: AtomicUsize,
    /// `segment_used` after the last sweep of that segment (under the
    /// lock): the next sweep waits for an eighth of the segment more.
    segment_swept: AtomicUsize,
    /// Samples recorded.
    pub(crate) samples: AtomicU64,
    /// Samples dropped (a cap was reached, or the lock was busy).
    pub(crate) dropped: AtomicU64,
}

pub(crate) static HOT: CachePadded<Hot> = CachePadded::new(Hot {
    lock: AtomicBool::new(false),
    live_count: AtomicUsize::new(0),
    tombstones: AtomicUsize::new(0),
    segment_used: AtomicUsize::new(0),
    segment_swept: AtomicUsize::new(0),
    samples: AtomicU64::new(0),
    dropped: AtomicU64::new(0),
});

mod parking_free {
    //! The limits, readable and settable without a lock.
    use super::Limits;
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

    /// [`Limits`], field by field.
    pub(super) struct LimitsCell {
        max_live_samples: AtomicUsize,
        max_stacks: AtomicUsize,
        max_buckets: AtomicUsize,
        max_frames: AtomicUsize,
    }

    impl LimitsCell {
        pub(super) const fn new() -> Self {
            LimitsCell {
                max_live_samples: AtomicUsize::new(204_800),
                max_stacks: AtomicUsize::new(32_768),
                max_buckets: AtomicUsize::new(131_072),
                max_frames: AtomicUsize::new(1 << 20),
            }
        }
        pub(super) fn get(&self) -> Limits {
            Limits {
                max_live_samples: self.max_live_samples.load(Relaxed),
                max_stacks: self.max_stacks.load(Relaxed),
                max_buckets: self.max_buckets.load(Relaxed),
                max_frames: self.max_frames.load(Relaxed),
            }
        }
        pub(super) fn set(&self, l: Limits) {
            self.max_live_samples.store(l.max_live_samples, Relaxed);
            self.max_stacks.store(l.max_stacks, Relaxed);
            self.max_buckets.store(l.max_buckets, Relaxed);
            self.max_frames.store(l.max_frames, Relaxed);
        }
    }
}

/// The limits in force (or to be used when the store is created).
pub(crate) fn limits() -> Limits {
    LIMITS.get()
}

/// Sets the limits; only possible before the first sample is recorded.
pub(crate) fn set_limits(l: Limits) -> Result<(), crate::Error> {
    let check = |what: &'static str, v: usize, max: usize| {
        if v == 0 || v > max {
            Err(crate::Error::InvalidArgument {
                what,
                value: v.to_string(),
                expected: "a number from 1 to the documented maximum (live samples 2^26, stacks 2^24, buckets 2^26, frames 2^28)",
            })
        } else {
            Ok(())
        }
    };
    check("max_live_samples", l.max_live_samples, 1 << 26)?;
    check("max_stacks", l.max_stacks, 1 << 24)?;
    check("max_buckets", l.max_buckets, 1 << 26)?;
    check("max_frames", l.max_frames, 1 << 28)?;
    if !try_lock() {
        return Err(crate::Error::SamplerBusy);
    }
    let r = if STATE.load(Acquire) != 0 {
        Err(crate::Error::SamplerStarted)
    } else {
        LIMITS.set(l);
        Ok(())
    };
    unlock();
    r
}

fn try_lock() -> bool {
    for _ in 0..256 {
        // test before test-and-set: a waiting thread only reads the line,
        // so the lock-free frees that update the counts beside the lock
        // are not slowed by its writes
        if !HOT.lock.load(Relaxed) && !HOT.lock.swap(true, Acquire) {
            return true;
        }
        std::hint::spin_loop();
    }
    false
}

fn unlock() {
    HOT.lock.store(false, Release);
}

/// Force-releases the lock in a forked child (the holder does not exist
/// there). Only for `pthread_atfork` child handlers.
pub(crate) fn reset_lock_after_fork() {
    HOT.lock.store(false, Release);
}

/// In a child forked while another thread held the lock, nobody would ever
/// release it: the child resets it (the arenas themselves are consistent at
/// every step an inserter can be stopped at, as for concurrent readers).
fn register_fork_handler() {
    #[cfg(unix)]
    {
        extern "C" fn in_child() {
            reset_lock_after_fork();
        }
        sys::at_fork(None, None, Some(in_child));
    }
}

/// Creates the arenas (under the lock). False if that failed.
fn ensure_created() -> bool {
    match STATE.load(Acquire) {
        1 => return true,
        2 => return false,
        _ => {}
    }
    let l = limits();
    let mut live_cap = 0;
    let mut segments = 0;
    for ((base, size), cell) in live_segments(l.max_live_samples).zip(&STORE.live_segments) {
        cell.0.store(base, Relaxed);
        cell.1.store(size, Relaxed);
        live_cap = base + size;
        segments += 1;
    }
    let bucket_index_cap = (l.max_buckets * 2).next_power_of_two().max(64);
    let stack_index_cap = (l.max_stacks * 2).next_power_of_two().max(64);
    EPOCH_NS.store(sys::monotonic_ns(), Relaxed);
    let ok = STORE.live.map(live_cap)
        && STORE.buckets.map(l.max_buckets)
        && STORE.lifetimes.map(l.max_buckets)
        && STORE.bucket_index.map(bucket_index_cap)
        && STORE.stacks.map(l.max_stacks)
        && STORE.stack_index.map(stack_index_cap)
        && STORE.frames.map(l.max_frames);
    STORE.live_segment_count.store(segments, Relaxed);
    STORE.live_level.store(0, Relaxed);
    // (published to lock-free readers by the release store of STATE)
    STATE.store(if ok { 1 } else { 2 }, Release);
    if ok {
        register_fork_handler();
    }
    if !ok {
        log::warn!("allocscope: could not map the heap sampler's memory; sampling is disabled");
    }
    ok
}

#[inline]
fn mix(x: u64) -> u64 {
    x.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// The counting filter in front of the live set: one byte per hash slot,
/// incremented when a sampled block is inserted, decremented when it is
/// removed (sticky at 255).
const FILTER_BITS: u32 = 14;
#[allow(clippy::declare_interior_mutable_const)]
const ZERO8: AtomicU8 = AtomicU8::new(0);
static FILTER: [AtomicU8; 1 << FILTER_BITS] = [ZERO8; 1 << FILTER_BITS];

#[inline]
fn filter_slot(ptr: usize) -> &'static AtomicU8 {
    &FILTER[(mix(ptr as u64) >> (64 - FILTER_BITS)) as usize]
}

fn filter_inc(ptr: usize) {
    let f = filter_slot(ptr);
    let _ = f.fetch_update(Relaxed, Relaxed, |v| (v < u8::MAX).then_some(v + 1));
}

fn filter_dec(ptr: usize) {
    let f = filter_slot(ptr);
    let _ = f.fetch_update(Relaxed, Relaxed, |v| {
        (v > 0 && v < u8::MAX).then_some(v - 1)
    });
}

/// May the counting filter hold `ptr`? One load; false positives only.
#[inline]
pub(crate) fn filter_may_contain(ptr: usize) -> bool {
    filter_slot(ptr).load(Relaxed) != 0
}

/// Is `ptr` in the live set? A lock-free probe; removes nothing.
pub(crate) fn live_set_contains(ptr: usize) -> bool {
    find(ptr).is_some()
}

/// The slot holding `ptr`, lock-free: a linear probe of the live set's
/// last segment, then of each earlier one down to the first (a block stays
/// in the segment it was inserted in).
///
/// Why no probe misses a live block: its slot, and every slot its insert
/// probed past in its segment, stay non-empty while it is live. Inserts
/// only fill empty slots and tombstones, removals only turn keys into
/// tombstones, opening a segment changes no slot, and the sweep empties a
/// tombstone only where the next slot of its segment is empty
/// ([`sweep_locked`]). And the thread that frees a block sees the segment
/// it was inserted in: the insert happened before the allocation returned
/// the block.
fn find(ptr: usize) -> Option<&'static LiveSlot> {
    if ptr <= TOMB || STATE.load(Acquire) != 1 {
        return None;
    }
    let slots = STORE.live.slice();
    let h = mix(ptr as u64);
    let mut level = STORE.live_level.load(Acquire);
    loop {
        if let found @ Some(_) = probe(slots, segment(level), h, ptr) {
            return found;
        }
        if level == 0 {
            return None;
        }
        level -= 1;
    }
}

/// The live set's segments for a cap of `max_live` samples, as (first
/// slot, slots), at most [`MAX_SEGMENTS`]: the first one is `[0, 4096)`
/// (smaller under small caps), each next one starts where the ones before
/// end and has three times their slots, and the last one is as large as it
/// takes to hold the cap alone at half load (blocks stay in the segment
/// they were inserted in, so all of them may come to be in the last one).
fn live_segments(max_live: usize) -> impl Iterator<Item = (usize, usize)> {
    let need = max_live.saturating_mul(2).max(64);
    let first = need.min(LIVE_FIRST);
    let mut next = Some((0, first));
    std::iter::from_fn(move || {
        let (base, size) = next?;
        let end = base + size;
        next = (size < need).then(|| (end, end.saturating_mul(3).min(need)));
        Some((base, size))
    })
    .take(MAX_SEGMENTS)
}

/// The live set's segment `level` ([`live_segments`]), as (first slot,
/// slots).
#[inline]
fn segment(level: u32) -> (usize, usize) {
    match STORE.live_segments.get(level as usize) {
        Some((base, size)) => (base.load(Relaxed), size.load(Relaxed)),
        None => (0, 0),
    }
}

/// Where `h`'s probe starts in a segment of `size` slots: its top bits,
/// scaled.
#[inline]
fn segment_start(h: u64, size: usize) -> usize {
    ((h as u128 * size as u128) >> 64) as usize
}

/// A probe of one segment of the live set: the slot holding `ptr`, or
/// `None` at the first empty slot. It wraps within the segment.
#[inline]
fn probe(
    slots: &'static [LiveSlot],
    (base, size): (usize, usize),
    h: u64,
    ptr: usize,
) -> Option<&'static LiveSlot> {
    let seg = slots.get(base..base.saturating_add(size))?;
    let start = segment_start(h, size);
    // from the start to the end of the segment, then from its beginning
    let (tail, head) = (seg.get(start..)?, seg.get(..start)?);
    for slot in tail.iter().chain(head) {
        match slot.key.load(Acquire) {
            k if k == ptr => return Some(slot),
            EMPTY => return None,
            _ => {}
        }
    }
    None
}

/// Tombstones in the live set. A removal counts its tombstone after its
/// CAS, so a sweep may have cleared (and uncounted) it first: the counter
/// can be briefly "below zero", read here as 0.
fn tombstones() -> usize {
    let t = HOT.tombstones.load(Relaxed);
    if t > isize::MAX as usize {
        0
    } else {
        t
    }
}

/// Removes `ptr` from the live set if it is there (lock-free) and counts
/// the free in its bucket. Returns whether it was a sampled block.
pub(crate) fn remove(ptr: usize) -> bool {
    let Some(slot) = find(ptr) else {
        return false;
    };
    let bucket = slot.bucket.load(Relaxed);
    let born = slot.born.load(Relaxed);
    if slot
        .key
        .compare_exchange(ptr, TOMB, AcqRel, Relaxed)
        .is_err()
    {
        return false;
    }
    HOT.tombstones.fetch_add(1, Relaxed);
    HOT.live_count.fetch_sub(1, Relaxed);
    if let Some(b) = STORE.buckets.get(bucket as usize) {
        b.frees.fetch_add(1, Relaxed);
    }
    if let Some(h) = STORE.lifetimes.get(bucket as usize) {
        let class = lifetime_class(since_epoch().saturating_sub(born));
        if let Some(c) = h.classes.get(class) {
            // saturating: a count stuck at the top is still "very many"
            let _ = c.fetch_update(Relaxed, Relaxed, |v| v.checked_add(1));
        }
    }
    filter_dec(ptr);
    true
}

/// Is there room for another live sample (a cheap pre-check before the
/// allocator over-aligns a block for sampling)?
pub(crate) fn has_room() -> bool {
    STATE.load(Relaxed) != 2 && HOT.live_count.load(Relaxed) < limits().max_live_samples
}

/// Records a sampled block: interns its stack and bucket and inserts it in
/// the live set. False (and the sample is counted as dropped) if the lock
/// was busy or a cap was reached.
pub(crate) fn record(
    ptr: usize,
    size: u64,
    interval: u64,
    labels: Labels,
    frames: &[usize],
) -> bool {
    if ptr <= TOMB {
        return false;
    }
    // the birth time is read before the lock, so the lock is not held
    // across the clock read (the first sample, before the epoch is set,
    // is born at 0: the epoch)
    let born = since_epoch();
    if !try_lock() {
        HOT.dropped.fetch_add(1, Relaxed);
        return false;
    }
    let ok = ensure_created() && insert_locked(ptr, size, interval, labels, frames, born);
    unlock();
    if ok {
        HOT.samples.fetch_add(1, Relaxed);
        filter_inc(ptr);
    } else {
        HOT.dropped.fetch_add(1, Relaxed);
    }
    ok
}

fn insert_locked(
    ptr: usize,
    size: u64,
    interval: u64,
    labels: Labels,
    frames: &[usize],
    born: u64,
) -> bool {
    if HOT.live_count.load(Relaxed) >= limits().max_live_samples {
        return false;
    }
    if STORE.index_rebuilding.load(Relaxed) {
        // only in a child forked while another thread rebuilt an index
        rebuild_indexes_locked();
    }
    let Some(stack) = intern_stack(frames) else {
        return false;
    };
    let Some(bucket) = intern_bucket(stack, size, interval, labels) else {
        return false;
    };
    make_room_locked();
    // into the last segment
    let (base, size) = segment(STORE.live_level.load(Relaxed));
    let Some(seg) = STORE.live.slice().get(base..base.saturating_add(size)) else {
        return false;
    };
    let mut i = segment_start(mix(ptr as u64), size);
    for _ in 0..size {
        let Some(slot) = seg.get(i) else {
            return false;
        };
        // (an empty slot or a tombstone changes only under the lock)
        let k = slot.key.load(Acquire);
        if k == EMPTY || k == TOMB {
            slot.bucket.store(bucket, Relaxed);
            slot.born.store(born, Relaxed);
            slot.key.store(ptr, Release);
            if k == TOMB {
                HOT.tombstones.fetch_sub(1, Relaxed);
            } else {
                HOT.segment_used.fetch_add(1, Relaxed);
            }
            HOT.live_count.fetch_add(1, Relaxed);
            if let Some(b) = STORE.buckets.get(bucket as usize) {
                b.allocs.fetch_add(1, Relaxed);
            }
            return true;
        }
        i += 1;
        if i == size {
            i = 0;
        }
    }
    false
}

/// Before an insert into the live set (under the lock): once the last
/// segment is half full (keys and tombstones), sweeps its tombstones, and
/// if that leaves it more than 3/8 full, opens the next segment (three
/// times the slots in use) if the mapping has room. Each slot a sweep reads
/// is paid for by at least 1/8 of an insert into an empty slot: a sweep
/// that opens no segment raises the next one's threshold by 1/8 of the
/// segment.
fn make_room_locked() {
    let (_, size) = segment(STORE.live_level.load(Relaxed));
    let swept = HOT.segment_swept.load(Relaxed);
    if HOT.segment_used.load(Relaxed) < (size / 2).max(swept.saturating_add(size / 8)) {
        return;
    }
    sweep_locked(false);
    if HOT.segment_used.load(Relaxed) > size / 8 * 3 && grow_live_locked() {
        HOT.segment_used.store(0, Relaxed);
        HOT.segment_swept.store(0, Relaxed);
    }
}

/// Opens the live set's next segment if the mapping has room; under the
/// lock. The new segment was never written: all empty.
fn grow_live_locked() -> bool {
    let level = STORE.live_level.load(Relaxed);
    if level + 1 < STORE.live_segment_count.load(Relaxed) {
        STORE.live_level.store(level + 1, Release);
        true
    } else {
        false
    }
}

/// Turns tombstones back into empty slots where no probe can continue from
/// them: in the last segment of the live set, or in all of them. Under the
/// lock.
///
/// Safe against concurrent lock-free lookups and removals: a probe goes
/// from a slot to the next one of its segment (from the last to the
/// first). A tombstone is emptied only when that next slot is empty, so no
/// live block's probe passes through it (the next slot of that probe is not
/// empty), and no slot becomes non-empty while the lock is held (removals
/// only make tombstones). Going down from the top of a segment, a run of
/// tombstones before an empty slot is cleared in one pass.
fn sweep_locked(all: bool) {
    let slots = STORE.live.slice();
    let last = STORE.live_level.load(Relaxed);
    for level in if all { 0 } else { last }..=last {
        let (base, size) = segment(level);
        let Some(seg) = slots.get(base..base.saturating_add(size)) else {
            continue;
        };
        for t in (0..size).rev() {
            if seg[t].key.load(Relaxed) != TOMB {
                continue;
            }
            let next = if t + 1 == size { 0 } else { t + 1 };
            if seg[next].key.load(Acquire) == EMPTY {
                seg[t].key.store(EMPTY, Release);
                HOT.tombstones.fetch_sub(1, Relaxed);
                if level == last {
                    HOT.segment_used.fetch_sub(1, Relaxed);
                }
            }
        }
    }
    HOT.segment_swept
        .store(HOT.segment_used.load(Relaxed), Relaxed);
}

/// Runs the tombstone sweep over every segment if the lock is free (from
/// ordinary threads, e.g. profile capture).
pub(crate) fn maintain() {
    if STATE.load(Acquire) == 1 && tombstones() > 0 && try_lock() {
        sweep_locked(true);
        unlock();
    }
}

fn hash_frames(frames: &[usize]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ frames.len() as u64;
    for &f in frames {
        h = mix(h ^ f as u64).rotate_left(29);
    }
    h | 1
}

/// The key stack `id` is indexed under.
fn stack_key(id: u32) -> Option<u64> {
    let rec = STORE.stacks.get(id as usize)?;
    Some(mix(rec.hash.load(Relaxed)))
}

/// The key bucket `id` is indexed under.
fn bucket_key(id: u32) -> Option<u64> {
    let b = STORE.buckets.get(id as usize)?;
    Some(bucket_key_of(
        b.stack.load(Relaxed),
        b.size.load(Relaxed),
        b.interval.load(Relaxed),
        Labels(b.labels.load(Relaxed)),
    ))
}

fn bucket_key_of(stack: u32, size: u64, interval: u64, labels: Labels) -> u64 {
    mix(mix(mix(stack as u64 ^ size.rotate_left(20)) ^ interval) ^ u64::from(labels.0)) | 1
}

/// Rebuilds both indexes at their widths (under the lock).
fn rebuild_indexes_locked() {
    STORE
        .stack_index
        .rebuild(STORE.stack_count.load(Relaxed), stack_key);
    STORE
        .bucket_index
        .rebuild(STORE.bucket_count.load(Relaxed), bucket_key);
}

fn intern_stack(frames: &[usize]) -> Option<u32> {
    let h = hash_frames(frames);
    let key = mix(h);
    let idx = &STORE.stack_index;
    let (table, bits) = idx.table();
    let mut i = index_start(key, bits);
    for _ in 0..table.len() {
        let v = table.get(i)?.load(Relaxed);
        if v == 0 {
            break;
        }
        let id = v - 1;
        let rec = STORE.stacks.get(id as usize)?;
        if rec.hash.load(Relaxed) == h && stack_frames(rec) == Some(frames) {
            return Some(id);
        }
        i = (i + 1) & (table.len() - 1);
    }
    // new stack
    let id = STORE.stack_count.load(Relaxed);
    let rec = STORE.stacks.get(id as usize)?;
    let off = STORE.frame_count.load(Relaxed);
    if off + frames.len() > STORE.frames.cap.load(Relaxed) || off > u32::MAX as usize {
        return None;
    }
    idx.reserve(id, stack_key);
    let entry = idx.free_entry(key)?;
    for (k, &f) in frames.iter().enumerate() {
        STORE.frames.get(off + k)?.store(f, Relaxed);
    }
    rec.offset.store(off as u32, Relaxed);
    rec.len.store(frames.len() as u32, Relaxed);
    rec.hash.store(h, Relaxed);
    STORE.frame_count.store(off + frames.len(), Relaxed);
    entry.store(id + 1, Relaxed);
    STORE.stack_count.store(id + 1, Release);
    Some(id)
}

fn stack_frames(rec: &StackRec) -> Option<&'static [usize]> {
    let off = rec.offset.load(Relaxed) as usize;
    let len = rec.len.load(Relaxed) as usize;
    let p = STORE.frames.ptr.load(Acquire);
    if p.is_null() || off + len > STORE.frames.cap.load(Relaxed) {
        return None;
    }
    // SAFETY: `off..off+len` is within the frames mapping, whose entries
    // were written before the stack count that covers them was published;
    // `AtomicUsize` has the same layout as `usize`.
    Some(unsafe { std::slice::from_raw_parts(p.add(off).cast::<usize>(), len) })
}

fn intern_bucket(stack: u32, size: u64, interval: u64, labels: Labels) -> Option<u32> {
    let key = bucket_key_of(stack, size, interval, labels);
    let idx = &STORE.bucket_index;
    let (table, bits) = idx.table();
    let mut i = index_start(key, bits);
    for _ in 0..table.len() {
        let v = table.get(i)?.load(Relaxed);
        if v == 0 {
            break;
        }
        let b = STORE.buckets.get((v - 1) as usize)?;
        if b.stack.load(Relaxed) == stack
            && b.size.load(Relaxed) == size
            && b.interval.load(Relaxed) == interval
            && b.labels.load(Relaxed) == labels.0
        {
            return Some(v - 1);
        }
        i = (i + 1) & (table.len() - 1);
    }
    let id = STORE.bucket_count.load(Relaxed);
    let b = STORE.buckets.get(id as usize)?;
    idx.reserve(id, bucket_key);
    let entry = idx.free_entry(key)?;
    b.stack.store(stack, Relaxed);
    b.size.store(size, Relaxed);
    b.interval.store(interval, Relaxed);
    b.labels.store(labels.0, Relaxed);
    entry.store(id + 1, Relaxed);
    STORE.bucket_count.store(id + 1, Release);
    Some(id)
}

/// The ages (nanoseconds at the time of the call) of the sampled blocks
/// in the live set, by bucket id (`n` buckets; blocks of later buckets are
/// left out), lock-free. Reads only the segments opened so far: the pages
/// of later ones are never touched.
fn live_ages(n: usize) -> Vec<Vec<u64>> {
    let mut out: Vec<Vec<u64>> = vec![Vec::new(); n];
    let now = since_epoch();
    let slots = STORE.live.slice();
    for level in 0..=STORE.live_level.load(Acquire) {
        let (base, size) = segment(level);
        let Some(seg) = slots.get(base..base.saturating_add(size)) else {
            continue;
        };
        for slot in seg {
            let key = slot.key.load(Acquire);
            if key <= TOMB {
                continue;
            }
            let bucket = slot.bucket.load(Relaxed);
            let born = slot.born.load(Relaxed);
            // a slot removed and refilled while it was read is skipped
            // (its new block was inserted after this read began: young)
            if slot.key.load(Acquire) != key {
                continue;
            }
            if let Some(v) = out.get_mut(bucket as usize) {
                v.push(now.saturating_sub(born));
            }
        }
    }
    out
}

/// Every bucket recorded so far, without taking the lock.
pub(crate) fn raw_buckets() -> Vec<RawBucket> {
    if STATE.load(Acquire) != 1 {
        return Vec::new();
    }
    let n = STORE.bucket_count.load(Acquire);
    let mut ages = live_ages(n as usize);
    let stacks = STORE.stack_count.load(Acquire);
    let mut out = Vec::with_capacity(n as usize);
    for id in 0..n {
        let Some(b) = STORE.buckets.get(id as usize) else {
            break;
        };
        let stack = b.stack.load(Relaxed);
        if stack >= stacks {
            continue;
        }
        let Some(frames) = STORE.stacks.get(stack as usize).and_then(stack_frames) else {
            continue;
        };
        let allocs = b.allocs.load(Relaxed);
        let frees = b.frees.load(Relaxed).min(allocs);
        let lifetimes = STORE.lifetimes.get(id as usize).and_then(|h| {
            let counts = h.classes.each_ref().map(|c| c.load(Relaxed));
            counts.iter().any(|c| *c != 0).then(|| Box::new(counts))
        });
        let labels = Labels(b.labels.load(Relaxed));
        out.push(RawBucket {
            scope: labels.scope(),
            thread: labels.thread(),
            stack: frames.to_vec(),
            size: b.size.load(Relaxed),
            interval: b.interval.load(Relaxed),
            allocs,
            frees,
            ages: ages
                .get_mut(id as usize)
                .map(std::mem::take)
                .unwrap_or_default(),
            lifetimes,
        });
    }
    out
}

/// Visits every bucket's labels, object size, interval and sampled
/// allocation and free counts, lock-free and without allocating.
pub(crate) fn for_each_bucket(mut f: impl FnMut(Labels, u64, u64, u64, u64)) {
    if STATE.load(Acquire) != 1 {
        return;
    }
    let n = STORE.bucket_count.load(Acquire);
    for id in 0..n {
        let Some(b) = STORE.buckets.get(id as usize) else {
            break;
        };
        let allocs = b.allocs.load(Relaxed);
        let frees = b.frees.load(Relaxed).min(allocs);
        f(
            Labels(b.labels.load(Relaxed)),
            b.size.load(Relaxed),
            b.interval.load(Relaxed),
            allocs,
            frees,
        );
    }
}

/// The scope and the thread group a sample was taken in, packed: scope id
/// in the low 16 bits, thread group id in the high 16.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Labels(pub(crate) u32);

impl Labels {
    pub(crate) fn new(scope: u32, thread: u32) -> Labels {
        Labels((scope & 0xffff) | (thread << 16))
    }
    pub(crate) fn scope(self) -> u32 {
        self.0 & 0xffff
    }
    pub(crate) fn thread(self) -> u32 {
        self.0 >> 16
    }
}

/// Counts and memory of the store.
pub(crate) struct StoreInfo {
    pub live_samples: u64,
    pub stacks: u64,
    pub buckets: u64,
    pub frames: u64,
    pub reserved_bytes: u64,
    pub resident_bytes: u64,
}

pub(crate) fn info() -> StoreInfo {
    let regions_reserved = STORE.live.bytes()
        + STORE.buckets.bytes()
        + STORE.lifetimes.bytes()
        + STORE.bucket_index.slots.bytes()
        + STORE.stacks.bytes()
        + STORE.stack_index.slots.bytes()
        + STORE.frames.bytes();
    let resident = STORE.live.resident()
        + STORE.buckets.resident()
        + STORE.lifetimes.resident()
        + STORE.bucket_index.slots.resident()
        + STORE.stacks.resident()
        + STORE.stack_index.slots.resident()
        + STORE.frames.resident()
        + std::mem::size_of_val(&FILTER);
    StoreInfo {
        live_samples: HOT.live_count.load(Relaxed) as u64,
        stacks: STORE.stack_count.load(Relaxed) as u64,
        buckets: STORE.bucket_count.load(Relaxed) as u64,
        frames: STORE.frame_count.load(Relaxed) as u64,
        reserved_bytes: (regions_reserved + std::mem::size_of_val(&FILTER)) as u64,
        resident_bytes: resident as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_live_set_segments_tile_its_mapping_and_the_last_holds_the_cap() {
        for max_live in [1, 100, 2048, 2049, 6000, 204_800, 1 << 20, 1 << 26] {
            let segs: Vec<_> = live_segments(max_live).collect();
            let need = (max_live * 2).max(64);
            let mut end = 0;
            for (k, &(base, size)) in segs.iter().enumerate() {
                assert_eq!(base, end, "{max_live}: {segs:?}");
                if k == 0 {
                    assert_eq!(size, need.min(LIVE_FIRST), "{max_live}: {segs:?}");
                } else if k + 1 < segs.len() {
                    assert_eq!(size, 3 * base, "{max_live}: {segs:?}");
                }
                end = base + size;
            }
            let (_, last) = *segs.last().unwrap();
            assert_eq!(
                last, need,
                "the last segment holds the cap alone at half load: {max_live}: {segs:?}"
            );
            assert!(segs.len() < MAX_SEGMENTS, "{max_live}: {segs:?}");
        }
        // the defaults: 4,096, 12,288, 49,152, 196,608 and 409,600 slots
        let d: Vec<_> = live_segments(Limits::default().max_live_samples).collect();
        assert_eq!(
            d.iter().map(|s| s.1).collect::<Vec<_>>(),
            [4096, 12_288, 49_152, 196_608, 409_600]
        );
        assert_eq!(d.last().map(|s| s.0 + s.1), Some(671_744));
    }

    #[test]
    fn lifetime_classes_double_from_a_microsecond_to_past_an_hour() {
        assert_eq!(lifetime_class(0), 0);
        assert_eq!(lifetime_class(999), 0);
        assert_eq!(lifetime_class(1_000), 1); // 1 us
        assert_eq!(lifetime_class(1_999), 1);
        assert_eq!(lifetime_class(2_000), 2); // [2, 4) us
        assert_eq!(lifetime_class(3_999), 2);
        assert_eq!(lifetime_class(4_000), 3);
        // 1 ms = 1000 us, in [512, 1024) us
        assert_eq!(lifetime_class(1_000_000), 10);
        assert_eq!(lifetime_class(1_024_000), 11);
        // 1 h = 3.6e9 us, in [2^31, 2^32) us
        assert_eq!(lifetime_class(3_600_000_000_000), 32);
        assert_eq!(lifetime_class((1u64 << 32) * 1000), 33);
        assert_eq!(lifetime_class(u64::MAX), LIFETIME_CLASSES - 1);
        // every class is reached, in order
        let mut last = 0;
        for k in 0..40u32 {
            let c = lifetime_class((1u64 << k) * 1000);
            assert!(c >= last && c < LIFETIME_CLASSES, "{k}: {c}");
            last = c;
        }
        assert_eq!(std::mem::size_of::<LifetimeRec>(), 136);
        assert_eq!(std::mem::size_of::<LiveSlot>(), 24);
    }

    #[test]
    fn the_limits_start_at_their_defaults() {
        assert_eq!(parking_free::LimitsCell::new().get(), Limits::default());
        let cell = parking_free::LimitsCell::new();
        let l = Limits::default()
            .max_live_samples(1)
            .max_stacks(2)
            .max_buckets(3)
            .max_frames(4);
        cell.set(l);
        assert_eq!(cell.get(), l);
        assert_eq!(
            (
                l.max_live_samples,
                l.max_stacks,
                l.max_buckets,
                l.max_frames
            ),
            (1, 2, 3, 4)
        );
    }
}
