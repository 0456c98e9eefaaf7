//! The HTTP side against the real router (`ota_server::http::router`) on a loopback TCP port,
//! over a real SQLite store in a temporary directory, spoken to by a small HTTP/1.1 client:
//! tokens, releases, rollouts, devices and `/metrics`. Devices are driven through the fleet's
//! own [`Application`] (the code every transport calls), and one through real CoAP with OSCORE,
//! so the counters and the latency histogram at `/metrics` have something to count.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use ota_core::host::{Application, Decision, OwnedManifest, Peer};
use ota_core::manifest::{Manifest, MANIFEST_FORMAT};
use ota_core::wire::{
    CheckIn, Digest, DigestPrefix, ImageId, LastOutcome, Phase, Report, ResultCode, ResumeHint,
    RunningFirmware, Version, WakeBudget,
};
use ota_server::fleet::Fleet;
use ota_server::http::{router, State};
use ota_server::store::Store;
use ota_transport_coap::server::{self as coap, DeviceKeys, Engine, Security, ServerConfig};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// ----- an HTTP/1.1 client, just enough for these tests -----

/// A response: status, headers (names lower-cased), body.
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8(self.body.clone()).unwrap()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// The `error` of an error answer.
    fn error(&self) -> String {
        self.json()["error"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

/// One request on a connection of its own.
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw))
        .await
        .expect("no answer within 10 s")
        .unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("no end of headers");
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"))
    {
        body = unchunk(&body);
    }
    Resp {
        status,
        headers,
        body,
    }
}

/// A chunked body, decoded.
fn unchunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n").unwrap();
        let size_text = std::str::from_utf8(&b[..eol]).unwrap();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[eol + 2 + size + 2..];
    }
}

// ----- a server over a store in a temporary directory -----

/// A directory removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The router on a loopback port over a fresh SQLite store.
struct Api {
    addr: SocketAddr,
    token: String,
    fleet: Arc<Fleet>,
    key: SigningKey,
    coap: Option<SocketAddr>,
    _dir: TempDir,
}

/// How to start one.
#[derive(Default)]
struct Options {
    /// No signing key: uploads must come signed.
    no_signing_key: bool,
    /// CoAP served too (with OSCORE), its counters at `/metrics`.
    coap: bool,
}

impl Api {
    async fn start(name: &str, opts: Options) -> Self {
        let dir = std::env::temp_dir().join(format!("ota-api-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let store = Store::open(&dir).await.unwrap();
        let token = store.create_token("test").await.unwrap();
        let fleet = Arc::new(Fleet::new(store, 60, 8 << 20).await.unwrap());
        let key = SigningKey::from_bytes(&[7; 32]);
        let (coap, coap_stats) = if opts.coap {
            let keys: Arc<dyn DeviceKeys> = fleet.clone();
            let engine = Arc::new(Engine::new(ServerConfig::default(), Security::Oscore(keys)));
            let stats = engine.stats();
            let sockets = coap::bind("127.0.0.1:0".parse().unwrap(), 1, 1 << 20).unwrap();
            let local = sockets[0].local_addr().unwrap();
            tokio::spawn(coap::serve_app_on(sockets, engine, fleet.clone()));
            (Some(local), Some(stats))
        } else {
            (None, None)
        };
        let state = State {
            fleet: fleet.clone(),
            coap: coap_stats,
            signing_key: (!opts.no_signing_key).then(|| key.clone()),
            public_key: Some(key.verifying_key().to_bytes()),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router(state)).await });
        Self {
            addr,
            token,
            fleet,
            key,
            coap,
            _dir: TempDir(dir),
        }
    }

    fn auth(&self) -> String {
        format!("Bearer {}", self.token)
    }

    async fn get(&self, path: &str) -> Resp {
        http(
            self.addr,
            "GET",
            path,
            &[("Authorization", &self.auth())],
            b"",
        )
        .await
    }

    async fn post(&self, path: &str, body: &[u8]) -> Resp {
        http(
            self.addr,
            "POST",
            path,
            &[
                ("Authorization", &self.auth()),
                ("Content-Type", "application/octet-stream"),
            ],
            body,
        )
        .await
    }

    async fn post_json(&self, path: &str, body: &Value) -> Resp {
        http(
            self.addr,
            "POST",
            path,
            &[
                ("Authorization", &self.auth()),
                ("Content-Type", "application/json"),
            ],
            body.to_string().as_bytes(),
        )
        .await
    }

