//! The device side: [`CoapClient`] carries an `ota-core` [`Device`] over CoAP, sans-IO.
//!
//! Check-ins and reports are confirmable POSTs carrying the `ota-core` message; chunk requests
//! become confirmable GETs of the image resource with a Block2 option (block size = the
//! manifest's chunk size), so the image can come from any CoAP server. Retransmission is the
//! device state machine's: a request the state machine sends again goes out with the same
//! message id and token, which is what RFC 7252 calls a retransmission; the timeouts start at
//! ACK_TIMEOUT (2 s) times a random factor in [1, 1.5) and double up to MAX_RETRANSMIT (4)
//! retransmissions. Once round trips are measured the timeout follows them (as CoCoA does), and
//! the number of requests in flight is the device's window (RFC 7252's NSTART, raised by
//! configuration).
//!
//! Alloc-free: options and payload are written and parsed with `coap-message-implementations`.

use coap_message::MinimalWritableMessage as _;
use heapless::{Deque, Vec};
use ota_core::device::{Device, DeviceConfig, RecvError};
use ota_core::manifest::Verifier;
use ota_core::time::Instant;
use ota_core::wire::{self, Chunk, ImageId, Message};

use crate::block::Block;
use crate::resources::{self, code, opt};
use crate::udp::{self, Item, MsgType, UdpError};

/// Most exchanges remembered for matching responses and retransmitting with the same id.
const EXCHANGES: usize = 40;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    CheckIn,
    Report,
    Block { image: ImageId, offset: u32 },
}

#[derive(Debug, Clone, Copy)]
struct Exchange {
    key: Key,
    mid: u16,
    token: [u8; 2],
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
}

/// Counters of CoAP datagrams (radio bytes at the application layer).
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
}

/// An `ota-core` device speaking CoAP.
pub struct CoapClient<V, const CHUNK: usize = 1024> {
    dev: Device<V, CHUNK>,
    next_mid: u16,
    next_token: u16,
    exchanges: Vec<Exchange, EXCHANGES>,
    acks: Deque<u16, 8>,
    /// The ETag of the image being fetched, as first seen: a later block with another ETag
    /// means the resource changed under the download (RFC 7959 section 2.4).
    etag: Option<(ImageId, Vec<u8, 8>)>,
    scratch: [u8; 256],
    stats: ClientStats,
}

impl<V: Verifier, const CHUNK: usize> CoapClient<V, CHUNK> {
    /// A client around a new device. `seed` should differ per device and boot (a hardware
    /// random number); it picks the first message id and token and the random factor of the
    /// first timeout.
    pub fn new(mut config: DeviceConfig, verifier: V, seed: u32) -> Self {
        // RFC 7252: ACK_TIMEOUT 2 s, ACK_RANDOM_FACTOR 1.5, MAX_RETRANSMIT 4.
        config.initial_rto_ms = 2000 + seed % 1000;
        config.max_attempts = 5;
        Self {
            dev: Device::new(config, verifier),
            next_mid: seed as u16,
            next_token: (seed >> 16) as u16,
            exchanges: Vec::new(),
            acks: Deque::new(),
            etag: None,
            scratch: [0; 256],
            stats: ClientStats::default(),
        }
    }

    /// The state machine.
    pub fn device(&self) -> &Device<V, CHUNK> {
        &self.dev
    }

    /// The state machine, for restore, wake, timeouts, storage and events.
    pub fn device_mut(&mut self) -> &mut Device<V, CHUNK> {
        &mut self.dev
    }

    /// Datagram counters.
    pub fn stats(&self) -> &ClientStats {
        &self.stats
    }

