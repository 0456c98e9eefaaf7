//! A wake that resumes a download asks for its chunks right after the check-in, not a round
//! trip later; the reply then confirms the download or ends it as it would have anyway.
//!
//! Over the exact link (`common::exact`): the first wake stops partway on its time budget, the
//! second resumes while the server offers the same release, nothing, or another one.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::sync::atomic::{AtomicU8, Ordering};

use common::exact::{self, Send, ONE_WAY_MS};
use common::*;
use ota_core::device::{Congestion, PathMemory, SleepReason};
use ota_core::host::{Decision, DesiredState, Handler, MemImages, SingleRelease};
use ota_core::manifest::Ed25519Verifier;
use ota_core::storage::UpdateStorage;
use ota_core::wire::{CheckIn, DeferReason, ImageId, WakeBudget};
use ota_core::{Device, DeviceConfig};
use ota_test_support::MemStorage;

const CHUNK: u16 = 512;
const LEN: usize = 24 * CHUNK as usize;

/// What the server offers: the first release, nothing, or the second one.
struct Switch {
    first: SingleRelease,
    second: SingleRelease,
    mode: AtomicU8,
}

const FIRST: u8 = 0;
const NOTHING: u8 = 1;
const SECOND: u8 = 2;
const BUSY: u8 = 3;

impl DesiredState for Switch {
    fn decide(&self, c: &CheckIn<'_>) -> Decision {
        match self.mode.load(Ordering::SeqCst) {
            FIRST => self.first.decide(c),
            SECOND => self.second.decide(c),
            BUSY => Decision::Defer {
                retry_after: 60,
                reason: DeferReason::ServerBusy,
            },
            _ => Decision::UpToDate {
                next_check_in: 3600,
            },
        }
    }
    fn may_fetch(&self, _device: &str, _image: ImageId) -> bool {
        true
    }
}

struct Setup {
    first: Vec<u8>,
    second: Vec<u8>,
    handler: Handler<Switch, MemImages>,
    storage: MemStorage,
    now: u64,
}

/// Two releases served, the first one offered; a first wake that stops partway through it.
fn after_a_partial_wake(congestion: Congestion) -> Setup {
    let (first, second) = (image(LEN, 11), image(LEN + 700, 12));
    let mut second_release = common::handler(&second, CHUNK).desired().clone();
    second_release.image = ImageId(4);
    let images = MemImages::new();
    images.insert(ImageId(3), first.clone());
    images.insert(ImageId(4), second.clone());
    let switch = Switch {
        first: common::handler(&first, CHUNK).desired().clone(),
        second: second_release,
        mode: AtomicU8::new(FIRST),
    };
    let mut s = Setup {
        handler: Handler::new(switch, images, 1024),
        storage: MemStorage::new(2 * LEN as u32 + 4096),
        first,
        second,
        now: 1_000,
    };
    let budget = WakeBudget {
        bytes: None,
        millis: Some(2_500),
    };
    let reason = wake(&mut s, congestion, budget, &mut vec![], &clean);
    assert_eq!(reason, SleepReason::BudgetExhausted);
    let (state, _) = s
        .storage
        .load()
        .unwrap()
        .download
        .expect("a download to resume");
    assert!(state.next_offset > 0 && (state.next_offset as usize) < LEN);
    s
}

/// Loses nothing.
fn clean(_: &[Send], _: &Send) -> bool {
    false
}

/// Loses the wake's first check-in: the early chunks come before the reply to its resend.
fn first_check_in_lost(log: &[Send], send: &Send) -> bool {
    send.checkin && !log.iter().any(|s| s.checkin)
}

fn wake(
    s: &mut Setup,
    congestion: Congestion,
    budget: WakeBudget,
    log: &mut Vec<Send>,
    lose: &dyn Fn(&[Send], &Send) -> bool,
) -> SleepReason {
    let mut cfg = config(s.storage.capacity(), 8);
    cfg.congestion = congestion;
    cfg.early_resume = true;
    wake_as(s, cfg, budget, log, lose)
}

/// The next wake of a device configured as `cfg`.
fn wake_as(
    s: &mut Setup,
    cfg: DeviceConfig,
    budget: WakeBudget,
    log: &mut Vec<Send>,
    lose: &dyn Fn(&[Send], &Send) -> bool,
) -> SleepReason {
    wake_remembering(s, cfg, None, budget, log, lose).0
}

