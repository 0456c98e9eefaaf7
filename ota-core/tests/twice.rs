//! Requests sent twice on a path that loses many datagrams ([`Transmit::twice`]): never before
//! the server said it drops copies, never for the first send of a check-in, from the start of a
//! wake that remembers nothing until a clean path shows single requests do, on again once
//! single requests fail that often, and never under `Aimd` or with `request_copies` off.
//!
//! Over the exact link (`common::exact`), which carries a pair as one send.
//!
//! [`Transmit::twice`]: ota_core::device::Transmit::twice
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use common::exact::{self, Send, Woken};
use common::*;
use ota_core::device::{Congestion, PathMemory, SleepReason};
use ota_core::manifest::Ed25519Verifier;
use ota_core::wire::WakeBudget;
use ota_core::Device;

const CHUNK: u16 = 512;
const CHUNKS: u32 = 60;

/// One wake downloading the whole image; `prepare` runs on the device before it wakes.
fn run(
    congestion: Congestion,
    lose: &dyn Fn(&[Send], &Send) -> bool,
    prepare: impl FnOnce(&mut Device<Ed25519Verifier>),
) -> Woken {
    let img = image((u32::from(CHUNK) * CHUNKS) as usize, 9);
    let handler = handler(&img, CHUNK);
    let w = exact::woken_with(
        img.len(),
        &handler,
        (8, congestion),
        WakeBudget::default(),
        lose,
        prepare,
    );
    assert_eq!(w.reason, SleepReason::Staged);
    assert_eq!(w.storage.staged(img.len()), img);
    w
}

fn chunk_sends(log: &[Send]) -> Vec<Send> {
    log.iter().filter(|s| s.offset.is_some()).copied().collect()
}

/// Loses every other chunk request: single requests fail half the time, above `TWICE_ON`.
fn every_other(log: &[Send], send: &Send) -> bool {
    send.offset.is_some() && log.iter().filter(|s| s.offset.is_some()).count() % 2 == 0
}

fn clean(_: &[Send], _: &Send) -> bool {
    false
}

/// What a device that last sent single requests on a clean path, to a server that drops
/// copies, remembers.
const CLEAN_MEMORY: PathMemory = PathMemory {
    min_rtt_ms: 2 * exact::ONE_WAY_MS as u32,
    window: 8,
    fail_rate: 16,
    twice: false,
    drops_copies: true,
};

#[test]
fn nothing_goes_twice_before_the_server_said_it_drops_copies() {
    let w = run(Congestion::LossTolerant, &every_other, |_| {});
    assert!(w.log.iter().all(|s| !s.twice), "{:?}", w.log);
    assert!(!w.dev.path_memory().unwrap().drops_copies);
}

#[test]
fn a_wake_that_remembers_nothing_starts_in_pairs_and_a_clean_path_ends_them() {
    let w = run(Congestion::LossTolerant, &clean, |d| {
        d.server_drops_copies(true)
    });
    assert!(!w.log.iter().find(|s| s.checkin).unwrap().twice);
    let chunks = chunk_sends(&w.log);
    assert!(chunks[0].twice, "the first request goes twice");
    let pairs = chunks.iter().filter(|s| s.twice).count();
    // Ten answered pairs bring the gate from where pairs start (76/256) below `TWICE_OFF`
    // (56/256); those sent while the first ten were on their way go twice as well.
    assert!((10..=20).contains(&pairs), "{pairs} pairs");
    let first_single = chunks.iter().position(|s| !s.twice).unwrap();
    assert!(
        chunks[first_single..].iter().all(|s| !s.twice),
        "once off on a clean path, off for good"
    );
    let memory = w.dev.path_memory().unwrap();
    assert!(!memory.twice);
    assert!(memory.drops_copies);
}

#[test]
fn single_requests_failing_half_the_time_turn_pairs_on_and_keep_them() {
    let w = run(Congestion::LossTolerant, &every_other, |d| {
        d.remember_path(CLEAN_MEMORY)
    });
    let chunks = chunk_sends(&w.log);
    assert!(!chunks[0].twice, "the memory said single requests");
    let on = chunks
        .iter()
        .position(|s| s.twice)
        .expect("pairs turned on");
    // From 16/256 to 112/256 at half the outcomes failing: about sixty outcomes.
    assert!((40..=100).contains(&on), "pairs from send {on}");
    assert!(chunks[on..].iter().all(|s| s.twice), "and kept on");
    assert!(w.dev.path_memory().unwrap().twice);
}

#[test]
fn a_remembered_lossy_path_starts_in_pairs_and_a_resent_check_in_goes_twice() {
    let memory = PathMemory {
        twice: true,
        fail_rate: 100,
        ..CLEAN_MEMORY
    };
    // The first check-in is lost.
    let lose_first_checkin =
        |log: &[Send], send: &Send| send.checkin && !log.iter().any(|s| s.checkin);
    let w = run(Congestion::LossTolerant, &lose_first_checkin, |d| {
        d.remember_path(memory)
    });
    let checkins: Vec<_> = w.log.iter().filter(|s| s.checkin).collect();
    assert!(checkins.len() >= 2);
    assert!(!checkins[0].twice, "the first send goes once");
    assert!(checkins[1].twice, "its resend twice");
    assert!(chunk_sends(&w.log)[0].twice);
}

#[test]
fn aimd_and_a_device_with_copies_off_never_send_twice() {
    let w = run(Congestion::Aimd, &every_other, |d| {
        d.server_drops_copies(true)
    });
    assert!(w.log.iter().all(|s| !s.twice));
    let w = run(Congestion::LossTolerant, &every_other, |d| {
        d.config_mut().request_copies = false;
        d.server_drops_copies(true);
    });
    assert!(w.log.iter().all(|s| !s.twice));
}

#[test]
fn a_resent_check_in_goes_twice_before_the_server_said_anything_and_requests_do_not() {
    // A wake that remembers nothing reads the path as lossy until shown otherwise; its first
    // check-in is lost. A CoAP server answers a repeated message from its deduplication
    // cache, so the resend may go twice; the chunk requests wait for the server's word.
    let lose_first_checkin =
        |log: &[Send], send: &Send| send.checkin && !log.iter().any(|s| s.checkin);
    let w = run(Congestion::LossTolerant, &lose_first_checkin, |_| {});
    let checkins: Vec<_> = w.log.iter().filter(|s| s.checkin).collect();
    assert!(!checkins[0].twice);
    assert!(checkins[1].twice);
    assert!(chunk_sends(&w.log).iter().all(|s| !s.twice));
    // With copies off, once.
    let w = run(Congestion::LossTolerant, &lose_first_checkin, |d| {
        d.config_mut().request_copies = false
    });
    assert!(w.log.iter().all(|s| !s.twice));
}
