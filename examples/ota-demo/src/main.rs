//! `ota-demo`: a fleet of sleepy devices learns of an update at once, fetches it over an
//! NB-IoT-like link across short wakes, boots it on trial, confirms it and reports, with the
//! figures that show no byte was wasted, next to the blind-wait-and-restart scheme.
//!
//! Then a point release (one string changed, a few bytes inserted) goes out as a patch from
//! the first: the devices rebuild it from the image they run, in their flash, and the table
//! shows what the link carried for it against the whole first image.
//!
//! Everything runs in this process on loopback UDP: the real server (SQLite store, CoAP), the
//! real device stack (state machine, CoAP client, power-fail-safe flash storage on a simulated
//! NOR flash) and an emulated radio link per device. Link time is wall-clock time; only the
//! sleep between wakes is shortened (one second stands for the server's check-in interval).

mod link;

use std::net::UdpSocket;
use std::sync::atomic::{AtomicU32, Ordering};
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
use ota_core::storage::{CounterStore, Persisted, StorageFailure, UpdateStorage};
use ota_core::wire::{
    DigestPrefix, ImageId, LastOutcome, RunningFirmware, Urgency, Version, WakeBudget,
};
use ota_core::{Device, DeviceConfig};
use ota_oscore::SecurityContext;
use ota_server::fleet::Fleet;
use ota_server::serve::spawn_coap;
use ota_server::store::{RolloutPlan, Store};
use ota_storage::{BootOutcome, FlashStorage, Layout, Partition};
use ota_test_support::fixture;
use ota_test_support::sim::{run_wake as sim_wake, LinkProfile, Pipe, SimRng};
use ota_test_support::MemStorage;
use ota_test_support::SimFlash;
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
    #[arg(long, default_value_t = 12)]
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

/// How the devices and the main thread meet between the two releases.
#[derive(Default)]
struct Rendezvous {
    /// Devices done with the first release (updated or given up).
    first_done: AtomicU32,
    /// Sequence number of the point release, once it is out (0 before).
    point_seq: AtomicU32,
}

/// What the point release cost one device.
#[derive(Debug, Default, Clone, Copy)]
struct Point {
    updated: bool,
    /// It was fetched and applied as a patch.
    as_patch: bool,
    wakes: u32,
    /// Bytes the link carried from the release on, both directions, lost datagrams included.
    radio_bytes: u64,
    awake_ms: u64,
}

