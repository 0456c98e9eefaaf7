//! The other end of an in-memory link: a minimal CoAP server holding one signed release (what
//! `ota-server` would answer), plus a simulated clock. It drops every ninth response, so the
//! firmware's retransmissions are exercised too.

use core::cell::Cell;

use coap_message::MinimalWritableMessage as _;
use heapless::{Deque, Vec};
use ota_core::time::Instant;
use ota_core::wire::{self, Message};
use ota_transport_coap::block::Block;
use ota_transport_coap::resources::{code, opt};
use ota_transport_coap::socket::{Clock, DatagramSocket};
use ota_transport_coap::udp::{self, Item, MsgType};

use crate::fixture::IMAGE;

/// Milliseconds since reset, advanced by the link.
pub struct SimClock(pub Cell<u64>);

impl Clock for SimClock {
    fn now(&self) -> Instant {
        Instant(self.0.get())
    }
}

/// Counters of the link.
#[derive(Default, Clone, Copy)]
pub struct LinkStats {
    /// Requests received.
    pub requests: u32,
    /// Responses the link dropped.
    pub dropped: u32,
    /// Bytes both ways.
    pub bytes: u32,
}

/// The in-memory server and link.
pub struct Peer<'c> {
    clock: &'c SimClock,
    queue: Deque<Vec<u8, 600>, 8>,
    /// Counters.
    pub stats: LinkStats,
}

impl<'c> Peer<'c> {
    /// A peer sharing `clock` with the firmware.
    pub fn new(clock: &'c SimClock) -> Self {
        Self {
            clock,
            queue: Deque::new(),
            stats: LinkStats::default(),
        }
    }

    fn respond(&self, d: &[u8], out: &mut [u8]) -> Option<usize> {
        let req = udp::parse(d).ok()?;
        let mut path: Vec<&[u8], 3> = Vec::new();
        let mut block = None;
        for item in req.items() {
            match item.ok()? {
                Item::Option {
                    number: opt::URI_PATH,
                    value,
                } => path.push(value).ok()?,
                Item::Option {
                    number: opt::BLOCK2,
                    value,
                } => block = Some(Block::decode(value).ok()?),
                _ => {}
            }
        }
        match (path.as_slice(), req.code) {
            ([b"ota", b"c"], code::POST) => {
                let mut payload = [0u8; 256];
                let reply = Message::CheckInReply(crate::offer());
                let n = wire::encode(&reply, &mut payload).ok()?;
                udp::build(out, MsgType::Ack, req.mid, req.token, |m| {
                    m.set_code(code::CHANGED);
                    m.set_payload(payload.get(..n).unwrap_or(&[]))
                })
                .ok()
            }
            ([b"ota", b"r"], code::POST) => {
                udp::build(out, MsgType::Ack, req.mid, req.token, |m| {
                    m.set_code(code::CHANGED);
                    Ok(())
                })
                .ok()
            }
            ([b"ota", b"i", b"1"], code::GET) => {
                let b = block?;
                let start = b.offset() as usize;
                let end = (start + b.size() as usize).min(IMAGE.len());
                let data = IMAGE.get(start..end)?;
                let reply = Block {
                    more: end < IMAGE.len(),
                    ..b
                };
                let mut v = [0u8; 3];
                let vlen = reply.encode(&mut v);
                udp::build(out, MsgType::Ack, req.mid, req.token, |m| {
                    m.set_code(code::CONTENT);
                    m.add_option(opt::BLOCK2, v.get(..vlen).unwrap_or(&[]))?;
                    m.set_payload(data)
                })
                .ok()
            }
            _ => None,
        }
    }
}

impl DatagramSocket for Peer<'_> {
    type Error = ();

    fn send(&mut self, datagram: &[u8]) -> Result<(), ()> {
        self.stats.requests += 1;
        self.stats.bytes += datagram.len() as u32;
        let mut out = [0u8; 600];
        let Some(n) = self.respond(datagram, &mut out) else {
            return Ok(());
        };
        if self.stats.requests % 9 == 0 {
            self.stats.dropped += 1;
            return Ok(());
        }
        let v = Vec::from_slice(out.get(..n).unwrap_or(&[])).map_err(|_| ())?;
        self.queue.push_back(v).map_err(|_| ())
    }

    fn recv(&mut self, buf: &mut [u8], timeout_ms: u32) -> Result<Option<usize>, ()> {
        match self.queue.pop_front() {
            Some(d) => {
                // A 200 ms round trip per datagram, as on a slow cellular link.
                self.clock.0.set(self.clock.0.get() + 200);
                self.stats.bytes += d.len() as u32;
                let dst = buf.get_mut(..d.len()).ok_or(())?;
                dst.copy_from_slice(&d);
                Ok(Some(d.len()))
            }
            None => {
                self.clock
                    .0
                    .set(self.clock.0.get() + u64::from(timeout_ms.max(1)));
                Ok(None)
            }
        }
    }
}
