//! A download resumed with a hole before its last chunk: the chunks committed past the hole
//! survive the writes of the next wake. The last chunk ahead of the hole is the first of its
//! sector, where the storage once counted that sector as not erased yet and erased it again.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use common::*;
use ota_core::manifest::StoredManifest;
use ota_core::resume::{ResumePhase, ResumeState};
use ota_core::storage::{StorageOp, UpdateStorage as _};
use ota_storage::{EitherMode, FlashStorage};
use ota_test_support::SimFlash;

const CHUNK: u32 = 1024;
const SECTOR: usize = 4096;

#[test]
fn a_committed_chunk_past_a_hole_survives_the_next_wake() {
    for write_once in [false, true] {
        let s = Scenario {
            old: bytes(4 * 1024, 1),
            new: bytes(16 * 1024, 2),
            chunk: CHUNK as u16,
            healthy: true,
            wake_bytes: 0,
            write_once,
            patch: None,
            loss_percent: 0,
            power_off_sleep: false,
        };
        let (signed, image) = release(&s);
        let stored = StoredManifest::from_signed(&signed.as_signed()).unwrap();
        let size = image.len() as u32;
        let layout = layout(SECTOR as u32, sectors_needed(SECTOR, &s));
        let open = |flash: SimFlash<8, SECTOR>| {
            FlashStorage::open_either(flash, layout, write_once).unwrap()
        };
        let mut state = ResumeState {
            manifest: signed.digest(),
            image: ota_core::wire::ImageId(5),
            next_offset: 0,
            ahead: 0,
            phase: ResumePhase::Downloading,
        };
        let chunk = |i: u32| &image[(i * CHUNK) as usize..((i + 1) * CHUNK) as usize];
        // First wake: chunks 0 to 6, then 8 (the first of the third sector); 7 is lost.
        let mut storage = open(fresh_flash::<8, SECTOR>(&s));
        storage
            .apply(StorageOp::Begin {
                manifest: &stored,
                state,
            })
            .unwrap();
        // Writes chunk `i` and records it, as the device's wake does.
        let stage = |storage: &mut FlashStorage<SimFlash<8, SECTOR>, EitherMode>,
                     state: &mut ResumeState,
                     i| {
            storage
                .apply(StorageOp::Write {
                    offset: i * CHUNK,
                    data: chunk(i),
                })
                .unwrap();
            state.mark(i * CHUNK, CHUNK, size);
            storage.apply(StorageOp::Persist(*state)).unwrap();
        };
        for i in (0..7).chain([8]) {
            stage(&mut storage, &mut state, i);
        }
        assert_eq!((state.next_offset, state.ahead), (7 * CHUNK, 1));
        // Power off; the next wake fetches 7 and 9 (9 in the sector 8 begins).
        let mut storage = open(storage.into_flash());
        for i in [7, 9] {
            stage(&mut storage, &mut state, i);
        }
        let mut back = vec![0u8; CHUNK as usize];
        storage
            .apply(StorageOp::Read {
                offset: 8 * CHUNK,
                buf: &mut back,
            })
            .unwrap();
        assert!(
            back == chunk(8),
            "write-once {write_once}: chunk 8 was erased"
        );
    }
}
