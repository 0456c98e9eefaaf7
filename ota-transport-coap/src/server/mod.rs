//! The host side: an [`Engine`] that answers datagrams (the protocol, sans-IO, shared by every
//! task), [`serve_app`] that runs it on any number of `SO_REUSEPORT` sockets with an
//! asynchronous [`Application`](ota_core::host::Application) deciding, and [`Responder`], the
//! synchronous wrapper over a [`Handler`] for tests, fuzzing and benchmarks.
//!
//! Every request is OSCORE-protected ([`Security::Oscore`]): the device's security context,
//! found by the request's kid through [`DeviceKeys`], names the device, and a check-in or report
//! that claims another id gets 4.03. Requests without OSCORE get 4.01 and create nothing, unless
//! the server was built with [`Security::PlainForLab`] (lab use only: anyone can then speak
//! for any device). Replays are refused by a window per context and, for check-ins and reports,
//! by a floor the key store keeps across restarts and instances ([`DeviceKeys::advance`]).
//!
//! Confirmable requests get piggybacked responses in an ACK; non-confirmable ones a NON
//! response. A repeated confirmable or non-confirmable POST (same peer, message id and token)
//! gets the cached response instead of being processed twice (and is dropped while the first
//! is still being decided); GETs are idempotent and are simply answered again. Nothing from the
//! wire is trusted: sizes, block numbers, paths and ids are bounds-checked, unknown critical
//! options get 4.02, malformed messages are dropped or reset.
//!
//! | module | what it holds |
//! |---|---|
//! | [`engine`] | [`Engine`]: message layer, deduplication, OSCORE, routing |
//! | [`stats`] | counters and the latency histogram of a running server |
//! | [`socket`] | `SO_REUSEPORT` sockets with a large receive buffer, and the serving loops |

mod copies;
pub mod engine;
pub mod socket;
pub mod stats;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use ota_core::host::{now_or_never, DesiredState, Handler, HandlerError, ImageError, ImageSource};

pub use copies::COPY_MS;
pub use engine::{Answer, Engine, Pending, Step, What, MAX_CONTEXTS};
pub use socket::{bind, serve_app, serve_app_on};
pub use stats::{LatencyHistogram, ServerStats};

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

/// A boxed future borrowing the key store.
pub type KeyFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where the server finds device credentials: the server's store.
///
/// A store that must wait (a database over the network, a batched write) implements the
/// `_async` methods; the synchronous ones serve [`Responder::respond`] and are what the `_async`
/// ones call by default.
pub trait DeviceKeys: Send + Sync {
    /// The credentials whose device sender id is `kid`, if provisioned.
    fn lookup(&self, kid: &[u8]) -> Option<DeviceKey>;
    /// Records that a check-in or report of `device` with sequence number `seq` is being
    /// processed; `false` if `seq` is not above the one recorded (a replay, perhaps to another
    /// instance). Durable and atomic: two instances never both get `true` for one number.
    fn advance(&self, device: &str, seq: u64) -> bool;
    /// [`lookup`](Self::lookup), awaited.
    fn lookup_async<'a>(&'a self, kid: &'a [u8]) -> KeyFuture<'a, Option<DeviceKey>> {
        Box::pin(std::future::ready(self.lookup(kid)))
    }
    /// [`advance`](Self::advance), awaited.
    fn advance_async<'a>(&'a self, device: &'a str, seq: u64) -> KeyFuture<'a, bool> {
        Box::pin(std::future::ready(self.advance(device, seq)))
    }
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

/// A refused request, as handed to [`Engine::on_refusal`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Who sent it.
    pub peer: SocketAddr,
    /// The response code sent (4.00, 4.01, 4.03).
    pub code: u8,
    /// Why, in words.
    pub reason: String,
}

type RefusalLog = Box<dyn Fn(&Refusal) + Send + Sync>;

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

/// The synchronous server: an [`Engine`] over a [`Handler`], one datagram at a time. For
/// fuzzing, benchmarks and tests; a server serves with [`serve_app`].
pub struct Responder<D, I> {
    engine: Arc<Engine>,
    handler: Arc<Handler<D, I>>,
}

impl<D: DesiredState, I: ImageSource> Responder<D, I> {
    /// A responder over `handler`, authenticating requests as `security` says.
    pub fn new(handler: Arc<Handler<D, I>>, config: ServerConfig, security: Security) -> Self {
        Self {
            engine: Arc::new(Engine::new(config, security)),
            handler,
        }
    }

