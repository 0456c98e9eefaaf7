//! Journal records: `len | kind | payload | CRC-32`, padded with `0xFF` to the write size.
//!
//! | bytes | field |
//! |---|---|
//! | 1 | payload length, 0..=254 (`0xFF` here with `0xFF` kind = erased, end of records) |
//! | 1 | kind: 1 header, 2 begin, 3 progress, 4 state |
//! | len | payload |
//! | 4 | CRC-32 over length, kind and payload, little-endian |
//!
//! | kind | payload |
//! |---|---|
//! | header | magic `OTAJ`, sector sequence number (u32) |
//! | begin | resume record (49 bytes), then the stored manifest (`len | body | signature`) |
//! | begin, 32-bit (read only) | resume record in its earlier 45-byte layout, then the manifest |
//! | progress | image id, next offset (u32 each), ahead bitmap (u32, or u64 once a chunk past the first 32 is staged) |
//! | state | [`UpdateState`] (6 bytes) |
//! | counter | a transport's counter (u64) |
//!
//! A progress record is written after every chunk, so it keeps its 12-byte payload while the
//! bitmap fits in 32 bits (most of them, on a good link): a journal written before the bitmap
//! grew to 64 bits reads the same, and wears the flash no faster.

use ota_core::crc32::checksum;
use ota_core::manifest::StoredManifest;
use ota_core::resume::{ResumeState, RESUME_STATE_LEN, RESUME_STATE_LEN_32};
use ota_core::wire::ImageId;

use crate::state::UpdateState;

/// Largest payload: the largest begin record (a resume record and the longest stored
/// manifest), which must fit.
pub const MAX_PAYLOAD: usize = 254;
const _: () = assert!(RESUME_STATE_LEN + StoredManifest::MAX_BYTES <= MAX_PAYLOAD);
/// Largest encoded record before padding.
pub const MAX_RECORD: usize = 2 + MAX_PAYLOAD + 4;
const MAGIC: [u8; 4] = *b"OTAJ";

const KIND_HEADER: u8 = 1;
/// A begin record with the 45-byte resume layout (32-bit bitmap), read only.
const KIND_BEGIN_32: u8 = 2;
const KIND_PROGRESS: u8 = 3;
const KIND_STATE: u8 = 4;
const KIND_COUNTER: u8 = 5;
const KIND_BEGIN: u8 = 6;

/// One journal record.
// Records live briefly on the stack of a no-alloc device; boxing the large variant is not an
// option there.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record {
    /// First record of a sector in use: its place in the rotation.
    Header {
        /// Higher is newer.
        seq: u32,
    },
    /// A new download: its manifest and fresh resume record. Sets the state to downloading.
    Begin {
        /// Resume record at offset zero.
        state: ResumeState,
        /// The verified manifest.
        manifest: StoredManifest,
    },
    /// Download progress (after the chunk it records was written).
    Progress {
        /// Image handle.
        image: ImageId,
        /// Every byte below is staged.
        next_offset: u32,
        /// Chunks staged beyond `next_offset`.
        ahead: u64,
    },
    /// A new update state.
    State(UpdateState),
    /// A transport's persisted counter (the OSCORE sequence reservation).
    Counter(u64),
}

/// Why bytes are not a valid record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Erased flash: there are no more records.
    #[error("erased flash")]
    Erased,
    /// Fewer bytes than the record claims.
    #[error("record truncated")]
    Truncated,
    /// The CRC does not match (a torn write or bit rot).
    #[error("record CRC mismatch")]
    BadCrc,
    /// Valid CRC, unknown kind or bad payload.
    #[error("unknown or malformed record")]
    Malformed,
}

impl Record {
    /// Encodes into `out`; returns the unpadded length.
    pub fn encode(&self, out: &mut [u8; MAX_RECORD]) -> usize {
        // The payload goes straight to its place after the length and kind bytes.
        let (head, tail) = out.split_at_mut(2);
        let mut p = Cursor::new(tail.get_mut(..MAX_PAYLOAD).unwrap_or_default());
        let kind = match self {
            Record::Header { seq } => {
                p.put(&MAGIC);
                p.put(&seq.to_le_bytes());
                KIND_HEADER
            }
            Record::Begin { state, manifest } => {
                p.put(&state.to_bytes());
                // Fits: RESUME_STATE_LEN + StoredManifest::MAX_BYTES <= MAX_PAYLOAD (asserted).
                let n = manifest.to_bytes(p.rest()).unwrap_or(0);
                p.pos += n;
                KIND_BEGIN
            }
            Record::Progress {
                image,
                next_offset,
                ahead,
            } => {
                p.put(&image.0.to_le_bytes());
                p.put(&next_offset.to_le_bytes());
                match u32::try_from(*ahead) {
                    Ok(narrow) => p.put(&narrow.to_le_bytes()),
                    Err(_) => p.put(&ahead.to_le_bytes()),
                }
                KIND_PROGRESS
            }
            Record::State(s) => {
                p.put(&s.to_bytes());
                KIND_STATE
            }
            Record::Counter(v) => {
                p.put(&v.to_le_bytes());
                KIND_COUNTER
            }
        };
        let len = p.pos;
        head.copy_from_slice(&[len as u8, kind]);
        let end = 2 + len;
        let crc = checksum(out.get(..end).unwrap_or(&[]));
        if let Some(trailer) = out.get_mut(end..end + 4) {
            trailer.copy_from_slice(&crc.to_le_bytes());
        }
        end + 4
    }

