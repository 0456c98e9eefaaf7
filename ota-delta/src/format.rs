//! The patch format, version 1.
//!
//! A patch is a fixed 53-byte header followed by a bit stream of operations that rebuild NEW
//! from front to back. All integers in the header are little-endian.
//!
//! # Header
//!
//! | offset | size | field |
//! |---:|---:|---|
//! | 0 | 4 | magic `OTAd` (`4f 54 41 64`) |
//! | 4 | 1 | format version, `1` |
//! | 5 | 4 | OLD size in bytes |
//! | 9 | 32 | SHA-256 of OLD |
//! | 41 | 4 | NEW size in bytes (at most [`MAX_IMAGE`]) |
//! | 45 | 4 | CRC-32 (ISO-HDLC, as zlib's) of NEW |
//! | 49 | 4 | coding parameters, see [`Params`] |
//!
//! # Body
//!
//! The body is read most significant bit first. It holds operations until NEW's size is reached,
//! then zero bits up to the next byte boundary, then nothing. Numbers are Exp-Golomb codes of
//! order *k*, written `EG(k)`, each field with its own *k* from the header: a value `v` is written
//! as `w = v + 2^k` in binary, preceded by as many zero bits as `w` has bits beyond `k + 1`
//! (so `EG(0)` codes 0 as `1`, 1 as `010`, 2 as `011`, 3 as `00100`). At most `31 - k` zero bits
//! may lead a code.
//!
//! Each operation starts with its kind. After a `LITERAL` the kind is one bit, `0` for `COPY`
//! and `1` for `MATCH` (two literal runs in a row are one run). Elsewhere it is `0` for the kind
//! the header names first, `10` for the lower-numbered of the other two, `11` for the higher
//! (`COPY` = 0, `LITERAL` = 1, `MATCH` = 2).
//!
//! | operation | fields | what it writes |
//! |---|---|---|
//! | `COPY` | `EG(k_diag)` magnitude of the change of *diagonal*, then a sign bit (`1` = negative) if it is not zero; `EG(k_len)` length − 1; `EG(k_count)` number of corrections; per correction `EG(k_gap)` bytes copied unchanged before it, then `0` (add the previous correction's delta again) or `1` and an 8-bit delta | `length` bytes of OLD starting at `diagonal + position in NEW`, each corrected byte being OLD's byte plus the delta (mod 256) |
//! | `LITERAL` | `EG(k_lit)` length − 1, then that many 8-bit bytes | the bytes |
//! | `MATCH` | `EG(k_dist)` distance − 1; `EG(k_match)` length − [`MIN_MATCH`] | bytes of NEW already rebuilt, from `distance` back (the source may overlap what it writes, as in LZ77) |
//!
//! The *diagonal* is OLD's position minus NEW's position; it starts at 0 and only `COPY` changes
//! it, so a copy that resumes OLD where the previous one would have continued (after a run of
//! literals that replaced as many bytes) costs one bit for its position. The delta repeated by a
//! `0` starts at 0 for the first correction of the patch.
//!
//! A patch is invalid if any operation reads outside OLD, copies from before NEW's start, writes
//! past NEW's size, has more corrections than bytes, or if bits or bytes follow the last
//! operation other than the zero padding of its last byte.

/// Length of the header in bytes.
pub const HEADER_LEN: usize = 53;
/// The magic bytes that start a patch.
pub const MAGIC: [u8; 4] = *b"OTAd";
/// The format version this crate writes and reads.
pub const VERSION: u8 = 1;
/// The largest OLD or NEW image this format handles (1 GiB), so every field fits 32 bits.
pub const MAX_IMAGE: u32 = 1 << 30;
/// The shortest `MATCH`.
pub const MIN_MATCH: u32 = 3;
/// The largest order of an Exp-Golomb code.
pub const MAX_K: u8 = 15;

/// Byte offsets of the header fields.
pub(crate) mod off {
    pub const VERSION: usize = 4;
    pub const OLD_SIZE: usize = 5;
    pub const OLD_SHA: usize = 9;
    pub const NEW_SIZE: usize = 41;
    pub const NEW_CRC: usize = 45;
    pub const PARAMS: usize = 49;
}

/// Operation kinds, as numbered in the kind code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Bytes of OLD, with corrections.
    Copy = 0,
    /// Bytes carried in the patch.
    Literal = 1,
    /// Bytes of NEW already rebuilt.
    Match = 2,
}

impl Kind {
    /// The kind numbered `n`.
    pub fn from_u8(n: u8) -> Option<Kind> {
        match n {
            0 => Some(Kind::Copy),
            1 => Some(Kind::Literal),
            2 => Some(Kind::Match),
            _ => None,
        }
    }

    /// The kinds coded `10` and `11` when `first` is coded `0`.
    pub fn others(first: Kind) -> (Kind, Kind) {
        match first {
            Kind::Copy => (Kind::Literal, Kind::Match),
            Kind::Literal => (Kind::Copy, Kind::Match),
            Kind::Match => (Kind::Copy, Kind::Literal),
        }
    }
}

