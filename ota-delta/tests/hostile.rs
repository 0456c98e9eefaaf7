//! Patches for another image, truncated, bit-flipped or made of noise: typed errors, nothing
//! read outside OLD, nothing written outside NEW, no panic.
#![allow(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)]

mod support;

use ota_delta::format::{Header, Kind, Params, HEADER_LEN};
use ota_delta::{
    diff, source_of, Applier, ApplyError, Malformed, SourceMismatch, State, StateError, STATE_LEN,
};
use proptest::prelude::*;
use support::{pair, Fault, Flash, Old};

/// Feeds `patch` in `chunk`-byte pieces into a slot of `capacity`; returns the first error or
/// the result of `finish`, and the slot.
fn run(
    old: &[u8],
    patch: &[u8],
    chunk: usize,
    capacity: usize,
) -> (Result<u32, ApplyError<Fault>>, Flash) {
    let mut flash = Flash::new(capacity);
    let mut old_img = Old::new(old);
    let mut applier = Applier::new(source_of(old), capacity as u32);
    for piece in patch.chunks(chunk.max(1)) {
        if let Err(e) = applier.feed(piece, &mut old_img, &mut flash) {
            return (Err(e), flash);
        }
    }
    (applier.finish(), flash)
}

/// No fault of the applier's making: reads inside OLD, writes inside the slot, reads of NEW only
/// of what it wrote, and never past the size the header declares.
fn assert_contained(r: &Result<u32, ApplyError<Fault>>, flash: &Flash, patch: &[u8]) {
    if let Err(ApplyError::ReadOld(f) | ApplyError::ReadNew(f) | ApplyError::Write(f)) = r {
        panic!("storage fault {f:?}: the applier left its bounds")
    }
    if let Ok(h) = Header::parse(patch) {
        let declared = h.new_size as usize;
        assert!(
            !flash.written[declared.min(flash.capacity)..]
                .iter()
                .any(|&w| w),
            "wrote past the declared size"
        );
    }
}

