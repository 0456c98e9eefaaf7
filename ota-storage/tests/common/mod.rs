//! A device's whole life through an update — download in short wakes, verify, install, trial
//! boot, confirm or reject — on a simulated flash that can lose power at any operation.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use ota_core::device::SleepReason;
use ota_core::host::{Handler, MemImages, OwnedManifest, SingleRelease};
use ota_core::manifest::{Ed25519Verifier, Manifest};
use ota_core::storage::UpdateStorage;
use ota_core::wire::{DigestPrefix, ImageId, ResultCode, RunningFirmware, Version, WakeBudget};
use ota_core::{Device, DeviceConfig};
use ota_storage::{BootOutcome, EitherMode, FlashStorage, Layout, Partition, UpdateState};
pub use ota_test_support::fixture::bytes;
use ota_test_support::fixture::{self, Release};
use ota_test_support::sim::{run_wake, LinkProfile, Pipe, SimError as WakeError, SimRng};
use ota_test_support::SimFlash;

/// One scenario: geometry comes from the flash type; sizes from here.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub old: Vec<u8>,
    pub new: Vec<u8>,
    pub chunk: u16,
    /// The new image passes its health check.
    pub healthy: bool,
    /// Byte budget per wake (forces interrupted downloads).
    pub wake_bytes: u32,
    /// Write-once (ECC) flash, storage opened in write-once mode.
    pub write_once: bool,
    /// The new image comes as this patch from the old one (fetched, then rebuilt in storage).
    pub patch: Option<Vec<u8>>,
    /// Datagrams the link loses, percent: chunks then arrive out of order and a wake can end
    /// with holes in the resume bitmap.
    pub loss_percent: u32,
    /// The device is powered off in every sleep (deep-sleep parts): storage is opened anew at
    /// every wake, from what the journal holds.
    pub power_off_sleep: bool,
}

impl Scenario {
    /// Bytes the device fetches: the patch's, or the image's.
    pub fn transfer_len(&self) -> usize {
        self.patch.as_ref().map_or(self.new.len(), Vec::len)
    }
}

/// A point release of `old`: a few bytes changed here and there, some new code inserted in the
/// middle, so that the patch spans several chunks.
pub fn point_release(old: &[u8], seed: u64, inserted: usize) -> Vec<u8> {
    let mut new = old.to_vec();
    for (i, at) in (0..new.len()).step_by(997).enumerate() {
        new[at] = new[at].wrapping_add(1 + i as u8);
    }
    let mid = new.len() / 2;
    new.splice(mid..mid, bytes(inserted, seed));
    new
}

/// How a life ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The new image runs, confirmed and reported.
    Updated,
    /// The old image runs again; the rollback was reported with this reason.
    RolledBack(ResultCode),
}

#[derive(Debug, Default, Clone, Copy)]
pub struct LifeStats {
    pub boots: u32,
    pub wakes: u32,
    pub accepted_payload: u64,
    pub cut_happened: bool,
    /// The outcome the application saw and went on to report: once the storage forgets it
    /// (`outcome_reported`), the server has seen it, and the life is over.
    pub outcome: Option<End>,
}

pub fn layout(erase: u32, image_sectors: u32) -> Layout {
    let active = Partition::new(0, image_sectors * erase);
    let dfu = Partition::new(active.size, (image_sectors + 1) * erase);
    let journal = Partition::new(dfu.offset + dfu.size, 2 * erase);
    Layout {
        active,
        dfu,
        journal,
    }
}

/// Sectors of ACTIVE, and of DFU less its spare: the larger image, and the patch's sectors
/// beside it for a patch.
pub fn sectors_needed(erase: usize, s: &Scenario) -> u32 {
    let patch = s.patch.as_ref().map_or(0, |p| p.len().div_ceil(erase));
    (s.old.len().max(s.new.len()).div_ceil(erase) + patch) as u32
}

/// A fresh flash with the old image in ACTIVE.
pub fn fresh_flash<const W: usize, const E: usize>(s: &Scenario) -> SimFlash<W, E> {
    let n = sectors_needed(E, s);
    let sectors = (n + n + 1 + 2) as usize;
    let mut flash = if s.write_once {
        SimFlash::<W, E>::write_once(sectors)
    } else {
        SimFlash::<W, E>::new(sectors)
    };
    flash.contents_mut()[..s.old.len()].copy_from_slice(&s.old);
    flash
}

