//! Blocking flash in the async storage: [`BlockingFlash`] runs an `embedded-storage` driver
//! where `embedded-storage-async` is expected (each operation completes when polled), so one
//! implementation of the journal, staging and swap serves both.

use embedded_storage::nor_flash as blocking;
use embedded_storage_async::nor_flash as nb;

/// A blocking NOR flash driver, seen as an async one.
#[derive(Debug)]
pub struct BlockingFlash<F>(pub F);

impl<F: blocking::ErrorType> blocking::ErrorType for BlockingFlash<F> {
    type Error = F::Error;
}

impl<F: blocking::ReadNorFlash> nb::ReadNorFlash for BlockingFlash<F> {
    const READ_SIZE: usize = F::READ_SIZE;

    async fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), F::Error> {
        self.0.read(offset, bytes)
    }

    fn capacity(&self) -> usize {
        self.0.capacity()
    }
}

impl<F: blocking::NorFlash> nb::NorFlash for BlockingFlash<F> {
    const WRITE_SIZE: usize = F::WRITE_SIZE;
    const ERASE_SIZE: usize = F::ERASE_SIZE;

    async fn erase(&mut self, from: u32, to: u32) -> Result<(), F::Error> {
        self.0.erase(from, to)
    }

    async fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), F::Error> {
        self.0.write(offset, bytes)
    }
}

impl<F: blocking::MultiwriteNorFlash> nb::MultiwriteNorFlash for BlockingFlash<F> {}
