//! Counters of a running server, shared so a caller can watch it (and export them as metrics).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Counters, shared so a caller can watch a running server.
#[derive(Debug, Default)]
pub struct ServerStats {
    /// Requests answered.
    pub requests: AtomicU64,
    /// Of which image blocks.
    pub blocks: AtomicU64,
    /// Image bytes sent in blocks (payload only).
    pub block_bytes: AtomicU64,
    /// Answered from the deduplication cache (or dropped while the first was being decided).
    pub duplicates: AtomicU64,
    /// Datagrams dropped as a device's second copy of one received within
    /// [`super::COPY_MS`] (counted in `dropped` too).
    pub copies: AtomicU64,
    /// Error responses (4.xx, 5.xx).
    pub errors: AtomicU64,
    /// Datagrams dropped or reset without a response.
    pub dropped: AtomicU64,
    /// Requests refused 4.01: no OSCORE, unknown kid, did not open.
    pub unauthenticated: AtomicU64,
    /// Requests refused as replays.
    pub replays: AtomicU64,
    /// Requests refused 4.03: another device's id claimed, an image not offered.
    pub forbidden: AtomicU64,
    /// Datagrams received.
    pub datagrams_in: AtomicU64,
    /// Bytes received.
    pub bytes_in: AtomicU64,
    /// Datagrams sent.
    pub datagrams_out: AtomicU64,
    /// Bytes sent.
    pub bytes_out: AtomicU64,
    /// Time from a datagram's arrival to its answer being handed to the socket.
    pub latency: LatencyHistogram,
}

/// Upper bounds of the latency buckets, seconds (Prometheus `le`).
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// A fixed-bucket histogram of request latencies, lock-free.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    /// Count per bucket of [`LATENCY_BUCKETS`] (not cumulative); the last is above them all.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    /// Sum of all observations, microseconds.
    sum_us: AtomicU64,
}

impl LatencyHistogram {
    /// Records one latency.
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        let i = LATENCY_BUCKETS
            .iter()
            .position(|&b| s <= b)
            .unwrap_or(LATENCY_BUCKETS.len());
        if let Some(b) = self.buckets.get(i) {
            b.fetch_add(1, Ordering::Relaxed);
        }
        self.sum_us.fetch_add(
            d.as_micros().min(u128::from(u64::MAX)) as u64,
            Ordering::Relaxed,
        );
    }

    /// Cumulative counts per bucket bound (`le`), then the total count, and the sum in seconds.
    pub fn snapshot(&self) -> (Vec<(f64, u64)>, u64, f64) {
        let mut acc = 0;
        let mut out = Vec::with_capacity(LATENCY_BUCKETS.len());
        for (i, le) in LATENCY_BUCKETS.iter().enumerate() {
            acc += self.buckets.get(i).map_or(0, |b| b.load(Ordering::Relaxed));
            out.push((*le, acc));
        }
        acc += self
            .buckets
            .get(LATENCY_BUCKETS.len())
            .map_or(0, |b| b.load(Ordering::Relaxed));
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        (out, acc, sum)
    }
}
