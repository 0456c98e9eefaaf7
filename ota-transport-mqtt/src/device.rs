//! A device over MQTT 5: [`MqttLink`] is an `ota-core` runtime [`Link`] on [`minimq`], `no_std`
//! and allocation-free; [`run_wake`] runs one wake of the device's async wake loop over it.
//!
//! The same code runs on a Cortex-M (over an embassy-net TCP socket, say) and on a host (over
//! tokio, with [`crate::tcp::TcpConnector`]). A wake goes:
//!
//! | step | packets | ends the wake when |
//! |---|---|---|
//! | connect (client id = device id, persistent session) | CONNECT, CONNACK | the broker refuses: [`MqttError::Refused`] |
//! | subscribe `s` (QoS 0) and `d` (QoS 1) in one packet | SUBSCRIBE, SUBACK | |
//! | read the retained desired state on `s` | PUBLISH | it says "up to date" for the image the device runs, and nothing is in progress or to report |
//! | check in, download with the window of chunk requests | PUBLISH/PUBACK each way | the state machine says sleep |
//! | a wake cut short: unsubscribe `d`, so late answers do not wait for the next wake | UNSUBSCRIBE, UNSUBACK | |
//! | disconnect (the broker keeps the session for its expiry) | DISCONNECT | |
//!
//! The desired state is subscribed at QoS 0: it is a latest value that the broker hands over on
//! every subscription, so nothing queues for it while the device sleeps and it needs no PUBACK.
//! A lost connection is redialled by the wake loop; `minimq` replays unacknowledged QoS 1
//! publishes on a resumed session, and the state machine's own timers refetch whatever else was
//! lost. Every byte on the TCP stream is counted ([`Counted`]) into the device's byte budget.
//!
//! Keep the [`Session`] (and its buffers) across wakes in RAM that survives sleep, and the
//! broker session resumes: the `d` subscription and any unacknowledged publish carry over. A
//! device that loses RAM in sleep starts a fresh session each wake, which costs nothing more
//! here because the wake subscribes anyway.

use core::cell::Cell;
use core::future::Future;

use embassy_time::{with_deadline, Duration, Instant as EmbassyInstant};
use minimq::{
    Buffers, ConfigBuilder, ConfigError, ConnectEvent, Connection, Error as MinimqError, Io,
    PeerError, PubError, Publication, QoS, ReasonCode, ResourceError, Session, SubscriptionOptions,
    TopicFilter,
};
use ota_core::device::{Device, Event, Sent, SleepReason, Transmit};
use ota_core::manifest::Verifier;
use ota_core::runtime::{
    self, Incoming, Link, LinkError, LinkLimits, OpenContext, Opened, Storage,
};
use ota_core::time::Instant;
use ota_core::wire::{self, CheckInReply, WakeBudget};

use crate::topics::{self, Kind, Topic};

/// Opens a byte stream to the broker: at the start of a wake and after a lost connection. The
/// stream may borrow the connector (an embassy-net socket over buffers the connector owns).
pub trait Connector {
    /// The stream (TCP, TLS over TCP, a modem's socket).
    type Io<'a>: Io
    where
        Self: 'a;
    /// Why it could not be opened.
    type Error: core::fmt::Debug;
    /// Opens a stream. The wake loop bounds the time it takes.
    fn connect(&mut self) -> impl Future<Output = Result<Self::Io<'_>, Self::Error>>;
}

/// Timing of the MQTT steps the wake loop does not see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WakeOptions {
    /// Bound on opening the stream plus the CONNECT/CONNACK and SUBSCRIBE/SUBACK exchanges.
    pub connect_timeout_ms: u32,
    /// How long to wait after the SUBACK for a retained desired state. A broker sends it right
    /// after the SUBACK, so this only runs out for a device the server has never seen.
    pub retained_wait_ms: u32,
    /// Pause before redialling a lost connection.
    pub reconnect_delay_ms: u32,
    /// How long to wait for the broker to acknowledge the last publishes before disconnecting.
    pub drain_ms: u32,
}

impl Default for WakeOptions {
    fn default() -> Self {
        Self {
            connect_timeout_ms: 10_000,
            retained_wait_ms: 500,
            reconnect_delay_ms: 1_000,
            drain_ms: 2_000,
        }
    }
}

