//! The protocol half of the server, shared by every task and socket: CoAP message layer,
//! deduplication, OSCORE (contexts, replay windows, the store's replay floor) and routing.
//!
//! A datagram goes through [`Engine::request`], which either answers it at once ([`Step::Send`]:
//! a refusal, a retransmission, a ping), drops it, or hands back a [`Pending`] request for the
//! application to decide; [`Engine::reply`] then frames and seals the application's
//! [`Answer`]. `Engine` takes `&self` everywhere (its maps are sharded behind short locks), so
//! one engine serves any number of tasks; the application's decision is awaited without any
//! lock held.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hash};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use coap_message::MinimalWritableMessage as _;
use coap_message_implementations::inmemory::{MessageMut, SliceBufferMut, WriteError};
use ota_core::host::{HandlerError, ImageError, ImageInfo, Peer};
use ota_core::wire::ImageId;
use ota_oscore::{ReplayWindow, SecurityContext};

use super::copies::{Accepted, PlainCopies, COPY_MS};
use super::{DeviceKeys, Refusal, RefusalLog, Security, ServerConfig, ServerStats};
use crate::block::Block;
use crate::resources::{self, code, opt};
use crate::secure;
use crate::udp::{self, Datagram, Item, MsgType};

/// How long a looked-up context is trusted before the key store is asked again (a device
/// removed from the store stops being served within this time).
const CONTEXT_RECHECK_MS: u64 = 60_000;

/// A POST being decided is remembered as in progress; a retransmission that arrives meanwhile
/// is dropped (the first answer goes out), unless the decision takes longer than this.
const IN_PROGRESS_MS: u64 = 5_000;

/// Most security contexts kept derived in memory; beyond it one is dropped and derived again
/// (its replay window restarts at the stored floor, and its block requests wait for its next
/// check-in) when its device next speaks.
pub const MAX_CONTEXTS: usize = 100_000;

/// Whether an authenticated request's sequence number is new.
enum Freshness {
    /// New; `verified` as the context's flag ([`Known::verified`]).
    Fresh {
        verified: bool,
    },
    /// Accepted from the same peer within [`COPY_MS`]: a device's copy.
    Copy,
    Replay,
}

/// Shards of the context and deduplication maps: requests of different devices rarely wait
/// for one another.
const SHARDS: usize = 16;

struct Known {
    ctx: Arc<SecurityContext>,
    window: ReplayWindow,
    device: Arc<str>,
    checked_at: u64,
    /// The last sequence numbers accepted, to tell a device's copy from a replay.
    accepted: Accepted,
    /// A check-in or report from the device was found fresh against the store's floor since
    /// this context was made. Until then the window starts at the floor, which only POSTs
    /// move: a block request recorded before a restart would pass it, so none is served.
    verified: bool,
}

struct Cached {
    token: heapless::Vec<u8, 8>,
    /// CRC-32 of the request: only a byte-identical retransmission gets the cached response
    /// (two devices behind one address reusing a message id and token get their own).
    request: u32,
    at: u64,
    /// When these bytes last arrived: the same again within [`COPY_MS`] is a device's copy.
    seen: u64,
    /// `None` while the request is being decided.
    response: Option<Arc<[u8]>>,
}

#[derive(Default)]
struct Dedup {
    map: HashMap<(SocketAddr, u16), Cached>,
    order: VecDeque<(SocketAddr, u16)>,
}

struct Sharded<T> {
    shards: Vec<Mutex<T>>,
    hasher: std::collections::hash_map::RandomState,
}

