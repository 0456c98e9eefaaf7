//! A flash write that fails without a reset (a brown-out the chip survives, a driver timeout):
//! the storage goes on in the same boot. The failed commit changes nothing the device sees,
//! the next commit never programs over the torn record (write-once flash refuses that, and on
//! multiwrite flash it would spoil the record), and what the flash holds afterwards reopens to
//! exactly what the storage reported. Tried at every write and erase of a run that rotates the
//! journal several times, on both kinds of flash.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use ota_core::runtime::block::block_on;
use ota_storage::{AsyncFlashStorage, EitherMode, Layout, Partition};
use ota_test_support::SimFlash;

type Flash = SimFlash<8, 1024>;

const COMMITS: u64 = 150;

fn layout() -> Layout {
    Layout {
        active: Partition::new(0, 2 * 1024),
        dfu: Partition::new(2 * 1024, 2 * 1024),
        journal: Partition::new(4 * 1024, 2 * 1024),
    }
}

fn open(flash: Flash, write_once: bool) -> AsyncFlashStorage<Flash, EitherMode> {
    block_on(AsyncFlashStorage::open_either(flash, layout(), write_once)).unwrap()
}

/// Commits counters 1..=COMMITS with the flash failing once, at its `cut`-th operation. The
/// commit it fails is not tried again: the next one writes another record, as a device does
/// after a failed wake. The flash operations of the run.
fn run(write_once: bool, cut: u64) -> u64 {
    let flash = if write_once {
        Flash::write_once(6)
    } else {
        Flash::new(6)
    };
    let mut storage = open(flash, write_once);
    let start = storage.flash().ops();
    storage.flash_mut().cut_at(cut);
    let mut failures = 0;
    let mut last = 0;
    for v in 1..=COMMITS {
        match block_on(storage.store_counter(v)) {
            Ok(()) => last = v,
            Err(e) => {
                failures += 1;
                assert!(
                    failures <= 1,
                    "cut {cut}: the commit of {v} failed again: {e:?}"
                );
                storage.flash_mut().power_on();
            }
        }
        assert_eq!(
            storage.load_counter(),
            last,
            "cut {cut}: a failed commit changed the state"
        );
    }
    if last != COMMITS {
        block_on(storage.store_counter(COMMITS)).unwrap();
    }
    let ops = storage.flash().ops() - start;
    let flash = storage.into_flash();
    let rotations: u32 = flash.erase_counts()[4..6].iter().sum();
    assert!(
        rotations >= 3,
        "the run rotates the journal ({rotations} erases)"
    );
    assert_eq!(
        flash.reprogram_attempts(),
        0,
        "cut {cut}: a write unit was programmed twice without an erase"
    );
    let reopened = open(flash, write_once);
    assert_eq!(
        reopened.load_counter(),
        COMMITS,
        "cut {cut} (write_once={write_once}): the flash does not hold what was committed"
    );
    ops
}

#[test]
fn a_failed_write_without_a_reset_loses_nothing_and_is_never_written_over() {
    for write_once in [false, true] {
        let total = run(write_once, u64::MAX);
        for cut in 0..total {
            run(write_once, cut);
        }
        println!("write_once={write_once}: a failure at each of {total} flash operations");
    }
}