/// How a wake went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WakeOutcome {
    /// Why it ended.
    pub reason: SleepReason,
    /// Seconds to sleep.
    pub sleep_secs: u32,
    /// False if the retained desired state settled it without a check-in.
    pub checked_in: bool,
    /// Connections made (more than one if the broker went away during the wake).
    pub connects: u32,
    /// `ota-core` messages published.
    pub published: u32,
    /// `ota-core` messages received (desired state included).
    pub received: u32,
    /// Messages received that were of no use: duplicates, late or stale chunks (bytes that
    /// were paid for and wasted).
    pub ignored: u32,
    /// Of those, the ones left over from an earlier wake (received before this wake's check-in).
    pub stale: u32,
}

/// Why the link cannot go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MqttError {
    /// The device id or prefix cannot make a topic.
    #[error("device id not usable in a topic")]
    Topic,
    /// The broker refused the connection, a subscription or a publish (bad credentials, ACL).
    #[error("broker refused: {0:?}")]
    Refused(ReasonCode),
    /// The session's buffers are too small for a message of this wake.
    #[error("mqtt session buffers too small")]
    Buffers,
}

/// Errors that end a wake early. A lost connection is not one: it is redialled.
pub type WakeError<S> = runtime::WakeError<MqttError, S>;

/// A session configuration for a device: client id and user name = `id`, the password, a
/// 60 s keep-alive, and a session that the broker keeps for `session_expiry_secs` after each
/// wake: make it a little longer than the longest sleep, so the session outlives every sleep
/// and a device that is gone for good stops costing the broker.
///
/// Buffers: `rx` holds the largest message the device receives, so the chunk size plus 64
/// bytes; `tx` holds the publishes awaiting acknowledgement, so 512 bytes plus 40 per chunk
/// request in the window (1 KiB holds a window of 12, the default).
///
/// (MQTT 5 would let each DISCONNECT set the expiry for the sleep that follows; `minimq`
/// 0.13.5 cannot encode a DISCONNECT with properties, so the expiry is set once, here.)
pub fn session_config<'a>(
    buffers: Buffers<'a>,
    id: &'a str,
    password: Option<&'a [u8]>,
    session_expiry_secs: u32,
) -> Result<ConfigBuilder<'a>, ConfigError> {
    let c = ConfigBuilder::new(buffers)
        .client_id(id)?
        .keepalive_interval(60)
        .session_expiry_interval(session_expiry_secs);
    match password {
        Some(p) => c.auth(id, p),
        None => Ok(c),
    }
}

/// Bytes through a stream, both ways.
#[derive(Debug, Default)]
pub struct ByteCount {
    sent: Cell<u64>,
    received: Cell<u64>,
}

/// A stream that counts every byte through it into a [`ByteCount`]: what the device pays for,
/// MQTT framing, acknowledgements, pings and reconnections included.
pub struct Counted<'c, T> {
    io: T,
    count: &'c ByteCount,
}

impl<T: embedded_io_async::ErrorType> embedded_io_async::ErrorType for Counted<'_, T> {
    type Error = T::Error;
}

impl<T: embedded_io_async::Read> embedded_io_async::Read for Counted<'_, T> {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, T::Error> {
        let n = self.io.read(buf).await?;
        self.count
            .received
            .set(self.count.received.get() + n as u64);
        Ok(n)
    }
}

impl<T: embedded_io_async::Write> embedded_io_async::Write for Counted<'_, T> {
    async fn write(&mut self, buf: &[u8]) -> Result<usize, T::Error> {
        let n = self.io.write(buf).await?;
        self.count.sent.set(self.count.sent.get() + n as u64);
        Ok(n)
    }

    async fn flush(&mut self) -> Result<(), T::Error> {
        self.io.flush().await
    }
}

/// The embassy-time clock the wake runs on (MQTT's keep-alive runs on embassy-time too).
pub use ota_core::runtime::EmbassyClock;

fn after(ms: u32) -> EmbassyInstant {
    EmbassyInstant::now() + Duration::from_millis(u64::from(ms))
}