/// What one device's update cost.
#[derive(Debug, Default, Clone, Copy)]
struct Outcome {
    updated: bool,
    wakes: u32,
    /// Wakes until the image was staged (the rest boot it on trial, confirm it and report),
    /// and the time awake in them.
    staging_wakes: u32,
    staging_awake_ms: u64,
    /// Bytes the link carried, both directions, lost datagrams included.
    radio_bytes: u64,
    /// Bytes the devices sent and received by their own count (lost downlink not seen).
    device_bytes: u64,
    /// The usual block request and block response on the air, bytes (OSCORE included).
    block_sizes: (usize, usize),
    accepted: u64,
    awake_ms: u64,
    /// The point release that followed.
    point: Point,
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
        if let Ok(manifest) = m.as_signed().decode_verified() {
            self.bar.set_length(u64::from(manifest.transfer_size()));
        }
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

/// One device's life until it runs the first release and then the point release, each
/// confirmed and reported.
#[allow(clippy::too_many_arguments)]
fn device_life(
    id: String,
    oscore: SecurityContext,
    relay: std::net::SocketAddr,
    carried: &link::LinkCount,
    public: [u8; 32],
    a: &Args,
    bar: &ProgressBar,
    meet: &Rendezvous,
) -> anyhow::Result<Outcome> {
    // A sector of headroom for a larger next release; the staging slot has one more for a
    // patch beside the image it rebuilds, and the swap's spare.
    let slot = a.image_kib.div_ceil(4) * SECTOR + SECTOR;
    let dfu = slot + 2 * SECTOR;
    let layout = Layout {
        active: Partition::new(0, slot),
        dfu: Partition::new(slot, dfu),
        journal: Partition::new(slot + dfu, 2 * SECTOR),
    };
    let flash = SimFlash::<4, 4096>::new(((slot + dfu + 2 * SECTOR) / SECTOR) as usize);
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
    // What the last wake measured of the path: each wake's device starts from it (a real
    // device keeps these few bytes in RAM kept through sleep, or a backup register).
    let mut path = None;
    // Radio bytes when the point release came out (phase 2), else `None` (phase 1).
    let mut point_base: Option<u64> = None;
    let radio = || carried.up.bytes() + carried.down.bytes();
    loop {
        let wakes = match point_base {
            None => out.wakes,
            Some(_) => out.point.wakes,
        };
        if wakes >= MAX_WAKES {
            break;
        }
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
            if point_base.is_some() {
                out.point.as_patch = m.patch.is_some();
            }
            bar.set_message(format!(
                "confirmed {}.{}.{}",
                m.version.major, m.version.minor, m.version.patch
            ));
        }
        let wake = match point_base {
            None => &mut out.wakes,
            Some(_) => &mut out.point.wakes,
        };
        *wake += 1;
        let seed =
            (*wake + 1000 * u32::from(point_base.is_some())).wrapping_mul(40_503) ^ id.len() as u32;
        let config = running_config(&id, running, a)?;
        let mut dev: Device<_> = Device::new(coap_config(config, seed), verifier.clone());
        if let Some(memory) = path {
            dev.remember_path(memory);
        }
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
        path = dev.path_memory().or(path);
        let awake = t.elapsed().as_millis() as u64;
        match point_base {
            None => {
                out.awake_ms += awake;
                out.accepted += dev.stats().payload_bytes_accepted;
                out.radio_bytes = radio();
                out.block_sizes = (
                    carried.up.usual_size().unwrap_or(0),
                    carried.down.usual_size().unwrap_or(0),
                );
                out.device_bytes += dev.stats().bytes_sent + dev.stats().bytes_received;
            }
            Some(base) => {
                out.point.awake_ms += awake;
                out.point.radio_bytes = radio() - base;
            }
        }
        if staged {
            if point_base.is_none() {
                out.staging_wakes = out.wakes;
                out.staging_awake_ms = out.awake_ms;
            }
            bar.set_message("installing, trial boot");
            storage
                .request_install()
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            continue;
        }
        if end.reason == SleepReason::UpToDate && running.sequence > 0 {
            match point_base {
                None => {
                    out.updated = true;
                    bar.set_message(format!(
                        "up to date after {} wakes; waiting for the point release",
                        out.wakes
                    ));
                    meet.first_done.fetch_add(1, Ordering::SeqCst);
                    // Asleep (no radio) until the point release is out.
                    while meet.point_seq.load(Ordering::SeqCst) == 0 {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    point_base = Some(radio());
                    continue;
                }
                Some(_) if running.sequence >= meet.point_seq.load(Ordering::SeqCst) => {
                    out.point.updated = true;
                    bar.finish_with_message(format!(
                        "up to date: {} wakes, then {} for the point release ({})",
                        out.wakes,
                        out.point.wakes,
                        if out.point.as_patch {
                            "patch"
                        } else {
                            "whole image"
                        }
                    ));
                    return Ok(out);
                }
                Some(_) => {}
            }
        }
        bar.set_message(format!(
            "asleep after wake {} ({:?})",
            wakes + 1,
            end.reason
        ));
        std::thread::sleep(Duration::from_secs(1));
    }
    if point_base.is_none() {
        meet.first_done.fetch_add(1, Ordering::SeqCst);
    }
    bar.abandon_with_message("gave up");
    Ok(out)
}

/// `image` with a version string changed and 64 bytes inserted: a point release.
fn point_release(image: &[u8], rng: &mut SimRng) -> Vec<u8> {
    let mut new = image.to_vec();
    let at = new.len() / 3;
    let end = (at + 16).min(new.len());
    if let Some(s) = new.get_mut(at..end) {
        s.iter_mut()
            .zip(b"version 1.1.1 ok")
            .for_each(|(d, s)| *d = *s);
    }
    let mid = new.len() / 2;
    let inserted: Vec<u8> = (0..64).map(|_| rng.next_u64() as u8).collect();
    new.splice(mid..mid, inserted);
    new
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
    let (contexts, server_addr, release, fleet) = rt.block_on(async {
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
        let (addr, _) = spawn_coap(fleet.clone(), "127.0.0.1:0".parse()?, 1)?;
        anyhow::Ok((contexts, addr, release, fleet))
    })?;

    println!(
        "ota-demo: {} devices, {} KiB image (release 1.1.0, {} B chunks, window {}), link {} ms RTT, {} kbit/s, {}% loss, {} s awake per wake",
        a.devices, a.image_kib, a.chunk, a.window, a.rtt_ms, a.kbps, a.loss, a.budget_ms / 1000
    );
    let bars = MultiProgress::new();
    let style =
        ProgressStyle::with_template("{prefix:>8} [{bar:30}] {bytes:>9}/{total_bytes:<9} {msg}")?
            .progress_chars("=> ");
    let meet = Arc::new(Rendezvous::default());
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
        let meet = meet.clone();
        threads.push(std::thread::spawn(move || {
            device_life(
                format!("dev-{d:02}"),
                oscore,
                relay,
                &carried,
                public,
                &args,
                &bar,
                &meet,
            )
        }));
    }