/// The scenario's release, image 5, with the bytes the server serves for it (the image, or the
/// patch).
fn scenario_release(s: &Scenario) -> (Release, Vec<u8>) {
    let release = Release {
        image: ImageId(5),
        next_check_in: 60,
        ..Release::new(Manifest {
            sequence: 10,
            version: Version::new(2, 0, 0),
            ..fixture::manifest(&s.new, s.chunk)
        })
    };
    match &s.patch {
        Some(p) => (release.with_patch(&s.old, p), p.clone()),
        None => (release, s.new.clone()),
    }
}

/// The signed manifest of the scenario's release, and the bytes the server serves for it (the
/// image, or the patch).
pub fn release(s: &Scenario) -> (OwnedManifest, Vec<u8>) {
    let (release, served) = scenario_release(s);
    (release.signed(), served)
}

fn handler(s: &Scenario) -> Handler<SingleRelease, MemImages> {
    let (release, served) = scenario_release(s);
    release.handler(&served)
}

fn verifier() -> Ed25519Verifier {
    fixture::verifier()
}

/// Which image ACTIVE holds: `Some(true)` new, `Some(false)` old, `None` a mix.
pub fn active_image<const W: usize, const E: usize>(
    flash: &SimFlash<W, E>,
    s: &Scenario,
) -> Option<bool> {
    let mem = flash.contents();
    if mem[..s.new.len()] == s.new[..] {
        Some(true)
    } else if mem[..s.old.len()] == s.old[..] {
        Some(false)
    } else {
        None
    }
}

/// Lives the device's life from `flash` as it is, with a cut armed `cut` operations ahead
/// (`None`: no cut). After a cut the device reboots from the flash the cut left. Every boot
/// checks that ACTIVE holds the old or the new image, never a mix. Panics on any violation.
pub fn live<const W: usize, const E: usize>(
    s: &Scenario,
    mut flash: SimFlash<W, E>,
    cut: Option<u64>,
) -> (End, LifeStats, SimFlash<W, E>) {
    let handler = handler(s);
    let n = sectors_needed(E, s);
    let layout = layout(E as u32, n);
    let mut stats = LifeStats::default();
    if let Some(k) = cut {
        flash.cut_at(k);
    }
    let mut now = 0u64;
    let boots = if s.power_off_sleep { 600 } else { 20 };
    for _ in 0..boots {
        stats.boots += 1;
        if flash.is_dead() {
            stats.cut_happened = true;
            flash.power_on();
        }
        let opened = FlashStorage::open_either(flash, layout, s.write_once);
        assert_eq!(
            opened
                .as_ref()
                .map(|st| st.flash().reprogram_attempts())
                .unwrap_or(0),
            0,
            "a write unit was programmed twice without an erase"
        );
        let mut storage = match opened {
            Ok(st) => st,
            Err(e) => panic!("journal did not recover: {e:?}"),
        };
        let outcome = match storage.boot() {
            Ok(o) => o,
            Err(_) => {
                // Power lost during the boot-time swap: nothing was booted; try again.
                flash = storage.into_flash();
                continue;
            }
        };
        // Whatever the bootloader hands over must be one whole image.
        let which = active_image(storage.flash(), s);
        assert!(
            which.is_some(),
            "ACTIVE holds a mix of images after boot ({:?})",
            storage.state()
        );
        match (outcome, which) {
            (BootOutcome::Trial { .. }, Some(true)) => {}
            (BootOutcome::Trial { .. }, other) => {
                panic!("trial boot of the wrong image: {other:?}")
            }
            (BootOutcome::Reverted { .. }, Some(false)) => {}
            (BootOutcome::Reverted { .. }, other) => panic!("revert left {other:?}"),
            (BootOutcome::Normal, _) => {}
        }
        if let (Some(end), UpdateState::Idle) = (stats.outcome, storage.state()) {
            // A cut hit the write that forgets the reported outcome, and that write landed: the
            // server saw the outcome (that is when a device forgets it), and a real one would
            // not offer the same release again. This harness's server would, so the life ends
            // here, as it would have without the cut.
            let which = active_image(storage.flash(), s);
            match end {
                End::Updated => assert_eq!(which, Some(true)),
                End::RolledBack(_) => assert_eq!(which, Some(false)),
            }
            return (end, stats, storage.into_flash());
        }
        match run_app(s, &mut storage, &handler, outcome, &mut stats, &mut now) {
            Ok(Some(end)) => {
                let which = active_image(storage.flash(), s);
                match end {
                    End::Updated => assert_eq!(which, Some(true)),
                    End::RolledBack(_) => assert_eq!(which, Some(false)),
                }
                if storage.flash().is_dead() {
                    // The cut hit the very last write; that write may or may not have landed.
                    flash = storage.into_flash();
                    continue;
                }
                assert_eq!(
                    storage.flash().reprogram_attempts(),
                    0,
                    "a write unit was programmed twice without an erase"
                );
                return (end, stats, storage.into_flash());
            }
            Ok(None) => flash = storage.into_flash(), // reboot requested
            Err(()) => flash = storage.into_flash(),  // power lost
        }
    }
    panic!("the update never finished: {stats:?}");
}

