//! Frames for byte-stream links (UART, TCP): COBS-delimited, CRC-32 protected.
//!
//! On the wire a frame is `COBS(payload || CRC-32(payload) as 4 LE bytes) || 0x00`. COBS removes
//! every zero byte from the encoded body, so `0x00` marks frame ends and a receiver that joins
//! mid-stream, or loses bytes, resynchronises at the next delimiter. A frame whose CRC fails, or
//! that overflows the receive buffer, is dropped whole with a typed error; the next one is
//! decoded normally. Overhead: 4 CRC bytes, 1 delimiter and 1 COBS byte per 254 bytes.

/// Bytes a frame adds to a payload of `len` bytes, at most.
pub const fn max_overhead(len: usize) -> usize {
    cobs::max_encoding_overhead(len + 4) + 4 + 1
}

/// Why a frame could not be built or was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The output buffer cannot hold the encoded frame.
    #[error("output buffer too small for the frame")]
    BufferTooSmall,
    /// The frame was longer than the receive buffer; it was skipped up to its delimiter.
    #[error("frame longer than the receive buffer; dropped")]
    Overflow,
    /// The bytes between two delimiters are not valid COBS.
    #[error("invalid COBS encoding; frame dropped")]
    Cobs,
    /// Shorter than its own CRC.
    #[error("frame too short to hold a CRC; dropped")]
    TooShort,
    /// The CRC does not match the payload.
    #[error("frame CRC mismatch; dropped")]
    BadCrc,
}

/// Encodes `payload` as one frame into `out`, delimiter included; returns bytes written.
pub fn encode_frame(payload: &[u8], out: &mut [u8]) -> Result<usize, FrameError> {
    let crc = crate::crc32::checksum(payload).to_le_bytes();
    let mut enc = cobs::CobsEncoder::new(out);
    enc.push(payload).map_err(|_| FrameError::BufferTooSmall)?;
    enc.push(&crc).map_err(|_| FrameError::BufferTooSmall)?;
    let n = enc.finalize();
    let end = out.get_mut(n).ok_or(FrameError::BufferTooSmall)?;
    *end = 0;
    Ok(n + 1)
}

/// Encodes `payload` as one frame into a new vector.
#[cfg(feature = "std")]
pub fn encode_frame_vec(payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; payload.len() + max_overhead(payload.len())];
    // The buffer is sized for the worst case, so encoding cannot run out of room.
    let n = encode_frame(payload, &mut out).unwrap_or(0);
    out.truncate(n);
    out
}

/// Receives frames byte by byte into a fixed buffer of `N` bytes (no allocation).
///
/// `N` must hold the largest encoded frame expected (payload + [`max_overhead`]).
#[derive(Debug)]
pub struct FrameDecoder<const N: usize> {
    buf: [u8; N],
    len: usize,
    overflow: bool,
}

impl<const N: usize> Default for FrameDecoder<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> FrameDecoder<N> {
    /// An empty decoder.
    pub const fn new() -> Self {
        Self {
            buf: [0; N],
            len: 0,
            overflow: false,
        }
    }

    /// Feeds one byte. Returns `Some(Ok(payload))` when a valid frame ends, `Some(Err(_))` when a
    /// bad one was dropped, and `None` otherwise (including for empty frames, so a sender may
    /// lead with a delimiter to flush line noise).
    pub fn push(&mut self, byte: u8) -> Option<Result<&[u8], FrameError>> {
        if byte != 0 {
            match self.buf.get_mut(self.len) {
                Some(slot) if !self.overflow => {
                    *slot = byte;
                    self.len += 1;
                }
                _ => self.overflow = true,
            }
            return None;
        }
        let len = core::mem::take(&mut self.len);
        if core::mem::take(&mut self.overflow) {
            return Some(Err(FrameError::Overflow));
        }
        if len == 0 {
            return None;
        }
        Some(self.finish(len))
    }

    fn finish(&mut self, len: usize) -> Result<&[u8], FrameError> {
        let raw = self.buf.get_mut(..len).ok_or(FrameError::Overflow)?;
        let n = cobs::decode_in_place(raw).map_err(|_| FrameError::Cobs)?;
        let decoded = raw.get(..n).ok_or(FrameError::Cobs)?;
        let split = n.checked_sub(4).ok_or(FrameError::TooShort)?;
        let (payload, crc) = decoded.split_at(split);
        let crc: [u8; 4] = crc.try_into().map_err(|_| FrameError::TooShort)?;
        if crate::crc32::checksum(payload) != u32::from_le_bytes(crc) {
            return Err(FrameError::BadCrc);
        }
        Ok(payload)
    }
}