    // Once every device is done with 1.1.0: the point release, as a patch from it.
    while meet.first_done.load(Ordering::SeqCst) < a.devices {
        std::thread::sleep(Duration::from_millis(100));
    }
    let point_image = point_release(&image, &mut rng);
    let (point, patch_bytes) = rt.block_on(async {
        let store = fleet.store();
        let point = store
            .add_release(CLASS, Version::new(1, 1, 1), &point_image, &key, a.chunk)
            .await?;
        let made = ota_server::delta::make_patches(
            store,
            &point,
            &point_image,
            std::slice::from_ref(&release),
            ota_server::delta::DEFAULT_MAX_PERCENT,
            &key,
        )
        .await?;
        let patch_bytes = match made.first() {
            Some(ota_server::delta::Made::Stored(p)) => p.info.size,
            other => anyhow::bail!("no patch for the point release: {other:?}"),
        };
        store
            .set_rollout(CLASS, point.version, &RolloutPlan::immediate(100))
            .await?;
        fleet.refresh(true).await?;
        anyhow::Ok((point, patch_bytes))
    })?;
    meet.point_seq.store(point.sequence, Ordering::SeqCst);
    let ours: Vec<Outcome> = threads
        .into_iter()
        .map(|t| {
            t.join()
                .map_err(|_| anyhow::anyhow!("device thread panicked"))?
        })
        .collect::<anyhow::Result<_>>()?;
    let wall = started.elapsed();

    // The same fleet under blind wait and restart, over the same link model (simulated time).
    let sim_handler = fixture::serve(
        SingleRelease {
            image: ImageId(release.id),
            manifest: release.manifest.clone(),
            urgency: Urgency::Attempt,
            next_check_in: 3600,
        },
        ImageId(release.id),
        &image,
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
    let staging = ours.iter().map(|o| o.staging_wakes).sum::<u32>() as f64 / n;
    let staging_awake = ours.iter().map(|o| o.staging_awake_ms).sum::<u64>() as f64 / n / 1000.0;
    let wakes = ours.iter().map(|o| o.wakes).sum::<u32>() as f64 / n;
    println!(
        "\nawake/dev against the ideal (image at link rate / (1 - loss)) {ideal:.1} s: {:.3}x; \
         wakes/dev against ceil(ideal / budget) + 1 = {}.\n\
         Staging the image took {staging_awake:.1} s of that ({:.3}x) and {staging:.1} of the wakes; \
         the other {:.1} confirm it after\nits trial boot and report.",
        awake / ideal,
        (ideal * 1000.0 / f64::from(a.budget_ms)).ceil() + 1.0,
        staging_awake / ideal,
        wakes - staging
    );
    let whole = ours.iter().map(|o| o.radio_bytes).sum::<u64>() as f64 / n;
    let patched = ours.iter().map(|o| o.point.radio_bytes).sum::<u64>() as f64 / n;
    println!(
        "\npoint release 1.1.1 (a string changed, 64 bytes inserted; {} B image), sent as a patch from\n\
         1.1.0 of {patch_bytes} B ({:.2} % of the image), rebuilt in each device's flash from the image it runs:",
        point_image.len(),
        100.0 * f64::from(patch_bytes) / point_image.len() as f64
    );
    println!(
        "{:<36} {:>9} {:>9} {:>11} {:>12} {:>14}",
        "release", "updated", "as patch", "wakes/dev", "radio/dev", "vs 1.1.0 whole"
    );
    let count = |f: fn(&Outcome) -> bool| ours.iter().filter(|o| f(o)).count();
    println!(
        "{:<36} {:>9} {:>9} {:>11.1} {:>10.0} B {:>13.2}%",
        "1.1.1 patch (measured)",
        format!("{}/{}", count(|o| o.point.updated), a.devices),
        format!("{}/{}", count(|o| o.point.as_patch), a.devices),
        ours.iter().map(|o| u64::from(o.point.wakes)).sum::<u64>() as f64 / n,
        patched,
        100.0 * patched / whole.max(1.0)
    );
    println!(
        "{:<36} {:>9} {:>9} {:>11.1} {:>10.0} B {:>13.2}%",
        "1.1.0 whole image (measured, above)",
        format!("{}/{}", count(|o| o.updated), a.devices),
        "-",
        ours.iter().map(|o| u64::from(o.wakes)).sum::<u64>() as f64 / n,
        whole,
        100.0
    );
    // Why any device got the whole image instead: what it reported.
    for (d, o) in ours.iter().enumerate() {
        if o.point.as_patch {
            continue;
        }
        let id = format!("dev-{d:02}");
        let events = rt.block_on(fleet.store().events(&id))?;
        let why: Vec<String> = events
            .iter()
            .filter(|e| e.kind == "failed")
            .map(|e| e.detail.clone())
            .collect();
        println!("{id} got the whole image: {}", why.join("; "));
    }
    println!(
        "radio/dev: bytes the link carried per device for the release, both directions, lost\n\
         datagrams included, from its check-in to its confirmation. Goal for a point release: at most\n\
         5 % of the whole image's."
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
