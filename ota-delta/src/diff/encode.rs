//! Writes operations as the patch body, with the code parameters that make it smallest.

use super::parse::Op;
use crate::bits::{eg_len, BitWriter};
use crate::format::{Kind, Params, MAX_K, MIN_MATCH};

fn kind_of(op: &Op) -> Kind {
    match op {
        Op::Copy { .. } => Kind::Copy,
        Op::Literal { .. } => Kind::Literal,
        Op::Match { .. } => Kind::Match,
    }
}

/// The order of Exp-Golomb code that spends the fewest bits on `values`.
fn best_k(values: &[u32]) -> u8 {
    (0..=MAX_K)
        .filter(|&k| values.iter().all(|&v| v <= u32::MAX - (1u32 << k)))
        .min_by_key(|&k| values.iter().map(|&v| u64::from(eg_len(v, k))).sum::<u64>())
        .unwrap_or(0)
}

/// The parameters that code `ops` in the fewest bits.
pub fn choose_params(ops: &[Op]) -> Params {
    let (mut diag, mut len, mut count, mut gap) = (vec![], vec![], vec![], vec![]);
    let (mut lit, mut dist, mut mlen) = (vec![], vec![], vec![]);
    let mut kinds = [0usize; 3];
    let mut prev_diag = 0i64;
    let mut after_literal = false;
    for op in ops {
        if !after_literal {
            kinds[kind_of(op) as usize] += 1;
        }
        after_literal = matches!(op, Op::Literal { .. });
        match op {
            Op::Copy {
                diag: d,
                len: l,
                corrections,
            } => {
                diag.push((d - prev_diag).unsigned_abs() as u32);
                prev_diag = *d;
                len.push(l - 1);
                count.push(corrections.len() as u32);
                let mut next = 0;
                for &(at, _) in corrections {
                    gap.push(at - next);
                    next = at + 1;
                }
            }
            Op::Literal { len: l, .. } => lit.push(l - 1),
            Op::Match { dist: d, len: l } => {
                dist.push(d - 1);
                mlen.push(l - MIN_MATCH);
            }
        }
    }
    let first = [Kind::Copy, Kind::Literal, Kind::Match]
        .into_iter()
        .max_by_key(|&k| kinds[k as usize])
        .unwrap_or(Kind::Copy);
    Params {
        k_diag: best_k(&diag),
        k_len: best_k(&len),
        k_count: best_k(&count),
        k_gap: best_k(&gap),
        k_lit: best_k(&lit),
        k_dist: best_k(&dist),
        k_match: best_k(&mlen),
        first,
    }
}

/// The patch body for `ops` over `new`.
pub fn encode(ops: &[Op], new: &[u8], p: &Params) -> Vec<u8> {
    let mut w = BitWriter::default();
    let mut diag = 0i64;
    let mut last_delta = 0u8;
    let mut after_literal = false;
    for op in ops {
        let kind = kind_of(op);
        if after_literal {
            w.put(u32::from(kind == Kind::Match), 1);
        } else if kind == p.first {
            w.put(0, 1);
        } else {
            let (a, _) = Kind::others(p.first);
            w.put(if kind == a { 0b10 } else { 0b11 }, 2);
        }
        after_literal = kind == Kind::Literal;
        match op {
            Op::Copy {
                diag: d,
                len,
                corrections,
            } => {
                let change = d - diag;
                w.eg(change.unsigned_abs() as u32, p.k_diag);
                if change != 0 {
                    w.put(u32::from(change < 0), 1);
                }
                diag = *d;
                w.eg(len - 1, p.k_len);
                w.eg(corrections.len() as u32, p.k_count);
                let mut next = 0;
                for &(at, delta) in corrections {
                    w.eg(at - next, p.k_gap);
                    if delta == last_delta {
                        w.put(0, 1);
                    } else {
                        w.put(1, 1);
                        w.put(u32::from(delta), 8);
                        last_delta = delta;
                    }
                    next = at + 1;
                }
            }
            Op::Literal { start, len } => {
                w.eg(len - 1, p.k_lit);
                let s = *start as usize;
                for &b in &new[s..s + *len as usize] {
                    w.put(u32::from(b), 8);
                }
            }
            Op::Match { dist, len } => {
                w.eg(dist - 1, p.k_dist);
                w.eg(len - MIN_MATCH, p.k_match);
            }
        }
    }
    w.finish()
}
