//! Puts `memory.x` on the linker path and generates the update the firmware applies: an 8 KiB
//! image and its manifest, signed with a fixed test key (the server's job, done here on the host
//! with `ota-core`'s std side).
use std::io::Write;
use std::path::PathBuf;

use ota_core::host::OwnedManifest;
use ota_core::manifest::{Manifest, MANIFEST_FORMAT};
use ota_core::wire::{Digest, Version};
use sha2::{Digest as _, Sha256};

fn main() {
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    std::fs::copy("memory.x", out.join("memory.x")).expect("memory.x");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=memory.x");
    println!("cargo:rerun-if-changed=build.rs");

    let image: Vec<u8> = (0..8192u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let key = ed25519_dalek::SigningKey::from_bytes(&[42; 32]);
    let m = Manifest {
        format: MANIFEST_FORMAT,
        vendor: 1,
        class: 0xC0FFEE,
        sequence: 2,
        version: Version::new(1, 1, 0),
        image_size: image.len() as u32,
        digest: Digest(Sha256::digest(&image).into()),
        chunk_size: 512,
        min_running: None,
        patch: None,
    };
    let signed = OwnedManifest::sign(&m, &key);
    let mut f = std::fs::File::create(out.join("fixture.rs")).expect("fixture.rs");
    writeln!(
        f,
        "/// The new image.\npub static IMAGE: [u8; {}] = {:?};",
        image.len(),
        image
    )
    .expect("write");
    writeln!(
        f,
        "/// Its signed manifest body.\npub static MANIFEST_BODY: [u8; {}] = {:?};",
        signed.body().len(),
        signed.body()
    )
    .expect("write");
    writeln!(
        f,
        "/// The signature over it.\npub static SIGNATURE: [u8; 64] = {:?};",
        signed.signature().0
    )
    .expect("write");
    // The test server's answer to every check-in, encoded here as the real server would: the
    // firmware itself carries no code to encode replies, which only a server sends.
    let reply = ota_core::wire::encode_vec(&ota_core::wire::Message::CheckInReply(
        ota_core::wire::CheckInReply::Update {
            image: ota_core::wire::ImageId(1),
            manifest: Some(ota_core::manifest::SignedManifest {
                body: signed.body(),
                signature: signed.signature(),
            }),
            resume_from: 0,
            urgency: ota_core::wire::Urgency::Attempt,
            next_check_in: 60,
        },
    ));
    writeln!(
        f,
        "/// The check-in reply offering it (`offer()`, encoded).\npub static CHECKIN_REPLY: [u8; {}] = {:?};",
        reply.len(),
        reply
    )
    .expect("write");
    writeln!(
        f,
        "/// The vendor's public key.\npub static PUBLIC_KEY: [u8; 32] = {:?};",
        key.verifying_key().to_bytes()
    )
    .expect("write");
}
