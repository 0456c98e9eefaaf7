//! Exhaustive power-cut tests: the whole update path, with power lost at every single flash
//! write and erase in turn, each run restarting from the flash as the cut left it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use common::*;
use ota_core::wire::ResultCode;

fn scenario(healthy: bool) -> Scenario {
    Scenario {
        old: bytes(7 * 1024 + 300, 1),
        new: bytes(8 * 1024, 2),
        chunk: 1024,
        healthy,
        wake_bytes: 3 * 1024 + 600,
        write_once: false,
        patch: None,
        loss_percent: 0,
        power_off_sleep: false,
    }
}

/// Runs the life once without a cut to count its operations, then once per cut point.
/// Refetched bytes per cut: at most one chunk on multiwrite flash, at most a sector's chunks
/// and one more on write-once flash (a torn chunk there costs its sector).
fn exhaustive<const W: usize, const E: usize>(s: &Scenario, expect: End) -> (u64, u32) {
    let refetch_bound = if s.write_once {
        E as u64 + u64::from(s.chunk)
    } else {
        u64::from(s.chunk)
    };
    let (end, stats, flash) = live::<W, E>(s, fresh_flash::<W, E>(s), None);
    assert_eq!(end, expect);
    assert!(!stats.cut_happened);
    assert_eq!(
        stats.accepted_payload,
        s.transfer_len() as u64,
        "no cut, no refetch"
    );
    assert!(
        stats.wakes > 2,
        "the download should span several wakes: {stats:?}"
    );
    let total = flash.ops();
    let mut trial_resets = 0;
    for k in 0..total {
        let (end, stats, _) = live::<W, E>(s, fresh_flash::<W, E>(s), Some(k));
        assert!(stats.cut_happened, "cut {k} of {total} never happened");
        assert!(
            stats.accepted_payload <= s.transfer_len() as u64 + refetch_bound,
            "cut {k}: refetched more than {refetch_bound} bytes ({} accepted)",
            stats.accepted_payload
        );
        match end {
            e if e == expect => {}
            // A cut after the trial boot and before the confirm is a reset on trial: the
            // design reverts, and says so.
            End::RolledBack(ResultCode::TRIAL_RESET) => trial_resets += 1,
            other => panic!("cut {k}: ended {other:?}, expected {expect:?}"),
        }
    }
    (total, trial_resets)
}

/// 4 KiB sectors, 4-byte writes: the reference geometry.
#[test]
fn every_cut_on_the_update_path() {
    let (cuts, trial_resets) = exhaustive::<4, 4096>(&scenario(true), End::Updated);
    println!("update path, 4 KiB sectors: {cuts} cut points; {trial_resets} in the trial window reverted");
    assert!(cuts > 50);
}

#[test]
fn every_cut_on_the_rollback_path() {
    let (cuts, _) = exhaustive::<4, 4096>(
        &scenario(false),
        End::RolledBack(ResultCode::HEALTH_CHECK_FAILED),
    );
    println!("rollback path, 4 KiB sectors: {cuts} cut points");
    assert!(cuts > 50);
}

/// 1 KiB sectors and 8-byte writes: the journal rotates several times per update, so cuts land
/// in rotations too.
#[test]
fn every_cut_with_small_sectors_and_journal_rotation() {
    let (a, _) = exhaustive::<8, 1024>(&scenario(true), End::Updated);
    let (b, _) = exhaustive::<8, 1024>(
        &scenario(false),
        End::RolledBack(ResultCode::HEALTH_CHECK_FAILED),
    );
    println!("1 KiB sectors: {a} cut points on the update path, {b} on the rollback path");
}

/// Write-once ECC flash (8-byte units, 4 KiB sectors, as STM32L4): no unit is ever programmed
/// twice without an erase, a torn unit reads as an ECC error, and still every cut leaves the
/// old or the new image whole.
#[test]
fn every_cut_on_write_once_flash() {
    let s = Scenario {
        write_once: true,
        ..scenario(true)
    };
    let (a, _) = exhaustive::<8, 4096>(&s, End::Updated);
    let r = Scenario {
        write_once: true,
        ..scenario(false)
    };
    let (b, _) = exhaustive::<8, 4096>(&r, End::RolledBack(ResultCode::HEALTH_CHECK_FAILED));
    println!("write-once flash, 4 KiB sectors: {a} cut points on the update path, {b} on the rollback path");
    assert!(a > 50 && b > 50);
}

/// Write-once with 16-byte units (STM32H7) and 1 KiB sectors: the journal rotates under cuts.
#[test]
fn every_cut_on_write_once_flash_with_small_sectors() {
    let s = Scenario {
        write_once: true,
        ..scenario(true)
    };
    let (a, _) = exhaustive::<16, 1024>(&s, End::Updated);
    println!("write-once flash, 16-byte units, 1 KiB sectors: {a} cut points");
}
