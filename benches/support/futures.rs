//! The futures the scope benchmarks poll (`benches/scope.rs` with
//! criterion, `scope_cost` under callgrind): the same code in both, so the
//! two measure the same thing.
use std::future::Future;
use std::hint::black_box;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Ready on every poll (unlike `std::future::Ready`, it may be polled again).
pub struct AlwaysReady(pub u64);

impl Future for AlwaysReady {
    type Output = u64;

    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<u64> {
        Poll::Ready(black_box(self.0))
    }
}

/// Never ready: counts its polls and wakes itself each time.
pub struct Spin(pub u64);

impl Future for Spin {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.0 += 1;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}
