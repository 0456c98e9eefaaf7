//! Delta updates for sleepy, metered devices: send what changed.
//!
//! | module | what it holds | needs |
//! |---|---|---|
//! | [`format`](mod@format) | the patch format: header table, operations, codes | — |
//! | [`apply`] | [`Applier`]: rebuilds NEW from OLD and the patch, chunk by chunk | `no_std`, no alloc |
//! | [`state`] | [`State`]: the applier's whole state between chunks, 58 bytes persisted | `no_std` |
//! | [`error`] | [`ApplyError`] and its reasons | `no_std` |
//! | `diff` | [`diff()`]: makes a patch from OLD and NEW | `std` |
//!
//! Without the default `std` feature the crate is the applier alone: `no_std`, no allocation,
//! [`State`] plus a [`BUF_LEN`]-byte buffer of RAM.
//!
//! See the README for an example, the measured RAM and flash, and a comparison with detools.
#![cfg_attr(not(feature = "std"), no_std)]
#![deny(missing_docs)]
#![deny(clippy::indexing_slicing)]
#![forbid(unsafe_code)]

pub mod apply;
mod bits;
mod crc32;
pub mod error;
pub mod format;
pub mod state;

#[cfg(feature = "std")]
pub mod diff;

pub use apply::{Applier, NewImage, OldImage, OutOfBounds, Progress, Source, BUF_LEN};
#[cfg(feature = "std")]
pub use diff::{apply_in_memory, diff, source_of};
pub use error::{ApplyError, Malformed, SourceMismatch};
pub use format::{Header, HeaderError};
pub use state::{State, StateError, STATE_LEN};

/// The CRC-32 (ISO-HDLC) the patch header carries for NEW.
pub fn crc32(data: &[u8]) -> u32 {
    crc32::checksum(data)
}

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
