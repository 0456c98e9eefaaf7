//! The server's replay window for one security context (RFC 8613 section 7.4): a request is
//! fresh if its sequence number is above the highest seen, or within the 32 below it and not
//! seen yet.

/// A sliding window of 32 sequence numbers below the highest accepted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayWindow {
    highest: Option<u64>,
    /// Bit `i` set: `highest - 1 - i` was seen.
    seen: u32,
}

impl ReplayWindow {
    /// A window that has seen nothing (every sequence number is fresh).
    pub const fn new() -> Self {
        Self {
            highest: None,
            seen: 0,
        }
    }

    /// A window that treats everything at or below `floor` as already seen: for a server that
    /// lost its window (a restart) but kept the highest sequence number it processed.
    pub const fn above(floor: u64) -> Self {
        Self {
            highest: Some(floor),
            seen: u32::MAX,
        }
    }

    /// True if `seq` would be accepted now (nothing is recorded).
    pub fn is_fresh(&self, seq: u64) -> bool {
        match self.highest {
            None => true,
            Some(h) if seq > h => true,
            Some(h) if seq == h => false,
            Some(h) => {
                let back = h - seq - 1;
                back < 32 && self.seen & (1 << back) == 0
            }
        }
    }

    /// Accepts `seq` if fresh and records it; `false` for a replay (or one too old to tell).
    pub fn accept(&mut self, seq: u64) -> bool {
        if !self.is_fresh(seq) {
            return false;
        }
        match self.highest {
            Some(h) if seq < h => self.seen |= 1 << (h - seq - 1),
            Some(h) => {
                let shift = seq - h;
                // The old highest becomes bit shift-1; everything moves up by `shift`.
                let moved = self.seen.checked_shl(shift as u32).unwrap_or(0);
                let old_highest = 1u32.checked_shl((shift - 1) as u32).unwrap_or(0);
                self.seen = if shift > 32 { 0 } else { moved | old_highest };
                self.highest = Some(seq);
            }
            None => self.highest = Some(seq),
        }
        true
    }

    /// The highest sequence number accepted.
    pub fn highest(&self) -> Option<u64> {
        self.highest
    }
}
