//! `ota-demo`: a fleet of sleepy devices learns of an update at once, fetches it over an
//! NB-IoT-like link across short wakes, boots it on trial, confirms it and reports, with the
//! figures that show no byte was wasted, next to the blind-wait-and-restart scheme.
//!
//! Everything runs in this process on loopback UDP: the real server (SQLite store, CoAP), the
//! real device stack (state machine, CoAP client, power-fail-safe flash storage on a simulated
//! NOR flash) and an emulated radio link per device. Link time is wall-clock time; only the
//! sleep between wakes is shortened (one second stands for the server's check-in interval).

mod link;

use std::net::UdpSocket;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use ota_core::device::{Event, SleepReason};
use ota_core::host::{Handler, MemImages, SingleRelease};
use ota_core::manifest::{Ed25519Verifier, PatchInfo, StoredManifest};
use ota_core::resume::ResumeState;
use ota_core::runtime::block::{BusyClock, StdClock};
use ota_core::sim::{run_wake as sim_wake, LinkProfile, Pipe, SimRng};
use ota_core::storage::{CounterStore, MemStorage, Persisted, StorageFailure, UpdateStorage};
use ota_core::wire::{
    DigestPrefix, ImageId, LastOutcome, RunningFirmware, Urgency, Version, WakeBudget,
};
use ota_core::{Device, DeviceConfig};
use ota_oscore::SecurityContext;
use ota_server::fleet::Fleet;
use ota_server::serve::spawn_coap;
use ota_server::store::{RolloutPlan, Store};
use ota_storage::sim::SimFlash;
use ota_storage::{BootOutcome, FlashStorage, Layout, Partition};
use ota_transport_coap::link::{coap_config, run_wake_blocking, BlockingSocket};
use ota_transport_coap::CoapLink;

const CLASS: &str = "demo-sensor";
const SECTOR: u32 = 4096;
const BLIND_WAIT_MS: u64 = 30_000;
const MAX_WAKES: u32 = 60;

#[derive(Parser, Clone)]
#[command(
    name = "ota-demo",
    about = "A fleet of sleepy devices updating over an emulated NB-IoT link"
)]
struct Args {
    /// Devices in the fleet.
    #[arg(long, default_value_t = 20)]
    devices: u32,
    /// Image size in KiB.
    #[arg(long, default_value_t = 48)]
    image_kib: u32,
    /// Round-trip time of the link, ms.
    #[arg(long, default_value_t = 600)]
    rtt_ms: u64,
    /// Link rate per direction, kbit/s.
    #[arg(long, default_value_t = 40)]
    kbps: u64,
    /// Datagram loss, percent.
    #[arg(long, default_value_t = 5)]
    loss: u32,
    /// Awake time per wake, ms.
    #[arg(long, default_value_t = 6000)]
    budget_ms: u32,
    /// Chunk (CoAP block) size.
    #[arg(long, default_value_t = 1024)]
    chunk: u16,
    /// Requests in flight per device, at most (the device default; the congestion control
    /// decides how many of them to use).
    #[arg(long, default_value_t = 8)]
    window: u8,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

impl Args {
    fn link(&self) -> LinkProfile {
        LinkProfile {
            latency_ms: self.rtt_ms.saturating_sub(self.rtt_ms / 10) / 2,
            jitter_ms: self.rtt_ms / 10,
            bits_per_sec: self.kbps * 1000,
            loss_percent: self.loss,
            duplicate_percent: 0,
            corrupt_percent: 0,
        }
    }
}

/// What one device's update cost.
#[derive(Debug, Default, Clone, Copy)]
struct Outcome {
    updated: bool,
    wakes: u32,
    /// Bytes the link carried, both directions, lost datagrams included.
    radio_bytes: u64,
    /// Bytes the devices sent and received by their own count (lost downlink not seen).
    device_bytes: u64,
    /// The usual block request and block response on the air, bytes (OSCORE included).
    block_sizes: (usize, usize),
    accepted: u64,
    awake_ms: u64,
}

/// Storage that moves a progress bar as chunks are committed.
struct Shown<'a, S> {
    inner: &'a mut S,
    bar: &'a ProgressBar,
}

