//! `ota-server`: the command line only. Keys, releases, rollouts, provisioning, API tokens,
//! fleet status, and `serve`; everything they do is in the library (`ota_server::store` for
//! what is stored, `ota_server::serve` for serving).
#![allow(clippy::print_stdout)]

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use ota_server::mqtt::parse_url;
use ota_server::store::{unix_now, vtext, DeviceFilter, Location, RolloutPlan, Store, Window};
use ota_server::{credentials, keys, parse_version, serve};

/// mimalloc: the serving path allocates per datagram from many tasks at once; glibc's allocator
/// spent a tenth of the server's CPU there (consolidating and unlinking chunks), and the load
/// table gained about a third in check-ins/s with mimalloc (see the README).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "ota-server",
    version,
    about = "Over-the-air update server for sleepy devices"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the store is: `--db postgres://…`, or SQLite under `--data DIR`.
#[derive(Args, Clone)]
struct Db {
    /// SQLite data directory (the default store).
    #[arg(long, default_value = "ota-data")]
    data: PathBuf,
    /// PostgreSQL instead: postgres://USER[:PASSWORD]@HOST[:PORT]/DB (several `serve`
    /// instances may share it).
    #[arg(long)]
    db: Option<String>,
}

impl Db {
    async fn open(&self) -> anyhow::Result<Store> {
        Store::open_at(&Location::from_args(&self.data, self.db.as_deref())?).await
    }
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a bearer token for the HTTP API and dashboard (printed once; stored hashed).
    Create {
        #[arg(long)]
        name: String,
        #[command(flatten)]
        db: Db,
    },
}

#[derive(Subcommand)]
enum DeviceCommand {
    /// Provision a device: a new OSCORE context (kid, master secret, salt) in the store, and
    /// its credentials file for `ota-device --credentials`.
    Add {
        #[arg(long)]
        id: String,
        #[arg(long)]
        class: String,
        /// Credentials file to write (readable by its owner only).
        #[arg(long)]
        out: PathBuf,
        /// Also write the device's side as an aiocoap security context directory.
        #[arg(long)]
        aiocoap: Option<PathBuf>,
        #[command(flatten)]
        db: Db,
    },
}

