//! A device wake over MQTT (blocking, `rumqttc`), for host simulators and tests.
//!
//! The device connects with a persistent session (clean session off, client id = device id),
//! subscribes to its down and desired-state topics, and first reads the retained desired state:
//! if it says "up to date" and the device has no download in progress and nothing to report,
//! the wake ends there without a check-in. Otherwise it checks in and downloads with the
//! state machine's window of chunk requests, all at QoS 1.

use std::time::Duration;

use ota_core::device::{Device, Event, SleepReason};
use ota_core::manifest::Verifier;
use ota_core::storage::UpdateStorage;
use ota_core::time::Instant;
use ota_core::wire::{self, CheckInReply, LastOutcome, Message, WakeBudget};
use rumqttc::{
    Client, Connection, Event as MqttEvent, MqttOptions, Outgoing, Packet, QoS, RecvTimeoutError,
};

use crate::topics::{self, Kind};
use crate::Broker;

/// How a wake went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WakeOutcome {
    /// Why it ended.
    pub reason: SleepReason,
    /// Seconds to sleep.
    pub sleep_secs: u32,
    /// False if the retained desired state settled it without a check-in.
    pub checked_in: bool,
    /// MQTT packets sent and received (every kind, acknowledgements included).
    pub packets: u32,
}

/// Errors of a wake.
#[derive(Debug, thiserror::Error)]
pub enum WakeError<S: core::fmt::Debug> {
    /// The device id cannot be a topic level.
    #[error("device id not usable in a topic")]
    Topic,
    /// The MQTT client failed.
    #[error("mqtt: {0}")]
    Client(#[from] rumqttc::ClientError),
    /// Storage failed.
    #[error("storage: {0:?}")]
    Storage(S),
    /// The wake ran past its step bound.
    #[error("wake did not end")]
    Stuck,
}

/// Runs one wake of `dev` over MQTT. Events go to `on_event`.
pub fn run_wake<V, const C: usize, S>(
    dev: &mut Device<V, C>,
    storage: &mut S,
    broker: &Broker,
    id: &str,
    budget: WakeBudget,
    mut on_event: impl FnMut(&Event),
) -> Result<WakeOutcome, WakeError<S::Error>>
where
    V: Verifier,
    S: UpdateStorage,
{
    let down = topics::topic(&broker.prefix, id, Kind::Down).ok_or(WakeError::Topic)?;
    let desired_topic = topics::topic(&broker.prefix, id, Kind::Desired).ok_or(WakeError::Topic)?;
    let mut opts = MqttOptions::new(id, broker.host.clone(), broker.port);
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_clean_session(false);
    opts.set_max_packet_size(8 * 1024, 8 * 1024);
    if let (Some(u), Some(p)) = (&broker.username, &broker.password) {
        opts.set_credentials(u.clone(), p.clone());
    }
    let (client, mut conn) = Client::new(opts, 64);
    client.subscribe(down.as_str(), QoS::AtLeastOnce)?;
    client.subscribe(desired_topic.as_str(), QoS::AtLeastOnce)?;
    dev.restore_from(storage).map_err(WakeError::Storage)?;
    let start = std::time::Instant::now();
    let now = || Instant(start.elapsed().as_millis() as u64);
    let mut packets = 0u32;

    // 1. The retained desired state, which the broker sends right after the subscription.
    let mut subacks = 0;
    let mut desired = None;
    let settle = std::time::Instant::now();
    while settle.elapsed() < Duration::from_secs(3) && (subacks < 2 || desired.is_none()) {
        match conn.recv_timeout(Duration::from_millis(100)) {
            Ok(Ok(ev)) => {
                packets += 1;
                match ev {
                    MqttEvent::Incoming(Packet::SubAck(_)) => subacks += 1,
                    MqttEvent::Incoming(Packet::Publish(p))
                        if p.topic == desired_topic.as_str() =>
                    {
                        desired = Some(p.payload.to_vec());
                    }
                    _ => {}
                }
            }
            // No retained message within a moment of the subscription: nothing is known.
            Err(RecvTimeoutError::Timeout) if subacks >= 2 => break,
            _ => {}
        }
    }
    let nothing_pending =
        dev.resume_state().is_none() && dev.config().last_outcome == LastOutcome::None;
    if let (Some(d), true) = (&desired, nothing_pending) {
        if let Ok(Message::CheckInReply(CheckInReply::UpToDate { next_check_in })) = wire::decode(d)
        {
            packets += disconnect(&client, &mut conn);
            let end = Event::Sleep {
                secs: next_check_in,
                reason: SleepReason::UpToDate,
            };
            on_event(&end);
            return Ok(WakeOutcome {
                reason: SleepReason::UpToDate,
                sleep_secs: next_check_in,
                checked_in: false,
                packets,
            });
        }
    }

    // 2. Check in and download.
    dev.wake(now(), budget);
    let mut buf = [0u8; 512];
    for _ in 0..1_000_000 {
        while let Some(n) = dev.poll_transmit(now(), &mut buf) {
            let bytes = buf.get(..n).unwrap_or(&[]);
            let kind = match wire::decode(bytes) {
                Ok(Message::CheckIn(_)) => Kind::CheckIn,
                Ok(Message::ChunkRequest(_)) => Kind::Request,
                Ok(Message::Report(_)) => Kind::Report,
                _ => continue,
            };
            let topic = topics::topic(&broker.prefix, id, kind).ok_or(WakeError::Topic)?;
            client.publish(topic.as_str(), QoS::AtLeastOnce, false, bytes.to_vec())?;
        }
        dev.drive_storage(storage).map_err(WakeError::Storage)?;
        while let Some(ev) = dev.poll_event() {
            on_event(&ev);
            if let Event::Sleep { secs, reason } = ev {
                packets += disconnect(&client, &mut conn);
                return Ok(WakeOutcome {
                    reason,
                    sleep_secs: secs,
                    checked_in: true,
                    packets,
                });
            }
        }
        let wait = dev
            .poll_timeout()
            .map(|t| t.since(now()))
            .unwrap_or(100)
            .clamp(1, 100);
        match conn.recv_timeout(Duration::from_millis(wait)) {
            Ok(Ok(ev)) => {
                packets += 1;
                if let MqttEvent::Incoming(Packet::Publish(p)) = ev {
                    if p.topic == down.as_str() {
                        let _ = dev.handle_message(now(), &p.payload);
                    }
                }
            }
            // The broker is gone for now; the client reconnects on the next poll and the
            // persistent session brings back what was queued. Timers keep running.
            Ok(Err(_)) => std::thread::sleep(Duration::from_millis(100)),
            Err(_) => {}
        }
        dev.handle_timeout(now());
    }
    Err(WakeError::Stuck)
}

/// Disconnects cleanly, flushing what is queued; returns the packets that took.
fn disconnect(client: &Client, conn: &mut Connection) -> u32 {
    let mut packets = 0;
    if client.disconnect().is_err() {
        return 0;
    }
    for _ in 0..200 {
        match conn.recv_timeout(Duration::from_millis(100)) {
            Ok(Ok(MqttEvent::Outgoing(Outgoing::Disconnect))) => return packets + 1,
            Ok(Ok(_)) => packets += 1,
            _ => return packets,
        }
    }
    packets
}
