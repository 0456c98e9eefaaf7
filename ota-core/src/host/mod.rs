//! The server side: a stateless handler from request bytes to reply bytes.
//!
//! Every request carries all the server needs to answer it, so any number of instances behind
//! a broker or a UDP load balancer can serve one fleet. Two ways to plug a fleet in:
//!
//! - [`app`]: request, the application's asynchronous decision ([`Application`]), reply; for
//!   servers that await a database or share the host side across tasks;
//! - [`Handler`]: a synchronous handler over [`DesiredState`] (what should this device run?)
//!   and [`ImageSource`] (bytes of an image), for simulators, tests and small servers. It is an
//!   [`Application`] too.

pub mod app;

pub use app::{answer, now_or_never, reply, reply_chunk, request, Application, Image, Request};

use std::collections::HashMap;
use std::sync::RwLock;

use ed25519_dalek::Signer as _;

use crate::manifest::{Manifest, SignedManifest};
use crate::wire::{
    self, CheckIn, CheckInReply, Chunk, DecodeError, DeferReason, Digest, ImageId, Message, Report,
    Signature, Urgency,
};

/// A signed manifest the server owns, with its decoded body and digest at hand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedManifest {
    body: Vec<u8>,
    signature: Signature,
    manifest: Manifest,
    digest: Digest,
}

/// A manifest that could not be taken apart.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("manifest body does not decode: {0}")]
pub struct MalformedManifest(postcard::Error);

impl OwnedManifest {
    /// From signed body bytes and their signature (the signature is not checked here); a
    /// patch manifest's patch is decoded too.
    pub fn new(body: Vec<u8>, signature: Signature) -> Result<Self, MalformedManifest> {
        let signed = SignedManifest {
            body: &body,
            signature,
        };
        let manifest = signed.decode_verified().map_err(|e| match e {
            crate::manifest::ManifestError::Malformed(p) => MalformedManifest(p),
            _ => MalformedManifest(postcard::Error::DeserializeBadEncoding),
        })?;
        let digest = signed.digest();
        Ok(Self {
            body,
            signature,
            manifest,
            digest,
        })
    }

    /// Signs `manifest` with an Ed25519 key.
    pub fn sign(manifest: &Manifest, key: &ed25519_dalek::SigningKey) -> Self {
        // Every Manifest field is representable in postcard, and the longest body is well under
        // 512 bytes; encoding cannot fail.
        let mut buf = [0u8; 512];
        let body = manifest
            .encode(&mut buf)
            .map(|b| b.to_vec())
            .unwrap_or_default();
        let signature = Signature(key.sign(&body).to_bytes());
        let digest = SignedManifest {
            body: &body,
            signature,
        }
        .digest();
        Self {
            body,
            signature,
            manifest: *manifest,
            digest,
        }
    }

    /// Borrowed wire form.
    pub fn as_signed(&self) -> SignedManifest<'_> {
        SignedManifest {
            body: &self.body,
            signature: self.signature,
        }
    }

    /// The decoded body.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// SHA-256 of the body.
    pub fn digest(&self) -> Digest {
        self.digest
    }

    /// Signed body bytes.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The signature.
    pub fn signature(&self) -> Signature {
        self.signature
    }
}

/// What a device should do, as decided by the fleet's desired state.
// One per request, moved into the reply and dropped: boxing the offer would only add an
// allocation per check-in.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing to do.
    UpToDate {
        /// Seconds until the next check-in.
        next_check_in: u32,
    },
    /// Offer this update.
    Offer {
        /// Image handle.
        image: ImageId,
        /// Its signed manifest.
        manifest: OwnedManifest,
        /// How strongly.
        urgency: Urgency,
        /// Seconds until the next check-in.
        next_check_in: u32,
    },
    /// Not now.
    Defer {
        /// Seconds until the device should ask again.
        retry_after: u32,
        /// Why.
        reason: DeferReason,
    },
    /// Abandon a download in progress.
    Cancel {
        /// Seconds until the next check-in.
        next_check_in: u32,
    },
}

