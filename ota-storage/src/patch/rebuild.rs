//! The rebuild itself (feature `delta`): the applier's flash adapters, and the checks before it.

use core::cell::RefCell;
use core::future::Future;

use embedded_storage_async::nor_flash::NorFlash;
use ota_core::manifest::PatchInfo;
use ota_core::runtime::block::block_on;
use ota_delta::{Applier, ApplyError, NewImage, OldImage, Source};
use sha2::{Digest as _, Sha256};

use super::PatchError;
use crate::mode::WriteMode;
use crate::state::UpdateState;
use crate::storage::{AsyncFlashStorage, StorageError};

/// Runs a flash future to completion where the synchronous applier needs its result.
fn now<T>(f: impl Future<Output = T>) -> T {
    block_on(f)
}

/// The flash, for one access of an adapter. The applier calls one adapter at a time, so the
/// flash is never borrowed already; if it were, the access fails rather than panics.
fn borrow<'a, 'f, F: NorFlash>(
    flash: &'a RefCell<&'f mut F>,
) -> Result<core::cell::RefMut<'a, &'f mut F>, StorageError<F::Error>> {
    flash
        .try_borrow_mut()
        .map_err(|_| StorageError::WrongState(UpdateState::Downloading))
}

/// The applier's error, as the storage's.
fn apply_failure<E>(e: ApplyError<StorageError<E>>) -> StorageError<E> {
    match e {
        ApplyError::ReadOld(e) | ApplyError::ReadNew(e) | ApplyError::Write(e) => e,
        ApplyError::WrongSource(_) => StorageError::PatchSource,
        ApplyError::TooLarge { size, capacity } => StorageError::Patch(PatchError::Size {
            rebuilt: size,
            expected: capacity,
        }),
        ApplyError::Malformed { at, what } => {
            StorageError::Patch(PatchError::Malformed { at, what })
        }
        ApplyError::Truncated { .. } => StorageError::Patch(PatchError::Truncated),
        ApplyError::Checksum { .. } => StorageError::Patch(PatchError::Checksum),
    }
}

/// OLD: the active slot, `len` bytes from `base`.
struct Old<'a, 'f, F> {
    flash: &'a RefCell<&'f mut F>,
    base: u32,
    len: u32,
}

impl<F: NorFlash> OldImage for Old<'_, '_, F> {
    type Error = StorageError<F::Error>;

    fn read(&mut self, offset: u32, buf: &mut [u8]) -> Result<(), Self::Error> {
        let end = u64::from(offset) + buf.len() as u64;
        if end > u64::from(self.len) {
            return Err(StorageError::OutOfRange {
                offset,
                len: buf.len(),
                capacity: self.len,
            });
        }
        let mut flash = borrow(self.flash)?;
        now(flash.read(self.base + offset, buf)).map_err(StorageError::Flash)
    }
}

/// NEW's write position across the patch's pieces: what is programmed, and the write unit
/// being filled.
struct NewState {
    /// Slot offset of NEW's first byte.
    base: u32,
    /// NEW may not reach past this (the head's end).
    limit: u32,
    /// NEW bytes programmed: a whole number of write units.
    flushed: u32,
    /// The unit after them, `pending` bytes of it filled.
    unit: [u8; 64],
    pending: usize,
}

/// NEW: the staging slot's head, written in whole units, each programmed once.
struct New<'a, 'f, F> {
    flash: &'a RefCell<&'f mut F>,
    st: &'a mut NewState,
}

impl<F: NorFlash> New<'_, '_, F> {
    fn program(&mut self, at: u32, data: &[u8]) -> Result<(), StorageError<F::Error>> {
        let mut flash = borrow(self.flash)?;
        now(flash.write(self.st.base + at, data)).map_err(StorageError::Flash)
    }
}

impl<F: NorFlash> NewImage for New<'_, '_, F> {
    type Error = StorageError<F::Error>;