    /// Calls `log` for every refused request (4.01, 4.03, replays), so the server can log it.
    pub fn on_refusal(self, log: impl Fn(&Refusal) + Send + Sync + 'static) -> Self {
        let engine = Arc::try_unwrap(self.engine)
            .map(|e| Arc::new(e.on_refusal(log)))
            .unwrap_or_else(|shared| shared);
        Self {
            engine,
            handler: self.handler,
        }
    }

    /// The counters.
    pub fn stats(&self) -> Arc<ServerStats> {
        self.engine.stats()
    }

    /// The engine (to serve it with [`serve_app`]).
    pub fn engine(&self) -> Arc<Engine> {
        self.engine.clone()
    }

    /// The handler.
    pub fn handler(&self) -> Arc<Handler<D, I>> {
        self.handler.clone()
    }

    /// Answers one datagram from `peer` at `now_ms`; `Some(n)`: send `out[..n]` back. The key
    /// store's futures must be ready at once (as the synchronous [`DeviceKeys`] methods make
    /// them); one that would wait drops the datagram.
    pub fn respond(
        &mut self,
        now_ms: u64,
        peer: SocketAddr,
        datagram: &[u8],
        out: &mut [u8],
    ) -> Option<usize> {
        let step = now_or_never(self.engine.request(now_ms, peer, datagram))?;
        let bytes = match step {
            Step::Send(b) => b,
            Step::Drop => return None,
            Step::Decide(p) => {
                let answer = self.decide(&p);
                self.engine.reply(p, answer)?
            }
        };
        let dst = out.get_mut(..bytes.len())?;
        dst.copy_from_slice(&bytes);
        Some(bytes.len())
    }

    fn decide(&self, p: &Pending) -> Answer {
        let peer = p.peer();
        match p.what() {
            What::Message(payload) => match self.handler.handle(payload, peer) {
                Ok(Some(reply)) => Answer::Changed(reply),
                Ok(None) => Answer::Changed(Vec::new()),
                Err(e) => Answer::Refused(e),
            },
            What::Block { image, offset, len } => {
                if let Err(e) = self.handler.authorize_fetch(peer, image) {
                    return Answer::Refused(e);
                }
                let images = self.handler.images();
                let info = match images.describe(image) {
                    Ok(i) => i,
                    Err(e) => return Answer::Refused(e.into()),
                };
                if offset >= info.size {
                    return Answer::Block(info, Vec::new());
                }
                let mut buf = vec![0u8; len.min(info.size - offset) as usize];
                match images.read_at(image, offset, &mut buf) {
                    Ok(n) => {
                        buf.truncate(n);
                        Answer::Block(info, buf)
                    }
                    Err(ImageError::OutOfRange { .. }) => Answer::Block(info, Vec::new()),
                    Err(e) => Answer::Refused(HandlerError::Image(e)),
                }
            }
        }
    }
}

/// What the application answers to `pending` (the asynchronous counterpart of
/// [`Responder`]'s decision): a check-in or report through [`ota_core::host::answer`], an image
/// block through [`ota_core::host::Application::image`].
pub async fn decide<A: ota_core::host::Application + ?Sized>(
    app: &A,
    pending: &Pending,
    max_chunk: u16,
) -> Answer {
    let peer = pending.peer();
    match pending.what() {
        What::Message(payload) => {
            match ota_core::host::answer(app, payload, peer, max_chunk).await {
                Ok(Some(reply)) => Answer::Changed(reply),
                Ok(None) => Answer::Changed(Vec::new()),
                Err(e) => Answer::Refused(e),
            }
        }
        What::Block { image, offset, len } => match app.image(peer, image, offset, len).await {
            Ok(img) => Answer::Image(img),
            Err(e) => Answer::Refused(e),
        },
    }
}

/// Serves `responder` on `socket` until the task is dropped or the socket fails: the
/// responder's handler decides, requests are answered concurrently ([`serve_app_on`]).
pub async fn serve<D, I>(
    socket: tokio::net::UdpSocket,
    responder: Responder<D, I>,
) -> std::io::Result<()>
where
    D: DesiredState + Send + Sync + 'static,
    I: ImageSource + Send + Sync + 'static,
{
    serve_app_on(vec![socket], responder.engine, responder.handler).await
}
