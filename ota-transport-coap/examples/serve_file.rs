//! Serves one file as image `/ota/i/7` on a UDP port, for trying the server with any CoAP client.
//!
//! `cargo run --release -p ota-transport-coap --example serve_file -- FILE [PORT]`
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use std::sync::Arc;

use ota_core::wire::ImageId;
use ota_test_support::fixture::Release;
use ota_transport_coap::server::{serve, Responder, Security, ServerConfig};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next() else {
        eprintln!("usage: serve_file FILE [PORT]");
        std::process::exit(2);
    };
    let port: u16 = args
        .next()
        .map(|p| p.parse().expect("PORT: a number"))
        .unwrap_or(5683);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| {
        eprintln!("serve_file: {path}: {e}");
        std::process::exit(1);
    });
    // A placeholder release so the handler is complete; only the image resource is used here.
    let release = Release {
        image: ImageId(7),
        ..Release::of(&bytes, 1024)
    };
    let handler = Arc::new(release.handler(&bytes));
    let socket = tokio::net::UdpSocket::bind(("127.0.0.1", port))
        .await
        .expect("bind");
    eprintln!(
        "serving {path} ({} bytes) at coap://{}/ota/i/7",
        bytes.len(),
        socket.local_addr().unwrap()
    );
    serve(
        socket,
        Responder::new(
            handler,
            ServerConfig::default(),
            Security::PlainForLab(None),
        ),
    )
    .await
    .unwrap();
}
