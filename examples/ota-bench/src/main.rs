//! `ota-bench`: one table of the project's headline figures, each measured in this run.
//!
//! The device side is the real CoAP client and state machine; the server side is the real CoAP
//! responder and handler; between them a simulated link (`ota_test_support::sim`) in simulated
//! time, so figures that depend on latency come out the same on any machine. The host throughput
//! figures are wall-clock measurements on this machine.
//!
//! | command | what it prints |
//! |---|---|
//! | `ota-bench` | the headline table (`.ci/run`) |
//! | `ota-bench loss` | the goodput and demo-link rows of issue 14 alone |
//! | `ota-bench bottleneck` | the shared-cell rows alone |
//! | `ota-bench load [--sqlite-only]` | the server under load (`OTA_PG_URL` for PostgreSQL; `OTA_LOAD_DEVICES`, `OTA_LOAD_CAP`) |
//! | `ota-bench summary` | the dashboard summary's cost at 20 000 and 200 000 devices, checked |
//! | `ota-bench serve-instance URL ADDR` | one capped server instance, started by `load` |
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use std::sync::Arc;
use std::time::Instant as Wall;

use ota_core::device::{Congestion, Event, SleepReason};
use ota_core::host::{Handler, MemImages, SingleRelease};
use ota_core::manifest::Ed25519Verifier;
use ota_core::wire::{
    self, Chunk, DigestPrefix, ImageId, Message, RunningFirmware, Version, WakeBudget,
};
use ota_core::{DeviceConfig, Instant};
use ota_test_support::fixture;
use ota_test_support::sim::{LinkProfile, Pipe, SimRng};
use ota_test_support::MemStorage;
use ota_transport_coap::server::{Responder, Security, ServerConfig};
use ota_transport_coap::CoapClient;
use sha2::{Digest as _, Sha256};

mod capped;
mod loss;
mod served;
mod summary;

/// The allocator `ota-server` runs with, so the serving path is measured as it is deployed.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

type Release = Arc<Handler<SingleRelease, MemImages>>;

fn release(image: &[u8], chunk: u16) -> (Release, [u8; 32]) {
    let release = fixture::Release::of(image, chunk);
    (Arc::new(release.handler(image)), release.public_key())
}

fn client(
    public: &[u8; 32],
    window: u8,
    congestion: Congestion,
    sequence: u32,
    capacity: u32,
    seed: u32,
) -> CoapClient<Ed25519Verifier> {
    let mut c = DeviceConfig::new(
        b"bench-01",
        1,
        2,
        RunningFirmware {
            version: Version::new(1, 0, 0),
            digest: DigestPrefix([0; 8]),
            sequence,
        },
    )
    .expect("a valid device id");
    c.window = window;
    c.congestion = congestion;
    c.staging_capacity = capacity;
    CoapClient::new(c, Ed25519Verifier::from_bytes(public).unwrap(), seed)
}

/// What one wake cost.
struct WakeCost {
    /// Why it ended; `None` if power failed (or the wake never ended).
    reason: Option<SleepReason>,
    /// Bytes the link carried, both directions, lost datagrams included.
    radio: u64,
    /// Bytes the downlink carried, lost datagrams included.
    down: u64,
    round_trips: u32,
    /// (simulated ms, chunk payload accepted so far this wake) after every datagram.
    progress: Vec<(u64, u64)>,
}

/// The requests still on their way when the device went to sleep reach the server, which
/// answers them: the link carries those replies though no one listens, so they count.
fn answer_after_sleep(
    responder: &mut Responder<SingleRelease, MemImages>,
    up: &mut Pipe,
    down: &mut Pipe,
    link: &LinkProfile,
    rng: &mut SimRng,
    peer: std::net::SocketAddr,
) {
    let mut out = [0u8; 1400];
    while let Some(t) = up.next_arrival() {
        for req in up.due(t) {
            if let Some(m) = responder.respond(t, peer, &req, &mut out) {
                down.send(t, &out[..m], link, rng);
            }
        }
    }
}

