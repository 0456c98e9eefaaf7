//! The signed manifest: what an image is, who it is for, and proof of who made it.
//!
//! The manifest body is postcard-encoded [`Manifest`] bytes; the signature covers exactly those
//! bytes, so a verifier never parses anything unauthenticated before checking it.
//! [`SignedManifest::verify`] runs the checks in a fixed order, each with its own error:
//!
//! | # | check | error |
//! |---|---|---|
//! | 1 | signature over the body | [`ManifestError::BadSignature`] |
//! | 2 | body decodes, format version known | [`ManifestError::Malformed`], [`ManifestError::UnsupportedFormat`] |
//! | 3 | vendor and class match the device | [`ManifestError::WrongVendor`], [`ManifestError::WrongClass`] |
//! | 4 | sequence strictly above the running one | [`ManifestError::NotNewer`] |
//! | 5 | image fits the staging slot | [`ManifestError::TooLarge`] |
//! | 6 | chunk size within device limits | [`ManifestError::BadChunkSize`] |
//! | 7 | running version at least the minimum | [`ManifestError::RunningTooOld`] |
//!
//! Whether a patch fits beside the image it rebuilds is left to the storage at `Begin`: only it
//! knows where the patch goes, and a patch that does not fit must fail as a patch (the server
//! then offers the whole image), not as an image too large for the device.
//!
//! A manifest of format [`MANIFEST_FORMAT_PATCH`] describes the same image delivered as a patch
//! (`ota-delta`) against the image the device runs: its [`PatchInfo`] follows the manifest's
//! fields in the signed body. A device that predates patches refuses it as an unsupported
//! format before it fetches a byte, and the server falls back to the full image.

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::wire::{Digest, ResultCode, Signature, Version};

/// Manifest format of a full image.
pub const MANIFEST_FORMAT: u8 = 1;

/// Manifest format of an image delivered as a patch: [`Manifest::patch`] is set.
pub const MANIFEST_FORMAT_PATCH: u8 = 2;

/// Longest manifest body accepted, in bytes (a full body is about 60, one with a patch about
/// 135). It keeps a stored manifest within one journal record of `ota-storage`.
pub const MAX_MANIFEST_BODY: usize = 140;

/// The signed statement about one image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`MANIFEST_FORMAT`].
    pub format: u8,
    /// Vendor id; must match the device's.
    pub vendor: u32,
    /// Device class id; must match the device's.
    pub class: u32,
    /// Monotonic anti-rollback counter; must exceed the running image's.
    pub sequence: u32,
    /// Semantic version, for people and for `min_running`.
    pub version: Version,
    /// Image size in bytes.
    pub image_size: u32,
    /// SHA-256 of the whole image.
    pub digest: Digest,
    /// Chunk size the image is fetched in.
    pub chunk_size: u16,
    /// The device must run at least this version to take the image (a migration step, say).
    pub min_running: Option<Version>,
    /// Set in a manifest of format [`MANIFEST_FORMAT_PATCH`]: what the device fetches is a patch
    /// that rebuilds this image from the one it runs. Encoded after the other fields.
    #[serde(skip)]
    pub patch: Option<PatchInfo>,
}

/// The patch a [`MANIFEST_FORMAT_PATCH`] manifest delivers its image as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatchInfo {
    /// Bytes of the patch: what the device fetches, in `chunk_size` chunks.
    pub size: u32,
    /// SHA-256 of the patch, checked once it is staged whole and before it is applied.
    pub digest: Digest,
    /// Size of the image the patch applies to.
    pub source_size: u32,
    /// SHA-256 of the image the patch applies to: the device checks its active image against
    /// it before it fetches anything.
    pub source_digest: Digest,
}

/// A manifest body with its signature, as carried on the wire (borrowed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedManifest<'a> {
    /// Postcard-encoded [`Manifest`].
    pub body: &'a [u8],
    /// Signature over `body`.
    pub signature: Signature,
}

