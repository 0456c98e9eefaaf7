//! Shared fixtures: keys, images, manifests, a handler and a lossy in-memory link.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use ed25519_dalek::SigningKey;
use ota_core::host::{Handler, MemImages, OwnedManifest, SingleRelease};
use ota_core::manifest::{Ed25519Verifier, Manifest, PatchInfo, MANIFEST_FORMAT};
use ota_core::wire::{Digest, DigestPrefix, ImageId, RunningFirmware, Urgency, Version};
use ota_core::DeviceConfig;
use sha2::{Digest as _, Sha256};

pub const VENDOR: u32 = 0x5e;
pub const CLASS: u32 = 7;
pub const RUNNING_SEQ: u32 = 41;

pub fn signing_key() -> SigningKey {
    SigningKey::from_bytes(&[7u8; 32])
}

pub fn verifier() -> Ed25519Verifier {
    Ed25519Verifier::from_bytes(&signing_key().verifying_key().to_bytes()).unwrap()
}

/// Deterministic pseudo-random image bytes.
pub fn image(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

pub fn manifest_for(image: &[u8], chunk_size: u16) -> Manifest {
    Manifest {
        format: MANIFEST_FORMAT,
        vendor: VENDOR,
        class: CLASS,
        sequence: RUNNING_SEQ + 1,
        version: Version::new(1, 4, 0),
        image_size: image.len() as u32,
        digest: Digest(Sha256::digest(image).into()),
        chunk_size,
        min_running: Some(Version::new(1, 0, 0)),
        patch: None,
    }
}

pub fn signed(m: &Manifest) -> OwnedManifest {
    OwnedManifest::sign(m, &signing_key())
}

pub fn handler(image: &[u8], chunk_size: u16) -> Handler<SingleRelease, MemImages> {
    let images = MemImages::new();
    images.insert(ImageId(3), image.to_vec());
    let release = SingleRelease {
        image: ImageId(3),
        manifest: signed(&manifest_for(image, chunk_size)),
        urgency: Urgency::Attempt,
        next_check_in: 3600,
    };
    Handler::new(release, images, 1024)
}

/// A point release of `old`: a few bytes changed, a few inserted (where `old` is long enough).
pub fn point_release(old: &[u8], seed: u64) -> Vec<u8> {
    let mut new = old.to_vec();
    let at = new.len() / 3;
    let end = (at + 16).min(new.len());
    new[at..end].copy_from_slice(&b"version 1.4.0 ok"[..end - at]);
    let mid = new.len() / 2;
    new.splice(mid..mid, image(64, seed ^ 0x5a5a));
    new
}

/// What a manifest says of `patch`, from `old` to some new image.
pub fn patch_info(old: &[u8], patch: &[u8]) -> PatchInfo {
    PatchInfo {
        size: patch.len() as u32,
        digest: Digest(Sha256::digest(patch).into()),
        source_size: old.len() as u32,
        source_digest: Digest(Sha256::digest(old).into()),
    }
}

/// A server offering `new` as `patch` from `old` (serving `served` as the patch's bytes).
pub fn patch_handler(
    old: &[u8],
    new: &[u8],
    patch: &[u8],
    served: &[u8],
    chunk_size: u16,
) -> Handler<SingleRelease, MemImages> {
    let images = MemImages::new();
    images.insert(ImageId(3), served.to_vec());
    let manifest = manifest_for(new, chunk_size).with_patch(patch_info(old, patch));
    let release = SingleRelease {
        image: ImageId(3),
        manifest: signed(&manifest),
        urgency: Urgency::Attempt,
        next_check_in: 3600,
    };
    Handler::new(release, images, 1024)
}

pub fn config(capacity: u32, window: u8) -> DeviceConfig {
    let mut c = DeviceConfig::new(
        b"dev-0001",
        VENDOR,
        CLASS,
        RunningFirmware {
            version: Version::new(1, 3, 2),
            digest: DigestPrefix([0xab; 8]),
            sequence: RUNNING_SEQ,
        },
    )
    .expect("a valid device id");
    c.staging_capacity = capacity;
    c.window = window;
    c
}
