//! Install, trial boot, confirm and rollback: the swap between the active and DFU slots.
//!
//! The swap moves the staged image into ACTIVE and keeps the old one in DFU, one sector step
//! at a time, journaling each step. Every step erases one sector and copies into it from a
//! sector that no earlier step has overwritten, so a step cut by a power failure is simply done
//! again on the next boot. For an image of `N` sectors:
//!
//! | steps | action (sector `p`) | after it |
//! |---|---|---|
//! | `0 .. N` | `p = N-1 .. 0`: erase `DFU[p+1]`, copy `DFU[p]` into it | new image in `DFU[1..=N]` |
//! | `N .. 3N`, even | erase `DFU[p]`, copy `ACTIVE[p]` into it | old sector `p` kept in `DFU[p]` |
//! | `N .. 3N`, odd | erase `ACTIVE[p]`, copy `DFU[p+1]` into it | new sector `p` active |
//!
//! Reverting copies `DFU[p]` back into `ACTIVE[p]` for every `p`, again one journaled step per
//! sector. Erases per update: `2N` in DFU and `N` in ACTIVE (plus `N` in ACTIVE and none in DFU
//! for a revert).
//!
//! `boot` is the part a bootloader calls; it only needs this crate, `no_std`. Every step
//! erases before it writes, so the swap works on write-once (ECC) flash as it is.

use embedded_storage_async::nor_flash::NorFlash;
use ota_core::wire::ResultCode;

use crate::mode::WriteMode;
use crate::state::UpdateState;
use crate::storage::{AsyncFlashStorage, StorageError};

/// What the bootloader should do after `boot`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootOutcome {
    /// Boot the active image; nothing is on trial.
    Normal,
    /// Boot the new active image on trial: the application must call `confirm` (or `reject`)
    /// before the next reset.
    Trial {
        /// Sequence number of the image on trial.
        sequence: u32,
    },
    /// The previous image was restored; boot it. The reason is reported at the next check-in.
    Reverted {
        /// Why.
        reason: ResultCode,
    },
}

impl<F: NorFlash, M: WriteMode> AsyncFlashStorage<F, M> {
    /// The staged image is to be installed at the next boot.
    pub async fn request_install(&mut self) -> Result<(), StorageError<F::Error>> {
        match self.snap.state {
            UpdateState::Staged => self.set_state(UpdateState::Installing { step: 0 }).await,
            s => Err(StorageError::WrongState(s)),
        }
    }

    /// The image on trial passed the application's health check: make it permanent.
    pub async fn confirm(&mut self) -> Result<(), StorageError<F::Error>> {
        match self.snap.state {
            UpdateState::Trial { .. } => {
                let sequence = self.staged_sequence()?;
                self.set_state(UpdateState::Confirmed { sequence }).await
            }
            s => Err(StorageError::WrongState(s)),
        }
    }

    /// The image on trial failed its health check: the next boot reverts to the previous one.
    pub async fn reject(&mut self, reason: ResultCode) -> Result<(), StorageError<F::Error>> {
        match self.snap.state {
            UpdateState::Trial { .. } => {
                self.set_state(UpdateState::Reverting { step: 0, reason })
                    .await
            }
            s => Err(StorageError::WrongState(s)),
        }
    }

