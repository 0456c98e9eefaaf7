//! `ota-server`: keys, releases, rollouts, serving and fleet status.
#![allow(clippy::print_stdout)]

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use ota_core::host::Handler;
use ota_server::desired::Fleet;
use ota_server::mqtt::{keep_desired_states, parse_url};
use ota_server::store::{unix_now, vtext, Store, Window};
use ota_server::{credentials, keys, parse_version};
use ota_transport_coap::server::{serve, DeviceKeys, Responder, Security, ServerConfig};
use ota_transport_mqtt::server::{Server as MqttServer, ServerStats};

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
        #[arg(long, default_value = "ota-data")]
        data: PathBuf,
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
        #[arg(long, default_value = "ota-data")]
        data: PathBuf,
        /// Chunk (CoAP block) size: a power of two from 16 to 1024.
        #[arg(long, default_value_t = 1024)]
        chunk_size: u16,
    },
    /// Set the desired state of a device class.
    Rollout {
        #[arg(long)]
        version: String,
        #[arg(long)]
        class: String,
        /// Share of the class's devices (chosen by a stable hash of their id).
        #[arg(long, default_value_t = 100)]
        percent: u8,
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
        #[arg(long, default_value = "ota-data")]
        data: PathBuf,
    },
    /// Serve check-ins, images and reports over CoAP, MQTT or both.
    Serve {
        /// CoAP (UDP) address to listen on.
        #[arg(long, default_value = "0.0.0.0:5683")]
        coap: String,
        /// Do not serve CoAP.
        #[arg(long)]
        no_coap: bool,
        /// Also serve through this MQTT broker: mqtt://[USER[:PASSWORD]@]HOST[:PORT][/PREFIX].
        #[arg(long)]
        mqtt: Option<String>,
        /// Shared-subscription group: server instances in one group split the fleet.
        #[arg(long, default_value = "ota-servers")]
        mqtt_group: String,
        /// MQTT client id of this instance (unique per instance).
        #[arg(long, default_value = "ota-server-1")]
        mqtt_client_id: String,
        #[arg(long, default_value = "ota-data")]
        data: PathBuf,
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
    /// The fleet as a table.
    Status {
        #[arg(long, default_value = "ota-data")]
        data: PathBuf,
    },
}