/// Checks a 64-byte signature over a message; implement it for hardware crypto or ECDSA P-256.
pub trait Verifier {
    /// `Ok(())` if `signature` is valid for `message` under the verifier's key.
    fn verify(&self, message: &[u8], signature: &Signature) -> Result<(), SignatureError>;
}

/// A signature did not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("signature does not verify")]
pub struct SignatureError;

/// What the device is, for the manifest checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceProfile {
    /// Vendor id.
    pub vendor: u32,
    /// Device class id.
    pub class: u32,
    /// Running image's sequence number.
    pub running_sequence: u32,
    /// Running image's version.
    pub running_version: Version,
    /// Staging slot size in bytes.
    pub staging_capacity: u32,
    /// Largest chunk the device accepts.
    pub max_chunk: u16,
    /// Its link needs chunk sizes that are powers of two (CoAP Block2).
    pub pow2_chunks: bool,
}

/// Why a manifest was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// The body is longer than [`MAX_MANIFEST_BODY`].
    #[error("manifest body of {0} bytes exceeds {MAX_MANIFEST_BODY}")]
    TooLong(usize),
    /// The signature does not verify under the device's key.
    #[error("manifest signature does not verify")]
    BadSignature,
    /// The signed body does not decode.
    #[error("signed manifest body is malformed: {0}")]
    Malformed(postcard::Error),
    /// The body's format version is unknown.
    #[error("manifest format {0} is not supported (expected {MANIFEST_FORMAT} or {MANIFEST_FORMAT_PATCH})")]
    UnsupportedFormat(u8),
    /// The vendor id is not the device's.
    #[error("manifest is for vendor {found}, device is vendor {expected}")]
    WrongVendor {
        /// Device's vendor.
        expected: u32,
        /// Manifest's vendor.
        found: u32,
    },
    /// The class id is not the device's.
    #[error("manifest is for class {found}, device is class {expected}")]
    WrongClass {
        /// Device's class.
        expected: u32,
        /// Manifest's class.
        found: u32,
    },
    /// The sequence number does not exceed the running one (anti-rollback).
    #[error("manifest sequence {found} is not above the running {running}")]
    NotNewer {
        /// Running sequence.
        running: u32,
        /// Manifest's sequence.
        found: u32,
    },
    /// The image does not fit the staging slot.
    #[error("image of {size} bytes does not fit the {capacity}-byte staging slot")]
    TooLarge {
        /// Image size.
        size: u32,
        /// Slot size.
        capacity: u32,
    },
    /// The chunk size is zero, beyond the device's limit, or not a power of two on a link that
    /// needs one.
    #[error("chunk size {found} is outside 1..={max} or not a size the link can carry")]
    BadChunkSize {
        /// Device's maximum.
        max: u16,
        /// Manifest's chunk size.
        found: u16,
    },
    /// The device runs a version below the manifest's minimum.
    #[error("running version {running} is below the required {required}")]
    RunningTooOld {
        /// Running version.
        running: Version,
        /// Manifest's minimum.
        required: Version,
    },
}

impl ManifestError {
    /// The result code a device reports for this refusal.
    pub fn result_code(&self) -> ResultCode {
        match self {
            ManifestError::BadSignature => ResultCode::BAD_SIGNATURE,
            ManifestError::TooLong(_)
            | ManifestError::Malformed(_)
            | ManifestError::UnsupportedFormat(_) => ResultCode::UNSUPPORTED_PACKAGE,
            ManifestError::WrongVendor { .. } | ManifestError::WrongClass { .. } => {
                ResultCode::UNSUPPORTED_PACKAGE
            }
            ManifestError::NotNewer { .. } => ResultCode::NOT_NEWER,
            ManifestError::TooLarge { .. } => ResultCode::OUT_OF_STORAGE,
            ManifestError::BadChunkSize { .. } => ResultCode::CHUNK_TOO_LARGE,
            ManifestError::RunningTooOld { .. } => ResultCode::RUNNING_TOO_OLD,
        }
    }
}

