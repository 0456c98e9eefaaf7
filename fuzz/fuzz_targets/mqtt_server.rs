//! The MQTT server's handling of one publication: an arbitrary topic and payload, as a device
//! (or anyone the ACL lets through) could publish them. Input: topic length, topic, payload.
#![no_main]

#[path = "fixture.rs"]
mod fixture;

use fixture::handler;
use libfuzzer_sys::fuzz_target;
use ota_core::runtime::block::block_on;
use ota_core::wire::{self, Message};
use ota_transport_mqtt::server::answer;
use ota_transport_mqtt::topics::{self, Kind};

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let (topic, payload) = rest.split_at(usize::from(n).min(rest.len()));
    let topic = String::from_utf8_lossy(topic);
    // The fixture's handler decides synchronously: its future is ready when first polled.
    let app = handler();
    let Some(out) = block_on(answer("ota", &topic, payload, &*app)) else {
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
