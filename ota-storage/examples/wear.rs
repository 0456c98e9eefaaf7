//! Flash wear of one full update: erases per sector for a 256 KiB image, 1 KiB chunks, 4 KiB
//! sectors, downloaded over 16 wakes, installed, trial-booted and confirmed.
//!
//! `cargo run --release -p ota-storage --example wear`
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use ota_core::device::SleepReason;
use ota_core::manifest::Manifest;
use ota_core::storage::UpdateStorage;
use ota_core::wire::{DigestPrefix, RunningFirmware, Version, WakeBudget};
use ota_core::{Device, DeviceConfig};
use ota_storage::{BootOutcome, FlashStorage, Layout, Partition};
use ota_test_support::fixture::{self, Release};
use ota_test_support::sim::{run_wake, LinkProfile, Pipe, SimRng};
use ota_test_support::SimFlash;

const E: u32 = 4096;
const IMAGE: u32 = 256 * 1024;

fn main() {
    let n = IMAGE / E;
    let layout = Layout {
        active: Partition::new(0, n * E),
        dfu: Partition::new(n * E, (n + 1) * E),
        journal: Partition::new((2 * n + 1) * E, 2 * E),
    };
    let flash = SimFlash::<4, 4096>::new((2 * n + 3) as usize);
    let mut storage = FlashStorage::open(flash, layout).unwrap();

    let image = fixture::bytes(IMAGE as usize, 7);
    let release = Release {
        next_check_in: 60,
        ..Release::new(Manifest {
            version: Version::new(2, 0, 0),
            ..fixture::manifest(&image, 1024)
        })
    };
    let handler = release.handler(&image);
    let verifier = release.verifier();

    let mut wakes = 0;
    let mut now = 0;
    loop {
        wakes += 1;
        let mut c = DeviceConfig::new(
            b"wear",
            1,
            2,
            RunningFirmware {
                version: Version::new(1, 0, 0),
                digest: DigestPrefix([0; 8]),
                sequence: 1,
            },
        )
        .expect("a valid device id");
        c.staging_capacity = storage.capacity();
        let mut dev: Device<_> = Device::new(c, verifier.clone());
        dev.restore_from(&mut storage).unwrap();
        let budget = WakeBudget {
            bytes: Some(17 * 1024),
            millis: None,
        };
        let (mut up, mut down) = (Pipe::default(), Pipe::default());
        let out = run_wake(
            &mut dev,
            &mut storage,
            &handler,
            &LinkProfile::ideal(100),
            &mut up,
            &mut down,
            &mut SimRng::new(1),
            &mut now,
            budget,
        )
        .unwrap();
        if out.reason == SleepReason::Staged {
            break;
        }
    }
    let after_download = storage.flash().erase_counts().to_vec();
    storage.request_install().unwrap();
    assert!(matches!(storage.boot().unwrap(), BootOutcome::Trial { .. }));
    storage.confirm().unwrap();
    storage.outcome_reported().unwrap();
    assert_eq!(&storage.flash().contents()[..IMAGE as usize], &image[..]);

    let total = storage.flash().erase_counts();
    let region = |r: std::ops::Range<u32>, counts: &[u32]| -> (u32, u32, u32) {
        let s = &counts[r.start as usize..r.end as usize];
        (
            *s.iter().min().unwrap(),
            *s.iter().max().unwrap(),
            s.iter().sum(),
        )
    };
    println!(
        "one update: 256 KiB image, 1 KiB chunks, 4 KiB sectors, 4-byte writes; {wakes} wakes\n"
    );
    println!(
        "{:<10} {:>8} {:>22} {:>22}",
        "region", "sectors", "download (min/max/sum)", "whole update (min/max/sum)"
    );
    for (name, r) in [
        ("ACTIVE", 0..n),
        ("DFU", n..2 * n + 1),
        ("journal", 2 * n + 1..2 * n + 3),
    ] {
        let (a, b, c) = region(r.clone(), &after_download);
        let (d, e, f) = region(r.clone(), total);
        println!(
            "{:<10} {:>8} {:>22} {:>22}",
            name,
            r.len(),
            format!("{a}/{b}/{c}"),
            format!("{d}/{e}/{f}")
        );
    }
    // A progress record is 18 bytes, padded to 20 at 4-byte writes.
    println!(
        "\njournal: a 4 KiB sector takes {} chunk commits between erases",
        (E - 16 - 256) / 20
    );
}
