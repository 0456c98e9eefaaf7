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

use ota_core::host::{Handler, MemImages, OwnedManifest, SingleRelease};
use ota_core::manifest::{Manifest, MANIFEST_FORMAT};
use ota_core::wire::{Digest, ImageId, Urgency, Version};
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
    let images = MemImages::new();
    images.insert(ImageId(7), bytes.clone());
    // A placeholder release so the handler is complete; only the image resource is used here.
    let key = ed25519_dalek::SigningKey::from_bytes(&[1; 32]);
    let m = Manifest {
        format: MANIFEST_FORMAT,
        vendor: 0,
        class: 0,
        sequence: 1,
        version: Version::new(0, 0, 1),
        image_size: bytes.len() as u32,
        digest: Digest([0; 32]),
        chunk_size: 1024,
        min_running: None,
        patch: None,
    };
    let release = SingleRelease {
        image: ImageId(7),
        manifest: OwnedManifest::sign(&m, &key),
        urgency: Urgency::Attempt,
        next_check_in: 3600,
    };
    let handler = Arc::new(Handler::new(release, images, 1024));
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
