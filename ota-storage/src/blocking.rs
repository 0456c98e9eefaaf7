//! [`FlashStorage`]: the storage over a blocking flash driver, for blocking firmware and
//! bootloaders. The same code as [`AsyncFlashStorage`] runs underneath, each operation run to
//! completion ([`ota_core::runtime::block::block_on`]).

use embedded_storage::nor_flash::{MultiwriteNorFlash, NorFlash};
use ota_core::manifest::{PatchInfo, StoredManifest};
use ota_core::resume::ResumeState;
use ota_core::runtime::block::block_on;
use ota_core::storage::{CounterStore, Persisted, StorageFailure, StorageOp, UpdateStorage};
use ota_core::wire::{LastOutcome, ResultCode};

use crate::flash::BlockingFlash;
use crate::install::BootOutcome;
use crate::layout::Layout;
use crate::mode::{EitherMode, Multiwrite, WriteMode, WriteOnce};
use crate::state::UpdateState;
use crate::storage::{AsyncFlashStorage, StorageError};

/// Staging, journal and install over one blocking NOR flash.
#[derive(Debug)]
pub struct FlashStorage<F, M = Multiwrite> {
    inner: AsyncFlashStorage<BlockingFlash<F>, M>,
}

impl<F: MultiwriteNorFlash> FlashStorage<F, Multiwrite> {
    /// Opens the storage on flash that may rewrite a written unit (see
    /// [`AsyncFlashStorage::open`]).
    pub fn open(flash: F, layout: Layout) -> Result<Self, StorageError<F::Error>> {
        let inner = block_on(AsyncFlashStorage::open(BlockingFlash(flash), layout))?;
        Ok(Self { inner })
    }
}

impl<F: MultiwriteNorFlash> FlashStorage<F, EitherMode> {
    /// Opens the storage in either mode, chosen at run time (see
    /// [`AsyncFlashStorage::open_either`]).
    pub fn open_either(
        flash: F,
        layout: Layout,
        write_once: bool,
    ) -> Result<Self, StorageError<F::Error>> {
        let inner = block_on(AsyncFlashStorage::open_either(
            BlockingFlash(flash),
            layout,
            write_once,
        ))?;
        Ok(Self { inner })
    }
}

impl<F: NorFlash> FlashStorage<F, WriteOnce> {
    /// Opens the storage on write-once flash (see [`AsyncFlashStorage::open_write_once`]).
    pub fn open_write_once(flash: F, layout: Layout) -> Result<Self, StorageError<F::Error>> {
        let inner = block_on(AsyncFlashStorage::open_write_once(
            BlockingFlash(flash),
            layout,
        ))?;
        Ok(Self { inner })
    }
}

impl<F: NorFlash, M: WriteMode> FlashStorage<F, M> {
    /// The update state.
    pub fn state(&self) -> UpdateState {
        self.inner.state()
    }

    /// What the next check-in should report.
    pub fn last_outcome(&self) -> LastOutcome {
        self.inner.last_outcome()
    }

    /// The server has seen the outcome: forget it.
    pub fn outcome_reported(&mut self) -> Result<(), StorageError<F::Error>> {
        block_on(self.inner.outcome_reported())
    }

    /// The layout.
    pub fn layout(&self) -> &Layout {
        self.inner.layout()
    }

    /// The flash.
    pub fn flash(&self) -> &F {
        &self.inner.flash().0
    }

    /// Mutable flash, for tests and simulators.
    pub fn flash_mut(&mut self) -> &mut F {
        &mut self.inner.flash_mut().0
    }

    /// Gives the flash back.
    pub fn into_flash(self) -> F {
        self.inner.into_flash().0
    }

    /// The staged image is to be installed at the next boot.
    pub fn request_install(&mut self) -> Result<(), StorageError<F::Error>> {
        block_on(self.inner.request_install())
    }

    /// The image on trial passed the application's health check: make it permanent.
    pub fn confirm(&mut self) -> Result<(), StorageError<F::Error>> {
        block_on(self.inner.confirm())
    }

    /// The image on trial failed its health check: the next boot reverts to the previous one.
    pub fn reject(&mut self, reason: ResultCode) -> Result<(), StorageError<F::Error>> {
        block_on(self.inner.reject(reason))
    }

    /// The boot-time part: finishes any swap or revert a reset interrupted, starts a trial or
    /// reverts one that was reset without a confirm, and says what to boot.
    pub fn boot(&mut self) -> Result<BootOutcome, StorageError<F::Error>> {
        block_on(self.inner.boot())
    }

    /// The manifest of the download, staged image or image on trial the journal holds, if any.
    pub fn staged_manifest(&self) -> Option<ota_core::Manifest> {
        self.inner.staged_manifest()
    }

    /// Bytes appended to the journal's current sector (for wear figures).
    pub fn journal_used(&self) -> u32 {
        self.inner.journal.used()
    }
}

impl<F: NorFlash, M: WriteMode> UpdateStorage for FlashStorage<F, M> {
    type Error = StorageError<F::Error>;

    fn capacity(&self) -> u32 {
        self.inner.capacity()
    }

    fn load(&mut self) -> Result<Persisted, Self::Error> {
        Ok(self.inner.load())
    }

    // One future carries out every operation ([`AsyncFlashStorage::apply`]).
    fn apply(&mut self, op: StorageOp<'_>) -> Result<(), Self::Error> {
        block_on(self.inner.apply(op))
    }

    fn begin(&mut self, manifest: &StoredManifest, state: &ResumeState) -> Result<(), Self::Error> {
        block_on(self.inner.begin(manifest, state))
    }

    fn write(&mut self, offset: u32, data: &[u8]) -> Result<(), Self::Error> {
        block_on(self.inner.write(offset, data))
    }

    fn persist(&mut self, state: &ResumeState) -> Result<(), Self::Error> {
        block_on(self.inner.persist(state))
    }

    fn read(&mut self, offset: u32, buf: &mut [u8]) -> Result<(), Self::Error> {
        block_on(self.inner.read(offset, buf))
    }

    fn mark_staged(&mut self, state: &ResumeState) -> Result<(), Self::Error> {
        block_on(self.inner.mark_staged(state))
    }

    fn abandon(&mut self) -> Result<(), Self::Error> {
        block_on(self.inner.abandon())
    }

    fn set_outcome(&mut self, outcome: LastOutcome) -> Result<(), Self::Error> {
        block_on(self.inner.set_outcome(outcome))
    }

    fn rebuild(&mut self, patch: &PatchInfo, image_size: u32) -> Result<(), Self::Error> {
        block_on(self.inner.rebuild(patch, image_size))
    }

    fn failure(error: &Self::Error) -> StorageFailure {
        error.failure()
    }
}

impl<F: NorFlash, M: WriteMode> CounterStore for FlashStorage<F, M> {
    type Error = StorageError<F::Error>;

    fn load_counter(&mut self) -> Result<u64, Self::Error> {
        Ok(self.inner.load_counter())
    }

    fn store_counter(&mut self, value: u64) -> Result<(), Self::Error> {
        block_on(self.inner.store_counter(value))
    }
}
