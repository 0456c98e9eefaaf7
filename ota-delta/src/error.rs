//! What can go wrong while applying a patch.

/// Why a patch cannot be applied to the image the caller has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SourceMismatch {
    /// The patch was made from an image of another size.
    #[error("it was made from a {patch}-byte image, this one has {image} bytes")]
    Size {
        /// OLD's size in the patch header.
        patch: u32,
        /// The size of the image the caller has.
        image: u32,
    },
    /// The patch was made from an image with another SHA-256.
    #[error("it was made from an image with another SHA-256 (first byte differs at {at})")]
    Digest {
        /// Index of the first digest byte that differs.
        at: u8,
    },
}

/// How a patch's bytes break the format (see [`crate::format`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    /// The magic bytes are not `OTAd`.
    #[error("not an ota-delta patch (bad magic)")]
    Magic,
    /// A format version this applier does not read.
    #[error("format version {0} is not supported")]
    Version(u8),
    /// Invalid coding parameters in the header.
    #[error("invalid coding parameters")]
    Params,
    /// NEW's size in the header is beyond [`crate::format::MAX_IMAGE`].
    #[error("the new image's size exceeds 1 GiB")]
    ImageSize,
    /// An Exp-Golomb code longer than 32 bits of value.
    #[error("overlong number")]
    Overlong,
    /// A `COPY` outside OLD.
    #[error("a copy reaches outside the old image")]
    OldRange,
    /// An operation past NEW's size.
    #[error("an operation writes past the new image's size")]
    NewOverrun,
    /// A `MATCH` from before NEW's start.
    #[error("a match refers to before the start of the new image")]
    Distance,
    /// Corrections that do not fit in their `COPY`.
    #[error("corrections do not fit in their copy")]
    Corrections,
    /// Bytes after the last operation.
    #[error("bytes after the end of the patch")]
    Trailing,
    /// Padding bits that are not zero.
    #[error("non-zero padding after the last operation")]
    Padding,
    /// A restored state that contradicts itself.
    #[error("the applier state is inconsistent")]
    Inconsistent,
}

/// Why [`crate::Applier::feed`] or [`crate::Applier::finish`] failed. `E` is the error of the
/// caller's [`crate::OldImage`] and [`crate::NewImage`].
///
/// After an error the applier's state is what it was before the failing chunk, so a transient
/// storage error can be retried by feeding the same chunk again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError<E> {
    /// The patch is for another image; nothing was written.
    #[error("the patch is not for this image: {0}")]
    WrongSource(SourceMismatch),
    /// NEW does not fit in the space the caller gave; nothing was written.
    #[error("the new image ({size} bytes) exceeds the space for it ({capacity} bytes)")]
    TooLarge {
        /// NEW's size in the header.
        size: u32,
        /// The caller's capacity.
        capacity: u32,
    },
    /// The patch breaks the format.
    #[error("malformed patch near byte {at}: {what}")]
    Malformed {
        /// Patch bytes consumed when the fault was found (the reader looks up to 8 bytes ahead).
        at: u32,
        /// The fault.
        what: Malformed,
    },
    /// [`crate::Applier::finish`] before the whole patch was fed.
    #[error("the patch ended early: {consumed} bytes read, {written} of {new_size} bytes rebuilt")]
    Truncated {
        /// Patch bytes consumed.
        consumed: u32,
        /// NEW bytes written.
        written: u32,
        /// NEW's size (0 if the header was not complete).
        new_size: u32,
    },
    /// NEW was rebuilt but its CRC-32 is not the header's.
    #[error("the rebuilt image's CRC-32 is {actual:08x}, the patch says {expected:08x}")]
    Checksum {
        /// From the header.
        expected: u32,
        /// Over what was written.
        actual: u32,
    },
    /// The caller's OLD read failed.
    #[error("reading the old image failed: {0:?}")]
    ReadOld(E),
    /// The caller's NEW read-back failed.
    #[error("reading back the new image failed: {0:?}")]
    ReadNew(E),
    /// The caller's NEW write failed.
    #[error("writing the new image failed: {0:?}")]
    Write(E),
}
