//! A Cortex-M4 firmware that links the device side of the stack as an application would — the
//! `ota-core` state machine, `ota-storage` on a flash driver, the CoAP client over a datagram
//! socket (or, with feature `mqtt`, the MQTT 5 client over a byte stream) — and, run under QEMU (`cargo run --release`), applies an update from an in-memory link
//! across short wakes, installs it, boots it on trial, confirms it and prints the result and the
//! stack it needed over semihosting.
#![no_std]
#![no_main]

#[cfg(feature = "mqtt")]
mod mqtt_peer;
#[cfg(not(feature = "mqtt"))]
mod peer;
mod ram_flash;

#[allow(dead_code)] // the public key is unused without the ed25519 feature
mod fixture {
    include!(concat!(env!("OUT_DIR"), "/fixture.rs"));
}

#[cfg(not(feature = "mqtt"))]
use core::cell::Cell;

use cortex_m_rt::entry;
use cortex_m_semihosting::{debug, hprintln};
use embedded_storage::nor_flash::ReadNorFlash;
use ota_core::device::{Event, SleepReason};
#[cfg(not(feature = "ed25519"))]
use ota_core::manifest::Verifier;
#[cfg(not(feature = "ed25519"))]
use ota_core::wire::Signature;
use ota_core::wire::{DigestPrefix, RunningFirmware, Version, WakeBudget};
use ota_core::{DeviceConfig, UpdateStorage};
use ota_storage::{BootOutcome, FlashStorage, Layout, Partition};
#[cfg(not(feature = "mqtt"))]
#[cfg(not(feature = "mqtt"))]
use ota_core::runtime::block::BusyClock;
#[cfg(not(feature = "mqtt"))]
use ota_transport_coap::link::{coap_config, run_wake_blocking, BlockingSocket};
#[cfg(not(feature = "mqtt"))]
use ota_transport_coap::CoapLink;
#[cfg(not(feature = "mqtt"))]
use ota_core::Device;
use sha2::{Digest as _, Sha256};

#[cfg(not(feature = "mqtt"))]
use peer::{Peer, SimClock};
use ram_flash::RamFlash;

const SECTOR: u32 = 4096;
/// The stand-in flash: ACTIVE 3 sectors, DFU 4, journal 2.
const FLASH_BYTES: usize = 9 * 4096;

#[cfg(feature = "ed25519")]
fn verifier() -> ota_core::manifest::Ed25519Verifier {
    match ota_core::manifest::Ed25519Verifier::from_bytes(&fixture::PUBLIC_KEY) {
        Some(v) => v,
        None => fail("bad public key"),
    }
}

/// Without Ed25519: a stand-in for a hardware verifier, accepting exactly the one signature
/// given at build time, so the size comparison keeps the whole update path.
#[cfg(not(feature = "ed25519"))]
struct StandIn;

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
fn verifier() -> StandIn {
    StandIn
}

