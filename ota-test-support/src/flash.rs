//! A simulated NOR flash with power-cut injection ([`SimFlash`]), and a NOR flash backed by a
//! file ([`FileFlash`]).
//!
//! NOR semantics: erase sets a whole sector to `0xFF`; a write can only clear bits (the result is
//! `old & new`, so rewriting the same data is harmless: [`MultiwriteNorFlash`]); writes and
//! erases must be aligned to `WRITE` and `ERASE` bytes; anything out of range is an error.
//!
//! Power cuts: [`SimFlash::cut_at`] arms a cut at the N-th write or erase from now. That
//! operation is left half done — a write lands in part, its last unit with only some bits
//! cleared; an erase resets only part of the sector — and every later operation fails with
//! [`SimError::PowerLoss`] until [`SimFlash::power_on`], which models the reboot.

mod file;

pub use file::{FileFlash, FileFlashError};

use embedded_storage::nor_flash::{
    ErrorType, MultiwriteNorFlash, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};

/// Errors of the simulated flash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SimError {
    /// Offset or length not aligned to the write or erase size.
    #[error("unaligned access")]
    NotAligned,
    /// Beyond the end of the flash.
    #[error("access out of bounds")]
    OutOfBounds,
    /// Power failed during or before this operation.
    #[error("power lost")]
    PowerLoss,
    /// Write-once flash: a unit programmed again without an erase (a bug in its user).
    #[error("write unit programmed twice without an erase")]
    Reprogrammed,
    /// Write-once (ECC) flash: a unit a power cut left half programmed or half erased reads
    /// back as an uncorrectable error.
    #[error("ECC error")]
    Ecc,
}

impl NorFlashError for SimError {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            SimError::NotAligned => NorFlashErrorKind::NotAligned,
            SimError::OutOfBounds => NorFlashErrorKind::OutOfBounds,
            SimError::PowerLoss | SimError::Reprogrammed | SimError::Ecc => {
                NorFlashErrorKind::Other
            }
        }
    }
}

/// A NOR flash in RAM with `WRITE`-byte write units and `ERASE`-byte sectors.
#[derive(Debug, Clone)]
pub struct SimFlash<const WRITE: usize, const ERASE: usize> {
    mem: Vec<u8>,
    erases: Vec<u32>,
    ops: u64,
    cut_at: Option<u64>,
    dead: bool,
    seed: u64,
    /// Model write-once ECC flash: units programmed once between erases, torn units unreadable.
    write_once: bool,
    /// Per write unit: programmed since its last erase.
    programmed: Vec<bool>,
    /// Per write unit: left half programmed or half erased by a cut.
    torn: Vec<bool>,
    /// Attempts to program a unit twice without an erase (write-once mode).
    reprogrammed: u64,
}

impl<const WRITE: usize, const ERASE: usize> SimFlash<WRITE, ERASE> {
    /// `sectors` erased sectors.
    pub fn new(sectors: usize) -> Self {
        Self {
            mem: vec![0xFF; sectors * ERASE],
            erases: vec![0; sectors],
            ops: 0,
            cut_at: None,
            dead: false,
            seed: 0x2545_f491_4f6c_dd1d,
            write_once: false,
            programmed: vec![false; sectors * ERASE / WRITE],
            torn: vec![false; sectors * ERASE / WRITE],
            reprogrammed: 0,
        }
    }

    /// A flash modelling write-once ECC flash (STM32L4/H7/U5-like): programming a unit twice
    /// between erases fails with [`SimError::Reprogrammed`], and a unit a cut left half
    /// programmed or half erased reads as [`SimError::Ecc`] until erased.
    pub fn write_once(sectors: usize) -> Self {
        Self {
            write_once: true,
            ..Self::new(sectors)
        }
    }

    /// Attempts so far to program a unit twice without an erase (refused in write-once mode).
    pub fn reprogram_attempts(&self) -> u64 {
        self.reprogrammed
    }

    /// Write units a cut left torn (unreadable on write-once flash) right now.
    pub fn torn_units(&self) -> usize {
        self.torn.iter().filter(|t| **t).count()
    }

    /// Arms a power cut at the `n`-th write or erase from now (0 = the next one).
    pub fn cut_at(&mut self, n: u64) {
        self.cut_at = Some(self.ops + n);
    }

    /// Seeds the choice of which bytes and bits a cut leaves behind.
    pub fn set_cut_seed(&mut self, seed: u64) {
        self.seed = seed | 1;
    }

    /// Restores power (a reboot): operations work again; no cut is armed.
    pub fn power_on(&mut self) {
        self.dead = false;
        self.cut_at = None;
    }

    /// True if power was lost and not restored.
    pub fn is_dead(&self) -> bool {
        self.dead
    }

    /// Writes and erases carried out (or attempted) so far.
    pub fn ops(&self) -> u64 {
        self.ops
    }

    /// Erases of each sector so far.
    pub fn erase_counts(&self) -> &[u32] {
        &self.erases
    }

    /// The raw contents.
    pub fn contents(&self) -> &[u8] {
        &self.mem
    }

    /// Mutable raw contents, for tests that corrupt flash on purpose.
    pub fn contents_mut(&mut self) -> &mut [u8] {
        &mut self.mem
    }

    fn rand(&mut self) -> u64 {
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        self.seed
    }

    /// Counts an operation; `Ok(true)` if this is the one the cut hits.
    fn begin_op(&mut self) -> Result<bool, SimError> {
        if self.dead {
            return Err(SimError::PowerLoss);
        }
        let hit = self.cut_at == Some(self.ops);
        self.ops += 1;
        Ok(hit)
    }

