//! The wake loop for blocking code: [`block_on`] runs a future whose every step completes
//! when polled (blocking links and storage), and [`BusyClock`] waits by asking a blocking delay.

use core::future::Future;
use core::pin::pin;
use core::task::{Context, Poll, Waker};

use super::clock::Clock;
use crate::time::Instant;

/// Runs `f` to completion on the calling thread, polling it until it is ready. Meant for
/// futures built from blocking pieces, which are ready whenever polled; a future that waits
/// on an interrupt is polled again at once (a busy loop), so give such code an executor.
pub fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

/// A time source for blocking code.
pub trait BlockingClock {
    /// Now.
    fn now(&self) -> Instant;
    /// Blocks until `t`.
    fn delay_until(&self, t: Instant);
}

/// A [`BlockingClock`] as a [`Clock`] for the wake loop.
pub struct BusyClock<'a, C>(pub &'a C);

impl<C: BlockingClock> Clock for BusyClock<'_, C> {
    fn now(&self) -> Instant {
        self.0.now()
    }

    async fn sleep_until(&self, t: Instant) {
        self.0.delay_until(t);
    }
}

#[cfg(feature = "std")]
mod std_clock {
    use super::*;

    /// Wall-clock time since the clock was made; waits with `std::thread::sleep`.
    #[derive(Debug, Clone, Copy)]
    pub struct StdClock(std::time::Instant);

    impl Default for StdClock {
        fn default() -> Self {
            Self(std::time::Instant::now())
        }
    }

    impl BlockingClock for StdClock {
        fn now(&self) -> Instant {
            Instant(self.0.elapsed().as_millis() as u64)
        }

        fn delay_until(&self, t: Instant) {
            let now = BlockingClock::now(self);
            if t > now {
                std::thread::sleep(std::time::Duration::from_millis(t.since(now)));
            }
        }
    }

    impl Clock for StdClock {
        fn now(&self) -> Instant {
            BlockingClock::now(self)
        }

        async fn sleep_until(&self, t: Instant) {
            self.delay_until(t);
        }
    }
}

#[cfg(feature = "std")]
pub use std_clock::StdClock;
