//! An image delivered as a patch (manifest format 2), through the wake loop over the simulated
//! link: the device fetches the patch, storage rebuilds the image from the running one, the
//! image's digest is checked from storage as for a whole image; a patch for another image is
//! refused before anything is fetched, a patch that does not apply is reported, and a reset
//! during the rebuild costs no patch byte.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use common::*;
use ota_core::device::SleepReason;
use ota_core::host::{Handler, MemImages, SingleRelease};
use ota_core::manifest::PatchInfo;
use ota_core::storage::{CounterStore, Persisted, StorageFailure, UpdateStorage};
use ota_core::wire::{LastOutcome, ResultCode, WakeBudget};
use ota_core::Device;
use ota_test_support::fixture::patch_info;
use ota_test_support::sim::{run_wake, LinkProfile, Pipe, SimRng};
use ota_test_support::{MemError, MemStorage};

/// The running image, a point release of it, and the patch between them.
fn release() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let old = image(48_000, 11);
    let new = point_release(&old, 12);
    let patch = ota_delta::diff(&old, &new).unwrap();
    (old, new, patch)
}

/// What a run of wakes did: the reason of each, the chunk payload bytes accepted in each.
struct Wakes {
    reasons: Vec<Result<SleepReason, String>>,
    accepted: Vec<u64>,
}

fn wakes<S>(handler: &Handler<SingleRelease, MemImages>, storage: &mut S, max: usize) -> Wakes
where
    S: UpdateStorage + CounterStore<Error = <S as UpdateStorage>::Error>,
{
    let (mut up, mut down, mut rng, mut now) =
        (Pipe::default(), Pipe::default(), SimRng::new(5), 0);
    let mut w = Wakes {
        reasons: Vec::new(),
        accepted: Vec::new(),
    };
    for _ in 0..max {
        let mut dev: Device<_> = Device::new(config(0, 8), verifier());
        let out = run_wake(
            &mut dev,
            storage,
            handler,
            &LinkProfile::ideal(50),
            &mut up,
            &mut down,
            &mut rng,
            &mut now,
            WakeBudget::default(),
        );
        w.accepted.push(dev.stats().payload_bytes_accepted);
        let reason = out.map(|o| o.reason).map_err(|e| format!("{e:?}"));
        let done = reason != Ok(SleepReason::UpToDate) && reason.is_ok();
        w.reasons.push(reason);
        now += 60_000;
        if done {
            break;
        }
    }
    w
}

#[test]
fn a_patch_rebuilds_the_image_from_the_running_one() {
    let (old, new, patch) = release();
    println!(
        "image {} bytes, patch {} bytes ({:.1} %)",
        new.len(),
        patch.len(),
        100.0 * patch.len() as f64 / new.len() as f64
    );
    assert!(
        patch.len() * 10 < new.len(),
        "a point release: a small patch"
    );
    let handler = patch_handler(&old, &new, &patch, &patch, 512);
    let mut storage = MemStorage::new(64 * 1024).with_active(&old);
    let w = wakes(&handler, &mut storage, 1);
    assert_eq!(w.reasons, [Ok(SleepReason::Staged)]);
    assert_eq!(storage.staged(new.len()), new);
    // What was fetched is the patch, once.
    assert_eq!(w.accepted, [patch.len() as u64]);
}

#[test]
fn a_patch_for_another_image_is_refused_before_anything_is_fetched() {
    let (old, new, patch) = release();
    let handler = patch_handler(&old, &new, &patch, &patch, 512);
    let mut other = old.clone();
    other[5] ^= 0x40;
    let mut storage = MemStorage::new(64 * 1024).with_active(&other);
    let w = wakes(&handler, &mut storage, 1);
    assert_eq!(w.reasons, [Ok(SleepReason::Failed)]);
    assert_eq!(w.accepted, [0], "no patch byte fetched");
    assert_eq!(
        storage.load().unwrap().outcome,
        LastOutcome::Failed {
            sequence: RUNNING_SEQ + 1,
            reason: ResultCode::PATCH_SOURCE_MISMATCH
        },
        "kept for the next check-in, so the server offers the whole image"
    );
    assert!(storage.state().is_none(), "nothing left staged");
}

#[test]
fn a_patch_that_does_not_apply_is_reported_and_forgotten() {
    let (old, new, patch) = release();
    // The server holds other bytes than its manifest names (same size).
    let mut bad = patch.clone();
    bad[patch.len() / 2] ^= 1;
    let handler = patch_handler(&old, &new, &patch, &bad, 512);
    let mut storage = MemStorage::new(64 * 1024).with_active(&old);
    let w = wakes(&handler, &mut storage, 1);
    assert_eq!(w.reasons, [Ok(SleepReason::Failed)]);
    assert_eq!(
        storage.load().unwrap().outcome,
        LastOutcome::Failed {
            sequence: RUNNING_SEQ + 1,
            reason: ResultCode::PATCH_FAILED
        }
    );
    assert!(storage.state().is_none(), "the bad patch is abandoned");
}

