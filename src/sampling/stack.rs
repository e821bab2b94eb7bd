//! Raw stack capture inside the allocator: instruction pointers only, no
//! symbols, no allocation, no lock.
//!
//! Two methods (`StackCapture`):
//! - **frame pointers**: walk the `rbp`/`x29` chain with every frame checked
//!   against this thread's stack bounds, so a missing frame pointer ends the
//!   walk instead of faulting. About 20 instructions a frame; needs the
//!   program built with `-C force-frame-pointers=yes` (Rust's own standard
//!   library already is). The default when allocscope itself is built so.
//! - **unwinder**: the `backtrace` crate's `trace_unsynchronized` (libgcc's
//!   DWARF unwinder; lock-free on glibc >= 2.35 with GCC >= 12 libgcc). Needs
//!   no build flags; about 2-5 µs a sample. The default otherwise (feature
//!   `profile`).
//!
//! The stack bounds of a thread come from `pthread_getattr_np`
//! (`crate::sys::thread_stack_bounds`) once per thread and are cached in a
//! destructor-free thread-local.

use std::cell::Cell;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicU8, Ordering::Relaxed};

use crate::sys::{self, StackBounds};

/// Most frames recorded per sample.
pub const MAX_FRAMES: usize = 64;

/// A buffer for one captured stack, left uninitialised: a capture writes
/// only the frames it finds (no 512-byte clearing on the sampled path).
pub(crate) type FrameBuf = [MaybeUninit<usize>; MAX_FRAMES];

/// A fresh, uninitialised [`FrameBuf`].
#[inline(always)]
pub(crate) const fn frame_buf() -> FrameBuf {
    [const { MaybeUninit::uninit() }; MAX_FRAMES]
}

/// How sampled allocations capture their stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StackCapture {
    /// Walk frame pointers (fast; needs `-C force-frame-pointers=yes`).
    FramePointers,
    /// Use the DWARF unwinder (slower; needs no build flags). Falls back to
    /// frame pointers when built without the `profile` feature.
    Unwinder,
}

impl StackCapture {
    /// The method used unless set otherwise: frame pointers when allocscope
    /// is compiled with `-C force-frame-pointers=yes` on x86_64 or aarch64,
    /// the unwinder otherwise.
    pub const fn default_for_build() -> StackCapture {
        if cfg!(all(
            allocscope_frame_pointers,
            any(target_arch = "x86_64", target_arch = "aarch64")
        )) || !cfg!(feature = "profile")
        {
            StackCapture::FramePointers
        } else {
            StackCapture::Unwinder
        }
    }

    fn to_u8(self) -> u8 {
        match self {
            StackCapture::FramePointers => 1,
            StackCapture::Unwinder => 2,
        }
    }

    fn from_u8(v: u8) -> StackCapture {
        match v {
            1 => StackCapture::FramePointers,
            2 => StackCapture::Unwinder,
            _ => StackCapture::default_for_build(),
        }
    }
}

static METHOD: AtomicU8 = AtomicU8::new(0);

/// Selects how sampled allocations capture their stack; returns the previous
/// method.
pub fn set_stack_capture(method: StackCapture) -> StackCapture {
    StackCapture::from_u8(METHOD.swap(method.to_u8(), Relaxed))
}

/// The stack capture method in force.
pub fn stack_capture() -> StackCapture {
    StackCapture::from_u8(METHOD.load(Relaxed))
}

/// Captures up to `MAX_FRAMES` return addresses of the caller into `out`,
/// innermost first, and returns them (the initialised front of `out`).
#[inline(never)]
pub(crate) fn capture(out: &mut FrameBuf) -> &[usize] {
    let n = match stack_capture() {
        StackCapture::FramePointers => walk_frame_pointers(out),
        StackCapture::Unwinder => unwind(out),
    };
    let n = n.min(MAX_FRAMES);
    // SAFETY: both walkers wrote `out[..n]` (and nothing is read past it);
    // `MaybeUninit<usize>` has the layout of `usize`.
    unsafe { std::slice::from_raw_parts(out.as_ptr().cast::<usize>(), n) }
}

