//! The device state machine driven against the host handler through a faulty in-memory link,
//! with resets at random points and random wake budgets, under both congestion controls, images
//! whole or as patches; long
//! loss bursts (Gilbert-Elliott) and a link that goes silent mid-download.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use common::*;
use ota_core::device::{Congestion, Event, SleepReason};
use ota_core::manifest::Ed25519Verifier;
use ota_core::storage::UpdateStorage;
use ota_core::wire::WakeBudget;
use ota_core::{Device, Instant};
use ota_test_support::sim::{GilbertElliott, LinkProfile, Pipe, SimRng};
use ota_test_support::MemStorage;
use proptest::prelude::*;

/// How one simulated update went.
#[derive(Debug, Default)]
struct Outcome {
    staged: bool,
    wakes: u32,
    resets: u32,
    accepted_payload: u64,
    lost_downlink_chunks: u64,
}

#[derive(Debug, Clone)]
struct Scenario {
    image_len: usize,
    chunk: u16,
    window: u8,
    faults: LinkProfile,
    /// Loss in bursts instead of `faults.loss_percent`, both directions.
    bursts: Option<GilbertElliott>,
    congestion: Congestion,
    /// Per wake: (time budget ms, byte budget); cycled.
    budgets: Vec<(Option<u32>, Option<u32>)>,
    /// Percent chance, at each storage operation, that power fails just before it.
    reset_percent: u32,
    seed: u64,
    /// The image comes as a patch from the one the device runs (a point release of it).
    patch: bool,
}

/// Carries out the device's storage operations one by one; power may fail before any of them.
/// Returns true if it did.
fn drain(
    dev: &mut Device<Ed25519Verifier>,
    storage: &mut MemStorage,
    rng: &mut SimRng,
    reset_percent: u32,
) -> bool {
    loop {
        let reset = rng.chance(reset_percent);
        let Some(op) = dev.poll_storage() else {
            return false;
        };
        if reset {
            return true;
        }
        storage.apply(op).expect("storage refused a write");
        dev.storage_done(Ok(()));
    }
}

