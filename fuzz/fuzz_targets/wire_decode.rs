//! Every wire message decoder: decode arbitrary bytes; whatever decodes re-encodes to bytes that
//! decode to the same message, and the device's decoder agrees with the full one.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ota_core::resume::ResumeState;
use ota_core::wire::{decode, decode_inbound, encode_vec, Inbound, Message};

fuzz_target!(|data: &[u8]| {
    let full = decode(data);
    match (&full, decode_inbound(data)) {
        (Ok(Message::CheckInReply(a)), Ok(Inbound::CheckInReply(b))) => assert_eq!(a, &b),
        (Ok(Message::Chunk(a)), Ok(Inbound::Chunk(b))) => assert_eq!(a, &b),
        (Ok(Message::CheckInReply(_) | Message::Chunk(_)), device) => {
            panic!("decode {full:?} but decode_inbound {device:?}")
        }
        (Ok(_) | Err(_), Ok(device)) => panic!("decode {full:?} but decode_inbound {device:?}"),
        (_, Err(_)) => {}
    }
    if let Ok(msg) = full {
        let again = encode_vec(&msg);
        assert_eq!(decode(&again).expect("re-encoded message decodes"), msg);
    }
    if let Ok(state) = ResumeState::from_bytes(data) {
        assert_eq!(ResumeState::from_bytes(&state.to_bytes()), Ok(state));
    }
});
