//! The sampling decision: a per-thread byte countdown drawn from an
//! exponential distribution whose mean is the sample interval, so that
//! sampling is a Poisson process over allocated bytes (Go's
//! `MemProfileRate`, tcmalloc's `bytes_until_sample`).
//!
//! An allocation of `S` bytes is sampled when it takes the countdown below
//! zero, which happens with probability `1 - exp(-S / interval)`.
//! Everything here is pure arithmetic: no allocation, no lock.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Default sample interval: 512 KiB, like Go and jemalloc.
pub const DEFAULT_INTERVAL: u64 = 512 * 1024;

/// The interval in force (bytes; 0 = off, 1 = every allocation).
pub(crate) static INTERVAL: AtomicU64 = AtomicU64::new(DEFAULT_INTERVAL);

/// Countdown that never reaches zero: sampling off.
pub(crate) const NEVER: u64 = u64::MAX;

/// One step of xorshift64* (Vigna): fast, non-zero state, good enough for
/// drawing exponential gaps.
#[inline]
pub(crate) fn next_random(state: &Cell<u64>) -> u64 {
    let mut x = state.get();
    if x == 0 {
        x = seed();
    }
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    state.set(x);
    x.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

/// A seed that differs between threads and processes without a syscall.
fn seed() -> u64 {
    static SEQ: AtomicU64 = AtomicU64::new(0x9E37_79B9_7F4A_7C15);
    let local = 0u8;
    let addr = &local as *const u8 as u64;
    let s = SEQ.fetch_add(0x9E37_79B9_7F4A_7C15, Relaxed) ^ addr.rotate_left(32) ^ time_bits();
    s | 1
}

fn time_bits() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: `rdtsc` has no preconditions and no side effects.
        unsafe { core::arch::x86_64::_rdtsc() }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
    }
}

/// Draws the next countdown for `interval` from the random state `rng`.
#[inline]
pub(crate) fn draw(interval: u64, rng: &Cell<u64>) -> u64 {
    match interval {
        0 => NEVER,
        1 => 0,
        _ => {
            // u in (0, 1]: never ln(0).
            let u = ((next_random(rng) >> 11) + 1) as f64 * (1.0 / (1u64 << 53) as f64);
            let gap = -u.ln() * interval as f64;
            // `as` saturates; keep the countdown below NEVER.
            (gap as u64).min(NEVER - 1)
        }
    }
}

/// Probability that an allocation of `size` bytes is sampled at `interval`.
pub fn probability(size: u64, interval: u64) -> f64 {
    match interval {
        0 => 0.0,
        1 => 1.0,
        _ => 1.0 - (-(size as f64) / interval as f64).exp(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Draws per check: fewer under Miri (~1000x slower). The seeds are
    /// fixed, so either count gives the same result every run.
    const N: u64 = if cfg!(miri) { 20_000 } else { 200_000 };

    #[test]
    fn draws_have_the_interval_as_mean() {
        let rng = Cell::new(12345);
        let n = N;
        let interval = 4096;
        let sum: f64 = (0..n).map(|_| draw(interval, &rng) as f64).sum();
        let mean = sum / n as f64;
        assert!((mean / interval as f64 - 1.0).abs() < 0.02, "mean {mean}");
    }

    #[test]
    fn special_intervals() {
        let rng = Cell::new(1);
        assert_eq!(draw(0, &rng), NEVER);
        assert_eq!(draw(1, &rng), 0);
        assert_eq!(probability(10, 0), 0.0);
        assert_eq!(probability(10, 1), 1.0);
        assert!((probability(512 * 1024, 512 * 1024) - 0.632).abs() < 0.001);
    }

    #[test]
    fn sampled_fraction_matches_poisson() {
        // simulate the countdown: objects of `size` bytes; the fraction sampled
        // must be 1 - exp(-size/interval)
        let rng = Cell::new(99);
        for (size, interval) in [(256u64, 4096u64), (4096, 4096), (64 * 1024, 16 * 1024)] {
            let mut countdown = draw(interval, &rng);
            let n = N;
            let mut hits = 0;
            for _ in 0..n {
                let (c, borrow) = countdown.overflowing_sub(size);
                if borrow {
                    hits += 1;
                    countdown = draw(interval, &rng);
                } else {
                    countdown = c;
                }
            }
            let got = hits as f64 / n as f64;
            let want = probability(size, interval);
            assert!(
                (got / want - 1.0).abs() < 0.03,
                "size {size}: {got} vs {want}"
            );
        }
    }
}