impl<T: Default> Sharded<T> {
    fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(T::default())).collect(),
            hasher: Default::default(),
        }
    }

    /// The shard of `key`, locked (a poisoned lock is taken over: the maps hold no invariant a
    /// panic could break halfway).
    fn lock<K: Hash + ?Sized>(&self, key: &K) -> Option<MutexGuard<'_, T>> {
        let i = (self.hasher.hash_one(key) as usize) % SHARDS;
        let m = self.shards.get(i)?;
        Some(m.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// What a datagram needs next.
pub enum Step {
    /// Send these bytes back to the peer.
    Send(Vec<u8>),
    /// Nothing to send.
    Drop,
    /// The application must decide ([`Engine::reply`] frames its answer).
    Decide(Pending),
}

/// What the application is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum What<'a> {
    /// A POST to the check-in or report resource: an `ota-core` message to answer
    /// ([`ota_core::host::request`] decodes it).
    Message(&'a [u8]),
    /// A block of an image: bytes `offset..offset + len`, if the image has them.
    Block {
        /// The image.
        image: ImageId,
        /// First byte.
        offset: u32,
        /// Bytes asked (fewer at the end of the image).
        len: u32,
    },
}

enum Route {
    Post(Vec<u8>),
    Block { image: ImageId, block: Block },
}

/// A request that passed the message layer and OSCORE, waiting for the application.
pub struct Pending {
    peer: SocketAddr,
    kind: MsgType,
    mid: u16,
    token: heapless::Vec<u8, 8>,
    /// The dedup key and request CRC, if the answer is remembered (POSTs).
    remember: Option<((SocketAddr, u16), u32)>,
    device: Option<Arc<str>>,
    seal: Option<(Arc<SecurityContext>, ota_oscore::RequestId)>,
    route: Route,
    started: u64,
}

impl Pending {
    /// The device the transport authenticated (`None`: a plain request in lab mode).
    pub fn peer(&self) -> Peer<'_> {
        match &self.device {
            Some(d) => Peer::Device(d),
            None => Peer::Anonymous,
        }
    }

    /// The address it came from.
    pub fn addr(&self) -> SocketAddr {
        self.peer
    }

    /// What is asked.
    pub fn what(&self) -> What<'_> {
        match &self.route {
            Route::Post(p) => What::Message(p),
            Route::Block { image, block } => What::Block {
                image: *image,
                offset: block.num.saturating_mul(block.size()),
                len: block.size(),
            },
        }
    }

    /// Milliseconds (of the engine's clock) at which the request arrived.
    pub fn started_ms(&self) -> u64 {
        self.started
    }
}

/// The application's answer to a [`Pending`] request.
pub enum Answer {
    /// 2.04 with this payload (a check-in reply; empty for a report).
    Changed(Vec<u8>),
    /// The image, for a block request: the engine cuts the block out.
    Image(ota_core::host::Image),
    /// The requested block already read: the image's info and the bytes at the block's offset
    /// (what [`ota_core::host::ImageSource::read_at`] gave).
    Block(ImageInfo, Vec<u8>),
    /// Refused or failed: 4.03 for another device's id or an image not offered, 4.04 for an
    /// unknown image, 5.00 for an image that cannot be read, 4.00 otherwise.
    Refused(HandlerError),
}

/// What a request resolved to, before it is framed.
struct Reply<'a> {
    code: u8,
    etag: Option<[u8; 4]>,
    block: Option<Block>,
    size2: Option<u32>,
    /// Tell the device copies of its requests are dropped ([`opt::DROPS_COPIES`]).
    drops_copies: bool,
    payload: &'a [u8],
}

impl Reply<'_> {
    fn error(code: u8, diagnostic: &'static [u8]) -> Self {
        Self {
            code,
            etag: None,
            block: None,
            size2: None,
            drops_copies: false,
            payload: diagnostic,
        }
    }
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
    if reply.drops_copies {
        m.add_option(opt::DROPS_COPIES, &[])?;
    }
    if !reply.payload.is_empty() {
        m.set_payload(reply.payload)?;
    }
    Ok(())
}

/// The payload of a protected message (its ciphertext).
fn d_payload<'a>(d: &Datagram<'a>, p: &secure::Protected) -> Option<&'a [u8]> {
    d.items().find_map(|i| match i {
        Ok(Item::Payload(pl)) if pl.len() == p.payload_len => Some(pl),
        _ => None,
    })
}

