//! Journal recovery: torn and corrupted records fall back to the previous good one; garbage
//! means "no update in progress"; nothing panics.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use embedded_storage::nor_flash::NorFlash;
use ota_core::manifest::{SignedManifest, StoredManifest};
use ota_core::resume::ResumeState;
use ota_core::runtime::block::block_on;
use ota_core::wire::{Digest, ImageId, Signature};
use ota_storage::journal::{Journal, RecordKind, Snapshot};
use ota_storage::record::Record;
use ota_storage::UpdateState;
use ota_test_support::SimFlash;
use proptest::prelude::*;

type Flash = SimFlash<4, 1024>;

fn manifest() -> StoredManifest {
    StoredManifest::from_signed(&SignedManifest {
        body: &[1, 2, 3, 4, 5],
        signature: Signature([9; 64]),
    })
    .unwrap()
}

/// Commits begin + `n` progress records; returns the journal, the expected snapshots after each
/// commit, and the byte ranges each record occupies.
fn build(flash: &mut Flash, n: u32) -> (Journal, Vec<Snapshot>) {
    let (mut j, mut snap) = block_on(Journal::open(flash, 0, 2)).unwrap();
    let mut snaps = vec![snap];
    let begin = Record::Begin {
        state: ResumeState::new(Digest([3; 32]), ImageId(1)),
        manifest: manifest(),
    };
    let mut recs = vec![begin];
    for i in 1..=n {
        recs.push(Record::Progress {
            image: ImageId(1),
            next_offset: i * 100,
            ahead: 0,
        });
    }
    for r in recs {
        snap.apply(&r);
        block_on(j.commit(flash, &r, &snap)).unwrap();
        snaps.push(snap);
    }
    (j, snaps)
}

/// The records that rebuild `snap` (what a rotation writes), by index.
fn before_record(snap: &Snapshot, i: usize) -> Option<Record> {
    match i {
        0 => snap.last(RecordKind::Begin),
        1 => snap.last(RecordKind::Progress),
        2 => Some(Record::State(snap.state)),
        _ => (snap.counter > 0).then_some(Record::Counter(snap.counter)),
    }
}

fn reopen(flash: &mut Flash) -> Snapshot {
    block_on(Journal::open(flash, 0, 2)).unwrap().1
}

/// Offset of the last non-erased byte in the journal's current sector.
fn last_written(flash: &Flash) -> usize {
    flash.contents()[..2048]
        .iter()
        .rposition(|&b| b != 0xFF)
        .unwrap()
}

#[test]
fn reopen_sees_every_commit() {
    let mut flash = Flash::new(2);
    let (_, snaps) = build(&mut flash, 5);
    assert_eq!(reopen(&mut flash), *snaps.last().unwrap());
    assert_eq!(reopen(&mut flash).resume().unwrap().0.next_offset, 500);
}

#[test]
fn bit_flip_in_last_record_falls_back_to_previous() {
    let mut flash = Flash::new(2);
    let (_, snaps) = build(&mut flash, 5);
    let at = last_written(&flash) - 3;
    flash.contents_mut()[at] ^= 0x08;
    assert_eq!(reopen(&mut flash), snaps[snaps.len() - 2]);
}

#[test]
fn torn_last_record_falls_back_and_next_commit_rotates() {
    let mut flash = Flash::new(2);
    let (_, snaps) = build(&mut flash, 5);
    // Tear the last record: its tail never got written.
    let end = last_written(&flash);
    for b in &mut flash.contents_mut()[end - 6..=end] {
        *b = 0xFF;
    }
    let (mut j, mut snap) = block_on(Journal::open(&mut flash, 0, 2)).unwrap();
    assert_eq!(snap, snaps[snaps.len() - 2]);
    let erases_before: u32 = flash.erase_counts().iter().sum();
    let r = Record::State(UpdateState::Staged);
    snap.apply(&r);
    block_on(j.commit(&mut flash, &r, &snap)).unwrap();
    let erases_after: u32 = flash.erase_counts().iter().sum();
    assert_eq!(
        erases_after,
        erases_before + 1,
        "the damaged sector must not be appended to"
    );
    assert_eq!(reopen(&mut flash), snap);
}

#[test]
fn rotation_keeps_state_across_many_commits() {
    let mut flash = Flash::new(2);
    let (_, snaps) = build(&mut flash, 300);
    assert!(
        flash.erase_counts().iter().all(|&e| e > 2),
        "should have rotated: {:?}",
        flash.erase_counts()
    );
    assert_eq!(reopen(&mut flash), *snaps.last().unwrap());
}