/// Who sent a request, as the transport established it (never as the request claims).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer<'a> {
    /// Authenticated as this device: an OSCORE context, an MQTT login pinned to its topics.
    Device(&'a str),
    /// Nobody in particular: a transport without device identity, for lab use only (the
    /// transport decides whether to accept such requests at all).
    Anonymous,
}

/// The fleet's desired state, as the server keeps it.
pub trait DesiredState {
    /// What the device that sent `checkin` should do now.
    fn decide(&self, checkin: &CheckIn<'_>) -> Decision;
    /// What [`decide`](Self::decide) would answer `checkin` now, without recording anything:
    /// a server refreshing a device's published desired state after a rollout changed asks
    /// this of the device's last check-in. The default is `decide` itself, right for a desired
    /// state that records nothing.
    fn peek(&self, checkin: &CheckIn<'_>) -> Decision {
        self.decide(checkin)
    }
    /// A device reported progress or an outcome.
    fn on_report(&self, _report: &Report<'_>) {}
    /// May `device` fetch blocks of `image`? Only a release offered to it (or its class)
    /// should pass: images are not for whoever asks.
    fn may_fetch(&self, device: &str, image: ImageId) -> bool;
}

/// Why image bytes could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    /// No image with this id.
    #[error("unknown image {0:?}")]
    UnknownImage(ImageId),
    /// The offset is at or past the end of the image.
    #[error("offset {offset} is outside image {image:?} of {size} bytes")]
    OutOfRange {
        /// Image.
        image: ImageId,
        /// Requested offset.
        offset: u32,
        /// Image size.
        size: u32,
    },
    /// The store failed.
    #[error("image store: {0}")]
    Io(String),
}

/// Size and digest of a stored image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageInfo {
    /// Bytes.
    pub size: u32,
    /// SHA-256 of the whole image (transports derive cache validators such as a CoAP ETag).
    pub digest: Digest,
}

/// Reads image bytes.
pub trait ImageSource {
    /// Fills as much of `buf` as the image has from `offset`; returns the count.
    fn read_at(&self, image: ImageId, offset: u32, buf: &mut [u8]) -> Result<usize, ImageError>;
    /// Size and digest of an image.
    fn describe(&self, image: ImageId) -> Result<ImageInfo, ImageError>;
    /// The whole image, shared: what the CoAP server serves each block from. The default
    /// reads it whole through [`ImageSource::read_at`] on every call; a source that keeps
    /// images in memory returns its own copy (an `Arc` clone) so a block costs no image copy.
    fn image(&self, image: ImageId) -> Result<Image, ImageError> {
        let info = self.describe(image)?;
        let mut bytes = vec![0u8; info.size as usize];
        let mut at = 0usize;
        while at < bytes.len() {
            let offset = u32::try_from(at).unwrap_or(u32::MAX);
            let n = self.read_at(image, offset, bytes.get_mut(at..).unwrap_or(&mut []))?;
            if n == 0 {
                break;
            }
            at += n;
        }
        bytes.truncate(at);
        Ok(Image {
            info,
            bytes: bytes.into(),
        })
    }
}

impl<T: DesiredState + ?Sized> DesiredState for std::sync::Arc<T> {
    fn decide(&self, checkin: &CheckIn<'_>) -> Decision {
        (**self).decide(checkin)
    }
    fn peek(&self, checkin: &CheckIn<'_>) -> Decision {
        (**self).peek(checkin)
    }
    fn on_report(&self, report: &Report<'_>) {
        (**self).on_report(report)
    }
    fn may_fetch(&self, device: &str, image: ImageId) -> bool {
        (**self).may_fetch(device, image)
    }
}