impl<S: CounterStore> CounterStore for Shown<'_, S> {
    type Error = S::Error;
    fn load_counter(&mut self) -> Result<u64, S::Error> {
        self.inner.load_counter()
    }
    fn store_counter(&mut self, value: u64) -> Result<(), S::Error> {
        self.inner.store_counter(value)
    }
}

impl<S: UpdateStorage> UpdateStorage for Shown<'_, S> {
    type Error = S::Error;
    fn capacity(&self) -> u32 {
        self.inner.capacity()
    }
    fn load(&mut self) -> Result<Persisted, S::Error> {
        self.inner.load()
    }
    fn begin(&mut self, m: &StoredManifest, s: &ResumeState) -> Result<(), S::Error> {
        self.bar.set_position(0);
        self.inner.begin(m, s)
    }
    fn write(&mut self, offset: u32, data: &[u8]) -> Result<(), S::Error> {
        self.inner.write(offset, data)
    }
    fn persist(&mut self, s: &ResumeState) -> Result<(), S::Error> {
        self.bar.set_position(u64::from(s.next_offset));
        self.inner.persist(s)
    }
    fn read(&mut self, offset: u32, buf: &mut [u8]) -> Result<(), S::Error> {
        self.inner.read(offset, buf)
    }
    fn mark_staged(&mut self, s: &ResumeState) -> Result<(), S::Error> {
        self.inner.mark_staged(s)
    }
    fn abandon(&mut self) -> Result<(), S::Error> {
        self.inner.abandon()
    }
    fn rebuild(&mut self, patch: &PatchInfo, image_size: u32) -> Result<(), S::Error> {
        self.inner.rebuild(patch, image_size)
    }
    fn failure(error: &S::Error) -> StorageFailure {
        S::failure(error)
    }
    fn set_outcome(&mut self, outcome: LastOutcome) -> Result<(), S::Error> {
        self.inner.set_outcome(outcome)
    }
}

fn running_config(id: &str, running: RunningFirmware, a: &Args) -> anyhow::Result<DeviceConfig> {
    let mut c = DeviceConfig::new(
        id.as_bytes(),
        ota_server::VENDOR,
        ota_server::class_id(CLASS),
        running,
    )
    .map_err(|e| anyhow::anyhow!("device id: {e}"))?;
    c.window = a.window;
    Ok(c)
}

