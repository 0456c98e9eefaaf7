//! Tampered manifests and tampered chunks are refused with the right error and never reach
//! storage as valid data.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use common::*;
use ota_core::device::{Event, SleepReason};
use ota_core::host::{Decision, DesiredState, Handler, ImageError, ImageSource, OwnedManifest};
use ota_core::manifest::{DeviceProfile, Ed25519Verifier, Manifest, ManifestError};
use ota_core::wire::{
    self, CheckIn, ImageId, Message, Phase, ResultCode, Urgency, Version, WakeBudget,
};
use ota_core::{Device, Instant};
use ota_test_support::MemStorage;

fn profile() -> DeviceProfile {
    DeviceProfile {
        vendor: VENDOR,
        class: CLASS,
        running_sequence: RUNNING_SEQ,
        running_version: Version::new(1, 3, 2),
        staging_capacity: 64 * 1024,
        max_chunk: 1024,
        pow2_chunks: false,
    }
}

fn base() -> Manifest {
    manifest_for(&image(10_000, 1), 512)
}

fn verify(m: &OwnedManifest) -> Result<Manifest, ManifestError> {
    m.as_signed().verify(&verifier(), &profile())
}

#[test]
fn valid_manifest_verifies() {
    let m = base();
    assert_eq!(verify(&signed(&m)), Ok(m));
}

#[test]
fn each_check_has_its_own_error() {
    type Expect = fn(&ManifestError) -> bool;
    let cases: Vec<(Manifest, Expect)> = vec![
        (
            Manifest {
                vendor: 1,
                ..base()
            },
            |e| {
                matches!(
                    e,
                    ManifestError::WrongVendor {
                        expected: VENDOR,
                        found: 1
                    }
                )
            },
        ),
        (Manifest { class: 9, ..base() }, |e| {
            matches!(
                e,
                ManifestError::WrongClass {
                    expected: CLASS,
                    found: 9
                }
            )
        }),
        (
            Manifest {
                sequence: RUNNING_SEQ,
                ..base()
            },
            |e| matches!(e, ManifestError::NotNewer { .. }),
        ),
        (
            Manifest {
                sequence: 3,
                ..base()
            },
            |e| {
                matches!(
                    e,
                    ManifestError::NotNewer {
                        running: RUNNING_SEQ,
                        found: 3
                    }
                )
            },
        ),
        (
            Manifest {
                image_size: 64 * 1024 + 1,
                ..base()
            },
            |e| matches!(e, ManifestError::TooLarge { .. }),
        ),
        (
            Manifest {
                chunk_size: 0,
                ..base()
            },
            |e| matches!(e, ManifestError::BadChunkSize { found: 0, .. }),
        ),
        (
            Manifest {
                chunk_size: 2048,
                ..base()
            },
            |e| matches!(e, ManifestError::BadChunkSize { found: 2048, .. }),
        ),
        (
            Manifest {
                min_running: Some(Version::new(2, 0, 0)),
                ..base()
            },
            |e| matches!(e, ManifestError::RunningTooOld { .. }),
        ),
        (
            Manifest {
                format: 9,
                ..base()
            },
            |e| matches!(e, ManifestError::UnsupportedFormat(9)),
        ),
    ];
    for (m, expected) in cases {
        let err = verify(&signed(&m)).expect_err("tampered manifest accepted");
        assert!(expected(&err), "wrong error {err:?} for {m:?}");
    }
}

#[test]
fn checks_run_in_the_documented_order() {
    // Wrong class and not newer: the class check comes first.
    let m = Manifest {
        class: 9,
        sequence: 1,
        ..base()
    };
    assert!(matches!(
        verify(&signed(&m)),
        Err(ManifestError::WrongClass { .. })
    ));
    // Not newer and too large: sequence first.
    let m = Manifest {
        sequence: 1,
        image_size: u32::MAX,
        ..base()
    };
    assert!(matches!(
        verify(&signed(&m)),
        Err(ManifestError::NotNewer { .. })
    ));
    // Too large and bad chunk size: size first.
    let m = Manifest {
        image_size: u32::MAX,
        chunk_size: 0,
        ..base()
    };
    assert!(matches!(
        verify(&signed(&m)),
        Err(ManifestError::TooLarge { .. })
    ));
    // A bad signature on a manifest for the wrong class: the signature is checked first.
    let good = signed(&Manifest { class: 9, ..base() });
    let mut sig = good.signature();
    sig.0[5] ^= 0x40;
    let forged = OwnedManifest::new(good.body().to_vec(), sig).unwrap();
    assert_eq!(verify(&forged), Err(ManifestError::BadSignature));
}

