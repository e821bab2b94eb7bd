//! Allocation by thread group: exact counts per thread *name group*.
//!
//! ```
//! for g in allocscope::threads::stats() {
//!     println!("{}: {} allocations, {} bytes", g.name, g.allocations, g.allocated_bytes);
//! }
//! ```
//!
//! A thread's group is its name with trailing digits and separators
//! removed (`tokio-runtime-worker-3` → `tokio-runtime-worker`,
//! `request-worker-12` → `request-worker`), `main` for the main thread, or
//! `unnamed`. At most [`MAX_GROUPS`] groups are told apart; threads of
//! later ones count under `other`.
//!
//! **What a group shows.** Allocations count to the group of the thread
//! that allocated, frees to the group of the thread that freed: a group
//! shows what its threads *allocated* and *freed*, not what they own (a
//! buffer a worker allocates and a writer thread frees counts once in
//! each). The counts of exited threads stay in their group. The counts are
//! exact (the same per-thread counters as [`crate::stats`]) once the
//! threads are joined; events of a thread after its exit hook ran (other
//! destructors at its exit) are in no group.
//!
//! **Where the name comes from.** The group is read from the thread's
//! kernel name (`comm`), the only name that can be read inside the
//! allocator without allocating. The kernel keeps 15 bytes of it: longer
//! names are grouped by their first 15 bytes (tokio's default,
//! `tokio-runtime-worker`, is recognised and shown whole). A thread that
//! was never named keeps the kernel name of the thread that started it:
//! one that shares the main thread's is `unnamed`, one started from a named
//! thread counts in that thread's group.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::*};

use crate::counters;
use crate::sys;

/// The most thread groups told apart; threads of later groups count under
/// `other`.
pub const MAX_GROUPS: usize = 32;

/// The id of `other`, the group past [`MAX_GROUPS`].
pub(crate) const OTHER: u32 = MAX_GROUPS as u32;

/// The group a forked child gives the threads that did not survive the
/// fork and whose group was never resolved: `other` (their names are
/// gone with them; claiming a group there would need the name table).
pub(crate) const UNNAMED_AFTER_FORK: u32 = OTHER;

/// The longest group name kept, in bytes.
const NAME_MAX: usize = 64;

/// Kernel names that are known truncations of a common thread name, and the
/// group shown for them.
const TRUNCATED: &[(&str, &str)] = &[("tokio-runtime-w", "tokio-runtime-worker")];

/// One group: its name (claimed once, lock-free) and the counts of its
/// exited threads.
struct Group {
    /// 0 = free, 1 = being written, 2 = ready.
    state: AtomicU8,
    len: AtomicU8,
    name: [AtomicU8; NAME_MAX],
    allocations: AtomicU64,
    allocated_bytes: AtomicU64,
    deallocations: AtomicU64,
    freed_bytes: AtomicU64,
}

impl Group {
    const fn new() -> Group {
        Group {
            state: AtomicU8::new(0),
            len: AtomicU8::new(0),
            name: [const { AtomicU8::new(0) }; NAME_MAX],
            allocations: AtomicU64::new(0),
            allocated_bytes: AtomicU64::new(0),
            deallocations: AtomicU64::new(0),
            freed_bytes: AtomicU64::new(0),
        }
    }

    fn name_is(&self, name: &[u8]) -> bool {
        usize::from(self.len.load(Relaxed)) == name.len()
            && self
                .name
                .iter()
                .zip(name)
                .all(|(a, b)| a.load(Relaxed) == *b)
    }

