//! CoAP over UDP for [`ota_core`]: an alloc-free device client and a tokio server.
//!
//! | module | what it holds |
//! |---|---|
//! | [`resources`] | the resource table, option numbers and codes |
//! | [`udp`] | the RFC 7252 message layer around `coap-message-implementations` |
//! | [`block`] | the RFC 7959 Block2 option value |
//! | [`framing`] | [`CoapFraming`]: a device's CoAP, sans-IO: requests framed, responses read |
//! | [`client`] | [`CoapClient`]: an `ota-core` device and its framing, sans-IO |
//! | [`link`] | [`link::CoapLink`]: CoAP over a datagram socket for the device's async wake loop |
//! | [`secure`] | OSCORE (RFC 8613) framing: inner and outer messages |
//! | `server` (feature `server`) | the sans-IO responder and its tokio loop |
//!
//! The device side (`--no-default-features`) is `no_std` and allocation-free.
#![cfg_attr(not(feature = "std"), no_std)]
#![deny(missing_docs)]
#![deny(clippy::indexing_slicing)]
#![forbid(unsafe_code)]

pub mod block;
pub mod client;
mod client_security;
pub mod framing;
pub mod link;
pub mod resources;
#[cfg(feature = "oscore")]
pub mod secure;
pub mod udp;

#[cfg(feature = "server")]
pub mod server;

pub use client::CoapClient;
pub use framing::{ClientError, CoapFraming};
pub use link::CoapLink;