#[test]
fn any_flipped_bit_breaks_the_signature() {
    let good = signed(&base());
    for i in 0..good.body().len() * 8 {
        let mut body = good.body().to_vec();
        body[i / 8] ^= 1 << (i % 8);
        let sig = good.signature();
        let m = ota_core::SignedManifest {
            body: &body,
            signature: sig,
        };
        assert_eq!(
            m.verify(&verifier(), &profile()),
            Err(ManifestError::BadSignature),
            "bit {i}"
        );
    }
    for i in 0..64 * 8 {
        let mut sig = good.signature();
        sig.0[i / 8] ^= 1 << (i % 8);
        let m = ota_core::SignedManifest {
            body: good.body(),
            signature: sig,
        };
        assert_eq!(
            m.verify(&verifier(), &profile()),
            Err(ManifestError::BadSignature),
            "sig bit {i}"
        );
    }
}

#[test]
fn another_key_is_refused() {
    let other = ed25519_dalek::SigningKey::from_bytes(&[9u8; 32]);
    let m = OwnedManifest::sign(&base(), &other);
    assert_eq!(verify(&m), Err(ManifestError::BadSignature));
}

/// Offers one manifest to everyone, whatever it says.
struct AlwaysOffer(OwnedManifest);

impl DesiredState for AlwaysOffer {
    fn decide(&self, _: &CheckIn<'_>) -> Decision {
        Decision::Offer {
            image: ImageId(3),
            manifest: self.0.clone(),
            urgency: Urgency::Forced,
            next_check_in: 600,
        }
    }
    fn may_fetch(&self, _: &str, image: ImageId) -> bool {
        image == ImageId(3)
    }
}

/// Runs one wake against `handler` over a perfect link; returns events, storage and the
/// reports the device sent.
fn one_wake<D: DesiredState, I: ImageSource>(
    handler: &Handler<D, I>,
) -> (Vec<Event>, MemStorage, Vec<(Phase, ResultCode)>) {
    let mut storage = MemStorage::new(64 * 1024);
    let mut dev: Device<Ed25519Verifier> = Device::new(config(64 * 1024, 4), verifier());
    dev.wake(Instant(0), WakeBudget::default());
    let mut buf = [0u8; 2048];
    let mut events = Vec::new();
    let mut reports = Vec::new();
    for _ in 0..10_000 {
        let mut replies = Vec::new();
        while let Some(n) = dev.poll_transmit(Instant(0), &mut buf).map(|t| {
            dev.link_bytes(t.len as u64, 0);
            t.len
        }) {
            if let Ok(Message::Report(r)) = wire::decode(&buf[..n]) {
                reports.push((r.phase, r.result));
            }
            if let Ok(Some(r)) = handler.handle(&buf[..n], ota_core::host::Peer::Anonymous) {
                replies.push(r);
            }
        }
        for r in replies {
            let _ = dev.handle_message(Instant(0), &r);
            dev.drive_storage(&mut storage).unwrap();
        }
        dev.drive_storage(&mut storage).unwrap();
        while let Some(e) = dev.poll_event() {
            let sleep = matches!(e, Event::Sleep { .. });
            events.push(e);
            if sleep {
                return (events, storage, reports);
            }
        }
    }
    panic!("wake did not end: {events:?}");
}

#[test]
fn device_refuses_tampered_manifests_before_touching_storage() {
    let cases: Vec<(OwnedManifest, ResultCode)> = vec![
        (
            {
                let g = signed(&base());
                let mut s = g.signature();
                s.0[0] ^= 1;
                OwnedManifest::new(g.body().to_vec(), s).unwrap()
            },
            ResultCode::BAD_SIGNATURE,
        ),
        (
            signed(&Manifest { class: 8, ..base() }),
            ResultCode::UNSUPPORTED_PACKAGE,
        ),
        (
            signed(&Manifest {
                sequence: RUNNING_SEQ,
                ..base()
            }),
            ResultCode::NOT_NEWER,
        ),
        (
            signed(&Manifest {
                sequence: RUNNING_SEQ - 1,
                ..base()
            }),
            ResultCode::NOT_NEWER,
        ),
        (
            signed(&Manifest {
                image_size: 1 << 20,
                ..base()
            }),
            ResultCode::OUT_OF_STORAGE,
        ),
    ];
    for (manifest, code) in cases {
        let (events, storage, reports) = offer_raw(&manifest);
        assert!(
            events
                .iter()
                .any(|e| matches!(e, Event::ManifestRejected(_))),
            "not rejected: {events:?}"
        );
        assert!(matches!(
            events.last(),
            Some(Event::Sleep {
                reason: SleepReason::Rejected,
                ..
            })
        ));
        assert_eq!(reports, vec![(Phase::Rejected, code)]);
        assert!(
            storage.state().is_none(),
            "a refused manifest reached storage"
        );
        assert_eq!(storage.bytes_written, 0);
    }
}

