//! The simulated and file-backed flashes keep NOR semantics.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use embedded_storage::nor_flash::{NorFlash, ReadNorFlash};
use ota_test_support::flash::{SimError, SimFlash};
use ota_test_support::FileFlash;

#[test]
fn nor_semantics() {
    let mut f = SimFlash::<4, 256>::new(4);
    assert!(f.contents().iter().all(|&b| b == 0xFF));
    f.write(8, &[0xF0, 0x0F, 0xAA, 0x55]).unwrap();
    // A write only clears bits.
    f.write(8, &[0x3C, 0xFF, 0xFF, 0x00]).unwrap();
    let mut b = [0u8; 4];
    f.read(8, &mut b).unwrap();
    assert_eq!(b, [0x30, 0x0F, 0xAA, 0x00]);
    assert_eq!(f.write(2, &[0; 4]), Err(SimError::NotAligned));
    assert_eq!(f.write(4, &[0; 3]), Err(SimError::NotAligned));
    assert_eq!(f.write(1024, &[0; 4]), Err(SimError::OutOfBounds));
    assert_eq!(f.read(1020, &mut [0; 8]), Err(SimError::OutOfBounds));
    assert_eq!(f.erase(0, 100), Err(SimError::NotAligned));
    f.erase(0, 512).unwrap();
    f.read(8, &mut b).unwrap();
    assert_eq!(b, [0xFF; 4]);
    assert_eq!(f.erase_counts(), &[1, 1, 0, 0]);
}

#[test]
fn cut_write_is_partial_and_kills_the_flash() {
    for seed in 0..50u64 {
        let mut f = SimFlash::<4, 256>::new(1);
        f.set_cut_seed(seed);
        f.cut_at(0);
        let data = [0u8; 64];
        assert_eq!(f.write(0, &data), Err(SimError::PowerLoss));
        let written = f.contents()[..64].iter().filter(|&&b| b == 0).count();
        assert!(written < 64, "a cut write must not complete");
        // Nothing beyond the write is touched.
        assert!(f.contents()[64..].iter().all(|&b| b == 0xFF));
        assert_eq!(f.read(0, &mut [0; 4]), Err(SimError::PowerLoss));
        f.power_on();
        assert!(f.read(0, &mut [0; 4]).is_ok());
    }
}

#[test]
fn cut_erase_is_partial() {
    let mut partial = 0;
    for seed in 0..50u64 {
        let mut f = SimFlash::<4, 256>::new(1);
        f.write(0, &[0u8; 256]).unwrap();
        f.set_cut_seed(seed);
        f.cut_at(0);
        assert_eq!(f.erase(0, 256), Err(SimError::PowerLoss));
        let erased = f.contents().iter().filter(|&&b| b == 0xFF).count();
        assert!(erased < 256);
        if erased > 0 {
            partial += 1;
        }
    }
    assert!(
        partial > 10,
        "cuts should usually leave part of the sector erased"
    );
}

#[test]
fn cut_at_counts_operations() {
    let mut f = SimFlash::<4, 256>::new(2);
    f.cut_at(2);
    f.write(0, &[0; 4]).unwrap();
    f.erase(256, 512).unwrap();
    assert_eq!(f.write(4, &[0; 4]), Err(SimError::PowerLoss));
    assert_eq!(f.ops(), 3);
}

