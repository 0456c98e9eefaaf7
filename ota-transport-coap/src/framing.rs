//! A device's side of CoAP, sans-IO: frames what the state machine produced as CoAP requests
//! and turns responses back into `ota-core` messages and chunks.
//!
//! Check-ins and reports are confirmable POSTs carrying the `ota-core` message; chunk requests
//! become confirmable GETs of the image resource with a Block2 option (block size = the
//! manifest's chunk size), so the image can come from any CoAP server. A request the state
//! machine sends again goes out with the same message id and token, which is what RFC 7252 calls
//! a retransmission; with OSCORE it is sealed anew under a new sequence number and goes out as
//! a new message (same token), so no nonce is ever reused. A response to the send before the
//! latest (late, not lost) is still matched and opened, and a second response to a block
//! request still reaches the state machine (which frees the window slot that send held).
//! Separate responses are acknowledged.
//! A Block2 response is checked against the block asked for, and a changed ETag mid-download
//! (the resource changed) is refused.

use coap_message::MinimalWritableMessage as _;
use coap_message_implementations::inmemory::{MessageMut, SliceBufferMut, WriteError};
use heapless::{Deque, Vec};
use ota_core::device::{RecvError, Sent};
use ota_core::wire::{CheckInReply, Chunk, ImageId, Inbound};

use crate::block::Block;
use crate::client_security::Security;
use crate::resources::{self, code, opt};
use crate::udp::{self, Datagram, Item, MsgType, UdpError};

/// Exchanges a [`CoapFraming`] remembers by default, for matching responses and retransmitting
/// with the same id: room for the largest window (`ota_core::device::MAX_WINDOW`, 32) with a
/// check-in or report and late responses besides.
pub const EXCHANGES: usize = 40;

/// The OSCORE sends of an exchange: the latest one's sequence number, and the send before it.
/// A resend is sealed anew under a new message id, and the response to the send before may
/// still come (it was late, not lost); it can only be opened with that send's sequence number
/// (the request's partial IV is in the response's additional data, RFC 8613 section 5.4).
/// Eight bytes, so an exchange stays 24.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sealed {
    /// The latest send's sequence number, big-endian (at most 40 bits, RFC 8613 section
    /// 3.3); all ones before any send.
    seq: [u8; 5],
    /// How many sequence numbers back the send before it was (0: none).
    back: u8,
    /// The message id of the send before it.
    prev_mid: u16,
}

impl Sealed {
    /// Not sealed (plain CoAP, or not sent yet).
    const NONE: Self = Self {
        seq: [0xff; 5],
        back: 0,
        prev_mid: 0,
    };

    /// The latest send's sequence number.
    fn latest(&self) -> Option<u64> {
        (self.seq != Self::NONE.seq)
            .then(|| self.seq.iter().fold(0u64, |n, &b| (n << 8) | u64::from(b)))
    }

    /// After a send sealed with `seq` under a new message id; `mid_before` was the latest
    /// send's.
    fn resealed(self, seq: u64, mid_before: u16) -> Self {
        let bytes = seq.to_be_bytes();
        let mut next = Self {
            seq: [bytes[3], bytes[4], bytes[5], bytes[6], bytes[7]],
            back: 0,
            prev_mid: 0,
        };
        if let Some(back) = self
            .latest()
            .and_then(|before| u8::try_from(seq.checked_sub(before)?).ok())
        {
            next.back = back;
            next.prev_mid = mid_before;
        }
        next
    }