/// What an MQTT error means for the wake.
fn classify<T>(e: MinimqError<T>) -> LinkError<MqttError> {
    match e {
        MinimqError::Peer(PeerError::Rejected(code)) => LinkError::Fatal(MqttError::Refused(code)),
        MinimqError::Resource(_) => LinkError::Fatal(MqttError::Buffers),
        // Transport failures, a dead connection, a broker speaking nonsense: dial again.
        _ => LinkError::Lost,
    }
}

/// MQTT over a [`Connector`] for one device: its topics under `prefix`, its [`Session`].
pub struct MqttLink<'l, 'b, C> {
    session: &'l mut Session<'b>,
    connector: &'l mut C,
    prefix: &'l str,
    id: &'l str,
    options: WakeOptions,
    /// Past the desired state this wake: checking in.
    talking: bool,
    count: ByteCount,
    reported: (u64, u64),
    outcome: WakeOutcome,
}

impl<'l, 'b, C: Connector> MqttLink<'l, 'b, C> {
    /// A link for device `id` (its topics under `prefix`) over `session`, dialling with
    /// `connector`. Make one per wake.
    pub fn new(
        session: &'l mut Session<'b>,
        connector: &'l mut C,
        prefix: &'l str,
        id: &'l str,
        options: WakeOptions,
    ) -> Result<Self, MqttError> {
        // Both topics are checked once, so nothing later fails on them.
        for kind in [Kind::Desired, Kind::Down] {
            topics::topic(prefix, id, kind).ok_or(MqttError::Topic)?;
        }
        Ok(Self {
            session,
            connector,
            prefix,
            id,
            options,
            talking: false,
            count: ByteCount::default(),
            reported: (0, 0),
            outcome: WakeOutcome {
                reason: SleepReason::LinkLost,
                sleep_secs: 0,
                checked_in: false,
                connects: 0,
                published: 0,
                received: 0,
                ignored: 0,
                stale: 0,
            },
        })
    }

    /// Counters of the wake so far.
    pub fn outcome(&self) -> WakeOutcome {
        self.outcome
    }

    fn topic(&self, kind: Kind) -> Topic {
        // Checked in `new`.
        topics::topic(self.prefix, self.id, kind).unwrap_or_default()
    }
}

/// One connection of a wake.
pub struct MqttSession<'s, 'b, IO: Io> {
    conn: Connection<'s, 'b, IO>,
    prefix: &'s str,
    id: &'s str,
    options: &'s WakeOptions,
    outcome: &'s mut WakeOutcome,
    count: &'s ByteCount,
    reported: &'s mut (u64, u64),
}

fn take_bytes(count: &ByteCount, reported: &mut (u64, u64)) -> (u64, u64) {
    let now = (count.sent.get(), count.received.get());
    let delta = (now.0 - reported.0, now.1 - reported.1);
    *reported = now;
    delta
}

impl<'l, 'b, C: Connector> Link for MqttLink<'l, 'b, C> {
    type Error = MqttError;
    type Session<'s>
        = MqttSession<'s, 'b, Counted<'s, C::Io<'s>>>
    where
        Self: 's;

    fn limits(&self) -> LinkLimits {
        LinkLimits {
            max_chunk: 1024,
            pow2_chunks: false,
            overhead: ota_core::runtime::WIRE_CHUNK_OVERHEAD,
            // TCP resends what it loses; a second publish would only be answered twice.
            copies: false,
        }
    }

