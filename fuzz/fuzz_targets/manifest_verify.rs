//! The signed manifest: arbitrary body and signature through every check, and the stored form.
//! Nothing the fuzzer writes can carry a valid signature, so every input must be refused.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ota_core::manifest::{DeviceProfile, ManifestError, SignedManifest, StoredManifest};
use ota_core::wire::{Signature, Version};

fuzz_target!(|data: &[u8]| {
    let verifier = ota_test_support::fixture::verifier();
    let profile = DeviceProfile {
        vendor: 1,
        class: 2,
        running_sequence: 3,
        running_version: Version::new(1, 0, 0),
        staging_capacity: 1 << 20,
        max_chunk: 1024,
        pow2_chunks: data.first().is_some_and(|b| b & 1 == 1),
    };
    let (sig, body) = data.split_at(data.len().min(64));
    let mut s = [0u8; 64];
    s[..sig.len()].copy_from_slice(sig);
    let m = SignedManifest {
        body,
        signature: Signature(s),
    };
    match m.verify(&verifier, &profile) {
        Err(ManifestError::BadSignature) | Err(ManifestError::TooLong(_)) => {}
        other => panic!("an unsigned manifest got past the signature check: {other:?}"),
    }
    let _ = m.decode_verified();
    if let Some(stored) = StoredManifest::from_bytes(data) {
        let mut out = [0u8; StoredManifest::MAX_BYTES];
        let n = stored.to_bytes(&mut out).expect("fits");
        assert_eq!(StoredManifest::from_bytes(&out[..n]), Some(stored));
    }
});
