//! Every wire message decoder: decode arbitrary bytes; whatever decodes re-encodes to bytes that
//! decode to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ota_core::resume::ResumeState;
use ota_core::wire::{decode, encode_vec};

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = decode(data) {
        let again = encode_vec(&msg);
        assert_eq!(decode(&again).expect("re-encoded message decodes"), msg);
    }
    if let Ok(state) = ResumeState::from_bytes(data) {
        assert_eq!(ResumeState::from_bytes(&state.to_bytes()), Ok(state));
    }
});
