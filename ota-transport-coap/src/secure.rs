//! OSCORE (RFC 8613) on this transport's messages: every request a device sends is sealed under
//! its own security context, so the server knows which device speaks without a handshake.
//!
//! | | outer message (seen on the air) | inner message (encrypted) |
//! |---|---|---|
//! | request | CON, code POST, OSCORE option (partial IV + kid), ciphertext | GET or POST, Uri-Path, Block2, payload |
//! | response | ACK, code 2.04, empty OSCORE option, ciphertext | 2.05 or 2.04, ETag, Block2, Size2, payload |
//!
//! Cost on the air: 12 bytes per request plus the partial IV and kid (16 for sequence numbers
//! and kids below 65 536), 11 per response. Errors from OSCORE processing (no context, does not
//! open, replay) come back unprotected, as RFC 8613 section 8.2 says.

use coap_message_implementations::inmemory::{MessageMut, SliceBufferMut, WriteError};
use ota_oscore::option::{OscoreOption, MAX_OPTION};

use crate::resources::opt;
use crate::udp::{Datagram, Item, OptionsError, UdpError};

/// Longest inner request a device builds (check-in or report payload, options, tag).
pub const MAX_INNER_REQUEST: usize = 320;

/// Builds an inner message (code byte, options, payload) into `buf` with `fill`; returns its
/// length.
pub fn build_inner<F>(buf: &mut [u8], fill: F) -> Result<usize, UdpError>
where
    F: FnOnce(&mut MessageMut<SliceBufferMut<'_>>) -> Result<(), WriteError>,
{
    let (code, tail) = buf.split_first_mut().ok_or(UdpError::BufferTooSmall)?;
    let mut msg = MessageMut::new_in_slice(code, tail);
    fill(&mut msg).map_err(|_| UdpError::BufferTooSmall)?;
    let (used, _) = msg.finish();
    Ok(1 + used)
}

/// The inner message of an opened OSCORE message (`plain`: code byte, options, payload), seen
/// as a datagram with the outer message's header.
pub fn inner<'a>(outer: &Datagram<'_>, token: &'a [u8], plain: &'a [u8]) -> Option<Datagram<'a>> {
    let (&code, body) = plain.split_first()?;
    Some(Datagram {
        kind: outer.kind,
        code,
        mid: outer.mid,
        token,
        body,
    })
}

/// Why an outer message could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OuterError {
    /// Its options are malformed.
    #[error(transparent)]
    Options(#[from] OptionsError),
    /// Its OSCORE option is malformed.
    #[error(transparent)]
    Oscore(#[from] ota_oscore::Error),
}

/// The OSCORE option of an outer message and where its payload starts in the datagram, if the
/// message is protected.
pub fn outer(d: &Datagram<'_>, datagram_len: usize) -> Result<Option<Protected>, OuterError> {
    let mut option = None;
    let mut payload_len = 0;
    for item in d.items() {
        match item? {
            Item::Option {
                number: opt::OSCORE,
                value,
            } => option = Some(OscoreOption::decode(value)?),
            Item::Option { .. } => {}
            Item::Payload(p) => payload_len = p.len(),
        }
    }
    Ok(option.map(|option| Protected {
        option,
        payload_at: datagram_len - payload_len,
        payload_len,
    }))
}

/// Where the ciphertext of a protected message is.
#[derive(Debug, Clone)]
pub struct Protected {
    /// Its OSCORE option.
    pub option: OscoreOption,
    /// Offset of the payload (the ciphertext) in the datagram.
    pub payload_at: usize,
    /// Its length.
    pub payload_len: usize,
}

/// Encodes an OSCORE option value.
pub fn option_bytes(o: &OscoreOption) -> ([u8; MAX_OPTION], usize) {
    let mut out = [0u8; MAX_OPTION];
    let n = o.encode(&mut out);
    (out, n)
}
