//! Time as the state machine sees it: milliseconds handed in by the caller.
//!
//! The core never reads a clock. The caller passes `now` into every call and gets deadlines back,
//! so the same code runs against a hardware timer, `std::time::Instant` or simulated time.

use core::ops::Add;

/// A point in time, in milliseconds since an arbitrary origin chosen by the caller.
///
/// Only differences matter; the origin may be boot, the epoch or the start of a simulation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant(pub u64);

impl Instant {
    /// Milliseconds since the origin.
    pub const fn millis(self) -> u64 {
        self.0
    }

    /// Milliseconds from `earlier` to `self`, zero if `earlier` is later.
    pub const fn since(self, earlier: Instant) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl Add<u64> for Instant {
    type Output = Instant;

    fn add(self, millis: u64) -> Instant {
        Instant(self.0.saturating_add(millis))
    }
}
