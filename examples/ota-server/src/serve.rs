//! `ota-server serve`: the fleet over a store, CoAP on `SO_REUSEPORT` sockets, MQTT through a
//! broker, the HTTP API and dashboard, and the fleet's upkeep (snapshot reloads, byte counts,
//! rollout ramps and pauses), all in one tokio runtime until Ctrl-C.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ota_transport_coap::server::{self as coap, DeviceKeys, Engine, Security, ServerConfig};
use ota_transport_mqtt::server::{Server as MqttServer, ServerStats as MqttStats};
use ota_transport_mqtt::Broker;

use crate::fleet::Fleet;
use crate::http;
use crate::mqtt::keep_desired_states;
use crate::store::Store;

/// What to serve, and how.
pub struct Options {
    /// CoAP address, if CoAP is served.
    pub coap: Option<SocketAddr>,
    /// `SO_REUSEPORT` sockets on it.
    pub coap_sockets: usize,
    /// Receive buffer asked for each, bytes.
    pub recv_buffer: usize,
    /// The broker, if MQTT is served.
    pub mqtt: Option<Broker>,
    /// Shared-subscription group.
    pub mqtt_group: String,
    /// This instance's MQTT client id.
    pub mqtt_client_id: String,
    /// HTTP address for the API, dashboard and metrics, if served.
    pub http: Option<SocketAddr>,
    /// Seconds between device check-ins.
    pub check_in_secs: u32,
    /// Accept plain CoAP (lab only).
    pub insecure_plain: bool,
    /// Most bytes of images in memory.
    pub image_cache_bytes: usize,
    /// The key the API signs uploaded images with, if any.
    pub signing_key: Option<ed25519_dalek::SigningKey>,
    /// The public key pre-signed manifests are checked with, if any.
    pub public_key: Option<[u8; 32]>,
}

/// A CoAP code as `C.DD`.
pub fn code_text(code: u8) -> String {
    format!("{}.{:02}", code >> 5, code & 31)
}

/// Serves until Ctrl-C (or a transport fails).
pub async fn run(store: Store, opts: Options) -> anyhow::Result<()> {
    let fleet = Arc::new(Fleet::new(store, opts.check_in_secs, opts.image_cache_bytes).await?);
    let keys: Arc<dyn DeviceKeys> = fleet.clone();
    let security = if opts.insecure_plain {
        eprintln!("ota-server: WARNING: --insecure-plain: plain CoAP accepted; anyone can speak for any device");
        Security::PlainForLab(Some(keys))
    } else {
        Security::Oscore(keys)
    };
    let engine = Arc::new(
        Engine::new(ServerConfig::default(), security).on_refusal(|r| {
            eprintln!(
                "ota-server: refused {} from {}: {}",
                code_text(r.code),
                r.peer,
                r.reason
            );
        }),
    );
    let coap_task = async {
        let Some(addr) = opts.coap else {
            return std::future::pending().await;
        };
        let sockets = coap::bind(addr, opts.coap_sockets, opts.recv_buffer)
            .with_context(|| format!("cannot bind {addr}"))?;
        let local = sockets.first().context("no socket")?.local_addr()?;
        let granted = sockets.first().map(coap::socket::recv_buffer).unwrap_or(0);
        eprintln!(
            "ota-server: serving CoAP on {local} ({} sockets, {} KiB receive buffer each, store: {})",
            sockets.len(),
            granted / 1024,
            fleet.store().backend().kind()
        );
        coap::serve_app_on(sockets, engine.clone(), fleet.clone())
            .await
            .context("CoAP server failed")
    };
    let mqtt_task = async {
        let Some(broker) = &opts.mqtt else {
            return std::future::pending().await;
        };
        eprintln!(
            "ota-server: serving MQTT through {}:{} under {}/",
            broker.host, broker.port, broker.prefix
        );
        let server = MqttServer::new(broker, &opts.mqtt_client_id, &opts.mqtt_group);
        let publisher = server.publisher();
        let stats = Arc::new(MqttStats::default());
        tokio::select! {
            r = server.run(fleet.clone(), stats) => r.context("MQTT server failed"),
            r = keep_desired_states(fleet.clone(), publisher, Duration::from_secs(1)) => r,
        }
    };
    let http_task = async {
        let Some(addr) = opts.http else {
            return std::future::pending().await;
        };
        let state = http::State {
            fleet: fleet.clone(),
            coap: opts.coap.map(|_| engine.stats()),
            signing_key: opts.signing_key.clone(),
            public_key: opts.public_key,
        };
        http::serve(addr, state).await
    };
    let result = tokio::select! {
        r = coap_task => r,
        r = mqtt_task => r,
        r = http_task => r,
        _ = fleet.clone().maintain() => Ok(()),
        _ = tokio::signal::ctrl_c() => Ok(()),
    };
    // What is queued is written before the process ends.
    if let Err(e) = fleet.flush().await {
        eprintln!("ota-server: {e:#}");
    }
    result
}

/// Serves `fleet` over CoAP (OSCORE required) on `sockets` sockets at `addr` from tasks on the
/// current runtime, with the fleet's upkeep: for programs that run the server in-process
/// (`ota-demo`, `ota-bench`). Returns the address and the server's counters.
pub fn spawn_coap(
    fleet: Arc<Fleet>,
    addr: SocketAddr,
    sockets: usize,
) -> anyhow::Result<(SocketAddr, Arc<coap::ServerStats>)> {
    let keys: Arc<dyn DeviceKeys> = fleet.clone();
    let engine = Arc::new(Engine::new(ServerConfig::default(), Security::Oscore(keys)));
    let stats = engine.stats();
    let bound = coap::bind(addr, sockets, 4 << 20)?;
    let local = bound.first().context("no socket")?.local_addr()?;
    tokio::spawn(coap::serve_app_on(bound, engine, fleet.clone()));
    tokio::spawn(fleet.maintain());
    Ok((local, stats))
}
