//! MQTT for [`ota_core`]: the topic layout, a device client that is `no_std` and alloc-free
//! (MQTT 5, on [`minimq`]), and a tokio server that several instances run behind one shared
//! subscription (feature `std`, on `rumqttc`).
//!
//! | module | what it holds |
//! |---|---|
//! | [`topics`] | the topic table |
//! | [`device`] | one device wake over MQTT: desired state, check-in, download |
//! | `tcp` (feature `std`) | a tokio TCP connector, to run the device client on a host |
//! | `server` (feature `std`) | the stateless server and the desired-state publisher |
//!
//! Why these clients: `minimq` is a small MQTT 5 client made for microcontrollers (caller-owned
//! buffers, QoS 1 replay on resumed sessions, session expiry), maintained by QUARTIQ for their
//! instruments; `rumqttc` is the widely used tokio client, and a server needs nothing more.
#![cfg_attr(not(feature = "std"), no_std)]
#![deny(missing_docs)]
#![deny(clippy::indexing_slicing)]
#![forbid(unsafe_code)]

pub mod device;
pub mod topics;

#[cfg(feature = "std")]
pub mod server;
#[cfg(feature = "std")]
pub mod tcp;

/// Broker address and credentials of a server instance.
#[cfg(feature = "std")]
#[derive(Debug, Clone)]
pub struct Broker {
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// User name.
    pub username: Option<String>,
    /// Password.
    pub password: Option<String>,
    /// Topic prefix.
    pub prefix: String,
}
