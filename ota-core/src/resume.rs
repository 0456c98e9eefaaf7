//! The resume record: what the device persists after every chunk so a reset costs at most the
//! chunk being written.
//!
//! Layout, 49 bytes, little-endian (storage adds its own framing and CRC):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 32 | SHA-256 of the signed manifest body being downloaded |
//! | 32 | 4 | image id the server assigned |
//! | 36 | 4 | `next_offset`: every byte below it is staged |
//! | 40 | 4 | `ahead`, bits 0-31: bit *i* set = the chunk at `next_offset + (i + 1) * chunk_size` is staged |
//! | 44 | 1 | phase: 1 downloading, 2 staged (digest verified) |
//! | 45 | 4 | `ahead`, bits 32-63 |
//!
//! `ahead` exists because the device keeps a window of chunk requests outstanding: chunks that
//! arrive out of order are written at once and recorded here, so a reset loses none of them.
//! Its 64 bits are the reach of the window: no chunk further than that past `next_offset` is
//! asked for. At 30 % loss and a 1.2 s round trip a chunk is asked for twice on average and
//! sometimes five times, and 32 bits stopped a wider window while the chunk at `next_offset`
//! was lost again and again (`ota-bench` there: window 16 gave 54 % of the loss-adjusted rate
//! with 32 bits; window 12 gives 77 % with 64). The first 45 bytes are the earlier 32-bit
//! layout, which [`ResumeState::from_bytes`] still reads.
//!
//! No hash state is persisted: when the last chunk is in, the device re-hashes the staged image
//! as read back from flash. That costs one read of the slot, but the digest then vouches for
//! what is really in flash, and nothing from RAM before a reset is trusted.

use crate::wire::{Digest, ImageId};

/// Encoded size of a [`ResumeState`].
pub const RESUME_STATE_LEN: usize = 49;

/// Size of the earlier layout, with a 32-bit `ahead` (still read).
pub const RESUME_STATE_LEN_32: usize = 45;

/// Largest window of outstanding chunks the `ahead` bitmap can track beyond `next_offset`.
pub const MAX_AHEAD: u32 = u64::BITS;

/// Where a download stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResumePhase {
    /// Chunks are still coming.
    Downloading,
    /// The whole image is staged and its digest verified from flash.
    Staged,
}

/// The compact persisted record of a download.
///
/// Aligned to 4 bytes, not the bitmap's 8: a device keeps several copies (the state machine's,
/// the storage's snapshot, the wake's), and 8-byte alignment padded each from 49 to 56 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C, packed(4))]
pub struct ResumeState {
    /// SHA-256 of the signed manifest body.
    pub manifest: Digest,
    /// Server's image handle.
    pub image: ImageId,
    /// Every byte below this offset is staged.
    pub next_offset: u32,
    /// Chunks staged beyond `next_offset` (see the module docs).
    pub ahead: u64,
    /// Downloading or staged.
    pub phase: ResumePhase,
}

/// A resume record did not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ResumeError {
    /// Neither [`RESUME_STATE_LEN`] nor [`RESUME_STATE_LEN_32`] bytes.
    #[error("resume record has {0} bytes, expected {RESUME_STATE_LEN} or {RESUME_STATE_LEN_32}")]
    Length(usize),
    /// Unknown phase byte.
    #[error("resume record has unknown phase {0}")]
    Phase(u8),
}

impl ResumeState {
    /// A fresh download of `image` described by the manifest with digest `manifest`.
    pub const fn new(manifest: Digest, image: ImageId) -> Self {
        Self {
            manifest,
            image,
            next_offset: 0,
            ahead: 0,
            phase: ResumePhase::Downloading,
        }
    }

    /// True if the chunk at `offset` is staged.
    pub fn has(&self, offset: u32, chunk_size: u32) -> bool {
        if offset < self.next_offset {
            return true;
        }
        match Self::ahead_bit(self.next_offset, offset, chunk_size) {
            Some(bit) => self.ahead & (1 << bit) != 0,
            None => false,
        }
    }

