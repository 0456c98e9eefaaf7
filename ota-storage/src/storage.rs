//! [`AsyncFlashStorage`]: the `ota-core` storage operations over NOR flash, async
//! (`embedded-storage-async`); [`crate::FlashStorage`] is the same over blocking flash.
//!
//! Two ways to write the staging slot, chosen when the storage is opened and fixed by its type
//! ([`crate::mode`]):
//!
//! | mode | flash | a chunk cut by a power failure |
//! |---|---|---|
//! | multiwrite ([`AsyncFlashStorage::open`]) | `MultiwriteNorFlash` (most external NOR) | fetched again and written over its own partial copy; chunks may share a write unit |
//! | write-once ([`AsyncFlashStorage::open_write_once`]) | any `NorFlash`, ECC flash with 8- or 16-byte units written once (STM32L4/H7/U5, nRF, RP2040) | its sector is erased on the next open and the chunks committed in it are fetched again: at most one sector of chunks (or the chunk, if chunks are larger than sectors); each write unit is programmed once between erases |
//!
//! In write-once mode chunks must be whole multiples of the write unit (so two never share one)
//! and must not straddle sector boundaries (the chunk size divides the sector size, or is a
//! multiple of it): any power of two from the write unit up, as CoAP's block sizes are, fits.
//!
//! A patch download (the manifest carries a `PatchInfo`) stages the patch, not the image, and
//! rebuilds the image in the slot ([`crate::patch`]): the patch in the slot's tail from the
//! sector boundary `patch_base = round_down(capacity - patch.size, sector)`, the image in its
//! head, `[0, round_up(image_size, sector))`. `Begin` refuses the download before anything is
//! written if the two do not fit side by side ([`StorageError::PatchTooLarge`]) or the active
//! slot is not the patch's source ([`StorageError::PatchSource`]).
//!
//! | phase | where | a power cut costs |
//! |---|---|---|
//! | download | patch chunks in the tail, written and journaled as an image's chunks are (the resume record counts patch offsets; the journaled manifest says it is a patch) | as for an image: one chunk (multiwrite), or the chunks of the torn chunk's sector (write-once) |
//! | rebuild | patch digest and running image checked, head erased, image rebuilt from ACTIVE and the patch | nothing fetched again: the journal still says downloading with every chunk staged, so the device asks for the rebuild again, which starts over from the erase |
//! | verify, staged, install | the image in the head, as for a whole image | as for a whole image |

use embedded_storage_async::nor_flash::{MultiwriteNorFlash, NorFlash};
use ota_core::manifest::{Manifest, StoredManifest};
use ota_core::resume::ResumeState;
use ota_core::storage::{Persisted, StorageFailure, StorageOp};
use ota_core::wire::LastOutcome;

use crate::journal::{Journal, JournalError, Snapshot};
use crate::layout::{Layout, LayoutError};
use crate::mode::{EitherMode, Multiwrite, WriteMode, WriteOnce};
use crate::patch::{PatchError, PatchPlace};
use crate::record::Record;
use crate::state::UpdateState;

/// Errors of the storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StorageError<E> {
    /// The flash failed (or lost power).
    #[error("flash error: {0:?}")]
    Flash(E),
    /// The layout does not fit the flash.
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// A journal sector cannot hold a snapshot.
    #[error("journal sector too small for a snapshot")]
    JournalSectorTooSmall,
    /// Access beyond the staging slot.
    #[error("access at {offset}+{len} beyond the {capacity}-byte staging slot")]
    OutOfRange {
        /// Offset.
        offset: u32,
        /// Length.
        len: usize,
        /// Staging capacity.
        capacity: u32,
    },
    /// The operation does not fit the current update state (a new download while an image
    /// runs on trial, an install with nothing staged, ...).
    #[error("not allowed in update state {0:?}")]
    WrongState(UpdateState),
    /// The journal's manifest does not decode.
    #[error("stored manifest is unreadable")]
    BadManifest,
    /// Write-once flash: a chunk size that is not a whole number of write units, or whose
    /// chunks would straddle sector boundaries (it must divide the sector size or be a
    /// multiple of it: any power of two from the write unit up does).
    #[error("chunk size {chunk} does not fit write-once flash ({unit}-byte units, {sector}-byte sectors)")]
    ChunkNotAligned {
        /// The manifest's chunk size.
        chunk: u32,
        /// The flash's write unit.
        unit: u32,
        /// The flash's sector.
        sector: u32,
    },
    /// A patch download whose image and patch do not fit side by side in the staging slot
    /// (each rounded to whole sectors: the image in the head, the patch in the tail).
    #[error("a {image}-byte image and its {patch}-byte patch do not fit in the {capacity}-byte staging slot")]
    PatchTooLarge {
        /// The manifest's image size.
        image: u32,
        /// The patch's size.
        patch: u32,
        /// The DFU slot less its spare sector.
        capacity: u32,
    },
    /// The running image (the active slot) is not the one the patch applies to: refused at
    /// `Begin`, before anything is fetched, and at `Rebuild`.
    #[error("the running image is not the patch's source")]
    PatchSource,
    /// The staged patch does not rebuild the image.
    #[error("the patch does not apply: {0}")]
    Patch(#[from] PatchError),
    /// A patch download, in a build without the `delta` feature (no applier): refused at
    /// `Begin`, before anything is fetched.
    #[error("this build cannot apply patches (ota-storage's `delta` feature is off)")]
    PatchUnsupported,
}

