//! A real mosquitto on a free loopback port, with passwords and the crate's ACL; a release; a
//! server; a byte-counting TCP proxy.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::future::Future;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use minimq::{Buffers, Session};
use ota_core::device::Event;
use ota_core::host::{Handler, MemImages, SingleRelease};
use ota_core::manifest::{Ed25519Verifier, Manifest};
use ota_core::wire::WakeBudget;
use ota_core::wire::{DigestPrefix, ImageId, RunningFirmware, Version};
use ota_core::{Device, DeviceConfig};
use ota_test_support::fixture::{self, Release};
pub use ota_test_support::fixture::{bytes as image, verifier};
use ota_test_support::{MemError, MemStorage};
use ota_transport_mqtt::device::{run_wake, session_config, WakeError, WakeOptions, WakeOutcome};
use ota_transport_mqtt::server::{serve, ServerStats};
use ota_transport_mqtt::tcp::TcpConnector;
use ota_transport_mqtt::Broker;

pub const PASSWORD: &str = "test-secret";

/// Where Debian's mosquitto package put its dynamic security plugin.
fn dynsec_plugin() -> String {
    std::fs::read_dir("/usr/lib")
        .unwrap()
        .flatten()
        .map(|d| d.path().join("mosquitto_dynamic_security.so"))
        .find(|p| p.exists())
        .expect("mosquitto_dynamic_security.so (Debian mosquitto) must be installed")
        .display()
        .to_string()
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// mosquitto, stopped on drop.
pub struct Mosquitto {
    pub port: u16,
    pub dir: PathBuf,
    child: Option<Child>,
}

impl Mosquitto {
    /// Starts a broker configured as the crate ships it (`broker/`): the dynamic security
    /// plugin with every access denied but each device's own topics and the servers' shared
    /// subscriptions (`broker/dynsec.py`), client id pinned to the user name, packets capped
    /// at 4 KiB. Users: servers `ota-server` and `ota-server-2`, devices `dev-1` to `dev-4`.
    ///
    /// mosquitto started as root drops to its own user, which cannot read a checkout in a private
    /// directory (mode 0700, like `/root` or `mktemp -d`): everything it reads is written into a
    /// directory of its own that it can read and write (persistence, the plugin's own saves).
    pub fn start(name: &str) -> Self {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("ota-mqtt-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // World-writable like /tmp itself, so the broker's own user can save its sessions.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let dynsec = dir.join("dynsec.json");
        let mut cmd = Command::new("python3");
        cmd.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/broker/dynsec.py"));
        for user in ["ota-server", "ota-server-2"] {
            cmd.args(["--server", &format!("{user}:{PASSWORD}")]);
        }
        for user in ["dev-1", "dev-2", "dev-3", "dev-4"] {
            cmd.args(["--device", &format!("{user}:{PASSWORD}")]);
        }
        let out = cmd.output().expect("python3 runs broker/dynsec.py");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(&dynsec, out.stdout).unwrap();
        std::fs::set_permissions(&dynsec, std::fs::Permissions::from_mode(0o666)).unwrap();
        let port = free_port();
        let conf = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/broker/mosquitto.conf"
        ))
        .unwrap()
        .replace("listener 1883", &format!("listener {port} 127.0.0.1"))
        .replace("/etc/mosquitto/ota/dynsec.json", dynsec.to_str().unwrap())
        .replace(
            "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so",
            &dynsec_plugin(),
        );
        std::fs::write(
            dir.join("mosquitto.conf"),
            format!(
                "{conf}\npersistence true\npersistence_location {}/\nmax_queued_messages 2000\nmax_inflight_messages 100\n",
                dir.display()
            ),
        )
        .unwrap();
        let mut m = Mosquitto {
            port,
            dir,
            child: None,
        };
        m.run();
        m
    }

    /// The broker's own log (its stdout and stderr), for a failure message.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("broker.log")).unwrap_or_default()
    }

    fn run(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("broker.log"))
            .unwrap();
        let mut child = Command::new("mosquitto")
            .args(["-c", self.dir.join("mosquitto.conf").to_str().unwrap()])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("mosquitto (Debian mosquitto) must be installed: .ci/run installs it");
        for _ in 0..100 {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                self.child = Some(child);
                return;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "mosquitto exited ({status}) before listening; its log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        panic!(
            "mosquitto did not listen within 5 s; its log:\n{}",
            self.log()
        );
    }

    /// Stops the broker (SIGTERM, so it saves its sessions) and starts it again.
    pub fn restart(&mut self) {
        self.stop();
        self.run();
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
    }

    pub fn broker(&self, user: &str) -> Broker {
        Broker {
            host: "127.0.0.1".into(),
            port: self.port,
            username: Some(user.into()),
            password: Some(PASSWORD.into()),
            prefix: "ota".into(),
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// [`release`] before it is signed.
fn fixture_release(image: ImageId, img: &[u8], sequence: u32) -> Release {
    Release {
        image,
        next_check_in: 60,
        ..Release::new(Manifest {
            sequence,
            version: Version::new(2, sequence as u16, 0),
            ..fixture::manifest(img, 1024)
        })
    }
}

/// Release `sequence` (version 2.`sequence`.0) of `img` as `image`, signed with the fixture's
/// key.
pub fn release(image: ImageId, img: &[u8], sequence: u32) -> SingleRelease {
    fixture_release(image, img, sequence).single()
}

/// A handler offering `img` as release 5.
pub fn handler(img: &[u8]) -> Arc<Handler<SingleRelease, MemImages>> {
    Arc::new(fixture_release(ImageId(1), img, 5).handler(img))
}

/// A server instance on its own runtime; dropping it kills the instance.
pub struct Server {
    pub stats: Arc<ServerStats>,
    _rt: tokio::runtime::Runtime,
}

pub fn start_server(
    broker: Broker,
    client_id: &str,
    handler: Arc<Handler<SingleRelease, MemImages>>,
) -> Server {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let stats = Arc::new(ServerStats::default());
    let (s, id) = (stats.clone(), client_id.to_string());
    rt.spawn(async move {
        let _ = serve(broker, &id, "ota-servers", handler, s).await;
    });
    std::thread::sleep(Duration::from_millis(300));
    Server { stats, _rt: rt }
}

pub fn config(id: &str, sequence: u32, capacity: u32) -> DeviceConfig {
    let mut c = DeviceConfig::new(
        id.as_bytes(),
        1,
        2,
        RunningFirmware {
            version: Version::new(1, 0, 0),
            // A digest of its own per release, as real images have.
            digest: DigestPrefix([sequence as u8; 8]),
            sequence,
        },
    )
    .expect("a valid device id");
    c.staging_capacity = capacity;
    c.window = 8;
    c.initial_rto_ms = 1000;
    c
}

/// Counts MQTT control packets in one direction of a byte stream, from their fixed headers.
#[derive(Default)]
struct PacketCounter {
    header: Vec<u8>,
    skip: usize,
}

impl PacketCounter {
    /// Feeds bytes; returns how many packets started in them.
    fn feed(&mut self, mut data: &[u8]) -> u64 {
        let mut packets = 0;
        while let Some((&b, rest)) = data.split_first() {
            if self.skip > 0 {
                let n = self.skip.min(data.len());
                self.skip -= n;
                data = &data[n..];
                continue;
            }
            data = rest;
            self.header.push(b);
            // Type byte, then the remaining length: 7 bits a byte, high bit = more follows.
            if self.header.len() >= 2 && b & 0x80 == 0 {
                self.skip = self.header[1..]
                    .iter()
                    .rev()
                    .fold(0, |acc, &x| (acc << 7) | usize::from(x & 0x7f));
                self.header.clear();
                packets += 1;
            }
        }
        packets
    }
}

/// Bytes and MQTT packets through a [`Proxy`] in one direction.
#[derive(Default)]
pub struct Flow {
    pub bytes: AtomicU64,
    pub packets: AtomicU64,
}

impl Flow {
    pub fn get(&self) -> (u64, u64) {
        (
            self.packets.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }
}

/// A TCP proxy to `port` that counts bytes and MQTT packets both ways.
pub struct Proxy {
    pub port: u16,
    pub up: Arc<Flow>,
    pub down: Arc<Flow>,
}

pub fn proxy(target: u16) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (up, down) = (Arc::new(Flow::default()), Arc::new(Flow::default()));
    let (u, d) = (up.clone(), down.clone());
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                continue;
            };
            // A relay that Nagles would add its own 40 ms stalls to what it measures.
            let _ = (client.set_nodelay(true), server.set_nodelay(true));
            for (mut from, mut to, flow) in [
                (
                    client.try_clone().unwrap(),
                    server.try_clone().unwrap(),
                    u.clone(),
                ),
                (server, client, d.clone()),
            ] {
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    let mut counter = PacketCounter::default();
                    while let Ok(n) = from.read(&mut buf) {
                        if n == 0 || to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        flow.bytes.fetch_add(n as u64, Ordering::Relaxed);
                        flow.packets
                            .fetch_add(counter.feed(&buf[..n]), Ordering::Relaxed);
                    }
                    let _ = to.shutdown(std::net::Shutdown::Both);
                });
            }
        }
    });
    Proxy { port, up, down }
}

