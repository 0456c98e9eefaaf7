//! The device lifecycle through the wake loop ([`ota_core::runtime::run_wake`], here over the
//! simulated link): what a wake restores from storage and what it tells storage, including the
//! three defects a firmware author met before the loop existed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::sync::Mutex;

use common::*;
use ota_core::device::SleepReason;
use ota_core::host::{Decision, DesiredState, Handler, MemImages, SingleRelease};
use ota_core::storage::UpdateStorage;
use ota_core::wire::{
    CheckIn, DigestPrefix, ImageId, LastOutcome, ResultCode, RunningFirmware, Version, WakeBudget,
};
use ota_core::{Device, DeviceConfig};
use ota_test_support::fixture;
use ota_test_support::sim::{run_wake, LinkProfile, Pipe, SimRng};
use ota_test_support::MemStorage;

/// A bare configuration, as a firmware author writes it: `DeviceConfig::new` and nothing else.
fn bare_config() -> DeviceConfig {
    DeviceConfig::new(
        b"dev-0001",
        VENDOR,
        CLASS,
        RunningFirmware {
            version: Version::new(1, 3, 2),
            digest: DigestPrefix([0xab; 8]),
            sequence: RUNNING_SEQ,
        },
    )
    .unwrap()
}

/// Wakes until staged (or `max` wakes); the reasons of each wake.
fn wakes<D: DesiredState>(
    handler: &Handler<D, MemImages>,
    storage: &mut MemStorage,
    link: &LinkProfile,
    budget: WakeBudget,
    max: usize,
) -> Vec<SleepReason> {
    let (mut up, mut down, mut rng, mut now) =
        (Pipe::default(), Pipe::default(), SimRng::new(3), 0);
    let mut reasons = Vec::new();
    for _ in 0..max {
        let mut dev: Device<_> = Device::new(bare_config(), verifier());
        let out = run_wake(
            &mut dev, storage, handler, link, &mut up, &mut down, &mut rng, &mut now, budget,
        )
        .unwrap();
        reasons.push(out.reason);
        now += 60_000;
        if out.reason == SleepReason::Staged {
            break;
        }
    }
    reasons
}

#[test]
fn the_staging_capacity_comes_from_storage() {
    // Before: DeviceConfig::new left the capacity at 0, so every manifest was refused as too
    // large unless the author copied the capacity in by hand.
    let img = image(20_000, 1);
    let handler = handler(&img, 1024);
    let mut storage = MemStorage::new(32 * 1024);
    let reasons = wakes(
        &handler,
        &mut storage,
        &LinkProfile::ideal(50),
        WakeBudget::default(),
        3,
    );
    assert_eq!(reasons.last(), Some(&SleepReason::Staged), "{reasons:?}");
    assert_eq!(storage.staged(img.len()), img);
}

#[test]
fn a_device_built_for_a_small_window_caps_the_configured_one() {
    // `WINDOW` sizes the window's RAM; a configured window above it would ask for requests
    // the device has no room to track.
    let mut config = bare_config();
    config.window = 8;
    let mut dev: Device<_, 1024, 2> = Device::new(config, verifier());
    assert_eq!(dev.config().window, 2);
    let img = image(20_000, 2);
    let handler = handler(&img, 1024);
    let mut storage = MemStorage::new(32 * 1024);
    let (mut up, mut down, mut rng, mut now) =
        (Pipe::default(), Pipe::default(), SimRng::new(5), 0);
    let out = run_wake(
        &mut dev,
        &mut storage,
        &handler,
        &LinkProfile::ideal(50),
        &mut up,
        &mut down,
        &mut rng,
        &mut now,
        WakeBudget::default(),
    )
    .unwrap();
    assert_eq!(out.reason, SleepReason::Staged);
    assert_eq!(storage.staged(img.len()), img);
}

/// Records the last outcome each check-in carried.
struct Recording(SingleRelease, Mutex<Vec<LastOutcome>>);

impl DesiredState for Recording {
    fn decide(&self, c: &CheckIn<'_>) -> Decision {
        self.1.lock().unwrap().push(c.last);
        self.0.decide(c)
    }
    fn may_fetch(&self, device: &str, image: ImageId) -> bool {
        self.0.may_fetch(device, image)
    }
}