    /// A GET that must answer 200 with JSON.
    async fn get_json(&self, path: &str) -> Value {
        let r = self.get(path).await;
        assert_eq!(r.status, 200, "GET {path}: {}", r.text());
        r.json()
    }

    /// Uploads `image` as `version` of `class` (signed by the server); the release's JSON.
    async fn release(&self, class: &str, version: &str, image: &[u8]) -> Value {
        let r = self
            .post(
                &format!("/api/v1/releases?class={class}&version={version}"),
                image,
            )
            .await;
        assert_eq!(r.status, 201, "upload {class} {version}: {}", r.text());
        r.json()
    }

    /// Creates a rollout; its JSON.
    async fn rollout(&self, body: Value) -> Value {
        let r = self.post_json("/api/v1/rollouts", &body).await;
        assert_eq!(r.status, 201, "rollout {body}: {}", r.text());
        r.json()
    }

    /// A manifest for `image` signed with `key`.
    fn manifest(
        &self,
        class: &str,
        version: Version,
        sequence: u32,
        image: &[u8],
        key: &SigningKey,
    ) -> OwnedManifest {
        let m = Manifest {
            format: MANIFEST_FORMAT,
            vendor: ota_server::VENDOR,
            class: ota_server::class_id(class),
            sequence,
            version,
            image_size: image.len() as u32,
            digest: Digest(Sha256::digest(image).into()),
            chunk_size: 512,
            min_running: None,
            patch: None,
        };
        OwnedManifest::sign(&m, key)
    }
}

/// Some bytes that look like nothing in particular.
fn image(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_be_bytes()[0] ^ seed)
        .collect()
}

// ----- devices, through the fleet's own Application -----

fn checkin<'a>(
    id: &'a str,
    class: &str,
    running: Version,
    sequence: u32,
    last: LastOutcome,
    resume: Option<ResumeHint>,
) -> CheckIn<'a> {
    let running = RunningFirmware {
        version: running,
        digest: DigestPrefix([0; 8]),
        sequence,
    };
    common::checkin(id.as_bytes(), class, running, last, resume)
}

async fn check_in(fleet: &Fleet, c: &CheckIn<'_>) -> Decision {
    let id = std::str::from_utf8(c.device_id).unwrap();
    fleet.check_in(Peer::Device(id), c).await
}

/// Fetches bytes `0..upto` of `image` as `device` would, 1 KiB at a time.
async fn fetch(fleet: &Fleet, device: &str, image: ImageId, upto: u32) {
    let mut off = 0;
    while off < upto {
        let len = 1024.min(upto - off);
        fleet
            .image(Peer::Device(device), image, off, len)
            .await
            .unwrap();
        off += len;
    }
}

fn offered(d: &Decision) -> (ImageId, OwnedManifest) {
    match d {
        Decision::Offer {
            image, manifest, ..
        } => (*image, manifest.clone()),
        other => panic!("expected an offer, got {other:?}"),
    }
}

const V100: Version = Version::new(1, 0, 0);
const V110: Version = Version::new(1, 1, 0);
const V200: Version = Version::new(2, 0, 0);
const SENSOR_IMAGE: usize = 5000;
const MID_BYTES: u32 = 2048;

