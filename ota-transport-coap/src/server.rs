//! The host side: [`Responder`] answers datagrams (sans-IO), [`serve`] runs it on a tokio
//! socket.
//!
//! Every request is OSCORE-protected ([`Security::Oscore`]): the device's security context,
//! found by the request's kid through [`DeviceKeys`], names the device, and a check-in or report
//! that claims another id gets 4.03. Requests without OSCORE get 4.01 and create nothing, unless
//! the responder was built with [`Security::PlainForLab`] (lab use only: anyone can then speak
//! for any device). Replays are refused by a window per context and, for check-ins and reports,
//! by a floor the key store keeps across restarts and instances ([`DeviceKeys::advance`]).
//!
//! Confirmable requests get piggybacked responses in an ACK; non-confirmable ones a NON
//! response. A repeated confirmable or non-confirmable POST (same peer, message id and token)
//! gets the cached response instead of being processed twice; GETs are idempotent and are
//! simply answered again. Nothing from the wire is trusted: sizes, block numbers, paths and ids
//! are bounds-checked, unknown critical options get 4.02, malformed messages are dropped or reset.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use coap_message::MinimalWritableMessage as _;
use coap_message_implementations::inmemory::{MessageMut, SliceBufferMut, WriteError};
use ota_core::host::{DesiredState, Handler, HandlerError, ImageError, ImageSource, Peer};
use ota_oscore::{ReplayWindow, SecurityContext};

use crate::block::Block;
use crate::resources::{self, code, opt};
use crate::secure;
use crate::udp::{self, Datagram, Item, MsgType};

/// One provisioned device's OSCORE credentials, as the server keeps them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceKey {
    /// The device id it speaks for.
    pub device: String,
    /// The master secret.
    pub secret: Vec<u8>,
    /// The master salt.
    pub salt: Vec<u8>,
    /// The device's OSCORE sender id: the kid of its requests.
    pub device_sender_id: Vec<u8>,
    /// The server's sender id in this context.
    pub server_sender_id: Vec<u8>,
    /// Highest sequence number of a check-in or report accepted so far, if any.
    pub floor: Option<u64>,
}

/// Where the responder finds device credentials: the server's store.
pub trait DeviceKeys: Send + Sync {
    /// The credentials whose device sender id is `kid`, if provisioned.
    fn lookup(&self, kid: &[u8]) -> Option<DeviceKey>;
    /// Records that a check-in or report of `device` with sequence number `seq` is being
    /// processed; `false` if `seq` is not above the one recorded (a replay, perhaps to another
    /// instance). Durable and atomic: two instances never both get `true` for one number.
    fn advance(&self, device: &str, seq: u64) -> bool;
}

/// How requests are authenticated.
#[derive(Clone)]
pub enum Security {
    /// OSCORE on every request, with device credentials from `keys`.
    Oscore(Arc<dyn DeviceKeys>),
    /// Plain CoAP accepted from anyone, for any device: for the lab only. OSCORE-protected
    /// requests are still answered if `keys` are given.
    PlainForLab(Option<Arc<dyn DeviceKeys>>),
}

/// A refused request, as handed to [`Responder::on_refusal`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Who sent it.
    pub peer: SocketAddr,
    /// The response code sent (4.00, 4.01, 4.03).
    pub code: u8,
    /// Why, in words.
    pub reason: String,
}

/// How long a looked-up context is trusted before the key store is asked again (a device
/// removed from the store stops being served within this time).
const CONTEXT_RECHECK_MS: u64 = 60_000;

struct Known {
    ctx: SecurityContext,
    window: ReplayWindow,
    device: String,
    checked_at: u64,
}

/// Limits and sizes.
#[derive(Debug, Clone, Copy)]
pub struct ServerConfig {
    /// Largest request datagram accepted; longer ones get 4.13.
    pub max_request: usize,
    /// Block size used when the client asks for none.
    pub default_block: u32,
    /// Responses to POSTs remembered for deduplication.
    pub dedup_entries: usize,
    /// How long they are remembered (RFC 7252 EXCHANGE_LIFETIME is 247 s).
    pub exchange_lifetime_ms: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_request: 1152,
            default_block: 1024,
            dedup_entries: 16_384,
            exchange_lifetime_ms: 247_000,
        }
    }
}