#[test]
fn an_outcome_is_forgotten_only_once_a_check_in_carrying_it_is_answered() {
    // Before: the application called `outcome_reported()` unless the wake ended `LinkLost`,
    // but an unanswered check-in ends `BudgetExhausted`: a rollback report was lost.
    let img = image(8_000, 2);
    let inner = handler(&img, 1024);
    let release = inner.desired().clone();
    let handler = fixture::serve(Recording(release, Mutex::new(Vec::new())), ImageId(3), &img);
    let mut storage = MemStorage::new(16 * 1024);
    let rolled_back = LastOutcome::RolledBack {
        sequence: 40,
        reason: ResultCode::HEALTH_CHECK_FAILED,
    };
    storage.set_outcome(rolled_back).unwrap();
    // A dead link and a 3 s budget: the check-in goes unanswered.
    let dead = LinkProfile {
        loss_percent: 100,
        ..LinkProfile::ideal(50)
    };
    let budget = WakeBudget {
        bytes: None,
        millis: Some(3_000),
    };
    let reasons = wakes(&handler, &mut storage, &dead, budget, 1);
    assert_eq!(reasons, [SleepReason::BudgetExhausted]);
    assert_eq!(
        storage.load().unwrap().outcome,
        rolled_back,
        "kept for the next wake"
    );
    // The next wake gets through: the check-in carries the rollback, then storage forgets it.
    let reasons = wakes(&handler, &mut storage, &LinkProfile::ideal(50), budget, 1);
    assert_eq!(reasons.len(), 1);
    assert_eq!(
        handler.desired().1.lock().unwrap().first(),
        Some(&rolled_back)
    );
    assert_eq!(storage.load().unwrap().outcome, LastOutcome::None);
}

#[test]
fn an_integrity_failure_is_kept_for_the_next_check_in() {
    // The image the server holds is not the one its manifest names: the digest read back
    // fails, and the failure survives a reset so the server learns of it and stops offering.
    let img = image(6_000, 3);
    let mut bad = img.clone();
    bad[100] ^= 1;
    let handler = fixture::serve(handler(&img, 1024).desired().clone(), ImageId(3), &bad);
    let mut storage = MemStorage::new(16 * 1024);
    let reasons = wakes(
        &handler,
        &mut storage,
        &LinkProfile::ideal(50),
        WakeBudget::default(),
        1,
    );
    assert_eq!(reasons, [SleepReason::Failed]);
    assert_eq!(
        storage.load().unwrap().outcome,
        LastOutcome::Failed {
            sequence: RUNNING_SEQ + 1,
            reason: ResultCode::INTEGRITY_FAILURE
        }
    );
}

/// Every block the CoAP server sends is read from [`Application::image`]: over images in memory
/// it must hand out the image it holds, not a copy per block (a copy of a 1 MiB image per
/// 1 KiB block made the server three times slower than libcoap's).
#[test]
fn blocks_from_memory_images_share_the_image() {
    use ota_core::host::{now_or_never, Application, Peer};
    let image: Vec<u8> = (0..64 * 1024u32).map(|i| (i * 7) as u8).collect();
    let handler = handler(&image, 1024);
    let peer = Peer::Anonymous;
    let fetch = |offset| {
        now_or_never(handler.image(peer, ImageId(3), offset, 1024))
            .expect("memory images answer at once")
            .expect("the offered image may be fetched")
    };
    let (first, later) = (fetch(0), fetch(40 * 1024));
    assert!(std::sync::Arc::ptr_eq(&first.bytes, &later.bytes));
    assert_eq!(&*first.bytes, &image[..]);
}