/// The application after a boot. `Ok(Some(end))` when the life is over, `Ok(None)` to reboot,
/// `Err(())` on power loss.
fn run_app<const W: usize, const E: usize>(
    s: &Scenario,
    storage: &mut FlashStorage<SimFlash<W, E>, EitherMode>,
    handler: &Handler<SingleRelease, MemImages>,
    boot: BootOutcome,
    stats: &mut LifeStats,
    now: &mut u64,
) -> Result<Option<End>, ()> {
    if let BootOutcome::Trial { .. } = boot {
        // The health check.
        return if s.healthy {
            storage.confirm().map_err(|_| ())?;
            Ok(None)
        } else {
            storage
                .reject(ResultCode::HEALTH_CHECK_FAILED)
                .map_err(|_| ())?;
            Ok(None)
        };
    }
    loop {
        match storage.state() {
            UpdateState::Confirmed { .. } => {
                stats.outcome = Some(End::Updated);
                storage.outcome_reported().map_err(|_| ())?;
                return Ok(Some(End::Updated));
            }
            UpdateState::Reverted { reason, .. } => {
                stats.outcome = Some(End::RolledBack(reason));
                storage.outcome_reported().map_err(|_| ())?;
                return Ok(Some(End::RolledBack(reason)));
            }
            UpdateState::Staged => {
                storage.request_install().map_err(|_| ())?;
                return Ok(None);
            }
            UpdateState::Idle | UpdateState::Downloading => {
                stats.wakes += 1;
                assert!(stats.wakes < 500, "download makes no progress");
                let mut config = DeviceConfig::new(
                    b"dev-1",
                    1,
                    2,
                    RunningFirmware {
                        version: Version::new(1, 0, 0),
                        digest: DigestPrefix([0; 8]),
                        sequence: 9,
                    },
                )
                .expect("a valid device id");
                config.staging_capacity = storage.capacity();
                config.window = 3;
                let mut dev: Device<Ed25519Verifier> = Device::new(config, verifier());
                dev.restore_from(storage).map_err(|_| ())?;
                let (mut up, mut down) = (Pipe::default(), Pipe::default());
                let res = run_wake(
                    &mut dev,
                    storage,
                    handler,
                    &LinkProfile {
                        loss_percent: s.loss_percent,
                        ..LinkProfile::ideal(50)
                    },
                    &mut up,
                    &mut down,
                    &mut SimRng::new(u64::from(stats.wakes)),
                    now,
                    WakeBudget {
                        bytes: Some(s.wake_bytes),
                        millis: None,
                    },
                );
                stats.accepted_payload += dev.stats().payload_bytes_accepted;
                match res {
                    Ok(o) => {
                        // On a lossy link a wake may give up on it, unlucky, and sleep.
                        let lost = s.loss_percent > 0 && o.reason == SleepReason::LinkLost;
                        assert!(
                            lost || matches!(
                                o.reason,
                                SleepReason::Staged | SleepReason::BudgetExhausted
                            ),
                            "unexpected end of wake: {o:?}"
                        );
                        if s.power_off_sleep && o.reason != SleepReason::Staged {
                            return Ok(None);
                        }
                    }
                    Err(WakeError::Storage(_)) => return Err(()),
                    Err(e) => panic!("{e}"),
                }
            }
            other => panic!("application sees state {other:?} after boot"),
        }
    }
}