#[test]
fn no_good_record_means_idle() {
    let mut flash = Flash::new(2);
    let (_, snap) = block_on(Journal::open(&mut flash, 0, 2)).unwrap();
    assert_eq!(snap, Snapshot::default());
    assert_eq!(snap.state, UpdateState::Idle);
    assert!(snap.resume().is_none());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Arbitrary journal contents open without panicking, and the journal stays usable.
    #[test]
    fn garbage_never_panics(contents in prop::collection::vec(any::<u8>(), 2048), erased in any::<bool>()) {
        let mut flash = Flash::new(2);
        flash.contents_mut().copy_from_slice(&contents);
        if erased {
            flash.erase(1024, 2048).unwrap();
        }
        let (mut j, mut snap) = block_on(Journal::open(&mut flash, 0, 2)).unwrap();
        let r = Record::State(UpdateState::Staged);
        snap.apply(&r);
        block_on(j.commit(&mut flash, &r, &snap)).unwrap();
        prop_assert_eq!(reopen(&mut flash).state, UpdateState::Staged);
    }

    /// Flipping any bit of the journal never yields a state that was never committed.
    #[test]
    fn any_bit_flip_yields_a_committed_state(bit in 0usize..2048 * 8, n in 1u32..40) {
        let mut flash = Flash::new(2);
        let (_, snaps) = build(&mut flash, n);
        flash.contents_mut()[bit / 8] ^= 1 << (bit % 8);
        let got = reopen(&mut flash);
        prop_assert!(snaps.contains(&got), "state {:?} was never committed", got);
    }

    /// What a commit writes is the record derived again from the snapshot after it
    /// (`Snapshot::last`): for every record that changes a snapshot, exactly that record; so a
    /// journal written from snapshots alone replays to the same states.
    #[test]
    fn the_record_a_commit_writes_is_derived_exactly_from_the_snapshot_after_it(
        downloading in any::<bool>(),
        next in any::<u32>(), ahead in prop_oneof![any::<u32>().prop_map(u64::from), any::<u64>()], image in any::<u32>(),
        seq in any::<u32>(), counter in any::<u64>(), pick in 0usize..5,
    ) {
        let mut before = Snapshot::default();
        if downloading {
            before.apply(&Record::Begin {
                state: ResumeState::new(Digest([5; 32]), ImageId(1)),
                manifest: manifest(),
            });
        }
        let rec = [
            Record::Begin { state: ResumeState::new(Digest([7; 32]), ImageId(image)), manifest: manifest() },
            Record::Progress { image: ImageId(image), next_offset: next, ahead },
            Record::State(UpdateState::Reverted { sequence: seq, reason: ota_core::wire::ResultCode(7) }),
            Record::State(UpdateState::Idle),
            Record::Counter(counter),
        ][pick];
        let mut after = before;
        after.apply(&rec);
        let derived = after.last(RecordKind::of(&rec));
        if after == before && derived != Some(rec) {
            // Progress with no download: nothing changed, and nothing is written.
            let progress = matches!(rec, Record::Progress { .. });
            prop_assert!(progress && !downloading, "{rec:?} changed nothing");
        } else {
            prop_assert_eq!(derived, Some(rec));
            // And journalled from the snapshot alone, it reopens as `after`.
            let mut flash = Flash::new(2);
            let (mut j, _) = block_on(Journal::open(&mut flash, 0, 2)).unwrap();
            block_on(j.commit(&mut flash, &Record::State(UpdateState::Idle), &Snapshot::default())).unwrap();
            let mut base = Snapshot::default();
            for r in (0..4).filter_map(|i| before_record(&before, i)) {
                base.apply(&r);
                block_on(j.commit(&mut flash, &r, &base)).unwrap();
            }
            block_on(j.commit_last(&mut flash, &after, RecordKind::of(&rec))).unwrap();
            prop_assert_eq!(reopen(&mut flash), after);
        }
    }

    /// A commit that keeps only the snapshot before it and a way to build the record
    /// (`commit_onto`, what the storage does) programs the same bytes at the same offsets as
    /// one given the record and the snapshot after it, whether it appends or rotates.
    #[test]
    fn commit_onto_writes_what_commit_writes(
        downloading in any::<bool>(), fill in 0u64..60, full in 0u32..40,
        next in any::<u32>(), ahead in prop_oneof![any::<u32>().prop_map(u64::from), any::<u64>()], image in any::<u32>(),
        seq in any::<u32>(), pick in 0usize..5,
    ) {
        let mut flash = Flash::new(2);
        let (mut j, mut before) = block_on(Journal::open(&mut flash, 0, 2)).unwrap();
        let mut prefix = Vec::new();
        if downloading {
            prefix.push(Record::Begin {
                state: ResumeState::new(Digest([5; 32]), ImageId(1)),
                manifest: manifest(),
            });
        }
        prefix.extend((1..=fill).map(Record::Counter));
        for r in &prefix {
            before.apply(r);
            block_on(j.commit(&mut flash, r, &before)).unwrap();
        }
        // Half the cases fill the sector to within a few bytes of its end, so the commit
        // under test rotates (in about 110 of 256 cases) or just fits.
        if full % 2 == 0 {
            let mut v = 1_000;
            while j.used() + full / 4 < 1024 - 12 {
                v += 1;
                before.apply(&Record::Counter(v));
                block_on(j.commit(&mut flash, &Record::Counter(v), &before)).unwrap();
            }
        }
        let rec = [
            Record::Begin { state: ResumeState::new(Digest([7; 32]), ImageId(image)), manifest: manifest() },
            Record::Progress { image: ImageId(image), next_offset: next, ahead },
            Record::State(UpdateState::Reverted { sequence: seq, reason: ota_core::wire::ResultCode(7) }),
            Record::State(UpdateState::Idle),
            Record::Counter(u64::from(seq) + 5_000),
        ][pick];
        let mut after = before;
        after.apply(&rec);
        let (mut given, mut onto) = (flash.clone(), flash);
        let mut j2 = j.clone();
        block_on(j.commit(&mut given, &rec, &after)).unwrap();
        block_on(j2.commit_onto(&mut onto, &before, &|| rec)).unwrap();
        prop_assert!(given.contents() == onto.contents(), "the two commits wrote different bytes");
        prop_assert_eq!(j.used(), j2.used());
        prop_assert_eq!(reopen(&mut onto), after);
    }

    #[test]
    fn record_decoding_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = Record::decode(&bytes);
    }

    #[test]
    fn records_roundtrip(next in any::<u32>(), ahead in prop_oneof![any::<u32>().prop_map(u64::from), any::<u64>()], image in any::<u32>(), seq in any::<u32>()) {
        for r in [
            Record::Progress { image: ImageId(image), next_offset: next, ahead },
            Record::Header { seq },
            Record::State(UpdateState::Reverted { sequence: seq, reason: ota_core::wire::ResultCode(7) }),
            Record::Begin { state: ResumeState::new(Digest([7; 32]), ImageId(image)), manifest: manifest() },
        ] {
            let mut buf = [0u8; ota_storage::record::MAX_RECORD];
            let n = r.encode(&mut buf);
            prop_assert_eq!(Record::decode(&buf[..n]), Ok(r));
        }
    }
}

