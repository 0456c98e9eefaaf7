//! Check-ins per second through `ota-server serve`'s own path: its CoAP server on a loopback UDP
//! socket with OSCORE, the fleet logic and the SQLite store behind it, answering real sealed
//! check-ins from distinct provisioned devices, each client keeping one request in flight
//! (closed loop). The check-ins are sealed before the clock starts and the clients run as tasks
//! on one thread, so the two cores of a CI machine go to the server as far as they can.

use std::sync::Arc;
use std::time::{Duration, Instant as Wall};

use ota_core::manifest::Ed25519Verifier;
use ota_core::wire::{DigestPrefix, RunningFirmware, Version, WakeBudget};
use ota_core::{DeviceConfig, Instant};
use ota_oscore::SecurityContext;
use ota_server::fleet::Fleet;
use ota_server::serve::spawn_coap;
use ota_server::store::{Location, RolloutPlan, Store};
use ota_transport_coap::CoapClient;

/// Devices per client.
const DEVICES: usize = 50;

/// What the closed loop measured.
pub struct Served {
    pub clients: usize,
    pub per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Check-ins that got no answer within a second (each is sent again under a new id).
    pub unanswered: u64,
    /// Datagrams the kernel dropped for a full receive buffer during the run, host-wide.
    pub kernel_drops: u64,
    /// The machine's CPU time busy during the run, in cores (2.0 on two cores busy throughout),
    /// all processes: server, clients, and PostgreSQL if used. `None` without `/proc/stat`.
    pub busy_cores: Option<f64>,
}

/// Jiffies since boot over all CPUs: (busy, total). Busy is all but idle and I/O wait.
fn cpu_jiffies() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let total: u64 = v.iter().sum();
    let idle = v.get(3)? + v.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// `clients` devices send `total` check-ins between them to a server started as `ota-server