    async fn open(
        &mut self,
        ctx: OpenContext,
    ) -> Result<Opened<Self::Session<'_>>, LinkError<MqttError>> {
        let desired = self.topic(Kind::Desired);
        let down = self.topic(Kind::Down);
        let deadline = after(self.options.connect_timeout_ms);
        let io = match with_deadline(deadline, self.connector.connect()).await {
            Ok(Ok(io)) => io,
            _ => return Err(LinkError::Lost),
        };
        let io = Counted {
            io,
            count: &self.count,
        };
        let mut conn = match with_deadline(deadline, self.session.connect(io)).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => return Err(classify(e)),
            Err(_) => return Err(LinkError::Lost),
        };
        self.outcome.connects += 1;
        let want_state = TopicFilter::new(&desired)
            .options(SubscriptionOptions::default().maximum_qos(QoS::AtMostOnce));
        let want_down = TopicFilter::new(&down)
            .options(SubscriptionOptions::default().maximum_qos(QoS::AtLeastOnce));
        let resumed = conn.connect_event() == ConnectEvent::Reconnected;
        let subscribed = match (self.talking, resumed) {
            (false, _) => Some(conn.subscribe(&[want_state, want_down], &[]).await),
            (true, false) => Some(conn.subscribe(&[want_down], &[]).await),
            (true, true) => None,
        };
        let op = match subscribed {
            None => None,
            Some(Ok(op)) => Some(op),
            Some(Err(e)) => return Err(classify(e)),
        };
        if let (Some(op), false) = (op, self.talking) {
            // The retained desired state follows the SUBACK.
            let mut wait = deadline;
            let mut up_to_date = None;
            let mut acked = false;
            loop {
                match with_deadline(wait, conn.poll()).await {
                    Err(_) => break,
                    Ok(Err(e)) => return Err(classify(e)),
                    Ok(Ok(Some(p))) => {
                        let to = topics::parse(self.prefix, p.topic());
                        if to == Some((self.id, Kind::Down)) {
                            // Left over from an earlier wake: no check-in of this wake yet.
                            self.outcome.received += 1;
                            self.outcome.ignored += 1;
                            self.outcome.stale += 1;
                        }
                        if to == Some((self.id, Kind::Desired)) {
                            self.outcome.received += 1;
                            // Trusted only if worked out for the image this device runs.
                            if let Ok((CheckInReply::UpToDate { next_check_in }, Some(running))) =
                                wire::decode_desired(p.payload())
                            {
                                if running == ctx.running {
                                    up_to_date = Some(next_check_in);
                                }
                            }
                            break;
                        }
                    }
                    Ok(Ok(None)) => {}
                }
                if !acked && conn.is_complete(&op) {
                    acked = true;
                    wait = wait.min(after(self.options.retained_wait_ms));
                }
            }
            if !acked && !conn.is_complete(&op) {
                return Err(LinkError::Lost);
            }
            if let (Some(secs), true) = (up_to_date, ctx.idle) {
                self.outcome.reason = SleepReason::UpToDate;
                self.outcome.sleep_secs = secs;
                let _ = with_deadline(after(self.options.drain_ms), conn.disconnect()).await;
                return Ok(Opened::Settled { sleep_secs: secs });
            }
        }
        self.talking = true;
        self.outcome.checked_in = true;
        Ok(Opened::Session(MqttSession {
            conn,
            prefix: self.prefix,
            id: self.id,
            options: &self.options,
            outcome: &mut self.outcome,
            count: &self.count,
            reported: &mut self.reported,
        }))
    }

    fn take_link_bytes(&mut self) -> (u64, u64) {
        take_bytes(&self.count, &mut self.reported)
    }
}

impl<IO: Io> runtime::Session for MqttSession<'_, '_, IO> {
    type Error = MqttError;

    async fn send(&mut self, t: Transmit, msg: &[u8]) -> Result<(), LinkError<MqttError>> {
        let kind = match t.what {
            Sent::CheckIn => Kind::CheckIn,
            Sent::ChunkRequest { .. } => Kind::Request,
            Sent::Report => Kind::Report,
        };
        let topic =
            topics::topic(self.prefix, self.id, kind).ok_or(LinkError::Fatal(MqttError::Topic))?;
        let publication = Publication::bytes(&topic, msg).qos(QoS::AtLeastOnce);
        match self.conn.publish(publication).await {
            Ok(_) => {
                self.outcome.published += 1;
                Ok(())
            }
            // Every slot holds a publish awaiting its PUBACK (the broker's receive maximum, or
            // minimq's eight retained packets): nothing was encoded, send this one later.
            Err(PubError::Session(
                MinimqError::NotReady | MinimqError::Resource(ResourceError::InflightExhausted),
            )) => Err(LinkError::Busy),
            // Lost with the connection, or kept by the session for replay: either way the
            // state machine's timer covers it.
            Err(PubError::Session(e)) => Err(classify(e)),
            Err(PubError::Payload(_)) => Err(LinkError::Fatal(MqttError::Buffers)),
        }
    }

