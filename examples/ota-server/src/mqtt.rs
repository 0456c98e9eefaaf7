//! Serving over MQTT: the broker URL, and keeping every device's retained desired state
//! current when a release or rollout changes while devices sleep.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ota_core::host::desired_state_of;
use ota_core::wire::{self, Message};
use ota_transport_mqtt::server::{Publisher, ServerError};
use ota_transport_mqtt::Broker;

use crate::fleet::Fleet;

/// Parses `mqtt://[USER[:PASSWORD]@]HOST[:PORT][/PREFIX]` (port 1883 and prefix `ota` by
/// default; an IPv6 host goes in brackets).
pub fn parse_url(url: &str) -> anyhow::Result<Broker> {
    let rest = url
        .strip_prefix("mqtt://")
        .with_context(|| format!("{url:?} is not mqtt://[USER[:PASSWORD]@]HOST[:PORT][/PREFIX]"))?;
    let (creds, rest) = match rest.rsplit_once('@') {
        Some((c, r)) => (Some(c), r),
        None => (None, rest),
    };
    let (hostport, prefix) = rest.split_once('/').unwrap_or((rest, "ota"));
    let (host, port) = match hostport.strip_prefix('[') {
        Some(v6) => {
            let (host, tail) = v6.split_once(']').context("unclosed [ in the host")?;
            (host, tail.strip_prefix(':'))
        }
        None => match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        },
    };
    anyhow::ensure!(!host.is_empty(), "no host in {url:?}");
    anyhow::ensure!(!prefix.is_empty(), "empty topic prefix in {url:?}");
    let port = match port {
        Some(p) => p.parse().with_context(|| format!("bad port {p:?}"))?,
        None => 1883,
    };
    let (username, password) = match creds.map(|c| c.split_once(':').unwrap_or((c, ""))) {
        Some((u, p)) => (Some(u.to_string()), Some(p.to_string())),
        None => (None, None),
    };
    Ok(Broker {
        host: host.to_string(),
        port,
        username,
        password,
        prefix: prefix.to_string(),
    })
}

/// Publishes the desired state of every device the store has a check-in from; returns how
/// many.
pub async fn republish_all(fleet: &Fleet, publisher: &Publisher) -> anyhow::Result<usize> {
    let checkins = fleet.store().checkins().await?;
    let mut n = 0;
    for (id, bytes) in checkins {
        // Stored by this server from a check-in it decoded, so it decodes.
        let Ok(Message::CheckIn(c)) = wire::decode(&bytes) else {
            continue;
        };
        let state = desired_state_of(fleet.peek(&c).await, &c);
        match publisher.desired(&id, state).await {
            Ok(()) => n += 1,
            // One device's state that cannot be published (an id no topic can carry, stored
            // before the id rule) is that device's problem, not the server's.
            Err(e @ ServerError::DeviceId(_)) => eprintln!("ota-server: no desired state: {e}"),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(n)
}

/// Republishes every desired state at start and whenever the fleet's configuration changes
/// (a release, rollout or halt, by any process), checking every `every`.
pub async fn keep_desired_states(
    fleet: Arc<Fleet>,
    publisher: Publisher,
    every: Duration,
) -> anyhow::Result<()> {
    let mut seen = None;
    loop {
        // A store error (a busy database, say) is retried at the next tick rather than
        // stopping the server; only a closed MQTT client ends this.
        match fleet.store().config_version().await {
            Ok(version) if seen != Some(version) => {
                let _ = fleet.refresh(true).await;
                match republish_all(&fleet, &publisher).await {
                    Ok(n) => {
                        seen = Some(version);
                        eprintln!("ota-server: desired state published for {n} devices");
                    }
                    Err(e) if e.is::<ServerError>() => return Err(e),
                    Err(e) => eprintln!("ota-server: republishing desired states: {e:#}"),
                }
            }
            Ok(_) => {}
            Err(e) => eprintln!("ota-server: reading the store: {e:#}"),
        }
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::parse_url;

    #[test]
    fn urls() {
        let b = parse_url("mqtt://srv:s3cret@broker.example:8883/fleet").unwrap();
        assert_eq!(
            (b.host.as_str(), b.port, b.prefix.as_str()),
            ("broker.example", 8883, "fleet")
        );
        assert_eq!(
            (b.username.as_deref(), b.password.as_deref()),
            (Some("srv"), Some("s3cret"))
        );
        let b = parse_url("mqtt://[::1]").unwrap();
        assert_eq!(
            (b.host.as_str(), b.port, b.prefix.as_str()),
            ("::1", 1883, "ota")
        );
        assert!(b.username.is_none());
        for bad in [
            "coap://x",
            "mqtt://",
            "mqtt://h:port",
            "mqtt://h/",
            "mqtt://[::1",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }
}