/// Runs `f` to completion on a fresh single-threaded tokio runtime.
pub fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// A device's MQTT session, logging in as `user` (buffers leaked: they live as long as the
/// test, as a device's live in RAM that survives sleep).
pub fn session(client_id: &str, user: &str) -> Session<'static> {
    let rx: &'static mut [u8] = Box::leak(vec![0u8; 1536].into_boxed_slice());
    let tx: &'static mut [u8] = Box::leak(vec![0u8; 1024].into_boxed_slice());
    let user: &'static str = Box::leak(user.to_string().into_boxed_str());
    let config = session_config(Buffers::new(rx, tx), user, Some(PASSWORD.as_bytes()), 3600)
        .unwrap()
        .client_id(client_id)
        .unwrap();
    Session::new(config)
}

pub fn options() -> WakeOptions {
    WakeOptions {
        reconnect_delay_ms: 300,
        ..WakeOptions::default()
    }
}

/// A device as the tests run it: id, MQTT session (kept across wakes, as in RAM that survives
/// sleep), storage, and the port of the broker (or a proxy in front of it).
pub struct TestDevice {
    pub id: String,
    pub session: Session<'static>,
    pub storage: MemStorage,
    pub port: u16,
}

impl TestDevice {
    /// Device `id` logging in as itself, with `capacity` bytes of staging storage.
    pub fn new(id: &str, port: u16, capacity: u32) -> Self {
        Self::logging_in_as(id, id, port, capacity)
    }

