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
