//! Fleet simulation: sleepy devices fetch an update over an NB-IoT-like link across short wakes,
//! compared with the blind-wait-and-restart scheme, in simulated time.
//!
//! `cargo run --release -p ota-core --example fleet -- [--devices N] [--image-kib K]
//! [--chunk B] [--window W] [--budget-ms MS] [--seed S]`
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use std::time::Instant as WallClock;

use ota_core::device::SleepReason;
use ota_core::host::{Handler, MemImages, SingleRelease};
use ota_core::manifest::{Ed25519Verifier, Manifest};
use ota_core::wire::{DigestPrefix, ImageId, RunningFirmware, Version, WakeBudget};
use ota_core::{Device, DeviceConfig};
use ota_test_support::fixture::{self, Release};
use ota_test_support::sim::{run_wake, LinkProfile, Pipe, SimRng};
use ota_test_support::MemStorage;

const BLIND_WAIT_MS: u64 = 30_000;
const MAX_WAKES: u32 = 400;

struct Args {
    devices: u32,
    image_kib: usize,
    chunk: u16,
    window: u8,
    budget_ms: u32,
    seed: u64,
}

fn args() -> Args {
    let mut a = Args {
        devices: 20,
        image_kib: 64,
        chunk: 1024,
        window: 4,
        budget_ms: 10_000,
        seed: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || {
            it.next()
                .unwrap_or_else(|| fail(&format!("{flag} needs a value")))
        };
        match flag.as_str() {
            "--devices" => {
                a.devices = val()
                    .parse()
                    .unwrap_or_else(|_| fail("--devices: a number"))
            }
            "--image-kib" => {
                a.image_kib = val()
                    .parse()
                    .unwrap_or_else(|_| fail("--image-kib: a number"))
            }
            "--chunk" => a.chunk = val().parse().unwrap_or_else(|_| fail("--chunk: 16..=1024")),
            "--window" => a.window = val().parse().unwrap_or_else(|_| fail("--window: 1..=32")),
            "--budget-ms" => {
                a.budget_ms = val()
                    .parse()
                    .unwrap_or_else(|_| fail("--budget-ms: a number"))
            }
            "--seed" => a.seed = val().parse().unwrap_or_else(|_| fail("--seed: a number")),
            other => fail(&format!("unknown flag {other}")),
        }
    }
    if !(16..=1024).contains(&a.chunk) || !(1..=32).contains(&a.window) || a.devices == 0 {
        fail("--chunk must be 16..=1024, --window 1..=32, --devices at least 1");
    }
    a
}

fn fail(msg: &str) -> ! {
    eprintln!("fleet: {msg}");
    std::process::exit(2)
}

#[derive(Default, Clone, Copy)]
struct DeviceResult {
    updated: bool,
    wakes: u32,
    radio_bytes: u64,
    refetched: u64,
    awake_ms: u64,
}

#[derive(Clone, Copy, PartialEq)]
enum Scheme {
    /// One question per wake, resume from the last chunk.
    Ota,
    /// Wait blindly after every connect; a download cut by sleep restarts from zero.
    BlindRestart,
}

fn config(id: u32, capacity: u32, a: &Args) -> DeviceConfig {
    let mut c = DeviceConfig::new(
        format!("dev-{id:04}").as_bytes(),
        0x5e,
        7,
        RunningFirmware {
            version: Version::new(1, 3, 2),
            digest: DigestPrefix([0xab; 8]),
            sequence: 41,
        },
    )
    .expect("a valid device id");
    c.staging_capacity = capacity;
    c.window = a.window;
    c.max_chunk = a.chunk;
    c
}

fn simulate(
    scheme: Scheme,
    id: u32,
    a: &Args,
    handler: &Handler<SingleRelease, MemImages>,
    key: &[u8; 32],
    image_len: u64,
    link: &LinkProfile,
) -> DeviceResult {
    let capacity = (image_len + 4096) as u32;
    let mut storage = MemStorage::new(capacity);
    let mut rng = SimRng::new(a.seed ^ (u64::from(id) << 20));
    // Both schemes see the same sequence of wake budgets: mostly short, sometimes long.
    let mut budgets = SimRng::new(a.seed ^ u64::from(id));
    let (mut up, mut down) = (Pipe::default(), Pipe::default());
    let mut now = 1_000u64;
    let mut r = DeviceResult::default();
    let mut accepted = 0u64;
    while r.wakes < MAX_WAKES {
        r.wakes += 1;
        let budget = if budgets.chance(20) {
            a.budget_ms * 12
        } else {
            a.budget_ms
        };
        if scheme == Scheme::BlindRestart {
            now += BLIND_WAIT_MS;
            r.awake_ms += BLIND_WAIT_MS;
            storage = MemStorage::new(capacity);
        }
        let mut dev: Device<Ed25519Verifier> = Device::new(
            config(id, capacity, a),
            Ed25519Verifier::from_bytes(key).unwrap(),
        );
        dev.restore_from(&mut storage).unwrap();
        let out = run_wake(
            &mut dev,
            &mut storage,
            handler,
            link,
            &mut up,
            &mut down,
            &mut rng,
            &mut now,
            WakeBudget {
                bytes: None,
                millis: Some(budget),
            },
        )
        .unwrap();
        accepted += dev.stats().payload_bytes_accepted;
        if std::env::var("FLEET_TRACE").is_ok() {
            eprintln!(
                "{id} wake {} {:?} awake {} {:?}",
                r.wakes,
                out.reason,
                out.awake_ms,
                dev.stats()
            );
        }
        r.awake_ms += out.awake_ms;
        now += u64::from(out.sleep_secs.min(600)) * 1000;
        if out.reason == SleepReason::Staged {
            assert_eq!(
                storage.staged(image_len as usize),
                handler_image(handler, image_len)
            );
            r.updated = true;
            break;
        }
    }
    r.radio_bytes = up.stats.bytes + down.stats.bytes;
    r.refetched = accepted.saturating_sub(image_len);
    r
}

