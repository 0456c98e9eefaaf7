//! CRC-32 (ISO-HDLC, as in Ethernet and zlib) used for chunks and stream frames.
//!
//! A CRC catches link corruption cheaply so the one bad chunk is refetched at once; it is not a
//! security check (the SHA-256 over the staged image and the manifest signature are).

use crc::{Crc, Table, CRC_32_ISO_HDLC};

/// Table size: slice-by-16 (16 KiB of tables) on hosts, where it is five times faster; a single
/// 1 KiB table on devices, where flash is scarce and the radio is far slower than either.
#[cfg(feature = "std")]
type Impl = Table<16>;
#[cfg(not(feature = "std"))]
type Impl = Table<1>;

/// The CRC-32 engine shared by chunks, frames and resume records.
pub const CRC32: Crc<u32, Impl> = Crc::<u32, Impl>::new(&CRC_32_ISO_HDLC);

/// CRC-32 of one byte slice.
pub fn checksum(bytes: &[u8]) -> u32 {
    CRC32.checksum(bytes)
}

/// CRC-32 that binds a chunk's payload to its image and offset, so a corrupted offset is caught
/// as surely as a corrupted payload.
pub fn chunk_checksum(image: u32, offset: u32, payload: &[u8]) -> u32 {
    let mut digest = CRC32.digest();
    digest.update(&image.to_le_bytes());
    digest.update(&offset.to_le_bytes());
    digest.update(payload);
    digest.finalize()
}