    /// Bytes the record at the start of `bytes` occupies before padding, from its length byte.
    pub fn encoded_len(bytes: &[u8]) -> Result<usize, RecordError> {
        match bytes {
            [0xFF, 0xFF, ..] => Err(RecordError::Erased),
            [len, _, ..] if usize::from(*len) <= MAX_PAYLOAD => Ok(6 + usize::from(*len)),
            [_, _, ..] => Err(RecordError::Malformed),
            _ => Err(RecordError::Truncated),
        }
    }

    /// Decodes the record at the start of `bytes` (which may run on past it).
    pub fn decode(bytes: &[u8]) -> Result<Record, RecordError> {
        let total = Self::encoded_len(bytes)?;
        let rec = bytes.get(..total).ok_or(RecordError::Truncated)?;
        let (body, crc) = rec.split_at(total - 4);
        let crc: [u8; 4] = crc.try_into().map_err(|_| RecordError::Truncated)?;
        if checksum(body) != u32::from_le_bytes(crc) {
            return Err(RecordError::BadCrc);
        }
        let (&kind, payload) = body
            .get(1..)
            .and_then(|b| b.split_first())
            .ok_or(RecordError::Truncated)?;
        let u32_at = |i: usize| -> Result<u32, RecordError> {
            let b: [u8; 4] = payload
                .get(i..i + 4)
                .and_then(|s| s.try_into().ok())
                .ok_or(RecordError::Malformed)?;
            Ok(u32::from_le_bytes(b))
        };
        match kind {
            KIND_HEADER if payload.len() == 8 && payload.get(..4) == Some(&MAGIC[..]) => {
                Ok(Record::Header { seq: u32_at(4)? })
            }
            KIND_BEGIN | KIND_BEGIN_32 => {
                let len = if kind == KIND_BEGIN {
                    RESUME_STATE_LEN
                } else {
                    RESUME_STATE_LEN_32
                };
                let (state, manifest) = payload
                    .split_at_checked(len)
                    .ok_or(RecordError::Malformed)?;
                Ok(Record::Begin {
                    state: ResumeState::from_bytes(state).map_err(|_| RecordError::Malformed)?,
                    manifest: StoredManifest::from_bytes(manifest).ok_or(RecordError::Malformed)?,
                })
            }
            KIND_PROGRESS if payload.len() == 12 || payload.len() == 16 => {
                let high = if payload.len() == 16 { u32_at(12)? } else { 0 };
                Ok(Record::Progress {
                    image: ImageId(u32_at(0)?),
                    next_offset: u32_at(4)?,
                    ahead: u64::from(u32_at(8)?) | (u64::from(high) << 32),
                })
            }
            KIND_STATE => UpdateState::from_bytes(payload)
                .map(Record::State)
                .ok_or(RecordError::Malformed),
            KIND_COUNTER => <[u8; 8]>::try_from(payload)
                .map(|b| Record::Counter(u64::from_le_bytes(b)))
                .map_err(|_| RecordError::Malformed),
            _ => Err(RecordError::Malformed),
        }
    }
}

/// `len` rounded up to a multiple of `unit`.
pub(crate) const fn padded(len: usize, unit: usize) -> usize {
    len.div_ceil(unit) * unit
}

/// Appends into a fixed buffer; bytes that do not fit are dropped (buffers are sized so that
/// none ever is).
struct Cursor<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(buf: &'a mut [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    fn put(&mut self, bytes: &[u8]) {
        for (dst, src) in self.buf.iter_mut().skip(self.pos).zip(bytes) {
            *dst = *src;
        }
        self.pos = (self.pos + bytes.len()).min(self.buf.len());
    }

    /// The room after what was written.
    fn rest(&mut self) -> &mut [u8] {
        self.buf.get_mut(self.pos..).unwrap_or_default()
    }
}