/// Answers CoAP datagrams; shared by every serving task (see the module docs).
pub struct Engine {
    config: ServerConfig,
    security: Security,
    contexts: Sharded<HashMap<Vec<u8>, Known>>,
    dedup: Sharded<Dedup>,
    plain_copies: PlainCopies,
    next_mid: AtomicU32,
    stats: Arc<ServerStats>,
    on_refusal: Option<RefusalLog>,
}

/// Header fields every response to one request repeats.
#[derive(Clone, Copy)]
struct Frame<'t> {
    kind: MsgType,
    mid: u16,
    token: &'t [u8],
}

impl Engine {
    /// An engine authenticating requests as `security` says.
    pub fn new(config: ServerConfig, security: Security) -> Self {
        Self {
            config,
            security,
            contexts: Sharded::new(),
            dedup: Sharded::new(),
            plain_copies: PlainCopies::new(),
            next_mid: AtomicU32::new(0x4000),
            stats: Arc::new(ServerStats::default()),
            on_refusal: None,
        }
    }

    /// Calls `log` for every refused request (4.01, 4.03, replays), so the server can log it.
    pub fn on_refusal(mut self, log: impl Fn(&Refusal) + Send + Sync + 'static) -> Self {
        self.on_refusal = Some(Box::new(log));
        self
    }

    /// The counters.
    pub fn stats(&self) -> Arc<ServerStats> {
        self.stats.clone()
    }

