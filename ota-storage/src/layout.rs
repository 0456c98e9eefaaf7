//! Where the active slot, the staging (DFU) slot and the journal live in flash.

/// A region of flash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partition {
    /// Start, in bytes from the start of the flash.
    pub offset: u32,
    /// Size in bytes.
    pub size: u32,
}

impl Partition {
    /// `size` bytes from `offset`.
    pub const fn new(offset: u32, size: u32) -> Self {
        Self { offset, size }
    }

    const fn end(&self) -> u32 {
        self.offset + self.size
    }

    const fn overlaps(&self, other: &Partition) -> bool {
        self.offset < other.end() && other.offset < self.end()
    }
}

/// The flash layout.
///
/// ```text
/// | ACTIVE: the running image | DFU: staged image + 1 spare sector | JOURNAL: >= 2 sectors |
/// ```
///
/// The DFU slot needs one sector more than the largest image: the swap shifts the staged image
/// up by one sector so that every step copies from a sector no earlier step has overwritten.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// The slot the application runs from.
    pub active: Partition,
    /// The staging slot.
    pub dfu: Partition,
    /// The journal.
    pub journal: Partition,
}

/// Why a layout is unusable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// A partition does not start and end on a sector boundary.
    #[error("partitions must be aligned to the {0}-byte erase size")]
    NotAligned(u32),
    /// Two partitions overlap.
    #[error("partitions overlap")]
    Overlap,
    /// A partition runs past the end of the flash.
    #[error("partition beyond the end of the flash")]
    OutOfBounds,
    /// The journal has fewer than two sectors.
    #[error("the journal needs at least two sectors")]
    JournalTooSmall,
    /// The DFU slot has fewer than two sectors.
    #[error("the DFU slot needs at least two sectors (one is the swap's spare)")]
    DfuTooSmall,
    /// The flash's read size is not 1, or its write size exceeds 64 bytes.
    #[error("unsupported flash geometry (needs READ_SIZE 1 and WRITE_SIZE <= 64)")]
    Geometry,
}

impl Layout {
    /// Checks the layout against a flash of `capacity` bytes with the given geometry.
    pub fn validate(
        &self,
        capacity: usize,
        read_size: usize,
        write_size: usize,
        erase_size: usize,
    ) -> Result<(), LayoutError> {
        let erase = erase_size as u32;
        if read_size != 1 || write_size == 0 || write_size > 64 || erase_size % write_size != 0 {
            return Err(LayoutError::Geometry);
        }
        let parts = [self.active, self.dfu, self.journal];
        for p in parts {
            if p.offset % erase != 0 || p.size % erase != 0 || p.size == 0 {
                return Err(LayoutError::NotAligned(erase));
            }
            if p.offset
                .checked_add(p.size)
                .is_none_or(|e| e as usize > capacity)
            {
                return Err(LayoutError::OutOfBounds);
            }
        }
        if self.active.overlaps(&self.dfu)
            || self.active.overlaps(&self.journal)
            || self.dfu.overlaps(&self.journal)
        {
            return Err(LayoutError::Overlap);
        }
        if self.journal.size / erase < 2 {
            return Err(LayoutError::JournalTooSmall);
        }
        if self.dfu.size / erase < 2 {
            return Err(LayoutError::DfuTooSmall);
        }
        Ok(())
    }

    /// Largest image: the DFU slot less its spare sector, and no more than the active slot.
    pub fn staging_capacity(&self, erase_size: usize) -> u32 {
        self.dfu
            .size
            .saturating_sub(erase_size as u32)
            .min(self.active.size)
    }
}