    /// The sequence number of the send a piggybacked response with message id `mid` answers;
    /// `latest_mid` is the latest send's.
    fn for_mid(&self, latest_mid: u16, mid: u16) -> Option<u64> {
        let latest = self.latest()?;
        if mid == latest_mid {
            Some(latest)
        } else if self.back != 0 && mid == self.prev_mid {
            latest.checked_sub(u64::from(self.back))
        } else {
            None
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    CheckIn,
    Report,
    Block {
        image: ImageId,
        offset: u32,
    },
    /// A block whose response already arrived, kept until its room is needed so that the
    /// response to another send of the request still reaches the state machine (see
    /// [`CoapFraming::parse`]). A variant, not a flag, so an exchange stays 24 bytes.
    Answered {
        image: ImageId,
        offset: u32,
    },
}

#[derive(Debug, Clone, Copy)]
struct Exchange {
    key: Key,
    mid: u16,
    token: [u8; 2],
    /// Its OSCORE sends.
    sealed: Sealed,
}

/// Why a datagram was not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// Not a CoAP message.
    #[error(transparent)]
    Udp(#[from] UdpError),
    /// Malformed options.
    #[error("malformed CoAP options")]
    Options,
    /// A response to no request in flight (late, duplicate or spoofed).
    #[error("response matches no request in flight")]
    Unmatched,
    /// The server answered with an error code (`class << 5 | detail`).
    #[error("server answered {}.{:02}", .0 >> 5, .0 & 31)]
    Response(u8),
    /// A block response for another block than the one asked for.
    #[error("block response does not match the request")]
    WrongBlock,
    /// The ETag changed during the download: the resource is not the image being fetched.
    #[error("ETag changed during the download")]
    EtagMismatch,
    /// The state machine refused the content.
    #[error(transparent)]
    Device(#[from] RecvError),
    /// A response to an OSCORE request came unprotected (and was no error response).
    #[error("unprotected response to a protected request")]
    Unprotected,
    /// A protected response did not open.
    #[cfg(feature = "oscore")]
    #[error("OSCORE: {0}")]
    Oscore(#[from] ota_oscore::Error),
}

/// Counters of CoAP datagrams (bytes on the link at the application layer).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Datagrams sent.
    pub datagrams_sent: u32,
    /// Bytes sent.
    pub bytes_sent: u64,
    /// Datagrams received.
    pub datagrams_received: u32,
    /// Bytes received.
    pub bytes_received: u64,
    /// Requests sent a second time, back to back (counted in `datagrams_sent` too).
    pub copies_sent: u32,
}

/// What a response carried for the state machine.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// An `ota-core` message (a check-in reply).
    Message(&'a [u8]),
    /// A chunk, from a Block2 response.
    Chunk(Chunk<'a>),
    /// Nothing for it (an ACK, a reply to a report).
    Nothing,
}

/// What a request is, before it is framed (plain or sealed).
enum Request<'a> {
    Post {
        seg: &'a [u8],
        payload: &'a [u8],
    },
    Block {
        id: ([u8; 10], usize),
        block: ([u8; 3], usize),
    },
}

impl Request<'_> {
    fn write(&self, m: &mut MessageMut<SliceBufferMut<'_>>) -> Result<(), WriteError> {
        match self {
            Request::Post { seg, payload } => {
                m.set_code(code::POST);
                m.add_option(opt::URI_PATH, resources::ROOT)?;
                m.add_option(opt::URI_PATH, seg)?;
                m.set_payload(payload)
            }
            Request::Block { id, block } => {
                m.set_code(code::GET);
                m.add_option(opt::URI_PATH, resources::ROOT)?;
                m.add_option(opt::URI_PATH, resources::IMAGE)?;
                m.add_option(opt::URI_PATH, id.0.get(id.0.len() - id.1..).unwrap_or(&[]))?;
                m.add_option(opt::BLOCK2, block.0.get(..block.1).unwrap_or(&[]))
            }
        }
    }
}

/// A device's CoAP state: message ids, tokens, exchanges in flight, acknowledgements owed,
/// the ETag of the image, OSCORE.
///
/// `X` is how many exchanges it remembers (24 bytes each), answered blocks among them (a
/// second response to a block request still reaches the state machine). When they are all in
/// use the oldest answered one is forgotten, or else the oldest, and a late response to it is
/// dropped as unmatched (the state machine fetches that chunk again). Give it at least the
/// device's window plus two; twice the window leaves room for late responses. The default,
/// [`EXCHANGES`], serves any window.
pub struct CoapFraming<const X: usize = EXCHANGES> {
    next_mid: u16,
    next_token: u16,
    exchanges: Vec<Exchange, X>,
    acks: Deque<u16, 8>,
    /// The ETag of the image being fetched, as first seen: a later block with another ETag
    /// means the resource changed under the download (RFC 7959 section 2.4).
    etag: Option<(ImageId, Vec<u8, 8>)>,
    security: Option<Security>,
    stats: ClientStats,
    /// Whether the server drops copies of a request ([`opt::DROPS_COPIES`]), as the last
    /// check-in response that offered a download said.
    drops_copies: Option<bool>,
}

impl CoapFraming {
    /// `seed` should differ per device and boot (a hardware random number): it picks the first
    /// message id and token. It remembers [`EXCHANGES`] exchanges, enough for any window.
    pub fn new(seed: u32) -> Self {
        Self::with_exchanges(seed)
    }
}

impl<const X: usize> CoapFraming<X> {
    /// [`CoapFraming::new`] remembering `X` exchanges.
    pub fn with_exchanges(seed: u32) -> Self {
        const {
            assert!(
                X >= 2,
                "a CoapFraming needs room for at least two exchanges"
            )
        };
        Self {
            next_mid: seed as u16,
            next_token: (seed >> 16) as u16,
            exchanges: Vec::new(),
            acks: Deque::new(),
            etag: None,
            security: None,
            stats: ClientStats::default(),
            drops_copies: None,
        }
    }

    /// Protects every request with OSCORE under `ctx` (the device's own context, as
    /// provisioned). Before the first request, give it the stored sequence reservation
    /// ([`Self::restore_sequence`]).
    #[cfg(feature = "oscore")]
    pub fn secure(mut self, ctx: ota_oscore::SecurityContext) -> Self {
        self.security = Some(Security::new(ctx));
        self
    }

    /// True if requests are protected with OSCORE.
    pub fn is_secure(&self) -> bool {
        self.security.is_some()
    }

    /// Starts from the sequence reservation stored last (`CounterStore::load_counter`).
    pub fn restore_sequence(&mut self, stored: u64) {
        if let Some(s) = self.security.as_mut() {
            s.restore(stored);
        }
    }

    /// A reservation to store before the next request can be sealed, if one is due: store it
    /// (`CounterStore::store_counter`), then call [`Self::sequence_reserved`].
    pub fn sequence_reservation(&self) -> Option<u64> {
        self.security.as_ref()?.reservation()
    }

    /// Records that `value` from [`Self::sequence_reservation`] is stored.
    pub fn sequence_reserved(&mut self, value: u64) {
        if let Some(s) = self.security.as_mut() {
            s.reserved(value);
        }
    }

    /// The exact next sequence number, to store before sleep so the numbers stay short.
    pub fn settle_sequence(&mut self) -> Option<u64> {
        self.security.as_mut().map(Security::settle)
    }

    /// True if a request can be framed now (with OSCORE: a sequence number is reserved).
    pub fn can_send(&self) -> bool {
        self.security.as_ref().is_none_or(|s| s.available() > 0)
    }

    /// Datagram counters.
    pub fn stats(&self) -> &ClientStats {
        &self.stats
    }

    /// Whether the server drops the second copy of a request sent twice
    /// ([`opt::DROPS_COPIES`]), as the last check-in response that offered a download said
    /// (`None` before one came): the device sends nothing twice unless it does
    /// ([`Device::server_drops_copies`]); another server would answer both copies.
    ///
    /// [`Device::server_drops_copies`]: ota_core::device::Device::server_drops_copies
    pub fn drops_copies(&self) -> Option<bool> {
        self.drops_copies
    }

    /// Counts a second send of the `n`-byte datagram just framed ([`Transmit::twice`]): the
    /// same bytes, which the server takes as one request.
    ///
    /// [`Transmit::twice`]: ota_core::device::Transmit::twice
    pub fn count_copy(&mut self, n: usize) {
        self.stats.datagrams_sent += 1;
        self.stats.bytes_sent += n as u64;
        self.stats.copies_sent += 1;
    }

    /// An acknowledgement owed for a separate response, built in `buf`.
    pub fn poll_ack(&mut self, buf: &mut [u8]) -> Option<usize> {
        let mid = self.acks.pop_front()?;
        let n = udp::build_empty(buf, MsgType::Ack, mid).ok()?;
        self.stats.datagrams_sent += 1;
        self.stats.bytes_sent += n as u64;
        Some(n)
    }

    /// Frames `msg` (what the state machine produced, `what`) as a CoAP request in `buf`;
    /// `None` if it cannot be framed (no sequence number reserved, a block size CoAP cannot
    /// carry).
    pub fn frame(&mut self, what: Sent, msg: &[u8], buf: &mut [u8]) -> Option<usize> {
        let (key, request) = match what {
            Sent::CheckIn => (
                Key::CheckIn,
                Request::Post {
                    seg: resources::CHECKIN,
                    payload: msg,
                },
            ),
            Sent::Report => (
                Key::Report,
                Request::Post {
                    seg: resources::REPORT,
                    payload: msg,
                },
            ),
            Sent::ChunkRequest {
                image,
                offset,
                chunk_size,
                ..
            } => {
                // Block size: the manifest's chunk size, a power of two for CoAP; the last
                // chunk of an image is short but has the same block number.
                let size = u32::from(chunk_size);
                let block = Block::new(offset / size, false, size).ok()?;
                let mut b = [0u8; 3];
                let blen = block.encode(&mut b);
                let mut id = [0u8; 10];
                let idlen = resources::image_segment(image, &mut id).len();
                (
                    Key::Block { image, offset },
                    Request::Block {
                        id: (id, idlen),
                        block: (b, blen),
                    },
                )
            }
        };
        let (i, before) = exchange_for(
            &mut self.exchanges,
            &mut self.next_mid,
            &mut self.next_token,
            key,
        )?;
        let ex = *self.exchanges.get(i)?;
        let built = match self.security.as_mut() {
            None => udp::build(buf, MsgType::Con, ex.mid, &ex.token, |m| request.write(m)),
            Some(sec) => {
                let (seq, built) = sec.seal(buf, (ex.mid, &ex.token), |m| request.write(m))?;
                if let Some(e) = self.exchanges.get_mut(i) {
                    e.sealed = match before {
                        Some(mid) => e.sealed.resealed(seq, mid),
                        None => Sealed::NONE.resealed(seq, e.mid),
                    };
                }
                built
            }
        };
        let n = built.ok()?;
        self.stats.datagrams_sent += 1;
        self.stats.bytes_sent += n as u64;
        Some(n)
    }

    /// Reads one received datagram (a protected response is decrypted in place): what it
    /// carries for the state machine.
    pub fn parse<'a>(&mut self, datagram: &'a mut [u8]) -> Result<Parsed<'a>, ClientError> {
        self.stats.datagrams_received += 1;
        self.stats.bytes_received += datagram.len() as u64;
        let d = udp::parse(datagram)?;
        if d.code == code::EMPTY {
            match d.kind {
                // The request got through; a separate response follows.
                MsgType::Ack => {}
                // The server refused the message: forget it; the state machine retries.
                MsgType::Rst => self.exchanges.retain(|e| e.mid != d.mid),
                _ => {}
            }
            return Ok(Parsed::Nothing);
        }
        if d.code >> 5 < 2 {
            return Err(ClientError::Unmatched); // a request: devices serve none
        }
        if d.kind == MsgType::Con {
            // A separate response must be acknowledged whatever it says.
            if self.acks.is_full() {
                let _ = self.acks.pop_front();
            }
            let _ = self.acks.push_back(d.mid);
        }
        let pos = self
            .exchanges
            .iter()
            .position(|e| {
                // Each send goes under a new message id: without OSCORE (where nothing is
                // authenticated anyway) the token names the exchange, with it the message
                // ids of the last two sends, whose sequence numbers open the response.
                e.token == d.token
                    && (d.kind != MsgType::Ack
                        || e.mid == d.mid
                        || self.security.is_none()
                        || e.sealed.for_mid(e.mid, d.mid).is_some())
            })
            .ok_or(ClientError::Unmatched)?;
        let ex = self
            .exchanges
            .get(pos)
            .copied()
            .ok_or(ClientError::Unmatched)?;
        let (kind, mid, outer_code) = (d.kind, d.mid, d.code);
        let token_at = 4..4 + d.token.len();
        // Where the message to act on is: the datagram itself, or its decrypted inner message.
        // The send it answers: a piggybacked response names it by message id; a separate one
        // is taken for the latest.
        let seq = if kind == MsgType::Ack {
            ex.sealed.for_mid(ex.mid, mid)
        } else {
            ex.sealed.latest()
        };
        let (code, body) = match (seq, self.security.as_ref()) {
            (Some(seq), Some(sec)) => {
                match crate::client_security::outer(&d, datagram.len())? {
                    Some(p) => sec.open(seq, p, datagram)?,
                    None => {
                        if outer_code >> 5 != 2 {
                            // OSCORE errors come back unprotected (no context, replay), so
                            // anyone could have sent this one: the exchange stays for the
                            // protected answer or the timer. (A request's second copy that a
                            // busy server let through is refused as a replay while the first
                            // is answered.)
                            return Err(ClientError::Response(outer_code));
                        }
                        return Err(ClientError::Unprotected);
                    }
                }
            }
            _ => (outer_code, token_at.end..datagram.len()),
        };
        let datagram: &'a [u8] = datagram;
        let d = Datagram {
            kind,
            code,
            mid,
            token: datagram.get(token_at).unwrap_or(&[]),
            body: datagram.get(body).ok_or(ClientError::Options)?,
        };
        match ex.key {
            // A copy of the request, or an earlier send thought lost, may still be answered:
            // that chunk goes to the state machine too, which counts it a duplicate and frees
            // the slot of its window the send held (dropped here as unmatched, the slot stayed
            // taken until the send's timer).
            Key::Block { image, offset } => {
                if let Some(e) = self.exchanges.get_mut(pos) {
                    e.key = Key::Answered { image, offset };
                }
            }
            Key::Answered { .. } => {}
            Key::CheckIn | Key::Report => {
                self.exchanges.swap_remove(pos);
            }
        }
        if d.code >> 5 != 2 {
            return Err(ClientError::Response(d.code));
        }
        let mut block = None;
        let mut etag = None;
        let mut payload: &'a [u8] = &[];
        let mut copies_option = false;
        for item in d.items() {
            match item.map_err(|_| ClientError::Options)? {
                Item::Option {
                    number: opt::DROPS_COPIES,
                    ..
                } => copies_option = true,
                Item::Option {
                    number: opt::BLOCK2,
                    value,
                } => {
                    block = Some(Block::decode(value).map_err(|_| ClientError::Options)?);
                }
                Item::Option {
                    number: opt::ETAG,
                    value,
                } => etag = Some(value),
                Item::Option { .. } => {}
                Item::Payload(p) => payload = p,
            }
        }
        match ex.key {
            Key::CheckIn => {
                // The server says with each offer whether it drops copies; its silence on an
                // offer says it does not (another server, or an older one).
                if let Ok(Inbound::CheckInReply(CheckInReply::Update { .. })) =
                    ota_core::wire::decode_inbound(payload)
                {
                    self.drops_copies = Some(copies_option);
                }
                Ok(Parsed::Message(payload))
            }
            Key::Report => Ok(Parsed::Nothing),
            Key::Block { image, offset } | Key::Answered { image, offset } => {
                // A server that ignored Block2 sends the resource from its start.
                match block {
                    Some(b) if b.offset() == offset => {}
                    None if offset == 0 => {}
                    _ => return Err(ClientError::WrongBlock),
                }
                if let Some(tag) = etag {
                    match &self.etag {
                        Some((id, seen)) if *id == image && seen.as_slice() != tag => {
                            return Err(ClientError::EtagMismatch);
                        }
                        Some((id, _)) if *id == image => {}
                        _ => self.etag = Vec::from_slice(tag).ok().map(|t| (image, t)),
                    }
                }
                Ok(Parsed::Chunk(Chunk::new(image, offset, payload)))
            }
        }
    }
}