/// Counters, shared so a caller can watch a running server.
#[derive(Debug, Default)]
pub struct ServerStats {
    /// Requests answered.
    pub requests: AtomicU64,
    /// Of which image blocks.
    pub blocks: AtomicU64,
    /// Answered from the deduplication cache.
    pub duplicates: AtomicU64,
    /// Error responses (4.xx, 5.xx).
    pub errors: AtomicU64,
    /// Datagrams dropped or reset without a response.
    pub dropped: AtomicU64,
    /// Requests refused 4.01: no OSCORE, unknown kid, did not open.
    pub unauthenticated: AtomicU64,
    /// Requests refused as replays.
    pub replays: AtomicU64,
    /// Requests refused 4.03: another device's id claimed, an image not offered.
    pub forbidden: AtomicU64,
}

struct Cached {
    token: heapless::Vec<u8, 8>,
    /// CRC-32 of the request: only a byte-identical retransmission gets the cached response
    /// (two devices behind one address reusing a message id and token get their own).
    request: u32,
    at: u64,
    response: Vec<u8>,
}

/// Most security contexts kept derived in memory; beyond it one is dropped and derived again
/// (its replay window restarts at the stored floor) when its device next speaks.
pub const MAX_CONTEXTS: usize = 100_000;

type RefusalLog = Box<dyn Fn(&Refusal) + Send + Sync>;

/// Answers CoAP datagrams from the stateless `ota-core` handler.
pub struct Responder<D, I> {
    handler: Arc<Handler<D, I>>,
    config: ServerConfig,
    security: Security,
    contexts: HashMap<Vec<u8>, Known>,
    cache: HashMap<(SocketAddr, u16), Cached>,
    order: VecDeque<(SocketAddr, u16)>,
    next_mid: u16,
    stats: Arc<ServerStats>,
    on_refusal: Option<RefusalLog>,
    /// Scratch for decrypting a request and sealing its response.
    inner: Vec<u8>,
}

/// Who a request comes from, once OSCORE has opened it.
struct Sender {
    kid: Vec<u8>,
    device: String,
    request: ota_oscore::RequestId,
}

/// What a request resolved to, before it is framed.
struct Reply<'a> {
    code: u8,
    etag: Option<[u8; 4]>,
    block: Option<Block>,
    size2: Option<u32>,
    payload: &'a [u8],
}

/// The payload of a protected message (its ciphertext).
fn d_payload<'a>(d: &Datagram<'a>, p: &secure::Protected) -> Option<&'a [u8]> {
    d.items().find_map(|i| match i {
        Ok(Item::Payload(pl)) if pl.len() == p.payload_len => Some(pl),
        _ => None,
    })
}

/// Writes a reply's code, options and payload.
fn write_reply(
    m: &mut MessageMut<SliceBufferMut<'_>>,
    reply: &Reply<'_>,
) -> Result<(), WriteError> {
    m.set_code(reply.code);
    if let Some(tag) = reply.etag {
        m.add_option(opt::ETAG, &tag)?;
    }
    if let Some(b) = reply.block {
        let mut v = [0u8; 3];
        let len = b.encode(&mut v);
        m.add_option(opt::BLOCK2, v.get(..len).unwrap_or(&[]))?;
    }
    if let Some(size) = reply.size2 {
        let bytes = size.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        m.add_option(opt::SIZE2, bytes.get(skip..).unwrap_or(&[]))?;
    }
    if !reply.payload.is_empty() {
        m.set_payload(reply.payload)?;
    }
    Ok(())
}

impl<'a> Reply<'a> {
    fn error(code: u8, diagnostic: &'static [u8]) -> Self {
        Self {
            code,
            etag: None,
            block: None,
            size2: None,
            payload: diagnostic,
        }
    }
}

impl<D: DesiredState, I: ImageSource> Responder<D, I> {
    /// A responder over `handler`, authenticating requests as `security` says.
    pub fn new(handler: Arc<Handler<D, I>>, config: ServerConfig, security: Security) -> Self {
        Self {
            handler,
            config,
            security,
            contexts: HashMap::new(),
            cache: HashMap::new(),
            order: VecDeque::new(),
            next_mid: 0x4000,
            stats: Arc::new(ServerStats::default()),
            on_refusal: None,
            inner: vec![0u8; 2048],
        }
    }

    /// Calls `log` for every refused request (4.01, 4.03, replays), so the server can log it.
    pub fn on_refusal(mut self, log: impl Fn(&Refusal) + Send + Sync + 'static) -> Self {
        self.on_refusal = Some(Box::new(log));
        self
    }

