//! apply(diff(a, b)) == b, whole, in chunks, and across power cuts at any chunk and any write.
#![allow(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)]

mod support;

use ota_delta::{apply_in_memory, diff, source_of, Applier, ApplyError, State, STATE_LEN};
use proptest::prelude::*;
use support::{pair, Fault, Flash, Old};

fn cases() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(200),
        ..ProptestConfig::default()
    }
}

/// Applies `patch` in `chunk`-byte pieces, persisting the state as bytes after each, as a device
/// does. At chunk `cut_chunk` power fails after `cut_write` writes (or after the chunk was fed but
/// before its state was saved, if `cut_write` is `None`): the applier is rebuilt from the bytes
/// saved after the previous chunk and the chunk is fed again.
fn apply_resuming(
    old: &[u8],
    patch: &[u8],
    chunk: usize,
    cut_chunk: usize,
    cut_write: Option<u64>,
) -> Flash {
    let source = source_of(old);
    let capacity = 1 << 16;
    let mut flash = Flash::new(capacity);
    let mut old_img = Old::new(old);
    let mut saved: [u8; STATE_LEN] = Applier::new(source, capacity as u32).state().to_bytes();
    for (k, piece) in patch.chunks(chunk).enumerate() {
        // Every chunk starts from the persisted bytes alone, as after a sleep.
        let state = State::from_bytes(&saved).expect("saved state loads");
        let mut applier = Applier::resume(state, source, capacity as u32).expect("resume");
        if k == cut_chunk {
            // Power fails during this chunk (after `cut_write` writes), or after it was fed but
            // before its state was saved (`None`): the state in RAM is lost either way.
            flash.cut_after = cut_write.map(|n| flash.writes + n);
            if let Err(e) = applier.feed(piece, &mut old_img, &mut flash) {
                assert_eq!(e, ApplyError::Write(Fault::PowerCut));
            }
            flash.cut_after = None;
            let state = State::from_bytes(&saved).unwrap();
            applier = Applier::resume(state, source, capacity as u32).unwrap();
        }
        applier.feed(piece, &mut old_img, &mut flash).unwrap();
        saved = applier.state().to_bytes();
    }
    let state = State::from_bytes(&saved).unwrap();
    let applier = Applier::resume(state, source, capacity as u32).unwrap();
    let size = applier.finish::<Fault>().unwrap();
    assert_eq!(size as usize, applier.written() as usize);
    flash
}

proptest! {
    #![proptest_config(cases())]

    #[test]
    fn apply_of_diff_is_new((old, new) in pair()) {
        let patch = diff(&old, &new).unwrap();
        prop_assert_eq!(apply_in_memory(&old, &patch).unwrap(), new);
    }

    #[test]
    fn chunks_and_power_cuts_rebuild_the_same_bytes(
        (old, new) in pair(),
        chunk in prop_oneof![1usize..8, 8usize..64, Just(1024)],
        cut_chunk in any::<usize>(),
        cut_write in prop::option::of(0u64..4),
    ) {
        let patch = diff(&old, &new).unwrap();
        let chunks = patch.len().div_ceil(chunk).max(1);
        let flash = apply_resuming(&old, &patch, chunk, cut_chunk % chunks, cut_write);
        prop_assert_eq!(flash.changed, None, "a rewrite after the cut changed a byte");
        prop_assert_eq!(flash.image(new.len()), &new[..]);
        prop_assert!(!flash.written[new.len()..].iter().any(|&w| w), "wrote past NEW");
    }
}

#[test]
fn every_chunk_boundary_of_a_firmware_like_patch() {
    // A deterministic pair with moved code and shifted pointers; cut at every chunk in turn.
    let mut old = Vec::new();
    let mut x = 0x1234_5678u32;
    for i in 0..6000u32 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        old.extend_from_slice(
            &if i % 5 == 0 {
                0x2000_0000 + i * 4
            } else {
                x % 4096
            }
            .to_le_bytes(),
        );
    }
    let mut new = old.clone();
    new.splice(4000..4000, b"a new string in rodata".iter().copied());
    for w in new.chunks_mut(4).skip(1200).step_by(5) {
        if w.len() == 4 {
            let v = u32::from_le_bytes(w.try_into().unwrap()).wrapping_add(24);
            w.copy_from_slice(&v.to_le_bytes());
        }
    }
    let patch = diff(&old, &new).unwrap();
    assert!(
        patch.len() < new.len() / 10,
        "patch {} of {}",
        patch.len(),
        new.len()
    );
    let chunk = 64;
    for cut in 0..patch.len().div_ceil(chunk) {
        for cut_write in [None, Some(0), Some(1)] {
            let flash = apply_resuming(&old, &patch, chunk, cut, cut_write);
            assert_eq!(flash.changed, None);
            assert_eq!(flash.image(new.len()), &new[..], "cut at chunk {cut}");
        }
    }
}

