//! Copies of outstanding chunk requests in window slots that nothing new may fill (the image's
//! last chunks): sent early on a lossy path, never on a clean one, never under `Aimd`.
//!
//! The link here is exact: 300 ms each way, no rate limit, and it loses just the sends a test
//! names, so each assertion is about one timing the controller chose.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use common::*;
use ota_core::device::{Congestion, Event, SleepReason};
use ota_core::host::Peer;
use ota_core::manifest::Ed25519Verifier;
use ota_core::storage::UpdateStorage;
use ota_core::wire::{self, Message, WakeBudget};
use ota_core::{Device, Instant};
use ota_test_support::MemStorage;

const CHUNK: u16 = 512;
const CHUNKS: u32 = 12;
const ONE_WAY_MS: u64 = 300;

type InFlight = Vec<(u64, Vec<u8>)>;

/// One chunk request as it left the device: when, which offset, and whether the link lost it.
#[derive(Debug, Clone, Copy)]
struct Send {
    at: u64,
    offset: u32,
    lost: bool,
}

/// Downloads a `CHUNKS`-chunk image over the exact link; `lose(offset, nth send of it)` says
/// which chunk requests the link drops. Returns every chunk request sent and the device.
fn download(
    congestion: Congestion,
    lose: impl Fn(u32, usize) -> bool,
) -> (Vec<Send>, Device<Ed25519Verifier>) {
    let img = image((u32::from(CHUNK) * CHUNKS) as usize, 5);
    let handler = handler(&img, CHUNK);
    let mut storage = MemStorage::new(img.len() as u32 + 4096);
    let mut cfg = config(storage.capacity(), 8);
    cfg.congestion = congestion;
    let mut dev: Device<Ed25519Verifier> = Device::new(cfg, verifier());
    dev.restore_from(&mut storage).unwrap();
    let mut now = 1_000u64;
    dev.wake(Instant(now), WakeBudget::default());
    // Datagrams on their way: (arrival ms, bytes).
    let (mut up, mut down): (InFlight, InFlight) = (vec![], vec![]);
    let mut sends: Vec<Send> = vec![];
    let mut buf = [0u8; 256];
    for _ in 0..10_000 {
        while let Some(t) = dev.poll_transmit(Instant(now), &mut buf) {
            let msg = buf[..t.len].to_vec();
            let mut lost = false;
            if let Ok(Message::ChunkRequest(r)) = wire::decode(&msg) {
                let nth = sends.iter().filter(|s| s.offset == r.offset).count();
                lost = lose(r.offset, nth);
                sends.push(Send {
                    at: now,
                    offset: r.offset,
                    lost,
                });
            }
            if !lost {
                up.push((now + ONE_WAY_MS, msg));
            }
        }
        while let Some(op) = dev.poll_storage() {
            storage.apply(op).unwrap();
            dev.storage_done(Ok(()));
        }
        while let Some(ev) = dev.poll_event() {
            if let Event::Sleep { reason, .. } = ev {
                assert_eq!(reason, SleepReason::Staged);
                assert_eq!(storage.staged(img.len()), img);
                return (sends, dev);
            }
        }
        let next = up
            .iter()
            .chain(down.iter())
            .map(|(t, _)| *t)
            .chain(dev.poll_timeout().map(|t| t.0))
            .min()
            .expect("the device waits for something");
        now = now.max(next);
        let (due_up, rest): (Vec<_>, Vec<_>) = up.into_iter().partition(|(t, _)| *t <= now);
        up = rest;
        for (_, req) in due_up {
            if let Ok(Some(reply)) = handler.handle(&req, Peer::Anonymous) {
                down.push((now + ONE_WAY_MS, reply));
            }
        }
        let (due_down, rest): (Vec<_>, Vec<_>) = down.into_iter().partition(|(t, _)| *t <= now);
        down = rest;
        for (_, msg) in due_down {
            let _ = dev.handle_message(Instant(now), &msg);
            while let Some(op) = dev.poll_storage() {
                storage.apply(op).unwrap();
                dev.storage_done(Ok(()));
            }
        }
        dev.handle_timeout(Instant(now));
    }
    panic!("the download did not finish");
}

/// The first and second sends of the request for `offset`.
fn first_two(sends: &[Send], offset: u32) -> (Send, Option<Send>) {
    let mut of = sends.iter().filter(|s| s.offset == offset).copied();
    (of.next().expect("requested"), of.next())
}

fn last_offset() -> u32 {
    (CHUNKS - 1) * u32::from(CHUNK)
}

/// Loses the first send of the first chunk's request (a loss seen early in the wake) and of
/// the last chunk's (in the tail, where no later reply shows it lost).
fn first_and_last_lost(offset: u32, nth: usize) -> bool {
    nth == 0 && (offset == 0 || offset == last_offset())
}

#[test]
fn a_lost_request_in_the_tail_is_copied_before_its_timer() {
    let (sends, dev) = download(Congestion::LossTolerant, first_and_last_lost);
    let (first, second) = first_two(&sends, last_offset());
    assert!(first.lost);
    let second = second.expect("sent again");
    // No timer fires and no later reply can show it lost within one round trip (600 ms
    // here): only a copy leaves that early.
    let waited = second.at - first.at;
    assert!(
        waited < 2 * ONE_WAY_MS,
        "second send {waited} ms after the first"
    );
    // The copies brought chunks twice, at most a window's worth.
    assert!(dev.stats().duplicate_chunks <= 8, "{:?}", dev.stats());
}

#[test]
fn a_clean_path_gets_no_copies() {
    let (sends, dev) = download(Congestion::LossTolerant, |_, _| false);
    assert_eq!(sends.len() as u32, CHUNKS, "every chunk asked for once");
    assert_eq!(dev.stats().duplicate_chunks, 0);
}

#[test]
fn aimd_waits_for_the_timer() {
    let (sends, _) = download(Congestion::Aimd, first_and_last_lost);
    let (first, second) = first_two(&sends, last_offset());
    let waited = second.expect("sent again").at - first.at;
    assert!(
        waited >= 2 * ONE_WAY_MS,
        "second send {waited} ms after the first"
    );
}
