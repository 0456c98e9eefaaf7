//! Fixtures: a signed release, a server on a loopback port, a device downloading over CoAP.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use ota_core::device::{Event, SleepReason};
use ota_core::host::{Handler, MemImages, OwnedManifest, SingleRelease};
use ota_core::manifest::Manifest;
use ota_core::runtime::block::{BusyClock, StdClock};
use ota_core::wire::{DigestPrefix, ImageId, RunningFirmware, Version, WakeBudget};
use ota_core::Device;
use ota_core::DeviceConfig;
use ota_test_support::fixture::{self, Release};
pub use ota_test_support::fixture::{bytes as image, verifier};
use ota_test_support::MemStorage;
use ota_transport_coap::link::{coap_config, run_wake_blocking, BlockingSocket};
use ota_transport_coap::server::{serve, Responder, Security, ServerConfig, ServerStats};
use ota_transport_coap::CoapLink;

pub const IMAGE_ID: u32 = 7;

/// The release of `img`: sequence 5, version 2.0.0, image [`IMAGE_ID`].
fn release(img: &[u8], chunk: u16) -> Release {
    Release {
        image: ImageId(IMAGE_ID),
        next_check_in: 60,
        ..Release::new(Manifest {
            sequence: 5,
            version: Version::new(2, 0, 0),
            ..fixture::manifest(img, chunk)
        })
    }
}

pub fn manifest(img: &[u8], chunk: u16) -> OwnedManifest {
    release(img, chunk).signed()
}

pub fn handler(img: &[u8], chunk: u16) -> Arc<Handler<SingleRelease, MemImages>> {
    Arc::new(release(img, chunk).handler(img))
}

/// A server on a free loopback port, running until the returned runtime is dropped.
pub struct Server {
    pub addr: SocketAddr,
    pub stats: Arc<ServerStats>,
    _rt: tokio::runtime::Runtime,
}

pub fn start_server(handler: Arc<Handler<SingleRelease, MemImages>>) -> Server {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let socket = rt
        .block_on(tokio::net::UdpSocket::bind("127.0.0.1:0"))
        .unwrap();
    let addr = socket.local_addr().unwrap();
    let responder = Responder::new(
        handler,
        ServerConfig::default(),
        Security::PlainForLab(None),
    );
    let stats = responder.stats();
    rt.spawn(serve(socket, responder));
    Server {
        addr,
        stats,
        _rt: rt,
    }
}

pub fn device_config(capacity: u32, window: u8) -> DeviceConfig {
    let mut c = DeviceConfig::new(
        b"coap-dev",
        1,
        2,
        RunningFirmware {
            version: Version::new(1, 0, 0),
            digest: DigestPrefix([0; 8]),
            sequence: 4,
        },
    )
    .expect("a valid device id");
    c.staging_capacity = capacity;
    c.window = window;
    c
}

/// Downloads the release from `addr` over CoAP in wakes of `budget`, until staged.
/// Returns the staged bytes and the number of wakes.
pub fn download(
    addr: SocketAddr,
    len: usize,
    window: u8,
    budget: WakeBudget,
) -> (Vec<u8>, u32, u64) {
    let mut storage = MemStorage::new(len as u32 + 1024);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.connect(addr).unwrap();
    let mut sock = sock;
    let clock = StdClock::default();
    let mut radio = 0;
    for wake in 1..=200u32 {
        let seed = wake * 7919;
        let mut dev: Device<_> = Device::new(
            coap_config(device_config(len as u32 + 1024, window), seed),
            verifier(),
        );
        let mut link = CoapLink::new(BlockingSocket(&mut sock), BusyClock(&clock), seed);
        let end = run_wake_blocking(&mut dev, &mut link, &clock, &mut storage, budget, |e| {
            if let Event::ManifestRejected(err) = e {
                panic!("manifest rejected: {err}");
            }
        })
        .unwrap();
        radio += link.framing().stats().bytes_sent + link.framing().stats().bytes_received;
        if end.reason == SleepReason::Staged {
            return (storage.staged(len), wake, radio);
        }
    }
    panic!("not staged after 200 wakes");
}

pub fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ota-coap-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A free UDP port on loopback.
pub fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// libcoap's server, killed on drop.
pub struct LibcoapServer {
    pub port: u16,
    child: Child,
}

impl Drop for LibcoapServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn start_libcoap_server() -> LibcoapServer {
    let port = free_port();
    let child = Command::new("coap-server-notls")
        .args([
            "-A",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-d",
            "10",
            "-v",
            "0",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("coap-server-notls (Debian libcoap3-bin) must be installed: .ci/run installs it");
    std::thread::sleep(Duration::from_millis(300));
    LibcoapServer { port, child }
}

/// Runs libcoap's client with `args`, bounded to `secs`; returns (success, stderr).
pub fn coap_client(args: &[&str], secs: u64) -> (bool, String) {
    let out = Command::new("timeout")
        .arg(secs.to_string())
        .arg("coap-client-notls")
        .args(args)
        .output()
        .expect("coap-client-notls (Debian libcoap3-bin) must be installed: .ci/run installs it");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A responder for `img` in 1 KiB chunks and a client with `capacity` bytes of staging and a
/// window of `window`, in plain CoAP or both under OSCORE ([`OneDevice`]'s context; the
/// client's sequence numbers start at `seq`, with plenty reserved).
pub fn pair(
    img: &[u8],
    capacity: u32,
    window: u8,
    secure: bool,
    seq: u64,
) -> (
    Responder<SingleRelease, MemImages>,
    ota_transport_coap::CoapClient<ota_core::manifest::Ed25519Verifier>,
) {
    let security = if secure {
        Security::Oscore(Arc::new(OneDevice(0)))
    } else {
        Security::PlainForLab(None)
    };
    let responder = Responder::new(handler(img, 1024), ServerConfig::default(), security);
    let mut client =
        ota_transport_coap::CoapClient::new(device_config(capacity, window), verifier(), 1);
    if secure {
        let ctx = ota_oscore::SecurityContext::derive(&[3; 16], &[4; 8], &[0x01, 0x2c], &[])
            .expect("a valid context");
        client = client.secure(ctx);
        client.restore_sequence(seq);
        client.sequence_reserved(seq + 10_000);
    }
    (responder, client)
}

/// One device's credentials, for a responder that requires OSCORE.
pub struct OneDevice(pub u64);

impl ota_transport_coap::server::DeviceKeys for OneDevice {
    fn lookup(&self, kid: &[u8]) -> Option<ota_transport_coap::server::DeviceKey> {
        (kid == [0x01, 0x2c]).then(|| ota_transport_coap::server::DeviceKey {
            device: "coap-dev".into(),
            secret: vec![3; 16],
            salt: vec![4; 8],
            device_sender_id: vec![0x01, 0x2c],
            server_sender_id: vec![],
            floor: None,
        })
    }
    fn advance(&self, _device: &str, seq: u64) -> bool {
        seq >= self.0
    }
}
