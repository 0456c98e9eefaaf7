//! RFC 8613 appendix C test vectors: key derivation (C.1, C.2), a protected request (C.4, C.5)
//! and a protected response (C.7).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use ota_oscore::option::OscoreOption;
use ota_oscore::{RequestId, SecurityContext};

fn h(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

const SECRET: &str = "0102030405060708090a0b0c0d0e0f10";
const SALT: &str = "9e7ca92223786340";

#[test]
fn c1_key_derivation_client_and_server() {
    let client = SecurityContext::derive(&h(SECRET), &h(SALT), b"", b"\x01").unwrap();
    assert_eq!(
        client.sender_key()[..],
        h("f0910ed7295e6ad4b54fc793154302ff")
    );
    assert_eq!(
        client.recipient_key()[..],
        h("ffb14e093c94c9cac9471648b4f98710")
    );
    assert_eq!(client.common_iv()[..], h("4622d4dd6d944168eefb54987c"));
    assert_eq!(
        client.nonce(b"", b"\0").unwrap()[..],
        h("4622d4dd6d944168eefb54987c")
    );
    assert_eq!(
        client.nonce(b"\x01", b"\0").unwrap()[..],
        h("4722d4dd6d944169eefb54987c")
    );
    let server = SecurityContext::derive(&h(SECRET), &h(SALT), b"\x01", b"").unwrap();
    assert_eq!(server.sender_key(), client.recipient_key());
    assert_eq!(server.recipient_key(), client.sender_key());
}

#[test]
fn c2_key_derivation_without_salt() {
    let c = SecurityContext::derive(&h(SECRET), &[], b"\x00", b"\x01").unwrap();
    assert_eq!(c.sender_key()[..], h("321b26943253c7ffb6003b0b64d74041"));
    assert_eq!(c.recipient_key()[..], h("e57b5635815177cd679ab4bcec9d7dda"));
    assert_eq!(c.common_iv()[..], h("be35ae297d2dace910c52e99f9"));
    assert_eq!(
        c.nonce(b"\x00", b"\0").unwrap()[..],
        h("bf35ae297d2dace910c52e99f9")
    );
    assert_eq!(
        c.nonce(b"\x01", b"\0").unwrap()[..],
        h("bf35ae297d2dace810c52e99f9")
    );
}

/// Seals the inner request `01 b3 "tv1"` (GET /tv1) with sequence number 20.
fn seal_tv1(ctx: &SecurityContext) -> (RequestId, Vec<u8>, Vec<u8>) {
    let mut buf = [0u8; 64];
    let inner = h("01b3747631");
    buf[..inner.len()].copy_from_slice(&inner);
    let (req, n) = ctx.seal_request(20, &mut buf, inner.len()).unwrap();
    let mut opt = [0u8; ota_oscore::option::MAX_OPTION];
    let olen = req.option().encode(&mut opt);
    (req, opt[..olen].to_vec(), buf[..n].to_vec())
}

#[test]
fn c4_request_with_empty_sender_id() {
    let client = SecurityContext::derive(&h(SECRET), &h(SALT), b"", b"\x01").unwrap();
    let (_, opt, cipher) = seal_tv1(&client);
    // The C.4 message ends "...62 0914 ff 612f...825e": option value 09 14, then ciphertext.
    assert_eq!(opt, h("0914"));
    assert_eq!(cipher, h("612f1092f1776f1c1668b3825e"));

    let server = SecurityContext::derive(&h(SECRET), &h(SALT), b"\x01", b"").unwrap();
    let mut buf = cipher.clone();
    let (req, n) = server
        .open_request(&OscoreOption::decode(&opt).unwrap(), &mut buf, cipher.len())
        .unwrap();
    assert_eq!(&buf[..n], &h("01b3747631")[..]);
    assert_eq!(req.seq(), 20);
}

#[test]
fn c5_request_with_8_bit_sender_id() {
    let client = SecurityContext::derive(&h(SECRET), &[], b"\x00", b"\x01").unwrap();
    let (_, opt, cipher) = seal_tv1(&client);
    assert_eq!(opt, h("091400"));
    assert_eq!(cipher, h("4ed339a5a379b0b8bc731fffb0"));
}

#[test]
fn c7_response_without_partial_iv() {
    let server = SecurityContext::derive(&h(SECRET), &h(SALT), b"\x01", b"").unwrap();
    let req = RequestId {
        kid: heapless::Vec::from_slice(b"").unwrap(),
        piv: heapless::Vec::from_slice(&[0x14]).unwrap(),
    };
    let inner = [&[0x45u8, 0xff][..], b"Hello World!"].concat();
    let mut buf = [0u8; 64];
    buf[..inner.len()].copy_from_slice(&inner);
    let n = server.seal_response(&req, &mut buf, inner.len()).unwrap();
    assert_eq!(
        buf[..n].to_vec(),
        h("dbaad1e9a7e7b2a813d3c31524378303cdafae119106")
    );

    let client = SecurityContext::derive(&h(SECRET), &h(SALT), b"", b"\x01").unwrap();
    let m = client
        .open_response(&req, &OscoreOption::default(), &mut buf, n)
        .unwrap();
    assert_eq!(&buf[..m], &inner[..]);
}