/// The next wake of a device configured as `cfg` and given `memory`: why it ended and what
/// it measured of the path.
fn wake_remembering(
    s: &mut Setup,
    cfg: DeviceConfig,
    memory: Option<PathMemory>,
    budget: WakeBudget,
    log: &mut Vec<Send>,
    lose: &dyn Fn(&[Send], &Send) -> bool,
) -> (SleepReason, Option<PathMemory>) {
    let mut dev: Device<Ed25519Verifier> = Device::new(cfg, verifier());
    if let Some(m) = memory {
        dev.remember_path(m);
    }
    s.now += 60_000;
    let reason = exact::wake(
        &mut dev,
        &mut s.storage,
        &s.handler,
        &mut s.now,
        budget,
        log,
        lose,
    );
    (reason, dev.path_memory())
}

/// The next wake under the loss-tolerant control, unbounded, with the server offering `mode`:
/// why it ended and what it sent.
fn resumed(
    s: &mut Setup,
    mode: u8,
    lose: &dyn Fn(&[Send], &Send) -> bool,
) -> (SleepReason, Vec<Send>) {
    s.handler.desired().mode.store(mode, Ordering::SeqCst);
    let mut log = vec![];
    let reason = wake(
        s,
        Congestion::LossTolerant,
        WakeBudget::default(),
        &mut log,
        lose,
    );
    (reason, log)
}

/// The chunk requests sent in the same instant as the wake's first check-in.
fn with_the_check_in(log: &[Send]) -> Vec<u32> {
    assert!(log[0].checkin);
    log.iter()
        .filter(|s| s.at == log[0].at)
        .filter_map(|s| s.offset)
        .collect()
}

#[test]
fn a_resumed_wake_asks_for_chunks_with_its_check_in() {
    let mut s = after_a_partial_wake(Congestion::LossTolerant);
    let (state, _) = s.storage.load().unwrap().download.unwrap();
    let (reason, log) = resumed(&mut s, FIRST, &clean);
    assert_eq!(reason, SleepReason::Staged);
    assert_eq!(s.storage.staged(LEN), s.first);
    let early = with_the_check_in(&log);
    assert_eq!(early.first(), Some(&state.next_offset), "{log:?}");
    // Nothing fetched twice: the early requests start where storage stood.
    let requests: Vec<u32> = log.iter().filter_map(|s| s.offset).collect();
    let mut unique = requests.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(requests.len(), unique.len());
}

#[test]
fn aimd_waits_for_the_reply() {
    let mut s = after_a_partial_wake(Congestion::Aimd);
    let mut log = vec![];
    let reason = wake(
        &mut s,
        Congestion::Aimd,
        WakeBudget::default(),
        &mut log,
        &clean,
    );
    assert_eq!(reason, SleepReason::Staged);
    assert!(with_the_check_in(&log).is_empty());
    let first_request = log.iter().find(|s| s.offset.is_some()).unwrap();
    assert_eq!(first_request.at, log[0].at + 2 * ONE_WAY_MS);
}

#[test]
fn a_release_withdrawn_meanwhile_ends_the_early_download() {
    let mut s = after_a_partial_wake(Congestion::LossTolerant);
    let (reason, log) = resumed(&mut s, NOTHING, &clean);
    assert_eq!(reason, SleepReason::UpToDate);
    assert_eq!(s.storage.load().unwrap().download, None, "abandoned");
    // What the withdrawn release cost: the requests of the first round trip, at most the
    // initial window of two.
    let requests = log.iter().filter(|s| s.offset.is_some()).count();
    assert!(requests <= 2, "{log:?}");
}

#[test]
fn another_release_offered_meanwhile_starts_afresh() {
    let mut s = after_a_partial_wake(Congestion::LossTolerant);
    let (reason, _) = resumed(&mut s, SECOND, &clean);
    assert_eq!(reason, SleepReason::Staged);
    assert_eq!(s.storage.staged(s.second.len()), s.second);
}

#[test]
fn a_deferral_keeps_the_download_and_what_the_early_chunks_brought() {
    let mut s = after_a_partial_wake(Congestion::LossTolerant);
    let (before, _) = s.storage.load().unwrap().download.unwrap();
    // The first check-in is lost: chunks asked for with it arrive before the reply to its
    // resend says not now.
    let (reason, _) = resumed(&mut s, BUSY, &first_check_in_lost);
    assert!(matches!(reason, SleepReason::Deferred(_)), "{reason:?}");
    let (after, _) = s.storage.load().unwrap().download.expect("kept");
    assert_eq!(after.manifest, before.manifest);
    assert!(
        after.next_offset > before.next_offset,
        "the early chunks are kept"
    );
    // The release is offered again: the download finishes from there.
    let (reason, log) = resumed(&mut s, FIRST, &clean);
    assert_eq!(reason, SleepReason::Staged);
    assert_eq!(s.storage.staged(LEN), s.first);
    // Nothing kept is fetched again.
    assert!(
        log.iter()
            .filter_map(|s| s.offset)
            .all(|o| o >= after.next_offset),
        "{log:?}"
    );
}

