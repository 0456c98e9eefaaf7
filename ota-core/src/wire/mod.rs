//! The versioned wire protocol.
//!
//! Every message is one envelope:
//!
//! | bytes | field | notes |
//! |---|---|---|
//! | 1 | protocol version | [`PROTOCOL_VERSION`]; a receiver refuses a higher major it does not know |
//! | 1 | message kind | postcard enum index: 0 check-in, 1 reply, 2 chunk request, 3 chunk, 4 report |
//! | n | body | postcard: integers as LEB128 varints, `Option` as a 0/1 byte, byte strings as varint length + bytes, fixed arrays raw |
//! | 4 | CRC-32 | over every byte before it, little-endian; absent on chunks, whose own `crc32` field covers image, offset and payload |
//!
//! The CRC is there because a corrupted reply is worse than a lost one: a flipped bit in an
//! `UpToDate` could put a device to sleep for a year, and one in a manifest would make it refuse
//! a valid update. A message whose CRC fails is dropped like a lost one and asked for again.
//! (A corrupted kind byte that turns a message into a chunk skips the trailer check; the chunk's
//! own CRC then fails instead.)
//!
//! Bytes between the body and the CRC are ignored. That is the extension rule: a later minor
//! revision may append fields, and a device in the field that does not know them still decodes
//! the message; a newer server answers an older device in the device's own version.
//!
//! Decoding borrows byte strings from the input (no allocation), bounds every length, and
//! returns a typed [`DecodeError`], never a panic.

mod checkin;
mod chunk;
mod device_id;
mod reply;
mod report;
mod types;

use serde::{Deserialize, Serialize};

pub use checkin::{
    Capabilities, CheckIn, LastOutcome, ResumeHint, RunningFirmware, WakeBudget, MAX_SENT_LEN,
};
pub use chunk::{Chunk, ChunkRequest, MAX_CHUNK_PAYLOAD};
pub use device_id::{check_device_id, is_id_byte, DeviceIdError, MAX_DEVICE_ID};
pub use reply::{CheckInReply, DeferReason, Urgency, MAX_REPLY_LEN};
pub use report::{Phase, Report};
pub use types::{Crc32, Digest, DigestPrefix, ImageId, ResultCode, Signature, Version};

use crate::manifest::MAX_MANIFEST_BODY;

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u8 = 1;