    fn write(&mut self, offset: u32, mut data: &[u8]) -> Result<(), Self::Error> {
        let w = F::WRITE_SIZE;
        let next = self.st.flushed + self.st.pending as u32;
        let end = u64::from(offset) + data.len() as u64;
        if offset != next || end > u64::from(self.st.limit) {
            // NEW is written in order, once, inside the head.
            return Err(StorageError::OutOfRange {
                offset,
                len: data.len(),
                capacity: self.st.limit,
            });
        }
        if self.st.pending > 0 {
            let take = (w - self.st.pending).min(data.len());
            let (now_part, rest) = data.split_at(take);
            if let Some(dst) = self
                .st
                .unit
                .get_mut(self.st.pending..self.st.pending + take)
            {
                dst.copy_from_slice(now_part);
            }
            self.st.pending += take;
            data = rest;
            if self.st.pending == w {
                let unit = self.st.unit;
                self.program(self.st.flushed, unit.get(..w).unwrap_or(&[]))?;
                self.st.flushed += w as u32;
                self.st.pending = 0;
            }
        }
        let whole = data.len() / w * w;
        let (units, rest) = data.split_at(whole);
        if !units.is_empty() {
            self.program(self.st.flushed, units)?;
            self.st.flushed += whole as u32;
        }
        if !rest.is_empty() {
            if let Some(dst) = self.st.unit.get_mut(..rest.len()) {
                dst.copy_from_slice(rest);
            }
            self.st.pending = rest.len();
        }
        Ok(())
    }

    fn read_new(&mut self, offset: u32, buf: &mut [u8]) -> Result<(), Self::Error> {
        let end = offset as usize + buf.len();
        let flushed = self.st.flushed as usize;
        if end > flushed + self.st.pending {
            return Err(StorageError::OutOfRange {
                offset,
                len: buf.len(),
                capacity: self.st.flushed + self.st.pending as u32,
            });
        }
        // The part already in flash, then the part still in the unit being filled.
        let in_flash = flushed.saturating_sub(offset as usize).min(buf.len());
        let (from_flash, from_unit) = buf.split_at_mut(in_flash);
        if !from_flash.is_empty() {
            let mut flash = borrow(self.flash)?;
            now(flash.read(self.st.base + offset, from_flash)).map_err(StorageError::Flash)?;
        }
        if !from_unit.is_empty() {
            let start = (offset as usize + in_flash) - flushed;
            let src = self.st.unit.get(start..start + from_unit.len()).ok_or(
                StorageError::OutOfRange {
                    offset,
                    len: from_unit.len(),
                    capacity: self.st.flushed + self.st.pending as u32,
                },
            )?;
            from_unit.copy_from_slice(src);
        }
        Ok(())
    }
}

/// SHA-256 of `len` bytes of flash from `at`.
async fn digest_of<F: NorFlash>(
    flash: &mut F,
    at: u32,
    len: u32,
) -> Result<[u8; 32], StorageError<F::Error>> {
    let mut hasher = Sha256::new();
    // As small as the journal's pieces: it sits in every storage future that hashes.
    let mut buf = [0u8; 64];
    let mut done = 0u32;
    while done < len {
        let n = (len - done).min(buf.len() as u32);
        let part = buf.get_mut(..n as usize).unwrap_or(&mut []);
        flash
            .read(at + done, part)
            .await
            .map_err(StorageError::Flash)?;
        hasher.update(&*part);
        done += n;
    }
    Ok(hasher.finalize().into())
}

impl<F: NorFlash, M: WriteMode> AsyncFlashStorage<F, M> {
    /// True if the active slot holds the image `patch` applies to (its size and SHA-256).
    pub(crate) async fn runs_source_of(
        &mut self,
        patch: &PatchInfo,
    ) -> Result<bool, StorageError<F::Error>> {
        if patch.source_size > self.layout.active.size {
            return Ok(false);
        }
        let digest = digest_of(
            &mut self.flash,
            self.layout.active.offset,
            patch.source_size,
        )
        .await?;
        Ok(digest == patch.source_digest.0)
    }

