//! Sans-IO over-the-air update protocol for battery-powered, intermittently connected devices.
//!
//! `ota-core` holds everything both ends of an update must agree on, and nothing that touches a
//! socket, a clock or a flash chip:
//!
//! | module | what it holds |
//! |---|---|
//! | [`wire`] | the versioned messages: check-in, reply, chunk request, chunk, report |
//! | [`manifest`] | the signed manifest, its checks and the pluggable [`manifest::Verifier`] |
//! | [`framing`] | COBS + CRC-32 frames for byte-stream links (UART, TCP) |
//! | [`resume`] | the compact record persisted after every chunk |
//! | [`storage`] | the storage operations the device needs, as a trait and as values |
//! | [`device`] | the device-side state machine |
//! | [`runtime`] | the async wake loop over a transport's `Link` and storage, and its blocking wrapper |
//! | `host` (feature `std`) | the stateless server-side request handler and manifest signing |
//!
//! The link simulator, an in-memory storage and the test fixtures live in the workspace's
//! unpublished `ota-test-support` crate.
//!
//! The device side is `no_std` and allocation-free; build it with `--no-default-features` (add
//! `ed25519` for the default signature verifier).
#![cfg_attr(not(feature = "std"), no_std)]
#![deny(missing_docs)]
#![deny(clippy::indexing_slicing)]
#![forbid(unsafe_code)]

pub mod crc32;
pub mod device;
pub mod framing;
pub mod manifest;
pub mod resume;
pub mod runtime;
pub mod storage;
pub mod time;
pub mod wire;

#[cfg(feature = "std")]
pub mod host;

pub use device::{Device, DeviceConfig, Event};
pub use manifest::{Manifest, SignedManifest, Verifier};
pub use resume::ResumeState;
pub use storage::{StorageOp, UpdateStorage};
pub use time::Instant;
pub use wire::{decode, encode, Message};

/// The README's examples, compiled and run as doctests.
#[cfg(all(doctest, feature = "std"))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
