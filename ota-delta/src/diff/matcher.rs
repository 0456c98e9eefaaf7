//! Longest matches for a position of NEW, in OLD and in the part of NEW before it, from one
//! suffix array over OLD followed by NEW.

use super::sais::{lcp_array, suffix_array};

/// The shortest match worth looking at.
pub const MIN_LEN: u32 = 3;
/// Suffix array neighbours visited each side of a position.
const BUDGET: usize = 96;

/// A match in OLD: its start and length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OldMatch {
    pub pos: u32,
    pub len: u32,
}

/// A match in NEW before the position: its distance back and length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewMatch {
    pub dist: u32,
    pub len: u32,
}

/// The index: OLD ++ NEW, its suffix array, ranks and LCPs.
pub struct Matcher {
    old_len: usize,
    sa: Vec<u32>,
    rank: Vec<u32>,
    lcp: Vec<u32>,
}

impl Matcher {
    pub fn new(old: &[u8], new: &[u8]) -> Matcher {
        let mut text = Vec::with_capacity(old.len() + new.len());
        text.extend_from_slice(old);
        text.extend_from_slice(new);
        let sa = suffix_array(&text);
        let mut rank = vec![0u32; text.len()];
        for (r, &p) in sa.iter().enumerate() {
            rank[p as usize] = r as u32;
        }
        let lcp = lcp_array(&text, &sa, &rank);
        Matcher {
            old_len: old.len(),
            sa,
            rank,
            lcp,
        }
    }

    /// The longest match of NEW at `i` in OLD (ties: the one closest to `near`, an OLD
    /// position), the match in OLD closest to `near`, and the longest in NEW before `i`
    /// (ties: the nearest).
    pub fn find(
        &self,
        i: usize,
        near: i64,
    ) -> (Option<OldMatch>, Option<OldMatch>, Option<NewMatch>) {
        let p = self.old_len + i;
        let r = self.rank[p] as usize;
        let mut best_old: Option<OldMatch> = None;
        let mut best_new: Option<NewMatch> = None;
        let mut nearest: Option<OldMatch> = None;
        let mut consider = |q: usize, l: u32| {
            if q < self.old_len {
                let len = l.min((self.old_len - q) as u32);
                if len < MIN_LEN {
                    return;
                }
                let better = match best_old {
                    None => true,
                    Some(b) => {
                        len > b.len
                            || (len == b.len
                                && (q as i64 - near).abs() < (i64::from(b.pos) - near).abs())
                    }
                };
                if better {
                    best_old = Some(OldMatch { pos: q as u32, len });
                }
                let closer = match nearest {
                    None => true,
                    Some(b) => (q as i64 - near).abs() < (i64::from(b.pos) - near).abs(),
                };
                if closer {
                    nearest = Some(OldMatch { pos: q as u32, len });
                }
            } else if q < p {
                let dist = (p - q) as u32;
                let better = match best_new {
                    None => true,
                    Some(b) => l > b.len || (l == b.len && dist < b.dist),
                };
                if better {
                    best_new = Some(NewMatch { dist, len: l });
                }
            }
        };
        // Towards lower ranks.
        let mut l = u32::MAX;
        for r2 in (r.saturating_sub(BUDGET)..r).rev() {
            l = l.min(self.lcp[r2 + 1]);
            if l < MIN_LEN {
                break;
            }
            consider(self.sa[r2] as usize, l);
        }
        // Towards higher ranks.
        let mut l = u32::MAX;
        for r2 in r + 1..(r + 1 + BUDGET).min(self.sa.len()) {
            l = l.min(self.lcp[r2]);
            if l < MIN_LEN {
                break;
            }
            consider(self.sa[r2] as usize, l);
        }
        (best_old, nearest, best_new)
    }
}
