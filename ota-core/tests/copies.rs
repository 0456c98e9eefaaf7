//! Copies of outstanding chunk requests in window slots that nothing new may fill (the image's
//! last chunks): sent early on a lossy path, never on a clean one, never under `Aimd`.
//!
//! Over the exact link (`common::exact`), so each assertion is about one timing the controller
//! chose.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use common::exact::{self, Send, ONE_WAY_MS};
use common::*;
use ota_core::device::Congestion;
use ota_core::manifest::Ed25519Verifier;
use ota_core::Device;

const CHUNK: u16 = 512;
const CHUNKS: u32 = 12;

/// Downloads a `CHUNKS`-chunk image in one wake; `lose` as for [`exact::wake`]. Every send
/// and the device.
fn download(
    congestion: Congestion,
    lose: &dyn Fn(&[Send], &Send) -> bool,
) -> (Vec<Send>, Device<Ed25519Verifier>) {
    download_in(congestion, 8, lose)
}

fn download_in(
    congestion: Congestion,
    window: u8,
    lose: &dyn Fn(&[Send], &Send) -> bool,
) -> (Vec<Send>, Device<Ed25519Verifier>) {
    let img = image((u32::from(CHUNK) * CHUNKS) as usize, 5);
    exact::download(&img, CHUNK, window, congestion, lose)
}

/// The first and second sends of the request for `offset`.
fn first_two(sends: &[Send], offset: u32) -> (Send, Option<Send>) {
    let mut of = sends.iter().filter(|s| s.offset == Some(offset)).copied();
    (of.next().expect("requested"), of.next())
}

fn last_offset() -> u32 {
    (CHUNKS - 1) * u32::from(CHUNK)
}

/// Loses the first send of the first chunk's request (a loss seen early in the wake) and of
/// the last chunk's (in the tail, where no later reply shows it lost).
fn first_and_last_lost(log: &[Send], send: &Send) -> bool {
    let first = !log.iter().any(|s| s.offset == send.offset);
    first && (send.offset == Some(0) || send.offset == Some(last_offset()))
}

#[test]
fn a_lost_request_in_the_tail_is_copied_before_its_timer() {
    let (sends, dev) = download(Congestion::LossTolerant, &first_and_last_lost);
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
    let (sends, dev) = download(Congestion::LossTolerant, &|_, _| false);
    let requests = sends.iter().filter(|s| s.offset.is_some()).count();
    assert_eq!(requests as u32, CHUNKS, "every chunk asked for once");
    assert_eq!(dev.stats().duplicate_chunks, 0);
}

#[test]
fn aimd_waits_for_the_timer() {
    let (sends, _) = download(Congestion::Aimd, &first_and_last_lost);
    let (first, second) = first_two(&sends, last_offset());
    let waited = second.expect("sent again").at - first.at;
    assert!(
        waited >= 2 * ONE_WAY_MS,
        "second send {waited} ms after the first"
    );
}

/// Every 4th request's first send lost, over a window of 4.
fn every_fourth_lost(log: &[Send], send: &Send) -> bool {
    let first = !log.iter().any(|s| s.offset == send.offset);
    first && send.offset.is_some_and(|o| (o / u32::from(CHUNK)) % 4 == 0)
}

#[test]
fn copies_never_put_more_than_the_window_on_the_link() {
    let (sends, dev) = download_in(Congestion::LossTolerant, 4, &every_fourth_lost);
    assert!(
        dev.stats().retransmissions > 0,
        "copies or resends were needed"
    );
    // On this link a send that got through is on it for exactly one round trip; the device
    // believes at least those in flight (and the lost ones until it finds them lost).
    for s in &sends {
        let on_link = sends
            .iter()
            .filter(|o| o.offset.is_some() && !o.lost)
            .filter(|o| o.at <= s.at && s.at < o.at + 2 * ONE_WAY_MS)
            .count();
        assert!(on_link <= 4, "{on_link} sends on the link at {} ms", s.at);
    }
}
