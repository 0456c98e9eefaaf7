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
