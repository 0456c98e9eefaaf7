//! Recognising a device's second copy of a request (`ota_core::device::Transmit::twice`)
//! without a map insert per request: under OSCORE from the replay window's own record of the
//! last sequence numbers accepted ([`Accepted`]), in plain (lab) mode from a fixed table of
//! fingerprints updated with one compare-and-swap ([`PlainCopies`]).

use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

/// How long a datagram is remembered so that a byte-identical one from the same peer is taken
/// for a copy and dropped, ms. A device sends a request twice back to back on a lossy path:
/// the copies arrive milliseconds apart, and a device resends under a new message id (and,
/// under OSCORE, a new sequence number). A generic client's retransmission repeats the message
/// id after RFC 7252's ACK_TIMEOUT (2 s unless configured lower), so it is answered; one
/// configured below a second would see its first retransmission dropped and its second
/// answered.
pub const COPY_MS: u64 = 1_000;

/// Sequence numbers a context remembers as recently accepted: a device's pairs go back to
/// back, so the copy of a request follows it within a few others even with reordering.
const ACCEPTED: usize = 4;

/// The last [`ACCEPTED`] sequence numbers one security context accepted, when and from where,
/// so that the same request again from the same address within [`COPY_MS`] is dropped as a
/// copy instead of refused as a replay (it was authenticated; its answer is on its way).
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Accepted {
    /// `(sequence number, arrival ms truncated to 32 bits, peer fingerprint)`.
    slots: [(u64, u32, u32); ACCEPTED],
    next: u8,
}

impl Accepted {
    /// Records `seq`, accepted at `now_ms` from the peer with fingerprint `peer`.
    pub(super) fn record(&mut self, seq: u64, now_ms: u64, peer: u32) {
        let i = usize::from(self.next) % ACCEPTED;
        if let Some(s) = self.slots.get_mut(i) {
            *s = (seq, now_ms as u32, peer);
        }
        self.next = ((i + 1) % ACCEPTED) as u8;
    }

    /// True if `seq` from `peer` was accepted less than [`COPY_MS`] before `now_ms`.
    pub(super) fn is_copy(&self, seq: u64, now_ms: u64, peer: u32) -> bool {
        self.slots.iter().any(|&(s, at, p)| {
            s == seq && p == peer && u64::from((now_ms as u32).wrapping_sub(at)) < COPY_MS
        })
    }
}

/// Slots of the plain-mode table (8 bytes each). Copies arrive milliseconds apart, so a slot
/// is rarely taken by another datagram in between; when it is, the copy is answered again:
/// a wasted response, nothing lost.
const PLAIN_SLOTS: usize = 1 << 14;

/// Bits of a slot holding the arrival time (ms, wrapping every 4.6 hours); the rest hold the
/// datagram's fingerprint.
const TIME_BITS: u32 = 24;
const TIME_MASK: u64 = (1 << TIME_BITS) - 1;

/// Recent plain requests, one fingerprint of `(peer, datagram)` per slot, lock-free: two
/// copies racing cannot both pass (the second's compare-and-swap sees the first's
/// fingerprint).
pub(super) struct PlainCopies {
    slots: Box<[AtomicU64]>,
    hasher: std::collections::hash_map::RandomState,
}

impl PlainCopies {
    pub(super) fn new() -> Self {
        Self {
            slots: (0..PLAIN_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            hasher: Default::default(),
        }
    }

    /// True if `datagram` from `peer` at `now_ms` repeats one seen within [`COPY_MS`];
    /// otherwise remembers it.
    pub(super) fn copy(&self, now_ms: u64, peer: SocketAddr, datagram: &[u8]) -> bool {
        let fp = self.hasher.hash_one((peer, datagram));
        let Some(slot) = self.slots.get(fp as usize % PLAIN_SLOTS) else {
            return false;
        };
        let tag = fp >> TIME_BITS;
        let now = now_ms & TIME_MASK;
        let new = (tag << TIME_BITS) | now;
        let mut cur = slot.load(Ordering::Relaxed);
        loop {
            if cur >> TIME_BITS == tag && (now.wrapping_sub(cur) & TIME_MASK) < COPY_MS {
                return true;
            }
            match slot.compare_exchange_weak(cur, new, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return false,
                Err(seen) => cur = seen,
            }
        }
    }

    /// A fingerprint of `peer`, for [`Accepted`].
    pub(super) fn peer(&self, peer: SocketAddr) -> u32 {
        self.hasher.hash_one(peer) as u32
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn plain_copy_within_the_window_only_from_the_same_peer() {
        let t = PlainCopies::new();
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        assert!(!t.copy(5, a, b"x"));
        assert!(t.copy(6, a, b"x"));
        assert!(!t.copy(7, b, b"x"), "another peer");
        assert!(!t.copy(8, a, b"y"), "other bytes");
        assert!(!t.copy(5 + COPY_MS, a, b"x"), "after the window");
        // Across the time field's wrap.
        let wrap = TIME_MASK + 1;
        assert!(!t.copy(wrap - 3, a, b"z"));
        assert!(t.copy(wrap + 3, a, b"z"));
    }

    #[test]
    fn accepted_remembers_the_last_four() {
        let mut w = Accepted::default();
        for seq in 10..16 {
            w.record(seq, 100, 7);
        }
        assert!(w.is_copy(15, 150, 7));
        assert!(w.is_copy(12, 150, 7));
        assert!(!w.is_copy(11, 150, 7), "pushed out");
        assert!(!w.is_copy(15, 150, 8), "another peer");
        assert!(!w.is_copy(15, 100 + COPY_MS, 7), "too late");
    }
}