impl Manifest {
    /// Postcard-encodes the body into `buf` (for signing): the fields, then the patch if there
    /// is one (the format written is then [`MANIFEST_FORMAT_PATCH`]). `None` if it does not fit.
    pub fn encode<'b>(&self, buf: &'b mut [u8]) -> Option<&'b mut [u8]> {
        let body = Manifest {
            format: if self.patch.is_some() {
                MANIFEST_FORMAT_PATCH
            } else {
                self.format
            },
            ..*self
        };
        let n = postcard::to_slice(&body, buf).ok()?.len();
        let m = match &self.patch {
            Some(p) => postcard::to_slice(p, buf.get_mut(n..)?).ok()?.len(),
            None => 0,
        };
        buf.get_mut(..n + m)
    }

    /// The same image delivered as `patch`.
    pub fn with_patch(self, patch: PatchInfo) -> Self {
        Self {
            format: MANIFEST_FORMAT_PATCH,
            patch: Some(patch),
            ..self
        }
    }

    /// Bytes the device fetches: the patch's if there is one, else the image's.
    pub fn transfer_size(&self) -> u32 {
        self.patch.map_or(self.image_size, |p| p.size)
    }

    /// Decodes a body: the fields, then the patch of a patch manifest.
    fn decode(body: &[u8]) -> Result<Self, ManifestError> {
        let (mut m, rest): (Manifest, _) =
            postcard::take_from_bytes(body).map_err(ManifestError::Malformed)?;
        if m.format == MANIFEST_FORMAT_PATCH {
            let (p, _) = postcard::take_from_bytes(rest).map_err(ManifestError::Malformed)?;
            m.patch = Some(p);
        }
        Ok(m)
    }
}

impl<'a> SignedManifest<'a> {
    /// SHA-256 of the body: the manifest's identity in resume state and resume hints.
    pub fn digest(&self) -> Digest {
        Digest(Sha256::digest(self.body).into())
    }

    /// Decodes the body without checking anything: only for a manifest that was verified before
    /// it was stored (the installer reading its own journal, say).
    pub fn decode_verified(&self) -> Result<Manifest, ManifestError> {
        Manifest::decode(self.body)
    }

    /// Runs every check in the documented order and returns the decoded manifest.
    pub fn verify<V: Verifier + ?Sized>(
        &self,
        verifier: &V,
        device: &DeviceProfile,
    ) -> Result<Manifest, ManifestError> {
        if self.body.len() > MAX_MANIFEST_BODY {
            return Err(ManifestError::TooLong(self.body.len()));
        }
        verifier
            .verify(self.body, &self.signature)
            .map_err(|_| ManifestError::BadSignature)?;
        let m = Manifest::decode(self.body)?;
        if m.format != MANIFEST_FORMAT && m.format != MANIFEST_FORMAT_PATCH {
            return Err(ManifestError::UnsupportedFormat(m.format));
        }
        if m.vendor != device.vendor {
            return Err(ManifestError::WrongVendor {
                expected: device.vendor,
                found: m.vendor,
            });
        }
        if m.class != device.class {
            return Err(ManifestError::WrongClass {
                expected: device.class,
                found: m.class,
            });
        }
        if m.sequence <= device.running_sequence {
            return Err(ManifestError::NotNewer {
                running: device.running_sequence,
                found: m.sequence,
            });
        }
        if m.image_size > device.staging_capacity {
            return Err(ManifestError::TooLarge {
                size: m.image_size,
                capacity: device.staging_capacity,
            });
        }
        if m.chunk_size == 0
            || m.chunk_size > device.max_chunk
            || (device.pow2_chunks && !m.chunk_size.is_power_of_two())
        {
            return Err(ManifestError::BadChunkSize {
                max: device.max_chunk,
                found: m.chunk_size,
            });
        }
        if let Some(required) = m.min_running {
            if device.running_version < required {
                return Err(ManifestError::RunningTooOld {
                    running: device.running_version,
                    required,
                });
            }
        }
        // Whether a patch fits beside its image is the storage's to say at `Begin` (only it
        // knows where the patch goes): a patch that does not fit fails as a patch, and the
        // server offers the whole image.
        Ok(m)
    }
}

