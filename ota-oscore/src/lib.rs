//! OSCORE (RFC 8613) for constrained devices and their servers, `no_std` and allocation-free.
//!
//! OSCORE protects a CoAP request and its response end to end: the inner code, the options
//! that say what is asked (Uri-Path, Block2, ETag...) and the payload are encrypted and
//! authenticated with AES-CCM-16-64-128 under keys derived (HKDF-SHA256) from a master secret
//! the device and the server share. A request that opens under a device's keys can only have
//! come from that device, so the server knows who speaks without a handshake per wake.
//!
//! | module | what it holds |
//! |---|---|
//! | [`context`] | the security context: keys and common IV derived from the master secret |
//! | [`option`] | the OSCORE option value (partial IV, kid, kid context) |
//! | [`protect`] | sealing and opening requests and responses in place |
//! | [`replay`] | the server's sliding replay window |
//! | [`sequence`] | the device's sender sequence numbers, reserved ahead so a reset never reuses one |
//!
//! This crate is CoAP-agnostic: it seals and opens the *inner* message bytes (code, options,
//! payload marker and payload, as `coap-message-implementations` writes them) and leaves the
//! outer message to the transport (`ota-transport-coap`).
//!
//! Only what a pre-provisioned fleet needs is here: algorithm 10 (AES-CCM-16-64-128) with
//! HKDF-SHA256, sender and recipient ids up to 7 bytes, no kid context in derivation, no group
//! OSCORE, no EDHOC. Checked against the RFC 8613 appendix C vectors and against aiocoap.
#![cfg_attr(not(test), no_std)]
#![deny(missing_docs)]
#![deny(clippy::indexing_slicing)]
#![forbid(unsafe_code)]

pub mod context;
mod cose;
pub mod option;
pub mod protect;
pub mod replay;
pub mod sequence;

pub use context::SecurityContext;
pub use option::OscoreOption;
pub use protect::{RequestId, TAG_LEN};
pub use replay::ReplayWindow;
pub use sequence::SenderSequence;

/// CoAP option number of the OSCORE option.
pub const OPTION_NUMBER: u16 = 9;

/// Longest sender or recipient id with a 13-byte nonce (nonce length minus 6).
pub const MAX_ID: usize = 7;

/// Largest sequence number (partial IVs are at most 5 bytes).
pub const MAX_SEQUENCE: u64 = (1 << 40) - 1;

/// Why OSCORE processing failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A sender or recipient id longer than [`MAX_ID`].
    #[error("OSCORE id of {0} bytes exceeds {MAX_ID}")]
    IdTooLong(usize),
    /// The OSCORE option value is malformed.
    #[error("malformed OSCORE option: {0}")]
    BadOption(&'static str),
    /// A request without a partial IV or kid.
    #[error("OSCORE request lacks a {0}")]
    Missing(&'static str),
    /// The ciphertext did not authenticate: wrong keys, tampered or truncated.
    #[error("OSCORE message does not authenticate")]
    Decrypt,
    /// The sender sequence number space is used up: the context must be renewed.
    #[error("OSCORE sequence numbers exhausted")]
    SequenceExhausted,
    /// The buffer has no room for the tag or the result.
    #[error("buffer too small")]
    BufferTooSmall,
}

/// The README's example, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