#[test]
fn ram_and_state_figures() {
    let state = core::mem::size_of::<State>();
    let applier = core::mem::size_of::<Applier>();
    println!(
        "applier RAM: State {state} B in memory ({STATE_LEN} B persisted), Applier {applier} B \
         (state + {} B work buffer + source digest and capacity)",
        ota_delta::BUF_LEN
    );
    const { assert!(STATE_LEN <= 64) };
    assert!(applier <= 4096);
}

/// OLD that fails one read, as a flaky bus would.
struct Flaky<'a> {
    data: &'a [u8],
    reads: u32,
    fail_at: u32,
}

impl ota_delta::OldImage for Flaky<'_> {
    type Error = Fault;
    fn read(&mut self, offset: u32, buf: &mut [u8]) -> Result<(), Fault> {
        self.reads += 1;
        if self.reads == self.fail_at {
            return Err(Fault::PowerCut);
        }
        let s = offset as usize;
        buf.copy_from_slice(self.data.get(s..s + buf.len()).ok_or(Fault::OldOutside)?);
        Ok(())
    }
}

#[test]
fn a_storage_error_leaves_the_state_as_before_the_chunk() {
    let old: Vec<u8> = (0..30_000u32).map(|i| (i * 13 % 253) as u8).collect();
    let mut new = old.clone();
    new.splice(12_000..12_100, std::iter::repeat_n(0x5a, 40));
    new[25_000] ^= 0xff;
    let patch = diff(&old, &new).unwrap();
    let mut errors = 0;
    for fail_at in 1..40 {
        let source = source_of(&old);
        let mut applier = Applier::new(source, 1 << 16);
        let mut flash = Flash::new(1 << 16);
        let mut flaky = Flaky {
            data: &old,
            reads: 0,
            fail_at,
        };
        for chunk in patch.chunks(32) {
            let before = applier.state();
            match applier.feed(chunk, &mut flaky, &mut flash) {
                Ok(_) => {}
                Err(e) => {
                    assert_eq!(e, ApplyError::ReadOld(Fault::PowerCut));
                    errors += 1;
                    assert_eq!(applier.state(), before, "an error moved the state");
                    // Retry the same chunk.
                    applier.feed(chunk, &mut flaky, &mut flash).unwrap();
                }
            }
        }
        assert_eq!(applier.finish::<Fault>().unwrap() as usize, new.len());
        assert_eq!(flash.image(new.len()), &new[..]);
        assert_eq!(flash.changed, None);
    }
    assert!(errors >= 20, "only {errors} reads failed");
}

#[test]
fn progress_and_what_follows_the_end() {
    let old = vec![3u8; 5000];
    let mut new = old.clone();
    new[100] = 4;
    let patch = diff(&old, &new).unwrap();
    let source = source_of(&old);
    let mut applier = Applier::new(source, 8000);
    let mut flash = Flash::new(8000);
    let mut old_img = Old::new(&old);
    assert_eq!(applier.new_size(), None);
    let p = applier
        .feed(&patch[..10], &mut old_img, &mut flash)
        .unwrap();
    assert_eq!(
        (p.written, p.new_size, p.consumed, p.done),
        (0, None, 10, false)
    );
    let p = applier
        .feed(&patch[10..], &mut old_img, &mut flash)
        .unwrap();
    assert_eq!(p.new_size, Some(5000));
    assert!(p.done);
    assert_eq!(p.written, 5000);
    assert_eq!(p.consumed as usize, patch.len());
    // An empty chunk changes nothing; a byte more is refused.
    assert_eq!(applier.feed(&[], &mut old_img, &mut flash).unwrap(), p);
    let r = applier.feed(&[0], &mut old_img, &mut flash);
    assert!(matches!(
        r,
        Err(ApplyError::Malformed {
            what: ota_delta::Malformed::Trailing,
            ..
        })
    ));
    assert_eq!(applier.finish::<Fault>(), Ok(5000));
}
