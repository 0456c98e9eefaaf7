//! [`CoapLink`]: CoAP over a datagram socket as an `ota-core` runtime [`Link`], for the
//! device's async wake loop ([`ota_core::runtime::run_wake`]); [`run_wake_blocking`] runs it
//! over a blocking socket.

use core::future::Future;

use ota_core::device::{Device, DeviceConfig, Event, Transmit};
use ota_core::manifest::Verifier;
use ota_core::runtime::block::{block_on, BlockingClock, BusyClock};
use ota_core::runtime::{
    run_wake, Blocking, Incoming, Link, LinkError, LinkLimits, OpenContext, Opened, Session,
    WakeEnd, WakeError, WakeOptions,
};
use ota_core::storage::{CounterStore, UpdateStorage};
use ota_core::time::Instant;
use ota_core::wire::{WakeBudget, MAX_SENT_LEN};

use crate::framing::{CoapFraming, Parsed, EXCHANGES};

/// What CoAP allows: Block2 sizes are powers of two from 16 to 1024.
pub const LIMITS: LinkLimits = LinkLimits {
    max_chunk: 1024,
    pow2_chunks: true,
    overhead: OVERHEAD,
    copies: true,
};

/// The largest request: the largest message a device sends ([`MAX_SENT_LEN`]) and its CoAP
/// and OSCORE framing (`tests/overhead.rs` frames it with a 5-byte OSCORE sequence number).
const TX: usize = MAX_SENT_LEN + OVERHEAD as usize;

/// Most bytes a block response carries besides the block: header, token, options (ETag,
/// Block2, Size2, Max-Age, Content-Format) and OSCORE's option, inner header and tag come to
/// under 80; the rest is margin for a server that adds more.
pub const OVERHEAD: u16 = 128;

/// A connected datagram socket, async: embassy-net's UDP socket, tokio's, or a blocking one
/// through [`BlockingSocket`].
pub trait AsyncDatagram {
    /// The socket's error.
    type Error: core::fmt::Debug;
    /// Sends one datagram to the server.
    fn send(&mut self, datagram: &[u8]) -> impl Future<Output = Result<(), Self::Error>>;
    /// Waits up to `timeout_ms` for a datagram; `Ok(None)` if none came.
    fn recv(
        &mut self,
        buf: &mut [u8],
        timeout_ms: u32,
    ) -> impl Future<Output = Result<Option<usize>, Self::Error>>;
}

/// A connected datagram socket that blocks (`std::net::UdpSocket`, a modem's AT socket).
pub trait DatagramSocket {
    /// The socket's error.
    type Error: core::fmt::Debug;
    /// Sends one datagram to the server.
    fn send(&mut self, datagram: &[u8]) -> Result<(), Self::Error>;
    /// Waits up to `timeout_ms` for a datagram; `Ok(None)` if none came.
    fn recv(&mut self, buf: &mut [u8], timeout_ms: u32) -> Result<Option<usize>, Self::Error>;
}

/// A [`DatagramSocket`] as an [`AsyncDatagram`] (each call completes when polled).
pub struct BlockingSocket<'a, T>(pub &'a mut T);

impl<T: DatagramSocket> AsyncDatagram for BlockingSocket<'_, T> {
    type Error = T::Error;

    async fn send(&mut self, datagram: &[u8]) -> Result<(), T::Error> {
        self.0.send(datagram)
    }

    async fn recv(&mut self, buf: &mut [u8], timeout_ms: u32) -> Result<Option<usize>, T::Error> {
        self.0.recv(buf, timeout_ms)
    }
}

/// CoAP over `socket`, with the clock `recv` deadlines are measured on, remembering `X`
/// exchanges (see [`CoapFraming`]: at least the device's window plus two; the default serves
/// any window, a small firmware sets it from its window to save RAM).
pub struct CoapLink<S, C, const X: usize = EXCHANGES> {
    socket: S,
    clock: C,
    framing: CoapFraming<X>,
    tx: [u8; TX],
    /// Bytes counted by the framing when the loop last asked.
    reported: (u64, u64),
}

