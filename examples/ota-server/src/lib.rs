//! The update server's library; the `ota-server` binary is a thin CLI over it, and `ota-demo`
//! and `ota-bench` run it in-process.
//!
//! | module | what it holds |
//! |---|---|
//! | [`store`] | the store: one set of typed operations over SQLite or PostgreSQL |
//! | [`fleet`] | decisions for every check-in, images, credentials, staged rollouts |
//! | [`delta`] | patches from earlier releases (`release --delta-from`) |
//! | [`serve`] | the transports and the HTTP side started together (`ota-server serve`) |
//! | [`mqtt`] | MQTT: broker URLs, keeping retained desired states current |
//! | [`http`] | the management API, the dashboard and `/metrics` |
//! | [`metrics`] | the counters behind `/metrics` |
//! | [`cache`] | the byte-bounded image cache |
//! | [`credentials`], [`keys`] | device credentials files, signing keys |
#![deny(missing_docs)]

pub mod cache;
pub mod credentials;
pub mod delta;
pub mod fleet;
pub mod http;
pub mod keys;
pub mod metrics;
pub mod mqtt;
pub mod serve;
pub mod store;

/// Kept for code that knew the fleet as `desired`.
pub mod desired {
    pub use crate::fleet::{reason_text, Fleet};
}

/// Vendor id the server signs for and devices expect (one vendor per server here).
pub const VENDOR: u32 = 1;

/// A device class's numeric id: the CRC-32 of its name, so devices and server agree on it
/// without a registry.
pub fn class_id(name: &str) -> u32 {
    ota_core::crc32::checksum(name.as_bytes())
}

/// Parses `X.Y.Z`.
pub fn parse_version(s: &str) -> anyhow::Result<ota_core::wire::Version> {
    let mut it = s.split('.').map(|p| p.parse::<u16>());
    match (it.next(), it.next(), it.next(), it.next()) {
        (Some(Ok(a)), Some(Ok(b)), Some(Ok(c)), None) => Ok(ota_core::wire::Version::new(a, b, c)),
        _ => anyhow::bail!("version {s:?} is not X.Y.Z with numbers up to 65535"),
    }
}
