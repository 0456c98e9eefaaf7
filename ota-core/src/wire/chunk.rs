//! Pull-based image transfer: the device asks, the server answers, with no session between.

use serde::{Deserialize, Serialize};

use super::types::{Crc32, ImageId};

/// Longest chunk payload any peer accepts on the wire, in bytes.
pub const MAX_CHUNK_PAYLOAD: usize = 4096;

/// Device → server: send `len` bytes of `image` from `offset`.
///
/// It carries everything needed to answer it, so any server instance can.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRequest {
    /// Which image.
    pub image: ImageId,
    /// Byte offset into the image.
    pub offset: u32,
    /// How many bytes.
    pub len: u16,
}

/// Server → device: bytes of an image at an offset.
///
/// At 1 KiB payload a chunk costs 12 bytes beyond the payload for images up to 2 MiB (envelope 2,
/// image id 1, offset 3, length 2, CRC 4); its request is 12 bytes in all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk<'a> {
    /// Which image.
    pub image: ImageId,
    /// Byte offset into the image.
    pub offset: u32,
    /// The bytes.
    pub payload: &'a [u8],
    /// [`crate::crc32::chunk_checksum`] over image, offset and payload.
    pub crc32: Crc32,
}

impl<'a> Chunk<'a> {
    /// Builds a chunk with its CRC.
    pub fn new(image: ImageId, offset: u32, payload: &'a [u8]) -> Self {
        let crc = crate::crc32::chunk_checksum(image.0, offset, payload);
        Self {
            image,
            offset,
            payload,
            crc32: Crc32(crc),
        }
    }

    /// True if the CRC matches image, offset and payload.
    pub fn crc_ok(&self) -> bool {
        crate::crc32::chunk_checksum(self.image.0, self.offset, self.payload) == self.crc32.0
    }
}
