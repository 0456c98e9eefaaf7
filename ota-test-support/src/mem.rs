//! Update storage in RAM ([`MemStorage`]), for tests and simulators.

use ota_core::manifest::{PatchInfo, StoredManifest};
use ota_core::resume::ResumeState;
use ota_core::storage::{CounterStore, Persisted, StorageFailure, UpdateStorage};
use ota_core::wire::{Digest, LastOutcome};
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

    fn active_is(&self, size: u32, digest: &Digest) -> bool {
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

    fn begin(&mut self, manifest: &StoredManifest, state: &ResumeState) -> Result<(), MemError> {
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
