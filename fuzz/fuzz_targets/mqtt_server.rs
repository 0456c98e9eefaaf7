//! The MQTT server's handling of one publication: an arbitrary topic and payload, as a device
//! (or anyone the ACL lets through) could publish them. Input: topic length, topic, payload.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use ota_core::host::{Handler, MemImages, OwnedManifest, SingleRelease};
use ota_core::manifest::{Manifest, MANIFEST_FORMAT};
use ota_core::wire::{self, Digest, ImageId, Message, Urgency, Version};
use ota_transport_mqtt::server::answer;
use ota_transport_mqtt::topics::{self, Kind};

fn handler() -> Arc<Handler<SingleRelease, MemImages>> {
    static H: OnceLock<Arc<Handler<SingleRelease, MemImages>>> = OnceLock::new();
    H.get_or_init(|| {
        let images = MemImages::new();
        images.insert(ImageId(3), (0..5000u32).map(|i| i as u8).collect());
        let m = Manifest {
            format: MANIFEST_FORMAT,
            vendor: 0x5e,
            class: 7,
            sequence: 50,
            version: Version::new(2, 0, 0),
            image_size: 5000,
            digest: Digest([0; 32]),
            chunk_size: 512,
            min_running: None,
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

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let (topic, payload) = rest.split_at(usize::from(n).min(rest.len()));
    let topic = String::from_utf8_lossy(topic);
    let Some(out) = answer("ota", &topic, payload, &handler()) else {
        return;
    };
    // Answers go only to the requesting device's own down and desired-state topics, and
    // each is a message a device can decode.
    let (id, _) = topics::parse("ota", &topic).expect("answered, so the topic parsed");
    for (to, retained, bytes) in out {
        let (to_id, kind) = topics::parse("ota", &to).expect("our own topic parses");
        assert_eq!(to_id, id);
        assert!(matches!((kind, retained), (Kind::Down, false) | (Kind::Desired, true)));
        assert!(matches!(
            wire::decode(&bytes),
            Ok(Message::CheckInReply(_) | Message::Chunk(_))
        ));
    }
});
