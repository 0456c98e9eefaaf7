//! Time for the wake loop: now, and waiting until a deadline.

use core::future::{poll_fn, Future};
use core::pin::pin;
use core::task::Poll;

use crate::time::Instant;

/// Milliseconds since some origin, and a way to wait.
pub trait Clock {
    /// Now.
    fn now(&self) -> Instant;
    /// Completes at `t` (at once if it has passed).
    fn sleep_until(&self, t: Instant) -> impl Future<Output = ()>;
}

/// The deadline passed first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimedOut;

/// Runs `f` until it completes or `deadline` passes, whichever comes first.
pub async fn with_deadline<C: Clock, F: Future>(
    clock: &C,
    deadline: Instant,
    f: F,
) -> Result<F::Output, TimedOut> {
    let mut f = pin!(f);
    let mut timer = pin!(clock.sleep_until(deadline));
    poll_fn(|cx| {
        if let Poll::Ready(v) = f.as_mut().poll(cx) {
            return Poll::Ready(Ok(v));
        }
        if timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(TimedOut));
        }
        Poll::Pending
    })
    .await
}

/// Lets other tasks run once (between storage operations, so a long read-back never holds an
/// executor or a watchdog up).
pub async fn yield_now() {
    let mut yielded = false;
    poll_fn(|cx| {
        if yielded {
            return Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await
}