/// One wake of `dev` over an ideal simulated link, its messages received into a buffer of
/// `RX` bytes (`run_wake_in`), against a server of `img` in `chunk`-byte chunks; the wake's end
/// and what storage staged.
fn wake_in<const N: usize, const RX: usize>(
    dev: &mut Device<ota_core::manifest::Ed25519Verifier, N>,
    img: &[u8],
    chunk: u16,
) -> (
    Result<
        ota_core::runtime::WakeEnd,
        ota_core::runtime::WakeError<usize, ota_test_support::mem::MemError>,
    >,
    Vec<u8>,
) {
    use ota_core::runtime::block::block_on;
    use ota_core::runtime::{run_wake_in, Blocking, WakeOptions};
    use ota_test_support::sim::{SimClock, SimLink};

    let handler = handler(img, chunk);
    let mut storage = MemStorage::new(16 * 1024);
    let (mut up, mut down, mut rng) = (Pipe::default(), Pipe::default(), SimRng::new(5));
    let clock = SimClock(std::cell::Cell::new(0));
    let profile = LinkProfile::ideal(50);
    let mut link = SimLink::new(&handler, &profile, &mut up, &mut down, &mut rng, &clock);
    let mut rx = [0u8; RX];
    let end = block_on(run_wake_in(
        dev,
        &mut link,
        &mut Blocking(&mut storage),
        &clock,
        WakeBudget::default(),
        &WakeOptions::default(),
        &mut rx,
        |_| {},
    ));
    (end, storage.staged(img.len()))
}

#[test]
fn a_receive_buffer_sized_for_the_device_narrows_the_chunks_it_asks_for() {
    // A device with room for 1 KiB chunks but a 600-byte receive buffer: a 1 KiB chunk
    // message would not fit, so it must never invite one.
    let mut dev: Device<_, 1024> = Device::new(bare_config(), verifier());
    let img = image(6_000, 2);
    let (end, staged) = wake_in::<1024, 600>(&mut dev, &img, 512);
    assert_eq!(
        dev.config().max_chunk,
        600 - ota_core::runtime::WIRE_CHUNK_OVERHEAD
    );
    // Chunks of 512 bytes fit, and the image stages through the small buffer.
    assert_eq!(end.unwrap().reason, SleepReason::Staged);
    assert_eq!(staged, img);
}

#[test]
fn a_receive_buffer_too_small_for_an_offer_is_refused_before_anything_is_done() {
    use ota_core::runtime::{WakeError, WIRE_CHUNK_OVERHEAD};
    use ota_core::wire::MAX_REPLY_LEN;

    // Room for 128-byte chunks, but not for a check-in reply carrying a manifest.
    let mut dev: Device<_, 128> = Device::new(bare_config(), verifier());
    let (end, _) = wake_in::<128, 200>(&mut dev, &image(2_000, 2), 128);
    let need = MAX_REPLY_LEN + usize::from(WIRE_CHUNK_OVERHEAD);
    assert!(matches!(end, Err(WakeError::ReceiveBuffer { len: 200, need: n }) if n == need));
    // Nothing went out.
    assert_eq!(dev.stats().bytes_sent, 0);
}

#[test]
fn a_power_of_two_link_never_narrows_chunks_below_its_smallest_block() {
    use ota_core::runtime::{LinkLimits, MIN_POW2_CHUNK};
    let limits = LinkLimits {
        max_chunk: 1024,
        pow2_chunks: true,
        overhead: 128,
        copies: true,
    };
    let mut config = bare_config();
    limits.apply_within(&mut config, 130);
    assert_eq!(config.max_chunk, MIN_POW2_CHUNK);
    limits.apply_within(&mut config, 128 + 700);
    assert_eq!(
        config.max_chunk, MIN_POW2_CHUNK,
        "never widened past what it was"
    );
    let mut config = bare_config();
    limits.apply_within(&mut config, 128 + 700);
    assert_eq!(config.max_chunk, 512);
}

#[test]
fn a_link_that_cannot_copy_turns_copies_off_and_one_that_can_leaves_the_choice() {
    use ota_core::runtime::LinkLimits;
    let stream = LinkLimits {
        max_chunk: 1024,
        pow2_chunks: false,
        overhead: 32,
        copies: false,
    };
    let datagrams = LinkLimits {
        copies: true,
        ..stream
    };
    let mut config = bare_config();
    assert!(config.request_copies, "on by default");
    datagrams.apply(&mut config);
    assert!(config.request_copies);
    stream.apply(&mut config);
    assert!(!config.request_copies);
    datagrams.apply(&mut config);
    assert!(
        !config.request_copies,
        "a link never turns on what was turned off"
    );
}