#[test]
fn a_patch_that_does_not_fit_beside_its_image_fails_as_a_patch_before_anything_is_fetched() {
    let (old, new, patch) = release();
    let handler = patch_handler(&old, &new, &patch, &patch, 512);
    // Room for the image but not for the image and its patch side by side: the whole image
    // would fit, so the device must say "patch failed" (the server then offers the whole
    // image), not "out of storage" (the server would give up on it).
    let mut storage = MemStorage::new(new.len() as u32 + 100).with_active(&old);
    let w = wakes(&handler, &mut storage, 1);
    assert_eq!(w.reasons, [Ok(SleepReason::Failed)]);
    assert_eq!(w.accepted, [0]);
    assert_eq!(
        storage.load().unwrap().outcome,
        LastOutcome::Failed {
            sequence: RUNNING_SEQ + 1,
            reason: ResultCode::PATCH_FAILED
        }
    );
}

/// MemStorage whose first rebuild is cut short by a reset (the wake ends with a storage error).
struct CutDuringRebuild {
    inner: MemStorage,
    cuts: u32,
}

impl UpdateStorage for CutDuringRebuild {
    type Error = MemError;
    fn capacity(&self) -> u32 {
        self.inner.capacity()
    }
    fn load(&mut self) -> Result<Persisted, MemError> {
        self.inner.load()
    }
    fn begin(
        &mut self,
        m: &ota_core::manifest::StoredManifest,
        s: &ota_core::resume::ResumeState,
    ) -> Result<(), MemError> {
        self.inner.begin(m, s)
    }
    fn write(&mut self, offset: u32, data: &[u8]) -> Result<(), MemError> {
        self.inner.write(offset, data)
    }
    fn persist(&mut self, s: &ota_core::resume::ResumeState) -> Result<(), MemError> {
        self.inner.persist(s)
    }
    fn read(&mut self, offset: u32, buf: &mut [u8]) -> Result<(), MemError> {
        self.inner.read(offset, buf)
    }
    fn mark_staged(&mut self, s: &ota_core::resume::ResumeState) -> Result<(), MemError> {
        self.inner.mark_staged(s)
    }
    fn abandon(&mut self) -> Result<(), MemError> {
        self.inner.abandon()
    }
    fn set_outcome(&mut self, o: LastOutcome) -> Result<(), MemError> {
        self.inner.set_outcome(o)
    }
    fn rebuild(&mut self, patch: &PatchInfo, image_size: u32) -> Result<(), MemError> {
        if self.cuts == 0 {
            self.cuts += 1;
            // Half an image written, then the power went.
            return Err(MemError::Conflict(image_size / 2));
        }
        self.inner.rebuild(patch, image_size)
    }
    fn failure(e: &MemError) -> StorageFailure {
        MemStorage::failure(e)
    }
}

impl CounterStore for CutDuringRebuild {
    type Error = MemError;
    fn load_counter(&mut self) -> Result<u64, MemError> {
        self.inner.load_counter()
    }
    fn store_counter(&mut self, value: u64) -> Result<(), MemError> {
        self.inner.store_counter(value)
    }
}

#[test]
fn a_reset_during_the_rebuild_redoes_it_without_fetching_again() {
    let (old, new, patch) = release();
    let handler = patch_handler(&old, &new, &patch, &patch, 512);
    let mut storage = CutDuringRebuild {
        inner: MemStorage::new(64 * 1024).with_active(&old),
        cuts: 0,
    };
    let first = wakes(&handler, &mut storage, 1);
    assert!(first.reasons[0].is_err(), "{:?}", first.reasons);
    assert_eq!(first.accepted, [patch.len() as u64]);
    let second = wakes(&handler, &mut storage, 1);
    assert_eq!(second.reasons, [Ok(SleepReason::Staged)]);
    assert_eq!(second.accepted, [0], "no patch byte fetched again");
    assert_eq!(storage.inner.staged(new.len()), new);
}

/// A server keeps signed manifests as body and signature and takes them apart again: a patch
/// manifest must come back with its patch (it came back without one, and the server offered
/// nothing but whole images).
#[test]
fn a_stored_patch_manifest_decodes_with_its_patch() {
    let (old, new, patch) = release();
    let info = patch_info(&old, &patch);
    let signed = signed(&manifest_for(&new, 256).with_patch(info));
    let again =
        ota_core::host::OwnedManifest::new(signed.body().to_vec(), signed.signature()).unwrap();
    assert_eq!(again.manifest().patch, Some(info));
    assert_eq!(again.manifest(), signed.manifest());
}