impl<S: AsyncDatagram, C: ota_core::runtime::Clock> CoapLink<S, C> {
    /// A link over `socket`; `seed` should differ per device and boot (see [`CoapFraming::new`]).
    /// It remembers [`EXCHANGES`] exchanges, enough for any window.
    pub fn new(socket: S, clock: C, seed: u32) -> Self {
        Self::with_exchanges(socket, clock, seed)
    }
}

impl<S: AsyncDatagram, C: ota_core::runtime::Clock, const X: usize> CoapLink<S, C, X> {
    /// [`CoapLink::new`] remembering `X` exchanges (the type says how many: `let link:
    /// CoapLink<_, _, 8> = CoapLink::with_exchanges(…)`).
    pub fn with_exchanges(socket: S, clock: C, seed: u32) -> Self {
        Self {
            socket,
            clock,
            framing: CoapFraming::with_exchanges(seed),
            tx: [0; TX],
            reported: (0, 0),
        }
    }

    /// Protects every request with OSCORE under the device's context.
    #[cfg(feature = "oscore")]
    pub fn secure(mut self, ctx: ota_oscore::SecurityContext) -> Self {
        self.framing = self.framing.secure(ctx);
        self
    }

    /// The CoAP state and its counters.
    pub fn framing(&self) -> &CoapFraming<X> {
        &self.framing
    }

    async fn send_acks(&mut self) -> Result<(), LinkError<S::Error>> {
        while let Some(n) = self.framing.poll_ack(&mut self.tx) {
            self.socket
                .send(self.tx.get(..n).unwrap_or(&[]))
                .await
                .map_err(LinkError::Fatal)?;
        }
        Ok(())
    }

    /// Bytes the framing counted since last asked.
    fn bytes_since(&mut self) -> (u64, u64) {
        let s = self.framing.stats();
        let now = (s.bytes_sent, s.bytes_received);
        let delta = (now.0 - self.reported.0, now.1 - self.reported.1);
        self.reported = now;
        delta
    }
}

impl<S: AsyncDatagram, C: ota_core::runtime::Clock, const X: usize> Link for CoapLink<S, C, X> {
    type Error = S::Error;
    type Session<'a>
        = &'a mut Self
    where
        Self: 'a;

    fn limits(&self) -> LinkLimits {
        LIMITS
    }

    async fn open(
        &mut self,
        _ctx: OpenContext,
    ) -> Result<Opened<Self::Session<'_>>, LinkError<S::Error>> {
        // UDP: nothing to set up; the check-in is the first datagram.
        Ok(Opened::Session(self))
    }

    fn restore_counter(&mut self, stored: u64) {
        self.framing.restore_sequence(stored);
    }

    fn settle_counter(&mut self) -> Option<u64> {
        self.framing.settle_sequence()
    }

    fn take_link_bytes(&mut self) -> (u64, u64) {
        self.bytes_since()
    }
}