    /// [`AsyncFlashStorage::rebuild`] with the applier built in: the checks, then the
    /// rebuild. Two futures one after the other rather than one function: in one, what the
    /// rebuild keeps across its writes (the applier, 360 bytes and more) would sit beside the
    /// checks' hashing, and every storage future would be that much larger.
    pub(super) async fn rebuild_image(
        &mut self,
        patch: &PatchInfo,
        image_size: u32,
    ) -> Result<(), StorageError<F::Error>> {
        let (base, head) = self.check_patch(patch, image_size).await?;
        self.apply_patch(patch, image_size, base, head).await
    }

    /// Checks that `patch` is staged whole and that the device runs its source, then erases
    /// the head of the slot the image is rebuilt into: where in the slot the patch lies, and
    /// where the erased head ends.
    async fn check_patch(
        &mut self,
        patch: &PatchInfo,
        image_size: u32,
    ) -> Result<(u32, u32), StorageError<F::Error>> {
        if self.snap.state != UpdateState::Downloading {
            return Err(StorageError::WrongState(self.snap.state));
        }
        let e = F::ERASE_SIZE as u32;
        // Where the patch lies and where the image will end, not the whole place: only these
        // two numbers are kept across the reads below.
        let (base, head) = match self.patch_place() {
            Some(p) if p.info == *patch && p.image_size == image_size => (p.base, p.head_end(e)),
            _ => return Err(StorageError::Patch(PatchError::NotStaged)),
        };
        let slot = self.layout.dfu.offset;
        if digest_of(&mut self.flash, slot + base, patch.size).await? != patch.digest.0 {
            return Err(StorageError::Patch(PatchError::Digest));
        }
        if !self.runs_source_of(patch).await? {
            return Err(StorageError::PatchSource);
        }
        let mut at = 0;
        while at < head {
            self.flash
                .erase(slot + at, slot + at + e)
                .await
                .map_err(StorageError::Flash)?;
            at += e;
        }
        Ok((base, head))
    }

    /// Feeds the staged patch (at `base` in the slot) through the applier, writing the image
    /// from the slot's start.
    async fn apply_patch(
        &mut self,
        patch: &PatchInfo,
        image_size: u32,
        base: u32,
        head: u32,
    ) -> Result<(), StorageError<F::Error>> {
        let slot = self.layout.dfu.offset;
        let source = || Source {
            len: patch.source_size,
            sha256: patch.source_digest.0,
        };
        // Only the applier's state lives across the flash reads: its work buffer is scratch
        // within one piece, on the stack ([`Applier::feed_state`]), not in this future.
        let mut state = Applier::new(source(), image_size).state();
        let mut new = NewState {
            base: slot,
            limit: head,
            flushed: 0,
            unit: [0xFF; 64],
            pending: 0,
        };
        let mut piece = [0u8; 64];
        let mut fed = 0u32;
        while fed < patch.size {
            let n = (patch.size - fed).min(piece.len() as u32);
            let chunk = piece.get_mut(..n as usize).unwrap_or(&mut []);
            self.flash
                .read(slot + base + fed, chunk)
                .await
                .map_err(StorageError::Flash)?;
            let flash = RefCell::new(&mut self.flash);
            let mut old = Old {
                flash: &flash,
                base: self.layout.active.offset,
                len: patch.source_size,
            };
            let mut new = New {
                flash: &flash,
                st: &mut new,
            };
            Applier::feed_state(&mut state, source(), image_size, chunk, &mut old, &mut new)
                .map_err(apply_failure)?;
            fed += n;
        }
        // The last partial unit, padded with the erased value.
        if new.pending > 0 {
            let w = F::WRITE_SIZE;
            if let Some(pad) = new.unit.get_mut(new.pending..w) {
                pad.fill(0xFF);
            }
            self.flash
                .write(slot + new.flushed, new.unit.get(..w).unwrap_or(&[]))
                .await
                .map_err(StorageError::Flash)?;
        }
        let rebuilt = Applier::finish_state(&state).map_err(apply_failure)?;
        if rebuilt != image_size {
            return Err(StorageError::Patch(PatchError::Size {
                rebuilt,
                expected: image_size,
            }));
        }
        Ok(())
    }
}