#[test]
fn on_by_default_and_off_waits_for_the_reply() {
    let mut s = after_a_partial_wake(Congestion::LossTolerant);
    let mut cfg = config(s.storage.capacity(), 8);
    assert!(cfg.early_resume);
    cfg.early_resume = false;
    let mut log = vec![];
    let reason = wake_as(&mut s, cfg, WakeBudget::default(), &mut log, &clean);
    assert_eq!(reason, SleepReason::Staged);
    assert!(with_the_check_in(&log).is_empty());
}

#[test]
fn a_budget_shorter_than_the_first_guess_of_the_round_trip_still_resumes() {
    let mut s = after_a_partial_wake(Congestion::LossTolerant);
    let (before, _) = s.storage.load().unwrap().download.unwrap();
    // Before any sample the device guesses a reply takes half the initial timeout (4 s here),
    // longer than this wake: no chunk goes out with the check-in. Its reply measures 600 ms,
    // which leaves room for chunks.
    let mut cfg = config(s.storage.capacity(), 8);
    cfg.early_resume = true;
    cfg.initial_rto_ms = 8_000;
    let budget = WakeBudget {
        bytes: None,
        millis: Some(1_900),
    };
    let mut log = vec![];
    let reason = wake_as(&mut s, cfg, budget, &mut log, &clean);
    assert_eq!(reason, SleepReason::BudgetExhausted);
    assert!(with_the_check_in(&log).is_empty(), "{log:?}");
    let (after, _) = s.storage.load().unwrap().download.unwrap();
    assert!(after.next_offset > before.next_offset, "{log:?}");
}

#[test]
fn an_early_request_lost_is_resent_on_the_measured_timer() {
    let mut s = after_a_partial_wake(Congestion::LossTolerant);
    // One request at a time, so only its timer can find it lost (no later reply), and a
    // first guess of the timeout (4 s) far above what the check-in's reply measures (600 ms
    // round trip: SRTT + 4·RTTVAR = 1.8 s).
    let mut cfg = config(s.storage.capacity(), 1);
    cfg.early_resume = true;
    cfg.initial_rto_ms = 4_000;
    let first_request_lost = |log: &[Send], send: &Send| {
        send.offset.is_some() && !log.iter().any(|s| s.offset.is_some())
    };
    let mut log = vec![];
    let reason = wake_as(
        &mut s,
        cfg,
        WakeBudget::default(),
        &mut log,
        &first_request_lost,
    );
    assert_eq!(reason, SleepReason::Staged);
    let early = with_the_check_in(&log);
    assert_eq!(early.len(), 1, "{log:?}");
    let again = log
        .iter()
        .filter(|s| s.offset == Some(early[0]))
        .nth(1)
        .expect("sent again");
    assert_eq!(again.at - log[0].at, 1_800, "{log:?}");
}

/// What a resumed wake, stopped by its budget, measured of the exact link.
fn measured_memory(congestion: Congestion) -> PathMemory {
    let mut s = after_a_partial_wake(congestion);
    // Measured again by a device that resumes and stops on its budget at once.
    let mut cfg = config(s.storage.capacity(), 8);
    cfg.congestion = congestion;
    let budget = WakeBudget {
        bytes: None,
        millis: Some(1_500),
    };
    let (_, memory) = wake_remembering(&mut s, cfg, None, budget, &mut vec![], &clean);
    memory.expect("a round trip measured")
}

#[test]
fn a_wake_measures_the_path_for_the_next() {
    let memory = measured_memory(Congestion::LossTolerant);
    assert_eq!(memory.min_rtt_ms, 2 * ONE_WAY_MS as u32);
    assert!(memory.window > 2, "{memory:?}");
}

/// What a wake that ended with all eight requests in flight on the exact link measured.
const MEMORY: PathMemory = PathMemory {
    min_rtt_ms: 2 * ONE_WAY_MS as u32,
    window: 8,
    fail_rate: 32,
    twice: false,
    drops_copies: false,
};

/// The next wake of a device given [`MEMORY`] (or not), its first check-in lost.
fn remembering(congestion: Congestion, remember: bool) -> Vec<Send> {
    let mut s = after_a_partial_wake(congestion);
    let mut cfg = config(s.storage.capacity(), 8);
    cfg.congestion = congestion;
    let memory = remember.then_some(MEMORY);
    let mut log = vec![];
    let lost = &first_check_in_lost;
    wake_remembering(&mut s, cfg, memory, WakeBudget::default(), &mut log, lost);
    log
}