    fn range(&self, offset: u32, len: usize) -> Result<core::ops::Range<usize>, SimError> {
        let start = offset as usize;
        let end = start.checked_add(len).ok_or(SimError::OutOfBounds)?;
        if end > self.mem.len() {
            return Err(SimError::OutOfBounds);
        }
        Ok(start..end)
    }
}

impl<const WRITE: usize, const ERASE: usize> ErrorType for SimFlash<WRITE, ERASE> {
    type Error = SimError;
}

impl<const WRITE: usize, const ERASE: usize> ReadNorFlash for SimFlash<WRITE, ERASE> {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), SimError> {
        if self.dead {
            return Err(SimError::PowerLoss);
        }
        let r = self.range(offset, bytes.len())?;
        if self.write_once
            && !bytes.is_empty()
            && (r.start / WRITE..r.end.div_ceil(WRITE)).any(|u| self.torn.get(u) == Some(&true))
        {
            return Err(SimError::Ecc);
        }
        bytes.copy_from_slice(self.mem.get(r).ok_or(SimError::OutOfBounds)?);
        Ok(())
    }

    fn capacity(&self) -> usize {
        self.mem.len()
    }
}

impl<const WRITE: usize, const ERASE: usize> NorFlash for SimFlash<WRITE, ERASE> {
    const WRITE_SIZE: usize = WRITE;
    const ERASE_SIZE: usize = ERASE;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), SimError> {
        if from as usize % ERASE != 0 || to as usize % ERASE != 0 || to < from {
            return Err(SimError::NotAligned);
        }
        let r = self.range(from, (to - from) as usize)?;
        for sector in (r.start / ERASE)..(r.end / ERASE) {
            let cut = self.begin_op()?;
            let base = sector * ERASE;
            if let Some(count) = self.erases.get_mut(sector) {
                *count += 1;
            }
            let units = base / WRITE..(base + ERASE) / WRITE;
            if cut {
                // A partial erase: a random stretch of the sector is reset, the rest untouched.
                let a = self.rand() as usize % ERASE;
                let b = a + self.rand() as usize % (ERASE - a);
                for byte in self.mem.iter_mut().skip(base + a).take(b - a) {
                    *byte = 0xFF;
                }
                // On ECC flash a half-erased sector is garbage until erased again.
                for u in units {
                    if let (Some(p), Some(t)) = (self.programmed.get_mut(u), self.torn.get_mut(u)) {
                        *p = true;
                        *t = true;
                    }
                }
                self.dead = true;
                return Err(SimError::PowerLoss);
            }
            for byte in self.mem.iter_mut().skip(base).take(ERASE) {
                *byte = 0xFF;
            }
            for u in units {
                if let (Some(p), Some(t)) = (self.programmed.get_mut(u), self.torn.get_mut(u)) {
                    *p = false;
                    *t = false;
                }
            }
        }
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), SimError> {
        if offset as usize % WRITE != 0 || bytes.len() % WRITE != 0 {
            return Err(SimError::NotAligned);
        }
        let r = self.range(offset, bytes.len())?;
        let first = r.start / WRITE;
        if self.write_once && (first..r.end / WRITE).any(|u| self.programmed.get(u) == Some(&true))
        {
            self.reprogrammed += 1;
            return Err(SimError::Reprogrammed);
        }
        let cut = self.begin_op()?;
        // On a cut, only a prefix of the units lands, and the unit at the cut gets a random
        // subset of its bits cleared.
        let units = bytes.len() / WRITE;
        let done = if cut && units > 0 {
            self.rand() as usize % units
        } else {
            units
        };
        for i in 0..done * WRITE {
            if let (Some(dst), Some(src)) = (self.mem.get_mut(r.start + i), bytes.get(i)) {
                *dst &= *src;
            }
        }
        for u in first..first + done {
            if let Some(p) = self.programmed.get_mut(u) {
                *p = true;
            }
        }
        if cut {
            if let (Some(p), Some(t)) = (
                self.programmed.get_mut(first + done),
                self.torn.get_mut(first + done),
            ) {
                *p = true;
                *t = true;
            }
            for i in done * WRITE..((done + 1) * WRITE).min(bytes.len()) {
                let mask = self.rand() as u8;
                if let (Some(dst), Some(src)) = (self.mem.get_mut(r.start + i), bytes.get(i)) {
                    // Clear only some of the bits the write would have cleared.
                    *dst &= *src | mask;
                }
            }
            self.dead = true;
            return Err(SimError::PowerLoss);
        }
        Ok(())
    }
}

impl<const WRITE: usize, const ERASE: usize> MultiwriteNorFlash for SimFlash<WRITE, ERASE> {}

/// The same simulated flash through `embedded-storage-async` (every operation completes at once).
mod asynch {
    use super::{SimError, SimFlash};
    use embedded_storage_async::nor_flash as nb;

    impl<const WRITE: usize, const ERASE: usize> nb::ReadNorFlash for SimFlash<WRITE, ERASE> {
        const READ_SIZE: usize = 1;

        async fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), SimError> {
            embedded_storage::nor_flash::ReadNorFlash::read(self, offset, bytes)
        }

        fn capacity(&self) -> usize {
            embedded_storage::nor_flash::ReadNorFlash::capacity(self)
        }
    }

    impl<const WRITE: usize, const ERASE: usize> nb::NorFlash for SimFlash<WRITE, ERASE> {
        const WRITE_SIZE: usize = WRITE;
        const ERASE_SIZE: usize = ERASE;

        async fn erase(&mut self, from: u32, to: u32) -> Result<(), SimError> {
            embedded_storage::nor_flash::NorFlash::erase(self, from, to)
        }

        async fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), SimError> {
            embedded_storage::nor_flash::NorFlash::write(self, offset, bytes)
        }
    }

    impl<const WRITE: usize, const ERASE: usize> nb::MultiwriteNorFlash for SimFlash<WRITE, ERASE> {}
}
