//! The sampler's memory: fixed-capacity, `mmap`'d arenas, bounded by
//! [`Limits`], created at the first sample.
//!
//! - **stacks**: deduplicated raw stacks (append-only frames arena + index);
//! - **buckets**: one per (stack, object size, interval), with atomic counts
//!   of sampled allocations and frees (append-only + index);
//! - **live set**: the addresses of sampled blocks not yet freed, an
//!   open-addressing table. Inserts happen under the lock in [`HOT`];
//!   lookups and removals (from `dealloc` on any thread) are lock-free
//!   CASes;
//! - **filter**: a small counting filter in front of the live set, so that a
//!   free only probes the table when its address may be sampled.
//!
//! Appends are published with release stores of the counts, so a profile
//! capture reads stacks and buckets without the lock and never blocks a
//! sampling thread. The lock is only ever *tried* (with a short bounded
//! spin): a sample that cannot get it is dropped and counted.

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
}

#[repr(C)]
struct BucketRec {
    stack: AtomicU32,
    _pad: u32,
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
        let p = self.ptr.load(Acquire);
        if p.is_null() || i >= self.cap.load(Relaxed) {
            return None;
        }
        // SAFETY: `i < cap`, the mapping is never unmapped, and all-zero
        // bytes are a valid `T` (atomics and integers only).
        Some(unsafe { &*p.add(i) })
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
    live_shift: AtomicU32,
    buckets: Region<BucketRec>,
    bucket_index: Region<AtomicU32>,
    stacks: Region<StackRec>,
    stack_index: Region<AtomicU32>,
    frames: Region<AtomicUsize>,
    bucket_count: AtomicU32,
    stack_count: AtomicU32,
    frame_count: AtomicUsize,
}

static STORE: Store = Store {
    live: Region::new(),
    live_shift: AtomicU32::new(64),
    buckets: Region::new(),
    bucket_index: Region::new(),
    stacks: Region::new(),
    stack_index: Region::new(),
    frames: Region::new(),
    bucket_count: AtomicU32::new(0),
    stack_count: AtomicU32::new(0),
    frame_count: AtomicUsize::new(0),
};

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
    /// Tombstones in the live set.
    tombstones: AtomicUsize,
    /// Samples recorded.
    pub(crate) samples: AtomicU64,
    /// Samples dropped (a cap was reached, or the lock was busy).
    pub(crate) dropped: AtomicU64,
}

