//! The bytes a block request and a block response cost beyond the payload, and the size of a
//! "nothing for you" check-in over CoAP.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use common::*;
use ota_core::wire::WakeBudget;
use ota_core::Instant;
use ota_test_support::MemStorage;
use ota_transport_coap::server::{Responder, Security, ServerConfig};
use ota_transport_coap::CoapClient;
use ota_transport_coap::{resources, udp};

#[test]
fn block_exchange_overhead() {
    let img = image(256 * 1024, 1);
    let mut responder = Responder::new(
        handler(&img, 1024),
        ServerConfig::default(),
        Security::PlainForLab(None),
    );
    let mut client: CoapClient<_> = CoapClient::new(device_config(300 * 1024, 1), verifier(), 1);
    client.device_mut().wake(Instant(0), WakeBudget::default());
    let mut req = [0u8; 512];
    let mut resp = [0u8; 1400];
    let peer = "127.0.0.1:5683".parse().unwrap();
    let mut storage = MemStorage::new(300 * 1024);

    // Check-in and the offer, through the real responder.
    let n = client.poll_transmit(Instant(0), &mut req).unwrap();
    let checkin_datagram = n;
    let m = responder.respond(0, peer, &req[..n], &mut resp).unwrap();
    client.handle_datagram(Instant(1), &mut resp[..m]).unwrap();

    // Walk the blocks; measure one in the middle of the image (offset 200 KiB).
    let mut sizes = None;
    for _ in 0..256 {
        let n = client.poll_transmit(Instant(2), &mut req).unwrap();
        let Some(m) = responder.respond(0, peer, &req[..n], &mut resp) else {
            // The second copy of a request sent twice (the device starts in pairs).
            continue;
        };
        let d = udp::parse(&resp[..m]).unwrap();
        let payload = d
            .items()
            .filter_map(|i| match i.unwrap() {
                udp::Item::Payload(p) => Some(p.len()),
                _ => None,
            })
            .next()
            .unwrap();
        let _ = client.handle_datagram(Instant(3), &mut resp[..m]);
        client.device_mut().drive_storage(&mut storage).unwrap();
        if payload == 1024
            && sizes.is_none()
            && client.device().stats().payload_bytes_accepted >= 200 * 1024
        {
            sizes = Some((n, m - payload));
        }
    }
    let (request, response_overhead) = sizes.unwrap();
    println!("check-in datagram {checkin_datagram} B; block request {request} B; block response {response_overhead} B + payload");
    assert_eq!(
        request as u32,
        resources::BLOCK_REQUEST_BYTES,
        "4 header + 2 token + Uri-Path ota/i/7 (8) + Block2 (3)"
    );
    assert_eq!(
        response_overhead as u32,
        resources::BLOCK_RESPONSE_OVERHEAD,
        "4 header + 2 token + ETag (5) + Block2 (4) + marker (1)"
    );
}

#[test]
fn nothing_for_you_over_coap() {
    let img = image(1000, 1);
    let mut responder = Responder::new(
        handler(&img, 1024),
        ServerConfig::default(),
        Security::PlainForLab(None),
    );
    let mut config = device_config(4096, 1);
    config.running.sequence = 5; // already runs the release
    let mut client: CoapClient<_> = CoapClient::new(config, verifier(), 1);
    client.device_mut().wake(Instant(0), WakeBudget::default());
    let (mut req, mut resp) = ([0u8; 512], [0u8; 512]);
    let n = client.poll_transmit(Instant(0), &mut req).unwrap();
    let m = responder
        .respond(0, "127.0.0.1:1".parse().unwrap(), &req[..n], &mut resp)
        .unwrap();
    client.handle_datagram(Instant(1), &mut resp[..m]).unwrap();
    let sleep = std::iter::from_fn(|| client.device_mut().poll_event()).last();
    assert!(matches!(
        sleep,
        Some(ota_core::Event::Sleep {
            reason: ota_core::device::SleepReason::UpToDate,
            ..
        })
    ));
    println!("\"nothing for you\" over CoAP: {n} B request + {m} B response, one round trip");
    // The ota-core messages (35 + 9) plus CoAP framing.
    assert!(n <= 35 + 15 && m <= 9 + 8, "{n} + {m}");
}

