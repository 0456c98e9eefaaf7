//! The async storage (`embedded-storage-async` flash) under the device's wake loop, as an
//! embassy firmware runs it: a download in short wakes, staged and verified, on multiwrite and
//! on write-once flash, then installed and booted on trial.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use ota_core::device::SleepReason;
use ota_core::runtime::block::block_on;
use ota_core::runtime::{run_wake, WakeOptions};
use ota_core::wire::{DigestPrefix, RunningFirmware, Version, WakeBudget};
use ota_core::{Device, DeviceConfig};
use ota_storage::{AsyncFlashStorage, BootOutcome, Layout, Partition};
use ota_test_support::fixture::Release;
use ota_test_support::sim::{LinkProfile, Pipe, SimClock, SimLink, SimRng};
use ota_test_support::SimFlash;

fn update(write_once: bool) -> u32 {
    let img: Vec<u8> = (0..20_000u32).map(|i| (i * 31 % 253) as u8).collect();
    let release = Release {
        next_check_in: 60,
        ..Release::of(&img, 1024)
    };
    let server = release.handler(&img);
    let layout = Layout {
        active: Partition::new(0, 5 * 4096),
        dfu: Partition::new(5 * 4096, 6 * 4096),
        journal: Partition::new(11 * 4096, 2 * 4096),
    };
    let flash = if write_once {
        SimFlash::<8, 4096>::write_once(13)
    } else {
        SimFlash::<8, 4096>::new(13)
    };
    let mut storage =
        block_on(async { AsyncFlashStorage::open_either(flash, layout, write_once).await })
            .unwrap();
    let verifier = release.verifier();
    let running = RunningFirmware {
        version: Version::new(1, 0, 0),
        digest: DigestPrefix([0; 8]),
        sequence: 1,
    };
    let (mut up, mut down, mut rng) = (Pipe::default(), Pipe::default(), SimRng::new(9));
    let clock = SimClock::default();
    let profile = LinkProfile::NB_IOT;
    for wake in 1..=20 {
        let mut dev: Device<_> = Device::new(
            DeviceConfig::new(b"dev-1", 1, 2, running).unwrap(),
            verifier.clone(),
        );
        let mut link = SimLink::new(&server, &profile, &mut up, &mut down, &mut rng, &clock);
        let budget = WakeBudget {
            bytes: Some(6_000),
            millis: None,
        };
        let end = block_on(run_wake(
            &mut dev,
            &mut link,
            &mut storage,
            &clock,
            budget,
            &WakeOptions::default(),
            |_| {},
        ))
        .unwrap();
        if end.reason == SleepReason::Staged {
            block_on(storage.request_install()).unwrap();
            let boot = block_on(storage.boot()).unwrap();
            assert_eq!(boot, BootOutcome::Trial { sequence: 2 });
            let flash = storage.flash();
            assert_eq!(
                &flash.contents()[..img.len()],
                &img[..],
                "ACTIVE holds the new image"
            );
            assert_eq!(flash.reprogram_attempts(), 0);
            return wake;
        }
        assert_eq!(end.reason, SleepReason::BudgetExhausted);
    }
    panic!("not staged in 20 wakes");
}

#[test]
fn async_flash_storage_stages_and_installs_on_multiwrite_flash() {
    let wakes = update(false);
    println!("async storage, multiwrite flash: staged in {wakes} wakes");
    assert!(wakes > 2);
}

#[test]
fn async_flash_storage_stages_and_installs_on_write_once_flash() {
    let wakes = update(true);
    println!("async storage, write-once flash: staged in {wakes} wakes");
    assert!(wakes > 2);
}