impl<E> StorageError<E> {
    /// What the error means to the device's state machine: a patch that does not apply, not to
    /// the running image, or not beside its image in the slot fails only that download (the
    /// device reports it and the server offers the whole image, which needs no room for a
    /// patch); anything else is the flash's failure and ends the wake.
    pub fn failure(&self) -> StorageFailure {
        match self {
            StorageError::PatchSource => StorageFailure::PatchSource,
            StorageError::Patch(_) => StorageFailure::Patch,
            StorageError::PatchTooLarge { .. } | StorageError::PatchUnsupported => {
                StorageFailure::Patch
            }
            _ => StorageFailure::Io,
        }
    }
}

impl<E> From<JournalError<E>> for StorageError<E> {
    fn from(e: JournalError<E>) -> Self {
        match e {
            JournalError::Flash(e) => StorageError::Flash(e),
            JournalError::SectorTooSmall => StorageError::JournalSectorTooSmall,
        }
    }
}

/// A journal record `apply` is to write, built again each time the journal asks (the future
/// keeps this, not the record with its manifest).
#[derive(Clone, Copy)]
enum Next<'a> {
    Begin(&'a StoredManifest, ResumeState),
    Progress(ResumeState),
    State(UpdateState),
}

impl Next<'_> {
    fn record(&self) -> Record {
        match *self {
            Next::Begin(manifest, state) => Record::Begin {
                state,
                manifest: *manifest,
            },
            Next::Progress(state) => Record::Progress {
                image: state.image,
                next_offset: state.next_offset,
                ahead: state.ahead,
            },
            Next::State(state) => Record::State(state),
        }
    }
}

/// Staging, journal and install over one NOR flash, async.
#[derive(Debug)]
pub struct AsyncFlashStorage<F, M = Multiwrite> {
    pub(crate) flash: F,
    pub(crate) layout: Layout,
    pub(crate) journal: Journal,
    pub(crate) snap: Snapshot,
    /// Staging bytes below this offset were erased during this download (RAM only; recomputed
    /// from the committed progress on open).
    erased_until: u32,
    /// Whether a write unit is never programmed twice between erases.
    mode: M,
}

impl<F: MultiwriteNorFlash> AsyncFlashStorage<F, Multiwrite> {
    /// Opens the storage on flash that may rewrite a written unit (clearing more bits): checks
    /// the layout, reads the journal.
    pub async fn open(flash: F, layout: Layout) -> Result<Self, StorageError<F::Error>> {
        Self::open_mode(flash, layout, Multiwrite).await
    }
}

impl<F: MultiwriteNorFlash> AsyncFlashStorage<F, EitherMode> {
    /// Opens the storage in write-once mode if `write_once`, else multiwrite: for code that
    /// runs both on one flash (tests, tools). It links both modes' code.
    pub async fn open_either(
        flash: F,
        layout: Layout,
        write_once: bool,
    ) -> Result<Self, StorageError<F::Error>> {
        Self::open_mode(flash, layout, EitherMode(write_once)).await
    }
}

