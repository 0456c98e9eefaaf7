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

use crate::manifest::{PatchInfo, StoredManifest};
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
    /// Every chunk of a patch is written ([`StorageOp::Write`] offsets were in the patch, as the
    /// manifest given to [`StorageOp::Begin`] said): check the patch's digest, check the running
    /// image against the patch's source, and rebuild the image from the two, so that
    /// [`StorageOp::Read`] then reads the image. Asked again after a reset that cut it short:
    /// it must start over and end the same. Failures: [`StorageFailure::PatchSource`],
    /// [`StorageFailure::Patch`].
    Rebuild {
        /// The patch, from the verified manifest (borrowed, as the manifest of
        /// [`StorageOp::Begin`] is: an operation is carried out while the device waits).
        patch: &'a PatchInfo,
        /// Size of the image it rebuilds.
        image_size: u32,
    },
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
    /// The running image is not the one the patch applies to (checked at [`StorageOp::Begin`],
    /// before anything is fetched, and again at [`StorageOp::Rebuild`]).
    #[error("the running image is not the patch's source")]
    PatchSource,
    /// The patch cannot rebuild the image: its digest, its format, or this storage cannot
    /// apply patches.
    #[error("the patch does not apply")]
    Patch,
}

impl StorageFailure {
    /// True if the wake cannot go on with this storage (the flash failed): the wake ends with
    /// the storage's error. A patch that does not apply is only this download's failure: the
    /// device reports it and the server offers the whole image.
    pub fn ends_wake(self) -> bool {
        matches!(self, StorageFailure::OutOfSpace | StorageFailure::Io)
    }
}

/// Blocking storage for a download: the operations of [`StorageOp`] as methods.
///
/// `ota-storage` implements it over `embedded-storage` NOR flash; `MemStorage` (in the
/// workspace's unpublished `ota-test-support`) keeps everything in RAM for tests and simulators.
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
    /// See [`StorageOp::Rebuild`]. Storage that cannot apply patches fails here with an error
    /// that [`UpdateStorage::failure`] reads as [`StorageFailure::Patch`], and should refuse a
    /// patch manifest at [`UpdateStorage::begin`] already, before anything is fetched.
    fn rebuild(&mut self, patch: &PatchInfo, image_size: u32) -> Result<(), Self::Error>;

    /// What an error of this storage means to the state machine. The default reads every error
    /// as [`StorageFailure::Io`].
    fn failure(_error: &Self::Error) -> StorageFailure {
        StorageFailure::Io
    }

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
            StorageOp::Rebuild { patch, image_size } => self.rebuild(patch, image_size),
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