/// Runs `s` for at most `max_wakes`; what happened, the storage, the image to stage, and the
/// bytes fetched for it (the patch's, if it came as one).
fn run(s: &Scenario, max_wakes: u32) -> (Outcome, MemStorage, Vec<u8>, usize) {
    let (img, handler, mut storage, fetched) = if s.patch {
        let old = image(s.image_len, s.seed);
        let new = point_release(&old, s.seed);
        let patch = ota_delta::diff(&old, &new).unwrap();
        let handler = patch_handler(&old, &new, &patch, &patch, s.chunk);
        let capacity = (new.len() + patch.len()) as u32 + 4096;
        let storage = MemStorage::new(capacity).with_active(&old);
        (new, handler, storage, patch.len())
    } else {
        let img = image(s.image_len, s.seed);
        let handler = handler(&img, s.chunk);
        let len = img.len();
        (
            img,
            handler,
            MemStorage::new(s.image_len as u32 + 4096),
            len,
        )
    };
    let mut rng = SimRng::new(s.seed);
    let pipe = || match s.bursts {
        Some(ge) => Pipe::default().with_bursts(ge),
        None => Pipe::default(),
    };
    let mut up = pipe();
    let mut down = pipe();
    let mut now: u64 = 1_000;
    let mut out = Outcome::default();
    let mut buf = vec![0u8; 2048];

    // What the last wake measured of the path; half the scenarios give it to the next wake.
    let mut path = None;
    'wakes: while out.wakes < max_wakes {
        out.wakes += 1;
        // A new process: nothing survives but storage (and the path memory, if kept).
        let mut cfg = config(storage.capacity(), s.window);
        cfg.congestion = s.congestion;
        let mut dev: Device<Ed25519Verifier> = Device::new(cfg, verifier());
        if let Some(m) = path.filter(|_| s.seed % 2 == 0) {
            dev.remember_path(m);
        }
        // A third of the scenarios may send requests twice; the host handler answers both
        // copies (a server without a copy filter), so the device meets duplicate replies too.
        if s.seed % 3 == 0 {
            dev.server_drops_copies(true);
        }
        dev.restore_from(&mut storage).unwrap();
        let (millis, bytes) = s.budgets[(out.wakes as usize) % s.budgets.len()];
        dev.wake(Instant(now), WakeBudget { bytes, millis });
        up.clear();
        down.clear();

        for _step in 0..20_000 {
            while let Some((n, twice)) = dev.poll_transmit(Instant(now), &mut buf).map(|t| {
                dev.link_bytes(t.len as u64 * (1 + u64::from(t.twice)), 0);
                (t.len, t.twice)
            }) {
                up.send(now, &buf[..n], &s.faults, &mut rng);
                if twice {
                    up.send(now, &buf[..n], &s.faults, &mut rng);
                }
            }
            if drain(&mut dev, &mut storage, &mut rng, s.reset_percent) {
                out.resets += 1;
                out.accepted_payload += dev.stats().payload_bytes_accepted;
                path = dev.path_memory().or(path);
                continue 'wakes;
            }
            while let Some(ev) = dev.poll_event() {
                match ev {
                    Event::Sleep { reason, .. } => {
                        out.accepted_payload += dev.stats().payload_bytes_accepted;
                        if reason == SleepReason::Staged {
                            out.staged = true;
                            return (out, storage, img, fetched);
                        }
                        // Sleep: the server's answers in flight are lost to a sleeping radio.
                        out.lost_downlink_chunks += down.clear() as u64;
                        now += 60_000;
                        path = dev.path_memory().or(path);
                        continue 'wakes;
                    }
                    Event::ManifestRejected(e) => panic!("valid manifest rejected: {e}"),
                    Event::DownloadFailed(code) => panic!("download failed: {code:?}"),
                    _ => {}
                }
            }
            // Advance to the next thing that happens.
            let next = [
                up.next_arrival(),
                down.next_arrival(),
                dev.poll_timeout().map(|t| t.0),
            ]
            .into_iter()
            .flatten()
            .min();
            let Some(next) = next else {
                panic!("device neither asleep nor waiting for anything");
            };
            now = now.max(next);
            for req in up.due(now) {
                if let Ok(Some(reply)) = handler.handle(&req, ota_core::host::Peer::Anonymous) {
                    down.send(now, &reply, &s.faults, &mut rng);
                }
            }
            for msg in down.due(now) {
                dev.link_bytes(0, msg.len() as u64);
                let _ = dev.handle_message(Instant(now), &msg);
                // Storage keeps up with the radio: each message's operations run before the next.
                if drain(&mut dev, &mut storage, &mut rng, s.reset_percent) {
                    out.resets += 1;
                    out.accepted_payload += dev.stats().payload_bytes_accepted;
                    path = dev.path_memory().or(path);
                    continue 'wakes;
                }
            }
            dev.handle_timeout(Instant(now));
        }
        panic!("wake did not end within its step bound");
    }
    (out, storage, img, fetched)
}

fn check(s: &Scenario) {
    let (out, storage, img, fetched) = run(s, 2_000);
    if std::env::var("SIM_TRACE").is_ok() {
        eprintln!(
            "len {} chunk {} win {} -> {out:?}",
            s.image_len, s.chunk, s.window
        );
    }
    assert!(out.staged, "not staged after {} wakes: {out:?}", out.wakes);
    assert_eq!(storage.staged(img.len()), img, "staged image differs");
    let refetched = out.accepted_payload.saturating_sub(fetched as u64);
    let bound = u64::from(s.chunk) * u64::from(out.resets);
    assert!(
        refetched <= bound,
        "refetched {refetched} bytes > one chunk per reset ({bound}): {out:?}"
    );
}

#[test]
fn clean_link_single_wake() {
    let s = Scenario {
        image_len: 20_000,
        chunk: 1024,
        window: 4,
        faults: LinkProfile::ideal(100),
        bursts: None,
        congestion: Congestion::LossTolerant,
        budgets: vec![(None, None)],
        reset_percent: 0,
        seed: 1,
        patch: false,
    };
    let (out, storage, img, _) = run(&s, 1);
    assert!(out.staged);
    assert_eq!(out.accepted_payload, img.len() as u64);
    assert_eq!(storage.staged(img.len()), img);
}

#[test]
fn time_budget_resumes_across_wakes_without_refetch() {
    let s = Scenario {
        image_len: 64 * 1024,
        chunk: 1024,
        window: 4,
        faults: LinkProfile::ideal(300),
        bursts: None,
        congestion: Congestion::LossTolerant,
        budgets: vec![(Some(3_000), None)],
        reset_percent: 0,
        seed: 2,
        patch: false,
    };
    let (out, storage, img, _) = run(&s, 100);
    assert!(out.staged);
    assert!(
        out.wakes > 3,
        "a 3 s budget cannot fetch 64 KiB in one wake: {out:?}"
    );
    assert_eq!(
        out.accepted_payload,
        img.len() as u64,
        "no byte fetched twice"
    );
    assert_eq!(storage.staged(img.len()), img);
}