fn handler_image(handler: &Handler<SingleRelease, MemImages>, len: u64) -> Vec<u8> {
    use ota_core::host::ImageSource;
    let mut buf = vec![0u8; len as usize];
    let n = handler.images().read_at(ImageId(1), 0, &mut buf).unwrap();
    buf.truncate(n);
    buf
}

/// Cost of one "nothing for you" wake for a device already up to date.
fn idle_checkin(
    handler: &Handler<SingleRelease, MemImages>,
    key: &[u8; 32],
    link: &LinkProfile,
) -> (u64, u64, u64) {
    let mut c = config(
        0,
        0,
        &Args {
            devices: 1,
            image_kib: 0,
            chunk: 1024,
            window: 1,
            budget_ms: 0,
            seed: 0,
        },
    );
    c.running.sequence = 42;
    let mut dev: Device<Ed25519Verifier> =
        Device::new(c, Ed25519Verifier::from_bytes(key).unwrap());
    let (mut up, mut down) = (Pipe::default(), Pipe::default());
    let ideal = LinkProfile {
        loss_percent: 0,
        ..*link
    };
    let mut now = 0;
    let mut storage = MemStorage::new(0);
    let out = run_wake(
        &mut dev,
        &mut storage,
        handler,
        &ideal,
        &mut up,
        &mut down,
        &mut SimRng::new(1),
        &mut now,
        WakeBudget::default(),
    )
    .unwrap();
    assert_eq!(out.reason, SleepReason::UpToDate);
    (up.stats.bytes, down.stats.bytes, out.awake_ms)
}

fn main() {
    let a = args();
    let wall = WallClock::now();
    let image_len = (a.image_kib * 1024) as u64;
    let mut img = vec![0u8; image_len as usize];
    let mut r = SimRng::new(a.seed);
    img.iter_mut().for_each(|b| *b = r.next_u64() as u8);

    let release = Release::new(Manifest {
        vendor: 0x5e,
        class: 7,
        sequence: 42,
        version: Version::new(1, 4, 0),
        ..fixture::manifest(&img, a.chunk)
    });
    let handler = release.handler(&img);
    let public = release.public_key();
    let link = LinkProfile::NB_IOT;

    println!(
        "fleet: {} devices, {} KiB image, {} B chunks, window {}; link {} ms RTT, {} kbit/s, {}% loss",
        a.devices,
        a.image_kib,
        a.chunk,
        a.window,
        2 * link.latency_ms + link.jitter_ms,
        link.bits_per_sec / 1000,
        link.loss_percent
    );
    println!(
        "wake budget {} s (one wake in five: {} s); blind-wait scheme waits {} s after each connect\n",
        a.budget_ms / 1000,
        a.budget_ms * 12 / 1000,
        BLIND_WAIT_MS / 1000
    );
    println!(
        "{:<34} {:>9} {:>10} {:>12} {:>15} {:>12}",
        "scheme", "updated", "wakes/dev", "radio/image", "refetched/dev", "awake/dev"
    );
    for (scheme, name) in [
        (Scheme::Ota, "ota: one question, resume"),
        (Scheme::BlindRestart, "blind wait 30 s, restart from zero"),
    ] {
        let results: Vec<DeviceResult> = (0..a.devices)
            .map(|id| simulate(scheme, id, &a, &handler, &public, image_len, &link))
            .collect();
        let n = results.len() as f64;
        let updated = results.iter().filter(|r| r.updated).count();
        let wakes: f64 = results.iter().map(|r| f64::from(r.wakes)).sum::<f64>() / n;
        let radio: f64 =
            results.iter().map(|r| r.radio_bytes as f64).sum::<f64>() / n / image_len as f64;
        let refetched: f64 = results.iter().map(|r| r.refetched as f64).sum::<f64>() / n / 1024.0;
        let awake: f64 = results.iter().map(|r| r.awake_ms as f64).sum::<f64>() / n / 1000.0;
        println!(
            "{:<34} {:>9} {:>10.1} {:>12.3} {:>11.1} KiB {:>10.1} s",
            name,
            format!("{updated}/{}", results.len()),
            wakes,
            radio,
            refetched,
            awake
        );
    }
    let (up, down, ms) = idle_checkin(&handler, &public, &link);
    println!(
        "\n\"nothing for you\" wake: 1 round trip, {up} B up + {down} B down, awake {:.2} s",
        ms as f64 / 1000.0
    );
    println!(
        "simulated time; wall time {:.2} s",
        wall.elapsed().as_secs_f64()
    );
}
