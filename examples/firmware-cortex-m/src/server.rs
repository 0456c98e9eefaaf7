//! The server end both firmwares talk to: a minimal CoAP server holding one signed release
//! (what `ota-server` would answer), with OSCORE when the feature is on.

use coap_message::MinimalWritableMessage as _;
use heapless::Vec;
use ota_transport_coap::block::Block;
use ota_transport_coap::resources::{code, opt};
use ota_transport_coap::udp::{self, Item, MsgType};

use crate::fixture::IMAGE;

/// Answers one datagram from the device into `out`; `None` if it gets no answer.
pub fn respond(d: &[u8], out: &mut [u8]) -> Option<usize> {
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
        let reply = answer(&inner_req)?;
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
    let reply = answer(&req)?;
    udp::build(out, MsgType::Ack, req.mid, req.token, |m| reply.write(m)).ok()
}

/// The reply to one (inner) request.
fn answer(req: &udp::Datagram<'_>) -> Option<Reply<'static>> {
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
        ([b"ota", b"c"], code::POST) => Some(Reply {
            code: code::CHANGED,
            block: None,
            payload: &crate::fixture::CHECKIN_REPLY,
        }),
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