/// Answers the device's check-in with `manifest` directly, bypassing the handler (which
/// would withhold offers that are not newer than the running image).
fn offer_raw(manifest: &OwnedManifest) -> (Vec<Event>, MemStorage, Vec<(Phase, ResultCode)>) {
    let mut storage = MemStorage::new(64 * 1024);
    let mut dev: Device<Ed25519Verifier> = Device::new(config(64 * 1024, 4), verifier());
    dev.wake(Instant(0), WakeBudget::default());
    let mut buf = [0u8; 2048];
    let n = dev.poll_transmit(Instant(0), &mut buf).unwrap().len;
    assert!(matches!(wire::decode(&buf[..n]), Ok(Message::CheckIn(_))));
    let reply = wire::encode_vec(&Message::CheckInReply(wire::CheckInReply::Update {
        image: ImageId(3),
        manifest: Some(manifest.as_signed()),
        resume_from: 0,
        urgency: Urgency::Attempt,
        next_check_in: 600,
    }));
    dev.handle_message(Instant(0), &reply).unwrap();
    dev.drive_storage(&mut storage).unwrap();
    let mut reports = Vec::new();
    while let Some(n) = dev.poll_transmit(Instant(0), &mut buf).map(|t| {
        dev.link_bytes(t.len as u64, 0);
        t.len
    }) {
        if let Ok(Message::Report(r)) = wire::decode(&buf[..n]) {
            reports.push((r.phase, r.result));
        }
    }
    let events: Vec<Event> = std::iter::from_fn(|| dev.poll_event()).collect();
    (events, storage, reports)
}

/// Serves an image whose bytes differ from what the manifest promises, with valid CRCs: the
/// link is fine, the server is wrong or hostile.
struct EvilImages(Vec<u8>);

impl ImageSource for EvilImages {
    fn read_at(&self, _: ImageId, offset: u32, buf: &mut [u8]) -> Result<usize, ImageError> {
        let tail = &self.0[offset as usize..];
        let n = tail.len().min(buf.len());
        buf[..n].copy_from_slice(&tail[..n]);
        Ok(n)
    }

    fn describe(&self, _: ImageId) -> Result<ota_core::host::ImageInfo, ImageError> {
        Ok(ota_core::host::ImageInfo {
            size: self.0.len() as u32,
            digest: ota_core::wire::Digest([0; 32]),
        })
    }
}

#[test]
fn image_that_fails_its_digest_is_never_staged() {
    let good = image(9_000, 4);
    let mut evil = good.clone();
    evil[4321] ^= 0x10;
    let release = AlwaysOffer(signed(&manifest_for(&good, 512)));
    let handler = Handler::new(release, EvilImages(evil), 1024);
    let (events, storage, reports) = one_wake(&handler);
    assert!(
        events.contains(&Event::DownloadFailed(ResultCode::INTEGRITY_FAILURE)),
        "{events:?}"
    );
    assert!(!events.iter().any(|e| matches!(e, Event::Staged { .. })));
    assert!(
        storage.state().is_none(),
        "the failed download must be abandoned"
    );
    assert_eq!(
        reports,
        vec![(Phase::Failed, ResultCode::INTEGRITY_FAILURE)]
    );
}

#[test]
fn valid_update_reports_staged() {
    let img = image(9_000, 4);
    let handler = handler(&img, 512);
    let (events, storage, reports) = one_wake(&handler);
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::Staged { version, .. } if *version == Version::new(1, 4, 0))));
    assert_eq!(storage.staged(img.len()), img);
    assert_eq!(reports, vec![(Phase::Staged, ResultCode::INITIAL)]);
}

/// Counts the check-ins it was asked to decide; `peek` must not count.
struct Recording(AlwaysOffer, std::sync::atomic::AtomicU32);

impl DesiredState for Recording {
    fn decide(&self, c: &CheckIn<'_>) -> Decision {
        self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.0.decide(c)
    }
    fn peek(&self, c: &CheckIn<'_>) -> Decision {
        self.0.decide(c)
    }
    fn may_fetch(&self, device: &str, image: ImageId) -> bool {
        self.0.may_fetch(device, image)
    }
}