#[test]
fn byte_budget_is_respected() {
    byte_budget_is_respected_with(false);
}

#[test]
fn byte_budget_is_respected_with_requests_sent_twice() {
    byte_budget_is_respected_with(true);
}

/// A 3000-byte budget; `pairs`: the device starts with its requests in pairs, each counted
/// twice on the link.
fn byte_budget_is_respected_with(pairs: bool) {
    let img = image(16 * 1024, 5);
    let handler = handler(&img, 512);
    let mut storage = MemStorage::new(32 * 1024);
    let mut dev: Device<Ed25519Verifier> = Device::new(config(32 * 1024, 4), verifier());
    if pairs {
        dev.server_drops_copies(true);
    }
    let mut twice_seen = false;
    dev.wake(
        Instant(0),
        WakeBudget {
            bytes: Some(3_000),
            millis: None,
        },
    );
    let mut buf = [0u8; 2048];
    let mut pending: Vec<Vec<u8>> = Vec::new();
    loop {
        while let Some(n) = dev.poll_transmit(Instant(0), &mut buf).map(|t| {
            dev.link_bytes(t.len as u64 * (1 + u64::from(t.twice)), 0);
            twice_seen |= t.twice;
            t.len
        }) {
            if let Ok(Some(r)) = handler.handle(&buf[..n], ota_core::host::Peer::Anonymous) {
                pending.push(r);
            }
        }
        dev.drive_storage(&mut storage).unwrap();
        if let Some(Event::Sleep { reason, .. }) =
            std::iter::from_fn(|| dev.poll_event()).find(|e| matches!(e, Event::Sleep { .. }))
        {
            assert_eq!(reason, SleepReason::BudgetExhausted);
            break;
        }
        let Some(msg) = pending.pop() else {
            panic!("stalled")
        };
        dev.link_bytes(0, msg.len() as u64);
        let _ = dev.handle_message(Instant(0), &msg);
    }
    assert_eq!(twice_seen, pairs);
    let used = dev.stats().bytes_sent + dev.stats().bytes_received;
    assert!(used <= 3_000, "spent {used} bytes of a 3000-byte budget");
    assert!(dev.stats().payload_bytes_accepted >= 1024, "made progress");
    let state = storage.state().unwrap();
    assert_eq!(
        u64::from(state.next_offset),
        dev.stats().payload_bytes_accepted
    );
}

#[test]
fn an_unanswered_check_in_ends_at_the_time_budget() {
    let mut dev: Device<Ed25519Verifier> = Device::new(config(32 * 1024, 4), verifier());
    dev.wake(
        Instant(0),
        WakeBudget {
            bytes: None,
            millis: Some(1_500),
        },
    );
    let mut buf = [0u8; 256];
    let mut now = Instant(0);
    // Nothing ever answers; the retry schedule alone (2 s, 4 s, ...) would run past 30 s.
    loop {
        while dev.poll_transmit(now, &mut buf).is_some() {}
        if let Some(Event::Sleep { reason, .. }) = dev.poll_event() {
            assert_eq!(reason, SleepReason::BudgetExhausted);
            break;
        }
        now = dev.poll_timeout().expect("a timer while checking in");
        assert!(
            now.0 <= 1_500,
            "timer at {} ms past the 1500 ms budget",
            now.0
        );
        dev.handle_timeout(now);
    }
    assert_eq!(now, Instant(1_500));
}

#[test]
fn lossy_link_with_resets() {
    check(&Scenario {
        image_len: 12_345,
        chunk: 512,
        window: 8,
        faults: LinkProfile {
            latency_ms: 50,
            jitter_ms: 850,
            bits_per_sec: 0,
            loss_percent: 15,
            duplicate_percent: 10,
            corrupt_percent: 10,
        },
        bursts: None,
        congestion: Congestion::LossTolerant,
        budgets: vec![(Some(4_000), None), (None, Some(5_000)), (None, None)],
        reset_percent: 3,
        seed: 3,
        patch: false,
    });
}

