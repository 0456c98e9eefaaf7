//! [`FlashStorage`]: the `ota-core` storage trait over NOR flash.

use embedded_storage::nor_flash::{MultiwriteNorFlash, NorFlash};
use ota_core::manifest::StoredManifest;
use ota_core::resume::ResumeState;
use ota_core::storage::{CounterStore, Persisted, UpdateStorage};
use ota_core::wire::LastOutcome;

use crate::journal::{Journal, JournalError, Snapshot};
use crate::layout::{Layout, LayoutError};
use crate::record::Record;
use crate::state::UpdateState;

/// Errors of [`FlashStorage`].
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
}

impl<E> From<JournalError<E>> for StorageError<E> {
    fn from(e: JournalError<E>) -> Self {
        match e {
            JournalError::Flash(e) => StorageError::Flash(e),
            JournalError::SectorTooSmall => StorageError::JournalSectorTooSmall,
        }
    }
}

/// Staging, journal and install over one NOR flash.
///
/// The flash must be [`MultiwriteNorFlash`]: after a power cut in the middle of a chunk write,
/// the chunk is fetched again and written over its own partial copy, which only clears the bits
/// the first write did not reach.
#[derive(Debug)]
pub struct FlashStorage<F> {
    pub(crate) flash: F,
    pub(crate) layout: Layout,
    pub(crate) journal: Journal,
    pub(crate) snap: Snapshot,
    /// Staging bytes below this offset were erased during this download (RAM only; recomputed
    /// from the committed progress on open).
    erased_until: u32,
}

