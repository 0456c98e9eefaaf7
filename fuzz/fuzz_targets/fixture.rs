//! The server fixture the transport targets share: a signed release matching the golden
//! check-in (vendor 0x5e, class 7), its image stored as ids 3 (the golden chunk request's) and 7
//! (the CoAP seed's).

use std::sync::{Arc, OnceLock};

use ota_core::host::{Handler, MemImages, OwnedManifest, SingleRelease};
use ota_core::manifest::{Manifest, MANIFEST_FORMAT};
use ota_core::wire::{Digest, ImageId, Urgency, Version};

pub fn handler() -> Arc<Handler<SingleRelease, MemImages>> {
    static H: OnceLock<Arc<Handler<SingleRelease, MemImages>>> = OnceLock::new();
    H.get_or_init(|| {
        let image: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
        let images = MemImages::new();
        images.insert(ImageId(3), image.clone());
        images.insert(ImageId(7), image);
        let m = Manifest {
            format: MANIFEST_FORMAT,
            vendor: 0x5e,
            class: 7,
            sequence: 50,
            version: Version::new(2, 0, 0),
            image_size: 5000,
            digest: Digest([0; 32]),
            chunk_size: 512,
            min_running: None, patch: None,
        };
        let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        let release = SingleRelease {
            image: ImageId(3),
            manifest: OwnedManifest::sign(&m, &key),
            urgency: Urgency::Attempt,
            next_check_in: 60,
        };
        Arc::new(Handler::new(release, images, 1024))
    })
    .clone()
}
