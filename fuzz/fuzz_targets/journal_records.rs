//! Journal records read from flash: arbitrary bytes as records and as a whole journal region.
//! Opening never panics, and the journal stays writable afterwards.
#![no_main]

use embedded_storage::nor_flash::ReadNorFlash;
use libfuzzer_sys::fuzz_target;
use ota_core::runtime::block::block_on;
use ota_storage::journal::Journal;
use ota_storage::record::Record;
use ota_test_support::SimFlash;
use ota_storage::UpdateState;

fuzz_target!(|data: &[u8]| {
    let _ = Record::decode(data);
    let mut flash = SimFlash::<4, 512>::new(2);
    let n = data.len().min(flash.capacity());
    flash.contents_mut()[..n].copy_from_slice(&data[..n]);
    let (mut journal, mut snap) =
        block_on(Journal::open(&mut flash, 0, 2)).expect("simulated flash does not fail");
    let _ = snap.resume();
    let r = Record::State(UpdateState::Staged);
    snap.apply(&r);
    block_on(journal.commit(&mut flash, &r, &snap)).expect("commit after any contents");
    let (_, again) = block_on(Journal::open(&mut flash, 0, 2)).expect("reopen");
    assert_eq!(again.state, UpdateState::Staged);
});