/// A fleet in every state the API shows: `sensor` 1.1.0 rolled out to all with
/// `s-ok` confirmed, `s-bad` rolled back (health check failed), `s-mid` half-way;
/// `meter` 2.0.0 released, not rolled out, `m-1` running it.
/// Check-ins: 7, offers: 4, image bytes: 2 × 5000 + 2048.
async fn populate(api: &Api) {
    api.release("sensor", "1.1.0", &image(SENSOR_IMAGE, 1))
        .await;
    api.release("meter", "2.0.0", &image(3000, 2)).await;
    api.rollout(json!({"class": "sensor", "version": "1.1.0"}))
        .await;
    let f = &*api.fleet;

    // s-ok: offered, fetches everything, stages, confirms.
    let (img, _) = offered(
        &check_in(
            f,
            &checkin("s-ok", "sensor", V100, 0, LastOutcome::None, None),
        )
        .await,
    );
    fetch(f, "s-ok", img, SENSOR_IMAGE as u32).await;
    f.report(
        Peer::Device("s-ok"),
        &Report {
            device_id: b"s-ok",
            image: img,
            phase: Phase::Staged,
            result: ResultCode::INITIAL,
        },
    )
    .await;
    let d = check_in(
        f,
        &checkin(
            "s-ok",
            "sensor",
            V110,
            1,
            LastOutcome::Confirmed { sequence: 1 },
            None,
        ),
    )
    .await;
    assert!(matches!(d, Decision::UpToDate { .. }), "{d:?}");

    // s-bad: fetches everything, fails its health check, rolls back.
    let (img, _) = offered(
        &check_in(
            f,
            &checkin("s-bad", "sensor", V100, 0, LastOutcome::None, None),
        )
        .await,
    );
    fetch(f, "s-bad", img, SENSOR_IMAGE as u32).await;
    let rolled_back = LastOutcome::RolledBack {
        sequence: 1,
        reason: ResultCode::HEALTH_CHECK_FAILED,
    };
    let d = check_in(f, &checkin("s-bad", "sensor", V100, 0, rolled_back, None)).await;
    assert!(
        matches!(d, Decision::UpToDate { .. }),
        "not offered again after a rollback: {d:?}"
    );

    // s-mid: fetches 2 KiB, checks in again to resume.
    let (img, manifest) = offered(
        &check_in(
            f,
            &checkin("s-mid", "sensor", V100, 0, LastOutcome::None, None),
        )
        .await,
    );
    fetch(f, "s-mid", img, MID_BYTES).await;
    let resume = ResumeHint {
        manifest: manifest.digest().prefix(),
        next_offset: MID_BYTES,
    };
    offered(
        &check_in(
            f,
            &checkin("s-mid", "sensor", V100, 0, LastOutcome::None, Some(resume)),
        )
        .await,
    );

    // m-1: runs meter 2.0.0; no rollout for meter.
    let d = check_in(
        f,
        &checkin("m-1", "meter", V200, 1, LastOutcome::None, None),
    )
    .await;
    assert!(matches!(d, Decision::UpToDate { .. }), "{d:?}");

    f.flush().await.unwrap();
}

fn ids(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_string())
        .collect()
}

