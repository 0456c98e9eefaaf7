//! The device's sender sequence numbers, safe across power loss (RFC 8613 appendix B.1.1).
//!
//! A sequence number must never be used twice with one context. The device keeps the next one
//! in RAM and, in flash, a *reservation*: a number no lower than every one it may have used.
//! Before using a number at or past the reservation it must persist a new one; after a reset
//! it starts from the persisted reservation. Persisting the exact next number before sleep
//! (settling) keeps the numbers, and so the partial IVs, short.
//!
//! ```text
//! boot:   next = persisted
//! wake:   persist reserve(n)   (next + n, written once per wake)
//! send:   take() while next < reservation, else persist reserve(n) again
//! sleep:  persist settle()     (the exact next)
//! ```

use crate::{Error, MAX_SEQUENCE};

/// Sender sequence numbers with a persisted reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderSequence {
    next: u64,
    reserved: u64,
}

impl SenderSequence {
    /// From the value last persisted (0 for a new context): nothing is reserved yet.
    pub const fn restore(persisted: u64) -> Self {
        Self {
            next: persisted,
            reserved: persisted,
        }
    }

    /// The next number that would be used.
    pub fn next(&self) -> u64 {
        self.next
    }

    /// Numbers usable before a new reservation must be persisted.
    pub fn available(&self) -> u64 {
        self.reserved.saturating_sub(self.next)
    }

    /// Reserves `count` numbers from the next one (never less than already reserved: a lower
    /// value persisted over a higher one would let a reset reuse numbers); persist the returned
    /// value, then call [`Self::reserved`].
    pub fn reserve(&self, count: u64) -> Result<u64, Error> {
        let until = self.next.saturating_add(count).max(self.reserved);
        if until > MAX_SEQUENCE + 1 {
            return Err(Error::SequenceExhausted);
        }
        Ok(until)
    }

    /// Records that `until` (from [`Self::reserve`]) is persisted.
    pub fn reserved(&mut self, until: u64) {
        self.reserved = self.reserved.max(until);
    }

    /// Takes the next number, if one is reserved.
    pub fn take(&mut self) -> Option<u64> {
        if self.next >= self.reserved {
            return None;
        }
        let n = self.next;
        self.next += 1;
        Some(n)
    }

    /// The exact next number, to persist before sleep so a reset resumes from it; persisting it
    /// also ends the reservation (call [`Self::reserved`] with it is not needed).
    pub fn settle(&mut self) -> u64 {
        self.reserved = self.next;
        self.next
    }
}