impl<F: NorFlash> AsyncFlashStorage<F, WriteOnce> {
    /// Opens the storage on flash whose write units are programmed once between erases (ECC
    /// flash, or any `NorFlash` that promises nothing more); recovers a chunk torn by a power
    /// cut by erasing its sector.
    pub async fn open_write_once(flash: F, layout: Layout) -> Result<Self, StorageError<F::Error>> {
        Self::open_mode(flash, layout, WriteOnce).await
    }
}

impl<F: NorFlash, M: WriteMode> AsyncFlashStorage<F, M> {
    async fn open_mode(
        mut flash: F,
        layout: Layout,
        mode: M,
    ) -> Result<Self, StorageError<F::Error>> {
        layout.validate(flash.capacity(), F::READ_SIZE, F::WRITE_SIZE, F::ERASE_SIZE)?;
        let sectors = layout.journal.size / F::ERASE_SIZE as u32;
        let (journal, snap) = Journal::open(&mut flash, layout.journal.offset, sectors).await?;
        let mut s = Self {
            flash,
            layout,
            journal,
            snap,
            erased_until: 0,
            mode,
        };
        s.erased_until = s.committed_end();
        if mode.write_once() {
            s.recover_torn_chunks().await?;
        }
        Ok(s)
    }

    /// The update state.
    pub fn state(&self) -> UpdateState {
        self.snap.state
    }

    /// What the next check-in should report.
    pub fn last_outcome(&self) -> LastOutcome {
        self.snap.state.last_outcome()
    }

    /// True if opened in write-once mode.
    pub fn is_write_once(&self) -> bool {
        self.mode.write_once()
    }

    /// The server has seen the outcome: forget it.
    pub async fn outcome_reported(&mut self) -> Result<(), StorageError<F::Error>> {
        self.apply(StorageOp::SetOutcome(LastOutcome::None)).await
    }

    /// The layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The flash.
    pub fn flash(&self) -> &F {
        &self.flash
    }

    /// Mutable flash, for tests and simulators.
    pub fn flash_mut(&mut self) -> &mut F {
        &mut self.flash
    }

    /// Gives the flash back.
    pub fn into_flash(self) -> F {
        self.flash
    }

    /// Journals the record `make` builds, then applies it to the snapshot (not on error: the
    /// snapshot stays what the flash is known to hold). The future keeps neither the record
    /// nor a snapshot: the journal builds them again for each piece it programs
    /// ([`Journal::commit_onto`]). The one record that changes nothing, progress with no
    /// download, is not written.
    pub(crate) async fn commit(
        &mut self,
        make: &dyn Fn() -> Record,
    ) -> Result<(), StorageError<F::Error>> {
        let changes = self.snap.download.is_some() || !matches!(make(), Record::Progress { .. });
        if changes {
            self.journal
                .commit_onto(&mut self.flash, &self.snap, make)
                .await?;
        }
        self.snap.apply(&make());
        Ok(())
    }

    pub(crate) async fn set_state(
        &mut self,
        state: UpdateState,
    ) -> Result<(), StorageError<F::Error>> {
        self.commit(&|| Record::State(state)).await
    }

    fn erase_size() -> u32 {
        F::ERASE_SIZE as u32
    }

    /// The manifest of the download in progress (or of the image staged or installed).
    fn download_manifest(&self) -> Option<Manifest> {
        let (_, manifest) = self.snap.download?;
        manifest.as_signed().decode_verified().ok()
    }

    /// The chunk size of the download in progress.
    fn chunk_size(&self) -> Option<u32> {
        self.download_manifest().map(|m| u32::from(m.chunk_size))
    }

    /// The patch of the download in progress and where it is staged, if it is a patch.
    #[cfg(feature = "delta")]
    pub(crate) fn patch_place(&self) -> Option<PatchPlace> {
        let m = self.download_manifest()?;
        PatchPlace::new(self.slot_room(), Self::erase_size(), m.patch?, m.image_size)
    }

    /// Slot offset of the download's byte 0: 0 for an image, the tail's start for a patch
    /// (a sector boundary, so sector arithmetic on download offsets holds in the slot).
    fn download_base(&self) -> Result<u32, StorageError<F::Error>> {
        match self.download_manifest() {
            Some(m) => match m.patch {
                Some(p) => PatchPlace::new(self.slot_room(), Self::erase_size(), p, m.image_size)
                    .map(|place| place.base)
                    .ok_or(StorageError::PatchTooLarge {
                        image: m.image_size,
                        patch: p.size,
                        capacity: self.slot_room(),
                    }),
                None => Ok(0),
            },
            None => Ok(0),
        }
    }