/// Every message of the protocol.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message<'a> {
    /// Device → server.
    #[serde(borrow)]
    CheckIn(CheckIn<'a>),
    /// Server → device.
    #[serde(borrow)]
    CheckInReply(CheckInReply<'a>),
    /// Device → server.
    ChunkRequest(ChunkRequest),
    /// Server → device.
    #[serde(borrow)]
    Chunk(Chunk<'a>),
    /// Device → server.
    #[serde(borrow)]
    Report(Report<'a>),
}

/// Why bytes could not be decoded as a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// No bytes at all.
    #[error("empty message")]
    Empty,
    /// The envelope names a protocol version this build does not speak.
    #[error("unsupported protocol version {0} (this build speaks {PROTOCOL_VERSION})")]
    UnsupportedVersion(u8),
    /// The body is not a valid postcard encoding of a message.
    #[error("malformed message body: {0}")]
    Malformed(postcard::Error),
    /// A device id breaks the rule of [`check_device_id`].
    #[error(transparent)]
    DeviceId(#[from] DeviceIdError),
    /// A chunk payload is longer than [`MAX_CHUNK_PAYLOAD`].
    #[error("chunk payload of {0} bytes exceeds the limit of {MAX_CHUNK_PAYLOAD}")]
    PayloadTooLong(usize),
    /// The CRC trailer does not match: the message was corrupted on the way.
    #[error("message CRC mismatch")]
    BadCrc,
    /// A manifest body is longer than [`MAX_MANIFEST_BODY`].
    #[error("manifest body of {0} bytes exceeds the limit of {MAX_MANIFEST_BODY}")]
    ManifestTooLong(usize),
    /// [`decode_inbound`] met a message of this kind byte, which no device receives (a
    /// check-in, a chunk request, a report) or no message has.
    #[error("message kind {0} is not one a device receives")]
    NotInbound(u8),
}

/// Why a message could not be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The output buffer is too small.
    #[error("output buffer too small")]
    BufferTooSmall,
}

/// Postcard index of [`Message::Chunk`], the one kind without a CRC trailer.
const KIND_CHUNK: u8 = 3;

/// The kind of a message, read from its envelope alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    /// [`Message::CheckIn`].
    CheckIn,
    /// [`Message::CheckInReply`].
    CheckInReply,
    /// [`Message::ChunkRequest`].
    ChunkRequest,
    /// [`Message::Chunk`].
    Chunk,
    /// [`Message::Report`].
    Report,
}

/// The kind of the message in `bytes` from its first two bytes, without checking or decoding
/// the rest: for a transport routing a message it has just encoded (to a topic, say).
pub fn peek_kind(bytes: &[u8]) -> Option<MessageKind> {
    match bytes {
        [PROTOCOL_VERSION, kind, ..] => Some(match *kind {
            0 => MessageKind::CheckIn,
            REPLY_KIND => MessageKind::CheckInReply,
            2 => MessageKind::ChunkRequest,
            KIND_CHUNK => MessageKind::Chunk,
            4 => MessageKind::Report,
            _ => return None,
        }),
        _ => None,
    }
}

/// Postcard index of [`CheckInReply::Update`].
const REPLY_UPDATE: u8 = 1;

/// True if `bytes` is a check-in reply offering an update, from its first three bytes, without
/// checking or decoding the rest: for a transport marking a reply it has just encoded.
pub fn peek_offer(bytes: &[u8]) -> bool {
    matches!(bytes, [PROTOCOL_VERSION, REPLY_KIND, REPLY_UPDATE, ..])
}

const CRC_LEN: usize = 4;

/// Writes the CRC trailer after the `len` bytes of `buf` it covers; the message's length.
fn append_crc(buf: &mut [u8], len: usize) -> Result<usize, EncodeError> {
    let (covered, rest) = buf.split_at_mut(len);
    let trailer = rest.get_mut(..CRC_LEN).ok_or(EncodeError::BufferTooSmall)?;
    trailer.copy_from_slice(&crate::crc32::checksum(covered).to_le_bytes());
    Ok(len + CRC_LEN)
}

/// Encodes `msg` with its envelope into `buf`, returning the number of bytes written.
pub fn encode(msg: &Message<'_>, buf: &mut [u8]) -> Result<usize, EncodeError> {
    let (head, body) = buf.split_first_mut().ok_or(EncodeError::BufferTooSmall)?;
    *head = PROTOCOL_VERSION;
    let len = 1 + postcard::to_slice(msg, body)
        .map_err(|_| EncodeError::BufferTooSmall)?
        .len();
    if matches!(msg, Message::Chunk(_)) {
        return Ok(len);
    }
    append_crc(buf, len)
}

/// A message a device sends: what [`encode_outbound`] takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outbound<'a> {
    /// [`Message::CheckIn`].
    CheckIn(CheckIn<'a>),
    /// [`Message::ChunkRequest`].
    ChunkRequest(ChunkRequest),
    /// [`Message::Report`].
    Report(Report<'a>),
}

impl Serialize for Outbound<'_> {
    /// As the same message in a [`Message`], under its index there.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Outbound::CheckIn(m) => s.serialize_newtype_variant("Message", 0, "CheckIn", m),
            Outbound::ChunkRequest(m) => {
                s.serialize_newtype_variant("Message", 2, "ChunkRequest", m)
            }
            Outbound::Report(m) => s.serialize_newtype_variant("Message", 4, "Report", m),
        }
    }
}

