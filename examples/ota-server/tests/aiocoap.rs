//! Interop with aiocoap, a second CoAP implementation that speaks OSCORE: a device context
//! provisioned by `ota-server device add --aiocoap`, a check-in and an image block fetched
//! through it from the real server.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::process::Command;

use common::*;
use ota_core::wire::{decode, CheckInReply, Message};

#[test]
fn aiocoap_checks_in_and_fetches_a_block_over_oscore() {
    let data = Data::new("aiocoap");
    let img: Vec<u8> = (0..20_000u32).map(|i| (i * 7 % 251) as u8).collect();
    data.release("sensor", "1.1.0", &img, true);
    let ctx_dir = data.path("aio-ctx");
    data.cli(&[
        "device",
        "add",
        "--id",
        "aio-1",
        "--class",
        "sensor",
        "--out",
        data.path("aio-1.cred").to_str().unwrap(),
        "--aiocoap",
        ctx_dir.to_str().unwrap(),
    ]);
    let server = Server::start(&data, &[]);
    std::fs::write(data.path("checkin"), raw_checkin(b"aio-1", "sensor")).unwrap();
    let out = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/aiocoap_client.py"
        ))
        .arg(format!("coap://127.0.0.1:{}", server.port))
        .arg(format!("{}/", ctx_dir.display()))
        .arg(data.path("checkin"))
        .arg("1")
        .arg(&data.dir)
        .output()
        .expect("python3 with aiocoap (pip install 'aiocoap[oscore]'): .ci/run installs it");
    let printed = String::from_utf8_lossy(&out.stdout);
    println!("aiocoap: {printed}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{}", server.log());
    assert!(printed.contains("check-in 2.04 Changed"), "{printed}");
    assert!(printed.contains("block0 2.05 Content"), "{printed}");
    let reply = std::fs::read(data.path("reply")).unwrap();
    match decode(&reply).unwrap() {
        Message::CheckInReply(CheckInReply::Update { manifest, .. }) => assert!(manifest.is_some()),
        other => panic!("not an offer: {other:?}"),
    }
    assert_eq!(std::fs::read(data.path("block0")).unwrap(), img[..1024]);
    assert!(data.status().contains("aio-1"));
}
