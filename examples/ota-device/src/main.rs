//! `ota-device`: a simulated sleepy device. Its flash is a file (ACTIVE, DFU and journal, as
//! on a real MCU), so it survives restarts; each wake checks in over CoAP or MQTT (where the
//! retained desired state settles "nothing for you" without a check-in), downloads within its
//! budget and sleeps; a staged image is installed at the next "reboot", booted on trial, and
//! confirmed, or rolled back when `--fail-health-check` is set. Outcomes are reported at the
//! next check-in.

use std::net::{ToSocketAddrs, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use minimq::{Buffers, Session};
use ota_core::device::{Event, SleepReason};
use ota_core::manifest::Ed25519Verifier;
use ota_core::runtime::block::{BusyClock, StdClock};
use ota_core::runtime::Blocking;
use ota_core::wire::{DigestPrefix, ResultCode, RunningFirmware, WakeBudget};
use ota_core::Device;
use ota_core::DeviceConfig;
use ota_oscore::SecurityContext;
use ota_storage::{BootOutcome, FlashStorage, Layout, Partition, UpdateState};
use ota_test_support::FileFlash;
use ota_transport_coap::link::{coap_config, run_wake_blocking, BlockingSocket};
use ota_transport_coap::CoapLink;
use ota_transport_mqtt::device::{run_wake as mqtt_wake, session_config, WakeOptions};
use ota_transport_mqtt::tcp::TcpConnector;

const SECTOR: u32 = 4096;

#[derive(Parser)]
#[command(name = "ota-device", version, about = "A simulated sleepy device")]
struct Args {
    /// Update server: coap://HOST:PORT, or an MQTT broker,
    /// mqtt://[ID:PASSWORD@]HOST[:PORT][/PREFIX] (the user name is the device id).
    // clap's help text: the brackets are optional parts, not intra-doc links.
    #[allow(rustdoc::broken_intra_doc_links)]
    #[arg(long)]
    server: String,
    #[arg(long)]
    id: String,
    #[arg(long)]
    class: String,
    /// The vendor's public key file (or key directory).
    #[arg(long)]
    key: PathBuf,
    /// Where the device keeps its flash file and running-firmware record.
    #[arg(long)]
    state: PathBuf,
    /// Seconds asleep between wakes (the server's next check-in time is capped to this).
    #[arg(long, default_value_t = 2)]
    wake_every: u64,
    /// Milliseconds awake per wake.
    #[arg(long, default_value_t = 3000)]
    budget_ms: u32,
    /// Bytes on the link per wake, both directions, at most (no limit by default): a limit
    /// that stops a download part-way however fast the link is.
    #[arg(long)]
    budget_bytes: Option<u32>,
    /// Firmware version the device starts with (first run only).
    #[arg(long, default_value = "1.0.0")]
    version: String,
    /// Size of the application slot in KiB.
    #[arg(long, default_value_t = 512)]
    slot_kib: u32,
    /// The new image fails its health check: roll back.
    #[arg(long)]
    fail_health_check: bool,
    /// Stop after this many wakes.
    #[arg(long, default_value_t = 1000)]
    max_wakes: u32,
    /// Exit once up to date with nothing left to report.
    #[arg(long)]
    exit_when_idle: bool,
    /// The device's credentials (`ota-server device add`): every CoAP request is protected
    /// with OSCORE under them.
    #[arg(long)]
    credentials: Option<PathBuf>,
    /// LAB USE ONLY: plain CoAP without OSCORE (the server must run with --insecure-plain).
    #[arg(long)]
    insecure_plain: bool,
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("ota-device: {e:#}");
        std::process::exit(1);
    }
}

/// The running firmware, as the (simulated) bootloader knows it: a small text file.
fn load_running(path: &Path, initial: &str) -> anyhow::Result<RunningFirmware> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(_) => format!("{initial} 0 0000000000000000"),
    };
    let mut it = text.split_whitespace();
    let (Some(v), Some(seq), Some(d)) = (it.next(), it.next(), it.next()) else {
        bail!("{} is malformed", path.display());
    };
    let digest: [u8; 8] = hex::decode(d)?
        .try_into()
        .map_err(|_| anyhow::anyhow!("bad digest in {}", path.display()))?;
    Ok(RunningFirmware {
        version: ota_server::parse_version(v)?,
        digest: DigestPrefix(digest),
        sequence: seq.parse()?,
    })
}

fn save_running(path: &Path, r: &RunningFirmware) -> anyhow::Result<()> {
    let v = r.version;
    std::fs::write(
        path,
        format!(
            "{}.{}.{} {} {}",
            v.major,
            v.minor,
            v.patch,
            r.sequence,
            hex::encode(r.digest.0)
        ),
    )
    .with_context(|| format!("cannot write {}", path.display()))
}

fn log(id: &str, msg: &str) {
    eprintln!("[{id}] {msg}");
}