/// Records written before the resume bitmap grew to 64 bits still read: a begin record with the
/// 45-byte resume layout (kind 2), a progress record with a 32-bit bitmap. Progress keeps that
/// 12-byte payload until a chunk past the first 32 is staged.
#[test]
fn records_with_a_32_bit_bitmap_still_read() {
    let state = ResumeState::new(Digest([3; 32]), ImageId(1));
    let mut m = [0u8; StoredManifest::MAX_BYTES];
    let n = manifest().to_bytes(&mut m).unwrap();
    let mut legacy = vec![0u8, 2];
    legacy.extend_from_slice(&state.to_bytes()[..ota_core::resume::RESUME_STATE_LEN_32]);
    legacy.extend_from_slice(&m[..n]);
    legacy[0] = (legacy.len() - 2) as u8;
    let crc = ota_core::crc32::checksum(&legacy);
    legacy.extend_from_slice(&crc.to_le_bytes());
    assert_eq!(
        Record::decode(&legacy),
        Ok(Record::Begin {
            state,
            manifest: manifest()
        })
    );

    let mut out = [0u8; ota_storage::record::MAX_RECORD];
    for (ahead, len) in [
        (0u64, 18),
        (u64::from(u32::MAX), 18),
        (1 << 32, 22),
        (u64::MAX, 22),
    ] {
        let rec = Record::Progress {
            image: ImageId(1),
            next_offset: 4096,
            ahead,
        };
        assert_eq!(rec.encode(&mut out), len, "ahead {ahead:#x}");
        assert_eq!(Record::decode(&out[..len]), Ok(rec));
    }
    // A begin record is written in the 49-byte layout and reads back whole.
    let wide = Record::Begin {
        state: ResumeState {
            ahead: 1 << 40,
            ..state
        },
        manifest: manifest(),
    };
    let len = wide.encode(&mut out);
    assert_eq!(len, 6 + 49 + n);
    assert_eq!(Record::decode(&out[..len]), Ok(wide));
    // The longest manifest still fits a begin record whole.
    let body = [0x5a; ota_core::manifest::MAX_MANIFEST_BODY];
    let longest = Record::Begin {
        state,
        manifest: StoredManifest::from_signed(&SignedManifest {
            body: &body,
            signature: Signature([9; 64]),
        })
        .unwrap(),
    };
    let len = longest.encode(&mut out);
    assert_eq!(len, 6 + 49 + StoredManifest::MAX_BYTES);
    assert_eq!(Record::decode(&out[..len]), Ok(longest));
}
