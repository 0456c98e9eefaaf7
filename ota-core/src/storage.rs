//! What the device state machine needs from storage, as values and as a trait.
//!
//! The state machine never touches flash. It hands out [`StorageOp`]s through
//! [`crate::Device::poll_storage`]; the caller carries each one out (blocking, async, or on
//! another core) and reports back with [`crate::Device::storage_done`]. For a blocking
//! implementation of [`UpdateStorage`], [`crate::Device::drive_storage`] does that loop.
//!
//! The contract storage must keep for power-fail safety: a [`StorageOp::Persist`] is only issued
//! after the [`StorageOp::Write`] it records has completed, so persisting it after the data is
//! enough to never claim bytes that are not in flash.

use crate::manifest::StoredManifest;
use crate::resume::ResumeState;
use crate::wire::LastOutcome;

/// What storage holds for the state machine when a wake starts ([`UpdateStorage::load`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Persisted {
    /// Size of the staging slot in bytes.
    pub capacity: u32,
    /// The download in progress, if any.
    pub download: Option<(ResumeState, StoredManifest)>,
    /// The outcome of the last update, to report until the server has seen it.
    pub outcome: LastOutcome,
}

/// One storage operation requested by the state machine.
#[derive(Debug, PartialEq, Eq)]
pub enum StorageOp<'a> {
    /// Start staging a new image: discard any earlier download, persist `manifest` and `state`
    /// (offset zero) so a later wake can resume without fetching the manifest again.
    Begin {
        /// The verified manifest.
        manifest: &'a StoredManifest,
        /// The fresh resume record.
        state: ResumeState,
    },
    /// Write chunk bytes at `offset` of the staging slot.
    Write {
        /// Byte offset in the slot.
        offset: u32,
        /// The chunk (CRC already checked).
        data: &'a [u8],
    },
    /// Persist the resume record (after the write it records has completed).
    Persist(ResumeState),
    /// Read staged bytes back into `buf` (for the final digest).
    Read {
        /// Byte offset in the slot.
        offset: u32,
        /// Where to put them; fill all of it.
        buf: &'a mut [u8],
    },
    /// The image is complete and its digest verified from storage: record it as staged.
    MarkStaged(ResumeState),
    /// Forget the download in progress (cancelled, superseded or failed its digest).
    Abandon,
    /// Remember `outcome` for the next check-in ([`LastOutcome::None`]: the server has seen the
    /// last one, forget it).
    SetOutcome(LastOutcome),
}

/// Why a storage operation failed, as the state machine needs to know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StorageFailure {
    /// The slot cannot hold the image.
    #[error("staging slot too small")]
    OutOfSpace,
    /// The flash reported an error.
    #[error("flash I/O error")]
    Io,
}

/// Blocking storage for a download: the operations of [`StorageOp`] as methods.
///
/// `ota-storage` implements it over `embedded-storage` NOR flash; [`MemStorage`] (feature
/// `std`) keeps everything in RAM for tests and simulators.
pub trait UpdateStorage {
    /// The implementation's own error.
    type Error: core::fmt::Debug;

    /// Size of the staging slot in bytes.
    fn capacity(&self) -> u32;
    /// What is persisted: capacity, the download in progress and the outcome to report.
    fn load(&mut self) -> Result<Persisted, Self::Error>;
    /// See [`StorageOp::Begin`].
    fn begin(&mut self, manifest: &StoredManifest, state: &ResumeState) -> Result<(), Self::Error>;
    /// See [`StorageOp::Write`].
    fn write(&mut self, offset: u32, data: &[u8]) -> Result<(), Self::Error>;
    /// See [`StorageOp::Persist`].
    fn persist(&mut self, state: &ResumeState) -> Result<(), Self::Error>;
    /// See [`StorageOp::Read`].
    fn read(&mut self, offset: u32, buf: &mut [u8]) -> Result<(), Self::Error>;
    /// See [`StorageOp::MarkStaged`].
    fn mark_staged(&mut self, state: &ResumeState) -> Result<(), Self::Error>;
    /// See [`StorageOp::Abandon`].
    fn abandon(&mut self) -> Result<(), Self::Error>;
    /// See [`StorageOp::SetOutcome`].
    fn set_outcome(&mut self, outcome: LastOutcome) -> Result<(), Self::Error>;

    /// Carries out one operation.
    fn apply(&mut self, op: StorageOp<'_>) -> Result<(), Self::Error> {
        match op {
            StorageOp::Begin { manifest, state } => self.begin(manifest, &state),
            StorageOp::Write { offset, data } => self.write(offset, data),
            StorageOp::Persist(state) => self.persist(&state),
            StorageOp::Read { offset, buf } => self.read(offset, buf),
            StorageOp::MarkStaged(state) => self.mark_staged(&state),
            StorageOp::Abandon => self.abandon(),
            StorageOp::SetOutcome(o) => self.set_outcome(o),
        }
    }
}