    fn refuse(&self, peer: SocketAddr, code: u8, reason: String) {
        let counter = match code {
            code::UNAUTHORIZED => &self.stats.unauthenticated,
            code::FORBIDDEN => &self.stats.forbidden,
            _ => &self.stats.errors,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if let Some(log) = &self.on_refusal {
            log(&Refusal { peer, code, reason });
        }
    }

    fn keys(&self) -> Option<&Arc<dyn DeviceKeys>> {
        match &self.security {
            Security::Oscore(k) => Some(k),
            Security::PlainForLab(k) => k.as_ref(),
        }
    }

    /// The derived context for `kid`, looked up (again) when unknown or stale.
    fn context(&mut self, now_ms: u64, kid: &[u8]) -> Option<&mut Known> {
        let fresh = self
            .contexts
            .get(kid)
            .is_some_and(|k| now_ms.saturating_sub(k.checked_at) < CONTEXT_RECHECK_MS);
        if !fresh {
            let Some(key) = self.keys()?.lookup(kid) else {
                self.contexts.remove(kid);
                return None;
            };
            let ctx = SecurityContext::derive(
                &key.secret,
                &key.salt,
                &key.server_sender_id,
                &key.device_sender_id,
            )
            .ok()?;
            let window = match self.contexts.remove(kid) {
                Some(old) if old.device == key.device => old.window,
                _ => key.floor.map_or(ReplayWindow::new(), ReplayWindow::above),
            };
            if self.contexts.len() >= MAX_CONTEXTS {
                if let Some(victim) = self.contexts.keys().next().cloned() {
                    self.contexts.remove(&victim);
                }
            }
            self.contexts.insert(
                kid.to_vec(),
                Known {
                    ctx,
                    window,
                    device: key.device,
                    checked_at: now_ms,
                },
            );
        }
        self.contexts.get_mut(kid)
    }

    /// The counters.
    pub fn stats(&self) -> Arc<ServerStats> {
        self.stats.clone()
    }

    /// Answers one datagram from `peer` at `now_ms`; `Some(n)`: send `out[..n]` back.
    pub fn respond(
        &mut self,
        now_ms: u64,
        peer: SocketAddr,
        datagram: &[u8],
        out: &mut [u8],
    ) -> Option<usize> {
        let n = self.respond_inner(now_ms, peer, datagram, out);
        if n.is_none() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
        n
    }

    fn respond_inner(
        &mut self,
        now_ms: u64,
        peer: SocketAddr,
        datagram: &[u8],
        out: &mut [u8],
    ) -> Option<usize> {
        let d = udp::parse(datagram).ok()?;
        match d.kind {
            MsgType::Ack | MsgType::Rst => return None,
            MsgType::Con | MsgType::Non => {}
        }
        if d.code == code::EMPTY || d.code >> 5 != 0 {
            // A ping, or a response sent as a request: reject confirmable ones.
            return (d.kind == MsgType::Con)
                .then(|| udp::build_empty(out, MsgType::Rst, d.mid).ok())
                .flatten();
        }
        let key = (peer, d.mid);
        if let Some(c) = self.cache.get(&key) {
            if c.token == d.token
                && c.request == ota_core::crc32::checksum(datagram)
                && now_ms.saturating_sub(c.at) < self.config.exchange_lifetime_ms
            {
                let dst = out.get_mut(..c.response.len())?;
                dst.copy_from_slice(&c.response);
                self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                return Some(c.response.len());
            }
        }
        let (kind, mid) = if d.kind == MsgType::Con {
            (MsgType::Ack, d.mid)
        } else {
            self.next_mid = self.next_mid.wrapping_add(1);
            (MsgType::Non, self.next_mid)
        };
        let mut block_buf = [0u8; 1024];
        let mut reply_buf = Vec::new();
        let protected = match secure::outer(&d, datagram.len()) {
            Ok(p) => p,
            Err(_) => {
                let reply = Reply::error(code::BAD_OPTION, b"malformed options");
                return self.frame(kind, mid, d.token, &reply, out);
            }
        };
        let (n, remember) = match protected {
            None if datagram.len() > self.config.max_request => {
                let reply = Reply::error(code::TOO_LARGE, b"request too large");
                (self.frame(kind, mid, d.token, &reply, out)?, false)
            }
            None if matches!(self.security, Security::Oscore(_)) => {
                self.refuse(peer, code::UNAUTHORIZED, "request without OSCORE".into());
                let reply = Reply::error(code::UNAUTHORIZED, b"OSCORE required");
                (self.frame(kind, mid, d.token, &reply, out)?, false)
            }
            None => {
                let reply = self.route(&d, Peer::Anonymous, &mut block_buf, &mut reply_buf);
                self.note(peer, &reply);
                (
                    self.frame(kind, mid, d.token, &reply, out)?,
                    d.code == code::POST,
                )
            }
            Some(p) => {
                let mut inner = core::mem::take(&mut self.inner);
                let r = self.protected(
                    now_ms,
                    peer,
                    &d,
                    p,
                    &mut inner,
                    (kind, mid),
                    &mut block_buf,
                    &mut reply_buf,
                    out,
                );
                self.inner = inner;
                r?
            }
        };
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        if remember {
            let request = ota_core::crc32::checksum(datagram);
            self.remember(key, d.token, request, now_ms, out.get(..n)?);
        }
        Some(n)
    }

    /// Opens a protected request, checks it is fresh and answers it sealed; OSCORE failures
    /// and refusals are answered unprotected. Returns the datagram length and whether to
    /// remember it for retransmissions (check-ins and reports).
    #[allow(clippy::too_many_arguments)]
    fn protected(
        &mut self,
        now_ms: u64,
        peer: SocketAddr,
        d: &Datagram<'_>,
        p: secure::Protected,
        inner: &mut [u8],
        (kind, mid): (MsgType, u16),
        block_buf: &mut [u8; 1024],
        reply_buf: &mut Vec<u8>,
        out: &mut [u8],
    ) -> Option<(usize, bool)> {
        let token = d.token;
        let plain_error = |this: &Self, code: u8, why: &str, out: &mut [u8]| {
            this.refuse(peer, code, why.to_string());
            let reply = Reply::error(code, b"");
            this.frame(kind, mid, token, &reply, out)
                .map(|n| (n, false))
        };
        let Some(kid) = p.option.kid.as_deref().map(<[u8]>::to_vec) else {
            return plain_error(self, code::BAD_REQUEST, "OSCORE request without kid", out);
        };
        let len = p.payload_len;
        let Some(cipher) = d_payload(d, &p) else {
            return plain_error(self, code::BAD_REQUEST, "OSCORE payload missing", out);
        };
        if len > inner.len() || len > self.config.max_request {
            return plain_error(self, code::TOO_LARGE, "request too large", out);
        }
        inner.get_mut(..len)?.copy_from_slice(cipher);
        let Some(known) = self.context(now_ms, &kid) else {
            return plain_error(self, code::UNAUTHORIZED, "unknown OSCORE kid", out);
        };
        let opened = known.ctx.open_request(&p.option, inner, len);
        let device = known.device.clone();
        let Ok((request, n)) = opened else {
            let why = format!("request for {device} does not open");
            return plain_error(self, code::BAD_REQUEST, &why, out);
        };
        let seq = request.seq();
        if !known.window.is_fresh(seq) {
            self.stats.replays.fetch_add(1, Ordering::Relaxed);
            let why = format!("replayed request for {device} (sequence {seq})");
            return plain_error(self, code::UNAUTHORIZED, &why, out);
        }
        let inner_d = secure::inner(d, token, inner.get(..n)?)?;
        let post = inner_d.code == code::POST;
        if post && !self.keys().is_some_and(|k| k.advance(&device, seq)) {
            self.stats.replays.fetch_add(1, Ordering::Relaxed);
            let why = format!("replayed check-in or report for {device} (sequence {seq})");
            return plain_error(self, code::UNAUTHORIZED, &why, out);
        }
        if let Some(k) = self.contexts.get_mut(&kid) {
            k.window.accept(seq);
        }
        let reply = self.route(&inner_d, Peer::Device(&device), block_buf, reply_buf);
        if reply.code >> 5 != 2 {
            // Refusals go out unprotected: a second, different answer sealed under a nonce
            // another instance may have used for this request would leak both.
            self.note(peer, &reply);
            return self.frame(kind, mid, token, &reply, out).map(|n| (n, post));
        }
        let sender = Sender {
            kid,
            device,
            request,
        };
        self.seal(&sender, &reply, inner, (kind, mid, token), out)
            .map(|n| (n, post))
    }

    /// Seals `reply` for `sender` and frames it: 2.04 outside, the real code inside.
    fn seal(
        &self,
        sender: &Sender,
        reply: &Reply<'_>,
        inner: &mut [u8],
        (kind, mid, token): (MsgType, u16, &[u8]),
        out: &mut [u8],
    ) -> Option<usize> {
        let known = self.contexts.get(&sender.kid)?;
        let len = secure::build_inner(inner, |m| write_reply(m, reply)).ok()?;
        let sealed = known.ctx.seal_response(&sender.request, inner, len).ok()?;
        let _ = &sender.device;
        udp::build(out, kind, mid, token, |m| {
            m.set_code(code::CHANGED);
            m.add_option(opt::OSCORE, &[])?;
            m.set_payload(inner.get(..sealed).unwrap_or(&[]))
        })
        .ok()
    }

    /// Frames a plain (unprotected) reply.
    fn frame(
        &self,
        kind: MsgType,
        mid: u16,
        token: &[u8],
        reply: &Reply<'_>,
        out: &mut [u8],
    ) -> Option<usize> {
        if reply.code >> 5 >= 4 {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
        }
        udp::build(out, kind, mid, token, |m| write_reply(m, reply)).ok()
    }

    /// Logs refusals the handler decided (4.03).
    fn note(&self, peer: SocketAddr, reply: &Reply<'_>) {
        if reply.code == code::FORBIDDEN {
            self.refuse(
                peer,
                code::FORBIDDEN,
                String::from_utf8_lossy(reply.payload).into_owned(),
            );
        }
    }

    fn remember(
        &mut self,
        key: (SocketAddr, u16),
        token: &[u8],
        request: u32,
        now_ms: u64,
        response: &[u8],
    ) {
        while let Some(old) = self.order.front().copied() {
            let expired = self
                .cache
                .get(&old)
                .is_none_or(|c| now_ms.saturating_sub(c.at) >= self.config.exchange_lifetime_ms);
            if expired || self.order.len() >= self.config.dedup_entries {
                self.order.pop_front();
                self.cache.remove(&old);
            } else {
                break;
            }
        }
        let Ok(token) = heapless::Vec::from_slice(token) else {
            return;
        };
        if self
            .cache
            .insert(
                key,
                Cached {
                    token,
                    request,
                    at: now_ms,
                    response: response.to_vec(),
                },
            )
            .is_none()
        {
            self.order.push_back(key);
        }
    }

    fn route<'b>(
        &self,
        d: &udp::Datagram<'_>,
        peer: Peer<'_>,
        block_buf: &'b mut [u8; 1024],
        reply_buf: &'b mut Vec<u8>,
    ) -> Reply<'b> {
        let mut path: heapless::Vec<&[u8], 3> = heapless::Vec::new();
        let mut too_deep = false;
        let mut block = None;
        let mut payload: &[u8] = &[];
        for item in d.items() {
            let Ok(item) = item else {
                return Reply::error(code::BAD_REQUEST, b"malformed options");
            };
            let (number, value) = match item {
                // RFC 7252 section 3: a payload marker followed by nothing is a format error.
                Item::Payload([]) => return Reply::error(code::BAD_REQUEST, b"empty payload"),
                Item::Payload(p) => {
                    payload = p;
                    continue;
                }
                Item::Option { number, value } => (number, value),
            };
            match number {
                opt::URI_PATH => too_deep |= path.push(value).is_err(),
                opt::BLOCK2 => match Block::decode(value) {
                    Ok(b) => block = Some(b),
                    Err(_) => return Reply::error(code::BAD_OPTION, b"bad Block2"),
                },
                opt::BLOCK1 => match Block::decode(value) {
                    Ok(b) if b.num == 0 && !b.more => {}
                    _ => return Reply::error(code::TOO_LARGE, b"no block-wise uploads"),
                },
                opt::URI_HOST | opt::URI_PORT | opt::URI_QUERY | opt::ACCEPT => {}
                n if n & 1 == 1 => {
                    return Reply::error(code::BAD_OPTION, b"unsupported critical option")
                }
                _ => {}
            }
        }
        if too_deep || path.first() != Some(&resources::ROOT) {
            return Reply::error(code::NOT_FOUND, b"");
        }
        match (path.get(1).copied(), path.get(2).copied(), d.code) {
            (Some(resources::CHECKIN), None, code::POST)
            | (Some(resources::REPORT), None, code::POST) => {
                match self.handler.handle(payload, peer) {
                    Ok(Some(reply)) => {
                        *reply_buf = reply;
                        Reply {
                            code: code::CHANGED,
                            etag: None,
                            block: None,
                            size2: None,
                            payload: reply_buf,
                        }
                    }
                    Ok(None) => Reply::error(code::CHANGED, b""),
                    Err(HandlerError::Image(_)) => Reply::error(code::INTERNAL, b""),
                    Err(e @ (HandlerError::NotYourId { .. } | HandlerError::Forbidden { .. })) => {
                        *reply_buf = e.to_string().into_bytes();
                        Reply {
                            payload: reply_buf,
                            ..Reply::error(code::FORBIDDEN, b"")
                        }
                    }
                    Err(_) => Reply::error(code::BAD_REQUEST, b"not an ota-core request"),
                }
            }
            (Some(resources::IMAGE), Some(seg), code::GET) => {
                match resources::parse_image_segment(seg)
                    .map(|id| self.handler.authorize_fetch(peer, id))
                {
                    Some(Err(e)) => {
                        *reply_buf = e.to_string().into_bytes();
                        Reply {
                            payload: reply_buf,
                            ..Reply::error(code::FORBIDDEN, b"")
                        }
                    }
                    _ => self.block(seg, block, block_buf),
                }
            }
            (Some(resources::CHECKIN | resources::REPORT), None, _)
            | (Some(resources::IMAGE), Some(_), _) => Reply::error(code::METHOD_NOT_ALLOWED, b""),
            _ => Reply::error(code::NOT_FOUND, b""),
        }
    }

    fn block<'b>(&self, seg: &[u8], asked: Option<Block>, buf: &'b mut [u8; 1024]) -> Reply<'b> {
        let Some(id) = resources::parse_image_segment(seg) else {
            return Reply::error(code::NOT_FOUND, b"");
        };
        let images = self.handler.images();
        let info = match images.describe(id) {
            Ok(i) => i,
            Err(ImageError::UnknownImage(_)) => return Reply::error(code::NOT_FOUND, b""),
            Err(_) => return Reply::error(code::INTERNAL, b""),
        };
        let asked = asked.unwrap_or(Block {
            num: 0,
            more: false,
            szx: 6,
        });
        let size = asked.size().min(self.config.default_block.max(16));
        let Ok(block) = Block::new(asked.num, false, size) else {
            return Reply::error(code::BAD_OPTION, b"bad Block2");
        };
        let offset = u64::from(block.num) * u64::from(size);
        if offset >= u64::from(info.size) && !(offset == 0 && info.size == 0) {
            return Reply::error(code::BAD_OPTION, b"block beyond the end");
        }
        let offset = offset as u32;
        let want = size.min(info.size - offset) as usize;
        let dst = buf.get_mut(..want).unwrap_or(&mut []);
        let n = match images.read_at(id, offset, dst) {
            Ok(n) => n,
            Err(ImageError::UnknownImage(_)) => return Reply::error(code::NOT_FOUND, b""),
            Err(_) => return Reply::error(code::INTERNAL, b""),
        };
        self.stats.blocks.fetch_add(1, Ordering::Relaxed);
        let mut tag = [0u8; 4];
        tag.copy_from_slice(info.digest.0.get(..4).unwrap_or(&[0; 4]));
        Reply {
            code: code::CONTENT,
            etag: Some(tag),
            block: Some(Block {
                more: offset as u64 + (n as u64) < u64::from(info.size),
                ..block
            }),
            size2: (block.num == 0).then_some(info.size),
            payload: buf.get(..n).unwrap_or(&[]),
        }
    }
}

/// Serves `responder` on `socket` until the task is dropped or the socket fails.
pub async fn serve<D, I>(
    socket: tokio::net::UdpSocket,
    mut responder: Responder<D, I>,
) -> std::io::Result<()>
where
    D: DesiredState,
    I: ImageSource,
{
    let start = std::time::Instant::now();
    let mut buf = vec![0u8; 2048];
    let mut out = vec![0u8; 1400];
    loop {
        let (n, peer) = match socket.recv_from(&mut buf).await {
            Ok(r) => r,
            // ICMP errors from earlier sends surface here on some systems; they concern one
            // peer, not the server.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
            Err(e) => return Err(e),
        };
        let now = start.elapsed().as_millis() as u64;
        if let Some(m) = responder.respond(now, peer, buf.get(..n).unwrap_or(&[]), &mut out) {
            let _ = socket.send_to(out.get(..m).unwrap_or(&[]), peer).await;
        }
    }
}