/// The coding parameters in header bytes 49..53: the order of each field's Exp-Golomb code
/// and the kind coded with one bit.
///
/// | byte | bits 0-3 | bits 4-7 |
/// |---:|---|---|
/// | 49 | `k_diag` | `k_len` |
/// | 50 | `k_count` | `k_gap` |
/// | 51 | `k_lit` | `k_dist` |
/// | 52 | `k_match` | the kind coded `0` (bits 4-5, 0 to 2); bits 6-7 are zero |
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    /// `COPY`: change of diagonal.
    pub k_diag: u8,
    /// `COPY`: length − 1.
    pub k_len: u8,
    /// `COPY`: number of corrections.
    pub k_count: u8,
    /// `COPY`: bytes before a correction.
    pub k_gap: u8,
    /// `LITERAL`: length − 1.
    pub k_lit: u8,
    /// `MATCH`: distance − 1.
    pub k_dist: u8,
    /// `MATCH`: length − [`MIN_MATCH`].
    pub k_match: u8,
    /// The kind coded with the single bit `0`.
    pub first: Kind,
}

impl Params {
    /// The four header bytes.
    pub fn to_bytes(&self) -> [u8; 4] {
        [
            self.k_diag | self.k_len << 4,
            self.k_count | self.k_gap << 4,
            self.k_lit | self.k_dist << 4,
            self.k_match | (self.first as u8) << 4,
        ]
    }

    /// Parses the four header bytes; `None` if the kind or the reserved bits are invalid.
    pub fn from_bytes(b: [u8; 4]) -> Option<Params> {
        let [b0, b1, b2, b3] = b;
        if b3 >> 6 != 0 {
            return None;
        }
        Some(Params {
            k_diag: b0 & 15,
            k_len: b0 >> 4,
            k_count: b1 & 15,
            k_gap: b1 >> 4,
            k_lit: b2 & 15,
            k_dist: b2 >> 4,
            k_match: b3 & 15,
            first: Kind::from_u8(b3 >> 4)?,
        })
    }
}

/// A parsed patch header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Size of the image the patch applies to.
    pub old_size: u32,
    /// SHA-256 of the image the patch applies to.
    pub old_sha256: [u8; 32],
    /// Size of the image the patch rebuilds.
    pub new_size: u32,
    /// CRC-32 of the image the patch rebuilds.
    pub new_crc32: u32,
    /// How the body is coded.
    pub params: Params,
}

/// Why a header does not parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// Fewer than [`HEADER_LEN`] bytes.
    #[error("too short for a patch header ({0} of 53 bytes)")]
    Short(usize),
    /// The magic bytes are not `OTAd`.
    #[error("not an ota-delta patch (bad magic)")]
    Magic,
    /// A version this crate does not read.
    #[error("patch format version {0} is not supported (this reads version 1)")]
    Version(u8),
    /// A size beyond [`MAX_IMAGE`].
    #[error("an image size in the header exceeds 1 GiB")]
    Size,
    /// Invalid coding parameters.
    #[error("invalid coding parameters in the header")]
    Params,
}

impl Header {
    /// The header's bytes.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        let fields: [(usize, &[u8]); 7] = [
            (0, &MAGIC),
            (off::VERSION, &[VERSION]),
            (off::OLD_SIZE, &self.old_size.to_le_bytes()),
            (off::OLD_SHA, &self.old_sha256),
            (off::NEW_SIZE, &self.new_size.to_le_bytes()),
            (off::NEW_CRC, &self.new_crc32.to_le_bytes()),
            (off::PARAMS, &self.params.to_bytes()),
        ];
        for (at, bytes) in fields {
            if let Some(dst) = h.get_mut(at..at + bytes.len()) {
                dst.copy_from_slice(bytes);
            }
        }
        h
    }

    /// Parses the header at the start of `patch`.
    pub fn parse(patch: &[u8]) -> Result<Header, HeaderError> {
        let h: &[u8; HEADER_LEN] = patch
            .get(..HEADER_LEN)
            .and_then(|h| h.try_into().ok())
            .ok_or(HeaderError::Short(patch.len()))?;
        let [m0, m1, m2, m3, version, o0, o1, o2, o3, rest @ ..] = *h;
        if [m0, m1, m2, m3] != MAGIC {
            return Err(HeaderError::Magic);
        }
        if version != VERSION {
            return Err(HeaderError::Version(version));
        }
        let (sha, rest) = rest.split_at(32);
        let mut old_sha256 = [0u8; 32];
        old_sha256.copy_from_slice(sha);
        let word = |i: usize| -> u32 {
            let mut b = [0u8; 4];
            if let Some(src) = rest.get(i..i + 4) {
                b.copy_from_slice(src);
            }
            u32::from_le_bytes(b)
        };
        let old_size = u32::from_le_bytes([o0, o1, o2, o3]);
        let new_size = word(0);
        if old_size > MAX_IMAGE || new_size > MAX_IMAGE {
            return Err(HeaderError::Size);
        }
        let params = Params::from_bytes(word(8).to_le_bytes()).ok_or(HeaderError::Params)?;
        Ok(Header {
            old_size,
            old_sha256,
            new_size,
            new_crc32: word(4),
            params,
        })
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        let h = Header {
            old_size: 1234,
            old_sha256: [7; 32],
            new_size: 99,
            new_crc32: 0xdead_beef,
            params: Params {
                k_diag: 1,
                k_len: 2,
                k_count: 3,
                k_gap: 4,
                k_lit: 5,
                k_dist: 15,
                k_match: 0,
                first: Kind::Match,
            },
        };
        let b = h.to_bytes();
        assert_eq!(&b[..5], b"OTAd\x01");
        assert_eq!(Header::parse(&b), Ok(h));
        assert_eq!(Header::parse(&b[..52]), Err(HeaderError::Short(52)));
        let mut bad = b;
        bad[52] |= 0x30;
        assert_eq!(Header::parse(&bad), Err(HeaderError::Params));
        let mut bad = b;
        bad[4] = 2;
        assert_eq!(Header::parse(&bad), Err(HeaderError::Version(2)));
    }
}
