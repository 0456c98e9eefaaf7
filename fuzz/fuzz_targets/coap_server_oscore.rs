//! The CoAP server with OSCORE required: arbitrary datagrams, and a genuine sealed check-in
//! with fuzzer-chosen bytes changed. Answers must parse; a changed request is never answered
//! with a sealed success.
#![no_main]

#[path = "fixture.rs"]
mod fixture;

use std::sync::Arc;

use fixture::handler;
use libfuzzer_sys::fuzz_target;
use ota_oscore::SecurityContext;
use ota_transport_coap::resources::{code, opt};
use ota_transport_coap::server::{DeviceKey, DeviceKeys, Responder, Security, ServerConfig};
use ota_transport_coap::udp;

struct OneDevice;

impl DeviceKeys for OneDevice {
    fn lookup(&self, kid: &[u8]) -> Option<DeviceKey> {
        (kid == b"\x01").then(|| DeviceKey {
            device: "fuzz-1".into(),
            secret: vec![1; 16],
            salt: vec![2; 8],
            device_sender_id: vec![1],
            server_sender_id: vec![],
            floor: None,
        })
    }
    fn advance(&self, _device: &str, _seq: u64) -> bool {
        true
    }
}

/// A sealed POST /ota/c from device `fuzz-1` with an arbitrary payload.
fn sealed(payload: &[u8]) -> Vec<u8> {
    use coap_message::MinimalWritableMessage as _;
    let ctx = SecurityContext::derive(&[1; 16], &[2; 8], b"\x01", b"").expect("context");
    let mut inner = vec![0u8; 600];
    let n = ota_transport_coap::secure::build_inner(&mut inner, |m| {
        m.set_code(code::POST);
        m.add_option(opt::URI_PATH, b"ota")?;
        m.add_option(opt::URI_PATH, b"c")?;
        m.set_payload(payload)
    })
    .expect("inner");
    let (id, len) = ctx.seal_request(5, &mut inner, n).expect("seal");
    let (value, vlen) = ota_transport_coap::secure::option_bytes(&id.option());
    let mut out = vec![0u8; 700];
    let n = udp::build(&mut out, udp::MsgType::Con, 9, &[1], |m| {
        m.set_code(code::POST);
        m.add_option(opt::OSCORE, &value[..vlen])?;
        m.set_payload(&inner[..len])
    })
    .expect("outer");
    out.truncate(n);
    out
}

fuzz_target!(|data: &[u8]| {
    let keys: Arc<dyn DeviceKeys> = Arc::new(OneDevice);
    let mut r = Responder::new(handler(), ServerConfig::default(), Security::Oscore(keys));
    let peer = "127.0.0.1:1".parse().expect("addr");
    let mut out = [0u8; 1400];
    let check = |n: usize, out: &[u8]| {
        let d = udp::parse(&out[..n]).expect("the server's own answers parse");
        for item in d.items() {
            item.expect("the server's own options are well-formed");
        }
        d.code
    };
    if let Some(n) = r.respond(0, peer, data, &mut out) {
        check(n, &out);
    }
    // A genuine request, then the same with bytes changed where the fuzzer says.
    let mut req = sealed(b"\x01\x00");
    let Some((&at, flips)) = data.split_first() else {
        return;
    };
    let mut changed = false;
    for (i, f) in flips.iter().enumerate().take(4) {
        let pos = (usize::from(at) + i * 7) % req.len();
        if *f != 0 && pos >= 4 {
            req[pos] ^= f;
            changed = true;
        }
    }
    let peer2 = "127.0.0.1:2".parse().expect("addr");
    if let Some(n) = r.respond(1, peer2, &req, &mut out) {
        let c = check(n, &out);
        if changed && c == code::CHANGED {
            // Only a change the OSCORE layer does not cover (message id, token) may succeed.
            let d = udp::parse(&out[..n]).expect("parses");
            assert!(
                d.items().any(|i| matches!(i, Ok(udp::Item::Option { number: opt::OSCORE, .. }))),
                "a sealed success must come from an authentic request"
            );
        }
    }
});