    /// End of the last committed chunk, rounded up to a sector: everything below was erased
    /// during this download, nothing above holds a committed chunk. In download offsets (a
    /// patch's, for a patch: [`Self::download_base`] maps them into the slot).
    fn committed_end(&self) -> u32 {
        let (Some((state, _)), UpdateState::Downloading) = (self.snap.download, self.snap.state)
        else {
            return 0;
        };
        // (`staged_end` once ended a chunk early here: when the last chunk ahead was the first
        // of its sector, that sector counted as not erased yet, and the next write into it
        // erased the committed chunk; the image then failed its digest.)
        let end = state.staged_end(self.chunk_size().unwrap_or(0));
        end.div_ceil(Self::erase_size()) * Self::erase_size()
    }

    /// Write-once mode, on open: every chunk slot below [`Self::committed_end`] that is not
    /// committed must still be erased. One that is not (a write cut by a power failure, which
    /// may not be written again) costs its sector: the chunks committed in it are forgotten
    /// (journaled first), then the sector is erased, and they are fetched again. So are chunks
    /// committed ahead of it past the sector (on a lossy link, beyond holes) that the resume
    /// state's `ahead` bitmap cannot reach from the sector's start: at most `MAX_AHEAD`.
    async fn recover_torn_chunks(&mut self) -> Result<(), StorageError<F::Error>> {
        let (Some((state, _)), Some(chunk)) = (self.snap.download, self.chunk_size()) else {
            return Ok(());
        };
        if self.snap.state != UpdateState::Downloading || chunk == 0 {
            return Ok(());
        }
        // A patch that cannot be placed was never written.
        let Ok(base) = self.download_base() else {
            return Ok(());
        };
        let end = self.committed_end();
        let e = Self::erase_size();
        let mut at = state.next_offset;
        while at < end {
            if !state.has(at, chunk)
                && !self
                    .slot_erased(base + at, base + (at + chunk).min(end))
                    .await
            {
                // Every sector the torn slot lies in (chunks never straddle a sector boundary
                // here: `begin` refuses such chunk sizes).
                let (first, last) = (at / e * e, (at + chunk - 1) / e * e);
                let mut rolled = state;
                let mut sector = first;
                while sector <= last {
                    rolled = forget_sector(rolled, chunk, sector, e);
                    sector += e;
                }
                self.commit(&|| Record::Progress {
                    image: rolled.image,
                    next_offset: rolled.next_offset,
                    ahead: rolled.ahead,
                })
                .await?;
                let mut sector = first;
                while sector <= last {
                    let addr = self.layout.dfu.offset + base + sector;
                    self.flash
                        .erase(addr, addr + e)
                        .await
                        .map_err(StorageError::Flash)?;
                    sector += e;
                }
                self.erased_until = self.committed_end().max(last + e);
                // Whatever else is torn shows on the next open; this one is clean.
                return Ok(());
            }
            at += chunk;
        }
        Ok(())
    }

    /// True if `[from, to)` of the slot reads back erased (a read the flash refuses is not).
    async fn slot_erased(&mut self, from: u32, to: u32) -> bool {
        let mut buf = [0u8; 256];
        let mut at = from;
        while at < to {
            let n = ((to - at) as usize).min(buf.len());
            let window = buf.get_mut(..n).unwrap_or(&mut []);
            if self
                .flash
                .read(self.layout.dfu.offset + at, window)
                .await
                .is_err()
                || window.iter().any(|&b| b != 0xFF)
            {
                return false;
            }
            at += n as u32;
        }
        true
    }

    /// Erases staging sectors up to download offset `end` that this download has not erased
    /// yet (download offsets from `base` in the slot).
    async fn erase_ahead(&mut self, base: u32, end: u32) -> Result<(), StorageError<F::Error>> {
        let e = Self::erase_size();
        while self.erased_until < end {
            let at = self.layout.dfu.offset + base + self.erased_until;
            self.flash
                .erase(at, at + e)
                .await
                .map_err(StorageError::Flash)?;
            self.erased_until += e;
        }
        Ok(())
    }