/// What OSCORE adds: a block request and response of a device with a 2-byte kid (the 300th
/// provisioned) and a 2-byte sequence number, against the same exchange in plain CoAP.
#[test]
fn oscore_block_exchange_overhead() {
    let img = image(64 * 1024, 2);
    let peer = "127.0.0.1:5683".parse().unwrap();
    let mut sizes = Vec::new();
    for secure in [false, true] {
        // A device some way into its life: 2-byte partial IVs.
        let (mut responder, mut client) = pair(&img, 128 * 1024, 1, secure, 300);
        client.device_mut().wake(Instant(0), WakeBudget::default());
        let (mut req, mut resp) = ([0u8; 512], [0u8; 1400]);
        let mut storage = MemStorage::new(128 * 1024);
        let n = client.poll_transmit(Instant(0), &mut req).unwrap();
        let m = responder.respond(0, peer, &req[..n], &mut resp).unwrap();
        client.handle_datagram(Instant(1), &mut resp[..m]).unwrap();
        // The third block request and its response.
        let mut last = (0, 0);
        for _ in 0..3 {
            let (n, m) = loop {
                let n = client.poll_transmit(Instant(2), &mut req).unwrap();
                // A second copy (the device starts in pairs) is dropped.
                if let Some(m) = responder.respond(0, peer, &req[..n], &mut resp) {
                    break (n, m);
                }
            };
            last = (n, m);
            client.handle_datagram(Instant(3), &mut resp[..m]).unwrap();
            client.device_mut().drive_storage(&mut storage).unwrap();
        }
        sizes.push(last);
    }
    let (plain, sealed) = (sizes[0], sizes[1]);
    println!(
        "block request {} B plain, {} B with OSCORE (+{}); 1 KiB block response {} B plain, {} B with OSCORE (+{})",
        plain.0,
        sealed.0,
        sealed.0 - plain.0,
        plain.1,
        sealed.1,
        sealed.1 - plain.1
    );
    assert!(sealed.0 - plain.0 <= 16, "request overhead");
    assert!(sealed.1 - plain.1 <= 11, "response overhead");
}

/// The link's send buffer holds the longest message a device sends with its CoAP framing, in
/// plain CoAP and with OSCORE at a 5-byte sequence number (the longest partial IV).
#[test]
fn the_longest_request_fits_the_links_send_buffer() {
    use ota_core::device::Sent;
    use ota_core::wire::MAX_SENT_LEN;
    use ota_oscore::SecurityContext;
    use ota_transport_coap::link::OVERHEAD;
    use ota_transport_coap::CoapFraming;
    let msg = [0xa5u8; MAX_SENT_LEN];
    let mut lens = Vec::new();
    for secure in [false, true] {
        let mut framing = CoapFraming::new(0xffff_ffff);
        if secure {
            let ctx = SecurityContext::derive(&[3; 16], &[4; 8], &[0x01, 0x2c], &[]).unwrap();
            framing = framing.secure(ctx);
            let late = (1u64 << 40) - 100_000;
            framing.restore_sequence(late);
            framing.sequence_reserved(late + 50_000);
        }
        let mut buf = [0u8; 1024];
        let n = framing
            .frame(Sent::CheckIn, &msg, &mut buf)
            .expect("the check-in is framed");
        lens.push(n);
    }
    println!(
        "longest request: {} B payload, {} B plain, {} B with OSCORE; room {} B",
        MAX_SENT_LEN,
        lens[0],
        lens[1],
        MAX_SENT_LEN + usize::from(OVERHEAD)
    );
    assert!(lens[1] > lens[0], "OSCORE adds bytes");
    assert!(lens
        .iter()
        .all(|&n| n <= MAX_SENT_LEN + usize::from(OVERHEAD)));
}
