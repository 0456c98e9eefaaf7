//! A device wake over MQTT 5: `no_std`, no allocation, on [`minimq`].
//!
//! The same code runs on a Cortex-M (over an embassy-net TCP socket, say) and on a host (over
//! tokio, with [`crate::tcp::TcpConnector`]). A wake goes:
//!
//! | step | packets | ends the wake when |
//! |---|---|---|
//! | connect (client id = device id, persistent session) | CONNECT, CONNACK | the broker refuses: [`WakeError::Refused`] |
//! | subscribe `s` (QoS 0) and `d` (QoS 1) in one packet | SUBSCRIBE, SUBACK | |
//! | read the retained desired state on `s` | PUBLISH | it says "up to date" and nothing is in progress or to report |
//! | check in, download with the window of chunk requests | PUBLISH/PUBACK each way | the state machine says sleep |
//! | a wake cut short: unsubscribe `d`, so late answers do not wait for the next wake | UNSUBSCRIBE, UNSUBACK | |
//! | disconnect (the broker keeps the session for its expiry) | DISCONNECT | |
//!
//! The desired state is subscribed at QoS 0: it is a latest value that the broker hands over on
//! every subscription, so nothing queues for it while the device sleeps and it needs no PUBACK.
//! A lost connection is redialled after [`WakeOptions::reconnect_delay_ms`]; `minimq` replays
//! unacknowledged QoS 1 publishes on a resumed session, and the state machine's own timers
//! refetch whatever else was lost. Messages the state machine sends while no connection is up
//! are lost, as on a dead radio link, so its retry limits end a wake whose broker stays away.
//!
//! Keep the [`Session`] (and its buffers) across wakes in RAM that survives sleep, and the
//! broker session resumes: the `d` subscription and any unacknowledged publish carry over. A
//! device that loses RAM in sleep starts a fresh session each wake, which costs nothing more
//! here because the wake subscribes anyway.

use core::future::Future;

use embassy_time::{with_deadline, Duration, Instant as Clock, Timer};
use minimq::{
    Buffers, ConfigBuilder, ConfigError, ConnectEvent, Connection, Error as MqttError, Io,
    PeerError, PubError, Publication, QoS, ReasonCode, Session, SubscriptionOptions, TopicFilter,
};
use ota_core::device::{Device, Event, SleepReason};
use ota_core::manifest::Verifier;
use ota_core::storage::UpdateStorage;
use ota_core::time::Instant;
use ota_core::wire::{self, CheckInReply, LastOutcome, MessageKind, WakeBudget};

use crate::topics::{self, Kind};

/// Opens a byte stream to the broker: at the start of a wake and after a lost connection.
pub trait Connector {
    /// The stream (TCP, TLS over TCP, a modem's socket).
    type Io: Io;
    /// Why it could not be opened.
    type Error: core::fmt::Debug;
    /// Opens a stream. Should give up by itself; [`WakeOptions::connect_timeout_ms`] bounds it too.
    fn connect(&mut self) -> impl Future<Output = Result<Self::Io, Self::Error>>;
}

/// Timing of a wake.
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

/// Errors that end a wake early. A lost connection is not one: it is redialled.
#[derive(Debug, thiserror::Error)]
pub enum WakeError<S: core::fmt::Debug> {
    /// The device id or prefix cannot make a topic.
    #[error("device id not usable in a topic")]
    Topic,
    /// The broker refused the connection, a subscription or a publish (bad credentials, ACL).
    #[error("broker refused: {0:?}")]
    Refused(ReasonCode),
    /// The session's buffers are too small for a message of this wake.
    #[error("mqtt session buffers too small")]
    Buffers,
    /// Storage failed.
    #[error("storage: {0:?}")]
    Storage(S),
}

/// A session configuration for a device: client id and user name = `id`, the password, a
/// 60 s keep-alive, and a session that the broker keeps for `session_expiry_secs` after each
/// wake: make it a little longer than the longest sleep, so the session outlives every sleep
/// and a device that is gone for good stops costing the broker.
///
/// Buffers: `rx` holds the largest message the device receives, so the chunk size plus 64
/// bytes; `tx` holds the publishes awaiting acknowledgement, so 512 bytes plus 40 per chunk
/// request in the window (1 KiB is plenty for a window of 8).
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

