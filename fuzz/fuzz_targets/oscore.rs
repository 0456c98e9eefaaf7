//! OSCORE as received: arbitrary option values, and arbitrary ciphertexts opened as requests
//! and as responses. Nothing may panic; nothing opens without the keys.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ota_oscore::option::OscoreOption;
use ota_oscore::{RequestId, SecurityContext};

fuzz_target!(|data: &[u8]| {
    let (head, body) = data.split_at(data.len().min(12));
    let opt = OscoreOption::decode(head);
    let server = SecurityContext::derive(&[1; 16], &[2; 8], b"", b"\x01").expect("context");
    let client = SecurityContext::derive(&[1; 16], &[2; 8], b"\x01", b"").expect("context");
    let mut buf = body.to_vec();
    if let Ok(opt) = &opt {
        let mut out = [0u8; ota_oscore::option::MAX_OPTION];
        let n = opt.encode(&mut out);
        assert_eq!(OscoreOption::decode(&out[..n]).as_ref(), Ok(opt), "re-encodes");
        let len = buf.len();
        let _ = server.open_request(opt, &mut buf, len);
        let req = RequestId {
            kid: heapless::Vec::from_slice(b"\x01").expect("kid"),
            piv: opt.piv.clone(),
        };
        let mut buf = body.to_vec();
        let _ = client.open_response(&req, opt, &mut buf, len);
    }
});