impl<T: ImageSource + ?Sized> ImageSource for std::sync::Arc<T> {
    fn read_at(&self, image: ImageId, offset: u32, buf: &mut [u8]) -> Result<usize, ImageError> {
        (**self).read_at(image, offset, buf)
    }
    fn describe(&self, image: ImageId) -> Result<ImageInfo, ImageError> {
        (**self).describe(image)
    }
    fn image(&self, image: ImageId) -> Result<Image, ImageError> {
        (**self).image(image)
    }
}

/// Why a request got no reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandlerError {
    /// The bytes are not a message.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A message only a server sends (a reply or a chunk).
    #[error("message is not a request")]
    NotARequest,
    /// A chunk request for zero bytes.
    #[error("chunk request for zero bytes")]
    EmptyChunk,
    /// The image could not be read.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// A check-in or report claims another device id than the one the transport
    /// authenticated.
    #[error("request claims device {claimed:?} but comes from {authenticated:?}")]
    NotYourId {
        /// The id in the message.
        claimed: String,
        /// The id the transport established.
        authenticated: String,
    },
    /// The device may not fetch this image (not offered to it).
    #[error("{device:?} may not fetch image {image:?}")]
    Forbidden {
        /// The device.
        device: String,
        /// The image.
        image: ImageId,
    },
}

/// The stateless request handler.
#[derive(Debug)]
pub struct Handler<D, I> {
    desired: D,
    images: I,
    max_chunk: u16,
}

impl<D: DesiredState, I: ImageSource> Handler<D, I> {
    /// A handler that serves chunks of at most `max_chunk` bytes.
    pub fn new(desired: D, images: I, max_chunk: u16) -> Self {
        Self {
            desired,
            images,
            max_chunk: max_chunk.clamp(1, wire::MAX_CHUNK_PAYLOAD as u16),
        }
    }

    /// The desired-state provider.
    pub fn desired(&self) -> &D {
        &self.desired
    }

    /// The image source.
    pub fn images(&self) -> &I {
        &self.images
    }

    /// Answers one request from `peer`: `Ok(Some(reply))`, `Ok(None)` for a report (nothing to
    /// say), or a typed error for bytes that are not a valid request or not `peer`'s to send.
    pub fn handle(&self, request: &[u8], peer: Peer<'_>) -> Result<Option<Vec<u8>>, HandlerError> {
        self.respond(wire::decode(request)?, peer)
    }

    /// Checks that a check-in or report from `peer` speaks for `peer` alone.
    pub fn check_claim(peer: Peer<'_>, claimed: &[u8]) -> Result<(), HandlerError> {
        check_claim(peer, claimed)
    }

    /// Checks that `peer` may fetch blocks of `image` ([`DesiredState::may_fetch`]; anonymous
    /// peers are the transport's decision).
    pub fn authorize_fetch(&self, peer: Peer<'_>, image: ImageId) -> Result<(), HandlerError> {
        match peer {
            Peer::Device(id) if !self.desired.may_fetch(id, image) => {
                Err(HandlerError::Forbidden {
                    device: id.to_string(),
                    image,
                })
            }
            _ => Ok(()),
        }
    }

    /// [`Handler::handle`] for a request already decoded (a transport that looked inside it
    /// first, to route or authorise it, need not decode it twice).
    pub fn respond(
        &self,
        request: Message<'_>,
        peer: Peer<'_>,
    ) -> Result<Option<Vec<u8>>, HandlerError> {
        match request {
            Message::CheckIn(checkin) => {
                Self::check_claim(peer, checkin.device_id)?;
                Ok(Some(self.with_reply(&checkin, |m| wire::encode_vec(&m))))
            }
            Message::ChunkRequest(req) => {
                if req.len == 0 {
                    return Err(HandlerError::EmptyChunk);
                }
                self.authorize_fetch(peer, req.image)?;
                let mut buf = vec![0u8; usize::from(req.len.min(self.max_chunk))];
                let n = self.images.read_at(req.image, req.offset, &mut buf)?;
                buf.truncate(n);
                let chunk = Chunk::new(req.image, req.offset, &buf);
                Ok(Some(wire::encode_vec(&Message::Chunk(chunk))))
            }
            Message::Report(report) => {
                Self::check_claim(peer, report.device_id)?;
                self.desired.on_report(&report);
                Ok(None)
            }
            Message::CheckInReply(_) | Message::Chunk(_) => Err(HandlerError::NotARequest),
        }
    }

