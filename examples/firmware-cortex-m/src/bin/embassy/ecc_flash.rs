//! An async NOR flash in RAM that behaves like ECC internal flash (STM32L4/U5-like): 8-byte
//! write units programmed once between erases, 4 KiB sectors. A second program of a unit is an
//! error, as the real controller reports it, so the write-once storage mode is held to it. On a
//! real MCU this is the HAL's async flash driver.

use embedded_storage_async::nor_flash::{
    ErrorType, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};

const UNIT: usize = 8;
const SECTOR: usize = 4096;

/// What the flash refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EccFlashError {
    /// Misaligned.
    NotAligned,
    /// Out of range.
    OutOfBounds,
    /// A unit programmed a second time without an erase.
    Reprogrammed,
}

impl NorFlashError for EccFlashError {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            EccFlashError::NotAligned => NorFlashErrorKind::NotAligned,
            EccFlashError::OutOfBounds => NorFlashErrorKind::OutOfBounds,
            EccFlashError::Reprogrammed => NorFlashErrorKind::Other,
        }
    }
}

/// The stand-in flash: `mem` and one bit per write unit, set when programmed.
pub struct EccFlash {
    mem: &'static mut [u8],
    programmed: &'static mut [u8],
}

impl EccFlash {
    /// Over `mem` (a whole number of sectors), `programmed` holding a bit per 8-byte unit.
    pub fn new(mem: &'static mut [u8], programmed: &'static mut [u8]) -> Self {
        Self { mem, programmed }
    }

    /// The raw contents (the factory image goes in before the first boot).
    pub fn contents_mut(&mut self) -> &mut [u8] {
        self.mem
    }

    fn unit_bit(&mut self, unit: usize) -> Result<(&mut u8, u8), EccFlashError> {
        let byte = self
            .programmed
            .get_mut(unit / 8)
            .ok_or(EccFlashError::OutOfBounds)?;
        Ok((byte, 1 << (unit % 8)))
    }
}

impl ErrorType for EccFlash {
    type Error = EccFlashError;
}

impl ReadNorFlash for EccFlash {
    const READ_SIZE: usize = 1;

    async fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), EccFlashError> {
        let start = offset as usize;
        let src = self
            .mem
            .get(start..start.saturating_add(bytes.len()))
            .ok_or(EccFlashError::OutOfBounds)?;
        bytes.copy_from_slice(src);
        Ok(())
    }

    fn capacity(&self) -> usize {
        self.mem.len()
    }
}

impl NorFlash for EccFlash {
    const WRITE_SIZE: usize = UNIT;
    const ERASE_SIZE: usize = SECTOR;

    async fn erase(&mut self, from: u32, to: u32) -> Result<(), EccFlashError> {
        let (from, to) = (from as usize, to as usize);
        if from % SECTOR != 0 || to % SECTOR != 0 || to < from {
            return Err(EccFlashError::NotAligned);
        }
        self.mem
            .get_mut(from..to)
            .ok_or(EccFlashError::OutOfBounds)?
            .fill(0xFF);
        for unit in from / UNIT..to / UNIT {
            let (byte, bit) = self.unit_bit(unit)?;
            *byte &= !bit;
        }
        Ok(())
    }

    async fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), EccFlashError> {
        let start = offset as usize;
        if start % UNIT != 0 || bytes.len() % UNIT != 0 {
            return Err(EccFlashError::NotAligned);
        }
        for unit in start / UNIT..(start + bytes.len()) / UNIT {
            let (byte, bit) = self.unit_bit(unit)?;
            if *byte & bit != 0 {
                return Err(EccFlashError::Reprogrammed);
            }
        }
        for unit in start / UNIT..(start + bytes.len()) / UNIT {
            let (byte, bit) = self.unit_bit(unit)?;
            *byte |= bit;
        }
        let dst = self
            .mem
            .get_mut(start..start + bytes.len())
            .ok_or(EccFlashError::OutOfBounds)?;
        dst.copy_from_slice(bytes);
        Ok(())
    }
}
