//! Chunk sizes CoAP can carry: the device refuses a manifest whose chunk size Block2 cannot
//! express (before, it accepted it and then skipped every request it could not frame), and
//! the server does not offer chunks larger than the device said it takes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use common::*;
use ota_core::device::Event;
use ota_core::manifest::ManifestError;
use ota_core::wire::{decode, CheckInReply, DeferReason, Message, WakeBudget};
use ota_core::Instant;
use ota_transport_coap::server::{Responder, Security, ServerConfig};
use ota_transport_coap::CoapClient;

fn first_exchange(chunk: u16, device_max: u16) -> (Vec<Event>, Vec<u8>) {
    let img = image(10_000, 3);
    let mut responder = Responder::new(
        handler(&img, chunk),
        ServerConfig::default(),
        Security::PlainForLab(None),
    );
    let mut config = device_config(64 * 1024, 4);
    config.max_chunk = device_max;
    let mut client: CoapClient<_> = CoapClient::new(config, verifier(), 1);
    client.device_mut().wake(Instant(0), WakeBudget::default());
    let (mut req, mut resp) = ([0u8; 512], [0u8; 1400]);
    let n = client.poll_transmit(Instant(0), &mut req).unwrap();
    let m = responder
        .respond(0, "127.0.0.1:1".parse().unwrap(), &req[..n], &mut resp)
        .unwrap();
    let reply = resp[..m].to_vec();
    let _ = client.handle_datagram(Instant(1), &mut resp[..m]);
    let events = std::iter::from_fn(|| client.device_mut().poll_event()).collect();
    // The reply payload: the last bytes after the payload marker.
    let at = reply.iter().position(|&b| b == 0xFF).unwrap();
    (events, reply[at + 1..].to_vec())
}

#[test]
fn a_chunk_size_block2_cannot_carry_is_refused_with_its_reason() {
    let (events, _) = first_exchange(1000, 1024);
    assert!(
        events.iter().any(|e| matches!(
            e,
            Event::ManifestRejected(ManifestError::BadChunkSize { found: 1000, .. })
        )),
        "{events:?}"
    );
}

#[test]
fn chunks_beyond_what_the_device_takes_are_not_offered() {
    // A device whose link carries 600-byte chunks announces 512 (a power of two for CoAP).
    let (events, reply) = first_exchange(1024, 600);
    match decode(&reply).unwrap() {
        Message::CheckInReply(CheckInReply::Defer { reason, .. }) => {
            assert_eq!(reason, DeferReason::Unsupported)
        }
        other => panic!("offered anyway: {other:?}"),
    }
    assert!(!events
        .iter()
        .any(|e| matches!(e, Event::UpdateOffered { .. })));
}
