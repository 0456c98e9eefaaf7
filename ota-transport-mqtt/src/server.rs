//! The server: subscribes to every device's requests through shared subscriptions, answers each
//! through the application's asynchronous decision ([`ota_core::host::Application`]; a
//! synchronous [`ota_core::host::Handler`] is one), and keeps each device's desired state
//! retained. A [`Publisher`] republishes desired states when a release or rollout changes.
//! Requests are answered concurrently, each on a task of its own, so a decision that waits for
//! a database does not hold up the connection.
//!
//! Nothing is kept between requests, so any number of instances can share a group: the broker
//! hands each request to one of them, and when one stops, the others get the rest.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ota_core::host::{self, desired_state, Application, Peer, Request};
use ota_core::wire;
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
    /// Connections to the broker made (more than one: the connection was lost and redialled).
    pub connects: AtomicU64,
}

/// Why the server stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A topic filter did not fit.
    #[error("prefix or group too long for a topic")]
    Topic,
    /// A device id that no topic can carry (it breaks the device id rule).
    #[error("device id {0:?} cannot be a topic level")]
    DeviceId(String),
    /// The client's request channel closed.
    #[error("mqtt client: {0}")]
    Client(#[from] rumqttc::ClientError),
}

/// One server instance: a connection to the broker and a shared subscription.
pub struct Server {
    client: AsyncClient,
    events: EventLoop,
    prefix: String,
    group: String,
}

/// Publishes devices' desired states while a [`Server`] runs; cheap to clone.
#[derive(Clone)]
pub struct Publisher {
    client: AsyncClient,
    prefix: String,
}

impl Server {
    /// An instance connecting as `client_id`; `group` names the shared subscription, and
    /// instances with the same group split the fleet.
    pub fn new(broker: &Broker, client_id: &str, group: &str) -> Self {
        let mut opts = MqttOptions::new(client_id, broker.host.clone(), broker.port);
        opts.set_keep_alive(Duration::from_secs(10));
        opts.set_clean_session(true);
        // Larger than any broker limit the shipped configuration sets (4 KiB), so an oversized
        // publish that a broker lets through is parsed and dropped here rather than ending the
        // connection.
        opts.set_max_packet_size(256 * 1024, 256 * 1024);
        if let (Some(u), Some(p)) = (&broker.username, &broker.password) {
            opts.set_credentials(u.clone(), p.clone());
        }
        let (client, mut events) = AsyncClient::new(opts, 256);
        // Each chunk is one small write; Nagle would hold it until the broker's delayed
        // acknowledgement of the one before (40 ms on Linux), a stall per chunk on a fast path.
        let mut net = events.network_options();
        net.set_tcp_nodelay(true);
        events.set_network_options(net);
        Self {
            client,
            events,
            prefix: broker.prefix.clone(),
            group: group.to_string(),
        }
    }

    /// A handle to publish desired states through this instance's connection.
    pub fn publisher(&self) -> Publisher {
        Publisher {
            client: self.client.clone(),
            prefix: self.prefix.clone(),
        }
    }

    /// Answers requests until the task is dropped.
    pub async fn run<A>(mut self, app: Arc<A>, stats: Arc<ServerStats>) -> Result<(), ServerError>
    where
        A: Application + 'static,
    {
        let filters = [Kind::CheckIn, Kind::Request, Kind::Report]
            .map(|k| topics::shared_filter(&self.group, &self.prefix, k));
        loop {
            match self.events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    stats.connects.fetch_add(1, Ordering::Relaxed);
                    for f in filters.iter() {
                        let f = f.as_ref().ok_or(ServerError::Topic)?;
                        self.client.subscribe(f.as_str(), QoS::AtLeastOnce).await?;
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let (app, stats, client) = (app.clone(), stats.clone(), self.client.clone());
                    let prefix = self.prefix.clone();
                    tokio::spawn(async move {
                        match answer(&prefix, &p.topic, &p.payload, &*app).await {
                            Some(out) => {
                                stats.answered.fetch_add(1, Ordering::Relaxed);
                                for (topic, retain, payload) in out {
                                    // A closed client ends `run` at its next poll.
                                    let _ = client
                                        .publish(topic.as_str(), QoS::AtLeastOnce, retain, payload)
                                        .await;
                                }
                            }
                            None => {
                                stats.dropped.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    });
                }
                Ok(_) => {}
                // The broker went away: rumqttc reconnects on the next poll.
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
}

impl Publisher {
    /// Publishes `state` (an encoded reply, see [`ota_core::host::desired_state`]) as the
    /// retained desired state of device `id`, at QoS 1.
    pub async fn desired(&self, id: &str, state: Vec<u8>) -> Result<(), ServerError> {
        let topic = topics::topic(&self.prefix, id, Kind::Desired)
            .ok_or_else(|| ServerError::DeviceId(id.to_string()))?;
        self.client
            .publish(topic.as_str(), QoS::AtLeastOnce, true, state)
            .await?;
        Ok(())
    }
}

/// Runs one server instance until its task is dropped: [`Server::new`] then [`Server::run`].
pub async fn serve<A>(
    broker: Broker,
    client_id: &str,
    group: &str,
    app: Arc<A>,
    stats: Arc<ServerStats>,
) -> Result<(), ServerError>
where
    A: Application + 'static,
{
    Server::new(&broker, client_id, group).run(app, stats).await
}

/// The publications answering one request: (topic, retained, payload). `None`: drop it.
///
/// A check-in is answered on the device's `d` topic, and its desired state (the reply without
/// a manifest, [`ota_core::host::desired_state`]) is retained on `s` for the next wake.
pub async fn answer<A: Application + ?Sized>(
    prefix: &str,
    topic: &str,
    payload: &[u8],
    app: &A,
) -> Option<Vec<(topics::Topic, bool, Vec<u8>)>> {
    let (id, kind) = topics::parse(prefix, topic)?;
    let down = topics::topic(prefix, id, Kind::Down)?;
    // The broker's ACL pins each login to its own topics, so the topic names the device; the
    // id in a check-in or report must be the topic's.
    let peer = Peer::Device(id);
    match (host::request(payload, peer).ok()?, kind) {
        (Request::CheckIn(c), Kind::CheckIn) => {
            let decision = app.check_in(peer, &c).await;
            let reply = host::reply(decision.clone(), &c);
            let desired = host::shape_reply(decision, &c, |m| match &m {
                wire::Message::CheckInReply(r) => desired_state(r, c.running.digest),
                _ => reply.clone(),
            });
            Some(vec![
                (down, false, reply),
                (topics::topic(prefix, id, Kind::Desired)?, true, desired),
            ])
        }
        (Request::Report(r), Kind::Report) => {
            app.report(peer, &r).await;
            Some(Vec::new())
        }
        (req @ Request::Chunk(_), Kind::Request) => {
            let chunk = host::app::answer_checked(app, req, peer, 1024)
                .await
                .ok()??;
            Some(vec![(down, false, chunk)])
        }
        _ => None,
    }
}
