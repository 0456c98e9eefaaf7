//! The server: subscribes to every device's requests through shared subscriptions, answers each
//! with the stateless `ota-core` handler, and keeps each device's desired state retained.
//!
//! Nothing is kept between requests, so any number of instances can share a group: the broker
//! hands each request to one of them, and when one stops, the others get the rest.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ota_core::host::{DesiredState, Handler, ImageSource};
use ota_core::wire::{self, Message};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};

use crate::topics::{self, Kind};
use crate::Broker;

/// Counters of a running server.
#[derive(Debug, Default)]
pub struct ServerStats {
    /// Requests answered.
    pub answered: AtomicU64,
    /// Requests dropped (malformed, or a device id that does not match the topic).
    pub dropped: AtomicU64,
}

/// Why the server stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A topic filter did not fit.
    #[error("prefix or group too long for a topic")]
    Topic,
    /// The client's request channel closed.
    #[error("mqtt client: {0}")]
    Client(#[from] rumqttc::ClientError),
}

/// Runs one server instance until its task is dropped. `group` names the shared subscription;
/// instances with the same group split the fleet.
pub async fn serve<D, I>(
    broker: Broker,
    client_id: &str,
    group: &str,
    handler: Arc<Handler<D, I>>,
    stats: Arc<ServerStats>,
) -> Result<(), ServerError>
where
    D: DesiredState,
    I: ImageSource,
{
    let mut opts = MqttOptions::new(client_id, broker.host.clone(), broker.port);
    opts.set_keep_alive(Duration::from_secs(10));
    opts.set_clean_session(true);
    opts.set_max_packet_size(8 * 1024, 8 * 1024);
    if let (Some(u), Some(p)) = (&broker.username, &broker.password) {
        opts.set_credentials(u.clone(), p.clone());
    }
    let (client, mut events): (AsyncClient, EventLoop) = AsyncClient::new(opts, 256);
    let filters = [Kind::CheckIn, Kind::Request, Kind::Report]
        .map(|k| topics::shared_filter(group, &broker.prefix, k));
    loop {
        match events.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                for f in filters.iter() {
                    let f = f.as_ref().ok_or(ServerError::Topic)?;
                    client.subscribe(f.as_str(), QoS::AtLeastOnce).await?;
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let handled = answer(&broker.prefix, &p.topic, &p.payload, &handler);
                match handled {
                    Some(out) => {
                        stats.answered.fetch_add(1, Ordering::Relaxed);
                        for (topic, retain, payload) in out {
                            client
                                .publish(topic.as_str(), QoS::AtLeastOnce, retain, payload)
                                .await?;
                        }
                    }
                    None => {
                        stats.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Ok(_) => {}
            // The broker went away: rumqttc reconnects on the next poll.
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// The publications answering one request: (topic, retained, payload). `None`: drop it.
pub fn answer<D: DesiredState, I: ImageSource>(
    prefix: &str,
    topic: &str,
    payload: &[u8],
    handler: &Handler<D, I>,
) -> Option<Vec<(topics::Topic, bool, Vec<u8>)>> {
    let (id, kind) = topics::parse(prefix, topic)?;
    let msg = wire::decode(payload).ok()?;
    // A device may only speak for itself: the id in the message must be the topic's.
    let (expected, claimed) = match (&msg, kind) {
        (Message::CheckIn(c), Kind::CheckIn) => (id.as_bytes(), c.device_id),
        (Message::Report(r), Kind::Report) => (id.as_bytes(), r.device_id),
        (Message::ChunkRequest(_), Kind::Request) => (id.as_bytes(), id.as_bytes()),
        _ => return None,
    };
    if expected != claimed {
        return None;
    }
    let reply = handler.handle(payload).ok()?;
    let mut out = Vec::new();
    if let Some(reply) = reply {
        let retained = (kind == Kind::CheckIn).then(|| reply.clone());
        out.push((topics::topic(prefix, id, Kind::Down)?, false, reply));
        if let Some(r) = retained {
            // The desired state for the next wake: what this check-in was told.
            out.push((topics::topic(prefix, id, Kind::Desired)?, true, r));
        }
    }
    Some(out)
}
