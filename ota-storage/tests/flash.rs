//! The simulated and file-backed flashes keep NOR semantics.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use embedded_storage::nor_flash::{NorFlash, ReadNorFlash};
use ota_storage::file::FileFlash;
use ota_storage::sim::{SimError, SimFlash};

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

/// Write-once storage refuses a chunk size whose chunks would share a write unit or straddle a
/// sector, before anything is written.
#[test]
fn write_once_storage_refuses_chunk_sizes_it_cannot_keep_safe() {
    use ota_core::manifest::StoredManifest;
    use ota_core::resume::ResumeState;
    use ota_core::storage::UpdateStorage;
    use ota_core::wire::{Digest, ImageId};
    use ota_storage::{FlashStorage, Layout, Partition, StorageError};

    let layout = Layout {
        active: Partition::new(0, 8192),
        dfu: Partition::new(8192, 8192 + 4096),
        journal: Partition::new(20480, 8192),
    };
    for (chunk, ok) in [
        (1024u16, true),
        (416, false),
        (1000, false),
        (4, false),
        (16, true),
    ] {
        let mut s =
            FlashStorage::open_write_once(SimFlash::<8, 4096>::write_once(7), layout).unwrap();
        let key = ed25519_dalek::SigningKey::from_bytes(&[1; 32]);
        let m = ota_core::manifest::Manifest {
            format: ota_core::manifest::MANIFEST_FORMAT,
            vendor: 1,
            class: 2,
            sequence: 3,
            version: ota_core::wire::Version::new(1, 0, 0),
            image_size: 4000,
            digest: Digest([0; 32]),
            chunk_size: chunk,
            min_running: None,
            patch: None,
        };
        let signed = ota_core::host::OwnedManifest::sign(&m, &key);
        let stored = StoredManifest::from_signed(&signed.as_signed()).unwrap();
        let state = ResumeState::new(stored.as_signed().digest(), ImageId(1));
        let r = s.begin(&stored, &state);
        match (ok, r) {
            (true, Ok(())) => {}
            (false, Err(StorageError::ChunkNotAligned { .. })) => {}
            (_, other) => panic!("chunk {chunk}: {other:?}"),
        }
    }
}

#[test]
fn a_patch_manifest_is_refused_before_anything_is_fetched() {
    // This storage does not rebuild images from patches yet: it says so at Begin, as a failure
    // of that download only (the device reports PATCH_FAILED and the server offers the whole
    // image), not as a flash failure that ends the wake.
    use ota_core::host::OwnedManifest;
    use ota_core::manifest::{Manifest, PatchInfo, StoredManifest, MANIFEST_FORMAT};
    use ota_core::resume::ResumeState;
    use ota_core::storage::{StorageFailure, UpdateStorage};
    use ota_core::wire::{Digest, ImageId, Version};
    use ota_storage::{FlashStorage, Layout, Partition, StorageError};
    let layout = Layout {
        active: Partition::new(0, 8192),
        dfu: Partition::new(8192, 8192 + 4096),
        journal: Partition::new(20480, 8192),
    };
    let mut s = FlashStorage::open(SimFlash::<8, 4096>::new(7), layout).unwrap();
    let key = ed25519_dalek::SigningKey::from_bytes(&[1; 32]);
    let m = Manifest {
        format: MANIFEST_FORMAT,
        vendor: 1,
        class: 2,
        sequence: 3,
        version: Version::new(1, 0, 0),
        image_size: 4000,
        digest: Digest([0; 32]),
        chunk_size: 512,
        min_running: None,
        patch: None,
    }
    .with_patch(PatchInfo {
        size: 300,
        digest: Digest([1; 32]),
        source_size: 4000,
        source_digest: Digest([2; 32]),
    });
    let signed = OwnedManifest::sign(&m, &key);
    let stored = StoredManifest::from_signed(&signed.as_signed()).unwrap();
    let state = ResumeState::new(stored.as_signed().digest(), ImageId(1));
    let e = s.begin(&stored, &state).unwrap_err();
    assert_eq!(e, StorageError::PatchUnsupported);
    assert_eq!(
        <FlashStorage<SimFlash<8, 4096>> as UpdateStorage>::failure(&e),
        StorageFailure::Patch
    );
    assert!(s.load().unwrap().download.is_none(), "nothing begun");
}
