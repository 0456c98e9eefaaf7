//! Patch downloads: where the patch is staged, the checks on it, and the rebuild of the image
//! from the running one and the patch ([`AsyncFlashStorage::rebuild`]).
//!
//! ```text
//! DFU slot: | image, rebuilt here (head) | ... | patch, fetched here (tail) | spare sector |
//!           0            round_up(image_size)    patch_base                 room
//! ```
//!
//! The patch goes in the slot's tail from `patch_base = round_down(room - patch.size, sector)`,
//! where `room` is the whole DFU slot less the swap's spare sector (the image itself is bounded
//! by the staging capacity, which ACTIVE's size may cap lower), so its chunks keep their sector
//! alignment: erase-ahead, the resume record and the
//! write-once torn-chunk recovery work on patch offsets as they do on image offsets, shifted by
//! `patch_base`. The rebuild erases the head (never a sector of the patch), then streams the
//! patch through [`ota_delta::Applier`]: OLD is read from the active slot, NEW is written into
//! the head in whole write units (each programmed once). A rebuild cut by a reset leaves the
//! journal saying "downloading, every chunk staged"; the device asks for the rebuild again and
//! it starts over from the erase, the patch untouched in the tail.
//!
//! RAM: the applier ([`ota_delta::State`] and its 256-byte buffer), a 64-byte patch window and a
//! 64-byte write unit, all on the stack.
//!
//! The applier is synchronous: during the rebuild each flash read and write it asks for is
//! polled to completion in place. Right for blocking drivers ([`crate::FlashStorage`]) and for
//! async drivers whose futures finish when polled (an interrupt or DMA completion checked on
//! poll); a driver whose future waits on another task (a bus shared behind an async mutex)
//! would spin: give the rebuild's flash to this storage alone.
//!
//! Without the `delta` feature the applier is left out of the build (about 4 KiB of flash on a
//! Cortex-M4): `Begin` refuses a patch before anything is fetched
//! ([`StorageError::PatchUnsupported`]), the device reports `PATCH_FAILED` and the server
//! offers the whole image from then on.

#[cfg(feature = "delta")]
mod rebuild;

use embedded_storage_async::nor_flash::NorFlash;
use ota_core::manifest::PatchInfo;

use crate::mode::WriteMode;
use crate::storage::{AsyncFlashStorage, StorageError};

/// Why a staged patch does not rebuild the image (`ota_core`'s `StorageFailure::Patch`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    /// A rebuild was asked with no patch download for it in the journal (none in progress, or
    /// one for another patch or image size).
    #[error("no patch download to rebuild from")]
    NotStaged,
    /// The staged patch's SHA-256 is not the manifest's.
    #[error("the staged patch's digest is not the manifest's")]
    Digest,
    /// The patch breaks the format.
    #[error("malformed patch near byte {at}: {what}")]
    Malformed {
        /// Patch bytes consumed when the fault was found.
        at: u32,
        /// The fault.
        what: ota_delta::Malformed,
    },
    /// The patch ended before the image was complete.
    #[error("the patch ended early")]
    Truncated,
    /// The rebuilt image's CRC-32 is not the patch header's.
    #[error("the rebuilt image fails the patch's CRC-32")]
    Checksum,
    /// The patch rebuilds an image of another size than the manifest's.
    #[error("the patch rebuilds {rebuilt} bytes, the manifest says {expected}")]
    Size {
        /// NEW's size in the patch.
        rebuilt: u32,
        /// The manifest's image size.
        expected: u32,
    },
}

/// Where a patch download lives in the staging slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PatchPlace {
    /// The patch, from the manifest.
    pub(crate) info: PatchInfo,
    /// Size of the image it rebuilds.
    pub(crate) image_size: u32,
    /// Slot offset of the patch's first byte: a sector boundary.
    pub(crate) base: u32,
}

impl PatchPlace {
    /// The patch in the tail of a `capacity`-byte slot of `sector`-byte sectors, the image in
    /// the head; `None` if the image's sectors and the patch's do not fit side by side.
    pub(crate) fn new(
        capacity: u32,
        sector: u32,
        info: PatchInfo,
        image_size: u32,
    ) -> Option<PatchPlace> {
        if sector == 0 {
            return None;
        }
        let room = capacity.checked_sub(info.size)?;
        let base = room / sector * sector;
        let head = u64::from(image_size).div_ceil(u64::from(sector)) * u64::from(sector);
        (head <= u64::from(base)).then_some(PatchPlace {
            info,
            image_size,
            base,
        })
    }

    /// End of the image's sectors (what the rebuild erases).
    #[cfg_attr(not(feature = "delta"), allow(dead_code))]
    fn head_end(&self, sector: u32) -> u32 {
        self.image_size.div_ceil(sector) * sector
    }
}

impl<F: NorFlash, M: WriteMode> AsyncFlashStorage<F, M> {
    /// See `ota_core::storage::StorageOp::Rebuild`: checks the staged patch's digest and the
    /// running image, erases the image's sectors of the slot and rebuilds the image there from
    /// the running one and the patch. Asked again after a reset that cut it short, it does all
    /// of it again and ends the same. Without the `delta` feature:
    /// [`StorageError::PatchUnsupported`].
    pub async fn rebuild(
        &mut self,
        patch: &PatchInfo,
        image_size: u32,
    ) -> Result<(), StorageError<F::Error>> {
        #[cfg(feature = "delta")]
        return self.rebuild_image(patch, image_size).await;
        #[cfg(not(feature = "delta"))]
        {
            let _ = (patch, image_size);
            Err(StorageError::PatchUnsupported)
        }
    }
}
