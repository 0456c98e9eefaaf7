//! Shared fixtures: keys, images, manifests, a handler and a lossy in-memory link.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

pub mod exact;

use ota_core::host::{Handler, MemImages, OwnedManifest, SingleRelease};
use ota_core::manifest::Manifest;
use ota_core::wire::{DigestPrefix, ImageId, RunningFirmware, Version};
use ota_core::DeviceConfig;
use ota_test_support::fixture::{self, Release};
pub use ota_test_support::fixture::{signing_key, verifier};

pub const VENDOR: u32 = 0x5e;
pub const CLASS: u32 = 7;
pub const RUNNING_SEQ: u32 = 41;

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
        vendor: VENDOR,
        class: CLASS,
        sequence: RUNNING_SEQ + 1,
        version: Version::new(1, 4, 0),
        min_running: Some(Version::new(1, 0, 0)),
        ..fixture::manifest(image, chunk_size)
    }
}

pub fn signed(m: &Manifest) -> OwnedManifest {
    OwnedManifest::sign(m, &signing_key())
}

/// `m` as the server offers it: image 3, signed with [`signing_key`].
fn release(m: Manifest) -> Release {
    Release {
        image: ImageId(3),
        ..Release::new(m)
    }
}

pub fn handler(image: &[u8], chunk_size: u16) -> Handler<SingleRelease, MemImages> {
    release(manifest_for(image, chunk_size)).handler(image)
}

/// A server whose manifest describes `image` but which serves `served` (a corrupt store).
pub fn handler_serving(
    image: &[u8],
    served: &[u8],
    chunk_size: u16,
) -> Handler<SingleRelease, MemImages> {
    release(manifest_for(image, chunk_size)).handler(served)
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

/// A server offering `new` as `patch` from `old` (serving `served` as the patch's bytes).
pub fn patch_handler(
    old: &[u8],
    new: &[u8],
    patch: &[u8],
    served: &[u8],
    chunk_size: u16,
) -> Handler<SingleRelease, MemImages> {
    release(manifest_for(new, chunk_size))
        .with_patch(old, patch)
        .handler(served)
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
