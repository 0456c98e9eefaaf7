//! Chooses the operations that rebuild NEW: a greedy parse with one step of lookahead, priced
//! in bits with the codes of [`crate::format`].
//!
//! At each position it weighs three candidates against literal bytes: a `COPY` that continues
//! the current diagonal, a `COPY` from the longest match in OLD, and a `MATCH` from the longest
//! match in NEW so far. A `COPY` runs on past bytes that differ (they become corrections) as
//! long as the bytes that match afterwards pay for them: the relocated pointers and branch
//! offsets of a firmware whose code moved cost a few bits each, as in bsdiff, but without
//! sending a byte per unchanged byte.

use super::matcher::{Matcher, MIN_LEN};
use crate::bits::eg_len;
use crate::format::{Kind, Params, MIN_MATCH};

/// One operation, as the encoder writes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// OLD from `diag` + position, with `(offset in the copy, delta)` corrections.
    Copy {
        diag: i64,
        len: u32,
        corrections: Vec<(u32, u8)>,
    },
    /// NEW's bytes `start..start + len`.
    Literal { start: u32, len: u32 },
    /// NEW from `dist` back.
    Match { dist: u32, len: u32 },
}

/// Weights of the X-drop extension of a copy: a matching byte scores `HIT`, a differing one
/// costs `MISS`, and the extension stops once the score falls `DROP` below its best.
const HIT: i64 = 2;
const MISS: i64 = 5;
const DROP: i64 = 48;
/// The longest a single candidate is extended (keeps the parse linear on degenerate input).
const MAX_EXTEND: usize = 1 << 20;

pub(super) struct Candidate {
    pub op: Op,
    pub covered: u32,
    pub bits: u32,
    pub last_delta: u8,
}

impl Candidate {
    fn gain(&self) -> i64 {
        8 * i64::from(self.covered) - i64::from(self.bits)
    }
}

/// The parser's view of the decoder's state.
#[derive(Clone, Copy)]
pub(super) struct Ctx {
    pub diag: i64,
    pub last_delta: u8,
    pub after_literal: bool,
}

pub(super) struct Parser<'m> {
    pub m: &'m Matcher,
    pub old: &'m [u8],
    pub new: &'m [u8],
    pub p: Params,
}

