//! Property tests: our message layer against coap-lite (an independent CoAP implementation),
//! the Block option, image path segments, and arbitrary bytes into the parsers and the server.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use coap_lite::{block_handler::BlockValue, CoapOption, MessageClass, MessageType, Packet};
use coap_message::MinimalWritableMessage as _;
use common::*;
use ota_core::wire::ImageId;
use ota_transport_coap::block::Block;
use ota_transport_coap::resources::{image_segment, parse_image_segment};
use ota_transport_coap::server::{Responder, Security, ServerConfig};
use ota_transport_coap::udp::{self, Item, MsgType};
use proptest::prelude::*;

fn msg_type() -> impl Strategy<Value = (MsgType, MessageType)> {
    prop_oneof![
        Just((MsgType::Con, MessageType::Confirmable)),
        Just((MsgType::Non, MessageType::NonConfirmable)),
        Just((MsgType::Ack, MessageType::Acknowledgement)),
        Just((MsgType::Rst, MessageType::Reset)),
    ]
}

/// Sorted options (number, value), as a message carries them.
fn options() -> impl Strategy<Value = Vec<(u16, Vec<u8>)>> {
    prop::collection::vec(
        (1u16..2000, prop::collection::vec(any::<u8>(), 0..40)),
        0..6,
    )
    .prop_map(|mut v| {
        v.sort_by_key(|(n, _)| *n);
        v
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn our_datagrams_parse_in_coap_lite(
        (ours, theirs) in msg_type(),
        code in 1u8..=255,
        mid in any::<u16>(),
        token in prop::collection::vec(any::<u8>(), 0..=8),
        opts in options(),
        payload in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        let mut buf = [0u8; 2048];
        let n = udp::build(&mut buf, ours, mid, &token, |m| {
            m.set_code(code);
            for (num, v) in &opts {
                m.add_option(*num, v)?;
            }
            if !payload.is_empty() {
                m.set_payload(&payload)?;
            }
            Ok(())
        }).unwrap();
        let p = Packet::from_bytes(&buf[..n]).unwrap();
        prop_assert_eq!(p.header.get_type(), theirs);
        prop_assert_eq!(p.header.message_id, mid);
        prop_assert_eq!(p.get_token(), &token[..]);
        prop_assert_eq!(&p.payload, &payload);
        let mut got: Vec<(u16, Vec<u8>)> = Vec::new();
        for (num, values) in p.options() {
            for v in values {
                got.push((*num, v.clone()));
            }
        }
        got.sort_by_key(|(n, _)| *n);
        prop_assert_eq!(got, opts.clone());
        let _ = code;
    }

    #[test]
    fn coap_lite_datagrams_parse_here(
        (_, theirs) in msg_type(),
        mid in any::<u16>(),
        token in prop::collection::vec(any::<u8>(), 0..=8),
        opts in options(),
        payload in prop::collection::vec(any::<u8>(), 1..300),
    ) {
        let mut p = Packet::new();
        p.header.set_type(theirs);
        p.header.code = MessageClass::Request(coap_lite::RequestType::Post);
        p.header.message_id = mid;
        p.set_token(token.clone());
        for (n, v) in &opts {
            p.add_option(CoapOption::from(*n), v.clone());
        }
        p.payload = payload.clone();
        let bytes = p.to_bytes_unlimited().unwrap();
        let d = udp::parse(&bytes).unwrap();
        prop_assert_eq!(d.mid, mid);
        prop_assert_eq!(d.token, &token[..]);
        let mut got = Vec::new();
        let mut got_payload = Vec::new();
        for item in d.items() {
            match item.unwrap() {
                Item::Option { number, value } => got.push((number, value.to_vec())),
                Item::Payload(pl) => got_payload = pl.to_vec(),
            }
        }
        prop_assert_eq!(got, opts);
        prop_assert_eq!(got_payload, payload);
    }

    /// coap-lite packs the Block value into a u16, so it can only be compared below block 4096
    /// (its encoding of larger numbers loses the top bits; ours uses the option's full 20 bits).
    #[test]
    fn block_values_agree_with_coap_lite(num in 0u32..4096, more in any::<bool>(), szx in 0u8..7) {
        let b = Block { num, more, szx };
        let mut v = [0u8; 3];
        let n = b.encode(&mut v);
        prop_assert_eq!(Block::decode(&v[..n]), Ok(b));
        let theirs = BlockValue::new(num as usize, more, 16 << szx).unwrap();
        let mut lite = Packet::new();
        lite.add_option_as(CoapOption::Block2, theirs);
        prop_assert_eq!(lite.get_first_option(CoapOption::Block2).unwrap().as_slice(), &v[..n]);
    }

    #[test]
    fn block_values_roundtrip_over_20_bits(num in 0u32..(1 << 20), more in any::<bool>(), szx in 0u8..7) {
        let b = Block { num, more, szx };
        let mut v = [0u8; 3];
        let n = b.encode(&mut v);
        prop_assert_eq!(Block::decode(&v[..n]), Ok(b));
    }

    #[test]
    fn image_segments_roundtrip(id in any::<u32>()) {
        let mut out = [0u8; 10];
        let seg = image_segment(ImageId(id), &mut out).to_vec();
        prop_assert_eq!(parse_image_segment(&seg), Some(ImageId(id)));
        prop_assert_eq!(String::from_utf8(seg).unwrap(), id.to_string());
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..1500)) {
        if let Ok(d) = udp::parse(&bytes) {
            for _ in d.items() {}
        }
        let _ = Block::decode(&bytes[..bytes.len().min(4)]);
        let _ = parse_image_segment(&bytes[..bytes.len().min(12)]);
    }
}

#[test]
fn server_survives_arbitrary_datagrams() {
    let img = image(5000, 3);
    let responder = std::cell::RefCell::new(Responder::new(
        handler(&img, 1024),
        ServerConfig::default(),
        Security::PlainForLab(None),
    ));
    let peer = "127.0.0.1:9".parse().unwrap();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 2000,
        ..ProptestConfig::default()
    });
    runner
        .run(&prop::collection::vec(any::<u8>(), 0..1400), |bytes| {
            let mut responder = responder.borrow_mut();
            let mut out = [0u8; 1400];
            let _ = responder.respond(0, peer, &bytes, &mut out);
            // With a valid CoAP header in front, the options and payload parsers get exercised.
            let mut framed = vec![0x40, 0x01, 0x12, 0x34];
            framed.extend_from_slice(&bytes);
            if let Some(n) = responder.respond(0, peer, &framed, &mut out) {
                let d = udp::parse(&out[..n]).unwrap();
                prop_assert!(d.code >> 5 >= 2 || d.code == 0);
            }
            Ok(())
        })
        .unwrap();
}
