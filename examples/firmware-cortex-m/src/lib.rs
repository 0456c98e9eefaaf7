//! What both Cortex-M4 firmwares share: the update fixture built by `build.rs`, the server they
//! talk to, the stand-in flash, the device's configuration, and stack measurement.
#![no_std]

pub mod ram_flash;
pub mod server;
pub mod stack;

/// The update the firmware applies, generated and signed at build time.
#[allow(dead_code)] // the public key is unused without the ed25519 feature
pub mod fixture {
    include!(concat!(env!("OUT_DIR"), "/fixture.rs"));
}

use cortex_m_semihosting::{debug, hprintln};
#[cfg(not(feature = "ed25519"))]
use ota_core::manifest::Verifier;
#[cfg(not(feature = "ed25519"))]
use ota_core::wire::Signature;
use ota_core::wire::{DigestPrefix, RunningFirmware, Version, WakeBudget};
use ota_core::DeviceConfig;
use ota_storage::{Layout, Partition};
use sha2::{Digest as _, Sha256};

/// The flash sector.
pub const SECTOR: u32 = 4096;
/// The stand-in flash: ACTIVE 3 sectors, DFU 4, journal 2.
pub const FLASH_BYTES: usize = 9 * 4096;

#[cfg(feature = "ed25519")]
/// The vendor's key, as the firmware carries it.
pub fn verifier() -> ota_core::manifest::Ed25519Verifier {
    match ota_core::manifest::Ed25519Verifier::from_bytes(&fixture::PUBLIC_KEY) {
        Some(v) => v,
        None => fail("bad public key"),
    }
}

/// Without Ed25519: a stand-in for a hardware verifier, accepting exactly the one signature
/// given at build time, so the size comparison keeps the whole update path.
#[cfg(not(feature = "ed25519"))]
pub struct StandIn;

#[cfg(not(feature = "ed25519"))]
impl Verifier for StandIn {
    fn verify(
        &self,
        _: &[u8],
        signature: &Signature,
    ) -> Result<(), ota_core::manifest::SignatureError> {
        if core::hint::black_box(&fixture::SIGNATURE) == &signature.0 {
            Ok(())
        } else {
            Err(ota_core::manifest::SignatureError)
        }
    }
}

#[cfg(not(feature = "ed25519"))]
/// The stand-in verifier.
pub fn verifier() -> StandIn {
    StandIn
}

/// Prints `msg` and ends the QEMU run with a failure.
pub fn fail(msg: &str) -> ! {
    hprintln!("FAIL: {}", msg);
    debug::exit(debug::EXIT_FAILURE);
    loop {
        cortex_m::asm::wfi();
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    hprintln!("panic: {}", info);
    debug::exit(debug::EXIT_FAILURE);
    loop {
        cortex_m::asm::wfi();
    }
}

/// The offer the server in the peer makes: the release, with its signed manifest.
pub fn offer() -> ota_core::wire::CheckInReply<'static> {
    ota_core::wire::CheckInReply::Update {
        image: ota_core::wire::ImageId(1),
        manifest: Some(ota_core::manifest::SignedManifest {
            body: &fixture::MANIFEST_BODY,
            signature: ota_core::wire::Signature(fixture::SIGNATURE),
        }),
        resume_from: 0,
        urgency: ota_core::wire::Urgency::Attempt,
        next_check_in: 60,
    }
}

/// The OSCORE context provisioned into the device (`device`), or the server's side of it.
#[cfg(feature = "oscore")]
pub fn oscore_context(device: bool) -> ota_oscore::SecurityContext {
    const SECRET: [u8; 16] = *b"m4-demo-secret!!";
    const SALT: [u8; 8] = *b"m4-salt!";
    let (me, peer): (&[u8], &[u8]) = if device {
        (&[0x2a], &[])
    } else {
        (&[], &[0x2a])
    };
    match ota_oscore::SecurityContext::derive(&SECRET, &SALT, me, peer) {
        Ok(c) => c,
        Err(_) => fail("OSCORE context"),
    }
}

/// Chunk requests the device keeps outstanding: its `Device`'s `WINDOW` (the window's RAM)
/// and its configured window.
pub const WINDOW: usize = 4;

/// CoAP exchanges the link remembers (`CoapLink`'s `X`): twice the window, so a late response
/// still finds its request (24 bytes each; the default, 40, serves the largest window).
pub const EXCHANGES: usize = 2 * WINDOW;

/// The device's configuration for one wake.
pub fn config(running: RunningFirmware) -> DeviceConfig {
    // A firmware has no use for formatting the error (its `Debug` would cost 312 B of flash).
    let Ok(mut config) = DeviceConfig::new(b"m4-demo", 1, 0xC0FFEE, running) else {
        panic!("the device id breaks the rule of ota_core::wire::check_device_id");
    };
    config.window = WINDOW as u8;
    config
}

/// A budget of about three chunks per wake: the download spans several wakes.
pub const BUDGET: WakeBudget = WakeBudget {
    bytes: Some(2000),
    millis: None,
};

/// ACTIVE 3 sectors, DFU 4, journal 2.
pub const LAYOUT: Layout = Layout {
    active: Partition::new(0, 3 * SECTOR),
    dfu: Partition::new(3 * SECTOR, 4 * SECTOR),
    journal: Partition::new(7 * SECTOR, 2 * SECTOR),
};

/// What the device runs before the update.
pub const FACTORY: RunningFirmware = RunningFirmware {
    version: Version::new(1, 0, 0),
    digest: DigestPrefix([0; 8]),
    sequence: 1,
};

/// Writes the factory image (1.0.0) into ACTIVE of a blank flash.
pub fn factory_image(mem: &mut [u8]) {
    for (i, b) in mem.iter_mut().take(6000).enumerate() {
        *b = (i % 251) as u8;
    }
}

/// Whether `digest` is the new image's (the health check's look at ACTIVE).
pub fn is_new_image(digest: &[u8]) -> bool {
    Sha256::digest(&fixture::IMAGE[..])[..] == *digest
}