#[test]
fn desired_state_is_the_reply_without_its_manifest() {
    let img = image(9_000, 4);
    let release = Recording(
        AlwaysOffer(signed(&manifest_for(&img, 512))),
        Default::default(),
    );
    let handler = Handler::new(release, EvilImages(img), 1024);
    let mut dev: Device<Ed25519Verifier> = Device::new(config(64 * 1024, 4), verifier());
    dev.wake(Instant(0), WakeBudget::default());
    let mut buf = [0u8; 256];
    let n = dev.poll_transmit(Instant(0), &mut buf).unwrap().len;
    let Ok(Message::CheckIn(checkin)) = wire::decode(&buf[..n]) else {
        panic!("not a check-in")
    };
    let reply = handler
        .handle(&buf[..n], ota_core::host::Peer::Anonymous)
        .unwrap()
        .unwrap();
    let desired = handler.desired_state(&checkin);
    assert_eq!(
        handler
            .desired()
            .1
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    let (state, applies_to) = wire::decode_desired(&desired).unwrap();
    assert_eq!(applies_to, Some(checkin.running.digest));
    match state {
        wire::CheckInReply::Update {
            image,
            manifest,
            resume_from,
            next_check_in,
            ..
        } => {
            assert_eq!((image, resume_from, next_check_in), (ImageId(3), 0, 600));
            assert!(manifest.is_none());
        }
        other => panic!("{other:?}"),
    }
    assert!(
        desired.len() * 4 < reply.len(),
        "{} vs {}",
        desired.len(),
        reply.len()
    );
    // An "up to date" reply is kept whole, and names the image it applies to.
    let up = wire::CheckInReply::UpToDate { next_check_in: 7 };
    let running = wire::DigestPrefix([5; 8]);
    let state = ota_core::host::desired_state(&up, running);
    assert_eq!(
        wire::decode_desired(&state).unwrap(),
        (up.clone(), Some(running))
    );
    // A plain reply (no extension) names none: a device checks in rather than trust it.
    let plain = wire::encode_vec(&Message::CheckInReply(up.clone()));
    assert_eq!(wire::decode_desired(&plain).unwrap(), (up, None));
}

fn patch_info() -> ota_core::manifest::PatchInfo {
    ota_core::manifest::PatchInfo {
        size: 700,
        digest: ota_core::wire::Digest([7; 32]),
        source_size: 9_000,
        source_digest: ota_core::wire::Digest([9; 32]),
    }
}

#[test]
fn a_patch_manifest_carries_its_patch_under_the_signature() {
    let m = base().with_patch(patch_info());
    assert_eq!(m.format, ota_core::manifest::MANIFEST_FORMAT_PATCH);
    assert_eq!(m.transfer_size(), 700);
    let signed = signed(&m);
    assert!(signed.as_signed().body.len() <= ota_core::manifest::MAX_MANIFEST_BODY);
    assert_eq!(verify(&signed), Ok(m));
    // The patch is inside the signed body: change a byte of it and the signature fails.
    let mut body = signed.as_signed().body.to_vec();
    let last = body.len() - 1;
    body[last] ^= 1;
    let tampered = ota_core::manifest::SignedManifest {
        body: &body,
        signature: signed.as_signed().signature,
    };
    assert_eq!(
        tampered.verify(&verifier(), &profile()),
        Err(ManifestError::BadSignature)
    );
}

#[test]
fn a_full_manifest_encodes_as_before() {
    // Format 1 bodies are byte for byte what they were before patches existed: the fields,
    // nothing after them.
    let m = base();
    let body = signed(&m).as_signed().body.to_vec();
    assert_eq!(body, postcard::to_stdvec(&m).unwrap());
    assert_eq!(body[0], ota_core::manifest::MANIFEST_FORMAT);
}

#[test]
fn a_patch_is_not_refused_for_its_size_by_the_manifest_check() {
    // The storage decides at Begin (and fails it as a patch, so the whole image follows); an
    // image too large is still refused here.
    let mut p = patch_info();
    p.size = 64 * 1024 - 10_000 + 1;
    let m = base().with_patch(p);
    assert_eq!(verify(&signed(&m)).map(|m| m.patch), Ok(Some(p)));
    let mut big = base().with_patch(p);
    big.image_size = 64 * 1024 + 1;
    assert!(matches!(
        verify(&signed(&big)),
        Err(ManifestError::TooLarge { .. })
    ));
}

#[test]
fn a_patch_manifest_cut_before_its_patch_is_malformed() {
    let m = base().with_patch(patch_info());
    let full = signed(&m).as_signed().body.to_vec();
    let cut = &full[..full.len() - 40];
    let key = signing_key();
    use ed25519_dalek::Signer as _;
    let sig = ota_core::wire::Signature(key.sign(cut).to_bytes());
    let s = ota_core::manifest::SignedManifest {
        body: cut,
        signature: sig,
    };
    assert!(matches!(
        s.verify(&verifier(), &profile()),
        Err(ManifestError::Malformed(_))
    ));
}