impl Parser<'_> {
    pub(super) fn kind_bits(&self, ctx: Ctx, kind: Kind) -> u32 {
        if ctx.after_literal || kind == self.p.first {
            1
        } else {
            2
        }
    }

    /// How far a copy on diagonal `diag` from `i` reaches, and the bytes it corrects.
    pub(super) fn extend(&self, i: usize, diag: i64) -> (u32, Vec<u32>) {
        let mut score = 0i64;
        let mut best = (0i64, i, 0usize);
        let mut misses = Vec::new();
        let limit = self.new.len().min(i + MAX_EXTEND);
        let mut j = i;
        while j < limit {
            let o = j as i64 + diag;
            if o < 0 || o >= self.old.len() as i64 {
                break;
            }
            if self.new[j] == self.old[o as usize] {
                score += HIT;
            } else {
                misses.push(j as u32);
                score -= MISS;
            }
            j += 1;
            if score > best.0 {
                best = (score, j, misses.len());
            } else if score < best.0 - DROP {
                break;
            }
        }
        misses.truncate(best.2);
        ((best.1 - i) as u32, misses)
    }

    fn copy(&self, ctx: Ctx, i: usize, diag: i64) -> Option<Candidate> {
        let (len, misses) = self.extend(i, diag);
        self.price_copy(ctx, i, diag, len, &misses)
    }

    /// A copy of `len` bytes on `diag` from `i`, correcting the bytes at `misses`, priced.
    pub(super) fn price_copy(
        &self,
        ctx: Ctx,
        i: usize,
        diag: i64,
        len: u32,
        misses: &[u32],
    ) -> Option<Candidate> {
        if len == 0 {
            return None;
        }
        let change = (diag - ctx.diag).unsigned_abs();
        let mut bits = self.kind_bits(ctx, Kind::Copy)
            + eg_len(change as u32, self.p.k_diag)
            + u32::from(change != 0)
            + eg_len(len - 1, self.p.k_len)
            + eg_len(misses.len() as u32, self.p.k_count);
        let mut last = ctx.last_delta;
        let mut next = i as u32;
        let mut corrections = Vec::with_capacity(misses.len());
        for &at in misses {
            let o = (i64::from(at) + diag) as usize;
            let delta = self.new[at as usize].wrapping_sub(self.old[o]);
            bits += eg_len(at - next, self.p.k_gap) + if delta == last { 1 } else { 9 };
            last = delta;
            next = at + 1;
            corrections.push((at - i as u32, delta));
        }
        Some(Candidate {
            op: Op::Copy {
                diag,
                len,
                corrections,
            },
            covered: len,
            bits,
            last_delta: last,
        })
    }

    /// The best operation at `i`, if any beats literals.
    fn best(&self, ctx: Ctx, i: usize) -> Option<Candidate> {
        self.candidates(ctx, i).into_iter().max_by_key(|c| c.gain())
    }

    /// The operations worth weighing at `i`: copies on the current diagonal, on the longest
    /// match's and on the nearest match's, and the longest match in NEW.
    pub(super) fn candidates(&self, ctx: Ctx, i: usize) -> Vec<Candidate> {
        let (old_match, nearest, new_match) = self.m.find(i, i as i64 + ctx.diag);
        let mut cands: Vec<Candidate> = Vec::with_capacity(4);
        if let Some(c) = self.copy(ctx, i, ctx.diag) {
            cands.push(c);
        }
        let mut tried = ctx.diag;
        for om in [old_match, nearest].into_iter().flatten() {
            let diag = i64::from(om.pos) - i as i64;
            if diag != ctx.diag && diag != tried {
                tried = diag;
                if let Some(c) = self.copy(ctx, i, diag) {
                    cands.push(c);
                }
            }
        }
        if let Some(nm) = new_match {
            if nm.len >= MIN_MATCH.max(MIN_LEN) {
                let bits = self.kind_bits(ctx, Kind::Match)
                    + eg_len(nm.dist - 1, self.p.k_dist)
                    + eg_len(nm.len - MIN_MATCH, self.p.k_match);
                cands.push(Candidate {
                    op: Op::Match {
                        dist: nm.dist,
                        len: nm.len,
                    },
                    covered: nm.len,
                    bits,
                    last_delta: ctx.last_delta,
                });
            }
        }
        cands
    }
}

/// The operations that rebuild NEW, chosen greedily with one step of lookahead.
pub fn parse(parser: &Parser<'_>) -> Vec<Op> {
    let new = parser.new;
    let mut ops = Vec::new();
    let mut ctx = Ctx {
        diag: 0,
        last_delta: 0,
        after_literal: false,
    };
    let mut lit_start: Option<usize> = None;
    let mut i = 0;
    // An operation must beat literals by this many bits (it splits a literal run otherwise).
    // These weights were tuned on the firmware pairs of the bench_detools example.
    const MIN_GAIN: i64 = 3;
    while i < new.len() {
        let here = parser.best(ctx, i).filter(|c| c.gain() > MIN_GAIN);
        let Some(c) = here else {
            lit_start.get_or_insert(i);
            ctx.after_literal = true;
            i += 1;
            continue;
        };
        // One step of lookahead: a literal now and a better operation next.
        if i + 1 < new.len() {
            let lit_ctx = Ctx {
                after_literal: true,
                ..ctx
            };
            if let Some(next) = parser.best(lit_ctx, i + 1) {
                if next.gain() > c.gain() {
                    lit_start.get_or_insert(i);
                    ctx.after_literal = true;
                    i += 1;
                    continue;
                }
            }
        }
        if let Some(s) = lit_start.take() {
            ops.push(Op::Literal {
                start: s as u32,
                len: (i - s) as u32,
            });
        }
        if let Op::Copy { diag, .. } = c.op {
            ctx.diag = diag;
        }
        ctx.last_delta = c.last_delta;
        ctx.after_literal = false;
        i += c.covered as usize;
        ops.push(c.op);
    }
    if let Some(s) = lit_start {
        ops.push(Op::Literal {
            start: s as u32,
            len: (new.len() - s) as u32,
        });
    }
    ops
}
