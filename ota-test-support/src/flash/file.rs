//! A NOR flash backed by a file, so a simulated device keeps its flash across process restarts.
//! Same semantics as [`super::SimFlash`], without power cuts.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use embedded_storage::nor_flash::{
    ErrorType, MultiwriteNorFlash, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};

/// Errors of [`FileFlash`].
#[derive(Debug, thiserror::Error)]
pub enum FileFlashError {
    /// Misaligned write or erase.
    #[error("unaligned access")]
    NotAligned,
    /// Beyond the end.
    #[error("access out of bounds")]
    OutOfBounds,
    /// The file failed.
    #[error("file: {0}")]
    Io(#[from] std::io::Error),
}

impl NorFlashError for FileFlashError {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            FileFlashError::NotAligned => NorFlashErrorKind::NotAligned,
            FileFlashError::OutOfBounds => NorFlashErrorKind::OutOfBounds,
            FileFlashError::Io(_) => NorFlashErrorKind::Other,
        }
    }
}

/// A file of `sectors * ERASE` bytes, created erased (`0xFF`) if it does not exist.
#[derive(Debug)]
pub struct FileFlash<const WRITE: usize, const ERASE: usize> {
    file: File,
    len: usize,
}

impl<const WRITE: usize, const ERASE: usize> FileFlash<WRITE, ERASE> {
    /// Opens or creates the file. An existing file of another size is an error.
    pub fn open(path: &Path, sectors: usize) -> Result<Self, FileFlashError> {
        let len = sectors * ERASE;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let existing = file.metadata()?.len() as usize;
        if existing == 0 {
            file.write_all(&vec![0xFF; len])?;
            file.sync_all()?;
        } else if existing != len {
            return Err(FileFlashError::OutOfBounds);
        }
        Ok(Self { file, len })
    }

    fn check(&self, offset: u32, len: usize) -> Result<(), FileFlashError> {
        if (offset as usize).saturating_add(len) > self.len {
            return Err(FileFlashError::OutOfBounds);
        }
        Ok(())
    }
}

impl<const WRITE: usize, const ERASE: usize> ErrorType for FileFlash<WRITE, ERASE> {
    type Error = FileFlashError;
}

impl<const WRITE: usize, const ERASE: usize> ReadNorFlash for FileFlash<WRITE, ERASE> {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), FileFlashError> {
        self.check(offset, bytes.len())?;
        self.file.seek(SeekFrom::Start(u64::from(offset)))?;
        self.file.read_exact(bytes)?;
        Ok(())
    }

    fn capacity(&self) -> usize {
        self.len
    }
}

impl<const WRITE: usize, const ERASE: usize> NorFlash for FileFlash<WRITE, ERASE> {
    const WRITE_SIZE: usize = WRITE;
    const ERASE_SIZE: usize = ERASE;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), FileFlashError> {
        if from as usize % ERASE != 0 || to as usize % ERASE != 0 || to < from {
            return Err(FileFlashError::NotAligned);
        }
        self.check(from, (to - from) as usize)?;
        self.file.seek(SeekFrom::Start(u64::from(from)))?;
        self.file.write_all(&vec![0xFF; (to - from) as usize])?;
        self.file.sync_data()?;
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), FileFlashError> {
        if offset as usize % WRITE != 0 || bytes.len() % WRITE != 0 {
            return Err(FileFlashError::NotAligned);
        }
        self.check(offset, bytes.len())?;
        let mut old = vec![0u8; bytes.len()];
        self.read(offset, &mut old)?;
        for (o, n) in old.iter_mut().zip(bytes) {
            *o &= *n;
        }
        self.file.seek(SeekFrom::Start(u64::from(offset)))?;
        self.file.write_all(&old)?;
        self.file.sync_data()?;
        Ok(())
    }
}

impl<const WRITE: usize, const ERASE: usize> MultiwriteNorFlash for FileFlash<WRITE, ERASE> {}
