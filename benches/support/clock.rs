//! The calling thread's CPU time, shared by the measurement programs that
//! report it (`benches/scope.rs`, `leak_snapshot_cost`, `scope_read_cost`):
//! time the thread ran, not time it waited for a core.

/// `CLOCK_THREAD_CPUTIME_ID`, in nanoseconds.
pub fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
