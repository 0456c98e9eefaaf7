//! Exhaustive power-cut tests of a patch update: the patch fetched in short wakes into the
//! staging slot's tail, the image rebuilt in its head from the running image, verified,
//! swapped in, trial booted and confirmed (or rolled back), with power lost at every single
//! flash write and erase in turn, each run restarting from the flash as the cut left it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use common::*;
use ota_core::wire::ResultCode;

/// A point release: the running image with a few bytes changed and 1200 bytes inserted; the
/// patch (about 1.3 KB) spans about 11 chunks of 128 bytes, fetched over several wakes.
fn scenario(healthy: bool, write_once: bool) -> Scenario {
    let old = bytes(7 * 1024 + 300, 1);
    let new = point_release(&old, 3, 1200);
    let patch = ota_delta::diff(&old, &new).unwrap();
    Scenario {
        old,
        new,
        chunk: 128,
        healthy,
        wake_bytes: 700,
        write_once,
        patch: Some(patch),
        loss_percent: 0,
        power_off_sleep: false,
    }
}

/// Flash writes and erases of the rebuild alone, on the scenario's flash: the patch staged
/// through the storage as the device stages it, then the rebuild counted. Every one of them is
/// a cut point of the exhaustive runs.
fn rebuild_ops<const W: usize, const E: usize>(s: &Scenario) -> u64 {
    use ota_core::manifest::StoredManifest;
    use ota_core::resume::ResumeState;
    use ota_core::storage::UpdateStorage;
    use ota_core::wire::ImageId;
    use ota_storage::FlashStorage;

    let (signed, patch) = release(s);
    let stored = StoredManifest::from_signed(&signed.as_signed()).unwrap();
    let layout = layout(E as u32, sectors_needed(E, s));
    let flash = fresh_flash::<W, E>(s);
    let mut st = FlashStorage::open_either(flash, layout, s.write_once).unwrap();
    let mut state = ResumeState::new(stored.as_signed().digest(), ImageId(5));
    st.begin(&stored, &state).unwrap();
    let chunk = usize::from(s.chunk);
    for (i, c) in patch.chunks(chunk).enumerate() {
        let offset = (i * chunk) as u32;
        st.write(offset, c).unwrap();
        state.mark(offset, chunk as u32, patch.len() as u32);
        st.persist(&state).unwrap();
    }
    let info = signed.manifest().patch.unwrap();
    let before = st.flash().ops();
    st.rebuild(&info, s.new.len() as u32).unwrap();
    st.flash().ops() - before
}

/// What an exhaustive run covered.
#[derive(Debug)]
struct Covered {
    /// Cut points: every flash write and erase of the uncut life.
    cuts: u64,
    /// Of them, in the rebuild.
    rebuild_cuts: u64,
    /// Cuts in the trial window, which revert (a reset on trial).
    trial_resets: u32,
    /// The most patch bytes fetched again after one cut.
    max_refetch: u64,
    /// Cuts that cost any refetch at all.
    refetching_cuts: u32,
}

/// Runs the life once without a cut to count its operations, then once per cut point. Every
/// run must end with the expected image active, byte for byte (checked by `live` against NEW
/// or OLD), and refetch at most one chunk of the patch per cut on multiwrite flash, at most a
/// sector's chunks and one more on write-once flash (a torn chunk there costs its sector).
fn exhaustive<const W: usize, const E: usize>(s: &Scenario, expect: End) -> Covered {
    let patch_len = s.transfer_len() as u64;
    assert!(
        patch_len < s.new.len() as u64 / 4,
        "a point release: a small patch ({patch_len} bytes)"
    );
    assert!(
        patch_len > 4 * u64::from(s.chunk),
        "the patch spans several chunks"
    );
    let refetch_bound = if s.write_once {
        E as u64 + u64::from(s.chunk)
    } else {
        u64::from(s.chunk)
    };
    let (end, stats, flash) = live::<W, E>(s, fresh_flash::<W, E>(s), None);
    assert_eq!(end, expect);
    assert!(!stats.cut_happened);
    assert_eq!(stats.accepted_payload, patch_len, "no cut, no refetch");
    assert!(
        stats.wakes > 2,
        "the download should span several wakes: {stats:?}"
    );
    let total = flash.ops();
    let mut covered = Covered {
        cuts: total,
        rebuild_cuts: rebuild_ops::<W, E>(s),
        trial_resets: 0,
        max_refetch: 0,
        refetching_cuts: 0,
    };
    assert!(
        covered.rebuild_cuts > 0 && covered.rebuild_cuts < total,
        "the rebuild's operations are among the cut points"
    );
    for k in 0..total {
        let mut flash = fresh_flash::<W, E>(s);
        flash.set_cut_seed(k ^ 0x9e37);
        let (end, stats, _) = live::<W, E>(s, flash, Some(k));
        assert!(stats.cut_happened, "cut {k} of {total} never happened");
        let refetch = stats.accepted_payload.saturating_sub(patch_len);
        assert!(
            refetch <= refetch_bound,
            "cut {k}: refetched {refetch} bytes, more than {refetch_bound}"
        );
        covered.max_refetch = covered.max_refetch.max(refetch);
        covered.refetching_cuts += u32::from(refetch > 0);
        match end {
            e if e == expect => {}
            End::RolledBack(ResultCode::TRIAL_RESET) => covered.trial_resets += 1,
            other => panic!("cut {k}: ended {other:?}, expected {expect:?}"),
        }
    }
    covered
}

#[test]
fn every_cut_on_the_patch_update_path() {
    let c = exhaustive::<4, 4096>(&scenario(true, false), End::Updated);
    println!("patch update, multiwrite, 4 KiB sectors: {c:?}");
    assert!(c.max_refetch <= 128);
    assert!(c.cuts > 50);
}

#[test]
fn every_cut_on_the_patch_rollback_path() {
    let c = exhaustive::<4, 4096>(
        &scenario(false, false),
        End::RolledBack(ResultCode::HEALTH_CHECK_FAILED),
    );
    println!("patch rollback, multiwrite, 4 KiB sectors: {c:?}");
    assert!(c.cuts > 50);
}

/// 1 KiB sectors and 8-byte writes: the patch spans two sectors, the journal rotates.
#[test]
fn every_cut_on_the_patch_path_with_small_sectors() {
    let c = exhaustive::<8, 1024>(&scenario(true, false), End::Updated);
    println!("patch update, multiwrite, 1 KiB sectors: {c:?}");
    assert!(c.cuts > 50);
}

/// Write-once ECC flash (8-byte units, 4 KiB sectors): no unit programmed twice without an
/// erase, torn units read as ECC errors; the rebuild writes whole units once each.
#[test]
fn every_cut_on_the_patch_path_on_write_once_flash() {
    let c = exhaustive::<8, 4096>(&scenario(true, true), End::Updated);
    println!("patch update, write-once, 8-byte units, 4 KiB sectors: {c:?}");
    assert!(c.cuts > 50);
}

/// Write-once with 16-byte units and 1 KiB sectors: a torn patch chunk costs a 1 KiB sector.
#[test]
fn every_cut_on_the_patch_path_on_write_once_flash_with_small_sectors() {
    let c = exhaustive::<16, 1024>(&scenario(true, true), End::Updated);
    println!("patch update, write-once, 16-byte units, 1 KiB sectors: {c:?}");
    assert!(c.cuts > 50);
}
