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
use ota_core::runtime::block::BlockingClock;
use ota_transport_coap::link::DatagramSocket;
use ota_transport_coap::udp::{self, Item, MsgType};

use crate::fixture::IMAGE;

/// Milliseconds since reset, advanced by the link.
pub struct SimClock(pub Cell<u64>);

impl BlockingClock for SimClock {
    fn now(&self) -> Instant {
        Instant(self.0.get())
    }

    fn delay_until(&self, t: Instant) {
        self.0.set(self.0.get().max(t.0));
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
        #[cfg(feature = "oscore")]
        if let Some(p) = ota_transport_coap::secure::outer(&req, d.len()).ok()? {
            // Open the request under the device's context, answer the inner request, seal.
            let ctx = crate::oscore_context(false);
            let mut inner = [0u8; 320];
            let cipher = d.get(p.payload_at..)?;
            inner.get_mut(..cipher.len())?.copy_from_slice(cipher);
            let (id, n) = ctx.open_request(&p.option, &mut inner, cipher.len()).ok()?;
            let inner_req = ota_transport_coap::secure::inner(&req, req.token, inner.get(..n)?)?;
            let mut payload = [0u8; 256];
            let reply = self.answer(&inner_req, &mut payload)?;
            let mut sealed = [0u8; 600];
            let len = ota_transport_coap::secure::build_inner(&mut sealed, |m| reply.write(m)).ok()?;
            let len = ctx.seal_response(&id, &mut sealed, len).ok()?;
            return udp::build(out, MsgType::Ack, req.mid, req.token, |m| {
                m.set_code(code::CHANGED);
                m.add_option(opt::OSCORE, &[])?;
                m.set_payload(sealed.get(..len).unwrap_or(&[]))
            })
            .ok();
        }
        let mut payload = [0u8; 256];
        let reply = self.answer(&req, &mut payload)?;
        udp::build(out, MsgType::Ack, req.mid, req.token, |m| reply.write(m)).ok()
    }

    /// The reply to one (inner) request.
    fn answer<'p>(&self, req: &udp::Datagram<'_>, payload: &'p mut [u8; 256]) -> Option<Reply<'p>> {
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
                let reply = Message::CheckInReply(crate::offer());
                let n = wire::encode(&reply, payload).ok()?;
                Some(Reply {
                    code: code::CHANGED,
                    block: None,
                    payload: payload.get(..n)?,
                })
            }
            ([b"ota", b"r"], code::POST) => Some(Reply {
                code: code::CHANGED,
                block: None,
                payload: &[],
            }),
            ([b"ota", b"i", b"1"], code::GET) => {
                let b = block?;
                let start = b.offset() as usize;
                let end = (start + b.size() as usize).min(IMAGE.len());
                Some(Reply {
                    code: code::CONTENT,
                    block: Some(Block {
                        more: end < IMAGE.len(),
                        ..b
                    }),
                    payload: IMAGE.get(start..end)?,
                })
            }
            _ => None,
        }
    }
}

/// A reply before it is framed.
struct Reply<'p> {
    code: u8,
    block: Option<Block>,
    payload: &'p [u8],
}

impl Reply<'_> {
    fn write(
        &self,
        m: &mut coap_message_implementations::inmemory::MessageMut<
            coap_message_implementations::inmemory::SliceBufferMut<'_>,
        >,
    ) -> Result<(), coap_message_implementations::inmemory::WriteError> {
        m.set_code(self.code);
        if let Some(b) = self.block {
            let mut v = [0u8; 3];
            let vlen = b.encode(&mut v);
            m.add_option(opt::BLOCK2, v.get(..vlen).unwrap_or(&[]))?;
        }
        if !self.payload.is_empty() {
            m.set_payload(self.payload)?;
        }
        Ok(())
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