/// One CoAP wake over the simulated link. `reset_percent`: chance, before each storage
/// operation, that power fails there (the wake ends, with whatever storage holds).
#[allow(clippy::too_many_arguments)]
fn wake(
    c: &mut CoapClient<Ed25519Verifier>,
    responder: &mut Responder<SingleRelease, MemImages>,
    storage: &mut MemStorage,
    link: &LinkProfile,
    rng: &mut SimRng,
    now: &mut u64,
    budget: WakeBudget,
    reset_percent: u32,
) -> WakeCost {
    let (mut up, mut down) = (Pipe::default(), Pipe::default());
    let peer = "127.0.0.1:1".parse().unwrap();
    let (mut tx, mut out) = ([0u8; 512], [0u8; 1400]);
    c.device_mut().restore_from(storage).unwrap();
    c.device_mut().wake(Instant(*now), budget);
    let mut round_trips = 0;
    let mut progress = Vec::new();
    let cost = |reason, up: &Pipe, down: &Pipe, round_trips, progress| WakeCost {
        reason,
        radio: up.stats.bytes + down.stats.bytes,
        down: down.stats.bytes,
        round_trips,
        progress,
    };
    for _ in 0..1_000_000 {
        while let Some(n) = c.poll_transmit(Instant(*now), &mut tx) {
            up.send(*now, &tx[..n], link, rng);
        }
        c.device_mut().drive_storage(storage).unwrap();
        while let Some(e) = c.device_mut().poll_event() {
            if let Event::Sleep { reason, .. } = e {
                answer_after_sleep(responder, &mut up, &mut down, link, rng, peer);
                return cost(Some(reason), &up, &down, round_trips, progress);
            }
        }
        let Some(next) = [
            up.next_arrival(),
            down.next_arrival(),
            c.device().poll_timeout().map(|t| t.0),
        ]
        .into_iter()
        .flatten()
        .min() else {
            break;
        };
        *now = (*now).max(next);
        for req in up.due(*now) {
            if let Some(m) = responder.respond(*now, peer, &req, &mut out) {
                down.send(*now, &out[..m], link, rng);
            }
        }
        for resp in down.due(*now) {
            round_trips += 1;
            let _ = c.handle_datagram(Instant(*now), &mut resp.clone());
            progress.push((*now, c.device().stats().payload_bytes_accepted));
            while let Some(op) = c.device_mut().poll_storage() {
                if rng.chance(reset_percent) {
                    // Power failed: nothing but storage survives.
                    return cost(None, &up, &down, round_trips, progress);
                }
                ota_core::UpdateStorage::apply(storage, op).unwrap();
                c.device_mut().storage_done(Ok(()));
            }
        }
        c.device_mut().handle_timeout(Instant(*now));
    }
    cost(None, &up, &down, round_trips, progress)
}

/// How a whole download went.
struct Downloaded {
    /// Bytes the link carried, both directions, lost datagrams included.
    radio: u64,
    /// Bytes the downlink carried, lost datagrams included.
    down: u64,
    /// Simulated ms awake, all wakes (sleep between wakes not counted).
    awake_ms: u64,
    wakes: u32,
    resets: u32,
    /// Chunk payload accepted, all wakes.
    accepted: u64,
    /// Awake ms from the moment all but the last `tail` bytes were staged to the end, check-ins
    /// of the wakes after that moment left out.
    tail_ms: u64,
}

/// Downloads the whole image; `tail` bytes: see [`Downloaded::tail_ms`].
#[allow(clippy::too_many_arguments)]
fn download(
    image: &[u8],
    chunk: u16,
    window: u8,
    congestion: Congestion,
    link: &LinkProfile,
    budget: WakeBudget,
    reset_percent: u32,
    seed: u64,
) -> Downloaded {
    download_tail(
        image,
        chunk,
        window,
        congestion,
        link,
        budget,
        reset_percent,
        seed,
        0,
    )
}

