//! A cheapest-path parse: every position of NEW is a node, every literal byte and every candidate
//! operation (with several lengths each) an edge priced in bits, and the path of least bits wins.
//! Prices depend on the decoder's state (diagonal, last delta, whether a literal run is open),
//! which is taken from the cheapest path to each node, as LZMA's optimal parser does.

use super::matcher::MIN_LEN;
use super::parse::{Ctx, Op, Parser};
use crate::bits::eg_len;
use crate::format::{Kind, MIN_MATCH};

/// A candidate this long is taken as it is: no operation starts inside it.
const NICE: u32 = 96;
/// Copies may also end before each of their first `ENDS` corrections.
const ENDS: usize = 6;
/// Matches in NEW up to this long are weighed at every length.
const ALL_LENGTHS: u32 = 24;

#[derive(Clone)]
enum Back {
    Start,
    Literal,
    Op(Op, u32),
}

#[derive(Clone)]
struct Node {
    bits: u64,
    ctx: Ctx,
    back: Back,
}

/// The operations of the cheapest path that rebuilds `parser.new`.
pub(super) fn parse_optimal(parser: &Parser<'_>) -> Vec<Op> {
    let new = parser.new;
    let n = new.len();
    let start = Ctx {
        diag: 0,
        last_delta: 0,
        after_literal: false,
    };
    let mut nodes = vec![
        Node {
            bits: u64::MAX,
            ctx: start,
            back: Back::Start,
        };
        n + 1
    ];
    nodes[0].bits = 0;
    let relax = |nodes: &mut Vec<Node>, to: usize, bits: u64, ctx: Ctx, back: Back| {
        if bits < nodes[to].bits {
            nodes[to] = Node { bits, ctx, back };
        }
    };
    let mut skip_until = 0;
    for i in 0..n {
        let Node {
            bits: base, ctx, ..
        } = nodes[i].clone();
        if base == u64::MAX {
            continue;
        }
        let lit = if ctx.after_literal {
            8
        } else {
            8 + parser.kind_bits(ctx, Kind::Literal) + eg_len(0, parser.p.k_lit)
        };
        relax(
            &mut nodes,
            i + 1,
            base + u64::from(lit),
            Ctx {
                after_literal: true,
                ..ctx
            },
            Back::Literal,
        );
        if i < skip_until {
            continue;
        }
        let (old_match, nearest, new_match) = parser.m.find(i, i as i64 + ctx.diag);
        let mut diags = vec![ctx.diag];
        for om in [old_match, nearest].into_iter().flatten() {
            let d = i64::from(om.pos) - i as i64;
            if !diags.contains(&d) {
                diags.push(d);
            }
        }
        for diag in diags {
            let (len, misses) = parser.extend(i, diag);
            if len == 0 {
                continue;
            }
            if len >= NICE {
                skip_until = skip_until.max(i + len as usize);
            }
            // The whole extension, and the copy cut short before each of its first corrections.
            let mut ends: Vec<(u32, usize)> = misses
                .iter()
                .take(ENDS)
                .enumerate()
                .map(|(k, &at)| (at - i as u32, k))
                .filter(|&(l, _)| l > 0)
                .collect();
            ends.push((len, misses.len()));
            for (l, k) in ends {
                if let Some(c) = parser.price_copy(ctx, i, diag, l, &misses[..k]) {
                    let next = Ctx {
                        diag,
                        last_delta: c.last_delta,
                        after_literal: false,
                    };
                    relax(
                        &mut nodes,
                        i + l as usize,
                        base + u64::from(c.bits),
                        next,
                        Back::Op(c.op, l),
                    );
                }
            }
        }
        if let Some(nm) = new_match {
            if nm.len >= MIN_MATCH.max(MIN_LEN) {
                if nm.len >= NICE {
                    skip_until = skip_until.max(i + nm.len as usize);
                }
                let head =
                    parser.kind_bits(ctx, Kind::Match) + eg_len(nm.dist - 1, parser.p.k_dist);
                let lengths = (MIN_MATCH..nm.len.min(ALL_LENGTHS)).chain(std::iter::once(nm.len));
                for l in lengths {
                    let bits = head + eg_len(l - MIN_MATCH, parser.p.k_match);
                    relax(
                        &mut nodes,
                        i + l as usize,
                        base + u64::from(bits),
                        Ctx {
                            after_literal: false,
                            ..ctx
                        },
                        Back::Op(
                            Op::Match {
                                dist: nm.dist,
                                len: l,
                            },
                            l,
                        ),
                    );
                }
            }
        }
    }
    // Walk back from the end, then merge the literal bytes into runs.
    let mut steps = Vec::new();
    let mut at = n;
    while at > 0 {
        match std::mem::replace(&mut nodes[at].back, Back::Start) {
            Back::Literal => {
                steps.push(None);
                at -= 1;
            }
            Back::Op(op, len) => {
                steps.push(Some(op));
                at -= len as usize;
            }
            Back::Start => break,
        }
    }
    steps.reverse();
    let mut ops = Vec::new();
    let mut pos = 0u32;
    let mut run: Option<u32> = None;
    for step in steps {
        match step {
            None => {
                run.get_or_insert(pos);
                pos += 1;
            }
            Some(op) => {
                if let Some(s) = run.take() {
                    ops.push(Op::Literal {
                        start: s,
                        len: pos - s,
                    });
                }
                pos += match &op {
                    Op::Copy { len, .. } | Op::Match { len, .. } => *len,
                    Op::Literal { len, .. } => *len,
                };
                ops.push(op);
            }
        }
    }
    if let Some(s) = run {
        ops.push(Op::Literal {
            start: s,
            len: pos - s,
        });
    }
    ops
}