    /// The boot-time part: finishes any swap or revert a reset interrupted, starts a trial or
    /// reverts one that was reset without a confirm, and says what to boot.
    ///
    /// Each step copies at most one sector and then journals the state it leads to, so a cut
    /// anywhere repeats at most that one copy.
    pub async fn boot(&mut self) -> Result<BootOutcome, StorageError<F::Error>> {
        loop {
            // The sector this step copies (from, to), the state it leads to, and what to boot
            // once that state is journaled.
            let (copy, next, outcome) = match self.snap.state {
                UpdateState::Installing { step } => {
                    let n = self.swap_sectors()?;
                    if step < 3 * n {
                        let copy = self.swap_copy(step, n);
                        (Some(copy), UpdateState::Installing { step: step + 1 }, None)
                    } else {
                        (None, UpdateState::Trial { booted: false }, None)
                    }
                }
                UpdateState::Trial { booted: false } => {
                    let sequence = self.staged_sequence()?;
                    let trial = BootOutcome::Trial { sequence };
                    (None, UpdateState::Trial { booted: true }, Some(trial))
                }
                UpdateState::Trial { booted: true } => {
                    let reason = ResultCode::TRIAL_RESET;
                    (None, UpdateState::Reverting { step: 0, reason }, None)
                }
                UpdateState::Reverting { step, reason } => {
                    if step < self.swap_sectors()? {
                        let e = Self::sector();
                        let (dfu, active) = (self.layout.dfu.offset, self.layout.active.offset);
                        let copy = (dfu + step * e, active + step * e);
                        let next = UpdateState::Reverting {
                            step: step + 1,
                            reason,
                        };
                        (Some(copy), next, None)
                    } else {
                        let sequence = self.staged_sequence()?;
                        let next = UpdateState::Reverted { sequence, reason };
                        (None, next, Some(BootOutcome::Reverted { reason }))
                    }
                }
                _ => return Ok(BootOutcome::Normal),
            };
            if let Some((from, to)) = copy {
                self.copy_sector(from, to).await?;
            }
            self.set_state(next).await?;
            if let Some(outcome) = outcome {
                return Ok(outcome);
            }
        }
    }

    fn sector() -> u32 {
        F::ERASE_SIZE as u32
    }

    /// The manifest of the download, staged image or image on trial the journal holds, if any.
    pub fn staged_manifest(&self) -> Option<ota_core::Manifest> {
        let (_, manifest) = self.snap.download?;
        manifest.as_signed().decode_verified().ok()
    }

    fn staged_sequence(&self) -> Result<u32, StorageError<F::Error>> {
        let (_, manifest) = self.snap.download.ok_or(StorageError::BadManifest)?;
        manifest
            .as_signed()
            .decode_verified()
            .map(|m| m.sequence)
            .map_err(|_| StorageError::BadManifest)
    }

    /// Sectors the staged image spans.
    fn swap_sectors(&self) -> Result<u32, StorageError<F::Error>> {
        let (_, manifest) = self.snap.download.ok_or(StorageError::BadManifest)?;
        let size = manifest
            .as_signed()
            .decode_verified()
            .map_err(|_| StorageError::BadManifest)?
            .image_size;
        Ok(size.div_ceil(Self::sector()).max(1))
    }

    /// The sector step `step` of a swap over `n` sectors copies, (from, to): first the staged
    /// image moves up one sector in DFU (`n` steps, from the top), then each sector of ACTIVE
    /// goes down to DFU and the new one up from DFU into ACTIVE (`2n` steps).
    fn swap_copy(&self, step: u32, n: u32) -> (u32, u32) {
        let e = Self::sector();
        let (dfu, active) = (self.layout.dfu.offset, self.layout.active.offset);
        if step < n {
            let p = n - 1 - step;
            (dfu + p * e, dfu + (p + 1) * e)
        } else {
            let t = step - n;
            let p = t / 2;
            if t % 2 == 0 {
                (active + p * e, dfu + p * e)
            } else {
                (dfu + (p + 1) * e, active + p * e)
            }
        }
    }

    /// Erases the sector at `to` and copies the sector at `from` into it.
    async fn copy_sector(&mut self, from: u32, to: u32) -> Result<(), StorageError<F::Error>> {
        let e = Self::sector();
        self.flash
            .erase(to, to + e)
            .await
            .map_err(StorageError::Flash)?;
        // A whole number of write units, at most 256 bytes.
        let step = (256 / F::WRITE_SIZE).max(1) * F::WRITE_SIZE;
        let mut buf = [0u8; 256 + 64];
        let mut done = 0;
        while done < e {
            let n = (step as u32).min(e - done);
            let chunk = buf.get_mut(..n as usize).unwrap_or(&mut []);
            self.flash
                .read(from + done, chunk)
                .await
                .map_err(StorageError::Flash)?;
            if chunk.iter().any(|&b| b != 0xFF) {
                self.flash
                    .write(to + done, chunk)
                    .await
                    .map_err(StorageError::Flash)?;
            }
            done += n;
        }
        Ok(())
    }
}