/// Runs one wake of `dev` over MQTT: `prefix` and `id` name the topics (see [`crate::topics`]).
/// Events go to `on_event`.
#[allow(clippy::too_many_arguments)]
pub async fn run_wake<C, V, S, const N: usize>(
    session: &mut Session<'_>,
    connector: &mut C,
    dev: &mut Device<V, N>,
    storage: &mut S,
    prefix: &str,
    id: &str,
    budget: WakeBudget,
    options: &WakeOptions,
    mut on_event: impl FnMut(&Event),
) -> Result<WakeOutcome, WakeError<S::Error>>
where
    C: Connector,
    V: Verifier,
    S: UpdateStorage,
{
    let wake = Wake {
        prefix,
        id,
        budget,
        end: budget
            .millis
            .map(|ms| Clock::now() + Duration::from_millis(u64::from(ms))),
        options,
        talking: false,
        pending: None,
        buf: [0; MESSAGE_BUF],
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
    };
    // Both topics are checked once, so nothing later fails on them.
    for kind in [Kind::Desired, Kind::Down] {
        topics::topic(prefix, id, kind).ok_or(WakeError::Topic)?;
    }
    dev.restore_from(storage).map_err(WakeError::Storage)?;
    wake.run(session, connector, dev, storage, &mut on_event)
        .await
}

/// Largest `ota-core` message a device sends (a check-in is under 100 bytes).
const MESSAGE_BUF: usize = 256;

/// Where a connection left the wake.
enum Step<E> {
    /// The wake is over.
    Done,
    /// The connection dropped; dial again.
    Lost,
    /// Give up.
    Fatal(E),
}

struct Wake<'a> {
    prefix: &'a str,
    id: &'a str,
    budget: WakeBudget,
    /// When the wake's time budget runs out: it bounds connecting too.
    end: Option<Clock>,
    options: &'a WakeOptions,
    /// Past the desired state: checked in (or trying to).
    talking: bool,
    /// A message the state machine produced that the session could not take yet.
    pending: Option<(Kind, usize)>,
    buf: [u8; MESSAGE_BUF],
    outcome: WakeOutcome,
}

fn now() -> Instant {
    Instant(Clock::now().as_millis())
}

fn at(t: Instant) -> Clock {
    Clock::from_millis(t.0)
}

fn after(ms: u32) -> Clock {
    Clock::now() + Duration::from_millis(u64::from(ms))
}

/// What an MQTT error means for the wake.
fn classify<T, E>(e: MqttError<T>) -> Step<WakeError<E>>
where
    E: core::fmt::Debug,
{
    match e {
        MqttError::Peer(PeerError::Rejected(code)) => Step::Fatal(WakeError::Refused(code)),
        MqttError::Resource(_) => Step::Fatal(WakeError::Buffers),
        // Transport failures, a dead connection, a broker speaking nonsense: dial again.
        _ => Step::Lost,
    }
}

/// MQTT framing around a QoS 1 PUBLISH with no properties: fixed header, topic, packet id,
/// property length; plus the 4-byte PUBACK going the other way.
fn publish_overhead(topic_len: usize, payload_len: usize) -> (i64, i64) {
    let remaining = 2 + topic_len + 2 + 1 + payload_len;
    let varint = match remaining {
        0..=127 => 1,
        128..=16_383 => 2,
        _ => 3,
    };
    ((1 + varint + remaining - payload_len) as i64, 4)
}

