//! Requests a device sends twice back to back on a lossy path: our server says in its check-in
//! response that it drops the second copy, and drops it (plain and under OSCORE, where the
//! copy's sequence number is no replay to refuse), but answers the same bytes from another
//! peer, or after [`COPY_MS`] (a generic client's retransmission), and a resend (a new
//! message id).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::sync::atomic::Ordering;

use common::*;
use ota_core::wire::WakeBudget;
use ota_core::Instant;
use ota_test_support::MemStorage;
use ota_transport_coap::server::COPY_MS;

#[test]
fn a_request_sent_twice_is_answered_once() {
    let img = image(8 * 1024, 3);
    let peer = "127.0.0.1:5683".parse().unwrap();
    let other = "127.0.0.1:5684".parse().unwrap();
    for secure in [false, true] {
        let (mut responder, mut client) = pair(&img, 16 * 1024, 4, secure, 0);
        let stats = responder.stats();
        client.device_mut().wake(Instant(0), WakeBudget::default());
        let mut storage = MemStorage::new(16 * 1024);
        let (mut req, mut resp) = ([0u8; 512], [0u8; 1400]);
        // The first send of a check-in goes once, whatever the path.
        let n = client.poll_transmit(Instant(0), &mut req).unwrap();
        let checkin = req[..n].to_vec();
        assert!(!client.framing().drops_copies());
        let m = responder.respond(0, peer, &checkin, &mut resp).unwrap();
        client.handle_datagram(Instant(10), &mut resp[..m]).unwrap();
        assert!(client.framing().drops_copies(), "secure {secure}");
        client.device_mut().drive_storage(&mut storage).unwrap();
        // A device that remembers nothing of the path starts with its requests in pairs.
        let n = client.poll_transmit(Instant(10), &mut req).unwrap();
        let get = req[..n].to_vec();
        let c = client.poll_transmit(Instant(10), &mut req).unwrap();
        assert_eq!(
            req[..c],
            get[..],
            "secure {secure}: the copy is the same datagram"
        );
        assert_eq!(client.stats().copies_sent, 1);
        assert!(responder.respond(20, peer, &get, &mut resp).is_some());
        assert!(
            responder.respond(25, peer, &get, &mut resp).is_none(),
            "secure {secure}: the copy is dropped"
        );
        assert_eq!(stats.copies.load(Ordering::Relaxed), 1);
        assert_eq!(
            stats.replays.load(Ordering::Relaxed),
            0,
            "no replay refused"
        );
        // The same bytes from another peer are another device's business.
        let from_other = responder.respond(26, other, &get, &mut resp);
        assert_eq!(stats.copies.load(Ordering::Relaxed), 1, "secure {secure}");
        if secure {
            // Under OSCORE the sequence number was seen: refused as a replay, not dropped.
            assert!(from_other.is_some());
            assert_eq!(stats.replays.load(Ordering::Relaxed), 1);
        } else {
            assert!(from_other.is_some(), "answered");
        }
        // After the window it is a retransmission, answered again (plain: served; OSCORE:
        // a replay, refused), never silently dropped.
        assert!(responder
            .respond(20 + COPY_MS, peer, &get, &mut resp)
            .is_some());
        assert_eq!(stats.copies.load(Ordering::Relaxed), 1);
        // A check-in's copy is dropped too, not answered from the deduplication cache (which
        // answers a retransmission after the window).
        assert!(responder
            .respond(5 * COPY_MS, peer, &checkin, &mut resp)
            .is_some());
        let duplicates = stats.duplicates.load(Ordering::Relaxed);
        assert!(responder
            .respond(5 * COPY_MS + 3, peer, &checkin, &mut resp)
            .is_none());
        assert_eq!(stats.copies.load(Ordering::Relaxed), 2);
        assert_eq!(stats.duplicates.load(Ordering::Relaxed), duplicates);
    }
}

#[test]
fn a_resend_goes_under_a_new_message_id_and_is_answered() {
    let img = image(8 * 1024, 4);
    let peer = "127.0.0.1:5683".parse().unwrap();
    for secure in [false, true] {
        let (mut responder, mut client) = pair(&img, 16 * 1024, 1, secure, 0);
        let stats = responder.stats();
        client.device_mut().wake(Instant(0), WakeBudget::default());
        let mut storage = MemStorage::new(16 * 1024);
        let (mut req, mut resp) = ([0u8; 512], [0u8; 1400]);
        let n = client.poll_transmit(Instant(0), &mut req).unwrap();
        let m = responder.respond(0, peer, &req[..n], &mut resp).unwrap();
        client.handle_datagram(Instant(10), &mut resp[..m]).unwrap();
        client.device_mut().drive_storage(&mut storage).unwrap();
        let n = client.poll_transmit(Instant(10), &mut req).unwrap();
        let first = req[..n].to_vec();
        let _copy = client.poll_transmit(Instant(10), &mut req).unwrap();
        // Both lost: the timer sends the request again, under a new message id, at once
        // after the first as far as the server can tell.
        let due = client.device().poll_timeout().unwrap();
        client.device_mut().handle_timeout(due);
        let n = client.poll_transmit(due, &mut req).unwrap();
        assert_ne!(req[2..4], first[2..4], "secure {secure}: a new message id");
        assert!(responder.respond(20, peer, &first, &mut resp).is_some());
        assert!(
            responder.respond(21, peer, &req[..n], &mut resp).is_some(),
            "secure {secure}: the resend is answered"
        );
        assert_eq!(stats.copies.load(Ordering::Relaxed), 0);
    }
}
