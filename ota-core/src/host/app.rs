//! The host side split in three, so the application decides asynchronously:
//!
//! 1. [`request`]: the bytes a transport received, decoded and checked against the peer the
//!    transport authenticated (a check-in or report that claims another device is refused
//!    here, before the application sees it);
//! 2. the application's decision, awaited: [`Application::check_in`], [`Application::report`]
//!    or [`Application::image`] (which authorizes the fetch and hands over the image);
//! 3. [`reply`] (or [`reply_chunk`]): the decision encoded as reply bytes.
//!
//! [`answer`] runs the three for transports that carry `ota-core` messages as they are (MQTT);
//! CoAP maps image blocks onto RFC 7959 itself and calls [`Application::image`] directly.
//! Nothing here touches a socket or a clock: a server may await a database in step 2 while
//! other requests proceed.
//!
//! A synchronous [`Handler`] is an [`Application`] too (its futures are ready at once), so
//! simulators and tests keep using [`DesiredState`] and [`ImageSource`].

use std::future::Future;
use std::sync::Arc;

use crate::host::{
    Decision, DesiredState, Handler, HandlerError, ImageError, ImageInfo, ImageSource, Peer,
};
use crate::wire::{self, CheckIn, Chunk, ChunkRequest, ImageId, Message, Report};

/// An image the application handed over for a device: its size and digest, and its bytes
/// (shared, so a server keeps one copy however many devices fetch it).
#[derive(Debug, Clone)]
pub struct Image {
    /// Size and digest.
    pub info: ImageInfo,
    /// The whole image.
    pub bytes: Arc<[u8]>,
}

impl Image {
    /// An image of `bytes`, with its SHA-256 worked out.
    pub fn new(bytes: Arc<[u8]>) -> Self {
        use sha2::Digest as _;
        let info = ImageInfo {
            size: u32::try_from(bytes.len()).unwrap_or(u32::MAX),
            digest: wire::Digest(sha2::Sha256::digest(&bytes).into()),
        };
        Self { info, bytes }
    }

    /// Copies what the image has from `offset` into `buf` ([`super::read_slice`]).
    pub fn read_at(&self, id: ImageId, offset: u32, buf: &mut [u8]) -> Result<usize, ImageError> {
        super::read_slice(id, &self.bytes, offset, buf)
    }
}

/// The application's half of the host side: what the fleet decides, asynchronously. Every call
/// carries the peer the transport authenticated; [`request`] has already refused check-ins and
/// reports that claim another device.
pub trait Application: Send + Sync {
    /// What the device that sent `checkin` should do now (and record that it checked in).
    fn check_in(
        &self,
        peer: Peer<'_>,
        checkin: &CheckIn<'_>,
    ) -> impl Future<Output = Decision> + Send;
    /// A device reported progress or an outcome.
    fn report(&self, peer: Peer<'_>, report: &Report<'_>) -> impl Future<Output = ()> + Send;
    /// Image `image` for `peer`, who asks for bytes `offset..offset + len` of it, if it may
    /// fetch it ([`HandlerError::Forbidden`] if not, an [`HandlerError::Image`] if it cannot be
    /// read). Called for every block: an application keeps the image and its info at hand
    /// rather than reading or describing it each time; it may count what each device fetched.
    fn image(
        &self,
        peer: Peer<'_>,
        image: ImageId,
        offset: u32,
        len: u32,
    ) -> impl Future<Output = Result<Image, HandlerError>> + Send;
}

impl<A: Application + ?Sized> Application for Arc<A> {
    fn check_in(
        &self,
        peer: Peer<'_>,
        checkin: &CheckIn<'_>,
    ) -> impl Future<Output = Decision> + Send {
        (**self).check_in(peer, checkin)
    }
    fn report(&self, peer: Peer<'_>, report: &Report<'_>) -> impl Future<Output = ()> + Send {
        (**self).report(peer, report)
    }
    fn image(
        &self,
        peer: Peer<'_>,
        image: ImageId,
        offset: u32,
        len: u32,
    ) -> impl Future<Output = Result<Image, HandlerError>> + Send {
        (**self).image(peer, image, offset, len)
    }
}

