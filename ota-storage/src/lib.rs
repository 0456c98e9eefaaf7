//! Power-fail-safe update storage over NOR flash, for [`ota_core`].
//!
//! | module | what it holds |
//! |---|---|
//! | [`layout`] | where ACTIVE, DFU and the journal live |
//! | [`journal`] | append-only records in a ring of sectors, recovered after any cut |
//! | [`record`] | the journal's record format |
//! | [`state`] | the update state, download to confirm or revert |
//! | [`storage`] | [`AsyncFlashStorage`]: the state machine's storage over the DFU slot, async, multiwrite or write-once |
//! | [`mode`] | the write mode, multiwrite or write-once, as a type |
//! | [`patch`] | patch downloads: the patch in the slot's tail, the image rebuilt in its head (the rebuild with feature `delta`, on by default) |
//! | [`install`] | the swap, trial boot, confirm and rollback |
//! | [`blocking`] | [`FlashStorage`]: the same over a blocking flash driver, `ota_core::UpdateStorage` |
//! | [`flash`] | [`flash::BlockingFlash`]: a blocking driver seen as an async one |
//! | `embassy_boot` (feature `embassy-boot`) | staging into embassy-boot's DFU partition; its bootloader swaps, trial boots and reverts |
//!
//! `no_std` and allocation-free without the `std` feature. The simulated flash with power cuts
//! and the file-backed flash that the tests and simulators use live in the workspace's
//! unpublished `ota-test-support` crate.
#![cfg_attr(not(feature = "std"), no_std)]
#![deny(missing_docs)]
#![deny(clippy::indexing_slicing)]
#![forbid(unsafe_code)]

pub mod blocking;
#[cfg(feature = "embassy-boot")]
pub mod embassy_boot;
pub mod flash;
pub mod install;
pub mod journal;
pub mod layout;
pub mod mode;
pub mod patch;
pub mod record;
pub mod state;
pub mod storage;

/// The README's examples, compiled as doctests.
#[cfg(all(doctest, feature = "std"))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

pub use blocking::FlashStorage;
pub use install::BootOutcome;
pub use layout::{Layout, LayoutError, Partition};
pub use mode::{EitherMode, Multiwrite, WriteMode, WriteOnce};
pub use patch::PatchError;
pub use state::UpdateState;
pub use storage::{AsyncFlashStorage, StorageError};