#[cfg(feature = "profile")]
fn unwind(out: &mut FrameBuf) -> usize {
    let mut n = 0;
    // SAFETY: `trace_unsynchronized` requires that no other thread unwinds
    // through backtrace's global state concurrently in a way that is not
    // thread-safe; on Linux it calls libgcc's `_Unwind_Backtrace`, which is
    // itself thread-safe. The callback neither allocates nor panics.
    unsafe {
        backtrace::trace_unsynchronized(|frame| {
            let ip = frame.ip() as usize;
            if ip != 0 && n < MAX_FRAMES {
                out[n].write(ip);
                n += 1;
            }
            n < MAX_FRAMES
        });
    }
    n
}

#[cfg(not(feature = "profile"))]
fn unwind(out: &mut FrameBuf) -> usize {
    walk_frame_pointers(out)
}

/// What this thread knows of its stack.
#[derive(Clone, Copy)]
enum Bounds {
    NotLookedUp,
    /// The lookup failed: no frame-pointer walks on this thread.
    Unknown,
    Known(StackBounds),
}

thread_local! {
    /// This thread's stack bounds, looked up at its first sample.
    static BOUNDS: Cell<Bounds> = const { Cell::new(Bounds::NotLookedUp) };
}

/// This thread's stack bounds, looked up once (`crate::sys`).
fn stack_bounds() -> Option<StackBounds> {
    match BOUNDS.with(Cell::get) {
        Bounds::NotLookedUp => {
            let found = sys::thread_stack_bounds();
            BOUNDS.with(|c| c.set(found.map_or(Bounds::Unknown, Bounds::Known)));
            found
        }
        Bounds::Unknown => None,
        Bounds::Known(b) => Some(b),
    }
}

/// Walks the frame-pointer chain. Every frame address is checked to lie
/// within this thread's stack, to grow towards the stack's base and to be
/// aligned, so a function without a frame pointer ends the walk (with the
/// frames found so far) instead of reading outside the stack.
#[inline(never)]
fn walk_frame_pointers(out: &mut FrameBuf) -> usize {
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    {
        let Some(StackBounds { low, high }) = stack_bounds() else {
            return 0;
        };
        let mut fp: usize;
        // SAFETY: reads the frame-pointer register; no memory is touched.
        unsafe {
            #[cfg(target_arch = "x86_64")]
            core::arch::asm!("mov {}, rbp", out(reg) fp, options(nomem, nostack, preserves_flags));
            #[cfg(target_arch = "aarch64")]
            core::arch::asm!("mov {}, x29", out(reg) fp, options(nomem, nostack, preserves_flags));
        }
        let word = std::mem::size_of::<usize>();
        let mut n = 0;
        while n < MAX_FRAMES {
            if fp < low || fp > high - 2 * word || !fp.is_multiple_of(word) {
                break;
            }
            // SAFETY: `fp..fp + 2 words` lies within this thread's mapped
            // stack (checked above); a frame record is [saved fp, return
            // address].
            let (next, ret) = unsafe { (*(fp as *const usize), *((fp + word) as *const usize)) };
            if ret == 0 {
                break;
            }
            out[n].write(ret);
            n += 1;
            // frames grow towards `high`: a non-increasing link is garbage
            if next <= fp {
                break;
            }
            fp = next;
        }
        n
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        let _ = out;
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    fn deeper(depth: usize, method: StackCapture) -> usize {
        if depth == 0 {
            let mut out = frame_buf();
            let before = set_stack_capture(method);
            let n = capture(&mut out).len();
            set_stack_capture(before);
            std::hint::black_box(n)
        } else {
            std::hint::black_box(deeper(depth - 1, method))
        }
    }

    #[test]
    fn unwinder_sees_the_recursion() {
        let shallow = deeper(1, StackCapture::Unwinder);
        let deep = deeper(10, StackCapture::Unwinder);
        if cfg!(feature = "profile") {
            assert!(deep >= shallow + 9, "{shallow} -> {deep}");
        }
    }

    #[test]
    fn frame_pointer_walk_is_bounded_and_safe() {
        // With or without frame pointers the walk must not crash and stays
        // within MAX_FRAMES; with them it sees the recursion.
        let shallow = deeper(1, StackCapture::FramePointers);
        let deep = deeper(10, StackCapture::FramePointers);
        assert!(deep <= MAX_FRAMES && shallow <= MAX_FRAMES);
        if cfg!(allocscope_frame_pointers) {
            assert!(deep >= shallow + 9, "{shallow} -> {deep}");
        }
        // a thread not started by the test harness
        std::thread::spawn(|| deeper(5, StackCapture::FramePointers))
            .join()
            .unwrap();
    }
}