impl<F: MultiwriteNorFlash> FlashStorage<F> {
    /// Opens the storage: checks the layout, reads the journal.
    pub fn open(mut flash: F, layout: Layout) -> Result<Self, StorageError<F::Error>> {
        layout.validate(flash.capacity(), F::READ_SIZE, F::WRITE_SIZE, F::ERASE_SIZE)?;
        let sectors = layout.journal.size / F::ERASE_SIZE as u32;
        let (journal, snap) = Journal::open(&mut flash, layout.journal.offset, sectors)?;
        let mut s = Self {
            flash,
            layout,
            journal,
            snap,
            erased_until: 0,
        };
        s.erased_until = s.committed_end();
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

    /// The server has seen the outcome: forget it.
    pub fn outcome_reported(&mut self) -> Result<(), StorageError<F::Error>> {
        match self.snap.state {
            UpdateState::Confirmed { .. }
            | UpdateState::Reverted { .. }
            | UpdateState::Failed { .. } => self.set_state(UpdateState::Idle),
            _ => Ok(()),
        }
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

    pub(crate) fn commit(&mut self, rec: Record) -> Result<(), StorageError<F::Error>> {
        let mut after = self.snap;
        after.apply(&rec);
        self.journal.commit(&mut self.flash, &rec, &after)?;
        self.snap = after;
        Ok(())
    }

    pub(crate) fn set_state(&mut self, state: UpdateState) -> Result<(), StorageError<F::Error>> {
        self.commit(Record::State(state))
    }

    fn erase_size() -> u32 {
        F::ERASE_SIZE as u32
    }

    /// End of the last committed chunk, rounded up to a sector: everything below was erased
    /// during this download, nothing above holds a committed chunk.
    fn committed_end(&self) -> u32 {
        let Some((state, manifest)) = self.snap.download else {
            return 0;
        };
        if self.snap.state != UpdateState::Downloading {
            return 0;
        }
        let chunk = manifest
            .as_signed()
            .decode_verified()
            .map(|m| u32::from(m.chunk_size))
            .unwrap_or(0);
        let ahead_end = 32 - state.ahead.leading_zeros();
        let end = state
            .next_offset
            .saturating_add(ahead_end.saturating_mul(chunk));
        end.div_ceil(Self::erase_size()) * Self::erase_size()
    }

    /// Erases staging sectors up to `end` that this download has not erased yet.
    fn erase_ahead(&mut self, end: u32) -> Result<(), StorageError<F::Error>> {
        let e = Self::erase_size();
        while self.erased_until < end {
            let at = self.layout.dfu.offset + self.erased_until;
            self.flash.erase(at, at + e).map_err(StorageError::Flash)?;
            self.erased_until += e;
        }
        Ok(())
    }

    fn check_range(&self, offset: u32, len: usize) -> Result<(), StorageError<F::Error>> {
        let capacity = self.capacity();
        if (offset as usize).saturating_add(len) > capacity as usize {
            return Err(StorageError::OutOfRange {
                offset,
                len,
                capacity,
            });
        }
        Ok(())
    }
}

impl<F: MultiwriteNorFlash> UpdateStorage for FlashStorage<F> {
    type Error = StorageError<F::Error>;

    fn capacity(&self) -> u32 {
        self.layout.staging_capacity(F::ERASE_SIZE)
    }

    fn load(&mut self) -> Result<Persisted, Self::Error> {
        Ok(Persisted {
            capacity: self.capacity(),
            download: self.snap.resume(),
            outcome: self.last_outcome(),
        })
    }

    fn begin(&mut self, manifest: &StoredManifest, state: &ResumeState) -> Result<(), Self::Error> {
        match self.snap.state {
            UpdateState::Installing { .. }
            | UpdateState::Trial { .. }
            | UpdateState::Reverting { .. } => {
                return Err(StorageError::WrongState(self.snap.state))
            }
            _ => {}
        }
        self.commit(Record::Begin {
            state: *state,
            manifest: *manifest,
        })?;
        self.erased_until = 0;
        Ok(())
    }

    fn write(&mut self, offset: u32, data: &[u8]) -> Result<(), Self::Error> {
        self.check_range(offset, data.len())?;
        let end = offset + data.len() as u32;
        self.erase_ahead(end)?;
        write_unaligned(&mut self.flash, self.layout.dfu.offset + offset, data)
    }

    fn persist(&mut self, state: &ResumeState) -> Result<(), Self::Error> {
        self.commit(Record::Progress {
            image: state.image,
            next_offset: state.next_offset,
            ahead: state.ahead,
        })
    }

    fn read(&mut self, offset: u32, buf: &mut [u8]) -> Result<(), Self::Error> {
        self.check_range(offset, buf.len())?;
        self.flash
            .read(self.layout.dfu.offset + offset, buf)
            .map_err(StorageError::Flash)
    }

    fn mark_staged(&mut self, state: &ResumeState) -> Result<(), Self::Error> {
        self.persist(state)?;
        self.set_state(UpdateState::Staged)
    }

    fn abandon(&mut self) -> Result<(), Self::Error> {
        self.erased_until = 0;
        self.set_state(UpdateState::Idle)
    }

    fn set_outcome(&mut self, outcome: LastOutcome) -> Result<(), Self::Error> {
        match outcome {
            LastOutcome::None => self.outcome_reported(),
            // A download given up: reported at the next check-in even after a reset. Never over
            // an update in progress or an install's own outcome not yet reported.
            LastOutcome::Failed { sequence, reason } if self.snap.state == UpdateState::Idle => {
                self.set_state(UpdateState::Failed { sequence, reason })
            }
            // Confirm and roll back are the installer's to record.
            _ => Ok(()),
        }
    }
}

/// Writes `data` at any `offset`: whole write units straight from `data`, the partial units at
/// either end padded with `0xFF` (which programs nothing, so the neighbouring chunk's bytes in
/// the same unit are left as they are).
impl<F: MultiwriteNorFlash> CounterStore for FlashStorage<F> {
    type Error = StorageError<F::Error>;

    fn load_counter(&mut self) -> Result<u64, Self::Error> {
        Ok(self.snap.counter)
    }

    fn store_counter(&mut self, value: u64) -> Result<(), Self::Error> {
        if value != self.snap.counter {
            self.commit(Record::Counter(value))?;
        }
        Ok(())
    }
}

fn write_unaligned<F: NorFlash>(
    flash: &mut F,
    offset: u32,
    data: &[u8],
) -> Result<(), StorageError<F::Error>> {
    let w = F::WRITE_SIZE as u32;
    let end = offset + data.len() as u32;
    let mut at = offset;
    while at < end {
        let unit_start = at - at % w;
        if at == unit_start && end - at >= w {
            // As many whole units as there are.
            let n = (end - at) / w * w;
            let from = (at - offset) as usize;
            let src = data.get(from..from + n as usize).unwrap_or(&[]);
            flash.write(at, src).map_err(StorageError::Flash)?;
            at += n;
        } else {
            let mut unit = [0xFFu8; 64];
            let unit_end = (unit_start + w).min(end);
            for pos in at..unit_end {
                if let (Some(dst), Some(src)) = (
                    unit.get_mut((pos - unit_start) as usize),
                    data.get((pos - offset) as usize),
                ) {
                    *dst = *src;
                }
            }
            flash
                .write(unit_start, unit.get(..w as usize).unwrap_or(&[]))
                .map_err(StorageError::Flash)?;
            at = unit_end;
        }
    }
    Ok(())
}
