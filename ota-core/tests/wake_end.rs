//! The end of a wake with a deadline: a request found lost when no resend could be answered
//! in time is let go at once, so the wake ends as soon as nothing else is on its way, instead
//! of keeping the radio on until the request's timer for a reply that is not coming.
//!
//! Over the exact link (`common::exact`): replies come 600 ms after their requests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use common::exact::{self, Send, ONE_WAY_MS};
use common::*;
use ota_core::device::{Congestion, SleepReason};
use ota_core::wire::WakeBudget;

const CHUNK: u16 = 512;
/// The wake starts at 1 s and may last this long.
const BUDGET_MS: u64 = 4_000;

/// One wake that must end by its deadline, far from the end of the image; the link loses the
/// first send of every other request sent from `lossy_from` on.
fn wake(lossy_from: u64) -> (Vec<Send>, u64, SleepReason) {
    let img = image(64 * 1024, 9);
    let lose = |log: &[Send], send: &Send| {
        let first = !log.iter().any(|s| s.offset == send.offset);
        send.at >= lossy_from
            && first
            && send.offset.is_some_and(|o| (o / u32::from(CHUNK)) % 2 == 0)
    };
    let w = exact::woken(
        img.len(),
        &handler(&img, CHUNK),
        (4, Congestion::LossTolerant),
        budget(),
        &lose,
    );
    (w.log, w.now, w.reason)
}

fn budget() -> WakeBudget {
    WakeBudget {
        bytes: None,
        millis: Some(BUDGET_MS as u32),
    }
}

#[test]
fn a_request_found_lost_at_the_end_of_a_wake_does_not_keep_it_awake() {
    let deadline = 1_000 + BUDGET_MS;
    // Losses only in the last round trips, where no resend can be answered in time.
    let (log, end, reason) = wake(deadline - 3 * 2 * ONE_WAY_MS);
    assert_eq!(reason, SleepReason::BudgetExhausted);
    let lost: Vec<&Send> = log.iter().filter(|s| s.lost).collect();
    assert!(!lost.is_empty(), "the link lost something: {log:?}");
    // The last reply came a round trip after the last send; the lost ones were known lost
    // then (a later request of theirs was answered), so the wake ends within a reordering
    // window of it, well before the deadline.
    let last_send = log.iter().map(|s| s.at).max().unwrap();
    let last_reply = last_send + 2 * ONE_WAY_MS;
    println!("last send {last_send}, last reply {last_reply}, end {end}, deadline {deadline}");
    assert!(end <= last_reply + 2 * ONE_WAY_MS / 4, "ended at {end}");
    assert!(end < deadline, "ended at {end}, deadline {deadline}");
}

/// A wake whose check-in was answered but none of whose chunks were still hands the next wake a
/// path to start from: the check-in's round trip, as no chunk measured the path's minimum. A
/// wake that heard nothing has nothing to hand on.
#[test]
fn a_wake_without_chunks_remembers_the_check_ins_round_trip() {
    let img = image(16 * 1024, 9);
    let handler = handler(&img, CHUNK);
    // (what the link loses, the round trip remembered)
    let lose_chunks = |_: &[Send], s: &Send| s.offset.is_some();
    let lose_all = |_: &[Send], _: &Send| true;
    type Lose<'a> = &'a dyn Fn(&[Send], &Send) -> bool;
    let cases: [(Lose, Option<u32>); 2] = [
        (&lose_chunks, Some(2 * ONE_WAY_MS as u32)),
        (&lose_all, None),
    ];
    for (lose, remembered) in cases {
        let w = exact::woken(
            img.len(),
            &handler,
            (4, Congestion::LossTolerant),
            budget(),
            lose,
        );
        assert!(w.log.iter().any(|s| s.offset.is_some()) || remembered.is_none());
        assert_eq!(w.dev.path_memory().map(|m| m.min_rtt_ms), remembered);
    }
}

/// How a wake ends whose last chunk arrives at its deadline, the timer firing before the
/// chunk's write is carried out; the server's manifest describes `img` and it serves `served`.
/// Whether `Staged` and `DownloadFailed` came, and the sleep's reason.
fn last_chunk_at_the_deadline(img: &[u8], served: &[u8]) -> (bool, bool, Option<SleepReason>) {
    use ota_core::device::Event;
    use ota_core::host::Peer;
    use ota_core::manifest::Ed25519Verifier;
    use ota_core::storage::UpdateStorage;
    use ota_core::{Device, Instant};
    use ota_test_support::MemStorage;

    let handler = handler_serving(img, served, CHUNK);
    let mut storage = MemStorage::new(8 * 1024);
    // One request at a time, so the last chunk's reply can be held back alone.
    let mut dev: Device<Ed25519Verifier> = Device::new(config(8 * 1024, 1), verifier());
    let deadline = 10_000;
    dev.wake(
        Instant(0),
        WakeBudget {
            bytes: None,
            millis: Some(deadline as u32),
        },
    );
    let drain = |dev: &mut Device<Ed25519Verifier>, storage: &mut MemStorage| {
        while let Some(op) = dev.poll_storage() {
            storage.apply(op).unwrap();
            dev.storage_done(Ok(()));
        }
    };
    let mut buf = [0u8; 256];
    let mut now = 0;
    let mut replies = Vec::new();
    // Exchanges until the last chunk's reply is all that is left.
    for _ in 0..20 {
        while let Some(t) = dev.poll_transmit(Instant(now), &mut buf) {
            if let Ok(Some(r)) = handler.handle(&buf[..t.len], Peer::Anonymous) {
                replies.push(r);
            }
        }
        now += 2 * ONE_WAY_MS;
        if dev.stats().payload_bytes_accepted == img.len() as u64 - u64::from(CHUNK) {
            break;
        }
        for r in replies.drain(..) {
            dev.handle_message(Instant(now), &r).unwrap();
            drain(&mut dev, &mut storage);
        }
    }
    assert_eq!(replies.len(), 1, "one chunk left to come");
    dev.handle_message(Instant(deadline), &replies[0]).unwrap();
    dev.handle_timeout(Instant(deadline));
    drain(&mut dev, &mut storage);
    let (mut staged, mut failed, mut slept) = (false, false, None);
    for _ in 0..8 {
        // The report goes out before the wake ends.
        while dev.poll_transmit(Instant(deadline), &mut buf).is_some() {}
        while let Some(e) = dev.poll_event() {
            match e {
                Event::Staged { .. } => staged = true,
                Event::DownloadFailed(_) => failed = true,
                Event::Sleep { reason, .. } => slept = Some(reason),
                _ => {}
            }
        }
        drain(&mut dev, &mut storage);
    }
    if staged {
        assert_eq!(storage.staged(img.len()), img);
    }
    (staged, failed, slept)
}

/// The deadline passes while the chunk that completes the download is being written (a slow
/// flash, or the reply arriving at the very end): the image is still verified in this wake,
/// local work that needs no radio, instead of a wake later after a check-in; staged or failed,
/// the outcome is the wake's reason, not the deadline.
#[test]
fn a_download_completed_as_the_deadline_passes_is_verified_in_this_wake() {
    let img = image(4 * usize::from(CHUNK), 5);
    assert_eq!(
        last_chunk_at_the_deadline(&img, &img),
        (true, false, Some(SleepReason::Staged))
    );
    // A store that serves other bytes than the manifest describes: the digest fails.
    let mut corrupt = img.clone();
    corrupt[100] ^= 0xff;
    assert_eq!(
        last_chunk_at_the_deadline(&img, &corrupt),
        (false, true, Some(SleepReason::Failed))
    );
}
