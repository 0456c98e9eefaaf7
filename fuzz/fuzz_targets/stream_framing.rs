//! COBS + CRC stream framing: arbitrary bytes into the decoder never panic; whatever decodes
//! re-frames and decodes to the same payload.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ota_core::framing::{encode_frame_vec, FrameDecoder};

fuzz_target!(|data: &[u8]| {
    let mut dec = FrameDecoder::<256>::new();
    for &b in data {
        if let Some(Ok(payload)) = dec.push(b) {
            let payload = payload.to_vec();
            let mut again = FrameDecoder::<256>::new();
            let frame = encode_frame_vec(&payload);
            let mut got = Vec::new();
            for &b in &frame {
                if let Some(r) = again.push(b) {
                    got.push(r.expect("a frame we encoded decodes").to_vec());
                }
            }
            assert_eq!(got, vec![payload]);
        }
    }
});