/// When the wake's check-in went out the second time, after the first.
fn check_in_resent_after(log: &[Send]) -> u64 {
    let mut check_ins = log.iter().filter(|s| s.checkin);
    let first = check_ins.next().unwrap().at;
    check_ins.next().unwrap().at - first
}

#[test]
fn a_remembered_path_opens_the_window_and_times_the_check_in() {
    let memory = MEMORY;
    let blind = remembering(Congestion::LossTolerant, false);
    let remembered = remembering(Congestion::LossTolerant, true);
    // Blind: two requests with the check-in, which is asked again after the 2 s guess.
    assert_eq!(with_the_check_in(&blind).len(), 2, "{blind:?}");
    assert_eq!(check_in_resent_after(&blind), 2_000);
    // Remembered: half the window the last wake ended with, and a timeout of twice the
    // smallest round trip measured.
    assert_eq!(
        with_the_check_in(&remembered).len(),
        usize::from(memory.window / 2).max(2),
        "{remembered:?}"
    );
    assert_eq!(
        check_in_resent_after(&remembered),
        u64::from(2 * memory.min_rtt_ms)
    );
    assert!(check_in_resent_after(&remembered) < 2_000);
}

#[test]
fn aimd_ignores_a_remembered_path() {
    assert_eq!(
        remembering(Congestion::Aimd, true),
        remembering(Congestion::Aimd, false)
    );
}

#[test]
fn a_remembered_path_that_changed_is_measured_afresh() {
    // The memory says 100 ms; the path now takes 600 ms. The first timeouts are too short
    // (every early send goes out again before its reply), and the wake still learns the path
    // and finishes.
    let mut s = after_a_partial_wake(Congestion::LossTolerant);
    let cfg = config(s.storage.capacity(), 8);
    let stale = PathMemory {
        min_rtt_ms: 100,
        ..MEMORY
    };
    let mut log = vec![];
    let (reason, measured) = wake_remembering(
        &mut s,
        cfg,
        Some(stale),
        WakeBudget::default(),
        &mut log,
        &clean,
    );
    assert_eq!(reason, SleepReason::Staged);
    assert_eq!(s.storage.staged(LEN), s.first);
    assert_eq!(measured.map(|m| m.min_rtt_ms), Some(2 * ONE_WAY_MS as u32));
    // Resent too early at first, then not: fewer resends than requests.
    let requests = log.iter().filter(|s| s.offset.is_some()).count();
    let distinct = {
        let mut o: Vec<u32> = log.iter().filter_map(|s| s.offset).collect();
        o.sort_unstable();
        o.dedup();
        o.len()
    };
    assert!(
        requests < 2 * distinct,
        "{requests} sends for {distinct} chunks"
    );
}

/// A check-in lost again and again while the download resumed early gets its chunks: the
/// path is alive, so the check-in is asked again at the measured timeout each time instead
/// of backing off, and more often than `max_attempts` without the wake ending as link lost.
#[test]
fn a_check_in_lost_while_chunks_arrive_is_asked_again_without_backing_off() {
    let mut s = after_a_partial_wake(Congestion::LossTolerant);
    let mut cfg = config(s.storage.capacity(), 1);
    cfg.early_resume = true;
    let attempts = usize::from(cfg.max_attempts);
    // The first `attempts + 1` check-ins are lost; chunks are not.
    let lose = move |log: &[Send], send: &Send| {
        send.checkin && log.iter().filter(|s| s.checkin).count() <= attempts
    };
    let mut log = vec![];
    let memory = PathMemory {
        window: 1,
        ..MEMORY
    };
    let (reason, _) = wake_remembering(
        &mut s,
        cfg,
        Some(memory),
        WakeBudget::default(),
        &mut log,
        &lose,
    );
    assert_eq!(reason, SleepReason::Staged, "{log:?}");
    let check_ins: Vec<u64> = log.iter().filter(|s| s.checkin).map(|s| s.at).collect();
    assert!(check_ins.len() > attempts + 1, "{log:?}");
    let gaps: Vec<u64> = check_ins.windows(2).map(|w| w[1] - w[0]).collect();
    // Every gap after the first resend is as long as the one before it, not 1.5 to 3 times
    // longer (a chunk arrived in between each time).
    assert!(
        gaps.windows(2).skip(1).all(|w| w[1] <= w[0]),
        "gaps {gaps:?}"
    );
}
