//! The real `ota-server` binary on a loopback port, provisioned through its own CLI, and
//! devices (the real CoAP client) that speak to it over UDP.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ota_core::manifest::Ed25519Verifier;
use ota_core::wire::{
    encode_vec, Capabilities, CheckIn, DigestPrefix, LastOutcome, Message, ResumeHint,
    RunningFirmware, Version, WakeBudget,
};
use ota_core::{DeviceConfig, Instant};
use ota_oscore::SecurityContext;
use ota_transport_coap::CoapClient;

pub const BIN: &str = env!("CARGO_BIN_EXE_ota-server");

/// A data directory with keys, removed on drop.
pub struct Data {
    pub dir: PathBuf,
}

impl Data {
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("ota-srv-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let d = Self { dir };
        d.cli(&["keygen", "--out", d.path("keys").to_str().unwrap()]);
        d
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.join(p)
    }

    /// Runs `ota-server ARGS --data DIR` (where the command takes it); its stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        let mut cmd = Command::new(BIN);
        cmd.args(args);
        if args[0] != "keygen" {
            cmd.args(["--data", self.path("data").to_str().unwrap()]);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "ota-server {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Releases `image` as `version` of `class`; rolls it out to every device if `rollout`.
    pub fn release(&self, class: &str, version: &str, image: &[u8], rollout: bool) {
        let file = self.path(&format!("{class}-{version}.bin"));
        std::fs::write(&file, image).unwrap();
        let keys = self.path("keys");
        self.cli(&[
            "release",
            "--image",
            file.to_str().unwrap(),
            "--version",
            version,
            "--class",
            class,
            "--key",
            keys.to_str().unwrap(),
        ]);
        if rollout {
            self.cli(&["rollout", "--version", version, "--class", class]);
        }
    }

    /// Provisions device `id` of `class`; its OSCORE context.
    pub fn provision(&self, id: &str, class: &str) -> SecurityContext {
        let file = self.path(&format!("{id}.cred"));
        self.cli(&[
            "device",
            "add",
            "--id",
            id,
            "--class",
            class,
            "--out",
            file.to_str().unwrap(),
        ]);
        let c = ota_server::credentials::load(&file).unwrap();
        SecurityContext::derive(&c.secret, &c.salt, &c.kid, &[]).unwrap()
    }

    pub fn status(&self) -> String {
        self.cli(&["status"])
    }

    pub fn verifier(&self) -> Ed25519Verifier {
        Ed25519Verifier::from_bytes(&ota_server::keys::load_public(&self.path("keys")).unwrap())
            .unwrap()
    }

    pub fn db(&self) -> PathBuf {
        self.path("data").join("ota.db")
    }
}

impl Drop for Data {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `ota-server serve` on a free loopback UDP port; killed on drop. Its stderr goes to a log.
pub struct Server {
    pub port: u16,
    child: Child,
    log: PathBuf,
}

impl Server {
    pub fn start(data: &Data, extra: &[&str]) -> Self {
        let port = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = data.path(&format!("server-{port}.log"));
        let child = Command::new(BIN)
            .args(["serve", "--coap", &format!("127.0.0.1:{port}")])
            .args(["--data", data.path("data").to_str().unwrap()])
            .args(["--check-in-secs", "60"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let s = Self { port, child, log };
        for _ in 0..100 {
            if s.log().contains("serving CoAP") {
                return s;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("ota-server did not start:\n{}", s.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// True while the process runs.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Resident memory, KiB.
    pub fn rss_kib(&self) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        s.lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap()
    }

    pub fn socket(&self) -> UdpSocket {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A device's configuration for `class` of `ota-server`, running `sequence`.
pub fn config(id: &str, class: &str, sequence: u32) -> DeviceConfig {
    let mut c = DeviceConfig::new(
        id.as_bytes(),
        ota_server::VENDOR,
        ota_server::class_id(class),
        RunningFirmware {
            version: Version::new(1, 0, 0),
            digest: DigestPrefix([0; 8]),
            sequence,
        },
    )
    .unwrap();
    c.staging_capacity = 4 << 20;
    c
}

/// A device client that claims to be `id` and seals with `ctx` (if any), woken at time 0.
pub fn client(
    data: &Data,
    id: &str,
    class: &str,
    ctx: Option<&SecurityContext>,
) -> CoapClient<Ed25519Verifier> {
    // Each client a wake of its own: new message ids and OSCORE sequence numbers, as a device
    // that persisted its reservation would use.
    let base = fresh_sequence();
    let mut c: CoapClient<_> = CoapClient::new(config(id, class, 0), data.verifier(), base as u32);
    if let Some(ctx) = ctx {
        c = c.secure(ctx.clone());
        c.restore_sequence(base);
        c.sequence_reserved(base + 1000);
    }
    c.device_mut().wake(Instant(0), WakeBudget::default());
    c
}

/// A block of 1000 OSCORE sequence numbers (and message ids) no other request of this test
/// process uses; its first.
pub fn fresh_sequence() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1000, std::sync::atomic::Ordering::Relaxed)
}

/// Sends `datagram` and returns the response, sending it again (as a CoAP retransmission)
/// if none came within the socket's timeout; panics after three tries.
pub fn exchange(socket: &UdpSocket, datagram: &[u8]) -> Vec<u8> {
    let mut buf = [0u8; 2048];
    for _ in 0..3 {
        socket.send(datagram).unwrap();
        if let Ok(n) = socket.recv(&mut buf) {
            return buf[..n].to_vec();
        }
    }
    panic!("no response after three tries");
}

/// The code of a CoAP response, as `C.DD`.
pub fn code(response: &[u8]) -> String {
    format!("{}.{:02}", response[1] >> 5, response[1] & 31)
}

/// The first request `c` sends (its check-in), sent to the server; the response.
pub fn check_in(c: &mut CoapClient<Ed25519Verifier>, socket: &UdpSocket) -> Vec<u8> {
    let mut tx = [0u8; 512];
    let n = c.poll_transmit(Instant(0), &mut tx).unwrap();
    exchange(socket, &tx[..n])
}

/// Size of a directory's files, bytes.
pub fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
        .sum()
}

/// A plain (unprotected) CoAP POST to `/ota/{seg}` with `payload`, message id `mid`.
pub fn plain_post(seg: &[u8], payload: &[u8], mid: u16) -> Vec<u8> {
    use coap_message::MinimalWritableMessage as _;
    use ota_transport_coap::resources::{code, opt, ROOT};
    use ota_transport_coap::udp::{build, MsgType};
    let mut buf = vec![0u8; 2048];
    let n = build(&mut buf, MsgType::Con, mid, &mid.to_be_bytes(), |m| {
        m.set_code(code::POST);
        m.add_option(opt::URI_PATH, ROOT)?;
        m.add_option(opt::URI_PATH, seg)?;
        if !payload.is_empty() {
            m.set_payload(payload)?;
        }
        Ok(())
    })
    .unwrap();
    buf.truncate(n);
    buf
}

/// A check-in from `id` for `class`, running `running`, with the outcome it reports and where
/// it would resume (a device of window 4 and 1 KiB chunks, no budget).
pub fn checkin<'a>(
    id: &'a [u8],
    class: &str,
    running: RunningFirmware,
    last: LastOutcome,
    resume: Option<ResumeHint>,
) -> CheckIn<'a> {
    CheckIn {
        device_id: id,
        vendor: ota_server::VENDOR,
        class: ota_server::class_id(class),
        running,
        last,
        resume,
        caps: Capabilities {
            max_chunk: 1024,
            window: 4,
        },
        budget: None,
    }
}

/// An encoded check-in claiming `id` (any bytes, the rule unchecked) for `class`.
pub fn raw_checkin(id: &[u8], class: &str) -> Vec<u8> {
    let c = checkin(
        id,
        class,
        RunningFirmware::default(),
        LastOutcome::None,
        None,
    );
    encode_vec(&Message::CheckIn(c))
}
