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
        /// The patch, from the verified manifest.
        patch: PatchInfo,
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
            StorageOp::Rebuild { patch, image_size } => self.rebuild(&patch, image_size),
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
    use sha2::Digest as _;

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
        /// The running image ([`MemStorage::with_active`]) is not the patch's source.
        #[error("the running image is not the patch's source")]
        PatchSource,
        /// The staged patch does not rebuild the image (its digest, its format, its CRC).
        #[error("the patch does not apply: {0}")]
        Patch(&'static str),
    }

    /// Storage in RAM, for tests and simulators. It refuses to rewrite a staged byte with a
    /// different value, so a test notices any write of data that was not what it claimed to be.
    #[derive(Debug, Clone)]
    pub struct MemStorage {
        slot: Vec<Option<u8>>,
        /// The patch of a patch download, staged whole beside the image.
        patch: Option<(PatchInfo, Vec<Option<u8>>)>,
        /// The image the device runs: what a patch applies to.
        active: Vec<u8>,
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
                patch: None,
                active: Vec::new(),
                state: None,
                bytes_written: 0,
                counter: 0,
                outcome: LastOutcome::None,
            }
        }

        /// The same, running `image`: the image a patch applies to.
        pub fn with_active(mut self, image: &[u8]) -> Self {
            self.active = image.to_vec();
            self
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

        /// Where writes go: the patch while one is being fetched, else the image.
        fn slice(&mut self, offset: u32, len: usize) -> Result<&mut [Option<u8>], MemError> {
            let capacity = self.capacity();
            let start = offset as usize;
            let end = start.saturating_add(len);
            let area = match self.patch.as_mut() {
                Some((_, patch)) => patch,
                None => &mut self.slot,
            };
            area.get_mut(start..end).ok_or(MemError::OutOfRange {
                offset,
                len,
                capacity,
            })
        }

        fn active_is(&self, size: u32, digest: &crate::wire::Digest) -> bool {
            self.active
                .get(..size as usize)
                .is_some_and(|a| sha2::Sha256::digest(a).as_slice() == digest.0)
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
            self.patch = None;
            let decoded = manifest.as_signed().decode_verified().ok();
            if let Some((p, size)) = decoded.and_then(|m| Some((m.patch?, m.image_size))) {
                if !self.active_is(p.source_size, &p.source_digest) {
                    return Err(MemError::PatchSource);
                }
                if u64::from(size) + u64::from(p.size) > u64::from(self.capacity()) {
                    return Err(MemError::Patch("image and patch do not fit side by side"));
                }
                self.patch = Some((p, vec![None; p.size as usize]));
            }
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
            let capacity = self.capacity();
            let start = offset as usize;
            let slots = start
                .checked_add(buf.len())
                .and_then(|end| self.slot.get(start..end))
                .ok_or(MemError::OutOfRange {
                    offset,
                    len: buf.len(),
                    capacity,
                })?;
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
            self.patch = None;
            self.slot.iter_mut().for_each(|b| *b = None);
            Ok(())
        }

        fn set_outcome(&mut self, outcome: LastOutcome) -> Result<(), MemError> {
            self.outcome = outcome;
            Ok(())
        }

        fn rebuild(&mut self, patch: &PatchInfo, image_size: u32) -> Result<(), MemError> {
            let staged: Vec<u8> = match self.patch.as_ref() {
                Some((p, bytes)) if p == patch => bytes.iter().map(|b| b.unwrap_or(0xFF)).collect(),
                _ => return Err(MemError::Patch("no patch staged")),
            };
            if sha2::Sha256::digest(&staged).as_slice() != patch.digest.0 {
                return Err(MemError::Patch("digest"));
            }
            if !self.active_is(patch.source_size, &patch.source_digest) {
                return Err(MemError::PatchSource);
            }
            let old = self
                .active
                .get(..patch.source_size as usize)
                .ok_or(MemError::PatchSource)?;
            let new = ota_delta::apply_in_memory(old, &staged)
                .map_err(|_| MemError::Patch("format or CRC"))?;
            if new.len() != image_size as usize {
                return Err(MemError::Patch("size"));
            }
            // Rebuilt from the start each time it is asked, as after a reset.
            self.slot.iter_mut().for_each(|b| *b = None);
            let dst = self
                .slot
                .get_mut(..new.len())
                .ok_or(MemError::Patch("larger than the slot"))?;
            dst.iter_mut().zip(&new).for_each(|(d, &b)| *d = Some(b));
            self.bytes_written += new.len() as u64;
            Ok(())
        }

        fn failure(error: &MemError) -> StorageFailure {
            match error {
                MemError::PatchSource => StorageFailure::PatchSource,
                MemError::Patch(_) => StorageFailure::Patch,
                MemError::OutOfRange { .. } => StorageFailure::OutOfSpace,
                MemError::Conflict(_) => StorageFailure::Io,
            }
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