/// A number kept across power loss for a transport's security state: the reservation of OSCORE
/// sender sequence numbers (`ota-oscore`, whose `SenderSequence` decides what may be stored). It
/// must be durable when `store_counter` returns.
pub trait CounterStore {
    /// Storage error.
    type Error: core::fmt::Debug;
    /// The value last stored (0 if none).
    fn load_counter(&mut self) -> Result<u64, Self::Error>;
    /// Stores `value` durably.
    fn store_counter(&mut self, value: u64) -> Result<(), Self::Error>;
}

#[cfg(feature = "std")]
mod mem {
    use super::*;

    /// Errors of [`MemStorage`].
    #[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
    pub enum MemError {
        /// Access beyond the slot.
        #[error("access at {offset}+{len} beyond the {capacity}-byte slot")]
        OutOfRange {
            /// Offset.
            offset: u32,
            /// Length.
            len: usize,
            /// Slot size.
            capacity: u32,
        },
        /// A byte already written was written again with a different value: the caller wrote
        /// data that disagrees with what it staged before.
        #[error("byte {0} rewritten with a different value")]
        Conflict(u32),
    }

    /// Storage in RAM, for tests and simulators. It refuses to rewrite a staged byte with a
    /// different value, so a test notices any write of data that was not what it claimed to be.
    #[derive(Debug, Clone)]
    pub struct MemStorage {
        slot: Vec<Option<u8>>,
        state: Option<(ResumeState, StoredManifest)>,
        /// Bytes written into the slot, all writes counted.
        pub bytes_written: u64,
        counter: u64,
        outcome: LastOutcome,
    }

    impl MemStorage {
        /// A slot of `capacity` bytes.
        pub fn new(capacity: u32) -> Self {
            Self {
                slot: vec![None; capacity as usize],
                state: None,
                bytes_written: 0,
                counter: 0,
                outcome: LastOutcome::None,
            }
        }

        /// The first `len` staged bytes (unwritten bytes read as `0xFF`).
        pub fn staged(&self, len: usize) -> Vec<u8> {
            self.slot
                .iter()
                .take(len)
                .map(|b| b.unwrap_or(0xFF))
                .collect()
        }

        /// The persisted resume record, if any.
        pub fn state(&self) -> Option<&ResumeState> {
            self.state.as_ref().map(|(s, _)| s)
        }

        fn slice(&mut self, offset: u32, len: usize) -> Result<&mut [Option<u8>], MemError> {
            let capacity = self.capacity();
            let start = offset as usize;
            let end = start.saturating_add(len);
            self.slot.get_mut(start..end).ok_or(MemError::OutOfRange {
                offset,
                len,
                capacity,
            })
        }
    }

    impl UpdateStorage for MemStorage {
        type Error = MemError;

        fn capacity(&self) -> u32 {
            u32::try_from(self.slot.len()).unwrap_or(u32::MAX)
        }

        fn load(&mut self) -> Result<Persisted, MemError> {
            Ok(Persisted {
                capacity: self.capacity(),
                download: self.state,
                outcome: self.outcome,
            })
        }

        fn begin(
            &mut self,
            manifest: &StoredManifest,
            state: &ResumeState,
        ) -> Result<(), MemError> {
            self.slot.iter_mut().for_each(|b| *b = None);
            self.state = Some((*state, *manifest));
            Ok(())
        }

        fn write(&mut self, offset: u32, data: &[u8]) -> Result<(), MemError> {
            let slots = self.slice(offset, data.len())?;
            if let Some(i) = slots
                .iter()
                .zip(data)
                .position(|(old, new)| old.is_some_and(|o| o != *new))
            {
                return Err(MemError::Conflict(offset.saturating_add(i as u32)));
            }
            slots
                .iter_mut()
                .zip(data)
                .for_each(|(slot, &new)| *slot = Some(new));
            self.bytes_written += data.len() as u64;
            Ok(())
        }

        fn persist(&mut self, state: &ResumeState) -> Result<(), MemError> {
            if let Some((s, _)) = self.state.as_mut() {
                *s = *state;
            }
            Ok(())
        }

        fn read(&mut self, offset: u32, buf: &mut [u8]) -> Result<(), MemError> {
            let slots = self.slice(offset, buf.len())?;
            for (dst, src) in buf.iter_mut().zip(slots.iter()) {
                *dst = src.unwrap_or(0xFF);
            }
            Ok(())
        }

        fn mark_staged(&mut self, state: &ResumeState) -> Result<(), MemError> {
            self.persist(state)
        }

        fn abandon(&mut self) -> Result<(), MemError> {
            self.state = None;
            self.slot.iter_mut().for_each(|b| *b = None);
            Ok(())
        }

        fn set_outcome(&mut self, outcome: LastOutcome) -> Result<(), MemError> {
            self.outcome = outcome;
            Ok(())
        }
    }

    impl CounterStore for MemStorage {
        type Error = MemError;

        fn load_counter(&mut self) -> Result<u64, MemError> {
            Ok(self.counter)
        }

        fn store_counter(&mut self, value: u64) -> Result<(), MemError> {
            self.counter = value;
            Ok(())
        }
    }
}

#[cfg(feature = "std")]
pub use mem::{MemError, MemStorage};
