//! MQTT for [`ota_core`]: the topic layout, a tokio server that several instances can run
//! behind one shared subscription, and a blocking device client for host simulators
//! (feature `std`, over `rumqttc`).
//!
//! | module | what it holds |
//! |---|---|
//! | [`topics`] | the topic table (`no_std`) |
//! | `server` (feature `std`) | the stateless server |
//! | `device` (feature `std`) | a device wake over MQTT |
#![cfg_attr(not(feature = "std"), no_std)]
#![deny(missing_docs)]
#![deny(clippy::indexing_slicing)]
#![forbid(unsafe_code)]

pub mod topics;

#[cfg(feature = "std")]
pub mod device;
#[cfg(feature = "std")]
pub mod server;

/// Broker address and credentials.
#[cfg(feature = "std")]
#[derive(Debug, Clone)]
pub struct Broker {
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// User name (the device id for devices, so a broker ACL can pin each to its topics).
    pub username: Option<String>,
    /// Password.
    pub password: Option<String>,
    /// Topic prefix.
    pub prefix: String,
}
