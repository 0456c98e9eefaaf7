//! A build without the `delta` feature (no applier) refuses a patch download at `Begin`, before
//! anything is written, as a failure of that download only: the device reports `PATCH_FAILED`
//! and the server offers the whole image, which this build still stages.
//!
//! `cargo test -p ota-storage --no-default-features --features std --test without_delta`
#![cfg(not(feature = "delta"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use ota_core::manifest::{Manifest, StoredManifest};
use ota_core::resume::ResumeState;
use ota_core::storage::{StorageFailure, UpdateStorage};
use ota_core::wire::{Digest, ImageId};
use ota_storage::{FlashStorage, Layout, Partition, StorageError, UpdateState};
use ota_test_support::fixture::{self, bytes, patch_info, Release};
use ota_test_support::SimFlash;
use sha2::{Digest as _, Sha256};

type Flash = SimFlash<8, 1024>;

fn layout() -> Layout {
    Layout {
        active: Partition::new(0, 8 * 1024),
        dfu: Partition::new(8 * 1024, 9 * 1024),
        journal: Partition::new(17 * 1024, 2 * 1024),
    }
}

fn stored(m: Manifest) -> StoredManifest {
    StoredManifest::from_signed(&Release::new(m).signed().as_signed()).unwrap()
}

#[test]
fn a_patch_is_refused_at_begin_and_the_whole_image_still_stages() {
    let old = bytes(6000, 21);
    let mut new = old.clone();
    new[100] ^= 0x55;
    let patch = ota_delta::diff(&old, &new).unwrap();
    let mut f = Flash::new(19);
    f.contents_mut()[..old.len()].copy_from_slice(&old);
    let mut s = FlashStorage::open(f, layout()).unwrap();

    // The patch: refused before anything is written.
    let m = Manifest {
        sequence: 3,
        ..fixture::manifest(&new, 64)
    };
    let as_patch = stored(m.with_patch(patch_info(&old, &patch)));
    let ops = s.flash().ops();
    let state = ResumeState::new(as_patch.as_signed().digest(), ImageId(1));
    let e = s.begin(&as_patch, &state).unwrap_err();
    assert_eq!(e, StorageError::PatchUnsupported);
    assert_eq!(
        <FlashStorage<Flash> as UpdateStorage>::failure(&e),
        StorageFailure::Patch
    );
    assert_eq!(s.flash().ops(), ops, "nothing written");
    assert!(s.load().unwrap().download.is_none());

    // The whole image, offered next: staged and verified as ever.
    let whole = stored(m);
    let mut state = ResumeState::new(whole.as_signed().digest(), ImageId(1));
    s.begin(&whole, &state).unwrap();
    for (i, part) in new.chunks(64).enumerate() {
        let offset = (i * 64) as u32;
        s.write(offset, part).unwrap();
        assert!(state.mark(offset, 64, new.len() as u32));
        s.persist(&state).unwrap();
    }
    let mut staged = vec![0u8; new.len()];
    s.read(0, &mut staged).unwrap();
    assert_eq!(staged, new);
    assert_eq!(m.digest, Digest(Sha256::digest(&staged).into()));
    s.mark_staged(&state).unwrap();
    assert_eq!(s.state(), UpdateState::Staged);
}
