//! An emulated radio link between one device and the server, on loopback UDP: each direction
//! serialises datagrams at the link rate, delays them by the latency plus jitter, and drops a
//! share of them. It runs in wall-clock time.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ota_core::sim::{LinkProfile, SimRng};
use tokio::net::UdpSocket;
use tokio::time::Instant;

struct Direction {
    busy_until: Instant,
    rng: SimRng,
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

/// Starts a relay to `server`; returns the address the device should talk to.
pub async fn start(
    server: SocketAddr,
    link: LinkProfile,
    seed: u64,
) -> std::io::Result<SocketAddr> {
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
        let (rx, tx, peer) = (
            device_side.clone(),
            server_side.clone(),
            device_peer.clone(),
        );
        tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            while let Ok((n, from)) = rx.recv_from(&mut buf).await {
                if let Ok(mut p) = peer.lock() {
                    *p = Some(from);
                }
                let at = up.lock().ok().and_then(|mut d| d.schedule(n, &link));
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
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        while let Ok(n) = server_side.recv(&mut buf).await {
            let Some(to) = device_peer.lock().ok().and_then(|p| *p) else {
                continue;
            };
            let at = down.lock().ok().and_then(|mut d| d.schedule(n, &link));
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
    Ok(addr)
}
