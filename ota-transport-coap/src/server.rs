//! The host side: [`Responder`] answers datagrams (sans-IO), [`serve`] runs it on a tokio
//! socket.
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
use ota_core::host::{DesiredState, Handler, HandlerError, ImageError, ImageSource};

use crate::block::Block;
use crate::resources::{self, code, opt};
use crate::udp::{self, Item, MsgType};

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
}

struct Cached {
    token: heapless::Vec<u8, 8>,
    at: u64,
    response: Vec<u8>,
}

/// Answers CoAP datagrams from the stateless `ota-core` handler.
pub struct Responder<D, I> {
    handler: Arc<Handler<D, I>>,
    config: ServerConfig,
    cache: HashMap<(SocketAddr, u16), Cached>,
    order: VecDeque<(SocketAddr, u16)>,
    next_mid: u16,
    stats: Arc<ServerStats>,
}

/// What a request resolved to, before it is framed.
struct Reply<'a> {
    code: u8,
    etag: Option<[u8; 4]>,
    block: Option<Block>,
    size2: Option<u32>,
    payload: &'a [u8],
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
    /// A responder over `handler`.
    pub fn new(handler: Arc<Handler<D, I>>, config: ServerConfig) -> Self {
        Self {
            handler,
            config,
            cache: HashMap::new(),
            order: VecDeque::new(),
            next_mid: 0x4000,
            stats: Arc::new(ServerStats::default()),
        }
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
            if c.token == d.token && now_ms.saturating_sub(c.at) < self.config.exchange_lifetime_ms
            {
                let dst = out.get_mut(..c.response.len())?;
                dst.copy_from_slice(&c.response);
                self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                return Some(c.response.len());
            }
        }
        let mut block_buf = [0u8; 1024];
        let mut reply_buf = Vec::new();
        let reply = if datagram.len() > self.config.max_request {
            Reply::error(code::TOO_LARGE, b"request too large")
        } else {
            self.route(&d, &mut block_buf, &mut reply_buf)
        };
        let (kind, mid) = if d.kind == MsgType::Con {
            (MsgType::Ack, d.mid)
        } else {
            self.next_mid = self.next_mid.wrapping_add(1);
            (MsgType::Non, self.next_mid)
        };
        let n = udp::build(out, kind, mid, d.token, |m| {
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
        })
        .ok()?;
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        if reply.code >> 5 >= 4 {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
        }
        if d.code == code::POST {
            self.remember(key, d.token, now_ms, out.get(..n)?);
        }
        Some(n)
    }

    fn remember(&mut self, key: (SocketAddr, u16), token: &[u8], now_ms: u64, response: &[u8]) {
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
            | (Some(resources::REPORT), None, code::POST) => match self.handler.handle(payload) {
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
                Err(_) => Reply::error(code::BAD_REQUEST, b"not an ota-core request"),
            },
            (Some(resources::IMAGE), Some(seg), code::GET) => self.block(seg, block, block_buf),
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
