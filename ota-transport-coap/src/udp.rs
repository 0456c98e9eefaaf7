//! The CoAP-over-UDP message layer (RFC 7252 section 3): version, type, token length, code,
//! message id and token. Options and payload are encoded and parsed by
//! `coap-message-implementations`; this module only splits a datagram around them.
//!
//! ```text
//!  0                   1                   2                   3
//! |Ver| T |  TKL  |      Code     |          Message ID           |
//! |   Token (TKL bytes) ...  | Options ... | 0xFF | Payload ...   |
//! ```

use coap_message_implementations::inmemory::{MessageMut, SliceBufferMut, WriteError};
use coap_message_implementations::option_iteration::{OptItem, OptPayloadReader};

/// Longest token RFC 7252 allows.
pub const MAX_TOKEN: usize = 8;

/// The four message types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MsgType {
    /// Confirmable: retransmitted until acknowledged.
    Con,
    /// Non-confirmable.
    Non,
    /// Acknowledgement (may carry a piggybacked response).
    Ack,
    /// Reset.
    Rst,
}

impl MsgType {
    fn bits(self) -> u8 {
        match self {
            MsgType::Con => 0,
            MsgType::Non => 1,
            MsgType::Ack => 2,
            MsgType::Rst => 3,
        }
    }

    fn from_bits(b: u8) -> Self {
        match b & 3 {
            0 => MsgType::Con,
            1 => MsgType::Non,
            2 => MsgType::Ack,
            _ => MsgType::Rst,
        }
    }
}

/// Why a datagram is not a CoAP message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UdpError {
    /// Shorter than the 4-byte header plus its token.
    #[error("datagram too short")]
    Truncated,
    /// Version other than 1.
    #[error("CoAP version {0} unsupported")]
    Version(u8),
    /// Token length 9..=15 (reserved).
    #[error("reserved token length {0}")]
    TokenLength(u8),
    /// An empty message (code 0.00) with bytes after the header.
    #[error("empty message with content")]
    EmptyWithContent,
    /// The output buffer is too small.
    #[error("buffer too small")]
    BufferTooSmall,
}

/// A parsed datagram: header fields, token, and the options and payload bytes.
#[derive(Debug, Clone, Copy)]
pub struct Datagram<'a> {
    /// Message type.
    pub kind: MsgType,
    /// Code, `class << 5 | detail`.
    pub code: u8,
    /// Message id.
    pub mid: u16,
    /// Token.
    pub token: &'a [u8],
    /// Options and payload, still encoded.
    pub body: &'a [u8],
}

/// One option or the payload of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Item<'a> {
    /// An option.
    Option {
        /// Option number.
        number: u16,
        /// Its value.
        value: &'a [u8],
    },
    /// The payload (the last item).
    Payload(&'a [u8]),
}

/// The options or payload were not well-formed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed options: {0}")]
pub struct OptionsError(pub &'static str);

impl<'a> Datagram<'a> {
    /// The options in order, then the payload, decoded by `coap-message-implementations`.
    pub fn items(&self) -> impl Iterator<Item = Result<Item<'a>, OptionsError>> + 'a {
        OptPayloadReader::new(self.body).map(|i| match i {
            OptItem::Option { number, data } => Ok(Item::Option {
                number,
                value: data,
            }),
            OptItem::Payload(p) => Ok(Item::Payload(p)),
            OptItem::Error(e) => Err(OptionsError(e)),
        })
    }
}

/// Splits a datagram. Options are checked as [`Datagram::items`] walks them.
pub fn parse(datagram: &[u8]) -> Result<Datagram<'_>, UdpError> {
    let (head, rest) = datagram.split_at_checked(4).ok_or(UdpError::Truncated)?;
    let &[b0, code, m0, m1] = <&[u8; 4]>::try_from(head).map_err(|_| UdpError::Truncated)?;
    let version = b0 >> 6;
    if version != 1 {
        return Err(UdpError::Version(version));
    }
    let tkl = b0 & 0x0F;
    if usize::from(tkl) > MAX_TOKEN {
        return Err(UdpError::TokenLength(tkl));
    }
    let (token, tail) = rest
        .split_at_checked(usize::from(tkl))
        .ok_or(UdpError::Truncated)?;
    if code == 0 && (!token.is_empty() || !tail.is_empty()) {
        return Err(UdpError::EmptyWithContent);
    }
    Ok(Datagram {
        kind: MsgType::from_bits(b0 >> 4),
        code,
        mid: u16::from_be_bytes([m0, m1]),
        token,
        body: tail,
    })
}

/// Builds a datagram in `buf`: the header and token here, code, options and payload by `fill`
/// through `coap-message-implementations`. Returns the datagram's length.
pub fn build<F>(
    buf: &mut [u8],
    kind: MsgType,
    mid: u16,
    token: &[u8],
    fill: F,
) -> Result<usize, UdpError>
where
    F: FnOnce(&mut MessageMut<SliceBufferMut<'_>>) -> Result<(), WriteError>,
{
    let tkl = token.len();
    if tkl > MAX_TOKEN {
        return Err(UdpError::TokenLength(tkl as u8));
    }
    let (head, rest) = buf
        .split_at_mut_checked(4)
        .ok_or(UdpError::BufferTooSmall)?;
    let (tok, tail) = rest
        .split_at_mut_checked(tkl)
        .ok_or(UdpError::BufferTooSmall)?;
    tok.copy_from_slice(token);
    let (b0, rest) = head.split_first_mut().ok_or(UdpError::BufferTooSmall)?;
    let (code, mid_bytes) = rest.split_first_mut().ok_or(UdpError::BufferTooSmall)?;
    *b0 = (1 << 6) | (kind.bits() << 4) | tkl as u8;
    mid_bytes.copy_from_slice(&mid.to_be_bytes());
    let mut msg = MessageMut::new_in_slice(code, tail);
    fill(&mut msg).map_err(|_| UdpError::BufferTooSmall)?;
    let (used, _) = msg.finish();
    Ok(4 + tkl + used)
}

/// Builds an empty message (an ACK or RST with no response, or a CoAP ping).
pub fn build_empty(buf: &mut [u8], kind: MsgType, mid: u16) -> Result<usize, UdpError> {
    let out = buf.get_mut(..4).ok_or(UdpError::BufferTooSmall)?;
    out.copy_from_slice(&[
        (1 << 6) | (kind.bits() << 4),
        0,
        (mid >> 8) as u8,
        mid as u8,
    ]);
    Ok(4)
}