/// An owned copy of a signed manifest that needs no allocator, for the device to keep while a
/// download is in progress and for storage to persist.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct StoredManifest {
    body: [u8; MAX_MANIFEST_BODY],
    len: u8,
    /// Signature over the body.
    pub signature: Signature,
}

impl core::fmt::Debug for StoredManifest {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("StoredManifest")
            .field("body_len", &self.len)
            .field("signature", &self.signature)
            .finish()
    }
}

impl StoredManifest {
    /// Copies a signed manifest; `None` if its body exceeds [`MAX_MANIFEST_BODY`].
    pub fn from_signed(m: &SignedManifest<'_>) -> Option<Self> {
        let mut body = [0u8; MAX_MANIFEST_BODY];
        body.get_mut(..m.body.len())?.copy_from_slice(m.body);
        Some(Self {
            body,
            len: u8::try_from(m.body.len()).ok()?,
            signature: m.signature,
        })
    }

    /// Borrows it as a [`SignedManifest`].
    pub fn as_signed(&self) -> SignedManifest<'_> {
        SignedManifest {
            body: self.body(),
            signature: self.signature,
        }
    }

    /// The signed body bytes.
    pub fn body(&self) -> &[u8] {
        self.body.get(..usize::from(self.len)).unwrap_or(&[])
    }

    /// Serialised form for storage: `len (1) | body | signature (64)`; returns bytes written.
    pub fn to_bytes(&self, out: &mut [u8]) -> Option<usize> {
        let body = self.body();
        let total = 1 + body.len() + 64;
        let out = out.get_mut(..total)?;
        let (len, rest) = out.split_first_mut()?;
        *len = self.len;
        let (b, sig) = rest.split_at_mut(body.len());
        b.copy_from_slice(body);
        sig.copy_from_slice(&self.signature.0);
        Some(total)
    }

    /// Parses the form written by [`StoredManifest::to_bytes`]; `None` if it is malformed.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let (&len, rest) = bytes.split_first()?;
        let len = usize::from(len);
        if len > MAX_MANIFEST_BODY {
            return None;
        }
        let body = rest.get(..len)?;
        let sig: [u8; 64] = rest.get(len..len + 64)?.try_into().ok()?;
        Self::from_signed(&SignedManifest {
            body,
            signature: Signature(sig),
        })
    }

    /// Longest form of [`StoredManifest::to_bytes`].
    pub const MAX_BYTES: usize = 1 + MAX_MANIFEST_BODY + 64;
}

/// Ed25519 verification with `ed25519-dalek` (strict: rejects malleable and small-order forms).
///
/// It keeps the 32-byte compressed key, checked once by [`Ed25519Verifier::from_bytes`], and
/// decompresses it for each verification (one per offered manifest): a decompressed key would
/// take 160 bytes more of every device's RAM for the whole wake.
#[cfg(feature = "ed25519")]
#[derive(Debug, Clone)]
pub struct Ed25519Verifier {
    key: [u8; 32],
}

#[cfg(feature = "ed25519")]
impl Ed25519Verifier {
    /// From the 32-byte public key; `None` if it is not a valid curve point.
    pub fn from_bytes(public_key: &[u8; 32]) -> Option<Self> {
        ed25519_dalek::VerifyingKey::from_bytes(public_key)
            .ok()
            .map(|_| Self { key: *public_key })
    }
}

#[cfg(feature = "ed25519")]
impl Verifier for Ed25519Verifier {
    fn verify(&self, message: &[u8], signature: &Signature) -> Result<(), SignatureError> {
        let sig = ed25519_dalek::Signature::from_bytes(&signature.0);
        // Checked in `from_bytes`, so this cannot fail; if it did, nothing verifies.
        let key = ed25519_dalek::VerifyingKey::from_bytes(&self.key).map_err(|_| SignatureError)?;
        key.verify_strict(message, &sig).map_err(|_| SignatureError)
    }
}
