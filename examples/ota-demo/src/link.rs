//! An emulated radio link between one device and the server, on loopback UDP: each direction
//! serialises datagrams at the link rate, delays them by the latency plus jitter, and drops a
//! share of them. It runs in wall-clock time, and counts every datagram handed to it, lost ones
//! included: a metered SIM is billed for what went on the air, delivered or not.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ota_test_support::sim::{LinkProfile, SimRng};
use tokio::net::UdpSocket;
use tokio::time::Instant;

struct Direction {
    busy_until: Instant,
    rng: SimRng,
}

/// What one direction of the link carried.
#[derive(Debug, Default)]
pub struct Carried {
    /// Datagrams handed to the link.
    pub datagrams: AtomicU64,
    /// Their bytes (UDP payload), lost ones included.
    pub bytes: AtomicU64,
    /// Datagrams the link lost.
    pub lost: AtomicU64,
    /// Datagrams by size.
    sizes: Mutex<HashMap<usize, u64>>,
}

impl Carried {
    fn count(&self, len: usize, lost: bool) {
        self.datagrams.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(len as u64, Ordering::Relaxed);
        if lost {
            self.lost.fetch_add(1, Ordering::Relaxed);
        }
        if let Ok(mut sizes) = self.sizes.lock() {
            *sizes.entry(len).or_default() += 1;
        }
    }

    /// The most common datagram size: in an image download, a block request going up and a
    /// full block response coming down.
    pub fn usual_size(&self) -> Option<usize> {
        let sizes = self.sizes.lock().ok()?;
        sizes.iter().max_by_key(|(_, n)| **n).map(|(len, _)| *len)
    }

    /// Bytes carried so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

/// The link's counters, both directions.
#[derive(Debug, Default)]
pub struct LinkCount {
    /// Device to server.
    pub up: Carried,
    /// Server to device.
    pub down: Carried,
}

impl Direction {
    /// When a datagram of `len` bytes sent now arrives, or `None` if the link loses it.
    fn schedule(&mut self, len: usize, link: &LinkProfile) -> Option<Instant> {
        let now = Instant::now();
        let tx = match link.bits_per_sec {
            0 => Duration::ZERO,
            bps => Duration::from_micros(len as u64 * 8 * 1_000_000 / bps),
        };
        let departs = self.busy_until.max(now) + tx;
        self.busy_until = departs;
        if self.rng.chance(link.loss_percent) {
            return None;
        }
        Some(departs + Duration::from_millis(link.latency_ms + self.rng.below(link.jitter_ms + 1)))
    }
}

/// Starts a relay to `server`; returns the address the device should talk to and the link's
/// counters.
pub async fn start(
    server: SocketAddr,
    link: LinkProfile,
    seed: u64,
) -> std::io::Result<(SocketAddr, Arc<LinkCount>)> {
    let count = Arc::new(LinkCount::default());
    let device_side = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
    let server_side = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
    server_side.connect(server).await?;
    let addr = device_side.local_addr()?;
    let device_peer: Arc<Mutex<Option<SocketAddr>>> = Arc::new(Mutex::new(None));
    let up = Arc::new(Mutex::new(Direction {
        busy_until: Instant::now(),
        rng: SimRng::new(seed),
    }));
    let down = Arc::new(Mutex::new(Direction {
        busy_until: Instant::now(),
        rng: SimRng::new(seed ^ 0xD0),
    }));

    // Device to server.
    {
        let (rx, tx, peer, count) = (
            device_side.clone(),
            server_side.clone(),
            device_peer.clone(),
            count.clone(),
        );
        tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            while let Ok((n, from)) = rx.recv_from(&mut buf).await {
                if let Ok(mut p) = peer.lock() {
                    *p = Some(from);
                }
                let at = up.lock().ok().and_then(|mut d| d.schedule(n, &link));
                count.up.count(n, at.is_none());
                if let Some(at) = at {
                    let (tx, bytes) = (
                        tx.clone(),
                        buf.get(..n).map(<[u8]>::to_vec).unwrap_or_default(),
                    );
                    tokio::spawn(async move {
                        tokio::time::sleep_until(at).await;
                        let _ = tx.send(&bytes).await;
                    });
                }
            }
        });
    }
    // Server to device.
    let counted = count.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        while let Ok(n) = server_side.recv(&mut buf).await {
            let Some(to) = device_peer.lock().ok().and_then(|p| *p) else {
                continue;
            };
            let at = down.lock().ok().and_then(|mut d| d.schedule(n, &link));
            counted.down.count(n, at.is_none());
            if let Some(at) = at {
                let (tx, bytes) = (
                    device_side.clone(),
                    buf.get(..n).map(<[u8]>::to_vec).unwrap_or_default(),
                );
                tokio::spawn(async move {
                    tokio::time::sleep_until(at).await;
                    let _ = tx.send_to(&bytes, to).await;
                });
            }
        }
    });
    Ok((addr, count))
}
