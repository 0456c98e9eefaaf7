//! A signed release and a server offering it: the fixture the workspace's tests, examples and
//! benchmarks share.
//!
//! [`Release::of`] is a whole-image release of vendor 1, class 2, sequence 2, version 1.1.0,
//! signed with [`signing_key`], offered as image 1 with [`Urgency::Attempt`] and a next check-in
//! in an hour. A test that needs other values sets them with struct update syntax:
//!
//! ```
//! use ota_core::manifest::Manifest;
//! use ota_core::wire::ImageId;
//! use ota_test_support::fixture::{self, Release};
//!
//! let image = fixture::bytes(20_000, 1);
//! let release = Release {
//!     image: ImageId(5),
//!     next_check_in: 60,
//!     ..Release::new(Manifest { sequence: 10, ..fixture::manifest(&image, 1024) })
//! };
//! let server = release.handler(&image);
//! let verifier = release.verifier();
//! # let _ = (server, verifier);
//! ```

use ed25519_dalek::SigningKey;
use ota_core::host::{DesiredState, Handler, MemImages, OwnedManifest, SingleRelease};
use ota_core::manifest::{Ed25519Verifier, Manifest, PatchInfo, MANIFEST_FORMAT};
use ota_core::wire::{Digest, ImageId, Urgency, Version};
use sha2::{Digest as _, Sha256};

use crate::sim::SimRng;

/// The seed of [`signing_key`].
pub const KEY_SEED: [u8; 32] = [7; 32];

/// The key releases are signed with unless a test picks another.
pub fn signing_key() -> SigningKey {
    SigningKey::from_bytes(&KEY_SEED)
}

/// A verifier of [`signing_key`]'s signatures.
pub fn verifier() -> Ed25519Verifier {
    verifier_of(&signing_key())
}

/// A verifier of `key`'s signatures.
pub fn verifier_of(key: &SigningKey) -> Ed25519Verifier {
    match Ed25519Verifier::from_bytes(&key.verifying_key().to_bytes()) {
        Some(v) => v,
        None => unreachable!("a signing key's own public key is a valid curve point"),
    }
}

/// `len` pseudo-random bytes from `seed` (a [`SimRng`]): an image as incompressible as code.
pub fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut r = SimRng::new(seed);
    (0..len).map(|_| r.next_u64() as u8).collect()
}

/// The manifest of `image`, sent whole in chunks of `chunk_size` bytes: vendor 1, class 2,
/// sequence 2, version 1.1.0, no minimum running version.
pub fn manifest(image: &[u8], chunk_size: u16) -> Manifest {
    Manifest {
        format: MANIFEST_FORMAT,
        vendor: 1,
        class: 2,
        sequence: 2,
        version: Version::new(1, 1, 0),
        image_size: u32::try_from(image.len()).unwrap_or(u32::MAX),
        digest: Digest(Sha256::digest(image).into()),
        chunk_size,
        min_running: None,
        patch: None,
    }
}

/// What a manifest says of `patch`, a patch from `old`.
pub fn patch_info(old: &[u8], patch: &[u8]) -> PatchInfo {
    PatchInfo {
        size: u32::try_from(patch.len()).unwrap_or(u32::MAX),
        digest: Digest(Sha256::digest(patch).into()),
        source_size: u32::try_from(old.len()).unwrap_or(u32::MAX),
        source_digest: Digest(Sha256::digest(old).into()),
    }
}

/// A handler offering what `desired` says, with `served` stored as image `id`, in chunks of at
/// most 1 KiB.
pub fn serve<D: DesiredState>(desired: D, id: ImageId, served: &[u8]) -> Handler<D, MemImages> {
    let images = MemImages::new();
    images.insert(id, served.to_vec());
    Handler::new(desired, images, 1024)
}

/// One signed release as a server offers it.
#[derive(Debug, Clone)]
pub struct Release {
    /// What is signed.
    pub manifest: Manifest,
    /// Who signs it ([`signing_key`] unless changed).
    pub key: SigningKey,
    /// The id of its image on the server (1 unless changed).
    pub image: ImageId,
    /// How urgent the offer is ([`Urgency::Attempt`] unless changed).
    pub urgency: Urgency,
    /// Seconds to the next check-in the offer asks for (3600 unless changed).
    pub next_check_in: u32,
}

impl Release {
    /// `manifest`, signed with [`signing_key`], offered as image 1.
    pub fn new(manifest: Manifest) -> Self {
        Self {
            manifest,
            key: signing_key(),
            image: ImageId(1),
            urgency: Urgency::Attempt,
            next_check_in: 3600,
        }
    }

    /// The release of `image` whole, in chunks of `chunk_size` bytes ([`manifest`]).
    pub fn of(image: &[u8], chunk_size: u16) -> Self {
        Self::new(manifest(image, chunk_size))
    }

    /// The same release fetched as `patch` from `old` ([`patch_info`]).
    pub fn with_patch(mut self, old: &[u8], patch: &[u8]) -> Self {
        self.manifest = self.manifest.with_patch(patch_info(old, patch));
        self
    }

    /// The manifest, signed.
    pub fn signed(&self) -> OwnedManifest {
        OwnedManifest::sign(&self.manifest, &self.key)
    }

    /// The release as the host's single desired state.
    pub fn single(&self) -> SingleRelease {
        SingleRelease {
            image: self.image,
            manifest: self.signed(),
            urgency: self.urgency,
            next_check_in: self.next_check_in,
        }
    }

    /// A handler offering this release, with `served` (the image, or the patch) as its bytes.
    pub fn handler(&self, served: &[u8]) -> Handler<SingleRelease, MemImages> {
        serve(self.single(), self.image, served)
    }

    /// The public key a device verifies the release with.
    pub fn public_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    /// A verifier of the release's signature.
    pub fn verifier(&self) -> Ed25519Verifier {
        verifier_of(&self.key)
    }
}
