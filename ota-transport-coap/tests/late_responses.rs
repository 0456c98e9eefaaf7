//! A response that comes after its request was sent again still counts: the chunk is taken,
//! or, if another send's response brought it first, the state machine is told that send is
//! off the link. Every resend goes under a new message id (only a copy sent back to back repeats
//! one, and the server drops it): a plain response is matched by its token; OSCORE seals each
//! send anew under a new sequence number too, so the response to the send before the latest
//! must be matched and opened with that send's.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use common::*;
use ota_core::wire::WakeBudget;
use ota_core::Instant;
use ota_test_support::MemStorage;

#[test]
fn the_response_to_the_send_before_a_resend_is_taken() {
    let img = image(8 * 1024, 3);
    let peer = "127.0.0.1:5683".parse().unwrap();
    for secure in [false, true] {
        // One request in flight, so the resend is the only thing to send.
        let (mut responder, mut client) = pair(&img, 16 * 1024, 1, secure, 0);
        client.device_mut().wake(Instant(0), WakeBudget::default());
        let mut storage = MemStorage::new(16 * 1024);
        let (mut req, mut resp) = ([0u8; 512], [0u8; 1400]);
        let n = client.poll_transmit(Instant(0), &mut req).unwrap();
        let m = responder.respond(0, peer, &req[..n], &mut resp).unwrap();
        client
            .handle_datagram(Instant(100), &mut resp[..m])
            .unwrap();
        client.device_mut().drive_storage(&mut storage).unwrap();
        // The first block request; its response is held back.
        let n = client.poll_transmit(Instant(100), &mut req).unwrap();
        let sent = req[..n].to_vec();
        let first = responder.respond(0, peer, &sent, &mut resp).unwrap();
        let mut late = resp[..first].to_vec();
        // A device with no memory of the path sends its requests twice: the copy is the same
        // datagram, which the server drops.
        let c = client.poll_transmit(Instant(100), &mut req).unwrap();
        assert_eq!(req[..c], sent[..], "secure {secure}");
        assert!(responder.respond(5, peer, &req[..c], &mut resp).is_none());
        // Its timer passes: the same block is asked for again.
        let due = client.device().poll_timeout().unwrap();
        client.device_mut().handle_timeout(due);
        let n = client.poll_transmit(due, &mut req).unwrap();
        let m = responder.respond(0, peer, &req[..n], &mut resp).unwrap();
        let mut second = resp[..m].to_vec();
        // The first send's response arrives after all: the chunk is taken from it.
        let before = client.device().stats().payload_bytes_accepted;
        client
            .handle_datagram(Instant(due.0 + 50), &mut late)
            .unwrap_or_else(|e| panic!("secure {secure}: the late response: {e}"));
        client.device_mut().drive_storage(&mut storage).unwrap();
        assert_eq!(
            client.device().stats().payload_bytes_accepted,
            before + 1024,
            "secure {secure}"
        );
        // The resend's response is a duplicate the state machine sees.
        let dups = client.device().stats().duplicate_chunks;
        let _ = client.handle_datagram(Instant(due.0 + 100), &mut second);
        assert_eq!(
            client.device().stats().duplicate_chunks,
            dups + 1,
            "secure {secure}"
        );
    }
}