/// The exchange for `key`: a retransmission goes under a new message id with the same token
/// (a protected one is sealed anew); a new exchange otherwise. Only a copy sent back to back
/// ([`Transmit::twice`](ota_core::device::Transmit::twice)) repeats a message id, and the
/// server drops it by that id: a resend must not look like a copy.
/// Returns its index and, if it was already there, the message id of its previous send; `None`
/// if there is no room at all (`X` = 0). One search per send.
fn exchange_for<const X: usize>(
    exchanges: &mut Vec<Exchange, X>,
    next_mid: &mut u16,
    next_token: &mut u16,
    key: Key,
) -> Option<(usize, Option<u16>)> {
    if let Some((i, ex)) = exchanges.iter_mut().enumerate().find(|(_, e)| e.key == key) {
        let before = ex.mid;
        *next_mid = next_mid.wrapping_add(1);
        ex.mid = *next_mid;
        return Some((i, Some(before)));
    }
    *next_mid = next_mid.wrapping_add(1);
    *next_token = next_token.wrapping_add(1);
    let ex = Exchange {
        key,
        mid: *next_mid,
        token: next_token.to_be_bytes(),
        sealed: Sealed::NONE,
    };
    if exchanges.is_full() {
        // The oldest answered exchange makes room first, then the oldest in flight.
        let oldest = exchanges
            .iter()
            .position(|e| matches!(e.key, Key::Answered { .. }))
            .unwrap_or(0);
        exchanges.remove(oldest);
    }
    exchanges.push(ex).ok()?;
    Some((exchanges.len() - 1, None))
}

#[cfg(test)]
mod tests {
    /// The exchange's size, as [`super::CoapFraming`]'s docs give it: an answered block is a
    /// variant of its key, not a flag beside it (which padded every exchange to 32 bytes).
    #[test]
    fn an_exchange_takes_24_bytes() {
        assert_eq!(core::mem::size_of::<super::Exchange>(), 24);
    }
}