    fn check_range(
        &self,
        offset: u32,
        len: usize,
        capacity: u32,
    ) -> Result<(), StorageError<F::Error>> {
        if (offset as usize).saturating_add(len) > capacity as usize {
            return Err(StorageError::OutOfRange {
                offset,
                len,
                capacity,
            });
        }
        Ok(())
    }

    /// Size of the staging slot in bytes.
    pub fn capacity(&self) -> u32 {
        self.layout.staging_capacity(F::ERASE_SIZE)
    }

    /// What a patch download may use: the whole DFU slot less the swap's spare sector (the
    /// image in its head is bounded by [`Self::capacity`], the patch beside it by this).
    fn slot_room(&self) -> u32 {
        self.layout.dfu.size.saturating_sub(Self::erase_size())
    }

    /// What is persisted (see `ota_core::UpdateStorage::load`).
    pub fn load(&self) -> Persisted {
        Persisted {
            capacity: self.capacity(),
            download: self.snap.resume(),
            outcome: self.last_outcome(),
        }
    }

    /// See `ota_core::storage::StorageOp::Begin`.
    pub async fn begin(
        &mut self,
        manifest: &StoredManifest,
        state: &ResumeState,
    ) -> Result<(), StorageError<F::Error>> {
        self.apply(StorageOp::Begin {
            manifest,
            state: *state,
        })
        .await
    }

    /// What `Begin` checks before it writes anything: no install under way, a manifest this
    /// storage can stage (chunk size, patch room and source).
    async fn check_begin(
        &mut self,
        manifest: &StoredManifest,
    ) -> Result<(), StorageError<F::Error>> {
        match self.snap.state {
            UpdateState::Installing { .. }
            | UpdateState::Trial { .. }
            | UpdateState::Reverting { .. } => {
                return Err(StorageError::WrongState(self.snap.state))
            }
            _ => {}
        }
        let decoded = manifest
            .as_signed()
            .decode_verified()
            .map_err(|_| StorageError::BadManifest)?;
        if self.mode.write_once() {
            let chunk = u32::from(decoded.chunk_size);
            // Whole write units, so two chunks never share one; and chunk boundaries on sector
            // boundaries, so a torn chunk costs only the sectors it lies in.
            let (unit, e) = (F::WRITE_SIZE as u32, Self::erase_size());
            if chunk == 0 || chunk % unit != 0 || (e % chunk != 0 && chunk % e != 0) {
                return Err(StorageError::ChunkNotAligned {
                    chunk,
                    unit,
                    sector: e,
                });
            }
        }
        #[cfg(not(feature = "delta"))]
        if decoded.patch.is_some() {
            return Err(StorageError::PatchUnsupported);
        }
        #[cfg(feature = "delta")]
        if let Some(patch) = decoded.patch {
            // Before anything is fetched: room for the image and the patch side by side, and
            // the running image is the patch's source.
            let capacity = self.slot_room();
            if PatchPlace::new(capacity, Self::erase_size(), patch, decoded.image_size).is_none() {
                return Err(StorageError::PatchTooLarge {
                    image: decoded.image_size,
                    patch: patch.size,
                    capacity,
                });
            }
            if !self.runs_source_of(&patch).await? {
                return Err(StorageError::PatchSource);
            }
        }
        Ok(())
    }

    /// See `ota_core::storage::StorageOp::Write`: `offset` is in the image, or in the patch
    /// for a patch download (staged in the slot's tail).
    pub async fn write(&mut self, offset: u32, data: &[u8]) -> Result<(), StorageError<F::Error>> {
        let base = self.download_base()?;
        let room = if base == 0 {
            self.capacity()
        } else {
            self.slot_room()
        };
        self.check_range(offset, data.len(), room.saturating_sub(base))?;
        let end = offset + data.len() as u32;
        self.erase_ahead(base, end).await?;
        let at = self.layout.dfu.offset + base + offset;
        if self.mode.write_once() {
            write_units(&mut self.flash, at, data).await
        } else {
            write_unaligned(&mut self.flash, at, data).await
        }
    }

    /// See `ota_core::storage::StorageOp::Persist`.
    pub async fn persist(&mut self, state: &ResumeState) -> Result<(), StorageError<F::Error>> {
        self.apply(StorageOp::Persist(*state)).await
    }