    async fn recv<'x>(
        &mut self,
        buf: &'x mut [u8],
        deadline: Instant,
    ) -> Result<Option<Incoming<'x>>, LinkError<MqttError>> {
        let until = EmbassyInstant::from_millis(deadline.0);
        match with_deadline(until, self.conn.poll()).await {
            Err(_) | Ok(Ok(None)) => Ok(None),
            Ok(Err(e)) => Err(classify(e)),
            Ok(Ok(Some(p))) => {
                if topics::parse(self.prefix, p.topic()) != Some((self.id, Kind::Down)) {
                    return Ok(Some(Incoming::Nothing));
                }
                self.outcome.received += 1;
                let payload = p.payload();
                let Some(dst) = buf.get_mut(..payload.len()) else {
                    self.outcome.ignored += 1;
                    return Ok(Some(Incoming::Nothing));
                };
                dst.copy_from_slice(payload);
                Ok(Some(Incoming::Message(dst)))
            }
        }
    }

    /// Waits (bounded) for the broker to acknowledge what was published, then says goodbye.
    ///
    /// A wake cut short (time budget, lost link) may leave chunk requests unanswered. Their
    /// answers would wait in the persistent session and reach the device at its next wake,
    /// before its check-in, to be dropped: paid for and wasted. So such a wake first
    /// unsubscribes from `d` (24 bytes), and the broker discards what comes after.
    async fn close(mut self, cut_short: bool) {
        let until = after(self.options.drain_ms);
        let mut unsubscribed = None;
        if cut_short {
            // The UNSUBSCRIBE needs one of minimq's retained slots, which a full window of
            // requests may hold: wait for the broker's PUBACKs first.
            while !self.conn.can_publish(QoS::AtLeastOnce) {
                match with_deadline(until, self.conn.poll()).await {
                    Ok(Ok(Some(_))) => self.outcome.ignored += 1,
                    Ok(Ok(None)) => {}
                    _ => break,
                }
            }
            if let Some(down) = topics::topic(self.prefix, self.id, Kind::Down) {
                if let Ok(Ok(op)) = with_deadline(until, self.conn.unsubscribe(&[&down], &[])).await
                {
                    unsubscribed = Some(op);
                }
            }
        }
        loop {
            let acked = unsubscribed.is_none_or(|op| !self.conn.is_pending(&op));
            if acked && self.conn.session().is_publish_quiescent() {
                break;
            }
            match with_deadline(until, self.conn.poll()).await {
                Ok(Ok(Some(_))) => self.outcome.ignored += 1,
                Ok(Ok(None)) => {}
                _ => break,
            }
        }
        let _ = with_deadline(after(self.options.drain_ms), self.conn.disconnect()).await;
    }

    fn take_link_bytes(&mut self) -> (u64, u64) {
        take_bytes(self.count, self.reported)
    }
}

/// Runs one wake of `dev` over MQTT through the device's wake loop
/// ([`ota_core::runtime::run_wake`]): `prefix` and `id` name the topics (see
/// [`crate::topics`]), `storage` holds the download. Events go to `on_event`.
#[allow(clippy::too_many_arguments)]
pub async fn run_wake<C, V, S, const N: usize, const W: usize>(
    session: &mut Session<'_>,
    connector: &mut C,
    dev: &mut Device<V, N, W>,
    storage: &mut S,
    prefix: &str,
    id: &str,
    budget: WakeBudget,
    options: &WakeOptions,
    on_event: impl FnMut(&Event),
) -> Result<WakeOutcome, WakeError<S::Error>>
where
    C: Connector,
    V: Verifier,
    S: Storage,
{
    let mut link = MqttLink::new(session, connector, prefix, id, *options)
        .map_err(runtime::WakeError::Link)?;
    let loop_options = runtime::WakeOptions {
        open_timeout_ms: options.connect_timeout_ms,
        reconnect_delay_ms: options.reconnect_delay_ms,
    };
    let end = runtime::run_wake(
        dev,
        &mut link,
        storage,
        &EmbassyClock,
        budget,
        &loop_options,
        on_event,
    )
    .await?;
    let mut outcome = link.outcome();
    outcome.reason = end.reason;
    outcome.sleep_secs = end.sleep_secs;
    outcome.checked_in = end.checked_in;
    Ok(outcome)
}