fn run(a: Args) -> anyhow::Result<()> {
    let public = ota_server::keys::load_public(&a.key)?;
    let verifier =
        Ed25519Verifier::from_bytes(&public).context("public key is not a valid Ed25519 key")?;
    std::fs::create_dir_all(&a.state)?;
    let slot = a.slot_kib * 1024 / SECTOR * SECTOR;
    let layout = Layout {
        active: Partition::new(0, slot),
        dfu: Partition::new(slot, slot + SECTOR),
        journal: Partition::new(2 * slot + SECTOR, 2 * SECTOR),
    };
    let sectors = ((2 * slot + 3 * SECTOR) / SECTOR) as usize;
    let running_path = a.state.join("running");
    let flash_path = a.state.join("flash.bin");
    let mut link = Link::open(&a.server, &a.id, a.wake_every)?;
    let oscore = match (&a.credentials, a.insecure_plain) {
        (Some(path), false) => {
            let c = ota_server::credentials::load(path)?;
            if c.id != a.id || c.class != a.class {
                bail!(
                    "{} are the credentials of {} ({}), not of {} ({})",
                    path.display(),
                    c.id,
                    c.class,
                    a.id,
                    a.class
                );
            }
            Some(
                SecurityContext::derive(&c.secret, &c.salt, &c.kid, &[])
                    .map_err(|e| anyhow::anyhow!("credentials: {e}"))?,
            )
        }
        (None, true) => None,
        (Some(_), true) => bail!("--credentials and --insecure-plain exclude each other"),
        (None, false) if matches!(link, Link::Coap { .. }) => {
            bail!("CoAP needs --credentials (from `ota-server device add`), or --insecure-plain for the lab")
        }
        (None, false) => None,
    };

    let mut wakes = 0;
    // What the last wake measured of the path, for the next wake's device to start from.
    let mut path = None;
    while wakes < a.max_wakes {
        // Power on: the bootloader part.
        let flash = FileFlash::<4, 4096>::open(&flash_path, sectors)?;
        let mut storage =
            FlashStorage::open(flash, layout).map_err(|e| anyhow::anyhow!("flash: {e:?}"))?;
        let mut running = load_running(&running_path, &a.version)?;
        match storage.boot().map_err(|e| anyhow::anyhow!("boot: {e:?}"))? {
            BootOutcome::Trial { sequence } => {
                let m = storage
                    .staged_manifest()
                    .context("trial without a manifest")?;
                log(
                    &a.id,
                    &format!("booted {} on trial (sequence {sequence})", vtext(m.version)),
                );
                if a.fail_health_check {
                    log(&a.id, "health check failed: rolling back");
                    storage
                        .reject(ResultCode::HEALTH_CHECK_FAILED)
                        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
                    continue; // reboot into the bootloader, which reverts
                }
                storage.confirm().map_err(|e| anyhow::anyhow!("{e:?}"))?;
                running = RunningFirmware {
                    version: m.version,
                    digest: m.digest.prefix(),
                    sequence: m.sequence,
                };
                save_running(&running_path, &running)?;
                log(&a.id, &format!("confirmed {}", vtext(m.version)));
            }
            BootOutcome::Reverted { reason } => {
                log(
                    &a.id,
                    &format!(
                        "rolled back to {}: {}",
                        vtext(running.version),
                        ota_server::desired::reason_text(reason)
                    ),
                );
            }
            BootOutcome::Normal => {}
        }

        // The application: one wake.
        wakes += 1;
        let mut config = DeviceConfig::new(
            a.id.as_bytes(),
            ota_server::VENDOR,
            ota_server::class_id(&a.class),
            running,
        )
        .map_err(|e| anyhow::anyhow!("device id: {e}"))?;
        // Staging capacity and the outcome to report come from storage, in the wake.
        config.window = 12;
        let budget = WakeBudget {
            bytes: a.budget_bytes,
            millis: Some(a.budget_ms),
        };
        let mut staged = false;
        let on_event = |e: &Event| log_event(&a.id, &mut staged, e);
        let (reason, sleep_secs, progress) = match &mut link {
            Link::Coap { socket, clock } => {
                let seed = wakes.wrapping_mul(2_654_435_761) ^ std::process::id();
                let mut dev: Device<_> = Device::new(coap_config(config, seed), verifier.clone());
                if let Some(memory) = path {
                    dev.remember_path(memory);
                }
                let mut link = CoapLink::new(BlockingSocket(socket), BusyClock(clock), seed);
                if let Some(ctx) = &oscore {
                    link = link.secure(ctx.clone());
                }
                let end =
                    run_wake_blocking(&mut dev, &mut link, clock, &mut storage, budget, on_event)
                        .map_err(|e| anyhow::anyhow!("wake: {e}"))?;
                path = dev.path_memory().or(path);
                (end.reason, end.sleep_secs, progress(&dev))
            }
            Link::Mqtt {
                rt,
                session,
                connector,
                prefix,
            } => {
                let mut dev: Device<_> = Device::new(config, verifier.clone());
                if let Some(memory) = path {
                    dev.remember_path(memory);
                }
                let end = rt
                    .block_on(mqtt_wake(
                        session,
                        connector,
                        &mut dev,
                        &mut Blocking(&mut storage),
                        prefix,
                        &a.id,
                        budget,
                        &WakeOptions::default(),
                        on_event,
                    ))
                    .map_err(|e| match e {
                        ota_core::runtime::WakeError::Link(l) => anyhow::anyhow!("wake: {l}"),
                        other => anyhow::anyhow!("wake: {other}"),
                    })?;
                path = dev.path_memory().or(path);
                if !end.checked_in && end.reason == SleepReason::UpToDate {
                    log(
                        &a.id,
                        "the retained desired state says up to date: no check-in",
                    );
                }
                (end.reason, end.sleep_secs, progress(&dev))
            }
        };
        let staged_bytes = storage.state();
        log(
            &a.id,
            &format!("wake {wakes}: {reason:?}, {progress} bytes staged, sleeping"),
        );
        // The outcome was reported in the wake if the server answered the check-in: the wake
        // loop told storage to forget it then, and only then.
        if staged || staged_bytes == UpdateState::Staged {
            storage
                .request_install()
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            log(&a.id, "rebooting to install");
            continue;
        }
        let idle = matches!(reason, SleepReason::UpToDate)
            && storage.last_outcome() == ota_core::wire::LastOutcome::None;
        if a.exit_when_idle && idle {
            log(
                &a.id,
                &format!("up to date on {}; exiting", vtext(running.version)),
            );
            return Ok(());
        }
        std::thread::sleep(Duration::from_secs(
            a.wake_every.min(u64::from(sleep_secs.max(1))),
        ));
    }
    Ok(())
}