    /// Device `id` logging in with `user`'s credentials (client id `{id}-as-{user}` if they
    /// differ).
    pub fn logging_in_as(id: &str, user: &str, port: u16, capacity: u32) -> Self {
        let client_id = if id == user {
            id.to_string()
        } else {
            format!("{id}-as-{user}")
        };
        Self {
            id: id.to_string(),
            session: session(&client_id, user),
            storage: MemStorage::new(capacity),
            port,
        }
    }

    /// One wake of a fresh state machine running release `sequence`; the outcome and the
    /// device, for its statistics.
    pub fn wake(
        &mut self,
        sequence: u32,
        budget: WakeBudget,
    ) -> (
        Result<WakeOutcome, WakeError<MemError>>,
        Device<Ed25519Verifier>,
    ) {
        let capacity = ota_core::UpdateStorage::capacity(&self.storage);
        let mut dev = Device::new(config(&self.id, sequence, capacity), verifier());
        let out = block_on(run_wake(
            &mut self.session,
            &mut TcpConnector::new("127.0.0.1", self.port),
            &mut dev,
            &mut ota_core::runtime::Blocking(&mut self.storage),
            "ota",
            &self.id,
            budget,
            &options(),
            |e| {
                if let Event::ManifestRejected(e) = e {
                    panic!("manifest rejected: {e}");
                }
            },
        ));
        (out, dev)
    }
}