impl Wake<'_> {
    /// `t`, or the end of the wake's time budget if that comes first.
    fn bound(&self, t: Clock) -> Clock {
        self.end.map_or(t, |end| t.min(end))
    }

    /// Starts the state machine's part with what is left of the time budget.
    fn start_talking<V: Verifier, const N: usize>(&mut self, dev: &mut Device<V, N>) {
        self.talking = true;
        let left = self
            .end
            .map(|end| u32::try_from(end.saturating_duration_since(Clock::now()).as_millis()));
        let budget = WakeBudget {
            millis: left.map(|l| l.unwrap_or(u32::MAX)),
            ..self.budget
        };
        dev.wake(now(), budget);
    }

    async fn run<C, V, S, const N: usize>(
        mut self,
        session: &mut Session<'_>,
        connector: &mut C,
        dev: &mut Device<V, N>,
        storage: &mut S,
        on_event: &mut impl FnMut(&Event),
    ) -> Result<WakeOutcome, WakeError<S::Error>>
    where
        C: Connector,
        V: Verifier,
        S: UpdateStorage,
    {
        loop {
            let deadline = self.bound(after(self.options.connect_timeout_ms));
            if let Ok(Ok(io)) = with_deadline(deadline, connector.connect()).await {
                match with_deadline(deadline, session.connect(io)).await {
                    Ok(Ok(mut conn)) => {
                        self.outcome.connects += 1;
                        match self.connected(&mut conn, dev, storage, on_event).await {
                            Step::Done => return Ok(self.outcome),
                            Step::Fatal(e) => return Err(e),
                            Step::Lost => {}
                        }
                    }
                    Ok(Err(e)) => {
                        if let Step::Fatal(e) = classify(e) {
                            return Err(e);
                        }
                    }
                    Err(_) => {}
                }
            }
            // No desired state this wake: check in once a connection is back.
            if !self.talking {
                self.start_talking(dev);
            }
            if self.offline(dev, storage, on_event).await? {
                return Ok(self.outcome);
            }
        }
    }

    /// Keeps the state machine's clock running while no connection is up, until the redial.
    /// Its messages are lost meanwhile, so its retry limits end the wake. True if it ended.
    async fn offline<V: Verifier, S: UpdateStorage, const N: usize>(
        &mut self,
        dev: &mut Device<V, N>,
        storage: &mut S,
        on_event: &mut impl FnMut(&Event),
    ) -> Result<bool, WakeError<S::Error>> {
        let redial = after(self.options.reconnect_delay_ms);
        loop {
            while dev.poll_transmit(now(), &mut self.buf).is_some() {}
            if self.service(dev, storage, on_event)? {
                return Ok(true);
            }
            let wake_at = dev.poll_timeout().map_or(redial, |t| at(t).min(redial));
            Timer::at(wake_at).await;
            dev.handle_timeout(now());
            if Clock::now() >= redial {
                return Ok(false);
            }
        }
    }

    /// Storage and events; true once the state machine says sleep.
    fn service<V: Verifier, S: UpdateStorage, const N: usize>(
        &mut self,
        dev: &mut Device<V, N>,
        storage: &mut S,
        on_event: &mut impl FnMut(&Event),
    ) -> Result<bool, WakeError<S::Error>> {
        dev.drive_storage(storage).map_err(WakeError::Storage)?;
        while let Some(ev) = dev.poll_event() {
            on_event(&ev);
            if let Event::Sleep { secs, reason } = ev {
                self.outcome.reason = reason;
                self.outcome.sleep_secs = secs;
                return Ok(true);
            }
        }
        Ok(false)
    }

    async fn connected<IO: Io, V: Verifier, S: UpdateStorage, const N: usize>(
        &mut self,
        conn: &mut Connection<'_, '_, IO>,
        dev: &mut Device<V, N>,
        storage: &mut S,
        on_event: &mut impl FnMut(&Event),
    ) -> Step<WakeError<S::Error>> {
        let (Some(desired), Some(down)) = (
            topics::topic(self.prefix, self.id, Kind::Desired),
            topics::topic(self.prefix, self.id, Kind::Down),
        ) else {
            return Step::Fatal(WakeError::Topic);
        };
        let want_state = TopicFilter::new(&desired)
            .options(SubscriptionOptions::default().maximum_qos(QoS::AtMostOnce));
        let want_down = TopicFilter::new(&down)
            .options(SubscriptionOptions::default().maximum_qos(QoS::AtLeastOnce));
        let resumed = conn.connect_event() == ConnectEvent::Reconnected;
        let subscribed = match (self.talking, resumed) {
            (false, _) => conn.subscribe(&[want_state, want_down], &[]).await,
            (true, false) => conn.subscribe(&[want_down], &[]).await,
            (true, true) => return self.talk(conn, dev, storage, on_event).await,
        };
        let op = match subscribed {
            Ok(op) => op,
            Err(e) => return classify(e),
        };
        if self.talking {
            return self.talk(conn, dev, storage, on_event).await;
        }

        // The retained desired state follows the SUBACK.
        let mut deadline = self.bound(after(self.options.connect_timeout_ms));
        let mut up_to_date = None;
        let mut acked = false;
        loop {
            match with_deadline(deadline, conn.poll()).await {
                Err(_) => break,
                Ok(Err(e)) => return classify(e),
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
                            if running == dev.config().running.digest {
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
                deadline = self.bound(after(self.options.retained_wait_ms));
            }
        }
        if !acked && !conn.is_complete(&op) {
            return Step::Lost;
        }
        let idle = dev.resume_state().is_none() && dev.config().last_outcome == LastOutcome::None;
        if let (Some(secs), true) = (up_to_date, idle) {
            on_event(&Event::Sleep {
                secs,
                reason: SleepReason::UpToDate,
            });
            self.outcome.reason = SleepReason::UpToDate;
            self.outcome.sleep_secs = secs;
            self.disconnect(conn).await;
            return Step::Done;
        }
        self.start_talking(dev);
        self.talk(conn, dev, storage, on_event).await
    }

    /// Check-in and download on a live connection.
    async fn talk<IO: Io, V: Verifier, S: UpdateStorage, const N: usize>(
        &mut self,
        conn: &mut Connection<'_, '_, IO>,
        dev: &mut Device<V, N>,
        storage: &mut S,
        on_event: &mut impl FnMut(&Event),
    ) -> Step<WakeError<S::Error>> {
        self.outcome.checked_in = true;
        loop {
            match self.transmit(conn, dev).await {
                Ok(()) => {}
                Err(step) => return step,
            }
            match self.service(dev, storage, on_event) {
                Ok(true) => {
                    self.disconnect(conn).await;
                    return Step::Done;
                }
                Ok(false) => {}
                Err(e) => return Step::Fatal(e),
            }
            // Wake for the state machine's next deadline; sooner while a publish waits for room.
            let mut wake_at = dev.poll_timeout().map_or(after(1_000), at);
            if self.pending.is_some() {
                wake_at = wake_at.min(after(20));
            }
            match with_deadline(wake_at, conn.poll()).await {
                Err(_) | Ok(Ok(None)) => {}
                Ok(Err(e)) => return classify(e),
                Ok(Ok(Some(p))) => {
                    if topics::parse(self.prefix, p.topic()) == Some((self.id, Kind::Down)) {
                        self.outcome.received += 1;
                        let (framing, ack) = publish_overhead(p.topic().len(), p.payload().len());
                        dev.add_link_bytes(ack, framing);
                        // Unexpected or corrupt messages are dropped; the state machine's
                        // timers fetch again what it still needs.
                        if dev.handle_message(now(), p.payload()).is_err() {
                            self.outcome.ignored += 1;
                        }
                    }
                }
            }
            dev.handle_timeout(now());
        }
    }

    /// Publishes what the state machine has to send, as far as the session has room.
    async fn transmit<IO: Io, V: Verifier, E: core::fmt::Debug, const N: usize>(
        &mut self,
        conn: &mut Connection<'_, '_, IO>,
        dev: &mut Device<V, N>,
    ) -> Result<(), Step<WakeError<E>>> {
        loop {
            let (kind, n) = match self.pending.take() {
                Some(p) => p,
                None => {
                    let Some(n) = dev.poll_transmit(now(), &mut self.buf) else {
                        return Ok(());
                    };
                    let kind = match wire::peek_kind(self.buf.get(..n).unwrap_or(&[])) {
                        Some(MessageKind::CheckIn) => Kind::CheckIn,
                        Some(MessageKind::ChunkRequest) => Kind::Request,
                        Some(MessageKind::Report) => Kind::Report,
                        _ => continue,
                    };
                    (kind, n)
                }
            };
            let topic =
                topics::topic(self.prefix, self.id, kind).ok_or(Step::Fatal(WakeError::Topic))?;
            let payload = self.buf.get(..n).unwrap_or(&[]);
            let publication = Publication::bytes(&topic, payload).qos(QoS::AtLeastOnce);
            match conn.publish(publication).await {
                Ok(_) => {
                    self.outcome.published += 1;
                    let (framing, ack) = publish_overhead(topic.len(), n);
                    dev.add_link_bytes(framing, ack);
                }
                // Every slot holds a publish awaiting its PUBACK: send this one later.
                Err(PubError::Session(MqttError::NotReady)) => {
                    self.pending = Some((kind, n));
                    return Ok(());
                }
                // Lost with the connection, or kept by the session for replay: either way the
                // state machine's timer covers it.
                Err(PubError::Session(e)) => return Err(classify(e)),
                Err(PubError::Payload(_)) => return Err(Step::Fatal(WakeError::Buffers)),
            }
        }
    }

    /// Waits (bounded) for the broker to acknowledge what was published, then says goodbye.
    ///
    /// A wake cut short (time budget, lost link) may leave chunk requests unanswered. Their
    /// answers would wait in the persistent session and reach the device at its next wake,
    /// before its check-in, to be dropped: paid for and wasted. So such a wake first
    /// unsubscribes from `d` (24 bytes), and the broker discards what comes after.
    async fn disconnect<IO: Io>(&mut self, conn: &mut Connection<'_, '_, IO>) {
        let until = after(self.options.drain_ms);
        let cut_short = matches!(
            self.outcome.reason,
            SleepReason::BudgetExhausted | SleepReason::LinkLost
        );
        let mut unsubscribed = None;
        if self.outcome.checked_in && cut_short {
            if let Some(down) = topics::topic(self.prefix, self.id, Kind::Down) {
                if let Ok(Ok(op)) = with_deadline(until, conn.unsubscribe(&[&down], &[])).await {
                    unsubscribed = Some(op);
                }
            }
        }
        loop {
            let acked = unsubscribed.is_none_or(|op| !conn.is_pending(&op));
            if acked && conn.session().is_publish_quiescent() {
                break;
            }
            match with_deadline(until, conn.poll()).await {
                Ok(Ok(Some(_))) => self.outcome.ignored += 1,
                Ok(Ok(None)) => {}
                _ => break,
            }
        }
        let _ = with_deadline(after(self.options.drain_ms), conn.disconnect()).await;
    }
}