/// Encodes a message a device sends, byte for byte as [`encode`] would. The device's
/// encoder: a build that calls only this carries no code to encode replies or chunks.
pub fn encode_outbound(msg: &Outbound<'_>, buf: &mut [u8]) -> Result<usize, EncodeError> {
    let (head, body) = buf.split_first_mut().ok_or(EncodeError::BufferTooSmall)?;
    *head = PROTOCOL_VERSION;
    let len = 1 + postcard::to_slice(msg, body)
        .map_err(|_| EncodeError::BufferTooSmall)?
        .len();
    append_crc(buf, len)
}

/// Encodes `msg` with its envelope into a new vector.
#[cfg(feature = "std")]
pub fn encode_vec(msg: &Message<'_>) -> Vec<u8> {
    let mut out = vec![PROTOCOL_VERSION];
    // Serialising into a growable vector cannot run out of room, and every type here is
    // representable in postcard, so this never fails.
    if let Ok(body) = postcard::to_stdvec(msg) {
        out.extend_from_slice(&body);
    }
    if !matches!(msg, Message::Chunk(_)) {
        let crc = crate::crc32::checksum(&out);
        out.extend_from_slice(&crc.to_le_bytes());
    }
    out
}

/// Decodes one message, borrowing byte strings from `bytes`.
pub fn decode(bytes: &[u8]) -> Result<Message<'_>, DecodeError> {
    decode_extended(bytes).map(|(m, _)| m)
}

/// Encodes `msg` with `extension` bytes after its body, inside the CRC (the extension rule).
/// Not for chunks, which carry no trailer.
pub fn encode_extended(
    msg: &Message<'_>,
    extension: &[u8],
    buf: &mut [u8],
) -> Result<usize, EncodeError> {
    let (head, body) = buf.split_first_mut().ok_or(EncodeError::BufferTooSmall)?;
    *head = PROTOCOL_VERSION;
    let mut len = 1 + postcard::to_slice(msg, body)
        .map_err(|_| EncodeError::BufferTooSmall)?
        .len();
    let end = len + extension.len();
    buf.get_mut(len..end)
        .ok_or(EncodeError::BufferTooSmall)?
        .copy_from_slice(extension);
    len = end;
    append_crc(buf, len)
}