    /// The next datagram to send at `now`, built in `buf`.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        let n = self.next_datagram(now, buf)?;
        self.stats.datagrams_sent += 1;
        self.stats.bytes_sent += n as u64;
        Some(n)
    }

    fn next_datagram(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        if let Some(mid) = self.acks.pop_front() {
            let n = udp::build_empty(buf, MsgType::Ack, mid).ok()?;
            self.dev.add_link_bytes(n as i64, 0);
            return Some(n);
        }
        loop {
            let n = self.dev.poll_transmit(now, &mut self.scratch)?;
            let key = match wire::decode(self.scratch.get(..n)?) {
                Ok(Message::CheckIn(_)) => Key::CheckIn,
                Ok(Message::Report(_)) => Key::Report,
                Ok(Message::ChunkRequest(r)) => Key::Block {
                    image: r.image,
                    offset: r.offset,
                },
                _ => continue,
            };
            let ex = self.exchange_for(key);
            let payload = self.scratch.get(..n)?;
            let built = match key {
                Key::CheckIn | Key::Report => {
                    let seg = if key == Key::CheckIn {
                        resources::CHECKIN
                    } else {
                        resources::REPORT
                    };
                    udp::build(buf, MsgType::Con, ex.mid, &ex.token, |m| {
                        m.set_code(code::POST);
                        m.add_option(opt::URI_PATH, resources::ROOT)?;
                        m.add_option(opt::URI_PATH, seg)?;
                        m.set_payload(payload)
                    })
                }
                Key::Block { image, offset } => {
                    // Block size: the manifest's chunk size, which must be a power of two for
                    // CoAP; the last chunk of an image is short but has the same block number.
                    let size = u32::from(self.dev.chunk_size()?);
                    let Ok(block) = Block::new(offset / size, false, size) else {
                        continue;
                    };
                    let mut b = [0u8; 3];
                    let blen = block.encode(&mut b);
                    let mut id = [0u8; 10];
                    let seg = resources::image_segment(image, &mut id);
                    udp::build(buf, MsgType::Con, ex.mid, &ex.token, |m| {
                        m.set_code(code::GET);
                        m.add_option(opt::URI_PATH, resources::ROOT)?;
                        m.add_option(opt::URI_PATH, resources::IMAGE)?;
                        m.add_option(opt::URI_PATH, seg)?;
                        m.add_option(opt::BLOCK2, b.get(..blen).unwrap_or(&[]))
                    })
                }
            };
            let n_coap = built.ok()?;
            self.dev.add_link_bytes(n_coap as i64 - n as i64, 0);
            return Some(n_coap);
        }
    }

    /// The exchange for `key`: the same message id and token if the request is a
    /// retransmission, a new one otherwise.
    fn exchange_for(&mut self, key: Key) -> Exchange {
        if let Some(ex) = self.exchanges.iter().find(|e| e.key == key) {
            return *ex;
        }
        self.next_mid = self.next_mid.wrapping_add(1);
        self.next_token = self.next_token.wrapping_add(1);
        let ex = Exchange {
            key,
            mid: self.next_mid,
            token: self.next_token.to_be_bytes(),
        };
        if self.exchanges.is_full() {
            self.exchanges.remove(0);
        }
        let _ = self.exchanges.push(ex);
        ex
    }

    /// Feeds one received datagram.
    pub fn handle_datagram(&mut self, now: Instant, datagram: &[u8]) -> Result<(), ClientError> {
        self.stats.datagrams_received += 1;
        self.stats.bytes_received += datagram.len() as u64;
        // Every received byte counts against the budget; what the state machine is handed below
        // it counts itself, so that part is taken off again there.
        self.dev.add_link_bytes(0, datagram.len() as i64);
        let d = udp::parse(datagram)?;
        if d.code == code::EMPTY {
            match d.kind {
                // The request got through; a separate response follows.
                MsgType::Ack => {}
                // The server refused the message: forget it; the state machine retries.
                MsgType::Rst => self.exchanges.retain(|e| e.mid != d.mid),
                _ => {}
            }
            return Ok(());
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
            .position(|e| e.token == d.token && (d.kind != MsgType::Ack || e.mid == d.mid))
            .ok_or(ClientError::Unmatched)?;
        let ex = self.exchanges.swap_remove(pos);
        if d.code >> 5 != 2 {
            return Err(ClientError::Response(d.code));
        }
        let mut block = None;
        let mut etag = None;
        let mut payload: &[u8] = &[];
        for item in d.items() {
            match item.map_err(|_| ClientError::Options)? {
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
        // The state machine counts what it is handed; that part was counted above already.
        let handed = -(payload.len() as i64);
        match ex.key {
            Key::CheckIn => {
                self.dev.add_link_bytes(0, handed);
                Ok(self.dev.handle_message(now, payload)?)
            }
            Key::Report => Ok(()),
            Key::Block { image, offset } => {
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
                let chunk = Chunk::new(image, offset, payload);
                self.dev.add_link_bytes(0, handed);
                Ok(self.dev.handle_chunk(now, &chunk)?)
            }
        }
    }
}