fn main() {
    if let Err(e) = run(Cli::parse()) {
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

fn run(cli: Cli) -> anyhow::Result<()> {
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
            data,
            chunk_size,
        } => {
            let version = parse_version(&version)?;
            let key = keys::load_signing(&key)?;
            let bytes = std::fs::read(&image)
                .with_context(|| format!("cannot read image {}", image.display()))?;
            let mut store = Store::open(&data)?;
            let r = store.add_release(&class, version, &bytes, &key, chunk_size)?;
            let m = r.manifest.manifest();
            println!(
                "release {} of {class}: image id {}, sequence {}, {} bytes, sha256 {:?}",
                vtext(r.version),
                r.id,
                r.sequence,
                m.image_size,
                m.digest
            );
        }
        Command::Rollout {
            version,
            class,
            percent,
            devices,
            window,
            cancel,
            resume,
            data,
        } => {
            let version = parse_version(&version)?;
            let window = window.as_deref().map(Window::parse).transpose()?;
            let mut store = Store::open(&data)?;
            if resume {
                let release = store
                    .release(&class, version)?
                    .with_context(|| format!("no release {} for class {class}", vtext(version)))?;
                store.resume_release(release.id)?;
                println!("release {} of {class} offered again", vtext(version));
            }
            let r = store.set_rollout(&class, version, percent, &devices, window, cancel)?;
            if cancel {
                println!("rollout of {} to {class} cancelled", vtext(r.version));
            } else {
                println!(
                    "rolling {} out to {percent}% of {class}{}{}",
                    vtext(r.version),
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
            mqtt,
            mqtt_group,
            mqtt_client_id,
            data,
            check_in_secs,
            insecure_plain,
            image_cache_mib,
        } => {
            anyhow::ensure!(
                !no_coap || mqtt.is_some(),
                "--no-coap needs --mqtt: nothing to serve"
            );
            let broker = mqtt.as_deref().map(parse_url).transpose()?;
            let fleet = Arc::new(Fleet::with_image_cache(
                Store::open(&data)?,
                check_in_secs,
                image_cache_mib << 20,
            ));
            let keys: Arc<dyn DeviceKeys> = fleet.clone();
            let security = if insecure_plain {
                eprintln!("ota-server: WARNING: --insecure-plain: plain CoAP accepted; anyone can speak for any device");
                Security::PlainForLab(Some(keys))
            } else {
                Security::Oscore(keys)
            };
            let handler = Arc::new(Handler::new(fleet.clone(), fleet.clone(), 1024));
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let coap = async {
                    if no_coap {
                        return std::future::pending().await;
                    }
                    let socket = tokio::net::UdpSocket::bind(&coap)
                        .await
                        .with_context(|| format!("cannot bind {coap}"))?;
                    eprintln!("ota-server: serving CoAP on {}", socket.local_addr()?);
                    let responder =
                        Responder::new(handler.clone(), ServerConfig::default(), security)
                            .on_refusal(|r| {
                                eprintln!(
                                    "ota-server: refused {} from {}: {}",
                                    code_text(r.code),
                                    r.peer,
                                    r.reason
                                );
                            });
                    serve(socket, responder)
                        .await
                        .context("CoAP server failed")
                };
                let mqtt = async {
                    let Some(broker) = broker else {
                        return std::future::pending().await;
                    };
                    eprintln!(
                        "ota-server: serving MQTT through {}:{} under {}/",
                        broker.host, broker.port, broker.prefix
                    );
                    let server = MqttServer::new(&broker, &mqtt_client_id, &mqtt_group);
                    let publisher = server.publisher();
                    let stats = Arc::new(ServerStats::default());
                    tokio::select! {
                        r = server.run(handler.clone(), stats) => r.context("MQTT server failed"),
                        r = keep_desired_states(fleet.clone(), handler.clone(), publisher, Duration::from_secs(1)) => r,
                    }
                };
                tokio::select! {
                    r = coap => r,
                    r = mqtt => r,
                    _ = tokio::signal::ctrl_c() => Ok(()),
                }
            })?;
        }
        Command::Device {
            command:
                DeviceCommand::Add {
                    id,
                    class,
                    out,
                    aiocoap,
                    data,
                },
        } => {
            let mut store = Store::open(&data)?;
            let cred = store.add_device(&id, &class)?;
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
        Command::Status { data } => {
            let store = Store::open(&data)?;
            let devices = store.devices()?;
            let mut out = std::io::stdout().lock();
            writeln!(
                out,
                "{:<14} {:<12} {:>9} {:>9} {:<20} {:>9} {:<12} {:<28} {:>9}",
                "device",
                "class",
                "running",
                "desired",
                "phase",
                "progress",
                "last result",
                "reason",
                "last seen"
            )?;
            let now = unix_now();
            for d in devices {
                let desired = store
                    .rollout(&d.class)?
                    .filter(|r| !r.cancelled)
                    .map(|r| vtext(r.release.version))
                    .unwrap_or_else(|| "-".into());
                let progress = d
                    .progress
                    .map(|(a, b)| format!("{:.0}%", 100.0 * f64::from(a) / f64::from(b.max(1))))
                    .unwrap_or_else(|| "-".into());
                writeln!(
                    out,
                    "{:<14} {:<12} {:>9} {:>9} {:<20} {:>9} {:<12} {:<28} {:>8}s",
                    d.id,
                    d.class,
                    d.running,
                    desired,
                    d.phase,
                    progress,
                    if d.result.is_empty() { "-" } else { &d.result },
                    if d.reason.is_empty() { "-" } else { &d.reason },
                    now.saturating_sub(d.last_seen)
                )?;
            }
            for (class, version, why) in store.halted_releases()? {
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

/// A CoAP code as `C.DD`.
fn code_text(code: u8) -> String {
    format!("{}.{:02}", code >> 5, code & 31)
}