    /// See `ota_core::storage::StorageOp::Read`.
    pub async fn read(
        &mut self,
        offset: u32,
        buf: &mut [u8],
    ) -> Result<(), StorageError<F::Error>> {
        self.check_range(offset, buf.len(), self.capacity())?;
        self.flash
            .read(self.layout.dfu.offset + offset, buf)
            .await
            .map_err(StorageError::Flash)
    }

    /// See `ota_core::storage::StorageOp::MarkStaged`.
    pub async fn mark_staged(&mut self, state: &ResumeState) -> Result<(), StorageError<F::Error>> {
        self.apply(StorageOp::MarkStaged(*state)).await
    }

    /// See `ota_core::storage::StorageOp::Abandon`.
    pub async fn abandon(&mut self) -> Result<(), StorageError<F::Error>> {
        self.apply(StorageOp::Abandon).await
    }

    /// See `ota_core::storage::StorageOp::SetOutcome`.
    pub async fn set_outcome(
        &mut self,
        outcome: LastOutcome,
    ) -> Result<(), StorageError<F::Error>> {
        self.apply(StorageOp::SetOutcome(outcome)).await
    }

    /// The state that `outcome` leads to, if it changes anything.
    fn outcome_state(&self, outcome: LastOutcome) -> Option<UpdateState> {
        match (outcome, self.snap.state) {
            // The server has seen the outcome: forget it.
            (
                LastOutcome::None,
                UpdateState::Confirmed { .. }
                | UpdateState::Reverted { .. }
                | UpdateState::Failed { .. },
            ) => Some(UpdateState::Idle),
            // A download given up: reported at the next check-in even after a reset. Never
            // over an update in progress or an install's own outcome not yet reported.
            (LastOutcome::Failed { sequence, reason }, UpdateState::Idle) => {
                Some(UpdateState::Failed { sequence, reason })
            }
            // Confirm and roll back are the installer's to record.
            _ => None,
        }
    }

    /// Carries out one operation of the state machine. Every operation that ends in journal
    /// records reaches them through one `commit` call: each await point of an async function
    /// costs a firmware about a hundred bytes of flash.
    pub async fn apply(&mut self, op: StorageOp<'_>) -> Result<(), StorageError<F::Error>> {
        let (first, then) = match op {
            StorageOp::Write { offset, data } => return self.write(offset, data).await,
            StorageOp::Read { offset, buf } => return self.read(offset, buf).await,
            StorageOp::Rebuild { patch, image_size } => {
                return self.rebuild(patch, image_size).await
            }
            StorageOp::Begin { manifest, state } => {
                self.check_begin(manifest).await?;
                (Next::Begin(manifest, state), None)
            }
            StorageOp::Persist(state) => (Next::Progress(state), None),
            StorageOp::MarkStaged(state) => (
                Next::Progress(state),
                Some(Next::State(UpdateState::Staged)),
            ),
            StorageOp::Abandon => {
                self.erased_until = 0;
                (Next::State(UpdateState::Idle), None)
            }
            StorageOp::SetOutcome(outcome) => match self.outcome_state(outcome) {
                Some(state) => (Next::State(state), None),
                None => return Ok(()),
            },
        };
        let begins = matches!(first, Next::Begin(..));
        let (mut next, mut then) = (first, then);
        loop {
            self.commit(&|| next.record()).await?;
            match then.take() {
                Some(n) => next = n,
                None => break,
            }
        }
        if begins {
            self.erased_until = 0;
        }
        Ok(())
    }

    /// See `ota_core::storage::CounterStore::load_counter`.
    pub fn load_counter(&self) -> u64 {
        self.snap.counter
    }

    /// See `ota_core::storage::CounterStore::store_counter`.
    pub async fn store_counter(&mut self, value: u64) -> Result<(), StorageError<F::Error>> {
        if value != self.snap.counter {
            self.commit(&|| Record::Counter(value)).await?;
        }
        Ok(())
    }
}

/// The device's wake loop runs on it directly.
impl<F: NorFlash, M: WriteMode> ota_core::runtime::Storage for AsyncFlashStorage<F, M> {
    type Error = StorageError<F::Error>;

    async fn load(&mut self) -> Result<Persisted, Self::Error> {
        Ok(AsyncFlashStorage::load(self))
    }

