//! The same update as the blocking firmware, the way an embassy application runs it: an
//! `embassy-executor` with a SysTick time driver of its own, the device as one task running
//! `ota_core::runtime::run_wake_in` over the CoAP link (real embassy-time timers for its
//! retransmissions), the server and the radio as other tasks, and the storage in write-once mode
//! on an async flash that refuses a second program of an 8-byte unit, as ECC flash does. Run it
//! under QEMU with `cargo run --release --bin firmware-embassy`.
#![no_std]
#![no_main]

mod ecc_flash;
mod radio;
mod systick;

use embassy_executor::Spawner;
use embassy_time::{Instant, Timer};
use embedded_storage_async::nor_flash::ReadNorFlash as _;
use firmware_cortex_m::stack::{paint_stack, stack_high_water};
use firmware_cortex_m::{
    config, fail, fixture, verifier, BUDGET, EXCHANGES, FACTORY, FLASH_BYTES, LAYOUT, WINDOW,
};
use ota_core::device::{Event, SleepReason};
use ota_core::runtime::{run_wake_in, EmbassyClock, WakeOptions};
use ota_core::Device;
use ota_storage::{AsyncFlashStorage, BootOutcome};
use ota_transport_coap::link::coap_config;
use ota_transport_coap::CoapLink;
use sha2::{Digest as _, Sha256};

use ecc_flash::EccFlash;

/// The chunk buffer the device keeps (the manifest's chunk size).
const CHUNK: usize = 512;

/// The receive buffer: one chunk and what CoAP and OSCORE wrap around it. The wake narrows the
/// chunks the device asks for to what fits.
const RX: usize = CHUNK + ota_transport_coap::link::OVERHEAD as usize;

/// The OTA state's RAM beyond the chunk buffer may not exceed this (issue #13's target); the
/// run fails if it does.
const RAM_TARGET: usize = 4096;

/// What the OTA code keeps in RAM during a wake, measured with `size_of_val`.
#[derive(Default)]
struct Ram {
    device: usize,
    link: usize,
    storage: usize,
    rx: usize,
    wake: usize,
}

#[embassy_executor::main]
async fn main(spawner: Spawner) {
    paint_stack();
    let Some(core) = cortex_m::Peripherals::take() else {
        fail("core peripherals taken twice")
    };
    systick::start(core.SYST);
    spawner.spawn(radio::server().unwrap_or_else(|_| fail("server task")));
    spawner.spawn(radio::downlink().unwrap_or_else(|_| fail("downlink task")));

    // The stand-in flash, and a bit per 8-byte unit saying it is programmed.
    let Some(mem) = cortex_m::singleton!(: [u8; FLASH_BYTES] = [0xFF; FLASH_BYTES]) else {
        fail("flash taken twice")
    };
    let Some(programmed) = cortex_m::singleton!(: [u8; FLASH_BYTES / 64] = [0; FLASH_BYTES / 64])
    else {
        fail("flash taken twice")
    };
    let mut flash = EccFlash::new(mem, programmed);
    firmware_cortex_m::factory_image(flash.contents_mut());
    let Ok(mut storage) = AsyncFlashStorage::open_write_once(flash, LAYOUT).await else {
        fail("storage did not open")
    };
    let mut running = FACTORY;

    let started = Instant::now();
    let mut wakes = 0u32;
    let mut retransmissions = 0u32;
    let mut ram = Ram::default();
    loop {
        wakes += 1;
        if wakes > 50 {
            fail("the update did not complete in 50 wakes");
        }
        let seed = 0x1234_5678 ^ wakes;
        let mut dev: Device<_, CHUNK, WINDOW> =
            Device::new(coap_config(config(running), seed), verifier());
        let link: CoapLink<_, _, EXCHANGES> =
            CoapLink::with_exchanges(radio::Radio, EmbassyClock, seed);
        #[cfg(feature = "oscore")]
        let link = link.secure(firmware_cortex_m::oscore_context(true));
        let mut link = link;
        let mut staged = false;
        let options = WakeOptions::default();
        ram.device = core::mem::size_of_val(&dev);
        ram.link = core::mem::size_of_val(&link);
        ram.storage = core::mem::size_of_val(&storage);
        let mut rx = [0u8; RX];
        ram.rx = core::mem::size_of_val(&rx);
        let wake = run_wake_in(
            &mut dev,
            &mut link,
            &mut storage,
            &EmbassyClock,
            BUDGET,
            &options,
            &mut rx,
            |e| {
                if let Event::Staged { .. } = e {
                    staged = true;
                }
            },
        );
        ram.wake = ram.wake.max(core::mem::size_of_val(&wake));

        let end = match wake.await {
            Ok(end) => end,
            Err(_) => fail("wake failed"),
        };
        radio::off();
        retransmissions += dev.stats().retransmissions;
        if staged {
            break;
        }
        if !matches!(
            end.reason,
            SleepReason::BudgetExhausted | SleepReason::LinkLost
        ) {
            fail("unexpected end of wake");
        }
        // Sleep (shortened: the server asked for a minute).
        Timer::after_millis(20).await;
    }
    let link = critical_section::with(|cs| radio::STATS.borrow(cs).get());
    cortex_m_semihosting::hprintln!(
        "embassy: downloaded {} bytes in {} wakes, {} ms on the executor's clock ({} datagrams up, {} down of which {} lost, {} bytes on the link, {} retransmissions)",
        fixture::IMAGE.len(),
        wakes,
        Instant::now().duration_since(started).as_millis(),
        link.up,
        link.down,
        link.lost,
        link.bytes,
        retransmissions
    );

    // Reboot into the bootloader part: swap, trial boot, health check, confirm.
    if storage.request_install().await.is_err() {
        fail("install request");
    }
    match storage.boot().await {
        Ok(BootOutcome::Trial { sequence }) => running.sequence = sequence,
        _ => fail("no trial boot"),
    }
    let mut h = Sha256::new();
    let mut buf = [0u8; 256];
    let mut off = 0usize;
    while off < fixture::IMAGE.len() {
        let n = (fixture::IMAGE.len() - off).min(buf.len());
        let part = &mut buf[..n];
        if storage.flash_mut().read(off as u32, part).await.is_err() {
            fail("read ACTIVE");
        }
        h.update(&*part);
        off += n;
    }
    if !firmware_cortex_m::is_new_image(&h.finalize()) || storage.confirm().await.is_err() {
        fail("the new image is not what was signed");
    }
    cortex_m_semihosting::hprintln!(
        "update applied on Cortex-M4 under embassy: write-once flash, trial boot verified, confirmed at sequence {}",
        running.sequence
    );
    let beyond = ram.device + ram.link + ram.storage + ram.rx + ram.wake - CHUNK;
    cortex_m_semihosting::hprintln!(
        "OTA RAM: device {} B (of which the {} B chunk buffer), CoAP link {} B, storage {} B, receive buffer {} B, wake future {} B; {} B beyond the chunk buffer (target {})",
        ram.device,
        CHUNK,
        ram.link,
        ram.storage,
        ram.rx,
        ram.wake,
        beyond,
        RAM_TARGET
    );
    if beyond > RAM_TARGET {
        fail("the OTA state outgrew its RAM target");
    }
    cortex_m_semihosting::hprintln!("stack high-water: {} bytes", stack_high_water());
    cortex_m_semihosting::debug::exit(cortex_m_semihosting::debug::EXIT_SUCCESS);
}
