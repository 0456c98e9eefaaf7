//! Staging for `embassy-boot` (feature `embassy-boot`): the download goes into embassy-boot's
//! DFU partition, chunk by chunk and resumable, and embassy-boot's own bootloader swaps it in.
//!
//! | this crate's step | with embassy-boot |
//! |---|---|
//! | download: erase ahead, write chunks, journal progress | the same, into the DFU partition (never through `FirmwareUpdater::write_firmware`, which erases a sector whenever the sector changes and so loses chunks written out of order or before a resume) |
//! | patch download, rebuild | the same: the patch in the DFU partition's tail, the image rebuilt in its head from ACTIVE (see [`crate::patch`]); embassy-boot's swap then moves the whole partition, the patch's sectors past the image included, which is harmless |
//! | [`EmbassyBootStorage::request_install`] | `FirmwareState::mark_updated` (SWAP magic), then the journal says installing |
//! | the swap, trial boot | embassy-boot's `BootLoader::prepare_boot` in the bootloader binary |
//! | [`EmbassyBootStorage::boot`] (application start) | reads embassy-boot's state: SWAP after an install = the new image runs on trial; REVERT = it was rolled back |
//! | [`EmbassyBootStorage::confirm`] | `FirmwareState::mark_booted`, then the journal records the outcome |
//! | [`EmbassyBootStorage::reject`], or a reset on trial | the journal records why; embassy-boot reverts at the next reset |
//!
//! The journal (a partition of its own, two sectors or more) keeps the resume record, the
//! outcome to report and the OSCORE sequence reservation, as in [`AsyncFlashStorage`]. Every
//! step is ordered so that a power cut anywhere leaves either the old image running with the
//! download resumable, or the new one on trial, and the outcome reported right.
//!
//! Keep embassy-boot's STATE partition on flash that reads a torn unit back: embassy-boot's
//! bootloader stops at a read error in it (see the crate README).
//!
//! ```no_run
//! use embedded_storage_async::nor_flash::NorFlash;
//! use ota_core::wire::ResultCode;
//! use ota_storage::embassy_boot::{EmbassyBootError, EmbassyBootStorage};
//! use ota_storage::{BootOutcome, Layout, Partition};
//!
//! // ACTIVE and DFU exactly as embassy-boot's linker script has them; the journal our own.
//! const LAYOUT: Layout = Layout {
//!     active: Partition::new(0x0000_8000, 128 * 1024),
//!     dfu: Partition::new(0x0002_8000, 128 * 1024 + 4096),
//!     journal: Partition::new(0x0004_a000, 2 * 4096),
//! };
//!
//! /// Application start: `flash` the internal flash, `state` embassy-boot's state partition.
//! async fn start<F: NorFlash, S: NorFlash>(
//!     flash: F,
//!     state: S,
//!     healthy: impl AsyncFnOnce() -> bool,
//! ) -> Result<(), EmbassyBootError<F::Error>> {
//!     let mut aligned = [0u8; 8]; // max(WRITE_SIZE, READ_SIZE) of `state`
//!     let mut storage = EmbassyBootStorage::open_write_once(flash, LAYOUT, state, &mut aligned).await?;
//!     if let BootOutcome::Trial { .. } = storage.boot().await? {
//!         if healthy().await {
//!             storage.confirm().await?;
//!         } else {
//!             storage.reject(ResultCode::HEALTH_CHECK_FAILED).await?; // then reset
//!         }
//!     }
//!     // Each wake: ota_core::runtime::run_wake(.., &mut storage, ..); once it ends with
//!     // SleepReason::Staged, storage.request_install().await? and reset.
//!     Ok(())
//! }
//! ```

use embassy_boot::{FirmwareState, State};
use embedded_storage_async::nor_flash::{MultiwriteNorFlash, NorFlash};
use ota_core::storage::{Persisted, StorageFailure, StorageOp};
use ota_core::wire::ResultCode;
use sha2::{Digest as _, Sha256};