// ----- tests -----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_a_valid_token_are_refused_and_change_nothing() {
    let api = Api::start("auth", Options::default()).await;
    api.release("sensor", "1.1.0", &image(2000, 1)).await;
    api.rollout(
        json!({"class": "sensor", "version": "1.1.0", "steps": [10, 100], "soak_secs": 3600}),
    )
    .await;
    let before = (
        api.get_json("/api/v1/releases").await,
        api.get_json("/api/v1/rollouts").await,
    );

    let signed = api.manifest("sensor", Version::new(1, 2, 0), 2, b"image", &api.key);
    let signed = json!({
        "class": "sensor",
        "manifest": hex::encode(signed.body()),
        "signature": hex::encode(signed.signature().0),
        "image": hex::encode(b"image"),
    })
    .to_string();
    let rollout = json!({"class": "sensor", "version": "1.1.0"}).to_string();
    let requests: &[(&str, &str, &[u8])] = &[
        ("GET", "/", b""),
        ("GET", "/metrics", b""),
        ("GET", "/api/v1/fleet", b""),
        ("GET", "/api/v1/releases", b""),
        (
            "POST",
            "/api/v1/releases?class=sensor&version=1.2.0",
            b"an image",
        ),
        ("POST", "/api/v1/releases/signed", signed.as_bytes()),
        ("POST", "/api/v1/releases/1/resume", b""),
        ("GET", "/api/v1/rollouts", b""),
        ("POST", "/api/v1/rollouts", rollout.as_bytes()),
        ("POST", "/api/v1/rollouts/sensor/ramp", b""),
        ("POST", "/api/v1/rollouts/sensor/pause", b""),
        ("POST", "/api/v1/rollouts/sensor/cancel", b""),
        ("GET", "/api/v1/devices", b""),
        ("GET", "/api/v1/devices/s-1", b""),
    ];
    let wrong_bearer =
        "Bearer ota_0000000000000000000000000000000000000000000000000000000000000000";
    let wrong_cookie = "ota_token=ota_00";
    let near_miss = format!("Bearer {}x", api.token);
    let not_bearer = format!("Basic {}", api.token);
    let credentials: &[(&str, Option<(&str, &str)>)] = &[
        ("no token", None),
        (
            "a wrong bearer token",
            Some(("Authorization", wrong_bearer)),
        ),
        (
            "the token with a byte more",
            Some(("Authorization", &near_miss)),
        ),
        (
            "the token, not as a bearer",
            Some(("Authorization", &not_bearer)),
        ),
        ("a wrong cookie", Some(("Cookie", wrong_cookie))),
    ];
    for (method, path, body) in requests {
        for (what, header) in credentials {
            let mut h = vec![("Content-Type", "application/json")];
            h.extend(*header);
            let r = http(api.addr, method, path, &h, body).await;
            assert_eq!(r.status, 401, "{method} {path} with {what}: {}", r.text());
            assert_eq!(
                r.header("www-authenticate"),
                Some("Bearer"),
                "{method} {path}"
            );
            assert!(r.error().contains("token"), "{method} {path}: {}", r.text());
        }
        // A wrong token in the query does not become a cookie.
        let sep = if path.contains('?') { '&' } else { '?' };
        let r = http(
            api.addr,
            method,
            &format!("{path}{sep}token=wrong"),
            &[],
            body,
        )
        .await;
        assert_eq!(r.status, 401, "{method} {path}?token=wrong");
        assert!(r.header("set-cookie").is_none());
    }
    let after = (
        api.get_json("/api/v1/releases").await,
        api.get_json("/api/v1/rollouts").await,
    );
    assert_eq!(before, after, "a refused request changed something");
    assert_eq!(after.0.as_array().unwrap().len(), 1);
    assert_eq!(after.1[0]["state"], "running");
    assert_eq!(after.1[0]["step"], 0);

    // The right token, each way it may come.
    assert_eq!(
        http(api.addr, "GET", "/healthz", &[], b"").await.status,
        200
    );
    assert_eq!(api.get("/api/v1/fleet").await.status, 200);
    let r = http(api.addr, "GET", &format!("/?token={}", api.token), &[], b"").await;
    assert_eq!(r.status, 303, "{}", r.text());
    assert_eq!(
        r.header("location"),
        Some("/"),
        "the token stays out of the address bar"
    );
    let cookie = r.header("set-cookie").unwrap().to_string();
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    let cookie = cookie.split(';').next().unwrap();
    let r = http(api.addr, "GET", "/", &[("Cookie", cookie)], b"").await;
    assert_eq!(r.status, 200);
    assert!(r.text().contains("<h1>ota fleet</h1>"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn releases_are_signed_by_the_server_or_come_signed() {
    let api = Api::start("releases", Options::default()).await;
    let img = image(3000, 3);

    // Signed by the server.
    let r = api.release("sensor", "1.1.0", &img).await;
    assert_eq!(r["class"], "sensor");
    assert_eq!(r["version"], "1.1.0");
    assert_eq!(r["sequence"], 1);
    assert_eq!(r["size"], 3000);
    assert_eq!(r["chunk_size"], 1024);
    assert_eq!(r["sha256"], hex::encode(Sha256::digest(&img)));
    assert!(r["halted"].is_null());
    let stored = api
        .fleet
        .store()
        .release("sensor", V110)
        .await
        .unwrap()
        .unwrap();
    let sig = ed25519_dalek::Signature::from_bytes(&stored.manifest.signature().0);
    api.key
        .verifying_key()
        .verify_strict(stored.manifest.body(), &sig)
        .expect("the manifest is signed with the server's key");
    assert_eq!(
        stored.manifest.manifest().digest.0[..],
        Sha256::digest(&img)[..]
    );

    // Refused uploads, each with its reason.
    for (query, body, reason) in [
        (
            "class=sensor&version=1.1.0",
            &img[..],
            "not greater than the current release 1.1.0",
        ),
        ("class=sensor&version=1.0.9", &img[..], "not greater"),
        ("class=sensor&version=1.2", &img[..], "is not X.Y.Z"),
        ("class=sensor&version=1.2.0", &[][..], "image is empty"),
        (
            "class=sensor&version=1.2.0&chunk_size=1000",
            &img[..],
            "must be a power of two",
        ),
        ("class=&version=1.2.0", &img[..], "class name is empty"),
    ] {
        let r = api.post(&format!("/api/v1/releases?{query}"), body).await;
        assert_eq!(r.status, 400, "{query}: {}", r.text());
        assert!(r.error().contains(reason), "{query}: {}", r.error());
    }
    let r = api.post("/api/v1/releases?version=1.2.0", &img).await;
    assert_eq!(r.status, 400, "no class: {}", r.text());

    // Signed elsewhere (with the key the server checks against).
    let img2 = image(1500, 4);
    let good = api.manifest("sensor", Version::new(1, 2, 0), 2, &img2, &api.key);
    let upload = |m: &OwnedManifest, image: &[u8], class: &str| {
        json!({
            "class": class,
            "manifest": hex::encode(m.body()),
            "signature": hex::encode(m.signature().0),
            "image": hex::encode(image),
        })
    };
    let other_key = SigningKey::from_bytes(&[9; 32]);
    let foreign = api.manifest("sensor", Version::new(1, 2, 0), 2, &img2, &other_key);
    let old = api.manifest("sensor", Version::new(1, 0, 5), 2, &img2, &api.key);
    let mut garbled = upload(&good, &img2, "sensor");
    garbled["manifest"] = json!(hex::encode(&good.body()[..10]));
    let mut short_sig = upload(&good, &img2, "sensor");
    short_sig["signature"] = json!("abcd");
    let mut not_hex = upload(&good, &img2, "sensor");
    not_hex["image"] = json!("zz");
    for (what, body, reason) in [
        (
            "signed by another key",
            upload(&foreign, &img2, "sensor"),
            "does not verify with the server's public key",
        ),
        (
            "another image",
            upload(&good, &img, "sensor"),
            "the image does not match the manifest",
        ),
        (
            "another class",
            upload(&good, &img2, "meter"),
            "another vendor or class",
        ),
        (
            "an older version",
            upload(&old, &img2, "sensor"),
            "is not above the current release 1.1.0",
        ),
        ("a truncated manifest", garbled, ""),
        ("a short signature", short_sig, "not 64 bytes"),
        ("an image not in hex", not_hex, "Invalid character"),
    ] {
        let r = api.post_json("/api/v1/releases/signed", &body).await;
        assert_eq!(r.status, 400, "{what}: {}", r.text());
        assert!(!r.error().is_empty(), "{what}: no reason given");
        assert!(r.error().contains(reason), "{what}: {}", r.error());
    }
    let r = api
        .post_json("/api/v1/releases/signed", &upload(&good, &img2, "sensor"))
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let r = r.json();
    assert_eq!(
        (r["version"].as_str(), r["sequence"].as_u64()),
        (Some("1.2.0"), Some(2))
    );
    assert_eq!(r["chunk_size"], 512);

    // Only the two good ones are there; nothing half-written.
    let list = api.get_json("/api/v1/releases").await;
    let versions: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["version"].as_str().unwrap(),
                r["sequence"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(versions, [("1.2.0", 2), ("1.1.0", 1)], "newest first");

    // A server without a signing key takes signed manifests only.
    let keyless = Api::start(
        "releases-keyless",
        Options {
            no_signing_key: true,
            ..Options::default()
        },
    )
    .await;
    let r = keyless
        .post("/api/v1/releases?class=sensor&version=1.1.0", &img)
        .await;
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.error().contains("no signing key"), "{}", r.error());
    let m = keyless.manifest("sensor", V110, 1, &img, &keyless.key);
    let r = keyless
        .post_json("/api/v1/releases/signed", &upload(&m, &img, "sensor"))
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollouts_ramp_pause_resume_and_cancel() {
    let api = Api::start("rollouts", Options::default()).await;
    let img = image(2000, 5);
    api.release("sensor", "1.1.0", &img).await;

    for (body, reason) in [
        (json!({"class": "sensor", "version": "9.9.9"}), "no release"),
        (json!({"class": "nosuch", "version": "1.1.0"}), ""),
        (json!({"class": "sensor", "version": "1.1"}), "is not X.Y.Z"),
        (
            json!({"class": "sensor", "version": "1.1.0", "window": "25:00-26:00"}),
            "",
        ),
        (
            json!({"class": "sensor", "version": "1.1.0", "steps": [50, 10]}),
            "",
        ),
    ] {
        let r = api.post_json("/api/v1/rollouts", &body).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert!(
            !r.error().is_empty() && r.error().contains(reason),
            "{body}: {}",
            r.error()
        );
    }
    assert_eq!(api.get_json("/api/v1/rollouts").await, json!([]));

    let r = api
        .rollout(json!({
            "class": "sensor", "version": "1.1.0", "steps": [10, 50, 100],
            "soak_secs": 3600, "max_failure_percent": 20, "min_outcomes": 5,
            "window": "01:00-05:00",
        }))
        .await;
    assert_eq!(r["state"], "running");
    assert_eq!(
        (r["step"].as_u64(), r["percent"].as_u64()),
        (Some(0), Some(10))
    );
    assert_eq!(r["steps"], json!([10, 50, 100]));
    assert_eq!(r["soak_secs"], 3600);
    assert_eq!(r["max_failure_percent"], 20);
    assert_eq!(r["min_outcomes"], 5);
    assert_eq!(r["window"], "01:00-05:00");
    assert_eq!(r["release"]["version"], "1.1.0");

    /// `(state, step, percent, reason)` of the answer, after checking `GET /rollouts` agrees.
    async fn change(api: &Api, action: &str) -> (String, u64, u64, String) {
        let r = api
            .post(&format!("/api/v1/rollouts/sensor/{action}"), b"")
            .await;
        assert_eq!(r.status, 200, "{action}: {}", r.text());
        let r = r.json();
        assert_eq!(api.get_json("/api/v1/rollouts").await[0], r, "{action}");
        (
            r["state"].as_str().unwrap().into(),
            r["step"].as_u64().unwrap(),
            r["percent"].as_u64().unwrap(),
            r["reason"].as_str().unwrap().into(),
        )
    }
    let s = |state: &str, step, percent, reason: &str| {
        (state.to_string(), step, percent, reason.to_string())
    };
    assert_eq!(
        change(&api, "ramp").await,
        s("running", 1, 50, "ramped by hand")
    );
    assert_eq!(
        change(&api, "pause").await,
        s("paused", 1, 50, "paused by hand")
    );
    let r = api.post("/api/v1/rollouts/sensor/pause", b"").await;
    assert_eq!(r.status, 409, "paused twice: {}", r.text());
    assert!(
        r.error().contains("cannot pause a rollout that is paused"),
        "{}",
        r.error()
    );
    assert_eq!(change(&api, "resume").await, s("running", 1, 50, ""));
    assert_eq!(
        change(&api, "ramp").await,
        s("complete", 2, 100, "ramped by hand")
    );
    let r = api.post("/api/v1/rollouts/sensor/ramp", b"").await;
    assert_eq!(r.status, 409, "ramped past the end: {}", r.text());
    assert!(r.error().contains("at its last step"), "{}", r.error());
    assert_eq!(
        change(&api, "pause").await,
        s("paused", 2, 100, "paused by hand")
    );
    assert_eq!(change(&api, "resume").await, s("complete", 2, 100, ""));

    // What a paused rollout does to a device that has not started: it waits.
    api.post("/api/v1/rollouts/sensor/pause", b"").await;
    let first = checkin("s-1", "sensor", V100, 0, LastOutcome::None, None);
    let d = check_in(&api.fleet, &first).await;
    assert!(
        matches!(d, Decision::Defer { .. }),
        "offered while paused: {d:?}"
    );
    api.fleet.flush().await.unwrap();
    let dev = api.get_json("/api/v1/devices/s-1").await;
    assert_eq!(dev["device"]["phase"], "held: rollout paused");

    assert_eq!(
        change(&api, "cancel").await,
        s("cancelled", 2, 100, "cancelled by hand")
    );
    for action in ["resume", "pause", "ramp", "cancel"] {
        let r = api
            .post(&format!("/api/v1/rollouts/sensor/{action}"), b"")
            .await;
        assert_eq!(r.status, 409, "{action} after cancel: {}", r.text());
        assert!(r.error().contains("cancelled"), "{}", r.error());
    }
    let r = api.post("/api/v1/rollouts/sensor/explode", b"").await;
    assert_eq!(r.status, 404, "{}", r.text());
    let r = api.post("/api/v1/rollouts/nosuch/pause", b"").await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(
        r.error().contains("no rollout for class nosuch"),
        "{}",
        r.error()
    );
    assert_eq!(
        api.get_json("/api/v1/rollouts").await[0]["state"],
        "cancelled"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_are_listed_filtered_and_each_has_a_history() {
    let api = Api::start("devices", Options::default()).await;
    populate(&api).await;

    let all = api.get_json("/api/v1/devices").await;
    assert_eq!(ids(&all), ["m-1", "s-bad", "s-mid", "s-ok"]);
    let by_id: BTreeMap<String, Value> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["id"].as_str().unwrap().to_string(), d.clone()))
        .collect();
    let ok = &by_id["s-ok"];
    assert_eq!(
        (
            ok["class"].as_str(),
            ok["running"].as_str(),
            ok["phase"].as_str(),
            ok["result"].as_str()
        ),
        (
            Some("sensor"),
            Some("1.1.0"),
            Some("up to date"),
            Some("confirmed")
        )
    );
    let bad = &by_id["s-bad"];
    assert_eq!(
        (
            bad["running"].as_str(),
            bad["phase"].as_str(),
            bad["result"].as_str(),
            bad["reason"].as_str()
        ),
        (
            Some("1.0.0"),
            Some("rolled back"),
            Some("rolled back"),
            Some("health check failed")
        )
    );
    let mid = &by_id["s-mid"];
    assert_eq!(mid["phase"], "downloading");
    assert_eq!(
        (mid["staged"].as_u64(), mid["size"].as_u64()),
        (Some(MID_BYTES.into()), Some(SENSOR_IMAGE as u64))
    );
    assert_eq!(by_id["m-1"]["class"], "meter");
    assert_eq!(by_id["m-1"]["check_in_secs"], 60);
    assert!(by_id["m-1"]["last_seen"].as_i64().unwrap() > 1_700_000_000);

    for (query, expected) in [
        ("class=meter", &["m-1"][..]),
        ("class=sensor", &["s-bad", "s-mid", "s-ok"]),
        ("version=1.1.0", &["s-ok"]),
        ("version=1.0.0", &["s-bad", "s-mid"]),
        ("version=2.0.0", &["m-1"]),
        ("state=downloading", &["s-mid"]),
        ("state=rolled%20back", &["s-bad"]),
        ("state=up%20to%20date", &["m-1", "s-ok"]),
        ("class=sensor&version=1.0.0&state=downloading", &["s-mid"]),
        ("class=meter&version=1.1.0", &[]),
        ("class=nosuch", &[]),
        ("limit=2", &["m-1", "s-bad"]),
    ] {
        let list = api.get_json(&format!("/api/v1/devices?{query}")).await;
        assert_eq!(ids(&list), expected, "{query}");
    }
    let r = api.get("/api/v1/devices?limit=lots").await;
    assert_eq!(r.status, 400, "a limit that is not a number: {}", r.text());

    // One device: its row, its history, what it fetched.
    let d = api.get_json("/api/v1/devices/s-bad").await;
    assert_eq!(d["device"], by_id["s-bad"]);
    let history: Vec<(String, String)> = d["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap().into(),
                e["detail"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        history,
        [
            ("offered".to_string(), "1.1.0 (5000 bytes)".to_string()),
            (
                "rolled back".into(),
                "sequence 1: health check failed".into()
            ),
        ]
    );
    let t = &d["transfers"];
    assert_eq!(t.as_array().unwrap().len(), 1, "{t}");
    assert_eq!(t[0]["bytes"], SENSOR_IMAGE);
    assert_eq!(t[0]["outcome"], "rollback");
    let d = api.get_json("/api/v1/devices/s-ok").await;
    let kinds: Vec<&str> = d["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["offered", "staged", "confirmed", "up to date"]);
    assert_eq!(d["transfers"][0]["outcome"], "success");
    let d = api.get_json("/api/v1/devices/s-mid").await;
    assert_eq!(d["transfers"][0]["bytes"], MID_BYTES);
    assert!(d["transfers"][0]["outcome"].is_null());
    let r = api.get("/api/v1/devices/nosuch").await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(r.error().contains("no device nosuch"), "{}", r.error());

    // The fleet at a glance agrees.
    let f = api.get_json("/api/v1/fleet").await;
    assert_eq!(f["devices"], 4);
    assert_eq!(f["failures"][0]["reason"], "health check failed");
    assert_eq!(f["failures"][0]["examples"], json!(["s-bad"]));
    assert_eq!(f["rollouts"][0]["updated"], 1);
}

/// The samples of a Prometheus text exposition, by name with labels; panics on a line that is
/// not a comment, a blank or `name{labels} value`.
fn samples(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let mut typed = std::collections::HashSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            assert!(typed.insert(name.to_string()), "{name} typed twice");
            continue;
        }
        if line.starts_with("# HELP ") || line.is_empty() {
            continue;
        }
        let (key, value) = line.rsplit_once(' ').unwrap();
        let name = key.split('{').next().unwrap();
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line:?}"
        );
        if let Some(labels) = key.strip_prefix(name) {
            assert!(
                labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')),
                "bad labels in {line:?}"
            );
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| typed.contains(*f)))
            .unwrap_or(name);
        assert!(typed.contains(family), "{name} has no # TYPE before it");
        let v: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        assert!(out.insert(key.to_string(), v).is_none(), "{key} twice");
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_check_ins_offers_bytes_results_and_latency() {
    let api = Api::start(
        "metrics",
        Options {
            coap: true,
            ..Options::default()
        },
    )
    .await;

    // Before anything happened: every counter there, at zero.
    let r = api.get("/metrics").await;
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let m = samples(&r.text());
    for name in [
        "ota_checkins_total",
        "ota_offers_total",
        "ota_image_bytes_sent_total",
        "ota_request_duration_seconds_count",
    ] {
        assert_eq!(m.get(name), Some(&0.0), "{name}");
    }

    populate(&api).await;

    // One device over real CoAP with OSCORE: one check-in through the transport.
    let cred = api.fleet.store().add_device("c-1", "meter").await.unwrap();
    let ctx =
        ota_oscore::SecurityContext::derive(&cred.secret, &cred.salt, &cred.kid, &[]).unwrap();
    let verifier =
        ota_core::manifest::Ed25519Verifier::from_bytes(&api.key.verifying_key().to_bytes())
            .unwrap();
    let mut client: ota_transport_coap::CoapClient<_> =
        ota_transport_coap::CoapClient::new(common::config("c-1", "meter", 0), verifier, 1);
    client = client.secure(ctx);
    client.restore_sequence(1);
    client.sequence_reserved(1000);
    client
        .device_mut()
        .wake(ota_core::Instant(0), WakeBudget::default());
    let mut tx = [0u8; 512];
    let n = client.poll_transmit(ota_core::Instant(0), &mut tx).unwrap();
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    udp.connect(api.coap.unwrap()).await.unwrap();
    let mut rx = [0u8; 2048];
    let mut answer = None;
    for _ in 0..3 {
        udp.send(&tx[..n]).await.unwrap();
        if let Ok(Ok(len)) = tokio::time::timeout(Duration::from_secs(2), udp.recv(&mut rx)).await {
            answer = Some(rx[..len].to_vec());
            break;
        }
    }
    let answer = answer.expect("no CoAP answer");
    assert_eq!(
        common::code(&answer),
        "2.04",
        "the OSCORE outer code of an answered check-in"
    );
    api.fleet.flush().await.unwrap();
    assert_eq!(
        api.get_json("/api/v1/devices/c-1").await["device"]["phase"],
        "up to date",
        "the CoAP check-in reached the fleet"
    );

    let r = api.get("/metrics").await;
    let text = r.text();
    let m = samples(&text);
    let get = |k: &str| *m.get(k).unwrap_or_else(|| panic!("no {k} in\n{text}"));
    assert_eq!(
        get("ota_checkins_total"),
        8.0,
        "7 through the fleet, 1 over CoAP"
    );
    assert_eq!(get("ota_offers_total"), 4.0);
    assert_eq!(get("ota_deferrals_total"), 0.0);
    assert_eq!(get("ota_reports_total"), 1.0);
    assert_eq!(
        get("ota_image_bytes_sent_total"),
        (2 * SENSOR_IMAGE) as f64 + f64::from(MID_BYTES)
    );
    assert_eq!(
        get(r#"ota_results_total{result="confirmed",reason="success"}"#),
        1.0
    );
    assert_eq!(
        get(r#"ota_results_total{result="rolled back",reason="health check failed"}"#),
        1.0
    );
    assert_eq!(
        m.keys()
            .filter(|k| k.starts_with("ota_results_total"))
            .count(),
        2
    );
    assert!(text.contains("# TYPE ota_results_total counter"));
    assert!(get("ota_coap_datagrams_received_total") >= 1.0);
    assert!(get("ota_coap_datagrams_sent_total") >= 1.0);
    assert!(get("ota_coap_bytes_sent_total") > 0.0);

    // The latency histogram: cumulative buckets, +Inf equal to the count, a sum.
    assert!(text.contains("# TYPE ota_request_duration_seconds histogram"));
    let mut buckets: Vec<(f64, f64)> = m
        .iter()
        .filter_map(|(k, v)| {
            let le = k.strip_prefix("ota_request_duration_seconds_bucket{le=\"")?;
            let le = le.strip_suffix("\"}")?;
            Some((
                if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap()
                },
                *v,
            ))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert!(buckets.len() >= 5, "{buckets:?}");
    assert!(
        buckets.windows(2).all(|w| w[0].1 <= w[1].1),
        "not cumulative: {buckets:?}"
    );
    let count = get("ota_request_duration_seconds_count");
    assert!(count >= 1.0, "the CoAP check-in was not timed");
    assert_eq!(buckets.last().unwrap(), &(f64::INFINITY, count));
    let sum = get("ota_request_duration_seconds_sum");
    assert!(sum > 0.0 && sum < 10.0 * count, "sum {sum} of {count}");
}
