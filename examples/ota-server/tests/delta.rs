//! Delta updates through the fleet: `release --delta-from` makes a signed patch per source,
//! a device running a source is offered the patch, everyone else (and a device a patch failed
//! on) the whole image, and the bytes sent are counted as patch or whole.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use ed25519_dalek::SigningKey;
use ota_core::host::{Application, Decision, OwnedManifest, Peer};
use ota_core::manifest::{Ed25519Verifier, Verifier};
use ota_core::wire::{
    CheckIn, DigestPrefix, ImageId, LastOutcome, ResultCode, ResumeHint, RunningFirmware, Version,
};
use ota_server::delta::{make_patches, Made};
use ota_server::fleet::Fleet;
use ota_server::store::{Release, RolloutPlan, Store, PATCH_IMAGE_BIT};
use sha2::{Digest as _, Sha256};

const CLASS: &str = "meter";
const V1: Version = Version::new(1, 0, 0);
const V2: Version = Version::new(1, 0, 1);
const V3: Version = Version::new(2, 0, 0);

/// Bytes with some structure, like code.
fn image(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| {
            ((i / 7) ^ seed.wrapping_mul(0x9e37))
                .wrapping_mul(2_654_435_761)
                .to_be_bytes()[1]
        })
        .collect()
}

/// Bytes no patch can shrink.
fn noise(len: usize, seed: u8) -> Vec<u8> {
    (0..len.div_ceil(32) as u32)
        .flat_map(|i| Sha256::digest([&[seed][..], &i.to_le_bytes()].concat()))
        .take(len)
        .collect()
}

/// `old` with a string changed and a few bytes inserted: a point release.
fn point_release(old: &[u8]) -> Vec<u8> {
    let mut new = old.to_vec();
    new[old.len() / 3..old.len() / 3 + 16].copy_from_slice(b"version 1.0.1 ok");
    new.splice(old.len() / 2..old.len() / 2, image(64, 99));
    new
}

fn prefix(image: &[u8]) -> DigestPrefix {
    let mut p = [0; 8];
    p.copy_from_slice(&Sha256::digest(image)[..8]);
    DigestPrefix(p)
}

fn checkin<'a>(
    id: &'a str,
    (running, sequence): (&[u8], u32),
    last: LastOutcome,
    resume: Option<ResumeHint>,
) -> CheckIn<'a> {
    let running = RunningFirmware {
        version: V1,
        digest: prefix(running),
        sequence,
    };
    common::checkin(id.as_bytes(), CLASS, running, last, resume)
}

/// `id`'s check-in, answered by `fleet`.
async fn ask(
    fleet: &Fleet,
    id: &str,
    running: (&[u8], u32),
    last: LastOutcome,
    resume: Option<ResumeHint>,
) -> Decision {
    fleet
        .check_in(Peer::Device(id), &checkin(id, running, last, resume))
        .await
}

fn offered(d: &Decision) -> (ImageId, OwnedManifest) {
    match d {
        Decision::Offer {
            image, manifest, ..
        } => (*image, manifest.clone()),
        other => panic!("expected an offer, got {other:?}"),
    }
}

/// Fetches all of `image` as `device`, 1 KiB at a time; the bytes.
async fn fetch(fleet: &Fleet, device: &str, image: ImageId, size: u32) -> Vec<u8> {
    let mut out = Vec::new();
    while (out.len() as u32) < size {
        let off = out.len() as u32;
        let img = fleet
            .image(Peer::Device(device), image, off, 1024)
            .await
            .unwrap();
        assert_eq!(img.info.size, size);
        let end = (off + 1024).min(size) as usize;
        out.extend_from_slice(&img.bytes[off as usize..end]);
    }
    out
}