use crate::install::BootOutcome;
use crate::layout::Layout;
use crate::mode::{EitherMode, Multiwrite, WriteMode, WriteOnce};
use crate::state::UpdateState;
use crate::storage::{AsyncFlashStorage, StorageError};

/// Errors of the adapter: this crate's, or embassy-boot's state partition.
#[derive(Debug, thiserror::Error)]
pub enum EmbassyBootError<E> {
    /// Staging or the journal.
    #[error(transparent)]
    Storage(#[from] StorageError<E>),
    /// embassy-boot's state partition.
    #[error("embassy-boot state: {0:?}")]
    State(embassy_boot::FirmwareUpdaterError),
    /// The state buffer has the wrong length.
    #[error("embassy-boot state buffer: {got} bytes, needs {expected}")]
    AlignedBuffer {
        /// `max(WRITE_SIZE, READ_SIZE)` of the state partition.
        expected: usize,
        /// What was passed.
        got: usize,
    },
    /// The journal says an install is under way but holds no manifest for it.
    #[error("install under way without a staged manifest")]
    NoManifest,
    /// The rejected image still runs and embassy-boot will revert it: reset.
    #[error("rejected image still active: reset so that embassy-boot reverts it")]
    RevertPending,
}

/// The state machine's storage, staging into embassy-boot's DFU partition.
pub struct EmbassyBootStorage<'a, F, S, M = Multiwrite> {
    inner: AsyncFlashStorage<F, M>,
    state: S,
    aligned: &'a mut [u8],
}

/// `aligned` must be exactly as long as embassy-boot asks (it asserts otherwise).
fn check_aligned<S: NorFlash, E>(aligned: &[u8]) -> Result<(), EmbassyBootError<E>> {
    let expected = S::WRITE_SIZE.max(S::READ_SIZE);
    if aligned.len() == expected {
        Ok(())
    } else {
        Err(EmbassyBootError::AlignedBuffer {
            expected,
            got: aligned.len(),
        })
    }
}

impl<'a, F: MultiwriteNorFlash, S: NorFlash> EmbassyBootStorage<'a, F, S, Multiwrite> {
    /// Opens it on flash that may rewrite a written unit: `flash` holds `layout` (`active` and
    /// `dfu` exactly as embassy-boot's partitions, DFU at least one page larger; `journal` our
    /// own), `state` is embassy-boot's state partition and `aligned` its buffer
    /// (`max(WRITE_SIZE, READ_SIZE)` bytes).
    pub async fn open(
        flash: F,
        layout: Layout,
        state: S,
        aligned: &'a mut [u8],
    ) -> Result<Self, EmbassyBootError<F::Error>> {
        check_aligned::<S, F::Error>(aligned)?;
        let inner = AsyncFlashStorage::open(flash, layout).await?;
        Ok(Self {
            inner,
            state,
            aligned,
        })
    }
}

impl<'a, F: MultiwriteNorFlash, S: NorFlash> EmbassyBootStorage<'a, F, S, EitherMode> {
    /// [`EmbassyBootStorage::open`] in write-once mode if `write_once`, chosen at run time (see
    /// [`AsyncFlashStorage::open_either`]).
    pub async fn open_either(
        flash: F,
        layout: Layout,
        state: S,
        aligned: &'a mut [u8],
        write_once: bool,
    ) -> Result<Self, EmbassyBootError<F::Error>> {
        check_aligned::<S, F::Error>(aligned)?;
        let inner = AsyncFlashStorage::open_either(flash, layout, write_once).await?;
        Ok(Self {
            inner,
            state,
            aligned,
        })
    }
}

impl<'a, F: NorFlash, S: NorFlash> EmbassyBootStorage<'a, F, S, WriteOnce> {
    /// [`EmbassyBootStorage::open`] on write-once flash (the internal flash of most MCUs embassy runs on).
    pub async fn open_write_once(
        flash: F,
        layout: Layout,
        state: S,
        aligned: &'a mut [u8],
    ) -> Result<Self, EmbassyBootError<F::Error>> {
        check_aligned::<S, F::Error>(aligned)?;
        let inner = AsyncFlashStorage::open_write_once(flash, layout).await?;
        Ok(Self {
            inner,
            state,
            aligned,
        })
    }
}

