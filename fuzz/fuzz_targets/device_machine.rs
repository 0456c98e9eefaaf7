//! The device state machine driven by fuzzer-chosen replies and chunks. The offer carries a
//! genuinely signed manifest for a small image, so the fuzzer can reach the download; it then
//! chooses which chunks arrive, with what offsets and bytes (CRC made valid), plus raw messages
//! and timeouts. Invariant: the machine never panics, and it reports Staged only when the
//! staged bytes are the real image.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use ota_core::host::OwnedManifest;
use ota_core::manifest::{Ed25519Verifier, Manifest};
use ota_core::storage::UpdateStorage;
use ota_core::wire::{
    encode_vec, CheckInReply, Chunk, DigestPrefix, ImageId, Message, RunningFirmware, Urgency,
    Version, WakeBudget,
};
use ota_core::{Device, DeviceConfig, Event, Instant};
use ota_test_support::fixture::{self, Release};
use ota_test_support::MemStorage;

const CHUNK: u16 = 64;

fn fixture() -> &'static (Vec<u8>, OwnedManifest, [u8; 32]) {
    static F: OnceLock<(Vec<u8>, OwnedManifest, [u8; 32])> = OnceLock::new();
    F.get_or_init(|| {
        let image: Vec<u8> = (0..300u32).map(|i| (i * 7) as u8).collect();
        let release = Release::new(Manifest {
            sequence: 5,
            version: Version::new(2, 0, 0),
            ..fixture::manifest(&image, CHUNK)
        });
        (image, release.signed(), release.public_key())
    })
}

fuzz_target!(|data: &[u8]| {
    let (image, manifest, public) = fixture();
    let verifier = Ed25519Verifier::from_bytes(public).expect("key");
    let mut config = DeviceConfig::new(
        b"fuzz",
        1,
        2,
        RunningFirmware {
            version: Version::new(1, 0, 0),
            digest: DigestPrefix([0; 8]),
            sequence: 1,
        },
    )
    .expect("a valid device id");
    config.staging_capacity = 4096;
    config.window = 4;
    let mut dev: Device<_, 256> = Device::new(config, verifier);
    let mut storage = MemStorage::new(4096);
    dev.wake(Instant(0), WakeBudget::default());
    let mut now = 0u64;
    let mut buf = [0u8; 512];
    let mut ops = data.iter().copied();
    while let Some(op) = ops.next() {
        now += 10;
        while dev.poll_transmit(Instant(now), &mut buf).is_some() {}
        let msg = match op % 5 {
            0 => encode_vec(&Message::CheckInReply(CheckInReply::Update {
                image: ImageId(3),
                manifest: Some(manifest.as_signed()),
                resume_from: 0,
                urgency: Urgency::Attempt,
                next_check_in: 60,
            })),
            1 | 2 => {
                // A chunk at a fuzzer-chosen block with fuzzer-chosen bytes, or the real bytes.
                let block = u32::from(ops.next().unwrap_or(0) % 8);
                let offset = block * u32::from(CHUNK);
                let real = op % 5 == 1;
                let end = (offset as usize + CHUNK as usize).min(image.len());
                let payload: Vec<u8> = if real {
                    image.get(offset as usize..end).unwrap_or(&[]).to_vec()
                } else {
                    (offset as usize..end)
                        .map(|_| ops.next().unwrap_or(0))
                        .collect()
                };
                encode_vec(&Message::Chunk(Chunk::new(ImageId(3), offset, &payload)))
            }
            3 => {
                let n = usize::from(ops.next().unwrap_or(0));
                (0..n).map(|_| ops.next().unwrap_or(0)).collect()
            }
            _ => {
                now += 5_000;
                dev.handle_timeout(Instant(now));
                continue;
            }
        };
        let _ = dev.handle_message(Instant(now), &msg);
        while let Some(op) = dev.poll_storage() {
            let r = storage
                .apply(op)
                .map_err(|_| ota_core::storage::StorageFailure::Io);
            dev.storage_done(r);
        }
        while let Some(e) = dev.poll_event() {
            if let Event::Staged { .. } = e {
                assert_eq!(
                    storage.staged(image.len()),
                    *image,
                    "staged bytes that are not the image"
                );
            }
        }
    }
});