#[derive(Subcommand)]
enum Command {
    /// Generate an Ed25519 signing key pair into DIR (signing.key, public.key).
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
    /// Sign a manifest for an image and store both; prints the image id, digest and size.
    Release {
        #[arg(long)]
        image: PathBuf,
        #[arg(long)]
        version: String,
        #[arg(long)]
        class: String,
        /// Signing key file or key directory.
        #[arg(long)]
        key: PathBuf,
        #[command(flatten)]
        db: Db,
        /// Chunk (CoAP block) size: a power of two from 16 to 1024.
        #[arg(long, default_value_t = 1024)]
        chunk_size: u16,
        /// Also make patches from these earlier versions (X.Y.Z,X.Y.Z...): devices running one
        /// of them fetch the patch instead of the whole image.
        #[arg(long, default_value = "")]
        delta_from: String,
        /// Patches larger than this share of the image (percent) are not offered.
        #[arg(long, default_value_t = ota_server::delta::DEFAULT_MAX_PERCENT)]
        max_patch_percent: u8,
    },
    /// Set the desired state of a device class: one step (--percent), or a staged ramp
    /// (--steps 1,10,100 --soak-secs 3600) that pauses itself when failures pass
    /// --max-failure-percent.
    Rollout {
        #[arg(long)]
        version: String,
        #[arg(long)]
        class: String,
        /// Share of the class's devices (chosen by a stable hash of their id).
        #[arg(long, default_value_t = 100)]
        percent: u8,
        /// Staged ramp: shares per step, rising (overrides --percent).
        #[arg(long)]
        steps: Option<String>,
        /// Least seconds at a step before the next.
        #[arg(long, default_value_t = 0)]
        soak_secs: u32,
        /// Pause when more than this share of a step's finished updates failed or rolled back.
        #[arg(long, default_value_t = 100)]
        max_failure_percent: u8,
        /// ... once at least this many finished at the step.
        #[arg(long, default_value_t = 5)]
        min_outcomes: u32,
        /// Devices to include whatever the percentage (comma-separated ids).
        #[arg(long, value_delimiter = ',')]
        devices: Vec<String>,
        /// Maintenance window HH:MM-HH:MM, server time (UTC).
        #[arg(long)]
        window: Option<String>,
        /// Cancel the rollout: devices abandon downloads of it.
        #[arg(long)]
        cancel: bool,
        /// Offer the release again after it was halted (integrity failures on devices, or a
        /// stored image that no longer matches its manifest).
        #[arg(long)]
        resume: bool,
        #[command(flatten)]
        db: Db,
    },
    /// Serve check-ins, images and reports over CoAP, MQTT or both.
    Serve {
        /// CoAP (UDP) address to listen on.
        #[arg(long, default_value = "0.0.0.0:5683")]
        coap: SocketAddr,
        /// Do not serve CoAP.
        #[arg(long)]
        no_coap: bool,
        /// SO_REUSEPORT sockets on the CoAP address (the kernel spreads peers over them).
        #[arg(long, default_value_t = 2)]
        coap_sockets: usize,
        /// Receive buffer asked for each CoAP socket, KiB (capped by net.core.rmem_max).
        #[arg(long, default_value_t = 4096)]
        recv_buffer_kib: usize,
        /// Serve the management API, the dashboard and /metrics on this address.
        #[arg(long)]
        http: Option<SocketAddr>,
        /// Key directory: the API signs uploaded images with its signing.key and checks
        /// pre-signed manifests with its public.key.
        #[arg(long)]
        key: Option<PathBuf>,
        /// Also serve through this MQTT broker: mqtt://[USER[:PASSWORD]@]HOST[:PORT][/PREFIX].
        #[arg(long)]
        mqtt: Option<String>,
        /// Shared-subscription group: server instances in one group split the fleet.
        #[arg(long, default_value = "ota-servers")]
        mqtt_group: String,
        /// MQTT client id of this instance (unique per instance).
        #[arg(long, default_value = "ota-server-1")]
        mqtt_client_id: String,
        #[command(flatten)]
        db: Db,
        /// Seconds between device check-ins.
        #[arg(long, default_value_t = 3600)]
        check_in_secs: u32,
        /// LAB USE ONLY: also accept plain CoAP, without OSCORE. Anyone on the network can then
        /// check in, report and fetch images as any device.
        #[arg(long)]
        insecure_plain: bool,
        /// Most MiB of images kept in memory.
        #[arg(long, default_value_t = 256)]
        image_cache_mib: usize,
    },
    /// Provision devices.
    Device {
        #[command(subcommand)]
        command: DeviceCommand,
    },
    /// API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// The fleet as a table.
    Status {
        #[command(flatten)]
        db: Db,
    },
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build();
    let result = match rt {
        Ok(rt) => rt.block_on(run(Cli::parse())),
        Err(e) => Err(e.into()),
    };
    if let Err(e) = result {
        // A reader that closed our stdout (`status | head -1`) ends the command quietly, as it
        // ends any Unix tool.
        let closed_pipe = e.chain().any(|c| {
            c.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
        });
        if closed_pipe {
            std::process::exit(0);
        }
        eprintln!("ota-server: {e:#}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Keygen { out } => {
            let public = keys::generate(&out)?;
            println!(
                "wrote {} and {}",
                out.join(keys::SIGNING).display(),
                public.display()
            );
        }
        Command::Release {
            image,
            version,
            class,
            key,
            db,
            chunk_size,
            delta_from,
            max_patch_percent,
        } => {
            let version = parse_version(&version)?;
            let key = keys::load_signing(&key)?;
            let bytes = std::fs::read(&image)
                .with_context(|| format!("cannot read image {}", image.display()))?;
            let store = db.open().await?;
            let sources = ota_server::delta::sources(&store, &class, &delta_from).await?;
            let r = store
                .add_release(&class, version, &bytes, &key, chunk_size)
                .await?;
            let m = r.manifest.manifest();
            println!(
                "release {} of {class}: image id {}, sequence {}, {} bytes, sha256 {:?}",
                vtext(r.version),
                r.id,
                r.sequence,
                m.image_size,
                m.digest
            );
            let made = ota_server::delta::make_patches(
                &store,
                &r,
                &bytes,
                &sources,
                max_patch_percent,
                &key,
            )
            .await?;
            for p in &made {
                println!("  {}", p.describe(m.image_size, &sources));
            }
        }
        Command::Rollout {
            version,
            class,
            percent,
            steps,
            soak_secs,
            max_failure_percent,
            min_outcomes,
            devices,
            window,
            cancel,
            resume,
            db,
        } => {
            let version = parse_version(&version)?;
            let window = window.as_deref().map(Window::parse).transpose()?;
            let store = db.open().await?;
            let release = store
                .release(&class, version)
                .await?
                .with_context(|| format!("no release {} for class {class}", vtext(version)))?;
            if resume {
                store.resume_release(release.id).await?;
                println!("release {} of {class} offered again", vtext(version));
            }
            let plan = RolloutPlan {
                steps: match &steps {
                    Some(s) => RolloutPlan::parse_steps(s)?,
                    None => vec![percent],
                },
                soak_secs,
                max_failure_percent,
                min_outcomes,
                devices: devices.clone(),
                window,
            };
            let r = store.set_rollout(&class, version, &plan).await?;
            if cancel {
                let state = r.state;
                store
                    .transition(
                        &class,
                        state,
                        ota_server::store::RolloutState::Cancelled,
                        "cancelled by hand",
                        None,
                    )
                    .await?;
                println!(
                    "rollout of {} to {class} cancelled",
                    vtext(r.release.version)
                );
            } else {
                println!(
                    "rolling {} out to {} of {class}{}{}{}",
                    vtext(r.release.version),
                    plan.steps
                        .iter()
                        .map(|p| format!("{p}%"))
                        .collect::<Vec<_>>()
                        .join(" -> "),
                    if plan.steps.len() > 1 {
                        format!(" (at least {soak_secs} s per step, pausing above {max_failure_percent}% failures)")
                    } else {
                        String::new()
                    },
                    if devices.is_empty() {
                        String::new()
                    } else {
                        format!(" and to {}", devices.join(","))
                    },
                    window
                        .map(|w| format!(" within {}", w.to_text()))
                        .unwrap_or_default()
                );
            }
        }
        Command::Serve {
            coap,
            no_coap,
            coap_sockets,
            recv_buffer_kib,
            http,
            key,
            mqtt,
            mqtt_group,
            mqtt_client_id,
            db,
            check_in_secs,
            insecure_plain,
            image_cache_mib,
        } => {
            anyhow::ensure!(
                !no_coap || mqtt.is_some() || http.is_some(),
                "--no-coap needs --mqtt or --http: nothing to serve"
            );
            let broker = mqtt.as_deref().map(parse_url).transpose()?;
            let (signing_key, public_key) = match &key {
                Some(k) => (Some(keys::load_signing(k)?), Some(keys::load_public(k)?)),
                None => (None, None),
            };
            // One serve per SQLite data directory (see ServeLock), held until the process ends.
            let _lock = match db.db {
                None => Some(ota_server::store::sqlite::ServeLock::take(&db.data)?),
                Some(_) => None,
            };
            let store = db.open().await?;
            serve::run(
                store,
                serve::Options {
                    coap: (!no_coap).then_some(coap),
                    coap_sockets,
                    recv_buffer: recv_buffer_kib << 10,
                    mqtt: broker,
                    mqtt_group,
                    mqtt_client_id,
                    http,
                    check_in_secs,
                    insecure_plain,
                    image_cache_bytes: image_cache_mib << 20,
                    signing_key,
                    public_key,
                },
            )
            .await?;
        }
        Command::Device {
            command:
                DeviceCommand::Add {
                    id,
                    class,
                    out,
                    aiocoap,
                    db,
                },
        } => {
            let store = db.open().await?;
            let cred = store.add_device(&id, &class).await?;
            credentials::save(&out, &cred)?;
            if let Some(dir) = aiocoap {
                credentials::save_aiocoap(&dir, &cred)?;
            }
            println!(
                "device {id} of {class} provisioned: OSCORE kid {}; credentials in {}",
                hex::encode(&cred.kid),
                out.display()
            );
        }
        Command::Token {
            command: TokenCommand::Create { name, db },
        } => {
            let store = db.open().await?;
            println!("{}", store.create_token(&name).await?);
        }
        Command::Status { db } => {
            let store = db.open().await?;
            let devices = store.devices(&DeviceFilter::default()).await?;
            let rollouts = store.rollouts().await?;
            // Each device's newest transfer: bytes sent, and whether as a patch.
            let mut sent = std::collections::HashMap::new();
            for t in store.transfers(None, None).await? {
                sent.insert(t.device.clone(), t);
            }
            let mut out = std::io::stdout().lock();
            writeln!(
                out,
                "{:<14} {:<12} {:>9} {:>9} {:<20} {:>9} {:>15} {:<12} {:<28} {:>9}",
                "device",
                "class",
                "running",
                "desired",
                "phase",
                "progress",
                "bytes sent",
                "last result",
                "reason",
                "last seen"
            )?;
            let now = unix_now();
            for d in devices {
                let desired = rollouts
                    .iter()
                    .find(|r| r.class == d.class && !r.cancelled())
                    .map(|r| vtext(r.release.version))
                    .unwrap_or_else(|| "-".into());
                let progress = d
                    .progress
                    .map(|(a, b)| format!("{:.0}%", 100.0 * f64::from(a) / f64::from(b.max(1))))
                    .unwrap_or_else(|| "-".into());
                let bytes = sent.get(&d.id).map_or_else(
                    || "-".into(),
                    |t| {
                        let kind = match t.patch_bytes {
                            0 => "whole",
                            p if p == t.bytes => "patch",
                            _ => "both",
                        };
                        format!("{} {kind}", t.bytes)
                    },
                );
                writeln!(
                    out,
                    "{:<14} {:<12} {:>9} {:>9} {:<20} {:>9} {:>15} {:<12} {:<28} {:>8}s",
                    d.id,
                    d.class,
                    d.running,
                    desired,
                    d.phase,
                    progress,
                    bytes,
                    if d.result.is_empty() { "-" } else { &d.result },
                    if d.reason.is_empty() { "-" } else { &d.reason },
                    now.saturating_sub(d.last_seen)
                )?;
            }
            for r in &rollouts {
                if r.plan.steps.len() > 1 || r.state == ota_server::store::RolloutState::Paused {
                    writeln!(
                        out,
                        "rollout of {} to {}: {} at step {} of {} ({}%){}",
                        vtext(r.release.version),
                        r.class,
                        r.state.as_str(),
                        r.step + 1,
                        r.plan.steps.len(),
                        r.percent(),
                        if r.state_reason.is_empty() {
                            String::new()
                        } else {
                            format!(": {}", r.state_reason)
                        }
                    )?;
                }
            }
            for (class, version, why) in store.halted_releases().await? {
                writeln!(
                    out,
                    "release {} of {class} HALTED: {why} (offer it again with: rollout --version {} --class {class} --resume)",
                    vtext(version),
                    vtext(version)
                )?;
            }
        }
    }
    Ok(())
}