#[test]
fn lossy_link_with_resets_patch() {
    // The image as a patch: resets while the patch is fetched and while it rebuilds the image.
    check(&Scenario {
        image_len: 12_345,
        chunk: 512,
        window: 8,
        faults: LinkProfile {
            latency_ms: 50,
            jitter_ms: 850,
            bits_per_sec: 0,
            loss_percent: 15,
            duplicate_percent: 10,
            corrupt_percent: 10,
        },
        bursts: None,
        congestion: Congestion::LossTolerant,
        budgets: vec![(Some(4_000), None), (None, Some(5_000)), (None, None)],
        reset_percent: 8,
        seed: 3,
        patch: true,
    });
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        1usize..40_000,
        prop::sample::select(vec![64u16, 100, 256, 512, 1000, 1024]),
        1u8..=16,
        (0u32..25, 0u32..20, 0u32..15, 0u64..400, 0u64..1500),
        // Budgets as multiples of what one exchange needs, so every wake can make progress.
        prop::collection::vec(
            (prop::option::of(1u32..12), prop::option::of(1u32..12)),
            1..4,
        ),
        0u32..6,
        any::<u64>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(
                image_len,
                chunk,
                window,
                (drop, duplicate, corrupt, d0, d1),
                budgets,
                reset_percent,
                seed,
                aimd,
                patch,
            )| {
                let rtt = 2 * (d0 + d1) as u32;
                let budgets = budgets
                    .into_iter()
                    .map(|(t, b)| {
                        (
                            t.map(|k| 2 * rtt + 500 + k * (rtt + 500)),
                            b.map(|k| 300 + k * (u32::from(chunk) + 40)),
                        )
                    })
                    .collect();
                Scenario {
                    image_len,
                    chunk,
                    window,
                    faults: LinkProfile {
                        latency_ms: d0,
                        jitter_ms: d1,
                        bits_per_sec: 0,
                        loss_percent: drop,
                        duplicate_percent: duplicate,
                        corrupt_percent: corrupt,
                    },
                    bursts: None,
                    congestion: if aimd {
                        Congestion::Aimd
                    } else {
                        Congestion::LossTolerant
                    },
                    budgets,
                    reset_percent,
                    seed,
                    patch,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Whatever the link and the resets do, the staged image is the source image bit for bit,
    /// and refetched bytes never exceed one chunk per reset; the same when the image comes as
    /// a patch (resets during the rebuild included).
    #[test]
    fn staged_image_always_matches_source(s in scenario()) {
        check(&s);
    }
}

#[test]
fn lossy_link_with_resets_aimd() {
    check(&Scenario {
        image_len: 12_345,
        chunk: 512,
        window: 8,
        faults: LinkProfile {
            latency_ms: 50,
            jitter_ms: 850,
            bits_per_sec: 0,
            loss_percent: 15,
            duplicate_percent: 10,
            corrupt_percent: 10,
        },
        bursts: None,
        congestion: Congestion::Aimd,
        budgets: vec![(Some(4_000), None), (None, Some(5_000)), (None, None)],
        reset_percent: 3,
        seed: 3,
        patch: false,
    });
}

/// Gilbert-Elliott bursts: a good state that loses `good` % and a bad one that loses `bad` %,
/// with mean bursts of 4 to 50 messages (`100 / to_good`) and at most a third of the time in
/// the bad state (mean loss up to about 40 %, each direction).
fn bursty() -> impl Strategy<Value = Scenario> {
    (
        1usize..48_000,
        prop::sample::select(vec![256u16, 512, 1024]),
        1u8..=16,
        (1u32..10, 2u32..25, 0u32..10, 60u32..=100),
        (5u64..400, 0u64..200, 0u64..60_000),
        prop::collection::vec(
            (prop::option::of(1u32..12), prop::option::of(1u32..12)),
            1..4,
        ),
        0u32..4,
        any::<u64>(),
        any::<bool>(),
    )
        .prop_map(
            |(
                image_len,
                chunk,
                window,
                (to_bad_raw, to_good, good, bad),
                (latency, jitter, bps),
                budgets,
                reset_percent,
                seed,
                aimd,
            )| {
                let to_bad = 1 + to_bad_raw % (to_good / 2).max(1);
                let rtt = 2 * (latency + jitter) as u32;
                // 0 (unlimited) or a slow link from 8 kbit/s.
                let bps = if bps < 8_000 { 0 } else { bps };
                // A time budget leaves room for a chunk's time on the link besides the round
                // trips: at 8 kbit/s a 1 KiB chunk takes a second, and a wake of a second
                // could never finish one.
                let on_link = (u64::from(chunk) + 100) * 8_000;
                let tx = on_link.checked_div(bps).unwrap_or(0) as u32;
                let budgets = budgets
                    .into_iter()
                    .map(|(t, b)| {
                        (
                            t.map(|k| 2 * rtt + 500 + tx + k * (rtt + 500 + tx)),
                            b.map(|k| 300 + k * (u32::from(chunk) + 40)),
                        )
                    })
                    .collect();
                Scenario {
                    image_len,
                    chunk,
                    window,
                    faults: LinkProfile {
                        latency_ms: latency,
                        jitter_ms: jitter,
                        bits_per_sec: bps,
                        loss_percent: 0,
                        duplicate_percent: 0,
                        corrupt_percent: 0,
                    },
                    bursts: Some(GilbertElliott {
                        good_to_bad_percent: to_bad,
                        bad_to_good_percent: to_good,
                        good_loss_percent: good,
                        bad_loss_percent: bad,
                    }),
                    congestion: if aimd {
                        Congestion::Aimd
                    } else {
                        Congestion::LossTolerant
                    },
                    budgets,
                    reset_percent,
                    seed,
                    patch: false,
                }
            },
        )
}

/// One wake over a link that drops everything from `silent_at` (ms after the wake began).
#[derive(Debug, Clone)]
struct Silence {
    image_len: usize,
    window: u8,
    congestion: Congestion,
    link: LinkProfile,
    silent_at: u64,
    budget_ms: Option<u32>,
    seed: u64,
}

fn silences() -> impl Strategy<Value = Silence> {
    (
        4_096usize..64_000,
        1u8..=16,
        any::<bool>(),
        (5u64..400, 0u64..100, 0u32..30),
        0u64..30_000,
        prop::option::of(2_000u32..60_000),
        any::<u64>(),
    )
        .prop_map(
            |(image_len, window, aimd, (latency, jitter, loss), silent_at, budget_ms, seed)| {
                Silence {
                    image_len,
                    window,
                    congestion: if aimd {
                        Congestion::Aimd
                    } else {
                        Congestion::LossTolerant
                    },
                    link: LinkProfile {
                        latency_ms: latency,
                        jitter_ms: jitter,
                        bits_per_sec: 30_000,
                        loss_percent: loss,
                        duplicate_percent: 0,
                        corrupt_percent: 0,
                    },
                    silent_at,
                    budget_ms,
                    seed,
                }
            },
        )
}

/// Runs one wake of `s`; returns how it ended, when, how many messages the device sent once
/// the link was silent, and the storage.
/// Runs `s`: why the wake ended, when (ms after its start), the sends into the silence and the
/// chunk requests among them (distinct offsets), storage and the device.
fn run_silence(
    s: &Silence,
) -> (
    SleepReason,
    u64,
    (u32, u32),
    MemStorage,
    Device<Ed25519Verifier>,
) {
    let img = image(s.image_len, s.seed);
    let handler = handler(&img, 1024);
    let mut storage = MemStorage::new(s.image_len as u32 + 4096);
    let mut cfg = config(s.image_len as u32 + 4096, s.window);
    cfg.congestion = s.congestion;
    let mut dev: Device<Ed25519Verifier> = Device::new(cfg, verifier());
    let mut rng = SimRng::new(s.seed);
    let (mut up, mut down) = (Pipe::default(), Pipe::default());
    let silent = LinkProfile {
        loss_percent: 100,
        ..s.link
    };
    let start = 5_000u64;
    let mut now = start;
    let mut buf = vec![0u8; 2048];
    let mut sent_in_silence = 0u32;
    let mut requested_in_silence = std::collections::BTreeSet::new();
    dev.wake(
        Instant(now),
        WakeBudget {
            bytes: None,
            millis: s.budget_ms,
        },
    );
    let mut still = 0u32;
    for _ in 0..200_000 {
        let link = if now >= start + s.silent_at {
            &silent
        } else {
            &s.link
        };
        while let Some(n) = dev.poll_transmit(Instant(now), &mut buf).map(|t| {
            dev.link_bytes(t.len as u64, 0);
            t.len
        }) {
            if now >= start + s.silent_at {
                sent_in_silence += 1;
                if let Ok(ota_core::wire::Message::ChunkRequest(r)) =
                    ota_core::wire::decode(&buf[..n])
                {
                    requested_in_silence.insert(r.offset);
                }
            }
            up.send(now, &buf[..n], link, &mut rng);
        }
        dev.drive_storage(&mut storage).unwrap();
        while let Some(ev) = dev.poll_event() {
            if let Event::Sleep { reason, .. } = ev {
                let requests = requested_in_silence.len() as u32;
                return (
                    reason,
                    now - start,
                    (sent_in_silence, requests),
                    storage,
                    dev,
                );
            }
        }
        let next = [
            up.next_arrival(),
            down.next_arrival(),
            dev.poll_timeout().map(|t| t.0),
        ]
        .into_iter()
        .flatten()
        .min()
        .expect("an awake device always waits for something");
        // Never spin: time must move on within a few steps.
        still = if next <= now { still + 1 } else { 0 };
        assert!(still < 100, "no progress in time at {now} ms: {s:?}");
        now = now.max(next);
        for req in up.due(now) {
            if let Ok(Some(reply)) = handler.handle(&req, ota_core::host::Peer::Anonymous) {
                let link = if now >= start + s.silent_at {
                    &silent
                } else {
                    &s.link
                };
                down.send(now, &reply, link, &mut rng);
            }
        }
        for msg in down.due(now) {
            dev.link_bytes(0, msg.len() as u64);
            let _ = dev.handle_message(Instant(now), &msg);
            dev.drive_storage(&mut storage).unwrap();
        }
        dev.handle_timeout(Instant(now));
    }
    panic!("wake did not end: {s:?}");
}

/// Image bytes the persisted resume record holds (1 KiB chunks).
fn persisted(storage: &MemStorage, image_len: usize) -> u64 {
    let Some(state) = storage.state() else {
        return 0;
    };
    (0..image_len as u32)
        .step_by(1024)
        .filter(|&off| state.is_complete(image_len as u32) || state.has(off, 1024))
        .map(|off| u64::from((image_len as u32 - off).min(1024)))
        .sum()
}

#[test]
fn a_link_that_goes_silent_ends_the_wake_with_progress_kept() {
    for congestion in [Congestion::LossTolerant, Congestion::Aimd] {
        let s = Silence {
            image_len: 256 * 1024,
            window: 8,
            congestion,
            link: LinkProfile {
                loss_percent: 15,
                ..LinkProfile::NB_IOT
            },
            silent_at: 20_000,
            budget_ms: None,
            seed: 4,
        };
        let (reason, at, (sent, _), storage, dev) = run_silence(&s);
        assert_eq!(reason, SleepReason::LinkLost, "{congestion:?}");
        assert_eq!(
            persisted(&storage, 256 * 1024),
            dev.stats().payload_bytes_accepted,
            "{congestion:?}: every accepted chunk is recorded"
        );
        assert!(dev.stats().payload_bytes_accepted > 0);
        // Backed off: at most a window's worth of requests, each a handful of times, and
        // the wake gave up within minutes, not hours.
        assert!(sent <= 8 * 20, "{congestion:?}: {sent} sends into silence");
        assert!(
            at < s.silent_at + 300_000,
            "{congestion:?}: gave up at {at} ms"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// Long loss bursts (Gilbert-Elliott, both directions) under either congestion control:
    /// the staged image is the source image bit for bit, refetch stays within one chunk per
    /// reset.
    #[test]
    fn staged_image_matches_source_through_loss_bursts(s in bursty()) {
        check(&s);
    }

    /// A link that goes silent mid-wake: the wake ends on its budget or as link lost, with
    /// every accepted chunk persisted, without spinning (time moves on) and with a bounded
    /// number of sends into the silence.
    #[test]
    fn a_silent_link_ends_the_wake_on_budget_or_as_link_lost(s in silences()) {
        let (reason, at, (sent, requests), storage, dev) = run_silence(&s);
        match s.budget_ms {
            Some(ms) => {
                prop_assert!(at <= u64::from(ms), "ended at {} ms past a {} ms budget", at, ms);
                prop_assert!(
                    matches!(reason, SleepReason::BudgetExhausted | SleepReason::LinkLost | SleepReason::Staged),
                    "{:?}", reason
                );
            }
            None => prop_assert!(
                matches!(reason, SleepReason::LinkLost | SleepReason::Staged),
                "{:?}", reason
            ),
        }
        let accepted = dev.stats().payload_bytes_accepted;
        prop_assert_eq!(persisted(&storage, s.image_len), accepted, "accepted chunks not all persisted");
        // Each request at most `max_attempts` (5) times four; the check-in and a report besides.
        // The requests are the window's and those opened by replies already on their way when
        // the link fell silent (a 1 KiB chunk is 273 ms of a 30 kbit/s link).
        let bound = requests * 4 * 5 + 5;
        prop_assert!(sent <= bound, "{} sends into silence (bound {})", sent, bound);
        prop_assert!(
            requests <= 2 * u32::from(s.window),
            "{} requests opened into silence",
            requests
        );
    }
}