/// The postcard body of the message in `bytes` (its kind byte first), once the envelope's
/// version and, for every kind but a chunk, its CRC trailer check out.
fn checked_body(bytes: &[u8]) -> Result<&[u8], DecodeError> {
    let (&version, rest) = bytes.split_first().ok_or(DecodeError::Empty)?;
    if version != PROTOCOL_VERSION {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    if rest.first() == Some(&KIND_CHUNK) {
        return Ok(rest);
    }
    let split = bytes
        .len()
        .checked_sub(CRC_LEN)
        .ok_or(DecodeError::BadCrc)?;
    let (covered, crc) = bytes.split_at(split);
    let crc: [u8; CRC_LEN] = crc.try_into().map_err(|_| DecodeError::BadCrc)?;
    if split < 1 || crate::crc32::checksum(covered) != u32::from_le_bytes(crc) {
        return Err(DecodeError::BadCrc);
    }
    covered.get(1..).ok_or(DecodeError::BadCrc)
}

/// A message a device receives: what [`decode_inbound`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound<'a> {
    /// [`Message::CheckInReply`].
    CheckInReply(CheckInReply<'a>),
    /// [`Message::Chunk`].
    Chunk(Chunk<'a>),
}

/// Decodes a message a device receives, as [`decode`] would, refusing the kinds only a server
/// receives with [`DecodeError::NotInbound`]. The device's decoder: a build that calls only
/// this carries no code to decode check-ins, chunk requests or reports (on the blocking
/// Cortex-M4 firmware, 2.0 KB of the OTA crates' flash and 0.7 KB of postcard's).
pub fn decode_inbound(bytes: &[u8]) -> Result<Inbound<'_>, DecodeError> {
    let body = checked_body(bytes)?;
    match body.split_first() {
        Some((&REPLY_KIND, rest)) => {
            let (reply, _) = postcard::take_from_bytes::<CheckInReply<'_>>(rest)
                .map_err(DecodeError::Malformed)?;
            check_manifest_len(&reply)?;
            Ok(Inbound::CheckInReply(reply))
        }
        Some((&KIND_CHUNK, rest)) => {
            let (chunk, _) =
                postcard::take_from_bytes::<Chunk<'_>>(rest).map_err(DecodeError::Malformed)?;
            check_payload_len(&chunk)?;
            Ok(Inbound::Chunk(chunk))
        }
        Some((&kind, _)) => Err(DecodeError::NotInbound(kind)),
        None => Err(DecodeError::Malformed(
            postcard::Error::DeserializeUnexpectedEnd,
        )),
    }
}

/// Postcard index of [`Message::CheckInReply`].
const REPLY_KIND: u8 = 1;

fn check_manifest_len(reply: &CheckInReply<'_>) -> Result<(), DecodeError> {
    match reply {
        CheckInReply::Update {
            manifest: Some(m), ..
        } if m.body.len() > MAX_MANIFEST_BODY => Err(DecodeError::ManifestTooLong(m.body.len())),
        _ => Ok(()),
    }
}

fn check_payload_len(chunk: &Chunk<'_>) -> Result<(), DecodeError> {
    if chunk.payload.len() > MAX_CHUNK_PAYLOAD {
        return Err(DecodeError::PayloadTooLong(chunk.payload.len()));
    }
    Ok(())
}

/// Decodes one message and the extension bytes between its body and its CRC (empty for a
/// chunk).
pub fn decode_extended(bytes: &[u8]) -> Result<(Message<'_>, &[u8]), DecodeError> {
    let body = checked_body(bytes)?;
    let (msg, extension) =
        postcard::take_from_bytes::<Message<'_>>(body).map_err(DecodeError::Malformed)?;
    msg.check_limits()?;
    let extension = if matches!(msg, Message::Chunk(_)) {
        &[]
    } else {
        extension
    };
    Ok((msg, extension))
}

/// The retained desired state a server publishes for a device (an MQTT retained message): the
/// reply the device would get now, in compact form, and the running image it was worked out
/// for (the first 8 bytes of its SHA-256, as an extension). A device whose running image
/// differs (flashed back by hand, say) must check in rather than trust it.
pub fn encode_desired(
    reply: &CheckInReply<'_>,
    applies_to: DigestPrefix,
    buf: &mut [u8],
) -> Result<usize, EncodeError> {
    encode_extended(&Message::CheckInReply(reply.clone()), &applies_to.0, buf)
}

/// Decodes a desired state: the reply and the running image it applies to (`None` if it names
/// none).
pub fn decode_desired(
    bytes: &[u8],
) -> Result<(CheckInReply<'_>, Option<DigestPrefix>), DecodeError> {
    match decode_extended(bytes)? {
        (Message::CheckInReply(r), ext) => {
            let applies_to = ext
                .get(..8)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(DigestPrefix);
            Ok((r, applies_to))
        }
        _ => Err(DecodeError::Malformed(postcard::Error::DeserializeBadEnum)),
    }
}

impl Message<'_> {
    /// Its kind.
    pub fn kind(&self) -> MessageKind {
        match self {
            Message::CheckIn(_) => MessageKind::CheckIn,
            Message::CheckInReply(_) => MessageKind::CheckInReply,
            Message::ChunkRequest(_) => MessageKind::ChunkRequest,
            Message::Chunk(_) => MessageKind::Chunk,
            Message::Report(_) => MessageKind::Report,
        }
    }

    fn check_limits(&self) -> Result<(), DecodeError> {
        match self {
            Message::CheckIn(CheckIn { device_id, .. })
            | Message::Report(Report { device_id, .. }) => {
                check_device_id(device_id)?;
                Ok(())
            }
            Message::Chunk(c) => check_payload_len(c),
            Message::CheckInReply(r) => check_manifest_len(r),
            Message::ChunkRequest(_) => Ok(()),
        }
    }
}