    fn name(&self) -> String {
        let len = usize::from(self.len.load(Relaxed)).min(NAME_MAX);
        let bytes: Vec<u8> = self.name[..len].iter().map(|b| b.load(Relaxed)).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// Groups `0..MAX_GROUPS`, claimed in order of first use, and `other`.
static GROUPS: [Group; MAX_GROUPS + 1] = [const { Group::new() }; MAX_GROUPS + 1];

/// The group of a thread name: trailing ASCII digits and separators
/// (`-`, `_`, `.`, `#`, `:`, space) removed; `unnamed` if nothing is left.
pub fn group_name(name: &str) -> &str {
    let g = group_bytes(name.as_bytes());
    // only ASCII was removed from the end: still UTF-8
    std::str::from_utf8(g).unwrap_or("unnamed")
}

fn group_bytes(name: &[u8]) -> &[u8] {
    let end = name
        .iter()
        .rposition(|b| !(b.is_ascii_digit() || b" -_.#:".contains(b)))
        .map_or(0, |i| i + 1);
    let g = &name[..end];
    if g.is_empty() {
        return b"unnamed";
    }
    match TRUNCATED.iter().find(|(t, _)| t.as_bytes() == g) {
        Some((_, full)) => full.as_bytes(),
        None => g,
    }
}

/// The id of the group named `name` (already normalised), claiming a free
/// one the first time. Lock-free, no allocation: usable in the allocator.
/// Two threads claiming the same new name at once may both claim a group;
/// readers merge groups by name.
fn id_of(name: &[u8]) -> u32 {
    let name = &name[..name.len().min(NAME_MAX)];
    for (i, g) in GROUPS[..MAX_GROUPS].iter().enumerate() {
        match g.state.load(Acquire) {
            2 if g.name_is(name) => return i as u32,
            2 | 1 => continue,
            _ => {}
        }
        if g.state.compare_exchange(0, 1, Acquire, Relaxed).is_ok() {
            for (d, s) in g.name.iter().zip(name) {
                d.store(*s, Relaxed);
            }
            g.len.store(name.len() as u8, Relaxed);
            g.state.store(2, Release);
            return i as u32;
        }
    }
    OTHER
}

/// The main thread's kernel name, cached lock-free (0 = not read, 1 =
/// being written, 2 = ready): whoever finds it not ready reads it
/// itself (`open`/`read`, no allocation), so no caller ever waits.
static MAIN_STATE: AtomicU8 = AtomicU8::new(0);
static MAIN_NAME: [AtomicU8; 16] = [const { AtomicU8::new(0) }; 16];

fn main_comm() -> Option<sys::Comm> {
    if MAIN_STATE.load(Acquire) == 2 {
        let mut buf = [0u8; 16];
        for (d, s) in buf.iter_mut().zip(&MAIN_NAME) {
            *d = s.load(Relaxed);
        }
        return Some(sys::Comm::from_bytes(buf));
    }
    let comm = sys::task_comm(sys::getpid())?;
    if MAIN_STATE.compare_exchange(0, 1, Acquire, Relaxed).is_ok() {
        for (d, s) in MAIN_NAME.iter().zip(comm.as_bytes()) {
            d.store(*s, Relaxed);
        }
        MAIN_STATE.store(2, Release);
    }
    Some(comm)
}

/// The group of thread `tid` with kernel name `comm`.
fn group_of(tid: u32, comm: Option<sys::Comm>) -> u32 {
    if tid != 0 && tid == sys::getpid() {
        return id_of(b"main");
    }
    let Some(comm) = comm else {
        return id_of(b"unnamed");
    };
    // a thread never named keeps its creator's kernel name: the main
    // thread's (the program's name) marks one started from `main`
    if main_comm().is_some_and(|m| m.as_bytes() == comm.as_bytes()) {
        return id_of(b"unnamed");
    }
    id_of(group_bytes(comm.as_bytes()))
}

/// The calling thread's group (it has OS thread id `tid`), from its kernel
/// name: the allocator's cold paths call it (a sample, a thread's exit).
pub(crate) fn group_of_current(tid: u32) -> u32 {
    group_of(tid, sys::current_comm())
}

/// The group of thread `tid` of this process, from `/proc`.
pub(crate) fn group_of_task(tid: u32) -> u32 {
    group_of(tid, sys::task_comm(tid))
}

/// Threads' starts and exits begun and finished: a reader that overlaps
/// one (at an exit a thread's counts move from its live block to its
/// group; at a start a reused block takes its new owner's baseline) reads
/// again, so that a group's counts never go down between two reads (they
/// are Prometheus counters).
static TRANSITIONS_BEGUN: AtomicU64 = AtomicU64::new(0);
static TRANSITIONS_DONE: AtomicU64 = AtomicU64::new(0);

/// Marks a thread's start or exit in progress until dropped: from its
/// first allocation's attach (around taking a block and setting its
/// baseline) and its exit hook (around [`retire`] and the release of its
/// block). Two atomic adds; never waits, never allocates.
pub(crate) struct Transition(());

impl Transition {
    pub(crate) fn begin() -> Transition {
        TRANSITIONS_BEGUN.fetch_add(1, SeqCst);
        Transition(())
    }
}

impl Drop for Transition {
    fn drop(&mut self) {
        TRANSITIONS_DONE.fetch_add(1, SeqCst);
    }
}

/// Adds an exiting thread's counts to its group (from its exit hook).
pub(crate) fn retire(group: u32, t: counters::ThreadTotals) {
    if let Some(g) = GROUPS.get(group as usize) {
        g.allocations.fetch_add(t.allocations, Relaxed);
        g.allocated_bytes.fetch_add(t.allocated_bytes, Relaxed);
        g.deallocations.fetch_add(t.deallocations, Relaxed);
        g.freed_bytes.fetch_add(t.freed_bytes, Relaxed);
    }
}

/// The name of group `id` (`other` past the bound).
pub(crate) fn name_of(id: u32) -> String {
    match GROUPS.get(id as usize) {
        Some(g) if (id as usize) < MAX_GROUPS && g.state.load(Acquire) == 2 => g.name(),
        _ => "other".to_owned(),
    }
}

/// One thread group's exact counts (see the [module docs](self)).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GroupStats {
    /// The group's name: `tokio-runtime-worker`, `main`, `unnamed`,
    /// `other`, ...
    pub name: String,
    /// Allocations made by its threads (a `realloc` counts as one, as in
    /// [`crate::Stats`]).
    pub allocations: u64,
    /// Bytes its threads allocated.
    pub allocated_bytes: u64,
    /// Frees made by its threads (whoever allocated the blocks).
    pub deallocations: u64,
    /// Bytes its threads freed.
    pub freed_bytes: u64,
    /// Its threads alive now.
    pub live_threads: u64,
}

/// Exact allocation and free counts per thread group, live and exited
/// threads together, largest `allocated_bytes` first. Reads every live
/// thread's counters (and `/proc` for a thread whose group is not known
/// yet). See the [module docs](self) for what the groups mean.
pub fn stats() -> Vec<GroupStats> {
    // Read again while a thread's start or exit overlaps the read. The read
    // itself is short (fixed arrays, no allocation); under constant thread
    // churn the reader backs off to sleeps, and only after a second of
    // overlapping reads does it settle for one that may count a thread
    // twice or not at all.
    let start = std::time::Instant::now();
    let mut tries = 0u32;
    let counts = loop {
        let done = TRANSITIONS_DONE.load(SeqCst);
        if TRANSITIONS_BEGUN.load(SeqCst) == done {
            let counts = read_counts();
            if TRANSITIONS_BEGUN.load(SeqCst) == done {
                break counts;
            }
        }
        if start.elapsed() > std::time::Duration::from_secs(1) {
            break read_counts();
        }
        tries += 1;
        if tries < 64 {
            std::thread::yield_now();
        } else {
            std::thread::sleep(std::time::Duration::from_micros(100));
        }
    };
    let mut out: Vec<GroupStats> = Vec::new();
    for (id, c) in counts.iter().enumerate() {
        let [a, ab, d, fb, live] = *c;
        if a == 0 && d == 0 && live == 0 {
            continue;
        }
        // two groups claimed for one name at once are merged here
        let name = name_of(id as u32);
        let g = match out.iter().position(|g| g.name == name) {
            Some(i) => &mut out[i],
            None => {
                out.push(GroupStats {
                    name,
                    ..GroupStats::default()
                });
                out.last_mut().expect("just pushed")
            }
        };
        g.allocations = g.allocations.wrapping_add(a);
        g.allocated_bytes = g.allocated_bytes.wrapping_add(ab);
        g.deallocations = g.deallocations.wrapping_add(d);
        g.freed_bytes = g.freed_bytes.wrapping_add(fb);
        g.live_threads += live;
    }
    out.sort_by(|a, b| {
        b.allocated_bytes
            .cmp(&a.allocated_bytes)
            .then_with(|| a.name.cmp(&b.name))
    });
    out
}

/// Every group's counts by id (exited threads' and live ones', and live
/// threads), into a fixed array: no allocation, so the read is short.
fn read_counts() -> [[u64; 5]; MAX_GROUPS + 1] {
    let mut c = [[0u64; 5]; MAX_GROUPS + 1];
    for (slot, g) in c.iter_mut().zip(&GROUPS) {
        slot[0] = g.allocations.load(Relaxed);
        slot[1] = g.allocated_bytes.load(Relaxed);
        slot[2] = g.deallocations.load(Relaxed);
        slot[3] = g.freed_bytes.load(Relaxed);
    }
    counters::for_each_live_thread(|t| {
        if let Some(slot) = c.get_mut(t.group as usize) {
            slot[0] = slot[0].wrapping_add(t.allocations);
            slot[1] = slot[1].wrapping_add(t.allocated_bytes);
            slot[2] = slot[2].wrapping_add(t.deallocations);
            slot[3] = slot[3].wrapping_add(t.freed_bytes);
            slot[4] += 1;
        }
    });
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_names_drop_trailing_digits_and_separators() {
        assert_eq!(group_name("tokio-runtime-worker"), "tokio-runtime-worker");
        assert_eq!(group_name("rayon-worker-12"), "rayon-worker");
        assert_eq!(group_name("request-worker_3"), "request-worker");
        assert_eq!(group_name("pool #7"), "pool");
        assert_eq!(group_name("worker-1.2"), "worker");
        assert_eq!(group_name("1234"), "unnamed");
        assert_eq!(group_name(""), "unnamed");
        assert_eq!(group_name("v2-server"), "v2-server");
        // the kernel's 15 bytes of tokio's default name
        assert_eq!(group_name("tokio-runtime-w"), "tokio-runtime-worker");
    }
}
