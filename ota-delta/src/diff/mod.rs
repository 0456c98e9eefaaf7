//! The patch generator (feature `std`).
//!
//! | step | module |
//! |---|---|
//! | suffix array and LCPs of OLD ++ NEW (SA-IS) | `sais` |
//! | longest matches of a NEW position in OLD and in NEW before it | `matcher` |
//! | the operations, priced in bits: greedy with lookahead, and cheapest path | `parse`, `optimal` |
//! | the code parameters and the bits | `encode` |
// The generator runs on the host over images the server owns, and indexes arrays it sized
// itself; the applier, which reads untrusted bytes, is where indexing is denied.
#![allow(clippy::indexing_slicing)]

mod encode;
mod matcher;
mod optimal;
mod parse;
mod sais;

use sha2::{Digest, Sha256};

use crate::apply::{Applier, OutOfBounds, Source};
use crate::error::ApplyError;
use crate::format::{Header, Kind, Params, MAX_IMAGE};

/// Why a patch cannot be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DiffError {
    /// An image larger than the format handles.
    #[error("the {which} image has {size} bytes; patches handle at most 1 GiB")]
    TooLarge {
        /// `"old"` or `"new"`.
        which: &'static str,
        /// Its size.
        size: usize,
    },
}

/// OLD's size and SHA-256, as the applier wants them.
pub fn source_of(old: &[u8]) -> Source {
    Source {
        len: old.len() as u32,
        sha256: Sha256::digest(old).into(),
    }
}

/// Makes a patch that rebuilds `new` from `old`.
pub fn diff(old: &[u8], new: &[u8]) -> Result<Vec<u8>, DiffError> {
    for (which, img) in [("old", old), ("new", new)] {
        if img.len() > MAX_IMAGE as usize {
            return Err(DiffError::TooLarge {
                which,
                size: img.len(),
            });
        }
    }
    let m = matcher::Matcher::new(old, new);
    // Price the parse with typical codes, then again with the codes that fit its result.
    let mut params = Params {
        k_diag: 4,
        k_len: 4,
        k_count: 0,
        k_gap: 4,
        k_lit: 2,
        k_dist: 8,
        k_match: 1,
        first: Kind::Copy,
    };
    let mut best: Option<(Params, Vec<u8>)> = None;
    for _ in 0..3 {
        let parser = parse::Parser {
            m: &m,
            old,
            new,
            p: params,
        };
        let mut next = params;
        for ops in [parse::parse(&parser), optimal::parse_optimal(&parser)] {
            let p = encode::choose_params(&ops);
            let body = encode::encode(&ops, new, &p);
            if best.as_ref().is_none_or(|(_, b)| body.len() < b.len()) {
                best = Some((p, body));
                next = p;
            }
        }
        if next == params {
            break;
        }
        params = next;
    }
    let (params, body) = best.unwrap_or((params, Vec::new()));
    let header = Header {
        old_size: old.len() as u32,
        old_sha256: Sha256::digest(old).into(),
        new_size: new.len() as u32,
        new_crc32: crate::crc32::checksum(new),
        params,
    };
    let mut patch = header.to_bytes().to_vec();
    patch.extend_from_slice(&body);
    Ok(patch)
}

/// Applies a whole patch in memory: the host side's check, and the CLI's `apply`.
pub fn apply_in_memory(old: &[u8], patch: &[u8]) -> Result<Vec<u8>, ApplyError<OutOfBounds>> {
    let mut applier = Applier::new(source_of(old), MAX_IMAGE);
    let mut out = Vec::new();
    let mut old_image = old;
    applier.feed(patch, &mut old_image, &mut out)?;
    applier.finish()?;
    Ok(out)
}
