//! The CoAP server's request handling: arbitrary datagrams, bare and behind a valid header.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use ota_core::host::{Handler, MemImages, OwnedManifest, SingleRelease};
use ota_core::manifest::{Manifest, MANIFEST_FORMAT};
use ota_core::wire::{Digest, ImageId, Urgency, Version};
use ota_transport_coap::server::{Responder, ServerConfig};
use ota_transport_coap::udp;

fn handler() -> Arc<Handler<SingleRelease, MemImages>> {
    static H: OnceLock<Arc<Handler<SingleRelease, MemImages>>> = OnceLock::new();
    H.get_or_init(|| {
        let images = MemImages::new();
        images.insert(ImageId(7), (0..5000u32).map(|i| i as u8).collect());
        let m = Manifest {
            format: MANIFEST_FORMAT,
            vendor: 1,
            class: 2,
            sequence: 5,
            version: Version::new(1, 0, 0),
            image_size: 5000,
            digest: Digest([0; 32]),
            chunk_size: 512,
            min_running: None,
        };
        let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        let release = SingleRelease {
            image: ImageId(7),
            manifest: OwnedManifest::sign(&m, &key),
            urgency: Urgency::Attempt,
            next_check_in: 60,
        };
        Arc::new(Handler::new(release, images, 1024))
    })
    .clone()
}

fuzz_target!(|data: &[u8]| {
    let mut r = Responder::new(handler(), ServerConfig::default());
    let peer = "127.0.0.1:1".parse().expect("addr");
    let mut out = [0u8; 1400];
    for datagram in [
        data.to_vec(),
        [&[0x42, 0x01, 0x00, 0x01, 0xAA, 0xBB][..], data].concat(),
    ] {
        if let Some(n) = r.respond(0, peer, &datagram, &mut out) {
            let d = udp::parse(&out[..n]).expect("the server's own answers parse");
            for item in d.items() {
                item.expect("the server's own options are well-formed");
            }
        }
    }
});