/// serve` starts it (SQLite in a temporary directory, one instance).
pub fn checkins(clients: usize, total: usize) -> Served {
    let dir = std::env::temp_dir().join(format!("ota-bench-served-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let location = Location::Dir(dir.clone());
    let fleet = provision(&location, "bench", clients * DEVICES);
    let served = load(&location, &fleet, 1, None, clients, total, 0).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    served
}

/// Datagrams the kernel dropped for want of room in a UDP receive buffer, host-wide
/// (`RcvbufErrors` in `/proc/net/snmp`); 0 where that file does not exist.
pub fn kernel_udp_drops() -> u64 {
    let snmp = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "RcvbufErrors")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// A class of provisioned devices with a release rolled out to all of them.
pub struct BenchFleet {
    class: String,
    key: ed25519_dalek::SigningKey,
    devices: Vec<(String, SecurityContext)>,
}

/// Provisions `devices` devices of class `class` in the store at `location` and rolls a
/// release out to them.
pub fn provision(location: &Location, class: &str, devices: usize) -> BenchFleet {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let key = ed25519_dalek::SigningKey::from_bytes(&[5; 32]);
    let devices = rt.block_on(async {
        let store = Store::open_at(location).await.unwrap();
        let image = super::image(64 * 1024);
        let release = store
            .add_release(class, Version::new(1, 1, 0), &image, &key, 1024)
            .await
            .unwrap();
        store
            .set_rollout(class, release.version, &RolloutPlan::immediate(100))
            .await
            .unwrap();
        let mut out = Vec::with_capacity(devices);
        for d in 0..devices {
            let id = format!("{class}-{d:05}");
            let cred = store.add_device(&id, class).await.unwrap();
            let ctx = SecurityContext::derive(&cred.secret, &cred.salt, &cred.kid, &[]).unwrap();
            out.push((id, ctx));
        }
        out
    });
    BenchFleet {
        class: class.to_string(),
        key,
        devices,
    }
}

/// `clients` closed-loop clients share `fleet`'s devices and send `total` check-ins between
/// them to `instances` servers started as `ota-server serve` starts one, each with its own
/// store connection to `location`, all on one UDP port (`SO_REUSEPORT`: the kernel spreads
/// clients over the instances). A run's OSCORE sequence numbers start at `first_seq`: give
/// each run over the same fleet a range above the last one's, `4 × (total + 1001)` wide.
///
/// With `cap`, each instance is a process of its own held to that share of a core
/// ([`capped`](super::capped)); PostgreSQL only.
#[allow(clippy::too_many_arguments)]
pub fn load(
    location: &Location,
    fleet: &BenchFleet,
    instances: usize,
    cap: Option<f64>,
    clients: usize,
    total: usize,
    first_seq: u64,
) -> Result<Served, String> {
    let mut children = Vec::new();
    let mut rt = None;
    let mut addr: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    match (cap, location) {
        (Some(share), Location::Postgres(url)) => {
            for n in 0..instances {
                let child = super::capped::Instance::start(url, addr, share, n)?;
                addr = child.addr;
                children.push(child);
            }
        }
        (Some(_), Location::Dir(_)) => return Err("capped instances need PostgreSQL".into()),
        // One server per SQLite directory (`ServeLock`): it is its rows' only writer.
        (None, Location::Dir(_)) if instances > 1 => {
            return Err("one instance per SQLite directory".into())
        }
        (None, _) => {
            let server = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .unwrap();
            addr = server.block_on(async {
                for _ in 0..instances {
                    let store = Store::open_at(location).await.unwrap();
                    let app = Arc::new(Fleet::new(store, 3600, 256 << 20).await.unwrap());
                    addr = spawn_coap(app, addr, 2).unwrap().0;
                }
                addr
            });
            rt = Some(server);
        }
    }
    let mut shares: Vec<Vec<_>> = (0..clients).map(|_| Vec::new()).collect();
    for (d, dev) in fleet.devices.iter().enumerate() {
        shares[d % clients].push(dev.clone());
    }

    let verifier = Ed25519Verifier::from_bytes(&fleet.key.verifying_key().to_bytes()).unwrap();
    let per_client = total / clients;
    // Every client's check-ins are sealed before the clock starts: it times the server, not
    // the sealing (devices seal on their own CPUs). The clients then run as tasks on one
    // thread of their own, each with its own socket and one check-in in flight, so that 256
    // of them cost the machine an event loop rather than 256 threads switching.
    let sealed: Vec<Vec<Vec<u8>>> = shares
        .into_iter()
        .map(|devices| {
            let class = &fleet.class;
            seal_check_ins(
                devices,
                per_client + SPARE,
                verifier.clone(),
                class,
                first_seq,
            )
        })
        .collect();
    let drops_before = kernel_udp_drops();
    let cpu_before = cpu_jiffies();
    let started = Wall::now();
    let (mut latencies, unanswered) = std::thread::spawn(move || {
        let clients_rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        clients_rt.block_on(async move {
            let tasks: Vec<_> = sealed
                .into_iter()
                .map(|s| tokio::spawn(client_loop(addr, s, per_client)))
                .collect();
            let mut latencies = Vec::with_capacity(total);
            let mut unanswered = 0;
            for t in tasks {
                let (l, u) = t.await.unwrap();
                latencies.extend(l);
                unanswered += u;
            }
            (latencies, unanswered)
        })
    })
    .join()
    .unwrap();
    let elapsed = started.elapsed();
    let kernel_drops = kernel_udp_drops().saturating_sub(drops_before);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let busy_cores = match (cpu_before, cpu_jiffies()) {
        (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => {
            Some(cores * (b1 - b0) as f64 / (t1 - t0) as f64)
        }
        _ => None,
    };
    drop(rt);
    drop(children);
    latencies.sort();
    let pick = |q: f64| {
        latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)].as_secs_f64()
            * 1e3
    };
    Ok(Served {
        clients,
        per_sec: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50_ms: pick(0.5),
        p99_ms: pick(0.99),
        unanswered,
        kernel_drops,
        busy_cores,
    })
}

/// Check-ins sealed beyond a client's count, to send in place of unanswered ones.
const SPARE: usize = 64;

/// `count` check-ins from `devices` in turn, each sealed as a new wake of its device would
/// (fresh OSCORE sequence numbers, from `first_seq` up).
fn seal_check_ins(
    devices: Vec<(String, SecurityContext)>,
    count: usize,
    verifier: Ed25519Verifier,
    class: &str,
    first_seq: u64,
) -> Vec<Vec<u8>> {
    let mut tx = [0u8; 512];
    (1..=count)
        .map(|i| {
            let (id, ctx) = &devices[i % devices.len()];
            let mut config = DeviceConfig::new(
                id.as_bytes(),
                ota_server::VENDOR,
                ota_server::class_id(class),
                RunningFirmware {
                    version: Version::new(1, 0, 0),
                    digest: DigestPrefix([0; 8]),
                    sequence: 0,
                },
            )
            .expect("a valid device id");
            config.staging_capacity = 1 << 20;
            let mut c: CoapClient<_> =
                CoapClient::new(config, verifier.clone(), i as u32).secure(ctx.clone());
            c.restore_sequence(first_seq + (i as u64) * 4);
            c.sequence_reserved(first_seq + (i as u64) * 4 + 4);
            c.device_mut().wake(Instant(0), WakeBudget::default());
            let n = c.poll_transmit(Instant(0), &mut tx).unwrap();
            tx[..n].to_vec()
        })
        .collect()
}

/// One client: its sealed check-ins sent in turn, one in flight, until `count` are answered.
async fn client_loop(
    server: std::net::SocketAddr,
    sealed: Vec<Vec<u8>>,
    count: usize,
) -> (Vec<Duration>, u64) {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.connect(server).await.unwrap();
    let mut rx = [0u8; 1500];
    let mut latencies = Vec::with_capacity(count);
    let mut unanswered = 0;
    for datagram in &sealed {
        if latencies.len() == count {
            break;
        }
        let t = Wall::now();
        socket.send(datagram).await.unwrap();
        match tokio::time::timeout(Duration::from_secs(1), socket.recv(&mut rx)).await {
            // Sealed answers come as 2.04; anything else is a refusal, which this bench must not
            // time as a check-in.
            Ok(Ok(n)) if n > 1 && rx[1] == (2 << 5) | 4 => latencies.push(t.elapsed()),
            Ok(Ok(_)) => panic!("a check-in was refused"),
            Ok(Err(e)) => panic!("client socket: {e}"),
            Err(_) => unanswered += 1,
        }
    }
    (latencies, unanswered)
}