fn fail(msg: &str) -> ! {
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

const PAINT: u32 = 0x5A5A_A5A5;

extern "C" {
    static mut __ebss: u32;
    static _stack_start: u32;
}

/// Fills the unused stack (from the end of .bss to just below the current frame) with a pattern.
fn paint_stack() {
    let sp = cortex_m::register::msp::read() as usize - 256;
    // SAFETY: `__ebss` is the end of the statics the linker placed; between it and the current
    // stack pointer (less a margin for this function's frame) lies memory nothing owns: there
    // is no heap, and the stack grows down from `_stack_start` towards it. Writing there cannot
    // alias any Rust object. The addresses are word-aligned (the linker aligns .bss to 4).
    unsafe {
        let mut p = core::ptr::addr_of_mut!(__ebss);
        while (p as usize) < sp {
            core::ptr::write_volatile(p, PAINT);
            p = p.add(1);
        }
    }
}

/// Deepest stack use since [`paint_stack`], in bytes.
fn stack_high_water() -> usize {
    // SAFETY: reads the same unowned region `paint_stack` wrote, word by word, up to the first
    // word the stack has overwritten; the region is below every live frame's data it reaches
    // only through volatile reads of plain words.
    unsafe {
        let top = core::ptr::addr_of!(_stack_start) as usize;
        let mut p = core::ptr::addr_of!(__ebss);
        while (p as usize) < top && core::ptr::read_volatile(p) == PAINT {
            p = p.add(1);
        }
        top - p as usize
    }
}

/// The offer the server in the peer makes: the release, with its signed manifest.
fn offer() -> ota_core::wire::CheckInReply<'static> {
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
fn oscore_context(device: bool) -> ota_oscore::SecurityContext {
    const SECRET: [u8; 16] = *b"m4-demo-secret!!";
    const SALT: [u8; 8] = *b"m4-salt!";
    let (me, peer): (&[u8], &[u8]) = if device { (&[0x2a], &[]) } else { (&[], &[0x2a]) };
    match ota_oscore::SecurityContext::derive(&SECRET, &SALT, me, peer) {
        Ok(c) => c,
        Err(_) => fail("OSCORE context"),
    }
}

/// The device's configuration for one wake.
fn config(running: RunningFirmware) -> DeviceConfig {
    let mut config = DeviceConfig::new(b"m4-demo", 1, 0xC0FFEE, running)
    .expect("a valid device id");
    config.window = 4;
    config
}

/// A budget of about three chunks per wake: the download spans several wakes.
const BUDGET: WakeBudget = WakeBudget {
    bytes: Some(2000),
    millis: None,
};

/// Wakes over CoAP until the update is staged.
#[cfg(not(feature = "mqtt"))]
fn download<S>(storage: &mut S, running: RunningFirmware)
where
    S: UpdateStorage + ota_core::storage::CounterStore<Error = <S as UpdateStorage>::Error>,
{
    // The peer lives in a static, so the stack measured is the device's alone.
    let Some(clock) = cortex_m::singleton!(: SimClock = SimClock(Cell::new(0))) else {
        fail("peer taken twice")
    };
    let clock: &'static SimClock = clock;
    let Some(peer) = cortex_m::singleton!(: Peer<'static> = Peer::new(clock)) else {
        fail("peer taken twice")
    };
    let mut retransmissions = 0u32;
    for wakes in 1..=50u32 {
        let seed = 0x1234_5678 ^ wakes;
        let mut dev: Device<_, 512> = Device::new(coap_config(config(running), seed), verifier());
        let link = CoapLink::new(BlockingSocket(&mut *peer), BusyClock(clock), seed);
        #[cfg(feature = "oscore")]
        let link = link.secure(oscore_context(true));
        let mut link = link;
        let mut staged = false;
        let end = match run_wake_blocking(&mut dev, &mut link, clock, storage, BUDGET, |e| {
            if let Event::Staged { .. } = e {
                staged = true;
            }
        }) {
            Ok(end) => end,
            Err(_) => fail("wake failed"),
        };
        retransmissions += dev.stats().retransmissions;
        if staged {
            hprintln!(
                "downloaded over CoAP: {} bytes in {} wakes ({} datagrams, {} bytes on the link, {} responses lost, {} retransmissions)",
                fixture::IMAGE.len(),
                wakes,
                peer.stats.requests,
                peer.stats.bytes,
                peer.stats.dropped,
                retransmissions
            );
            return;
        }
        if !matches!(
            end.reason,
            SleepReason::BudgetExhausted | SleepReason::LinkLost
        ) {
            fail("unexpected end of wake");
        }
    }
    fail("the update did not complete in 50 wakes")
}

/// Wakes over MQTT until the update is staged. The session (and its buffers) outlives the
/// wakes, as in RAM kept through sleep.
#[cfg(feature = "mqtt")]
fn download<S>(storage: &mut S, running: RunningFirmware)
where
    S: UpdateStorage + ota_core::storage::CounterStore<Error = <S as UpdateStorage>::Error>,
{
    use core::cell::RefCell;

    use minimq::{Buffers, Session};
    use mqtt_peer::{block_on, Broker, Dialer};
    use ota_core::Device;
    use ota_transport_mqtt::device::{run_wake, session_config, WakeOptions};

    // The broker lives in a static, so the stack measured is the device's alone.
    let Some(broker) = cortex_m::singleton!(: RefCell<Broker> = RefCell::new(Broker::new(5)))
    else {
        fail("broker taken twice")
    };
    let broker: &'static RefCell<Broker> = broker;
    let mut dialer = Dialer(broker);
    let (mut rx, mut tx) = ([0u8; 512 + 96], [0u8; 768]);
    let session = session_config(Buffers::new(&mut rx, &mut tx), "m4-demo", None, 600);
    let Ok(session) = session else {
        fail("session config")
    };
    let mut session = Session::new(session);
    let options = WakeOptions::default();
    let mut retransmissions = 0u32;
    for wakes in 1..=50u32 {
        let mut dev: Device<_, 512> = Device::new(config(running), verifier());
        let mut staged = false;
        let mut blocking = ota_core::runtime::Blocking(&mut *storage);
        let wake = run_wake(
            &mut session,
            &mut dialer,
            &mut dev,
            &mut blocking,
            "ota",
            "m4-demo",
            BUDGET,
            &options,
            |e| {
                if let Event::Staged { .. } = e {
                    staged = true;
                }
            },
        );
        let end = match block_on(wake) {
            Ok(end) => end,
            Err(_) => fail("wake failed"),
        };
        retransmissions += dev.stats().retransmissions;
        if staged {
            let s = broker.borrow().stats;
            hprintln!(
                "downloaded over MQTT: {} bytes in {} wakes ({} connections, one broken mid-download; {} packets up, {} down, {} bytes on the link, {} retransmissions)",
                fixture::IMAGE.len(),
                wakes,
                s.connects,
                s.packets_up,
                s.packets_down,
                s.bytes,
                retransmissions
            );
            return;
        }
        if !matches!(
            end.reason,
            SleepReason::BudgetExhausted | SleepReason::LinkLost
        ) {
            fail("unexpected end of wake");
        }
    }
    fail("the update did not complete in 50 wakes")
}

#[entry]
fn main() -> ! {
    paint_stack();
    let Some(mem) = cortex_m::singleton!(: [u8; FLASH_BYTES] = [0xFF; FLASH_BYTES]) else {
        fail("flash buffer taken twice")
    };
    // The running 1.0.0 image, as the factory left it.
    for (i, b) in mem.iter_mut().take(6000).enumerate() {
        *b = (i % 251) as u8;
    }
    let layout = Layout {
        active: Partition::new(0, 3 * SECTOR),
        dfu: Partition::new(3 * SECTOR, 4 * SECTOR),
        journal: Partition::new(7 * SECTOR, 2 * SECTOR),
    };
    let mut storage = match FlashStorage::open(RamFlash::new(mem), layout) {
        Ok(s) => s,
        Err(_) => fail("storage did not open"),
    };
    let mut running = RunningFirmware {
        version: Version::new(1, 0, 0),
        digest: DigestPrefix([0; 8]),
        sequence: 1,
    };
    download(&mut storage, running);

    // Reboot into the bootloader part: swap, trial boot, health check, confirm.
    if storage.request_install().is_err() {
        fail("install request");
    }
    match storage.boot() {
        Ok(BootOutcome::Trial { sequence }) => running.sequence = sequence,
        _ => fail("no trial boot"),
    }
    let mut h = Sha256::new();
    let mut buf = [0u8; 256];
    let mut off = 0u32;
    while (off as usize) < fixture::IMAGE.len() {
        let n = (fixture::IMAGE.len() - off as usize).min(buf.len());
        if storage.flash_mut().read(off, &mut buf[..n]).is_err() {
            fail("read ACTIVE");
        }
        h.update(&buf[..n]);
        off += n as u32;
    }
    let active_ok = h.finalize()[..] == Sha256::digest(&fixture::IMAGE[..])[..];
    if !active_ok || storage.confirm().is_err() {
        fail("the new image is not what was signed");
    }

    hprintln!(
        "update applied on Cortex-M4: trial boot verified, confirmed at sequence {}",
        running.sequence
    );
    hprintln!("stack high-water: {} bytes", stack_high_water());
    debug::exit(debug::EXIT_SUCCESS);
    loop {
        cortex_m::asm::wfi();
    }
}