struct Setup {
    fleet: Arc<Fleet>,
    key: SigningKey,
    v1: Release,
    v2: Release,
    old: Vec<u8>,
    new: Vec<u8>,
    dir: PathBuf,
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Releases 1.0.0 and its point release 1.0.1 with a patch from 1.0.0, rolled out to all.
async fn setup(name: &str) -> (Setup, Vec<Made>) {
    let dir = std::env::temp_dir().join(format!("ota-delta-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let store = Store::open(&dir).await.unwrap();
    let key = SigningKey::from_bytes(&[9; 32]);
    let old = image(40_000, 1);
    let new = point_release(&old);
    let v1 = store
        .add_release(CLASS, V1, &old, &key, 1024)
        .await
        .unwrap();
    let v2 = store
        .add_release(CLASS, V2, &new, &key, 1024)
        .await
        .unwrap();
    let made = make_patches(&store, &v2, &new, std::slice::from_ref(&v1), 60, &key)
        .await
        .unwrap();
    store
        .set_rollout(CLASS, V2, &RolloutPlan::immediate(100))
        .await
        .unwrap();
    let fleet = Arc::new(Fleet::new(store, 60, 8 << 20).await.unwrap());
    let s = Setup {
        fleet,
        key,
        v1,
        v2,
        old,
        new,
        dir,
    };
    (s, made)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_running_the_source_gets_a_signed_patch_that_rebuilds_the_image() {
    let (s, made) = setup("offer").await;
    let [Made::Stored(p)] = &made[..] else {
        panic!("expected one stored patch, got {made:?}");
    };
    assert!(
        (p.info.size as usize) * 20 < s.new.len(),
        "a point release's patch is under 5 % of the image: {} of {}",
        p.info.size,
        s.new.len()
    );

    let d = ask(&s.fleet, "m-1", (&s.old, 1), LastOutcome::None, None).await;
    let (id, manifest) = offered(&d);
    assert_eq!(id.0, p.id);
    assert_ne!(id.0 & PATCH_IMAGE_BIT, 0);
    // Signed by the server's key, for the target image, from the running image.
    let verifier = Ed25519Verifier::from_bytes(&s.key.verifying_key().to_bytes()).unwrap();
    verifier
        .verify(manifest.body(), &manifest.signature())
        .expect("signed with the server's key");
    let m = *manifest.manifest();
    let target = s.v2.manifest.manifest();
    assert_eq!(
        (m.image_size, m.digest, m.sequence),
        (target.image_size, target.digest, target.sequence)
    );
    let info = m.patch.expect("a patch manifest");
    assert_eq!(info.source_digest, s.v1.manifest.manifest().digest);
    assert_eq!(info.source_size, s.old.len() as u32);

    let patch = fetch(&s.fleet, "m-1", id, info.size).await;
    assert_eq!(Sha256::digest(&patch).as_slice(), &info.digest.0);
    assert_eq!(ota_delta::apply_in_memory(&s.old, &patch).unwrap(), s.new);

    // It confirms: the transfer is counted as patch bytes, and the update as a success.
    let d = s
        .fleet
        .check_in(
            Peer::Device("m-1"),
            &checkin(
                "m-1",
                (&s.new, 2),
                LastOutcome::Confirmed { sequence: 2 },
                None,
            ),
        )
        .await;
    assert!(matches!(d, Decision::UpToDate { .. }), "{d:?}");
    s.fleet.flush().await.unwrap();
    let t = s.fleet.store().transfers(Some("m-1"), None).await.unwrap();
    assert_eq!(t.len(), 1);
    assert_eq!(
        (t[0].release, t[0].bytes, t[0].patch_bytes),
        (s.v2.id, u64::from(info.size), u64::from(info.size))
    );
    assert_eq!(t[0].outcome.as_deref(), Some("success"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everyone_else_gets_the_whole_image() {
    let (s, _) = setup("whole").await;
    let whole = ImageId(s.v2.id);
    // Running another build (its digest is not a patch's source).
    let other = image(40_000, 2);
    let d = ask(&s.fleet, "m-2", (&other, 1), LastOutcome::None, None).await;
    assert_eq!(offered(&d).0, whole);

    // Mid-way through the whole image when the patch appeared: it goes on with what it has.
    let hint = ResumeHint {
        manifest: s.v2.manifest.digest().prefix(),
        next_offset: 8192,
    };
    let d = ask(&s.fleet, "m-3", (&s.old, 1), LastOutcome::None, Some(hint)).await;
    let (id, m) = offered(&d);
    assert_eq!(id, whole);
    assert!(m.manifest().patch.is_none());

    // The patch is not the whole image's, nor another device's to fetch under its name.
    s.fleet.flush().await.unwrap();
    let bytes = fetch(&s.fleet, "m-2", whole, s.new.len() as u32).await;
    assert_eq!(bytes, s.new);
    s.fleet.flush().await.unwrap();
    let t = s.fleet.store().transfers(Some("m-2"), None).await.unwrap();
    assert_eq!((t[0].bytes, t[0].patch_bytes), (s.new.len() as u64, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_a_patch_failed_on_gets_the_whole_image_next() {
    let (s, _) = setup("failed").await;
    let d = ask(&s.fleet, "m-4", (&s.old, 1), LastOutcome::None, None).await;
    assert!(offered(&d).1.manifest().patch.is_some());
    for reason in [ResultCode::PATCH_FAILED, ResultCode::PATCH_SOURCE_MISMATCH] {
        let failed = LastOutcome::Failed {
            sequence: 2,
            reason,
        };
        let d = ask(&s.fleet, "m-4", (&s.old, 1), failed, None).await;
        let (id, m) = offered(&d);
        assert_eq!(id, ImageId(s.v2.id), "after {reason:?}");
        assert!(m.manifest().patch.is_none());
        // And again at the next check-in, with nothing to report.
        let d = ask(&s.fleet, "m-4", (&s.old, 1), LastOutcome::None, None).await;
        assert_eq!(offered(&d).0, ImageId(s.v2.id));
    }
    // A patch failure is not the update's end: no failed outcome counts against the rollout.
    s.fleet.flush().await.unwrap();
    let t = s.fleet.store().transfers(Some("m-4"), None).await.unwrap();
    assert!(t.iter().all(|t| t.outcome.is_none()), "{t:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patch_that_saves_too_little_is_not_offered() {
    let (s, _) = setup("large").await;
    let unrelated = noise(40_000, 77);
    let store = s.fleet.store();
    let v3 = store
        .add_release(CLASS, V3, &unrelated, &s.key, 1024)
        .await
        .unwrap();
    let made = make_patches(
        store,
        &v3,
        &unrelated,
        &[s.v1.clone(), s.v2.clone()],
        60,
        &s.key,
    )
    .await
    .unwrap();
    assert_eq!(made.len(), 2);
    for m in &made {
        let Made::TooLarge { size, limit, .. } = m else {
            panic!("an unrelated image's patch was stored: {m:?}");
        };
        assert!(size > limit && *limit == unrelated.len() * 60 / 100);
    }
    assert!(store.patches_of(v3.id).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_patch_that_does_not_match_its_manifest_is_never_served() {
    let (s, made) = setup("corrupt").await;
    let [Made::Stored(p)] = &made[..] else {
        panic!("{made:?}")
    };
    // Flip a byte of the stored patch behind the server's back.
    let db = rusqlite::Connection::open(s.dir.join("ota.db")).unwrap();
    let n = db
        .execute(
            "UPDATE images SET bytes = CAST(zeroblob(length(bytes)) AS BLOB) WHERE digest = ?1",
            [&p.info.digest.0[..]],
        )
        .unwrap();
    assert_eq!(n, 1);
    let d = ask(&s.fleet, "m-5", (&s.old, 1), LastOutcome::None, None).await;
    assert_eq!(offered(&d).0, ImageId(s.v2.id), "the whole image instead");
    let e = s
        .fleet
        .image(Peer::Device("m-5"), ImageId(p.id), 0, 1024)
        .await;
    assert!(e.is_err(), "a corrupt patch was served");
}

/// The command line: `release --delta-from` prints each patch's share, `status` the bytes.
#[test]
fn the_command_line_makes_patches_and_status_shows_bytes() {
    let data = common::Data::new("delta-cli");
    let old = image(30_000, 5);
    let new = point_release(&old);
    data.release(CLASS, "1.0.0", &old, false);
    let file = data.path("new.bin");
    std::fs::write(&file, &new).unwrap();
    let keys = data.path("keys");
    let out = data.cli(&[
        "release",
        "--image",
        file.to_str().unwrap(),
        "--version",
        "1.0.1",
        "--class",
        CLASS,
        "--key",
        keys.to_str().unwrap(),
        "--delta-from",
        "1.0.0",
    ]);
    assert!(out.contains("patch from 1.0.0: image id"), "{out}");
    assert!(
        out.contains(&format!("% of the {}-byte image", new.len())),
        "{out}"
    );
    let status = data.status();
    assert!(status.contains("bytes sent"), "{status}");
}