#[allow(clippy::too_many_arguments)]
fn download_tail(
    image: &[u8],
    chunk: u16,
    window: u8,
    congestion: Congestion,
    link: &LinkProfile,
    budget: WakeBudget,
    reset_percent: u32,
    seed: u64,
    tail: u64,
) -> Downloaded {
    let (handler, public) = release(image, chunk);
    let mut responder = Responder::new(
        handler,
        ServerConfig::default(),
        Security::PlainForLab(None),
    );
    let mut storage = MemStorage::new(image.len() as u32 + 4096);
    let mut rng = SimRng::new(seed);
    let (mut now, mut radio, mut resets, mut accepted) = (0u64, 0u64, 0u32, 0u64);
    let (mut down, mut awake_ms, mut tail_ms, mut tail_started) = (0u64, 0u64, 0u64, false);
    let mut path = None;
    for w in 0..100_000u32 {
        let start = now;
        let mut c = client(&public, window, congestion, 1, image.len() as u32 + 4096, w);
        // Each wake's device starts from what the last one measured of the path.
        if let Some(m) = path {
            c.device_mut().remember_path(m);
        }
        let cost = wake(
            &mut c,
            &mut responder,
            &mut storage,
            link,
            &mut rng,
            &mut now,
            budget,
            reset_percent,
        );
        // When the staged bytes first reached `image − tail` (this wake's progress on top of
        // what earlier wakes left in storage).
        let before = accepted;
        if tail_started {
            // A whole wake in the tail: from its first chunk on (its check-in is the wake's
            // cost, not the tail's).
            if let Some(&(t, _)) = cost.progress.iter().find(|&&(_, a)| a > 0) {
                tail_ms += now.saturating_sub(t);
            }
        } else if let Some(&(t, _)) = cost
            .progress
            .iter()
            .find(|&&(_, a)| before + a + tail >= image.len() as u64)
        {
            tail_started = true;
            tail_ms += now.saturating_sub(t);
        }
        path = c.device().path_memory().or(path);
        accepted += c.device().stats().payload_bytes_accepted;
        radio += cost.radio;
        down += cost.down;
        awake_ms += now - start;
        match cost.reason {
            Some(SleepReason::Staged) => {
                assert_eq!(storage.staged(image.len()), image);
                return Downloaded {
                    radio,
                    down,
                    awake_ms,
                    wakes: w + 1,
                    resets,
                    accepted,
                    tail_ms,
                };
            }
            Some(_) => {}
            None => resets += 1,
        }
    }
    panic!("download never finished");
}

fn image(len: usize) -> Vec<u8> {
    let mut r = SimRng::new(3);
    (0..len).map(|_| r.next_u64() as u8).collect()
}