    /// The limits it was built with.
    pub fn config(&self) -> &ServerConfig {
        &self.config
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

    /// The derived context for `kid` and its device, looked up (again) when unknown or stale.
    async fn context(&self, now_ms: u64, kid: &[u8]) -> Option<(Arc<SecurityContext>, Arc<str>)> {
        {
            let shard = self.contexts.lock(kid)?;
            if let Some(k) = shard.get(kid) {
                if now_ms.saturating_sub(k.checked_at) < CONTEXT_RECHECK_MS {
                    return Some((k.ctx.clone(), k.device.clone()));
                }
            }
        }
        let key = self.keys()?.lookup_async(kid).await;
        let mut shard = self.contexts.lock(kid)?;
        let Some(key) = key else {
            shard.remove(kid);
            return None;
        };
        let ctx = SecurityContext::derive(
            &key.secret,
            &key.salt,
            &key.server_sender_id,
            &key.device_sender_id,
        )
        .ok()?;
        let (window, accepted, verified) = match shard.remove(kid) {
            Some(old) if *old.device == *key.device => (old.window, old.accepted, old.verified),
            // Nothing stored: the device never sent a check-in, so there is nothing of it
            // to replay.
            _ => (
                key.floor.map_or(ReplayWindow::new(), ReplayWindow::above),
                Accepted::default(),
                key.floor.is_none(),
            ),
        };
        if shard.len() >= MAX_CONTEXTS / SHARDS {
            if let Some(victim) = shard.keys().next().cloned() {
                shard.remove(&victim);
            }
        }
        let known = Known {
            ctx: Arc::new(ctx),
            window,
            device: key.device.into(),
            checked_at: now_ms,
            accepted,
            verified,
        };
        let found = (known.ctx.clone(), known.device.clone());
        shard.insert(kid.to_vec(), known);
        Some(found)
    }

    /// Accepts `seq` in `kid`'s replay window if it is fresh (one step, under the lock); a
    /// sequence number accepted from the same peer within [`COPY_MS`] is a device's copy.
    fn accept(&self, now_ms: u64, peer: SocketAddr, kid: &[u8], seq: u64) -> Freshness {
        let peer = self.plain_copies.peer(peer);
        let Some(mut shard) = self.contexts.lock(kid) else {
            return Freshness::Replay;
        };
        let Some(k) = shard.get_mut(kid) else {
            return Freshness::Replay;
        };
        if k.window.accept(seq) {
            k.accepted.record(seq, now_ms, peer);
            Freshness::Fresh {
                verified: k.verified,
            }
        } else if k.accepted.is_copy(seq, now_ms, peer) {
            Freshness::Copy
        } else {
            Freshness::Replay
        }
    }

    /// `kid`'s device sent a check-in or report with sequence number `seq` that the store
    /// found fresh: its context is verified, and every sequence number up to the highest
    /// accepted counts as seen (a block request recorded before a restart, below it, can no
    /// longer pass).
    fn verify(&self, kid: &[u8], seq: u64) {
        let Some(mut shard) = self.contexts.lock(kid) else {
            return;
        };
        if let Some(k) = shard.get_mut(kid).filter(|k| !k.verified) {
            let top = k.window.highest().map_or(seq, |h| h.max(seq));
            k.window = ReplayWindow::above(top);
            k.verified = true;
        }
    }

    /// Step 1 for a datagram from `peer` at `now_ms` (milliseconds of any monotonic clock).
    pub async fn request(&self, now_ms: u64, peer: SocketAddr, datagram: &[u8]) -> Step {
        let step = self.request_inner(now_ms, peer, datagram).await;
        match &step {
            Step::Drop => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Step::Send(_) => {
                self.stats.requests.fetch_add(1, Ordering::Relaxed);
            }
            Step::Decide(_) => {}
        }
        step
    }

    async fn request_inner(&self, now_ms: u64, peer: SocketAddr, datagram: &[u8]) -> Step {
        let Ok(d) = udp::parse(datagram) else {
            return Step::Drop;
        };
        match d.kind {
            MsgType::Ack | MsgType::Rst => return Step::Drop,
            MsgType::Con | MsgType::Non => {}
        }
        if d.code == code::EMPTY || d.code >> 5 != 0 {
            // A ping, or a response sent as a request: reject confirmable ones.
            if d.kind != MsgType::Con {
                return Step::Drop;
            }
            let mut out = [0u8; 4];
            return match udp::build_empty(&mut out, MsgType::Rst, d.mid) {
                Ok(n) => Step::Send(out.get(..n).unwrap_or(&[]).to_vec()),
                Err(_) => Step::Drop,
            };
        }
        let key = (peer, d.mid);
        let crc = ota_core::crc32::checksum(datagram);
        if let Some(step) = self.duplicate(now_ms, key, d.token, crc) {
            return step;
        }
        let frame = if d.kind == MsgType::Con {
            Frame {
                kind: MsgType::Ack,
                mid: d.mid,
                token: d.token,
            }
        } else {
            let mid = self.next_mid.fetch_add(1, Ordering::Relaxed) as u16;
            Frame {
                kind: MsgType::Non,
                mid,
                token: d.token,
            }
        };
        let protected = match secure::outer(&d, datagram.len()) {
            Ok(p) => p,
            Err(_) => {
                let reply = Reply::error(code::BAD_OPTION, b"malformed options");
                return self.send(frame, &reply);
            }
        };
        let Ok(token) = heapless::Vec::from_slice(d.token) else {
            return Step::Drop;
        };
        let mut pending = Pending {
            peer,
            kind: frame.kind,
            mid: frame.mid,
            token,
            remember: None,
            device: None,
            seal: None,
            route: Route::Post(Vec::new()),
            started: now_ms,
        };
        let inner_plain;
        let routed = match protected {
            None if datagram.len() > self.config.max_request => {
                return self.send(frame, &Reply::error(code::TOO_LARGE, b"request too large"));
            }
            None if matches!(self.security, Security::Oscore(_)) => {
                self.refuse(peer, code::UNAUTHORIZED, "request without OSCORE".into());
                return self.send(frame, &Reply::error(code::UNAUTHORIZED, b"OSCORE required"));
            }
            None => {
                // POSTs are remembered whole (`duplicate`); other plain requests here.
                if d.code != code::POST && self.plain_copies.copy(now_ms, peer, datagram) {
                    self.stats.copies.fetch_add(1, Ordering::Relaxed);
                    return Step::Drop;
                }
                Self::route(&d)
            }
            Some(p) => {
                let opened = match self.open(now_ms, peer, &d, p, frame).await {
                    Ok(o) => o,
                    Err(step) => return step,
                };
                let (plain, device, ctx, request) = opened;
                inner_plain = plain;
                let Some(inner_d) = secure::inner(&d, d.token, &inner_plain) else {
                    return Step::Drop;
                };
                pending.device = Some(device);
                pending.seal = Some((ctx, request));
                if inner_d.code == code::POST {
                    pending.remember = Some((key, crc));
                }
                Self::route(&inner_d)
            }
        };
        if pending.seal.is_none() && d.code == code::POST {
            pending.remember = Some((key, crc));
        }
        match routed.and_then(|r| self.cap(r)) {
            Ok(route) => {
                pending.route = route;
                if let Some((key, crc)) = pending.remember {
                    self.mark_in_progress(now_ms, key, d.token, crc);
                }
                Step::Decide(pending)
            }
            Err(reply) => {
                // Refusals go out unprotected: a second, different answer sealed under a nonce
                // another instance may have used for this request would leak both.
                self.note(peer, &reply);
                let step = self.send(frame, &reply);
                if let (Step::Send(bytes), Some((key, crc))) = (&step, pending.remember) {
                    self.remember(now_ms, key, d.token, crc, Some(bytes.as_slice().into()));
                }
                step
            }
        }
    }

    /// Opens a protected request and checks it is fresh: the inner message, the device, its
    /// context and the request id to seal the response with. OSCORE failures are answered
    /// unprotected ([`Step::Send`]).
    async fn open(
        &self,
        now_ms: u64,
        peer: SocketAddr,
        d: &Datagram<'_>,
        p: secure::Protected,
        frame: Frame<'_>,
    ) -> Result<
        (
            Vec<u8>,
            Arc<str>,
            Arc<SecurityContext>,
            ota_oscore::RequestId,
        ),
        Step,
    > {
        let refuse = |code: u8, why: String| {
            self.refuse(peer, code, why);
            self.send(frame, &Reply::error(code, b""))
        };
        let Some(kid) = p.option.kid.as_deref() else {
            return Err(refuse(
                code::BAD_REQUEST,
                "OSCORE request without kid".into(),
            ));
        };
        let Some(cipher) = d_payload(d, &p) else {
            return Err(refuse(code::BAD_REQUEST, "OSCORE payload missing".into()));
        };
        let len = p.payload_len;
        if len > self.config.max_request {
            return Err(refuse(code::TOO_LARGE, "request too large".into()));
        }
        let Some((ctx, device)) = self.context(now_ms, kid).await else {
            return Err(refuse(code::UNAUTHORIZED, "unknown OSCORE kid".into()));
        };
        // Room for the inner response sealed in place later is not needed here: the reply is
        // built in a buffer of its own.
        let mut inner = cipher.to_vec();
        let Ok((request, n)) = ctx.open_request(&p.option, &mut inner, len) else {
            let why = format!("request for {device} does not open");
            return Err(refuse(code::BAD_REQUEST, why));
        };
        inner.truncate(n);
        let seq = request.seq();
        let verified = match self.accept(now_ms, peer, kid, seq) {
            Freshness::Fresh { verified } => verified,
            Freshness::Copy => {
                self.stats.copies.fetch_add(1, Ordering::Relaxed);
                return Err(Step::Drop);
            }
            Freshness::Replay => {
                self.stats.replays.fetch_add(1, Ordering::Relaxed);
                let why = format!("replayed request for {device} (sequence {seq})");
                return Err(refuse(code::UNAUTHORIZED, why));
            }
        };
        let post = inner.first() == Some(&code::POST);
        if post {
            let fresh = match self.keys() {
                Some(k) => k.advance_async(&device, seq).await,
                None => false,
            };
            if !fresh {
                self.stats.replays.fetch_add(1, Ordering::Relaxed);
                let why = format!("replayed check-in or report for {device} (sequence {seq})");
                return Err(refuse(code::UNAUTHORIZED, why));
            }
            if !verified {
                self.verify(kid, seq);
            }
        } else if !verified {
            // The device's next check-in verifies the context; a device resends this request
            // under a new sequence number on its timer, and a wake starts with a check-in.
            self.stats.replays.fetch_add(1, Ordering::Relaxed);
            let why = format!(
                "block request for {device} (sequence {seq}) before its first check-in since the server started"
            );
            return Err(refuse(code::UNAUTHORIZED, why));
        }
        Ok((inner, device, ctx, request))
    }

    /// Step 3: frames (and seals) the application's `answer` to `pending`; the datagram to
    /// send back, if any.
    pub fn reply(&self, pending: Pending, answer: Answer) -> Option<Vec<u8>> {
        let frame = Frame {
            kind: pending.kind,
            mid: pending.mid,
            token: &pending.token,
        };
        let mut block_buf = Vec::new();
        let message;
        let reply = match (&pending.route, answer) {
            (_, Answer::Refused(e)) => {
                message = e.to_string().into_bytes();
                match e {
                    HandlerError::NotYourId { .. } | HandlerError::Forbidden { .. } => Reply {
                        payload: &message,
                        ..Reply::error(code::FORBIDDEN, b"")
                    },
                    HandlerError::Image(ImageError::UnknownImage(_)) => {
                        Reply::error(code::NOT_FOUND, b"")
                    }
                    HandlerError::Image(_) => Reply::error(code::INTERNAL, b""),
                    _ => Reply::error(code::BAD_REQUEST, b"not an ota-core request"),
                }
            }
            (Route::Post(_), Answer::Changed(payload)) => {
                block_buf = payload;
                Reply {
                    code: code::CHANGED,
                    etag: None,
                    block: None,
                    size2: None,
                    // Only where a download follows: "nothing for you" stays as small as it was.
                    drops_copies: ota_core::wire::peek_offer(&block_buf),
                    payload: &block_buf,
                }
            }
            (&Route::Block { image, block }, Answer::Image(img)) => {
                self.block(image, block, img.info, &mut block_buf, |off, buf| {
                    img.read_at(image, off, buf)
                })
            }
            (&Route::Block { image, block }, Answer::Block(info, data)) => {
                self.block(image, block, info, &mut block_buf, |_, buf| {
                    let n = data.len().min(buf.len());
                    buf.iter_mut().zip(&data).for_each(|(d, s)| *d = *s);
                    Ok(n)
                })
            }
            _ => Reply::error(code::INTERNAL, b""),
        };
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let out = match &pending.seal {
            Some((ctx, request)) if reply.code >> 5 == 2 => Self::seal(ctx, request, &reply, frame),
            _ => {
                self.note(pending.peer, &reply);
                self.frame(frame, &reply)
            }
        };
        if let Some((key, crc)) = pending.remember {
            self.remember(
                pending.started,
                key,
                &pending.token,
                crc,
                out.as_deref().map(Into::into),
            );
        }
        if out.is_none() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
        out
    }

    fn block<'b>(
        &self,
        image: ImageId,
        block: Block,
        info: ImageInfo,
        buf: &'b mut Vec<u8>,
        read: impl FnOnce(u32, &mut [u8]) -> Result<usize, ImageError>,
    ) -> Reply<'b> {
        let _ = image;
        let size = block.size();
        let offset = u64::from(block.num) * u64::from(size);
        if offset >= u64::from(info.size) && !(offset == 0 && info.size == 0) {
            return Reply::error(code::BAD_OPTION, b"block beyond the end");
        }
        let offset = offset as u32;
        buf.resize(size.min(info.size - offset) as usize, 0);
        let n = match read(offset, buf) {
            Ok(n) => n.min(buf.len()),
            Err(ImageError::UnknownImage(_)) => return Reply::error(code::NOT_FOUND, b""),
            Err(_) => return Reply::error(code::INTERNAL, b""),
        };
        self.stats.blocks.fetch_add(1, Ordering::Relaxed);
        self.stats
            .block_bytes
            .fetch_add(n as u64, Ordering::Relaxed);
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
            drops_copies: false,
            payload: buf.get(..n).unwrap_or(&[]),
        }
    }

    /// Seals `reply` and frames it: 2.04 outside, the real code inside.
    fn seal(
        ctx: &SecurityContext,
        request: &ota_oscore::RequestId,
        reply: &Reply<'_>,
        frame: Frame<'_>,
    ) -> Option<Vec<u8>> {
        let mut inner = vec![0u8; reply.payload.len() + 64];
        let len = secure::build_inner(&mut inner, |m| write_reply(m, reply)).ok()?;
        let sealed = ctx.seal_response(request, &mut inner, len).ok()?;
        let mut out = vec![0u8; sealed + 32];
        let n = udp::build(&mut out, frame.kind, frame.mid, frame.token, |m| {
            m.set_code(code::CHANGED);
            m.add_option(opt::OSCORE, &[])?;
            m.set_payload(inner.get(..sealed).unwrap_or(&[]))
        })
        .ok()?;
        out.truncate(n);
        Some(out)
    }

    /// Frames a plain (unprotected) reply.
    fn frame(&self, frame: Frame<'_>, reply: &Reply<'_>) -> Option<Vec<u8>> {
        if reply.code >> 5 >= 4 {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
        }
        let mut out = vec![0u8; reply.payload.len() + 48];
        let n = udp::build(&mut out, frame.kind, frame.mid, frame.token, |m| {
            write_reply(m, reply)
        })
        .ok()?;
        out.truncate(n);
        Some(out)
    }

    fn send(&self, frame: Frame<'_>, reply: &Reply<'_>) -> Step {
        match self.frame(frame, reply) {
            Some(v) => Step::Send(v),
            None => Step::Drop,
        }
    }

    /// Logs refusals decided past OSCORE (4.03).
    fn note(&self, peer: SocketAddr, reply: &Reply<'_>) {
        if reply.code == code::FORBIDDEN {
            self.refuse(
                peer,
                code::FORBIDDEN,
                String::from_utf8_lossy(reply.payload).into_owned(),
            );
        }
    }

    /// The step for a copy or a retransmission of a remembered POST, if `key` is one: a copy
    /// (the same bytes again within [`COPY_MS`] of their last arrival) is dropped, a
    /// retransmission answered from the cache.
    fn duplicate(
        &self,
        now_ms: u64,
        key: (SocketAddr, u16),
        token: &[u8],
        crc: u32,
    ) -> Option<Step> {
        let mut shard = self.dedup.lock(&key)?;
        let c = shard.map.get_mut(&key)?;
        if c.token != token || c.request != crc {
            return None;
        }
        if now_ms.saturating_sub(c.seen) < COPY_MS {
            self.stats.copies.fetch_add(1, Ordering::Relaxed);
            return Some(Step::Drop);
        }
        c.seen = now_ms;
        let age = now_ms.saturating_sub(c.at);
        let step = match &c.response {
            Some(r) if age < self.config.exchange_lifetime_ms => Step::Send(r.to_vec()),
            None if age < IN_PROGRESS_MS => Step::Drop,
            _ => return None,
        };
        self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
        Some(step)
    }

    fn mark_in_progress(&self, now_ms: u64, key: (SocketAddr, u16), token: &[u8], crc: u32) {
        self.remember(now_ms, key, token, crc, None);
    }

    fn remember(
        &self,
        now_ms: u64,
        key: (SocketAddr, u16),
        token: &[u8],
        request: u32,
        response: Option<Arc<[u8]>>,
    ) {
        let Some(mut shard) = self.dedup.lock(&key) else {
            return;
        };
        let per_shard = (self.config.dedup_entries / SHARDS).max(1);
        let lifetime = self.config.exchange_lifetime_ms;
        while let Some(old) = shard.order.front().copied() {
            let expired = shard
                .map
                .get(&old)
                .is_none_or(|c| now_ms.saturating_sub(c.at) >= lifetime);
            if expired || shard.order.len() >= per_shard {
                shard.order.pop_front();
                shard.map.remove(&old);
            } else {
                break;
            }
        }
        let Ok(token) = heapless::Vec::from_slice(token) else {
            return;
        };
        match shard.map.entry(key) {
            Entry::Occupied(mut e) => {
                let c = e.get_mut();
                let seen = if c.request == request {
                    c.seen.max(now_ms)
                } else {
                    now_ms
                };
                *c = Cached {
                    token,
                    request,
                    at: now_ms,
                    seen,
                    response,
                };
            }
            Entry::Vacant(e) => {
                e.insert(Cached {
                    token,
                    request,
                    at: now_ms,
                    seen: now_ms,
                    response,
                });
                shard.order.push_back(key);
            }
        }
    }

    /// Reads the resource, method, options and payload of a (plain or inner) request.
    fn route(d: &Datagram<'_>) -> Result<Route, Reply<'static>> {
        let mut path: heapless::Vec<&[u8], 3> = heapless::Vec::new();
        let mut too_deep = false;
        let mut block = None;
        let mut payload: &[u8] = &[];
        for item in d.items() {
            let Ok(item) = item else {
                return Err(Reply::error(code::BAD_REQUEST, b"malformed options"));
            };
            let (number, value) = match item {
                // RFC 7252 section 3: a payload marker followed by nothing is a format error.
                Item::Payload([]) => return Err(Reply::error(code::BAD_REQUEST, b"empty payload")),
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
                    Err(_) => return Err(Reply::error(code::BAD_OPTION, b"bad Block2")),
                },
                opt::BLOCK1 => match Block::decode(value) {
                    Ok(b) if b.num == 0 && !b.more => {}
                    _ => return Err(Reply::error(code::TOO_LARGE, b"no block-wise uploads")),
                },
                opt::URI_HOST | opt::URI_PORT | opt::URI_QUERY | opt::ACCEPT => {}
                n if n & 1 == 1 => {
                    return Err(Reply::error(
                        code::BAD_OPTION,
                        b"unsupported critical option",
                    ))
                }
                _ => {}
            }
        }
        if too_deep || path.first() != Some(&resources::ROOT) {
            return Err(Reply::error(code::NOT_FOUND, b""));
        }
        match (path.get(1).copied(), path.get(2).copied(), d.code) {
            (Some(resources::CHECKIN), None, code::POST)
            | (Some(resources::REPORT), None, code::POST) => Ok(Route::Post(payload.to_vec())),
            (Some(resources::IMAGE), Some(seg), code::GET) => {
                let Some(image) = resources::parse_image_segment(seg) else {
                    return Err(Reply::error(code::NOT_FOUND, b""));
                };
                let block = block.unwrap_or(Block {
                    num: 0,
                    more: false,
                    szx: 6,
                });
                Ok(Route::Block { image, block })
            }
            (Some(resources::CHECKIN | resources::REPORT), None, _)
            | (Some(resources::IMAGE), Some(_), _) => {
                Err(Reply::error(code::METHOD_NOT_ALLOWED, b""))
            }
            _ => Err(Reply::error(code::NOT_FOUND, b"")),
        }
    }

    /// The block actually served for `asked`: its size capped at the configured block size.
    fn served_block(&self, asked: Block) -> Option<Block> {
        let size = asked.size().min(self.config.default_block.max(16));
        Block::new(asked.num, false, size).ok()
    }

    /// Caps the block of a routed image request; a block that cannot be expressed is 4.02.
    fn cap(&self, route: Route) -> Result<Route, Reply<'static>> {
        match route {
            Route::Block { image, block } => match self.served_block(block) {
                Some(block) => Ok(Route::Block { image, block }),
                None => Err(Reply::error(code::BAD_OPTION, b"bad Block2")),
            },
            other => Ok(other),
        }
    }
}