    /// Builds the reply to a check-in and hands it to `f` (borrowing the manifest, no copy).
    pub fn with_reply<R>(&self, checkin: &CheckIn<'_>, f: impl FnOnce(Message<'_>) -> R) -> R {
        shape_reply(self.desired.decide(checkin), checkin, f)
    }

    /// The desired state of the device whose last check-in was `checkin`, as it stands now
    /// ([`DesiredState::peek`]: nothing is recorded), encoded as [`desired_state`] does.
    pub fn desired_state(&self, checkin: &CheckIn<'_>) -> Vec<u8> {
        desired_state_of(self.desired.peek(checkin), checkin)
    }
}

/// Checks that a check-in or report from `peer` speaks for `peer` alone.
pub fn check_claim(peer: Peer<'_>, claimed: &[u8]) -> Result<(), HandlerError> {
    match peer {
        Peer::Device(id) if id.as_bytes() != claimed => Err(HandlerError::NotYourId {
            claimed: String::from_utf8_lossy(claimed).into_owned(),
            authenticated: id.to_string(),
        }),
        _ => Ok(()),
    }
}

/// The desired state (as [`desired_state`] encodes it) that `decision` gives the device whose
/// last check-in was `checkin`.
pub fn desired_state_of(decision: Decision, checkin: &CheckIn<'_>) -> Vec<u8> {
    shape_reply(decision, checkin, |m| match m {
        Message::CheckInReply(r) => desired_state(&r, checkin.running.digest),
        other => wire::encode_vec(&other),
    })
}

