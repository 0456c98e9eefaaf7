//! A NOR flash in RAM for the emulated board (QEMU's MPS2 has no programmable flash): erase to
//! 0xFF, writes clear bits only, 4-byte writes, 4 KiB sectors. On a real MCU this is the HAL's
//! flash driver.

use embedded_storage::nor_flash::{
    ErrorType, MultiwriteNorFlash, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};

/// Out of range or misaligned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RamFlashError {
    /// Misaligned.
    NotAligned,
    /// Out of range.
    OutOfBounds,
}

impl NorFlashError for RamFlashError {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            RamFlashError::NotAligned => NorFlashErrorKind::NotAligned,
            RamFlashError::OutOfBounds => NorFlashErrorKind::OutOfBounds,
        }
    }
}

/// The stand-in flash.
pub struct RamFlash {
    mem: &'static mut [u8],
}

impl RamFlash {
    /// Over `mem` (its length a multiple of 4 KiB).
    pub fn new(mem: &'static mut [u8]) -> Self {
        Self { mem }
    }

    fn range(&mut self, offset: u32, len: usize) -> Result<&mut [u8], RamFlashError> {
        let start = offset as usize;
        self.mem
            .get_mut(start..start.saturating_add(len))
            .ok_or(RamFlashError::OutOfBounds)
    }
}

impl ErrorType for RamFlash {
    type Error = RamFlashError;
}

impl ReadNorFlash for RamFlash {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), RamFlashError> {
        let src = self.range(offset, bytes.len())?;
        bytes.copy_from_slice(src);
        Ok(())
    }

    fn capacity(&self) -> usize {
        self.mem.len()
    }
}

impl NorFlash for RamFlash {
    const WRITE_SIZE: usize = 4;
    const ERASE_SIZE: usize = 4096;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), RamFlashError> {
        if from % 4096 != 0 || to % 4096 != 0 || to < from {
            return Err(RamFlashError::NotAligned);
        }
        self.range(from, (to - from) as usize)?.fill(0xFF);
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), RamFlashError> {
        if offset % 4 != 0 || bytes.len() % 4 != 0 {
            return Err(RamFlashError::NotAligned);
        }
        for (dst, src) in self.range(offset, bytes.len())?.iter_mut().zip(bytes) {
            *dst &= *src;
        }
        Ok(())
    }
}

impl MultiwriteNorFlash for RamFlash {}