fn firmware_like() -> (Vec<u8>, Vec<u8>) {
    let old: Vec<u8> = (0..20_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    let mut new = old.clone();
    new.splice(7000..7000, b"inserted".iter().copied());
    new[15_000] ^= 0x55;
    (old, new)
}

#[test]
fn a_patch_for_another_image_is_refused_before_anything_is_written() {
    let (old, new) = firmware_like();
    let patch = diff(&old, &new).unwrap();
    // Same size, one byte different: the digest differs.
    let mut other = old.clone();
    other[100] ^= 1;
    let (r, flash) = run(&other, &patch, 1024, 1 << 16);
    assert!(
        matches!(
            r,
            Err(ApplyError::WrongSource(SourceMismatch::Digest { .. }))
        ),
        "{r:?}"
    );
    assert!(!flash.any_written());
    // Another size.
    let (r, flash) = run(&old[..19_999], &patch, 1, 1 << 16);
    assert_eq!(
        r,
        Err(ApplyError::WrongSource(SourceMismatch::Size {
            patch: 20_000,
            image: 19_999
        }))
    );
    assert!(!flash.any_written());
    let msg = ApplyError::<Fault>::WrongSource(SourceMismatch::Size {
        patch: 20_000,
        image: 19_999,
    })
    .to_string();
    assert_eq!(
        msg,
        "the patch is not for this image: it was made from a 20000-byte image, this one has 19999 bytes"
    );
}

#[test]
fn a_new_image_larger_than_the_slot_is_refused() {
    let (old, new) = firmware_like();
    let patch = diff(&old, &new).unwrap();
    let (r, flash) = run(&old, &patch, 7, new.len() - 1);
    assert_eq!(
        r,
        Err(ApplyError::TooLarge {
            size: new.len() as u32,
            capacity: new.len() as u32 - 1
        })
    );
    assert!(!flash.any_written());
}

#[test]
fn every_truncation_is_an_error() {
    let (old, new) = firmware_like();
    let patch = diff(&old, &new).unwrap();
    for len in 0..patch.len() {
        let (r, flash) = run(&old, &patch[..len], 13, 1 << 16);
        assert!(r.is_err(), "a patch cut at {len} of {} passed", patch.len());
        assert_contained(&r, &flash, &patch);
    }
    // And bytes after the end.
    let mut longer = patch.clone();
    longer.push(0);
    let (r, _) = run(&old, &longer, 1024, 1 << 16);
    assert!(
        matches!(
            r,
            Err(ApplyError::Malformed {
                what: Malformed::Trailing,
                ..
            })
        ),
        "{r:?}"
    );
}

#[test]
fn every_single_bit_flip_is_an_error_or_harmless() {
    let (old, new) = firmware_like();
    let patch = diff(&old, &new).unwrap();
    let mut errors = 0;
    for bit in 0..patch.len() * 8 {
        let mut bad = patch.clone();
        bad[bit / 8] ^= 1 << (bit % 8);
        let (r, flash) = run(&old, &bad, 64, 1 << 16);
        assert_contained(&r, &flash, &bad);
        match r {
            Err(_) => errors += 1,
            // A flip can only pass if it rebuilt NEW exactly (say, a copy from an equal region).
            Ok(n) => assert_eq!(flash.image(n as usize), &new[..], "bit {bit} passed"),
        }
    }
    assert!(errors * 10 >= patch.len() * 8 * 9, "{errors} errors");
}

fn header_for(old: &[u8], new_size: u32, params: Params) -> Vec<u8> {
    let s = source_of(old);
    Header {
        old_size: s.len,
        old_sha256: s.sha256,
        new_size,
        new_crc32: 0,
        params,
    }
    .to_bytes()
    .to_vec()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    #[test]
    fn random_flips_and_cuts_of_random_patches((old, new) in pair(), flips in prop::collection::vec(any::<usize>(), 1..4), cut in any::<usize>(), chunk in 1usize..100) {
        let patch = diff(&old, &new).unwrap();
        let mut bad = patch.clone();
        for f in &flips {
            let bit = f % (bad.len() * 8);
            bad[bit / 8] ^= 1 << (bit % 8);
        }
        let (r, flash) = run(&old, &bad, chunk, 1 << 16);
        assert_contained(&r, &flash, &bad);
        if let Ok(n) = r {
            prop_assert_eq!(flash.image(n as usize), &new[..]);
        }
        let cut = cut % patch.len();
        let (r, flash) = run(&old, &patch[..cut], chunk, 1 << 16);
        prop_assert!(r.is_err());
        assert_contained(&r, &flash, &patch);
    }

    #[test]
    fn noise_after_a_valid_header_stays_contained(
        old in prop::collection::vec(any::<u8>(), 0..2000),
        new_size in 0u32..5000,
        ks in prop::collection::vec(0u8..16, 7),
        first in 0u8..3,
        body in prop::collection::vec(any::<u8>(), 0..600),
        chunk in 1usize..64,
    ) {
        let params = Params {
            k_diag: ks[0], k_len: ks[1], k_count: ks[2], k_gap: ks[3],
            k_lit: ks[4], k_dist: ks[5], k_match: ks[6],
            first: Kind::from_u8(first).unwrap(),
        };
        let mut patch = header_for(&old, new_size, params);
        patch.extend_from_slice(&body);
        let (r, flash) = run(&old, &patch, chunk, 8192);
        assert_contained(&r, &flash, &patch);
    }

    #[test]
    fn damaged_states_are_refused_or_contained(
        (old, new) in pair(),
        chunk in 1usize..40,
        at_chunk in any::<usize>(),
        damage in prop::collection::vec((0usize..STATE_LEN - 4, any::<u8>()), 1..4),
    ) {
        let patch = diff(&old, &new).unwrap();
        let source = source_of(&old);
        let capacity = 1 << 16;
        let mut flash = Flash::new(capacity);
        let mut old_img = Old::new(&old);
        let mut applier = Applier::new(source, capacity as u32);
        let pieces: Vec<&[u8]> = patch.chunks(chunk).collect();
        let k = at_chunk % pieces.len();
        for piece in &pieces[..k] {
            applier.feed(piece, &mut old_img, &mut flash).unwrap();
        }
        // A state record that lies but carries a valid checksum.
        let mut bytes = applier.state().to_bytes();
        for &(i, v) in &damage {
            bytes[i] = v;
        }
        let sum = ota_delta::crc32(&bytes[..STATE_LEN - 4]).to_le_bytes();
        bytes[STATE_LEN - 4..].copy_from_slice(&sum);
        let state = match State::from_bytes(&bytes) {
            Ok(s) => s,
            Err(e) => {
                prop_assert!(matches!(e, StateError::Version(_) | StateError::Inconsistent));
                return Ok(());
            }
        };
        let Ok(mut applier) = Applier::resume(state, source, capacity as u32) else {
            return Ok(());
        };
        let mut result = Ok(0);
        for piece in &pieces[k..] {
            if let Err(e) = applier.feed(piece, &mut old_img, &mut flash) {
                result = Err(e);
                break;
            }
        }
        if result.is_ok() {
            result = applier.finish();
        }
        // A state that lies about how much was written may make the applier read back slot
        // bytes that were never written (erased flash); it must still never leave OLD or the slot.
        prop_assert!(
            !matches!(result, Err(ApplyError::ReadOld(_) | ApplyError::Write(_))),
            "{:?}", result
        );
        prop_assert!(!flash.written[capacity.min(1 << 16)..].iter().any(|&w| w));
    }
}

#[test]
fn header_errors_are_typed() {
    let old = vec![1u8; 10];
    let mut p = header_for(
        &old,
        0,
        Params {
            k_diag: 0,
            k_len: 0,
            k_count: 0,
            k_gap: 0,
            k_lit: 0,
            k_dist: 0,
            k_match: 0,
            first: Kind::Copy,
        },
    );
    assert_eq!(p.len(), HEADER_LEN);
    let (r, _) = run(&old, &p, 5, 100);
    assert_eq!(r, Ok(0), "an empty NEW is a header alone");
    p[0] = b'X';
    let (r, _) = run(&old, &p, 5, 100);
    assert!(
        matches!(
            r,
            Err(ApplyError::Malformed {
                what: Malformed::Magic,
                at: 1
            })
        ),
        "{r:?}"
    );
    let (r, _) = run(&old, &[], 5, 100);
    assert!(
        matches!(r, Err(ApplyError::Truncated { consumed: 0, .. })),
        "{r:?}"
    );
}
