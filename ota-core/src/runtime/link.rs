//! What the wake loop needs from a transport.

use core::future::Future;

use crate::device::Transmit;
use crate::time::Instant;
use crate::wire::{Chunk, DigestPrefix};

/// Most bytes an `ota-core` chunk message carries besides its payload (kind, image, offset,
/// length, CRC), for links that carry the wire messages as they are.
pub const WIRE_CHUNK_OVERHEAD: u16 = 32;

/// The smallest chunk a power-of-two link carries (CoAP Block2's 16 bytes).
pub const MIN_POW2_CHUNK: u16 = 16;

/// What a link allows, so the device never accepts an offer it cannot fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkLimits {
    /// Largest chunk payload the link carries in one message.
    pub max_chunk: u16,
    /// Chunk sizes must be powers of two (CoAP Block2: 16 to 1024); never below
    /// [`MIN_POW2_CHUNK`].
    pub pow2_chunks: bool,
    /// Most bytes a received message carries besides a chunk's payload (headers, options,
    /// tags): a receive buffer of `max_chunk + overhead` bytes holds any chunk message, and a
    /// smaller one narrows the chunks the device asks for ([`LinkLimits::apply_within`]).
    pub overhead: u16,
    /// A request sent twice is two chances to get through, and the server answers one
    /// (datagrams lost one by one: CoAP over UDP). Off for a stream (MQTT over TCP), which
    /// resends by itself; [`DeviceConfig::request_copies`] follows it.
    ///
    /// [`DeviceConfig::request_copies`]: crate::device::DeviceConfig::request_copies
    pub copies: bool,
}

impl LinkLimits {
    /// Narrows a device's configuration to what the link carries: the largest chunk, and for
    /// links that need powers of two the largest power of two within it, so the check-in never
    /// invites an offer the link cannot fetch.
    pub fn apply(&self, config: &mut crate::device::DeviceConfig) {
        self.apply_within(config, usize::MAX);
    }

    /// [`LinkLimits::apply`] for a device whose messages arrive in a buffer of `rx` bytes: the
    /// largest chunk it offers to take also leaves room for the link's overhead, so a chunk
    /// that would not fit the buffer is never invited.
    pub fn apply_within(&self, config: &mut crate::device::DeviceConfig, rx: usize) {
        let room = rx.saturating_sub(usize::from(self.overhead));
        let room = u16::try_from(room).unwrap_or(u16::MAX);
        config.max_chunk = config.max_chunk.min(self.max_chunk).min(room).max(1);
        config.request_copies &= self.copies;
        if self.pow2_chunks {
            config.pow2_chunks = true;
            config.max_chunk = 1 << (15 - config.max_chunk.leading_zeros());
            // Block2's smallest block: a device that announced less could fetch nothing.
            config.max_chunk = config.max_chunk.max(MIN_POW2_CHUNK);
        }
    }
}

/// What a link may want to know when it opens a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenContext {
    /// The first 8 bytes of the SHA-256 of the image the device runs.
    pub running: DigestPrefix,
    /// Nothing in progress and nothing to report: a retained "up to date" for `running` may
    /// settle the wake without a check-in.
    pub idle: bool,
    /// When the wake's time budget ends, if it has one.
    pub deadline: Option<Instant>,
}

/// The result of opening a session.
pub enum Opened<S> {
    /// The link learned that the device is up to date without a check-in (an MQTT retained
    /// desired state), and closed itself: sleep `sleep_secs`.
    Settled {
        /// Seconds until the next wake.
        sleep_secs: u32,
    },
    /// A session to check in over.
    Session(S),
}

/// Why a link operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkError<E> {
    /// The session is gone (connection dropped): open another.
    Lost,
    /// The link cannot take this message now (every slot awaits an acknowledgement): offer it
    /// again after the next receive.
    Busy,
    /// The wake cannot go on (credentials refused, buffers too small).
    Fatal(E),
}

/// What arrived.
#[derive(Debug)]
pub enum Incoming<'b> {
    /// An `ota-core` message (a check-in reply, a chunk in `ota-core` framing).
    Message(&'b [u8]),
    /// A chunk in the transport's own framing (CoAP Block2), checked by the link against
    /// the request it answers.
    Chunk(Chunk<'b>),
    /// Something the link dealt with itself, or that was of no use (an acknowledgement, a late
    /// duplicate, an error response): it still cost bytes.
    Nothing,
}

/// A transport, opened once per wake (and again after a lost session).
pub trait Link {
    /// The transport's error.
    type Error: core::fmt::Debug;
    /// A session of this wake.
    type Session<'a>: Session<Error = Self::Error>
    where
        Self: 'a;

    /// What the link allows.
    fn limits(&self) -> LinkLimits;

    /// Opens a session: connects, subscribes, and may learn "up to date" on the way.
    fn open(
        &mut self,
        ctx: OpenContext,
    ) -> impl Future<Output = Result<Opened<Self::Session<'_>>, LinkError<Self::Error>>>;

    /// Hands the link the counter it keeps in storage (OSCORE sequence numbers), as stored.
    fn restore_counter(&mut self, _stored: u64) {}

    /// After the wake: the exact counter to store, so the next wake starts there.
    fn settle_counter(&mut self) -> Option<u64> {
        None
    }

    /// Bytes the link carried (sent, received) since last asked, framing, acknowledgements,
    /// connection set-up and lost datagrams it knows of included. The loop asks after opening,
    /// after every send and receive, and at the end, and counts them into the device's byte
    /// budget and statistics.
    fn take_link_bytes(&mut self) -> (u64, u64) {
        (0, 0)
    }
}

/// One session of a wake.
pub trait Session {
    /// The transport's error.
    type Error: core::fmt::Debug;

    /// Sends one message the state machine produced: `msg` is the `t.len` bytes it encoded;
    /// a link that [copies](LinkLimits::copies) sends the datagram twice if `t.twice`.
    fn send(
        &mut self,
        t: Transmit,
        msg: &[u8],
    ) -> impl Future<Output = Result<(), LinkError<Self::Error>>>;

    /// Waits until `deadline` for something to arrive (`Ok(None)`: nothing came). A message
    /// is returned in `buf`, where it arrived or was decrypted: the wake hands it to the state
    /// machine from there, and drops one that lies anywhere else.
    fn recv<'b>(
        &mut self,
        buf: &'b mut [u8],
        deadline: Instant,
    ) -> impl Future<Output = Result<Option<Incoming<'b>>, LinkError<Self::Error>>>;

    /// Ends the session (`cut_short`: the wake ended with requests unanswered).
    fn close(self, cut_short: bool) -> impl Future<Output = ()>;

    /// See [`Link::take_link_bytes`].
    fn take_link_bytes(&mut self) -> (u64, u64) {
        (0, 0)
    }

    /// Whether the server drops the second copy of a request sent twice back to back, once
    /// the link has learnt it (CoAP: an option in a check-in response that offers a
    /// download, or its absence); the loop tells the device
    /// ([`crate::device::Device::server_drops_copies`]).
    fn drops_copies(&self) -> Option<bool> {
        None
    }

    /// A counter value the link needs stored before it can send again, if any (an OSCORE
    /// sequence reservation); the loop stores it and calls [`Session::counter_stored`].
    fn counter_to_store(&mut self) -> Option<u64> {
        None
    }

    /// `value` from [`Session::counter_to_store`] is durable.
    fn counter_stored(&mut self, _value: u64) {}
}