impl<'a, F: NorFlash, S: NorFlash, M: WriteMode> EmbassyBootStorage<'a, F, S, M> {
    /// The storage underneath (state, outcome, the flash).
    pub fn storage(&self) -> &AsyncFlashStorage<F, M> {
        &self.inner
    }

    /// embassy-boot's view of its state partition (borrowed for one call).
    fn firmware_state(&mut self) -> FirmwareState<'_, &mut S> {
        FirmwareState::new(&mut self.state, &mut *self.aligned)
    }

    async fn embassy_state(&mut self) -> Result<State, EmbassyBootError<F::Error>> {
        self.firmware_state()
            .get_state()
            .await
            .map_err(EmbassyBootError::State)
    }

    /// The staged image is to be installed: embassy-boot swaps it in at the next reset.
    pub async fn request_install(&mut self) -> Result<(), EmbassyBootError<F::Error>> {
        match self.inner.state() {
            UpdateState::Staged => {}
            s => return Err(StorageError::WrongState(s).into()),
        }
        // SWAP magic first: a cut before the journal record still swaps, and `boot` sees a
        // staged image with embassy-boot in SWAP as the trial it is.
        if self.firmware_state().mark_updated().await.is_err() {
            // A cut inside an earlier `mark_updated` on write-once flash leaves a state word
            // unreadable, and embassy-boot reads before it erases. Nothing is pending while the
            // journal says staged (the running image is settled), so erasing is safe.
            let end = self.state.capacity() as u32;
            self.state
                .erase(0, end)
                .await
                .map_err(|e| EmbassyBootError::State(e.into()))?;
            self.firmware_state()
                .mark_updated()
                .await
                .map_err(EmbassyBootError::State)?;
        }
        self.inner
            .set_state(UpdateState::Installing { step: 0 })
            .await?;
        Ok(())
    }

    /// At application start: what embassy-boot did, as this crate's boot outcome. A new image
    /// on trial must be confirmed (or rejected) before the next reset.
    ///
    /// Which image runs is decided by hashing ACTIVE against the staged manifest, not by
    /// embassy-boot's state word alone: a power cut while embassy-boot erases its state page
    /// (in `mark_booted`, or at the end of a revert) can leave that word saying anything.
    /// embassy-boot's state then only says whether a revert is still pending.
    ///
    /// | journal | new image active | embassy-boot | outcome |
    /// |---|---|---|---|
    /// | idle, downloading, settled | – | – | normal |
    /// | staged | – | not SWAP | normal (install not requested) |
    /// | staged, installing, trial | yes | SWAP | trial |
    /// | staged, installing, trial | yes | BOOT, REVERT | confirmed (BOOT written, journal missed it) |
    /// | rejected | yes | SWAP | error: reset, embassy-boot reverts |
    /// | any of these | no | any | reverted (SWAP left over is settled with BOOT) |
    pub async fn boot(&mut self) -> Result<BootOutcome, EmbassyBootError<F::Error>> {
        let ours = self.inner.state();
        let embassy = self.embassy_state().await?;
        let rejected = match ours {
            UpdateState::Staged if embassy != State::Swap => return Ok(BootOutcome::Normal),
            UpdateState::Staged | UpdateState::Installing { .. } | UpdateState::Trial { .. } => {
                None
            }
            UpdateState::Reverting { reason, .. } => Some(reason),
            _ => return Ok(BootOutcome::Normal),
        };
        let Some(manifest) = self.inner.staged_manifest() else {
            return Err(EmbassyBootError::NoManifest);
        };
        let sequence = manifest.sequence;
        let new_active = self.active_matches(&manifest).await?;
        match (new_active, embassy == State::Swap, rejected) {
            (true, true, None) => {
                if !matches!(ours, UpdateState::Trial { .. }) {
                    self.inner
                        .set_state(UpdateState::Trial { booted: true })
                        .await?;
                }
                Ok(BootOutcome::Trial { sequence })
            }
            (true, true, Some(_)) => Err(EmbassyBootError::RevertPending),
            (true, false, _) => {
                self.inner
                    .set_state(UpdateState::Confirmed { sequence })
                    .await?;
                Ok(BootOutcome::Normal)
            }
            (false, swap, rejected) => {
                if swap {
                    // Only a torn state page gets here: keep the old image for good.
                    self.firmware_state()
                        .mark_booted()
                        .await
                        .map_err(EmbassyBootError::State)?;
                }
                self.reverted(rejected.unwrap_or(ResultCode::TRIAL_RESET))
                    .await
            }
        }
    }

    /// Whether ACTIVE starts with the image `manifest` describes.
    async fn active_matches(
        &mut self,
        manifest: &ota_core::Manifest,
    ) -> Result<bool, EmbassyBootError<F::Error>> {
        let base = self.inner.layout().active.offset;
        let mut hasher = Sha256::new();
        let mut buf = [0u8; 64];
        let mut at = 0u32;
        while at < manifest.image_size {
            let n = (manifest.image_size - at).min(buf.len() as u32);
            let Some(part) = buf.get_mut(..n as usize) else {
                break;
            };
            self.inner
                .flash
                .read(base + at, part)
                .await
                .map_err(StorageError::Flash)?;
            hasher.update(&*part);
            at += n;
        }
        Ok(<[u8; 32]>::from(hasher.finalize()) == manifest.digest.0)
    }

    async fn reverted(
        &mut self,
        reason: ResultCode,
    ) -> Result<BootOutcome, EmbassyBootError<F::Error>> {
        let sequence = self
            .inner
            .staged_manifest()
            .map(|m| m.sequence)
            .unwrap_or(0);
        self.inner
            .set_state(UpdateState::Reverted { sequence, reason })
            .await?;
        Ok(BootOutcome::Reverted { reason })
    }

    /// The image on trial passed the application's health check: make it permanent.
    pub async fn confirm(&mut self) -> Result<(), EmbassyBootError<F::Error>> {
        match self.inner.state() {
            UpdateState::Trial { .. } => {}
            s => return Err(StorageError::WrongState(s).into()),
        }
        // BOOT magic first: once it is written embassy-boot never reverts, and a cut before
        // the journal record is finished by `boot`.
        self.firmware_state()
            .mark_booted()
            .await
            .map_err(EmbassyBootError::State)?;
        let sequence = self
            .inner
            .staged_manifest()
            .map(|m| m.sequence)
            .unwrap_or(0);
        self.inner
            .set_state(UpdateState::Confirmed { sequence })
            .await?;
        Ok(())
    }

    /// The image on trial failed its health check: reset afterwards, and embassy-boot reverts.
    pub async fn reject(&mut self, reason: ResultCode) -> Result<(), EmbassyBootError<F::Error>> {
        match self.inner.state() {
            UpdateState::Trial { .. } => Ok(self
                .inner
                .set_state(UpdateState::Reverting { step: 0, reason })
                .await?),
            s => Err(StorageError::WrongState(s).into()),
        }
    }
}

/// The device's wake loop runs on it directly.
impl<F: NorFlash, S: NorFlash, M: WriteMode> ota_core::runtime::Storage
    for EmbassyBootStorage<'_, F, S, M>
{
    type Error = StorageError<F::Error>;

    async fn load(&mut self) -> Result<Persisted, Self::Error> {
        Ok(self.inner.load())
    }

    async fn apply(&mut self, op: StorageOp<'_>) -> Result<(), Self::Error> {
        self.inner.apply(op).await
    }

    async fn load_counter(&mut self) -> Result<u64, Self::Error> {
        Ok(self.inner.load_counter())
    }

    async fn store_counter(&mut self, value: u64) -> Result<(), Self::Error> {
        self.inner.store_counter(value).await
    }

    fn failure(error: &Self::Error) -> StorageFailure {
        error.failure()
    }
}