/// One device's life until it runs the new image, confirmed and reported.
fn device_life(
    id: String,
    oscore: SecurityContext,
    relay: std::net::SocketAddr,
    carried: &link::LinkCount,
    public: [u8; 32],
    a: &Args,
    bar: &ProgressBar,
) -> anyhow::Result<Outcome> {
    let slot = a.image_kib.div_ceil(4) * SECTOR + SECTOR;
    let layout = Layout {
        active: Partition::new(0, slot),
        dfu: Partition::new(slot, slot + SECTOR),
        journal: Partition::new(2 * slot + SECTOR, 2 * SECTOR),
    };
    let flash = SimFlash::<4, 4096>::new(((2 * slot + 3 * SECTOR) / SECTOR) as usize);
    let mut storage = FlashStorage::open(flash, layout).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let verifier = Ed25519Verifier::from_bytes(&public).context("bad public key")?;
    let mut running = RunningFirmware {
        version: Version::new(1, 0, 0),
        digest: DigestPrefix([0; 8]),
        sequence: 0,
    };
    let mut socket = UdpSocket::bind("127.0.0.1:0")?;
    socket.connect(relay)?;
    let clock = StdClock::default();
    let mut out = Outcome::default();
    while out.wakes < MAX_WAKES {
        if let BootOutcome::Trial { .. } = storage.boot().map_err(|e| anyhow::anyhow!("{e:?}"))? {
            let m = storage
                .staged_manifest()
                .context("trial without manifest")?;
            storage.confirm().map_err(|e| anyhow::anyhow!("{e:?}"))?;
            running = RunningFirmware {
                version: m.version,
                digest: m.digest.prefix(),
                sequence: m.sequence,
            };
            bar.set_message(format!(
                "confirmed {}.{}.{}",
                m.version.major, m.version.minor, m.version.patch
            ));
        }
        out.wakes += 1;
        let config = running_config(&id, running, a)?;
        let seed = out.wakes.wrapping_mul(40_503) ^ id.len() as u32;
        let mut dev: Device<_> = Device::new(coap_config(config, seed), verifier.clone());
        let mut link = CoapLink::new(BlockingSocket(&mut socket), BusyClock(&clock), seed)
            .secure(oscore.clone());
        let t = Instant::now();
        let mut staged = false;
        let mut shown = Shown {
            inner: &mut storage,
            bar,
        };
        let end = run_wake_blocking(
            &mut dev,
            &mut link,
            &clock,
            &mut shown,
            WakeBudget {
                bytes: None,
                millis: Some(a.budget_ms),
            },
            |e| {
                if let Event::Staged { .. } = e {
                    staged = true;
                }
            },
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        out.awake_ms += t.elapsed().as_millis() as u64;
        out.accepted += dev.stats().payload_bytes_accepted;
        out.radio_bytes = carried.up.bytes() + carried.down.bytes();
        out.block_sizes = (
            carried.up.usual_size().unwrap_or(0),
            carried.down.usual_size().unwrap_or(0),
        );
        out.device_bytes += dev.stats().bytes_sent + dev.stats().bytes_received;
        if staged {
            bar.set_message("installing, trial boot");
            storage
                .request_install()
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            continue;
        }
        if end.reason == SleepReason::UpToDate && running.sequence > 0 {
            out.updated = true;
            bar.finish_with_message(format!("up to date after {} wakes", out.wakes));
            return Ok(out);
        }
        bar.set_message(format!(
            "asleep after wake {} ({:?})",
            out.wakes, end.reason
        ));
        std::thread::sleep(Duration::from_secs(1));
    }
    bar.abandon_with_message("gave up");
    Ok(out)
}

/// The blind-wait-and-restart scheme on the same link, in simulated time: after every connect
/// the device waits 30 s hoping an update starts, and a download cut by the end of a wake
/// restarts from zero at the next.
fn blind_restart(
    a: &Args,
    image: &[u8],
    handler: &Handler<SingleRelease, MemImages>,
    verifier: &Ed25519Verifier,
) -> Vec<Outcome> {
    let link = a.link();
    let mut all = Vec::new();
    for d in 0..a.devices {
        let mut out = Outcome::default();
        let mut rng = SimRng::new(a.seed ^ u64::from(d) << 8);
        let (mut up, mut down) = (Pipe::default(), Pipe::default());
        let mut now = 0u64;
        let mut accepted = 0;
        for _ in 0..MAX_WAKES {
            let mut storage = MemStorage::new(image.len() as u32 + 4096);
            let Ok(mut config) =
                running_config(&format!("blind-{d}"), RunningFirmware::default(), a)
            else {
                break;
            };
            config.staging_capacity = storage.capacity();
            let mut dev: Device<_> = Device::new(config, verifier.clone());
            now += BLIND_WAIT_MS;
            out.awake_ms += BLIND_WAIT_MS;
            let budget = WakeBudget {
                bytes: None,
                millis: Some(a.budget_ms),
            };
            let Ok(w) = sim_wake(
                &mut dev,
                &mut storage,
                handler,
                &link,
                &mut up,
                &mut down,
                &mut rng,
                &mut now,
                budget,
            ) else {
                break;
            };
            out.awake_ms += w.awake_ms;
            out.wakes += 1;
            accepted += dev.stats().payload_bytes_accepted;
            if w.reason == SleepReason::Staged {
                out.updated = true;
                break;
            }
            now += 3_600_000;
        }
        out.radio_bytes += up.stats.bytes + down.stats.bytes;
        out.device_bytes = out.radio_bytes;
        out.accepted += accepted;
        all.push(out);
    }
    all
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    if !(16..=1024).contains(&a.chunk)
        || !a.chunk.is_power_of_two()
        || a.devices == 0
        || a.image_kib == 0
    {
        anyhow::bail!(
            "--chunk must be a power of two 16..=1024; --devices and --image-kib at least 1"
        );
    }
    let started = Instant::now();
    let mut rng = SimRng::new(a.seed);
    let image: Vec<u8> = (0..a.image_kib * 1024)
        .map(|_| rng.next_u64() as u8)
        .collect();
    let key = ed25519_dalek::SigningKey::from_bytes(&{
        let mut s = [0u8; 32];
        s.iter_mut().for_each(|b| *b = rng.next_u64() as u8);
        s
    });
    let public = key.verifying_key().to_bytes();
    let data = std::env::temp_dir().join(format!("ota-demo-{}", std::process::id()));
    let link = a.link();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let (contexts, server_addr, release) = rt.block_on(async {
        let store = Store::open(&data).await?;
        let release = store
            .add_release(CLASS, Version::new(1, 1, 0), &image, &key, a.chunk)
            .await?;
        store
            .set_rollout(CLASS, release.version, &RolloutPlan::immediate(100))
            .await?;
        // Every device provisioned with its own OSCORE context, as in the field.
        let mut contexts = Vec::new();
        for d in 0..a.devices {
            let c = store.add_device(&format!("dev-{d:02}"), CLASS).await?;
            contexts.push(
                SecurityContext::derive(&c.secret, &c.salt, &c.kid, &[])
                    .map_err(|e| anyhow::anyhow!("{e}"))?,
            );
        }
        let fleet = Arc::new(Fleet::new(store, 3600, 256 << 20).await?);
        let (addr, _) = spawn_coap(fleet, "127.0.0.1:0".parse()?, 1)?;
        anyhow::Ok((contexts, addr, release))
    })?;

    println!(
        "ota-demo: {} devices, {} KiB image (release 1.1.0, {} B chunks, window {}), link {} ms RTT, {} kbit/s, {}% loss, {} s awake per wake",
        a.devices, a.image_kib, a.chunk, a.window, a.rtt_ms, a.kbps, a.loss, a.budget_ms / 1000
    );
    let bars = MultiProgress::new();
    let style =
        ProgressStyle::with_template("{prefix:>8} [{bar:30}] {bytes:>9}/{total_bytes:<9} {msg}")?
            .progress_chars("=> ");
    let mut threads = Vec::new();
    for d in 0..a.devices {
        let (relay, carried) = rt.block_on(link::start(
            server_addr,
            link,
            a.seed.wrapping_add(u64::from(d) * 7919),
        ))?;
        let bar = bars.add(
            ProgressBar::new(u64::from(a.image_kib) * 1024)
                .with_style(style.clone())
                .with_prefix(format!("dev-{d:02}")),
        );
        let args = a.clone();
        let oscore = contexts
            .get(d as usize)
            .cloned()
            .context("a context per device")?;
        threads.push(std::thread::spawn(move || {
            device_life(
                format!("dev-{d:02}"),
                oscore,
                relay,
                &carried,
                public,
                &args,
                &bar,
            )
        }));
    }
    let ours: Vec<Outcome> = threads
        .into_iter()
        .map(|t| {
            t.join()
                .map_err(|_| anyhow::anyhow!("device thread panicked"))?
        })
        .collect::<anyhow::Result<_>>()?;
    let wall = started.elapsed();

    // The same fleet under blind wait and restart, over the same link model (simulated time).
    let images = MemImages::new();
    images.insert(ImageId(release.id), image.clone());
    let sim_handler = Handler::new(
        SingleRelease {
            image: ImageId(release.id),
            manifest: release.manifest.clone(),
            urgency: Urgency::Attempt,
            next_check_in: 3600,
        },
        images,
        1024,
    );
    let verifier = Ed25519Verifier::from_bytes(&public).context("bad public key")?;
    let blind = blind_restart(&a, &image, &sim_handler, &verifier);

    let n = f64::from(a.devices);
    let img = f64::from(a.image_kib * 1024);
    println!();
    println!(
        "{:<36} {:>9} {:>11} {:>12} {:>15} {:>12}",
        "scheme", "updated", "wakes/dev", "radio/image", "refetched/dev", "awake/dev"
    );
    for (name, rows) in [
        ("ota: one question, resume (measured)", &ours),
        ("blind wait 30 s, restart (simulated)", &blind),
    ] {
        let sum = |f: fn(&Outcome) -> u64| rows.iter().map(f).sum::<u64>() as f64;
        println!(
            "{:<36} {:>9} {:>11.1} {:>12.3} {:>11.1} KiB {:>10.1} s",
            name,
            format!(
                "{}/{}",
                rows.iter().filter(|o| o.updated).count(),
                a.devices
            ),
            sum(|o| u64::from(o.wakes)) / n,
            sum(|o| o.radio_bytes) / n / img,
            (sum(|o| o.accepted) / n - img).max(0.0) / 1024.0,
            sum(|o| o.awake_ms) / n / 1000.0
        );
    }
    // Block exchanges as the link carried them (OSCORE included): the usual datagram sizes.
    let (req, resp) = ours
        .iter()
        .map(|o| o.block_sizes)
        .max_by_key(|&(up, _)| up)
        .unwrap_or_default();
    let chunk = f64::from(a.chunk);
    let (req, resp) = (req as f64, (resp as f64 - chunk).max(0.0));
    let keep = 1.0 - f64::from(a.loss) / 100.0;
    let blocks = (img / chunk).ceil();
    let lossless = blocks * (req + resp) + img;
    // A block takes one request that crosses the link and one response that crosses back: the
    // request is sent until both get through ((1 - loss)^-2 times), the response once per
    // request that arrived ((1 - loss)^-1 times).
    let limit = (blocks * req / (keep * keep) + (blocks * resp + img) / keep) / img;
    println!(
        "\nradio/image: bytes the emulated link carried (both directions, lost datagrams included)\n\
         per image byte. Limit at {}% loss: {limit:.3} = a lossless block transfer ({:.3}: {} B request,\n\
         {} B response framing per {} B block, OSCORE included, as the link carried them) with each\n\
         datagram repeated until it gets through; check-ins and reports come on top. Measured / limit:\n\
         {:.3}. The devices' own count was {:.3} (it misses what was lost on the way down).",
        a.loss,
        lossless / img,
        req,
        resp,
        a.chunk,
        ours.iter().map(|o| o.radio_bytes).sum::<u64>() as f64 / n / img / limit,
        ours.iter().map(|o| o.device_bytes).sum::<u64>() as f64 / n / img
    );
    let ideal = img * 8.0 / (a.kbps as f64 * 1000.0) / keep;
    let awake = ours.iter().map(|o| o.awake_ms).sum::<u64>() as f64 / n / 1000.0;
    println!(
        "\nawake/dev against the ideal (image at link rate / (1 - loss)) {ideal:.1} s: {:.3}x; \
         wakes/dev against ceil(ideal / budget) + 1 = {}.",
        awake / ideal,
        (ideal * 1000.0 / f64::from(a.budget_ms)).ceil() + 1.0
    );
    println!(
        "\nwall time {:.1} s: link time is real time, sleeps between wakes are shortened to 1 s.\n\
         Blind-wait devices give up after {MAX_WAKES} wakes: a download longer than one wake never\n\
         completes when every wake restarts it from zero.",
        wall.as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&data);
    Ok(())
}