    /// Records the chunk at `offset` as staged, advancing `next_offset` over every contiguous
    /// staged chunk (the last chunk of an image may be short). Returns `false`, changing
    /// nothing, if the chunk is off a chunk boundary, past the image, or beyond the window the
    /// bitmap tracks.
    pub fn mark(&mut self, offset: u32, chunk_size: u32, image_size: u32) -> bool {
        if chunk_size == 0 || offset % chunk_size != 0 || offset >= image_size {
            return false;
        }
        if offset < self.next_offset {
            return true;
        }
        if offset == self.next_offset {
            self.next_offset = offset.saturating_add(chunk_size).min(image_size);
            while self.ahead & 1 != 0 {
                self.ahead >>= 1;
                self.next_offset = self.next_offset.saturating_add(chunk_size).min(image_size);
            }
            self.ahead >>= 1;
            return true;
        }
        match Self::ahead_bit(self.next_offset, offset, chunk_size) {
            Some(bit) => {
                self.ahead |= 1 << bit;
                true
            }
            None => false,
        }
    }

    /// True once every byte of an image of `image_size` bytes is staged.
    pub fn is_complete(&self, image_size: u32) -> bool {
        self.next_offset >= image_size
    }

    /// Bytes of the image staged, counting chunks ahead as full chunks, capped at `image_size`.
    pub fn staged_bytes(&self, chunk_size: u32, image_size: u32) -> u32 {
        let ahead = self.ahead.count_ones().saturating_mul(chunk_size);
        self.next_offset.saturating_add(ahead).min(image_size)
    }

    /// End of the furthest staged chunk: `next_offset`, or past it the end of the chunk of the
    /// highest bit in `ahead` (bit *b* is the chunk *b* + 1 chunks past `next_offset`, which
    /// ends *b* + 2 chunks past it). Nothing at or beyond it is staged. Not capped at the
    /// image size (the last chunk may be short).
    pub fn staged_end(&self, chunk_size: u32) -> u32 {
        let chunks_past = match u64::BITS - self.ahead.leading_zeros() {
            0 => 0,
            highest => highest + 1,
        };
        self.next_offset
            .saturating_add(chunks_past.saturating_mul(chunk_size))
    }

    fn ahead_bit(next: u32, offset: u32, chunk_size: u32) -> Option<u32> {
        if chunk_size == 0 || offset <= next || (offset - next) % chunk_size != 0 {
            return None;
        }
        let bit = (offset - next) / chunk_size - 1;
        (bit < MAX_AHEAD).then_some(bit)
    }

    /// The fixed 49-byte encoding.
    pub fn to_bytes(&self) -> [u8; RESUME_STATE_LEN] {
        let mut out = [0u8; RESUME_STATE_LEN];
        let (digest, rest) = out.split_at_mut(32);
        digest.copy_from_slice(&self.manifest.0);
        let (image, rest) = rest.split_at_mut(4);
        image.copy_from_slice(&self.image.0.to_le_bytes());
        let (next, rest) = rest.split_at_mut(4);
        next.copy_from_slice(&self.next_offset.to_le_bytes());
        let (ahead_low, rest) = rest.split_at_mut(4);
        let (phase, ahead_high) = rest.split_at_mut(1);
        let ahead = self.ahead.to_le_bytes();
        let (low, high) = ahead.split_at(4);
        ahead_low.copy_from_slice(low);
        ahead_high.copy_from_slice(high);
        if let Some(p) = phase.first_mut() {
            *p = match self.phase {
                ResumePhase::Downloading => 1,
                ResumePhase::Staged => 2,
            };
        }
        out
    }

    /// Parses the fixed encoding, or the earlier one with a 32-bit `ahead`
    /// ([`RESUME_STATE_LEN_32`] bytes).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ResumeError> {
        if bytes.len() != RESUME_STATE_LEN && bytes.len() != RESUME_STATE_LEN_32 {
            return Err(ResumeError::Length(bytes.len()));
        }
        let (digest, rest) = bytes.split_at(32);
        let (image, rest) = rest.split_at(4);
        let (next, rest) = rest.split_at(4);
        let (ahead, rest) = rest.split_at(4);
        let (phase, ahead_high) = rest.split_at(1);
        let le = |s: &[u8]| -> u32 {
            let mut w = [0u8; 4];
            if let Some(w) = w.get_mut(..s.len()) {
                w.copy_from_slice(s);
            }
            u32::from_le_bytes(w)
        };
        let mut manifest = [0u8; 32];
        manifest.copy_from_slice(digest);
        let phase = match phase.first().copied().unwrap_or(0) {
            1 => ResumePhase::Downloading,
            2 => ResumePhase::Staged,
            p => return Err(ResumeError::Phase(p)),
        };
        Ok(Self {
            manifest: Digest(manifest),
            image: ImageId(le(image)),
            next_offset: le(next),
            ahead: u64::from(le(ahead)) | (u64::from(le(ahead_high)) << 32),
            phase,
        })
    }
}
