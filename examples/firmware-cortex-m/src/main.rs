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

#[cfg(not(feature = "mqtt"))]
use core::cell::Cell;

use cortex_m_rt::entry;
use cortex_m_semihosting::{debug, hprintln};
use embedded_storage::nor_flash::ReadNorFlash;
use firmware_cortex_m::ram_flash::RamFlash;
use firmware_cortex_m::stack::{paint_stack, stack_high_water};
#[cfg(not(feature = "mqtt"))]
use firmware_cortex_m::EXCHANGES;
use firmware_cortex_m::{
    config, fail, fixture, verifier, BUDGET, FACTORY, FLASH_BYTES, LAYOUT, WINDOW,
};
use ota_core::device::{Event, SleepReason};
#[cfg(not(feature = "mqtt"))]
use ota_core::runtime::block::BusyClock;
use ota_core::wire::RunningFirmware;
#[cfg(not(feature = "mqtt"))]
use ota_core::Device;
use ota_core::UpdateStorage;
use ota_storage::{BootOutcome, FlashStorage};
#[cfg(not(feature = "mqtt"))]
use ota_transport_coap::link::{coap_config, run_wake_blocking, BlockingSocket};
#[cfg(not(feature = "mqtt"))]
use ota_transport_coap::CoapLink;
use sha2::{Digest as _, Sha256};

#[cfg(not(feature = "mqtt"))]
use peer::{Peer, SimClock};

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
        let mut dev: Device<_, 512, WINDOW> =
            Device::new(coap_config(config(running), seed), verifier());
        let link: CoapLink<_, _, EXCHANGES> =
            CoapLink::with_exchanges(BlockingSocket(&mut *peer), BusyClock(clock), seed);
        #[cfg(feature = "oscore")]
        let link = link.secure(firmware_cortex_m::oscore_context(true));
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
        let mut dev: Device<_, 512, WINDOW> = Device::new(config(running), verifier());
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
    firmware_cortex_m::factory_image(mem);
    let mut storage = match FlashStorage::open(RamFlash::new(mem), LAYOUT) {
        Ok(s) => s,
        Err(_) => fail("storage did not open"),
    };
    let mut running = FACTORY;
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
    if !firmware_cortex_m::is_new_image(&h.finalize()) || storage.confirm().is_err() {
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
