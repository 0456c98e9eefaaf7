//! The OSCORE option value (RFC 8613 section 6.1).
//!
//! ```text
//!  0 1 2 3 4 5 6 7 <------------- n bytes -------------->
//! |0 0 0|h|k|  n  |       Partial IV (if any)            |
//!  <- 1 byte -> <----- s bytes ------>
//! | s (if any)  | kid context (if any) | kid (if any) ... |
//! ```
//!
//! A request carries its partial IV and kid (3 bytes for a 1-byte sequence number and a 1-byte
//! kid); a response that reuses the request's nonce carries nothing, and the option is empty.

use heapless::Vec;

use crate::{Error, MAX_ID};

/// Longest kid context accepted (it is parsed, not used, by this crate).
pub const MAX_KID_CONTEXT: usize = 16;

/// A decoded OSCORE option value.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OscoreOption {
    /// The partial IV: the sender sequence number, big-endian, 0 to 5 bytes.
    pub piv: Vec<u8, 5>,
    /// The sender id of the request's sender, if present.
    pub kid: Option<Vec<u8, MAX_ID>>,
    /// The kid context, if present.
    pub kid_context: Option<Vec<u8, MAX_KID_CONTEXT>>,
}

/// Longest encoded option value.
pub const MAX_OPTION: usize = 1 + 5 + 1 + MAX_KID_CONTEXT + MAX_ID;

/// The partial IV of a sequence number: its big-endian bytes without leading zeros, at least
/// one byte.
pub fn piv_of(seq: u64) -> Vec<u8, 5> {
    let bytes = seq.to_be_bytes();
    let skip = bytes.iter().take_while(|&&b| b == 0).count().min(7);
    let mut v = Vec::new();
    for &b in bytes.iter().skip(skip.max(3)) {
        let _ = v.push(b);
    }
    v
}

/// The sequence number a partial IV stands for.
pub fn seq_of(piv: &[u8]) -> u64 {
    piv.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
}

impl OscoreOption {
    /// Decodes an option value.
    pub fn decode(value: &[u8]) -> Result<Self, Error> {
        let Some((&flags, mut rest)) = value.split_first() else {
            return Ok(Self::default());
        };
        if flags & 0xE0 != 0 {
            return Err(Error::BadOption("reserved flag bits set"));
        }
        let n = usize::from(flags & 0x07);
        if n > 5 {
            return Err(Error::BadOption("reserved partial IV length"));
        }
        let (piv, tail) = rest
            .split_at_checked(n)
            .ok_or(Error::BadOption("truncated partial IV"))?;
        rest = tail;
        let mut out = Self {
            piv: Vec::from_slice(piv).map_err(|_| Error::BadOption("partial IV"))?,
            ..Self::default()
        };
        if flags & 0x10 != 0 {
            let (&s, tail) = rest
                .split_first()
                .ok_or(Error::BadOption("truncated kid context"))?;
            let (ctx, tail) = tail
                .split_at_checked(usize::from(s))
                .ok_or(Error::BadOption("truncated kid context"))?;
            out.kid_context =
                Some(Vec::from_slice(ctx).map_err(|_| Error::BadOption("kid context too long"))?);
            rest = tail;
        }
        if flags & 0x08 != 0 {
            out.kid = Some(Vec::from_slice(rest).map_err(|_| Error::IdTooLong(rest.len()))?);
        } else if !rest.is_empty() {
            return Err(Error::BadOption("trailing bytes without the kid flag"));
        }
        if flags == 0 && value.len() == 1 {
            // RFC 8613: all flags zero is encoded as an empty value, never as one 0x00 byte.
            return Err(Error::BadOption("zero flags byte"));
        }
        Ok(out)
    }

    /// Encodes the option value into `out`; returns its length (0 for an empty option).
    pub fn encode(&self, out: &mut [u8; MAX_OPTION]) -> usize {
        let mut flags = self.piv.len() as u8;
        if self.kid.is_some() {
            flags |= 0x08;
        }
        if self.kid_context.is_some() {
            flags |= 0x10;
        }
        if flags == 0 {
            return 0;
        }
        let mut len = 0;
        let mut put = |bytes: &[u8]| {
            for &b in bytes {
                if let Some(slot) = out.get_mut(len) {
                    *slot = b;
                    len += 1;
                }
            }
        };
        put(&[flags]);
        put(&self.piv);
        if let Some(ctx) = &self.kid_context {
            put(&[ctx.len() as u8]);
            put(ctx);
        }
        if let Some(kid) = &self.kid {
            put(kid);
        }
        len
    }
}
