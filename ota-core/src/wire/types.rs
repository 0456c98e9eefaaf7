//! Small value types shared by several messages.

use core::fmt;

use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Short server-assigned handle for an image, repeated in every chunk request.
///
/// It is a handle, not a security binding: the signed manifest's digest is what the device checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ImageId(pub u32);

/// A semantic version `major.minor.patch`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
pub struct Version {
    /// Incompatible changes.
    pub major: u16,
    /// Compatible additions.
    pub minor: u16,
    /// Fixes.
    pub patch: u16,
}

impl Version {
    /// Builds a version.
    pub const fn new(major: u16, minor: u16, patch: u16) -> Self {
        Self {
            major,
            minor,
            patch,
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// A SHA-256 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// The first eight bytes, as sent in check-ins.
    pub fn prefix(&self) -> DigestPrefix {
        let mut p = [0u8; 8];
        p.copy_from_slice(self.0.split_at(8).0);
        DigestPrefix(p)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// The first eight bytes of a SHA-256 digest.
///
/// Check-ins identify the running image and a download in progress by this prefix instead of the
/// full digest: 64 bits tell a fleet's releases apart, and the 24 bytes saved are a third of a
/// check-in. Integrity never rests on it: the device checks full digests locally.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct DigestPrefix(pub [u8; 8]);

impl fmt::Debug for DigestPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// A 64-byte signature (Ed25519, or ECDSA P-256 as raw `r || s`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature(pub [u8; 64]);

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature(")?;
        for b in self.0.iter().take(8) {
            write!(f, "{b:02x}")?;
        }
        write!(f, "..)")
    }
}

impl Serialize for Signature {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let mut t = serializer.serialize_tuple(64)?;
        for b in &self.0 {
            t.serialize_element(b)?;
        }
        t.end()
    }
}

impl<'de> Deserialize<'de> for Signature {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SigVisitor;
        impl<'de> Visitor<'de> for SigVisitor {
            type Value = Signature;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("64 signature bytes")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Signature, A::Error> {
                let mut sig = [0u8; 64];
                for (i, slot) in sig.iter_mut().enumerate() {
                    *slot = seq
                        .next_element()?
                        .ok_or_else(|| de::Error::invalid_length(i, &self))?;
                }
                Ok(Signature(sig))
            }
        }
        deserializer.deserialize_tuple(64, SigVisitor)
    }
}

/// A CRC-32 sent as four fixed little-endian bytes (a varint would usually take five).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Crc32(pub u32);

impl Serialize for Crc32 {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.to_le_bytes().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Crc32 {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        <[u8; 4]>::deserialize(deserializer).map(|b| Crc32(u32::from_le_bytes(b)))
    }
}

/// Outcome code of an update, aligned with the LwM2M Firmware Update object's "Update Result"
/// resource (`/5/0/5`) for values 0–9; values from 32 up add detail LwM2M has no code for.
///
/// Unknown values decode as they are, so a newer device can report a code an older server does
/// not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ResultCode(pub u8);

impl ResultCode {
    /// LwM2M 0: initial value, nothing to report.
    pub const INITIAL: Self = Self(0);
    /// LwM2M 1: firmware updated successfully.
    pub const SUCCESS: Self = Self(1);
    /// LwM2M 2: not enough flash memory for the new image.
    pub const OUT_OF_STORAGE: Self = Self(2);
    /// LwM2M 3: out of RAM during the download.
    pub const OUT_OF_MEMORY: Self = Self(3);
    /// LwM2M 4: connection lost during the download.
    pub const CONNECTION_LOST: Self = Self(4);
    /// LwM2M 5: integrity check failure (digest or signature).
    pub const INTEGRITY_FAILURE: Self = Self(5);
    /// LwM2M 6: unsupported package type (wrong vendor or device class).
    pub const UNSUPPORTED_PACKAGE: Self = Self(6);
    /// LwM2M 7: invalid URI.
    pub const INVALID_URI: Self = Self(7);
    /// LwM2M 8: firmware update failed.
    pub const UPDATE_FAILED: Self = Self(8);
    /// LwM2M 9: unsupported protocol.
    pub const UNSUPPORTED_PROTOCOL: Self = Self(9);
    /// The manifest's signature did not verify (LwM2M would say 5).
    pub const BAD_SIGNATURE: Self = Self(32);
    /// The manifest's sequence number is not above the running one: anti-rollback (LwM2M 8).
    pub const NOT_NEWER: Self = Self(33);
    /// The manifest's chunk size is beyond what the device can take (LwM2M 3).
    pub const CHUNK_TOO_LARGE: Self = Self(34);
    /// The running version is below the manifest's minimum (LwM2M 6).
    pub const RUNNING_TOO_OLD: Self = Self(35);
    /// The new image failed the application's health check and was rolled back (LwM2M 8).
    pub const HEALTH_CHECK_FAILED: Self = Self(36);
    /// The device reset during trial boot before confirming (LwM2M 8).
    pub const TRIAL_RESET: Self = Self(37);
    /// The download was cancelled by the server.
    pub const CANCELLED: Self = Self(38);
    /// A flash operation failed (LwM2M 8).
    pub const STORAGE_ERROR: Self = Self(39);
    /// The image the device runs is not the one the offered patch applies to (LwM2M 6): the
    /// server should offer the full image.
    pub const PATCH_SOURCE_MISMATCH: Self = Self(40);
    /// The patch was staged but could not rebuild the image: its digest, its format, or the
    /// image it rebuilt (LwM2M 5). The server should offer the full image.
    pub const PATCH_FAILED: Self = Self(41);

    /// The nearest LwM2M Update Result value (0–9) for this code.
    pub const fn lwm2m(self) -> u8 {
        match self.0 {
            0..=9 => self.0,
            32 => 5,
            34 => 3,
            35 | 40 => 6,
            41 => 5,
            38 => 0,
            _ => 8,
        }
    }
}