#[test]
fn file_flash_persists_across_reopen() {
    let dir = std::env::temp_dir().join(format!("ota-fileflash-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("flash.bin");
    let _ = std::fs::remove_file(&path);
    {
        let mut f = FileFlash::<4, 256>::open(&path, 4).unwrap();
        assert_eq!(f.capacity(), 1024);
        f.write(256, &[1, 2, 3, 4]).unwrap();
        f.write(256, &[0xFF, 0xFF, 0xFF, 0]).unwrap();
        assert!(f.write(1, &[0; 4]).is_err());
    }
    let mut f = FileFlash::<4, 256>::open(&path, 4).unwrap();
    let mut b = [0u8; 4];
    f.read(256, &mut b).unwrap();
    assert_eq!(b, [1, 2, 3, 0]);
    f.erase(256, 512).unwrap();
    f.read(256, &mut b).unwrap();
    assert_eq!(b, [0xFF; 4]);
    assert!(
        FileFlash::<4, 256>::open(&path, 8).is_err(),
        "size mismatch must be refused"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn write_once_flash_refuses_a_second_program_and_reads_torn_units_as_ecc_errors() {
    let mut f = SimFlash::<8, 256>::write_once(2);
    f.write(0, &[0xAA; 8]).unwrap();
    assert_eq!(f.write(0, &[0x00; 8]), Err(SimError::Reprogrammed));
    assert_eq!(f.reprogram_attempts(), 1);
    f.set_cut_seed(3);
    f.cut_at(0);
    assert_eq!(f.write(64, &[0u8; 32]), Err(SimError::PowerLoss));
    f.power_on();
    assert!(f.torn_units() >= 1);
    // The torn unit (and only a read that covers it) fails.
    let torn_at = (64..96)
        .step_by(8)
        .find(|&a| f.read(a, &mut [0; 8]).is_err())
        .unwrap();
    assert_eq!(f.read(torn_at, &mut [0; 8]), Err(SimError::Ecc));
    assert!(f.read(128, &mut [0; 8]).is_ok());
    f.erase(0, 256).unwrap();
    assert_eq!(f.torn_units(), 0);
    f.write(0, &[0x11; 8]).unwrap();
}

/// ACTIVE 8 KiB, DFU 12 KiB, journal 8 KiB, on 4 KiB sectors: room for a 4 KiB image.
fn small_layout() -> ota_storage::Layout {
    use ota_storage::{Layout, Partition};
    Layout {
        active: Partition::new(0, 8192),
        dfu: Partition::new(8192, 8192 + 4096),
        journal: Partition::new(20480, 8192),
    }
}

/// Write-once storage refuses a chunk size whose chunks would share a write unit or straddle a
/// sector, before anything is written.
#[test]
fn write_once_storage_refuses_chunk_sizes_it_cannot_keep_safe() {
    use ota_core::manifest::StoredManifest;
    use ota_core::resume::ResumeState;
    use ota_core::storage::UpdateStorage;
    use ota_core::wire::ImageId;
    use ota_storage::{FlashStorage, StorageError};
    use ota_test_support::fixture::Release;

    let layout = small_layout();
    for (chunk, ok) in [
        (1024u16, true),
        (416, false),
        (1000, false),
        (4, false),
        (16, true),
    ] {
        let mut s =
            FlashStorage::open_write_once(SimFlash::<8, 4096>::write_once(7), layout).unwrap();
        let signed = Release::of(&[0; 4000], chunk).signed();
        let stored = StoredManifest::from_signed(&signed.as_signed()).unwrap();
        let state = ResumeState::new(stored.as_signed().digest(), ImageId(1));
        let r = s.begin(&stored, &state);
        match (ok, r) {
            (true, Ok(())) => {}
            (false, Err(StorageError::ChunkNotAligned { .. })) => {}
            (_, other) => panic!("chunk {chunk}: {other:?}"),
        }
        // The same when the mode is chosen at run time; multiwrite flash takes any size.
        let mut either =
            FlashStorage::open_either(SimFlash::<8, 4096>::write_once(7), layout, true).unwrap();
        assert_eq!(
            either.begin(&stored, &state).is_ok(),
            ok,
            "chunk {chunk}, either"
        );
        let mut multi = FlashStorage::open(SimFlash::<8, 4096>::new(7), layout).unwrap();
        assert!(
            multi.begin(&stored, &state).is_ok(),
            "chunk {chunk}, multiwrite"
        );
    }
}

/// Patch downloads on the flash storage, both modes: the patch staged in the slot's tail, the
/// image rebuilt in its head from the running image, and every refusal before a byte is spent.
mod patch {
    use ota_core::manifest::{Manifest, PatchInfo, StoredManifest};
    use ota_core::resume::ResumeState;
    use ota_core::storage::{StorageFailure, StorageOp, UpdateStorage};
    use ota_core::wire::ImageId;
    use ota_storage::{
        EitherMode, FlashStorage, Layout, Partition, PatchError, StorageError, UpdateState,
    };
    use ota_test_support::fixture::{self, bytes, patch_info, Release};
    use ota_test_support::SimFlash;
    use sha2::{Digest as _, Sha256};

    const E: usize = 1024;
    type Flash = SimFlash<8, E>;
    type Storage = FlashStorage<Flash, EitherMode>;

    /// ACTIVE and the slot 8 KiB (DFU 9 KiB with its spare), the journal 2 KiB.
    fn layout() -> Layout {
        Layout {
            active: Partition::new(0, 8 * 1024),
            dfu: Partition::new(8 * 1024, 9 * 1024),
            journal: Partition::new(17 * 1024, 2 * 1024),
        }
    }

    /// The running image, a point release of it and the patch between them (about 500 bytes,
    /// several 64-byte chunks).
    fn release() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let old = bytes(6000, 21);
        let mut new = old.clone();
        new[100] ^= 0x55;
        new[4000] ^= 0xAA;
        new.splice(3000..3000, bytes(400, 22));
        let patch = ota_delta::diff(&old, &new).unwrap();
        assert!(
            patch.len() > 4 * 64 && patch.len() < 1024,
            "{}",
            patch.len()
        );
        (old, new, patch)
    }

    fn manifest(new: &[u8], patch: PatchInfo, chunk: u16) -> StoredManifest {
        let m = Manifest {
            sequence: 3,
            ..fixture::manifest(new, chunk)
        };
        let signed = Release::new(m.with_patch(patch)).signed();
        StoredManifest::from_signed(&signed.as_signed()).unwrap()
    }

    /// A flash with `active` in ACTIVE and the slot's head holding an earlier image (as after
    /// an update: the swap leaves the old image there), so the rebuild must erase it.
    fn flash(write_once: bool, active: &[u8]) -> Flash {
        let mut f = if write_once {
            Flash::write_once(19)
        } else {
            Flash::new(19)
        };
        f.contents_mut()[..active.len()].copy_from_slice(active);
        let dfu = layout().dfu.offset as usize;
        f.contents_mut()[dfu..dfu + 5000].copy_from_slice(&bytes(5000, 99));
        f
    }

    fn open(f: Flash, write_once: bool) -> Storage {
        FlashStorage::open_either(f, layout(), write_once).unwrap()
    }

    /// Begins and stages every chunk of `patch` (in patch offsets), each followed by its
    /// progress record, as the device does. Returns the resume record.
    fn download(
        s: &mut Storage,
        stored: &StoredManifest,
        patch: &[u8],
        chunk: usize,
    ) -> ResumeState {
        let mut state = ResumeState::new(stored.as_signed().digest(), ImageId(1));
        s.apply(StorageOp::Begin {
            manifest: stored,
            state,
        })
        .unwrap();
        for (i, c) in patch.chunks(chunk).enumerate() {
            let offset = (i * chunk) as u32;
            s.apply(StorageOp::Write { offset, data: c }).unwrap();
            assert!(state.mark(offset, chunk as u32, patch.len() as u32));
            s.apply(StorageOp::Persist(state)).unwrap();
        }
        state
    }

    /// The first `len` bytes of the slot, through `StorageOp::Read` in 256-byte pieces.
    fn read_image(s: &mut Storage, len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        for (i, piece) in out.chunks_mut(256).enumerate() {
            s.apply(StorageOp::Read {
                offset: (i * 256) as u32,
                buf: piece,
            })
            .unwrap();
        }
        out
    }

    fn end_to_end(write_once: bool) {
        let (old, new, patch) = release();
        let p = patch_info(&old, &patch);
        let stored = manifest(&new, p, 64);
        let mut s = open(flash(write_once, &old), write_once);
        let state = download(&mut s, &stored, &patch, 64);

        // The patch sits in the slot's tail from a sector boundary: capacity 8192, patch under
        // 1 KiB, so from 7 KiB; the head (the image's 6 sectors) is not written yet.
        let base = layout().dfu.offset as usize + 7 * 1024;
        assert_eq!(&s.flash().contents()[base..base + patch.len()], &patch[..]);
        let dfu = layout().dfu.offset as usize;
        assert_eq!(s.flash().contents()[dfu..dfu + 5000], bytes(5000, 99)[..]);

        // A reset before the rebuild: the journal says where the patch is.
        let mut s = open(s.into_flash(), write_once);
        assert_eq!(s.state(), UpdateState::Downloading);
        let before = s.flash().ops();
        s.apply(StorageOp::Rebuild {
            patch: &p,
            image_size: new.len() as u32,
        })
        .unwrap();
        let rebuild_ops = s.flash().ops() - before;
        println!(
            "write_once={write_once}: image {} bytes, patch {} bytes, rebuild {rebuild_ops} flash ops",
            new.len(),
            patch.len()
        );
        let image = read_image(&mut s, new.len());
        assert_eq!(Sha256::digest(&image), Sha256::digest(&new));
        assert!(image == new, "rebuilt byte for byte");
        // The patch is still there, untouched by the rebuild.
        assert_eq!(&s.flash().contents()[base..base + patch.len()], &patch[..]);

        // Asked again (as after a reset that cut it short): starts over, ends the same.
        s.rebuild(&p, new.len() as u32).unwrap();
        assert!(read_image(&mut s, new.len()) == new);
        assert_eq!(s.flash().reprogram_attempts(), 0);
        s.apply(StorageOp::MarkStaged(state)).unwrap();
        let s = open(s.into_flash(), write_once);
        assert_eq!(s.state(), UpdateState::Staged);
    }

    #[test]
    fn a_patch_rebuilds_the_image_on_multiwrite_flash() {
        end_to_end(false);
    }

    #[test]
    fn a_patch_rebuilds_the_image_on_write_once_flash() {
        end_to_end(true);
    }

    #[test]
    fn a_patch_for_another_running_image_is_refused_before_anything_is_written() {
        for write_once in [false, true] {
            let (old, new, patch) = release();
            let mut other = old.clone();
            other[10] ^= 1;
            let stored = manifest(&new, patch_info(&old, &patch), 64);
            let mut s = open(flash(write_once, &other), write_once);
            let before = s.flash().contents().to_vec();
            let ops = s.flash().ops();
            let state = ResumeState::new(stored.as_signed().digest(), ImageId(1));
            let e = s.begin(&stored, &state).unwrap_err();
            assert_eq!(e, StorageError::PatchSource);
            assert_eq!(Storage::failure(&e), StorageFailure::PatchSource);
            assert_eq!(
                s.flash().ops(),
                ops,
                "no write, no erase, no journal record"
            );
            assert!(s.flash().contents() == &before[..]);
            assert!(s.load().unwrap().download.is_none(), "nothing begun");
        }
    }

    #[test]
    fn a_corrupted_patch_byte_fails_the_rebuild_as_a_patch_failure() {
        for write_once in [false, true] {
            let (old, new, patch) = release();
            let p = patch_info(&old, &patch);
            // A byte changed in flash after it was staged: the digest catches it.
            let mut s = open(flash(write_once, &old), write_once);
            download(&mut s, &manifest(&new, p, 64), &patch, 64);
            let at = layout().dfu.offset as usize + 7 * 1024 + patch.len() / 2;
            s.flash_mut().contents_mut()[at] ^= 0x04;
            let e = s.rebuild(&p, new.len() as u32).unwrap_err();
            assert_eq!(e, StorageError::Patch(PatchError::Digest));
            assert_eq!(Storage::failure(&e), StorageFailure::Patch);

            // A patch signed as it is but corrupted at the source: its digest passes, the
            // applier refuses it (its format or the rebuilt image's CRC-32).
            let mut bad = patch.clone();
            let n = bad.len();
            bad[n / 2] ^= 0x10;
            let pb = patch_info(&old, &bad);
            let mut s = open(flash(write_once, &old), write_once);
            download(&mut s, &manifest(&new, pb, 64), &bad, 64);
            let e = s
                .apply(StorageOp::Rebuild {
                    patch: &pb,
                    image_size: new.len() as u32,
                })
                .unwrap_err();
            assert!(matches!(e, StorageError::Patch(_)), "{e:?}");
            assert_eq!(Storage::failure(&e), StorageFailure::Patch);
            assert_eq!(s.flash().reprogram_attempts(), 0);

            // A rebuild for another patch than the one staged.
            let e = s.rebuild(&p, new.len() as u32).unwrap_err();
            assert_eq!(e, StorageError::Patch(PatchError::NotStaged));
        }
    }

    #[test]
    fn the_running_image_is_checked_again_at_the_rebuild() {
        let (old, new, patch) = release();
        let p = patch_info(&old, &patch);
        let mut s = open(flash(false, &old), false);
        download(&mut s, &manifest(&new, p, 64), &patch, 64);
        s.flash_mut().contents_mut()[5] ^= 1;
        let e = s.rebuild(&p, new.len() as u32).unwrap_err();
        assert_eq!(e, StorageError::PatchSource);
        assert_eq!(Storage::failure(&e), StorageFailure::PatchSource);
    }

    #[test]
    fn an_image_and_patch_that_do_not_fit_side_by_side_are_refused_at_begin() {
        let (old, _, _) = release();
        // 7000 bytes take 7 sectors; a 1100-byte patch takes 2 from the top of the 8-sector
        // slot: they overlap, though 7000 + 1100 bytes would fit unrounded.
        let new = bytes(7000, 5);
        let fake = bytes(1100, 6);
        let stored = manifest(&new, patch_info(&old, &fake), 64);
        let mut s = open(flash(false, &old), false);
        let ops = s.flash().ops();
        let state = ResumeState::new(stored.as_signed().digest(), ImageId(1));
        let e = s.begin(&stored, &state).unwrap_err();
        assert!(matches!(e, StorageError::PatchTooLarge { .. }), "{e:?}");
        // Only this download fails: the server offers the whole image next.
        assert_eq!(Storage::failure(&e), StorageFailure::Patch);
        assert_eq!(s.flash().ops(), ops);
        assert!(s.load().unwrap().download.is_none());

        // The same patch beside a 6-sector image fits.
        let new = bytes(6 * 1024, 5);
        let stored = manifest(&new, patch_info(&old, &fake), 64);
        s.begin(&stored, &state).unwrap();
    }
}

/// The outcome rules, through the one `apply` every operation takes: a download given up is
/// recorded only over no update, survives a reset, is forgotten once reported, and never
/// overwrites a download in progress; mark-staged journals the progress and then the state.
#[test]
fn outcomes_and_staging_through_apply() {
    use ota_core::manifest::StoredManifest;
    use ota_core::resume::ResumeState;
    use ota_core::storage::UpdateStorage;
    use ota_core::wire::{ImageId, LastOutcome, ResultCode};
    use ota_storage::{FlashStorage, UpdateState};
    use ota_test_support::fixture::Release;

    let layout = small_layout();
    let failed = LastOutcome::Failed {
        sequence: 3,
        reason: ResultCode::INTEGRITY_FAILURE,
    };
    let mut s = FlashStorage::open(SimFlash::<8, 4096>::new(7), layout).unwrap();
    s.set_outcome(failed).unwrap();
    assert_eq!(s.last_outcome(), failed);
    // Journaled: it survives a reset.
    let mut s = FlashStorage::open(s.into_flash(), layout).unwrap();
    assert_eq!(s.last_outcome(), failed);
    // A second failure does not overwrite the one not yet reported.
    let other = LastOutcome::Failed {
        sequence: 4,
        reason: ResultCode::CANCELLED,
    };
    s.set_outcome(other).unwrap();
    assert_eq!(s.last_outcome(), failed);
    s.set_outcome(LastOutcome::None).unwrap();
    assert_eq!(s.state(), UpdateState::Idle);
    assert_eq!(s.last_outcome(), LastOutcome::None);

    // Over a download in progress a failure is not recorded (the download is the state).
    let image = vec![0x5A; 4096];
    let signed = Release::of(&image, 1024).signed();
    let stored = StoredManifest::from_signed(&signed.as_signed()).unwrap();
    let mut state = ResumeState::new(stored.as_signed().digest(), ImageId(1));
    s.begin(&stored, &state).unwrap();
    assert_eq!(s.state(), UpdateState::Downloading);
    s.set_outcome(failed).unwrap();
    assert_eq!(s.state(), UpdateState::Downloading);
    for (i, c) in image.chunks(1024).enumerate() {
        s.write(i as u32 * 1024, c).unwrap();
    }
    state.next_offset = 4096;
    s.mark_staged(&state).unwrap();
    assert_eq!(s.state(), UpdateState::Staged);
    // Both records are on flash: a reset finds the image staged with its progress.
    let s = FlashStorage::open(s.into_flash(), layout).unwrap();
    assert_eq!(s.state(), UpdateState::Staged);
    let persisted = {
        let mut s = s;
        s.load().unwrap()
    };
    let (resumed, _) = persisted.download.expect("the staged download");
    assert_eq!(resumed.next_offset, 4096);
}
