//! The CoAP server's request handling: arbitrary datagrams, bare and behind a valid header.
#![no_main]

#[path = "fixture.rs"]
mod fixture;

use fixture::handler;
use libfuzzer_sys::fuzz_target;
use ota_transport_coap::server::{Responder, Security, ServerConfig};
use ota_transport_coap::udp;

fuzz_target!(|data: &[u8]| {
    let mut r = Responder::new(handler(), ServerConfig::default(), Security::PlainForLab(None));
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
