//! The window moves on while the chunk at the head of the resume bitmap is lost again and again,
//! as far as the bitmap reaches (`resume::MAX_AHEAD`, 64 chunks) and no further: every chunk
//! that arrives meanwhile is recorded, so a reset would lose none of them.
//!
//! Over the exact link (`common::exact`): replies come back `2 × ONE_WAY_MS` after their request.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use common::exact::{self, Send, ONE_WAY_MS};
use common::*;
use ota_core::device::Congestion;
use ota_core::resume::MAX_AHEAD;

const CHUNK: u16 = 512;
const CHUNKS: u32 = 100;
/// Sends of the first chunk's request that the link loses.
const LOST: usize = 6;

/// Loses the first [`LOST`] sends of the request for chunk 0, copies included.
fn head_lost(log: &[Send], send: &Send) -> bool {
    send.offset == Some(0) && log.iter().filter(|s| s.offset == Some(0)).count() < LOST
}

#[test]
fn the_window_reaches_past_a_lost_head_as_far_as_the_bitmap_and_no_further() {
    let img = image((u32::from(CHUNK) * CHUNKS) as usize, 9);
    let (log, _) = exact::download(&img, CHUNK, 12, Congestion::LossTolerant, &head_lost);

    // Until the reply to the first send of chunk 0 that got through, the bitmap's head is
    // chunk 0: everything asked for meanwhile lies within its reach.
    let through = log
        .iter()
        .find(|s| s.offset == Some(0) && !s.lost)
        .expect("chunk 0 got through at last");
    let answered = through.at + 2 * ONE_WAY_MS;
    let furthest = log
        .iter()
        .filter(|s| s.at < answered)
        .filter_map(|s| s.offset)
        .max()
        .unwrap()
        / u32::from(CHUNK);
    assert!(
        furthest <= MAX_AHEAD,
        "chunk {furthest} asked for, beyond the bitmap's reach"
    );
    // A 32-bit bitmap stopped at chunk 32.
    assert!(furthest > 32, "the window stopped at chunk {furthest}");
}

/// A wake that ends while chunk 0 is still lost leaves the chunks after it staged: the device
/// counts them in `staged_bytes`, before and after a restore, as the next offer's
/// `resume_from` does (its resume hint's `next_offset` is still 0).
#[test]
fn staged_bytes_count_the_chunks_past_a_gap() {
    use ota_core::device::{Device, Event};
    use ota_core::manifest::Ed25519Verifier;
    use ota_core::wire::WakeBudget;
    use ota_core::UpdateStorage;

    let img = image((u32::from(CHUNK) * CHUNKS) as usize, 9);
    let handler = handler(&img, CHUNK);
    // Chunk 0 is lost every time; the wake ends on its time budget.
    let budget = WakeBudget {
        bytes: None,
        millis: Some(6_000),
    };
    let lose_head = |_: &[exact::Send], s: &exact::Send| s.offset == Some(0);
    let exact::Woken {
        dev,
        mut storage,
        now,
        ..
    } = exact::woken(
        img.len(),
        &handler,
        (12, Congestion::LossTolerant),
        budget,
        &lose_head,
    );
    let state = dev.resume_state().expect("a download in progress");
    assert_eq!(state.next_offset, 0, "chunk 0 was never staged");
    let past_gap = state.ahead.count_ones() * u32::from(CHUNK);
    assert!(past_gap > 0, "no chunk staged past the gap");
    assert_eq!(dev.staged_bytes(), Some(past_gap));

    // A fresh device restored from storage counts the same, and so does the next offer.
    let cfg = config(storage.capacity(), 12);
    let mut next: Device<Ed25519Verifier> = Device::new(cfg, verifier());
    next.restore_from(&mut storage).unwrap();
    assert_eq!(next.staged_bytes(), Some(past_gap));
    let mut offered = None;
    next.wake(ota_core::Instant(now), WakeBudget::default());
    let mut buf = [0u8; 256];
    let mut t = now;
    // The check-in and its reply over the exact link; nothing lost.
    for _ in 0..100 {
        let Some(sent) = next.poll_transmit(ota_core::Instant(t), &mut buf) else {
            break;
        };
        let msg = buf[..sent.len].to_vec();
        if let Ok(Some(reply)) = handler.handle(&msg, ota_core::host::Peer::Anonymous) {
            t += 2 * ONE_WAY_MS;
            let _ = next.handle_message(ota_core::Instant(t), &reply);
        }
        while let Some(ev) = next.poll_event() {
            if let Event::UpdateOffered { resume_from, .. } = ev {
                offered = Some(resume_from);
            }
        }
        if offered.is_some() {
            break;
        }
    }
    assert_eq!(offered, Some(past_gap));
}
