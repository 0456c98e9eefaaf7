//! Bad input to the server: truncated datagrams, unknown critical options, absurd block
//! numbers, oversize payloads and random bytes, in a burst during a real download. Each gets an
//! error response or nothing, and the download completes byte for byte.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::net::UdpSocket;
use std::time::Duration;

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType};
use common::*;
use ota_core::wire::WakeBudget;
use ota_test_support::sim::SimRng;

fn request(mid: u16, path: &[&str], extra: &[(u16, Vec<u8>)], payload: Vec<u8>) -> Vec<u8> {
    let mut p = Packet::new();
    p.header.set_type(MessageType::Confirmable);
    p.header.code = MessageClass::Request(RequestType::Get);
    p.header.message_id = mid;
    p.set_token(vec![0xAB, mid as u8]);
    for seg in path {
        p.add_option(CoapOption::UriPath, seg.as_bytes().to_vec());
    }
    for (n, v) in extra {
        p.add_option(CoapOption::Unknown(*n), v.clone());
    }
    p.payload = payload;
    p.to_bytes_unlimited().unwrap()
}

/// The bad datagrams, each with a name.
fn garbage(rng: &mut SimRng, mid: u16) -> Vec<(&'static str, Vec<u8>)> {
    let good = request(mid, &["ota", "i", "7"], &[(23, vec![0x06])], vec![]);
    let mut random = vec![0u8; 1 + rng.below(200) as usize];
    random.iter_mut().for_each(|b| *b = rng.next_u64() as u8);
    vec![
        ("truncated header", good[..3].to_vec()),
        ("truncated token", good[..5].to_vec()),
        ("truncated option", good[..good.len() - 1].to_vec()),
        ("bad version", {
            let mut g = good.clone();
            g[0] = (g[0] & 0x3F) | 0x80;
            g
        }),
        (
            "unknown critical option",
            request(mid, &["ota", "i", "7"], &[(2049, vec![1])], vec![]),
        ),
        (
            "absurd block number",
            request(
                mid,
                &["ota", "i", "7"],
                &[(23, vec![0xFF, 0xFF, 0xF6])],
                vec![],
            ),
        ),
        (
            "reserved block size",
            request(mid, &["ota", "i", "7"], &[(23, vec![0x07])], vec![]),
        ),
        (
            "four-byte block option",
            request(mid, &["ota", "i", "7"], &[(23, vec![1, 2, 3, 4])], vec![]),
        ),
        (
            "oversize payload",
            request(mid, &["ota", "c"], &[], vec![0x42; 1400]),
        ),
        (
            "unknown image",
            request(mid, &["ota", "i", "99999"], &[], vec![]),
        ),
        (
            "bad image id",
            request(mid, &["ota", "i", "07x"], &[], vec![]),
        ),
        (
            "deep path",
            request(mid, &["ota", "i", "7", "x", "y"], &[], vec![]),
        ),
        ("random bytes", random),
    ]
}

#[test]
fn garbage_burst_during_a_download() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let img = image(300 * 1024, 21);
    let server = start_server(handler(&img, 512));
    let addr = server.addr;
    let done = Arc::new(AtomicBool::new(false));
    let stop = done.clone();
    // Floods the server with bad datagrams until the download is over, checking every answer.
    let attacker = std::thread::spawn(move || {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(2)))
            .unwrap();
        sock.connect(addr).unwrap();
        let mut rng = SimRng::new(5);
        let (mut sent, mut answered) = (0u32, 0u32);
        let mut buf = [0u8; 2048];
        let mut round = 0u16;
        while !stop.load(Ordering::Relaxed) && round < 2000 {
            round += 1;
            for (_, dgram) in garbage(&mut rng, 1000 + round) {
                sock.send(&dgram).unwrap();
                sent += 1;
            }
            while let Ok(n) = sock.recv(&mut buf) {
                let p = Packet::from_bytes(&buf[..n]).unwrap();
                let ok = match p.header.code {
                    MessageClass::Response(r) => r.is_error(),
                    MessageClass::Empty => p.header.get_type() == MessageType::Reset,
                    _ => false,
                };
                assert!(ok, "garbage answered with {:?}", p.header.code);
                answered += 1;
            }
        }
        (sent, answered)
    });
    std::thread::sleep(Duration::from_millis(100));
    let budget = WakeBudget {
        bytes: Some(24_000),
        millis: None,
    };
    let (staged, wakes, _) = download(addr, img.len(), 8, budget);
    done.store(true, Ordering::Relaxed);
    let (sent, answered) = attacker.join().unwrap();
    assert!(staged == img, "download corrupted by the burst");
    assert!(wakes > 10);
    assert!(
        answered > 0 && answered < sent,
        "expected error responses and silent drops"
    );
    println!("garbage: {sent} bad datagrams during a {wakes}-wake download, {answered} error responses, the rest dropped");
}