/// Bytes of the download in progress already staged, counted as the next offer's
/// `resume_from` counts them (chunks staged past the first gap included).
fn progress<V: ota_core::Verifier>(dev: &Device<V>) -> u64 {
    dev.staged_bytes().map(u64::from).unwrap_or(0)
}

fn log_event(id: &str, staged: &mut bool, e: &Event) {
    match e {
        Event::UpdateOffered {
            version,
            size,
            resume_from,
            ..
        } => log(
            id,
            &format!(
                "update {} offered: {size} bytes, {resume_from} already staged",
                vtext(*version)
            ),
        ),
        Event::ManifestRejected(err) => log(id, &format!("manifest refused: {err}")),
        Event::Staged { version, .. } => {
            *staged = true;
            log(id, &format!("{} staged and verified", vtext(*version)));
        }
        Event::DownloadFailed(code) => log(
            id,
            &format!(
                "download failed: {}",
                ota_server::desired::reason_text(*code)
            ),
        ),
        Event::Sleep { .. } => {}
    }
}

/// How the device reaches the server.
enum Link {
    Coap {
        socket: UdpSocket,
        clock: StdClock,
    },
    Mqtt {
        rt: tokio::runtime::Runtime,
        /// Kept across wakes, as in RAM that survives sleep: the broker session resumes.
        session: Box<Session<'static>>,
        connector: TcpConnector,
        prefix: String,
    },
}

impl Link {
    fn open(server: &str, id: &str, sleep_secs: u64) -> anyhow::Result<Self> {
        if let Some(hostport) = server.strip_prefix("coap://") {
            let addr = hostport
                .to_socket_addrs()?
                .next()
                .context("server address does not resolve")?;
            let socket = UdpSocket::bind(if addr.is_ipv4() {
                "0.0.0.0:0"
            } else {
                "[::]:0"
            })?;
            socket.connect(addr)?;
            return Ok(Link::Coap {
                socket,
                clock: StdClock::default(),
            });
        }
        let broker = ota_server::mqtt::parse_url(server).context(
            "--server must be coap://HOST:PORT or mqtt://[ID:PASSWORD@]HOST[:PORT][/PREFIX]",
        )?;
        if let Some(user) = broker.username.as_deref().filter(|u| *u != id) {
            bail!("the MQTT user name is the device id: {user:?} is not {id:?}");
        }
        // The process's "RAM": buffers for a 1 KiB chunk and a window of 12 requests.
        let rx: &'static mut [u8] = Box::leak(vec![0u8; 1024 + 128].into_boxed_slice());
        let tx: &'static mut [u8] = Box::leak(vec![0u8; 1024].into_boxed_slice());
        let id: &'static str = Box::leak(id.to_string().into_boxed_str());
        let password: Option<&'static [u8]> = broker
            .password
            .map(|p| &*Box::leak(p.into_bytes().into_boxed_slice()));
        // The broker keeps the session over a few sleeps.
        let expiry = u32::try_from(sleep_secs.saturating_mul(4).max(60)).unwrap_or(u32::MAX);
        let config = session_config(Buffers::new(rx, tx), id, password, expiry)
            .map_err(|e| anyhow::anyhow!("mqtt session: {e}"))?;
        Ok(Link::Mqtt {
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
            session: Box::new(Session::new(config)),
            connector: TcpConnector::new(&broker.host, broker.port),
            prefix: broker.prefix,
        })
    }
}

fn vtext(v: ota_core::wire::Version) -> String {
    ota_server::store::vtext(v)
}
