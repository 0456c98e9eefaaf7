//! What [`super::Device::poll_transmit`] produced, so a transport frames it without decoding
//! what the state machine just encoded.

use crate::wire::ImageId;

/// One message the state machine put in the caller's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    /// Its length in the buffer.
    pub len: usize,
    /// What it is.
    pub what: Sent,
    /// Send it twice, back to back: the path loses so many datagrams that a second copy costs
    /// less than the wait for a lost request (see [`DeviceConfig::request_copies`]). A server
    /// that takes both answers one; a link that cannot copy sends it once.
    ///
    /// [`DeviceConfig::request_copies`]: super::DeviceConfig::request_copies
    pub twice: bool,
}

/// The kinds of message a device sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// The check-in.
    CheckIn,
    /// A request for `len` bytes of `image` at `offset`.
    ChunkRequest {
        /// The image.
        image: ImageId,
        /// Byte offset.
        offset: u32,
        /// Bytes asked for (short only for the last chunk).
        len: u16,
        /// The manifest's chunk size (a transport's block size: block number = offset / it).
        chunk_size: u16,
    },
    /// A progress or outcome report.
    Report,
}