/// A decoded request, checked against its peer, waiting for the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request<'a> {
    /// A check-in (the claimed id is the peer's).
    CheckIn(CheckIn<'a>),
    /// A chunk request (for a non-zero length).
    Chunk(ChunkRequest),
    /// A report (the claimed id is the peer's).
    Report(Report<'a>),
}

/// Step 1: decodes `bytes` from `peer` and checks that a check-in or report speaks for `peer`
/// alone and that a chunk request asks for something.
pub fn request<'a>(bytes: &'a [u8], peer: Peer<'_>) -> Result<Request<'a>, HandlerError> {
    checked(wire::decode(bytes)?, peer)
}

/// [`request`] for a message already decoded.
pub fn checked<'a>(message: Message<'a>, peer: Peer<'_>) -> Result<Request<'a>, HandlerError> {
    match message {
        Message::CheckIn(c) => {
            super::check_claim(peer, c.device_id)?;
            Ok(Request::CheckIn(c))
        }
        Message::Report(r) => {
            super::check_claim(peer, r.device_id)?;
            Ok(Request::Report(r))
        }
        Message::ChunkRequest(c) if c.len == 0 => Err(HandlerError::EmptyChunk),
        Message::ChunkRequest(c) => Ok(Request::Chunk(c)),
        Message::CheckInReply(_) | Message::Chunk(_) => Err(HandlerError::NotARequest),
    }
}

/// Step 3 for a check-in: the reply to `checkin` given the application's `decision`, encoded.
/// An offer of what the device already runs (or older) becomes "up to date"; an offer whose
/// chunks the device's link cannot carry becomes a deferral; a resume hint for the offered
/// manifest resumes, and then the manifest is not sent again.
pub fn reply(decision: Decision, checkin: &CheckIn<'_>) -> Vec<u8> {
    super::shape_reply(decision, checkin, |m| wire::encode_vec(&m))
}

/// Step 3 for a chunk request: up to `max_chunk` bytes of `image` at the request's offset.
pub fn reply_chunk(
    req: &ChunkRequest,
    image: &Image,
    max_chunk: u16,
) -> Result<Vec<u8>, HandlerError> {
    let mut buf = vec![0u8; usize::from(req.len.min(max_chunk))];
    let n = image.read_at(req.image, req.offset, &mut buf)?;
    buf.truncate(n);
    Ok(wire::encode_vec(&Message::Chunk(Chunk::new(
        req.image, req.offset, &buf,
    ))))
}

/// All three steps for one request from `peer`: `Ok(Some(reply))`, `Ok(None)` for a report,
/// or why it got no reply.
pub async fn answer<A: Application + ?Sized>(
    app: &A,
    bytes: &[u8],
    peer: Peer<'_>,
    max_chunk: u16,
) -> Result<Option<Vec<u8>>, HandlerError> {
    answer_checked(app, request(bytes, peer)?, peer, max_chunk).await
}

/// [`answer`] for a request already through step 1.
pub async fn answer_checked<A: Application + ?Sized>(
    app: &A,
    request: Request<'_>,
    peer: Peer<'_>,
    max_chunk: u16,
) -> Result<Option<Vec<u8>>, HandlerError> {
    match request {
        Request::CheckIn(c) => {
            let decision = app.check_in(peer, &c).await;
            Ok(Some(reply(decision, &c)))
        }
        Request::Report(r) => {
            app.report(peer, &r).await;
            Ok(None)
        }
        Request::Chunk(req) => {
            let max = max_chunk.clamp(1, wire::MAX_CHUNK_PAYLOAD as u16);
            let len = u32::from(req.len.min(max));
            let image = app.image(peer, req.image, req.offset, len).await?;
            reply_chunk(&req, &image, max).map(Some)
        }
    }
}

/// A synchronous handler as an application: decisions from its [`DesiredState`], images read
/// whole from its [`ImageSource`] (fine for the small in-memory images of tests and
/// simulators; a server keeps its images at hand instead).
impl<D, I> Application for Handler<D, I>
where
    D: DesiredState + Send + Sync,
    I: ImageSource + Send + Sync,
{
    fn check_in(
        &self,
        _peer: Peer<'_>,
        checkin: &CheckIn<'_>,
    ) -> impl Future<Output = Decision> + Send {
        std::future::ready(self.desired().decide(checkin))
    }

    fn report(&self, _peer: Peer<'_>, report: &Report<'_>) -> impl Future<Output = ()> + Send {
        self.desired().on_report(report);
        std::future::ready(())
    }

    fn image(
        &self,
        peer: Peer<'_>,
        image: ImageId,
        _offset: u32,
        _len: u32,
    ) -> impl Future<Output = Result<Image, HandlerError>> + Send {
        let read = || -> Result<Image, HandlerError> {
            self.authorize_fetch(peer, image)?;
            Ok(self.images().image(image)?)
        };
        std::future::ready(read())
    }
}

/// Polls `f` once: its output if it is ready at once (as every future of a synchronous
/// [`Handler`] is), `None` if it would wait. Lets sans-IO callers drive async code that does
/// not actually wait.
pub fn now_or_never<F: Future>(f: F) -> Option<F::Output> {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => Some(v),
        std::task::Poll::Pending => None,
    }
}