pub(crate) static HOT: CachePadded<Hot> = CachePadded::new(Hot {
    lock: AtomicBool::new(false),
    live_count: AtomicUsize::new(0),
    tombstones: AtomicUsize::new(0),
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
    let live_cap = (l.max_live_samples * 2).next_power_of_two().max(64);
    let bucket_index_cap = (l.max_buckets * 2).next_power_of_two().max(64);
    let stack_index_cap = (l.max_stacks * 2).next_power_of_two().max(64);
    let ok = STORE.live.map(live_cap)
        && STORE.buckets.map(l.max_buckets)
        && STORE.bucket_index.map(bucket_index_cap)
        && STORE.stacks.map(l.max_stacks)
        && STORE.stack_index.map(stack_index_cap)
        && STORE.frames.map(l.max_frames);
    STORE
        .live_shift
        .store(64 - live_cap.trailing_zeros(), Relaxed);
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

fn find(ptr: usize) -> Option<&'static LiveSlot> {
    if ptr <= TOMB || STATE.load(Acquire) != 1 {
        return None;
    }
    let cap = STORE.live.cap.load(Relaxed);
    let shift = STORE.live_shift.load(Relaxed);
    let mut i = (mix(ptr as u64) >> shift) as usize;
    for _ in 0..cap {
        let slot = STORE.live.get(i)?;
        match slot.key.load(Acquire) {
            k if k == ptr => return Some(slot),
            EMPTY => return None,
            _ => {}
        }
        i = (i + 1) & (cap - 1);
    }
    None
}

/// Removes `ptr` from the live set if it is there (lock-free) and counts
/// the free in its bucket. Returns whether it was a sampled block.
pub(crate) fn remove(ptr: usize) -> bool {
    let Some(slot) = find(ptr) else {
        return false;
    };
    let bucket = slot.bucket.load(Relaxed);
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
pub(crate) fn record(ptr: usize, size: u64, interval: u64, frames: &[usize]) -> bool {
    if ptr <= TOMB {
        return false;
    }
    if !try_lock() {
        HOT.dropped.fetch_add(1, Relaxed);
        return false;
    }
    let ok = ensure_created() && insert_locked(ptr, size, interval, frames);
    unlock();
    if ok {
        HOT.samples.fetch_add(1, Relaxed);
        filter_inc(ptr);
    } else {
        HOT.dropped.fetch_add(1, Relaxed);
    }
    ok
}

fn insert_locked(ptr: usize, size: u64, interval: u64, frames: &[usize]) -> bool {
    if HOT.live_count.load(Relaxed) >= limits().max_live_samples {
        return false;
    }
    let Some(stack) = intern_stack(frames) else {
        return false;
    };
    let Some(bucket) = intern_bucket(stack, size, interval) else {
        return false;
    };
    // sweep tombstones when they crowd the table
    let cap = STORE.live.cap.load(Relaxed);
    if HOT.tombstones.load(Relaxed) > cap / 4 {
        sweep_tombstones_locked();
    }
    let shift = STORE.live_shift.load(Relaxed);
    let mut i = (mix(ptr as u64) >> shift) as usize;
    for _ in 0..cap {
        let Some(slot) = STORE.live.get(i) else {
            return false;
        };
        let k = slot.key.load(Acquire);
        if k == EMPTY || k == TOMB {
            slot.bucket.store(bucket, Relaxed);
            slot.key.store(ptr, Release);
            if k == TOMB {
                HOT.tombstones.fetch_sub(1, Relaxed);
            }
            HOT.live_count.fetch_add(1, Relaxed);
            if let Some(b) = STORE.buckets.get(bucket as usize) {
                b.allocs.fetch_add(1, Relaxed);
            }
            return true;
        }
        i = (i + 1) & (cap - 1);
    }
    false
}

/// Turns tombstones at the end of probe chains back into empty slots.
/// Safe against concurrent lock-free lookups: a slot becomes empty only when
/// the next one is empty, so no key can lie beyond it in its chain, and no
/// key is inserted while the lock is held.
fn sweep_tombstones_locked() {
    let cap = STORE.live.cap.load(Relaxed);
    for j in 0..cap {
        let Some(slot) = STORE.live.get(j) else {
            return;
        };
        if slot.key.load(Acquire) != EMPTY {
            continue;
        }
        let mut i = (j + cap - 1) & (cap - 1);
        while i != j {
            let Some(s) = STORE.live.get(i) else { return };
            if s.key.load(Acquire) != TOMB {
                break;
            }
            s.key.store(EMPTY, Release);
            HOT.tombstones.fetch_sub(1, Relaxed);
            i = (i + cap - 1) & (cap - 1);
        }
    }
}

/// Runs the tombstone sweep if the lock is free (from ordinary threads,
/// e.g. profile capture).
pub(crate) fn maintain() {
    if STATE.load(Acquire) == 1 && HOT.tombstones.load(Relaxed) > 0 && try_lock() {
        sweep_tombstones_locked();
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

fn intern_stack(frames: &[usize]) -> Option<u32> {
    let h = hash_frames(frames);
    let idx = &STORE.stack_index;
    let cap = idx.cap.load(Relaxed);
    let mut i = (mix(h) >> (64 - cap.trailing_zeros())) as usize;
    for _ in 0..cap {
        let e = idx.get(i)?;
        let v = e.load(Relaxed);
        if v == 0 {
            break;
        }
        let id = v - 1;
        let rec = STORE.stacks.get(id as usize)?;
        if rec.hash.load(Relaxed) == h && stack_frames(rec) == Some(frames) {
            return Some(id);
        }
        i = (i + 1) & (cap - 1);
    }
    // new stack
    let id = STORE.stack_count.load(Relaxed);
    let rec = STORE.stacks.get(id as usize)?;
    let off = STORE.frame_count.load(Relaxed);
    if off + frames.len() > STORE.frames.cap.load(Relaxed) || off > u32::MAX as usize {
        return None;
    }
    for (k, &f) in frames.iter().enumerate() {
        STORE.frames.get(off + k)?.store(f, Relaxed);
    }
    rec.offset.store(off as u32, Relaxed);
    rec.len.store(frames.len() as u32, Relaxed);
    rec.hash.store(h, Relaxed);
    STORE.frame_count.store(off + frames.len(), Relaxed);
    idx.get(i)?.store(id + 1, Relaxed);
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

fn intern_bucket(stack: u32, size: u64, interval: u64) -> Option<u32> {
    let key = mix(mix(stack as u64 ^ size.rotate_left(20)) ^ interval) | 1;
    let idx = &STORE.bucket_index;
    let cap = idx.cap.load(Relaxed);
    let mut i = (key >> (64 - cap.trailing_zeros())) as usize;
    for _ in 0..cap {
        let e = idx.get(i)?;
        let v = e.load(Relaxed);
        if v == 0 {
            break;
        }
        let b = STORE.buckets.get((v - 1) as usize)?;
        if b.stack.load(Relaxed) == stack
            && b.size.load(Relaxed) == size
            && b.interval.load(Relaxed) == interval
        {
            return Some(v - 1);
        }
        i = (i + 1) & (cap - 1);
    }
    let id = STORE.bucket_count.load(Relaxed);
    let b = STORE.buckets.get(id as usize)?;
    b.stack.store(stack, Relaxed);
    b.size.store(size, Relaxed);
    b.interval.store(interval, Relaxed);
    idx.get(i)?.store(id + 1, Relaxed);
    STORE.bucket_count.store(id + 1, Release);
    Some(id)
}

/// Every bucket recorded so far, without taking the lock.
pub(crate) fn raw_buckets() -> Vec<RawBucket> {
    if STATE.load(Acquire) != 1 {
        return Vec::new();
    }
    let n = STORE.bucket_count.load(Acquire);
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
        out.push(RawBucket {
            stack: frames.to_vec(),
            size: b.size.load(Relaxed),
            interval: b.interval.load(Relaxed),
            allocs,
            frees,
        });
    }
    out
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
        + STORE.bucket_index.bytes()
        + STORE.stacks.bytes()
        + STORE.stack_index.bytes()
        + STORE.frames.bytes();
    let resident = STORE.live.resident()
        + STORE.buckets.resident()
        + STORE.bucket_index.resident()
        + STORE.stacks.resident()
        + STORE.stack_index.resident()
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