impl<S: AsyncDatagram, C: ota_core::runtime::Clock, const X: usize> Session
    for &mut CoapLink<S, C, X>
{
    type Error = S::Error;

    async fn send(&mut self, t: Transmit, msg: &[u8]) -> Result<(), LinkError<S::Error>> {
        let Some(n) = self.framing.frame(t.what, msg, &mut self.tx) else {
            // Nothing CoAP can carry (the loop stores a sequence reservation before it sends,
            // and the device refuses manifests whose chunk size CoAP cannot carry): the state
            // machine's timer gives up on it.
            return Ok(());
        };
        let datagram = self.tx.get(..n).unwrap_or(&[]);
        self.socket.send(datagram).await.map_err(LinkError::Fatal)?;
        if t.twice {
            // The same bytes again: the server answers whichever arrives first and drops the
            // other (`server::engine`'s copy filter).
            self.framing.count_copy(n);
            self.socket.send(datagram).await.map_err(LinkError::Fatal)?;
        }
        Ok(())
    }

    async fn recv<'b>(
        &mut self,
        buf: &'b mut [u8],
        deadline: Instant,
    ) -> Result<Option<Incoming<'b>>, LinkError<S::Error>> {
        let timeout = deadline.since(self.clock.now()).min(u64::from(u32::MAX)) as u32;
        let Some(n) = self
            .socket
            .recv(buf, timeout)
            .await
            .map_err(LinkError::Fatal)?
        else {
            return Ok(None);
        };
        let datagram = buf.get_mut(..n).ok_or(LinkError::Busy)?;
        let incoming = match self.framing.parse(datagram) {
            Ok(Parsed::Message(m)) => Incoming::Message(m),
            Ok(Parsed::Chunk(c)) => Incoming::Chunk(c),
            // Error responses, late or spoofed datagrams: the bytes were spent all the same.
            Ok(Parsed::Nothing) | Err(_) => Incoming::Nothing,
        };
        // A separate response is acknowledged at once.
        self.send_acks().await?;
        Ok(Some(incoming))
    }

    async fn close(self, _cut_short: bool) {
        // Acknowledge anything still owed before the radio goes off.
        let _ = self.send_acks().await;
    }

    fn take_link_bytes(&mut self) -> (u64, u64) {
        self.bytes_since()
    }

    fn counter_to_store(&mut self) -> Option<u64> {
        self.framing.sequence_reservation()
    }

    fn drops_copies(&self) -> Option<bool> {
        self.framing.drops_copies()
    }

    fn counter_stored(&mut self, value: u64) {
        self.framing.sequence_reserved(value);
    }
}

/// One wake over a blocking socket, clock and storage: [`run_wake`] run by
/// [`block_on`]. Keep `link` across wakes (in RAM that survives sleep) or make one per wake.
#[allow(clippy::type_complexity)]
pub fn run_wake_blocking<V, const N: usize, const W: usize, const X: usize, T, K, St>(
    dev: &mut Device<V, N, W>,
    link: &mut CoapLink<BlockingSocket<'_, T>, BusyClock<'_, K>, X>,
    clock: &K,
    storage: &mut St,
    budget: WakeBudget,
    on_event: impl FnMut(&Event),
) -> Result<WakeEnd, WakeError<T::Error, <St as UpdateStorage>::Error>>
where
    V: Verifier,
    T: DatagramSocket,
    K: BlockingClock,
    St: UpdateStorage + CounterStore<Error = <St as UpdateStorage>::Error>,
{
    block_on(run_wake(
        dev,
        link,
        &mut Blocking(storage),
        &BusyClock(clock),
        budget,
        &WakeOptions::default(),
        on_event,
    ))
}

/// A device configuration set for CoAP: RFC 7252 timers (see [`crate::client::rfc7252_timers`])
/// and Block2-sized chunks.
pub fn coap_config(mut config: DeviceConfig, seed: u32) -> DeviceConfig {
    crate::client::rfc7252_timers(&mut config, seed);
    LIMITS.apply(&mut config);
    config
}

#[cfg(feature = "std")]
mod std_impls {
    use super::DatagramSocket;

    impl DatagramSocket for std::net::UdpSocket {
        type Error = std::io::Error;

        fn send(&mut self, datagram: &[u8]) -> Result<(), std::io::Error> {
            std::net::UdpSocket::send(self, datagram).map(|_| ())
        }

        fn recv(
            &mut self,
            buf: &mut [u8],
            timeout_ms: u32,
        ) -> Result<Option<usize>, std::io::Error> {
            let t = std::time::Duration::from_millis(u64::from(timeout_ms.max(1)));
            self.set_read_timeout(Some(t))?;
            match std::net::UdpSocket::recv(self, buf) {
                Ok(n) => Ok(Some(n)),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    Ok(None)
                }
                // A previous datagram was refused (ICMP port unreachable): the server is not
                // up yet; treat it like a loss.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Ok(None),
                Err(e) => Err(e),
            }
        }
    }
}