/// The reply `decision` makes to `checkin` (see [`app::reply`]), handed to `f` borrowing the
/// manifest.
pub fn shape_reply<R>(
    decision: Decision,
    checkin: &CheckIn<'_>,
    f: impl FnOnce(Message<'_>) -> R,
) -> R {
    let reply = match decision {
        Decision::UpToDate { next_check_in } => CheckInReply::UpToDate { next_check_in },
        Decision::Defer {
            retry_after,
            reason,
        } => CheckInReply::Defer {
            retry_after,
            reason,
        },
        Decision::Cancel { next_check_in } => CheckInReply::Cancel { next_check_in },
        Decision::Offer {
            image,
            manifest,
            urgency,
            next_check_in,
        } => {
            if checkin.running.sequence >= manifest.manifest().sequence {
                // Never offer what the device already runs or something older.
                return f(Message::CheckInReply(CheckInReply::UpToDate {
                    next_check_in,
                }));
            }
            if manifest.manifest().chunk_size > checkin.caps.max_chunk {
                // Chunks its link cannot carry: an offer would only be refused.
                return f(Message::CheckInReply(CheckInReply::Defer {
                    retry_after: next_check_in,
                    reason: DeferReason::Unsupported,
                }));
            }
            let resumed = checkin
                .resume
                .filter(|hint| hint.manifest == manifest.digest().prefix());
            let resume_from = resumed
                .map(|h| h.next_offset.min(manifest.manifest().transfer_size()))
                .unwrap_or(0);
            return f(Message::CheckInReply(CheckInReply::Update {
                image,
                manifest: resumed.is_none().then(|| manifest.as_signed()),
                resume_from,
                urgency,
                next_check_in,
            }));
        }
    };
    f(Message::CheckInReply(reply))
}

/// A reply in the compact form a server publishes as a device's desired state (an MQTT
/// retained message, say), for a device running the image whose digest starts `running`: the
/// reply itself, but an offer leaves out its manifest and resume point, which the device gets by
/// checking in. A device only needs to tell `UpToDate` (sleep again) from anything else (check
/// in), and checks in anyway if it no longer runs `running` ([`wire::decode_desired`]).
pub fn desired_state(reply: &CheckInReply<'_>, running: wire::DigestPrefix) -> Vec<u8> {
    let compact = match *reply {
        CheckInReply::Update {
            image,
            urgency,
            next_check_in,
            ..
        } => CheckInReply::Update {
            image,
            manifest: None,
            resume_from: 0,
            urgency,
            next_check_in,
        },
        ref other => other.clone(),
    };
    let mut buf = [0u8; 64];
    let n = wire::encode_desired(&compact, running, &mut buf).unwrap_or(0);
    buf.get(..n).unwrap_or(&[]).to_vec()
}

/// [`ImageSource::read_at`] over an image held as bytes: copies what `bytes` has from `offset`
/// into `buf`; an offset at or past the end is [`ImageError::OutOfRange`].
pub fn read_slice(
    image: ImageId,
    bytes: &[u8],
    offset: u32,
    buf: &mut [u8],
) -> Result<usize, ImageError> {
    let tail = bytes
        .get(offset as usize..)
        .filter(|t| !t.is_empty())
        .ok_or(ImageError::OutOfRange {
            image,
            offset,
            size: u32::try_from(bytes.len()).unwrap_or(u32::MAX),
        })?;
    let n = tail.len().min(buf.len());
    buf.iter_mut().zip(tail).for_each(|(d, s)| *d = *s);
    Ok(n)
}

/// Images held in memory, for tests, simulators and small servers.
#[derive(Debug, Default)]
pub struct MemImages {
    images: RwLock<HashMap<ImageId, Image>>,
}

impl MemImages {
    /// Empty.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces an image.
    pub fn insert(&self, id: ImageId, bytes: Vec<u8>) {
        let image = Image::new(bytes.into());
        if let Ok(mut map) = self.images.write() {
            map.insert(id, image);
        }
    }

    fn get(&self, id: ImageId) -> Result<Image, ImageError> {
        let map = self
            .images
            .read()
            .map_err(|_| ImageError::Io("lock poisoned".into()))?;
        map.get(&id).cloned().ok_or(ImageError::UnknownImage(id))
    }
}

impl ImageSource for MemImages {
    fn read_at(&self, image: ImageId, offset: u32, buf: &mut [u8]) -> Result<usize, ImageError> {
        self.get(image)?.read_at(image, offset, buf)
    }

    fn describe(&self, image: ImageId) -> Result<ImageInfo, ImageError> {
        Ok(self.get(image)?.info)
    }

    fn image(&self, image: ImageId) -> Result<Image, ImageError> {
        self.get(image)
    }
}

/// The simplest desired state: one release offered to every device of its vendor and class
/// whose running sequence is older.
#[derive(Debug, Clone)]
pub struct SingleRelease {
    /// Image handle.
    pub image: ImageId,
    /// Its manifest.
    pub manifest: OwnedManifest,
    /// Urgency to offer it with.
    pub urgency: Urgency,
    /// Seconds between check-ins.
    pub next_check_in: u32,
}

impl DesiredState for SingleRelease {
    fn decide(&self, checkin: &CheckIn<'_>) -> Decision {
        let m = self.manifest.manifest();
        if checkin.vendor != m.vendor
            || checkin.class != m.class
            || checkin.running.sequence >= m.sequence
        {
            return Decision::UpToDate {
                next_check_in: self.next_check_in,
            };
        }
        Decision::Offer {
            image: self.image,
            manifest: self.manifest.clone(),
            urgency: self.urgency,
            next_check_in: self.next_check_in,
        }
    }

    fn may_fetch(&self, _device: &str, image: ImageId) -> bool {
        image == self.image
    }
}
