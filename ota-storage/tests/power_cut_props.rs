//! Property test: random images, chunk sizes, sector sizes, write granularities and cut points.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use common::*;
use ota_core::wire::ResultCode;
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct Case {
    old_len: usize,
    new_len: usize,
    chunk: u16,
    healthy: bool,
    wake_chunks: u32,
    seed: u64,
    cuts: Vec<prop::sample::Index>,
}

fn case(max_image: usize) -> impl Strategy<Value = Case> {
    (
        1..max_image,
        1..max_image,
        16u16..=1024,
        any::<bool>(),
        1u32..6,
        any::<u64>(),
        prop::collection::vec(any::<prop::sample::Index>(), 1..4),
    )
        .prop_map(
            |(old_len, new_len, chunk, healthy, wake_chunks, seed, cuts)| Case {
                old_len,
                new_len,
                chunk,
                healthy,
                wake_chunks,
                seed,
                cuts,
            },
        )
}

fn check<const W: usize, const E: usize>(c: &Case) {
    let s = Scenario {
        old: bytes(c.old_len, c.seed),
        new: bytes(c.new_len, c.seed ^ 0xABCD),
        chunk: c.chunk,
        healthy: c.healthy,
        wake_bytes: 400 + c.wake_chunks * (u32::from(c.chunk) + 40),
    };
    let expect = if c.healthy {
        End::Updated
    } else {
        End::RolledBack(ResultCode::HEALTH_CHECK_FAILED)
    };
    let (end, _, flash) = live::<W, E>(&s, fresh_flash::<W, E>(&s), None);
    assert_eq!(end, expect);
    let total = flash.ops();
    for ix in &c.cuts {
        let k = ix.index(total as usize) as u64;
        let mut flash = fresh_flash::<W, E>(&s);
        flash.set_cut_seed(c.seed ^ k);
        let (end, stats, _) = live::<W, E>(&s, flash, Some(k));
        assert!(
            stats.accepted_payload <= s.new.len() as u64 + u64::from(s.chunk),
            "cut {k}: {stats:?}"
        );
        assert!(
            end == expect || end == End::RolledBack(ResultCode::TRIAL_RESET),
            "cut {k}: {end:?}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn byte_writes_512_sectors(c in case(3 * 512)) { check::<1, 512>(&c); }

    #[test]
    fn word_writes_1k_sectors(c in case(4 * 1024)) { check::<4, 1024>(&c); }

    #[test]
    fn double_word_writes_2k_sectors(c in case(5 * 2048)) { check::<8, 2048>(&c); }

    #[test]
    fn wide_writes_4k_sectors(c in case(3 * 4096)) { check::<32, 4096>(&c); }
}
