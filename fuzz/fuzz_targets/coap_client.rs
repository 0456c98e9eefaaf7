//! The CoAP device client's response handling: arbitrary datagrams while it waits for a
//! check-in reply and while it downloads.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ota_core::wire::{DigestPrefix, RunningFirmware, Version, WakeBudget};
use ota_core::{DeviceConfig, Instant};
use ota_transport_coap::CoapClient;

fuzz_target!(|data: &[u8]| {
    let verifier = ota_test_support::fixture::verifier();
    let mut config = DeviceConfig::new(
        b"fuzz",
        1,
        2,
        RunningFirmware {
            version: Version::new(1, 0, 0),
            digest: DigestPrefix([0; 8]),
            sequence: 1,
        },
    )
    .expect("a valid device id");
    config.staging_capacity = 1 << 16;
    let mut client: CoapClient<_, 256> = CoapClient::new(config, verifier, 1);
    client.device_mut().wake(Instant(0), WakeBudget::default());
    let mut buf = [0u8; 512];
    let _ = client.poll_transmit(Instant(0), &mut buf);
    // The token of the check-in is predictable from the seed; feed the input raw and split.
    for part in data.split(|&b| b == 0xFE) {
        let _ = client.handle_datagram(Instant(1), &mut part.to_vec());
        while client.poll_transmit(Instant(2), &mut buf).is_some() {}
        while client.device_mut().poll_storage().is_some() {
            client.device_mut().storage_done(Ok(()));
        }
    }
});
