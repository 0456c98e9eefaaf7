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

type Client = ota_transport_coap::CoapClient<ota_core::manifest::Ed25519Verifier>;
type Server =
    ota_transport_coap::server::Responder<ota_core::host::SingleRelease, ota_core::host::MemImages>;

/// A device (window `window`) that checked in with our server at 0 ms and took its offer at
/// 10 ms, and the storage its download writes to.
fn offered(img: &[u8], window: u8, secure: bool) -> (Server, Client, MemStorage) {
    let peer = "127.0.0.1:5683".parse().unwrap();
    let (mut responder, mut client) = pair(img, 32 * 1024, window, secure, 0);
    client.device_mut().wake(Instant(0), WakeBudget::default());
    let mut storage = MemStorage::new(32 * 1024);
    let (mut req, mut resp) = ([0u8; 512], [0u8; 1400]);
    let n = client.poll_transmit(Instant(0), &mut req).unwrap();
    let m = responder.respond(0, peer, &req[..n], &mut resp).unwrap();
    client.handle_datagram(Instant(10), &mut resp[..m]).unwrap();
    client.device_mut().drive_storage(&mut storage).unwrap();
    (responder, client, storage)
}

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
        assert_eq!(client.framing().drops_copies(), None);
        let m = responder.respond(0, peer, &checkin, &mut resp).unwrap();
        client.handle_datagram(Instant(10), &mut resp[..m]).unwrap();
        assert_eq!(
            client.framing().drops_copies(),
            Some(true),
            "secure {secure}"
        );
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
        let (mut responder, mut client, _storage) = offered(&img, 1, secure);
        let stats = responder.stats();
        let (mut req, mut resp) = ([0u8; 512], [0u8; 1400]);
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

/// A copy a busy server let through is refused as a replay, unprotected, often before the
/// first copy's answer: the device keeps the exchange for that answer (an unprotected error
/// could come from anyone).
#[test]
fn an_unprotected_refusal_leaves_the_exchange_to_the_protected_answer() {
    let img = image(8 * 1024, 5);
    let peer = "127.0.0.1:5683".parse().unwrap();
    let (mut responder, mut client, mut storage) = offered(&img, 4, true);
    let (mut req, mut resp) = ([0u8; 512], [0u8; 1400]);
    let n = client.poll_transmit(Instant(10), &mut req).unwrap();
    let get = req[..n].to_vec();
    let m = responder.respond(20, peer, &get, &mut resp).unwrap();
    let mut answer = resp[..m].to_vec();
    // The copy, past the filter's memory: a replay, refused 4.01 without protection.
    let m = responder
        .respond(20 + COPY_MS, peer, &get, &mut resp)
        .unwrap();
    assert_eq!(resp[1], 0x81, "4.01");
    assert!(client.handle_datagram(Instant(30), &mut resp[..m]).is_err());
    let before = client.device().stats().payload_bytes_accepted;
    client.handle_datagram(Instant(31), &mut answer).unwrap();
    client.device_mut().drive_storage(&mut storage).unwrap();
    assert_eq!(
        client.device().stats().payload_bytes_accepted,
        before + 1024,
        "the protected answer still counts"
    );
}

/// The option's bytes in a plain response: delta 65000 from 0 (13 + 256 + 64731) and an empty
/// value.
const DROPS_COPIES_OPTION: [u8; 3] = [0xE0, 0xFC, 0xDB];

/// An offer without the option (another server) ends the pairs; a copy is sent with its first
/// send or not at all.
#[test]
fn an_offer_without_the_option_ends_pairs_and_a_late_copy_is_not_sent() {
    let img = image(16 * 1024, 6);
    let peer = "127.0.0.1:5683".parse().unwrap();
    let (mut responder, mut client) = pair(&img, 32 * 1024, 4, false, 0);
    let mut storage = MemStorage::new(32 * 1024);
    let (mut req, mut resp) = ([0u8; 512], [0u8; 1400]);
    client.device_mut().wake(Instant(0), WakeBudget::default());
    let n = client.poll_transmit(Instant(0), &mut req).unwrap();
    let m = responder.respond(0, peer, &req[..n], &mut resp).unwrap();
    assert!(resp[..m].windows(3).any(|w| w == DROPS_COPIES_OPTION));
    client.handle_datagram(Instant(10), &mut resp[..m]).unwrap();
    client.device_mut().drive_storage(&mut storage).unwrap();
    // The first block request goes twice; its copy polled 50 ms later is not sent.
    let n = client.poll_transmit(Instant(10), &mut req).unwrap();
    let first = req[..n].to_vec();
    let late = client.poll_transmit(Instant(60), &mut req);
    assert!(late.is_none_or(|c| req[..c] != first[..]));
    assert_eq!(client.stats().copies_sent, 0);

    // The next wake's offer comes without the option, as from a server without the filter.
    client
        .device_mut()
        .wake(Instant(5_000), WakeBudget::default());
    let n = loop {
        let n = client.poll_transmit(Instant(5_000), &mut req).unwrap();
        if req[..n].windows(1).any(|w| w == b"c") && req[1] == 2 {
            break n; // the check-in (a POST to /ota/c)
        }
    };
    let m = responder
        .respond(5_000, peer, &req[..n], &mut resp)
        .unwrap();
    let at = resp[..m]
        .windows(3)
        .position(|w| w == DROPS_COPIES_OPTION)
        .expect("our server sends it with an offer");
    let mut stripped = resp[..m].to_vec();
    stripped.drain(at..at + 3);
    client
        .handle_datagram(Instant(5_010), &mut stripped)
        .unwrap();
    assert_eq!(client.framing().drops_copies(), Some(false));
    client.device_mut().drive_storage(&mut storage).unwrap();
    let sent = client.stats().datagrams_sent;
    while client.poll_transmit(Instant(5_010), &mut req).is_some() {}
    assert!(client.stats().datagrams_sent > sent, "requests went out");
    assert_eq!(client.stats().copies_sent, 0, "none of them twice");
}

/// Pairs reordered on the way (the second request's first copy overtakes the first's copy):
/// each copy is still dropped, plain and under OSCORE, without a refusal.
#[test]
fn reordered_copies_are_dropped() {
    let img = image(8 * 1024, 7);
    let peer = "127.0.0.1:5683".parse().unwrap();
    for secure in [false, true] {
        let (mut responder, mut client, _storage) = offered(&img, 4, secure);
        let stats = responder.stats();
        let (mut req, mut resp) = ([0u8; 512], [0u8; 1400]);
        let mut sent = Vec::new();
        while let Some(n) = client.poll_transmit(Instant(10), &mut req) {
            sent.push(req[..n].to_vec());
        }
        assert!(sent.len() >= 4, "secure {secure}: two pairs at least");
        let (a, b) = (&sent[0], &sent[2]);
        assert_eq!(sent[1], *a);
        assert_eq!(sent[3], *b);
        let mut answered = 0;
        for (t, d) in [(20, a), (21, b), (22, a), (23, b)] {
            answered += usize::from(responder.respond(t, peer, d, &mut resp).is_some());
        }
        assert_eq!(answered, 2, "secure {secure}");
        assert_eq!(stats.copies.load(Ordering::Relaxed), 2, "secure {secure}");
        assert_eq!(stats.replays.load(Ordering::Relaxed), 0, "secure {secure}");
    }
}