    // The inherent futures themselves, not `async fn`s awaiting them: a wrapper would keep
    // its own copy of the operation beside theirs.
    fn apply(
        &mut self,
        op: StorageOp<'_>,
    ) -> impl core::future::Future<Output = Result<(), Self::Error>> {
        AsyncFlashStorage::apply(self, op)
    }

    async fn load_counter(&mut self) -> Result<u64, Self::Error> {
        Ok(AsyncFlashStorage::load_counter(self))
    }

    fn store_counter(
        &mut self,
        value: u64,
    ) -> impl core::future::Future<Output = Result<(), Self::Error>> {
        AsyncFlashStorage::store_counter(self, value)
    }

    fn failure(error: &Self::Error) -> StorageFailure {
        error.failure()
    }
}

/// `state` with every chunk that touches the sector at `sector` forgotten: what stays
/// committed below the first of them, and the chunks committed ahead beyond the sector,
/// re-expressed from the new next offset (a chunk boundary).
fn forget_sector(state: ResumeState, chunk: u32, sector: u32, e: u32) -> ResumeState {
    let touches = |o: u32| o < sector + e && o + chunk > sector;
    let next_offset = state.next_offset.min(sector / chunk * chunk);
    // Chunks between the new next offset and the old one all touch the sector (it holds the
    // torn chunk, at or past the old next offset), so the bits ahead move up by as many.
    let shift = (state.next_offset - next_offset) / chunk;
    let mut ahead = 0u64;
    for i in (0..u64::BITS).filter(|i| state.ahead & (1 << i) != 0) {
        let o = state
            .next_offset
            .saturating_add((i + 1).saturating_mul(chunk));
        if !touches(o) && i + shift < u64::BITS {
            ahead |= 1 << (i + shift);
        }
    }
    ResumeState {
        next_offset,
        ahead,
        ..state
    }
}

/// Writes `data` at a write-unit-aligned `offset`, the last partial unit padded with `0xFF`:
/// every unit programmed once.
async fn write_units<F: NorFlash>(
    flash: &mut F,
    offset: u32,
    data: &[u8],
) -> Result<(), StorageError<F::Error>> {
    let w = F::WRITE_SIZE;
    let whole = data.len() / w * w;
    let (head, tail) = data.split_at(whole);
    if !head.is_empty() {
        flash
            .write(offset, head)
            .await
            .map_err(StorageError::Flash)?;
    }
    if !tail.is_empty() {
        let mut unit = [0xFFu8; 64];
        unit.get_mut(..tail.len())
            .unwrap_or(&mut [])
            .copy_from_slice(tail);
        flash
            .write(offset + whole as u32, unit.get(..w).unwrap_or(&[]))
            .await
            .map_err(StorageError::Flash)?;
    }
    Ok(())
}

/// Writes `data` at any `offset`: whole write units straight from `data`, the partial units at
/// either end padded with `0xFF` (which programs nothing, so the neighbouring chunk's bytes in
/// the same unit are left as they are). Multiwrite flash only.
async fn write_unaligned<F: NorFlash>(
    flash: &mut F,
    offset: u32,
    data: &[u8],
) -> Result<(), StorageError<F::Error>> {
    let w = F::WRITE_SIZE as u32;
    let end = offset + data.len() as u32;
    let mut at = offset;
    let mut unit: [u8; 64];
    while at < end {
        let unit_start = at - at % w;
        // As many whole units as there are, or one unit padded with the erased value; one
        // programming call for both (each await costs a firmware about a hundred bytes).
        let (to, src, next) = if at == unit_start && end - at >= w {
            let n = (end - at) / w * w;
            let from = (at - offset) as usize;
            (at, data.get(from..from + n as usize).unwrap_or(&[]), at + n)
        } else {
            unit = [0xFF; 64];
            let unit_end = (unit_start + w).min(end);
            for pos in at..unit_end {
                if let (Some(dst), Some(src)) = (
                    unit.get_mut((pos - unit_start) as usize),
                    data.get((pos - offset) as usize),
                ) {
                    *dst = *src;
                }
            }
            (unit_start, unit.get(..w as usize).unwrap_or(&[]), unit_end)
        };
        flash.write(to, src).await.map_err(StorageError::Flash)?;
        at = next;
    }
    Ok(())
}