/// `ota-bench load`: the server under load (issue 16's table): 10 000 provisioned devices,
/// 64 and 256 closed-loop clients, SQLite, and PostgreSQL (`OTA_PG_URL`, which `.ci/run` sets
/// from its throwaway cluster) with one and two instances on one port, in this process and
/// then as processes held to a share of a core each ([`capped`]).
fn load_table(sqlite_only: bool) {
    let pg = if sqlite_only {
        String::new()
    } else {
        std::env::var("OTA_PG_URL")
            .expect("OTA_PG_URL: a PostgreSQL database to load (examples/pg-harness.sh starts one)")
    };
    let devices: usize = std::env::var("OTA_LOAD_DEVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let dir = std::env::temp_dir().join(format!("ota-bench-load-{}", std::process::id()));
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "{devices} devices, each check-in a sealed OSCORE request from one of them, closed loop over UDP on loopback ({cores} cores)"
    );
    println!(
        "{:<34} {:>8} {:>14} {:>9} {:>9} {:>11} {:>13} {:>10}",
        "store, instances",
        "clients",
        "check-ins/s",
        "p50 ms",
        "p99 ms",
        "unanswered",
        "kernel drops",
        "CPU busy"
    );
    let _ = std::fs::remove_dir_all(&dir);
    let sqlite = ota_server::store::Location::Dir(dir.clone());
    let postgres = ota_server::store::Location::Postgres(pg);
    let total = 4 * devices;
    let span = 4 * (total as u64 + 1001);
    let share: f64 = std::env::var("OTA_LOAD_CAP")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CAPPED_SHARE)
        // The kernel's smallest quota in a 10 ms period: 1 ms.
        .max(0.1);
    let cap_name1 = format!("PostgreSQL, 1, capped {share} core");
    let cap_name2 = format!("PostgreSQL, 2, capped {share} each");
    // One instance's rate per client count, for the two-instance row after it.
    let mut one_pg: [Option<f64>; 2] = [None; 2];
    let pg_runs = [
        ("PostgreSQL, 1", 1, None),
        ("PostgreSQL, 2", 2, None),
        (cap_name1.as_str(), 1, Some(share)),
        (cap_name2.as_str(), 2, Some(share)),
    ];
    let stores = [
        (&sqlite, "loadsqlite", &[("SQLite, 1", 1usize, None)][..]),
        (&postgres, "loadpg", &pg_runs[..]),
    ];
    for (location, class, runs) in stores.into_iter().take(if sqlite_only { 1 } else { 2 }) {
        let fleet = served::provision(location, class, devices);
        let mut first_seq = 0;
        for &(name, instances, cap) in runs {
            for (k, clients) in [64usize, 256].into_iter().enumerate() {
                // A capped instance is slow by design: half the check-ins make a long enough run.
                let n = if cap.is_some() { total / 2 } else { total };
                let s = match served::load(location, &fleet, instances, cap, clients, n, first_seq)
                {
                    Ok(s) => s,
                    Err(e) => {
                        println!("{name:<34} {clients:>8}  not measured: {e}");
                        one_pg[k] = None;
                        continue;
                    }
                };
                first_seq += span;
                let vs = match instances {
                    // In a closed loop every client waits for its answer, so the mean
                    // latency is clients / rate (Little's law) and p99 cannot be below it.
                    _ if name.starts_with("SQLite") => format!(
                        "  (goal: 20000/s, p99 10 ms at 256, no drop; mean = clients/rate = {:.1} ms)",
                        1e3 * clients as f64 / s.per_sec
                    ),
                    1 => {
                        one_pg[k] = Some(s.per_sec);
                        String::new()
                    }
                    _ => match one_pg[k] {
                        Some(one) => {
                            format!("  ({:.2}x one instance; goal 1.6x)", s.per_sec / one)
                        }
                        None => "  (one instance not measured)".to_string(),
                    },
                };
                let busy = s
                    .busy_cores
                    .map_or("-".to_string(), |b| format!("{b:.2}/{cores}"));
                println!(
                    "{name:<34} {clients:>8} {:>14.0} {:>9.2} {:>9.2} {:>11} {:>13} {busy:>10}{vs}",
                    s.per_sec, s.p50_ms, s.p99_ms, s.unanswered, s.kernel_drops
                );
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    if !sqlite_only {
        println!(
            "capped: each instance a process of its own held to {share} of a core (a cgroup CPU quota), standing in for\n\
             an instance per machine: uncapped, one instance, PostgreSQL and the clients leave too little CPU for a second"
        );
    }
}

/// The share of a core each capped instance gets (`OTA_LOAD_CAP` to change it): small
/// enough that two instances, PostgreSQL and the clients leave the machine cores to spare.
const CAPPED_SHARE: f64 = 0.15;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let [_, cmd, url, addr] = &args[..] {
        if cmd == "serve-instance" {
            // A child of `load`: one server instance in a capped cgroup (capped.rs).
            return capped::serve_instance(url, addr);
        }
    }
    if std::env::args().nth(1).as_deref() == Some("load") {
        // `load --sqlite-only`: the SQLite rows alone, to profile the serving path.
        return load_table(std::env::args().nth(2).as_deref() == Some("--sqlite-only"));
    }
    if std::env::args().nth(1).as_deref() == Some("summary") {
        // `summary`: the dashboard summary's cost over large fleets (SQLite, and PostgreSQL
        // where `OTA_PG_URL` names one).
        let pg = std::env::var("OTA_PG_URL").ok();
        for (figure, value) in summary::summary_rows(pg.as_deref()) {
            println!("{figure:<82} {value}");
        }
        return;
    }
    if std::env::args().nth(1).as_deref() == Some("bottleneck") {
        // `bottleneck`: the shared-cell rows alone (simulated time, under a second).
        let mut rows = Vec::new();
        loss::bottleneck_rows(&mut rows);
        for (figure, value) in rows {
            println!("{figure:<82} {value}");
        }
        return;
    }
    if std::env::args().nth(1).as_deref() == Some("loss") {
        // `loss`: the goodput and demo-link rows alone (simulated time, a second or two), to
        // tune the congestion control against.
        let mut rows = Vec::new();
        loss::goodput_rows(&mut rows);
        loss::fec_rows(&mut rows);
        for (figure, value) in rows {
            println!("{figure:<82} {value}");
        }
        return;
    }
    let img = image(256 * 1024);
    let mut rows: Vec<(String, String)> = Vec::new();
    let ideal = LinkProfile::ideal(50);

    for chunk in [256u16, 512, 1024] {
        let radio = download(
            &img,
            chunk,
            8,
            Congestion::LossTolerant,
            &ideal,
            WakeBudget::default(),
            0,
            1,
        )
        .radio;
        rows.push((
            format!("radio bytes / image byte, CoAP, {chunk} B blocks (both directions)"),
            format!("{:.4}", radio as f64 / img.len() as f64),
        ));
    }

    // "Nothing for you": a device already on the release.
    let (handler, public) = release(&img, 1024);
    let mut responder = Responder::new(
        handler,
        ServerConfig::default(),
        Security::PlainForLab(None),
    );
    let mut c = client(&public, 8, Congestion::LossTolerant, 2, 1 << 20, 1);
    let cost = wake(
        &mut c,
        &mut responder,
        &mut MemStorage::new(1 << 20),
        &LinkProfile::ideal(300),
        &mut SimRng::new(1),
        &mut 0,
        WakeBudget::default(),
        0,
    );
    assert_eq!(cost.reason, Some(SleepReason::UpToDate));
    rows.push((
        "\"nothing for you\" check-in over CoAP: bytes, round trips".into(),
        format!("{} B, {}", cost.radio, cost.round_trips),
    ));

    // Refetch per interruption: power fails at random (2 % per storage operation) during a
    // 64 KiB download in short wakes over a lossy NB-IoT-like link.
    let small = image(64 * 1024);
    // Several seeds, so the figure rests on enough cuts.
    let (mut cuts, mut refetch) = (0u32, 0u64);
    for seed in 7..13 {
        let cut = download(
            &small,
            1024,
            8,
            Congestion::LossTolerant,
            &LinkProfile {
                loss_percent: 5,
                ..LinkProfile::NB_IOT
            },
            WakeBudget {
                bytes: None,
                millis: Some(8000),
            },
            2,
            seed,
        );
        cuts += cut.resets;
        refetch += cut.accepted.saturating_sub(small.len() as u64);
    }
    rows.push((
        format!("refetched bytes per power cut (64 KiB, {cuts} cuts, 1 KiB blocks)"),
        format!("{:.0} B", refetch as f64 / f64::from(cuts.max(1))),
    ));

    // Loss-tolerant transfer (issue 14): the new congestion control next to the earlier one and
    // stop-and-wait on lossy links, a shared bottleneck, and what repair chunks could add.
    loss::goodput_rows(&mut rows);
    loss::bottleneck_rows(&mut rows);
    loss::fec_rows(&mut rows);

    // Host: receive path (decode + CRC + SHA-256) next to SHA-256 alone, and the server.
    let msgs: Vec<Vec<u8>> = img
        .chunks(1024)
        .enumerate()
        .map(|(i, p)| {
            wire::encode_vec(&Message::Chunk(Chunk::new(
                ImageId(1),
                (i * 1024) as u32,
                p,
            )))
        })
        .collect();
    let reps = 40;
    let t = Wall::now();
    for _ in 0..reps {
        let mut h = Sha256::new();
        for m in &msgs {
            let Ok(Message::Chunk(c)) = wire::decode(std::hint::black_box(m)) else {
                panic!()
            };
            assert!(c.crc_ok());
            h.update(c.payload);
        }
        std::hint::black_box(h.finalize());
    }
    let recv = (img.len() * reps) as f64 / t.elapsed().as_secs_f64() / 1e6;
    let t = Wall::now();
    for _ in 0..reps {
        std::hint::black_box(Sha256::digest(std::hint::black_box(&img)));
    }
    let sha = (img.len() * reps) as f64 / t.elapsed().as_secs_f64() / 1e6;
    rows.push((
        "host receive path, 1 KiB chunks (decode + CRC + SHA-256) vs SHA-256 alone".into(),
        format!("{recv:.0} MB/s vs {sha:.0} MB/s"),
    ));

    let (handler, public) = release(&img, 1024);
    let mut responder = Responder::new(
        handler,
        ServerConfig::default(),
        Security::PlainForLab(None),
    );
    let peer = "127.0.0.1:1".parse().unwrap();
    let mut c = client(&public, 8, Congestion::LossTolerant, 1, 1 << 20, 5);
    c.device_mut().wake(Instant(0), WakeBudget::default());
    let (mut tx, mut out) = ([0u8; 512], [0u8; 1400]);
    let n = c.poll_transmit(Instant(0), &mut tx).unwrap();
    let checkin = tx[..n].to_vec();
    let t = Wall::now();
    let rounds = 100_000u64;
    for i in 0..rounds {
        let mut d = checkin.clone();
        d[2..4].copy_from_slice(&(i as u16).to_be_bytes()); // a fresh message id each time
        std::hint::black_box(responder.respond(i, peer, &d, &mut out));
    }
    let checkins = rounds as f64 / t.elapsed().as_secs_f64();
    // Block requests as the device sends them.
    let m = responder.respond(0, peer, &checkin, &mut out).unwrap();
    c.handle_datagram(Instant(1), &mut out[..m]).unwrap();
    let mut reqs: Vec<Vec<u8>> = Vec::new();
    while let Some(n) = c.poll_transmit(Instant(2), &mut tx) {
        // A device that remembers nothing of the path starts with its requests in pairs: one
        // of each pair.
        if reqs.last().is_none_or(|r| r[..] != tx[..n]) {
            reqs.push(tx[..n].to_vec());
        }
    }
    // Each is answered with a full 1 KiB block.
    for r in &reqs {
        let n = responder.respond(0, peer, r, &mut out).unwrap();
        assert_eq!(out[1], (2 << 5) | 5, "2.05 Content");
        assert!(n > 1024);
    }
    let t = Wall::now();
    for i in 0..rounds {
        // A fresh message id each time: the same bytes again within a second would be taken
        // for a device's copy and dropped.
        let mut d = reqs[i as usize % reqs.len()].clone();
        d[2..4].copy_from_slice(&(i as u16).to_be_bytes());
        std::hint::black_box(responder.respond(i, peer, &d, &mut out));
    }
    let blocks = rounds as f64 / t.elapsed().as_secs_f64();
    rows.push((
        "host responder alone, in process (no socket, no store): check-ins/s; 1 KiB blocks/s"
            .into(),
        format!("{checkins:.0}; {blocks:.0}"),
    ));
    let served = served::checkins(16, 20_000);
    rows.push((
        format!(
            "ota-server's serving path (UDP, SQLite, OSCORE): check-ins/s, {} clients",
            served.clients
        ),
        format!(
            "{:.0} (p50 {:.2} ms, p99 {:.2} ms, {} unanswered)",
            served.per_sec, served.p50_ms, served.p99_ms, served.unanswered
        ),
    ));

    println!("{:<82} measured", "figure");
    for (k, v) in rows {
        println!("{k:<82} {v}");
    }
}
