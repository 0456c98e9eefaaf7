//! Deterministic simulation of a lossy, slow, high-latency link, and a driver that runs one
//! device wake against the host handler over it (feature `std`).
//!
//! Time is simulated: a wake that takes minutes of link time runs in microseconds, and a seed
//! replays the same losses. Tests, benchmarks and the fleet demo share it.

use crate::device::{Device, Event, SleepReason};
use crate::host::{DesiredState, Handler, ImageSource};
use crate::manifest::Verifier;
use crate::storage::UpdateStorage;
use crate::time::Instant;
use crate::wire::WakeBudget;

/// A small xorshift generator: fast, seedable, good enough for fault injection.
#[derive(Debug, Clone)]
pub struct SimRng(u64);

impl SimRng {
    /// From a seed (any value; zero is remapped).
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u32) -> bool {
        self.next_u64() % 100 < u64::from(percent)
    }

    /// Uniform in `0..n` (0 if `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }
}

/// What the link does to messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkProfile {
    /// One-way latency, ms.
    pub latency_ms: u64,
    /// Extra random delay per message, 0..=jitter ms (reorders messages).
    pub jitter_ms: u64,
    /// Link rate per direction, bits per second (0 = unlimited).
    pub bits_per_sec: u64,
    /// Per-message loss, percent.
    pub loss_percent: u32,
    /// Per-message duplication, percent.
    pub duplicate_percent: u32,
    /// Per-message single-bit corruption, percent.
    pub corrupt_percent: u32,
}

impl LinkProfile {
    /// NB-IoT-like: 600 ms round trip, 30 kbit/s, 5 % loss.
    pub const NB_IOT: LinkProfile = LinkProfile {
        latency_ms: 280,
        jitter_ms: 40,
        bits_per_sec: 30_000,
        loss_percent: 5,
        duplicate_percent: 0,
        corrupt_percent: 0,
    };

    /// A perfect link with a fixed one-way latency.
    pub const fn ideal(latency_ms: u64) -> LinkProfile {
        LinkProfile {
            latency_ms,
            jitter_ms: 0,
            bits_per_sec: 0,
            loss_percent: 0,
            duplicate_percent: 0,
            corrupt_percent: 0,
        }
    }
}

/// Counters of one direction of a link.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PipeStats {
    /// Messages handed to the link.
    pub messages: u64,
    /// Bytes handed to the link.
    pub bytes: u64,
    /// Messages the link dropped.
    pub lost: u64,
}

/// One direction of a link: messages in flight with their arrival times.
#[derive(Debug, Default)]
pub struct Pipe {
    in_flight: Vec<(u64, Vec<u8>)>,
    busy_until: u64,
    /// Counters.
    pub stats: PipeStats,
}

impl Pipe {
    /// Sends `bytes` at `now` (ms): queued behind earlier messages at the link rate, then
    /// delayed, possibly lost, duplicated or corrupted.
    pub fn send(&mut self, now: u64, bytes: &[u8], link: &LinkProfile, rng: &mut SimRng) {
        self.stats.messages += 1;
        self.stats.bytes += bytes.len() as u64;
        let tx_ms = match link.bits_per_sec {
            0 => 0,
            bps => (bytes.len() as u64 * 8 * 1000).div_ceil(bps),
        };
        let departs = self.busy_until.max(now) + tx_ms;
        self.busy_until = departs;
        if rng.chance(link.loss_percent) {
            self.stats.lost += 1;
            return;
        }
        let copies = if rng.chance(link.duplicate_percent) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let mut b = bytes.to_vec();
            if rng.chance(link.corrupt_percent) && !b.is_empty() {
                let i = rng.below(b.len() as u64) as usize;
                if let Some(byte) = b.get_mut(i) {
                    *byte ^= 1 << rng.below(8);
                }
            }
            let at = departs + link.latency_ms + rng.below(link.jitter_ms + 1);
            self.in_flight.push((at, b));
        }
    }

    /// Removes and returns the messages that have arrived by `now`, earliest first.
    pub fn due(&mut self, now: u64) -> Vec<Vec<u8>> {
        let mut due: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut i = 0;
        while i < self.in_flight.len() {
            if self.in_flight.get(i).is_some_and(|(t, _)| *t <= now) {
                due.push(self.in_flight.swap_remove(i));
            } else {
                i += 1;
            }
        }
        due.sort_by_key(|(t, _)| *t);
        due.into_iter().map(|(_, b)| b).collect()
    }

    /// When the next message arrives, if any is in flight.
    pub fn next_arrival(&self) -> Option<u64> {
        self.in_flight.iter().map(|(t, _)| *t).min()
    }

    /// Drops everything in flight (the receiver went to sleep).
    pub fn clear(&mut self) -> usize {
        self.busy_until = 0;
        std::mem::take(&mut self.in_flight).len()
    }
}

/// How one wake ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WakeOutcome {
    /// Why it ended.
    pub reason: SleepReason,
    /// Seconds the device will sleep.
    pub sleep_secs: u32,
    /// Simulated ms from wake to sleep.
    pub awake_ms: u64,
}

/// Errors of a simulated wake.
#[derive(Debug, thiserror::Error)]
pub enum SimError<E: core::fmt::Debug> {
    /// Storage refused an operation.
    #[error("storage: {0:?}")]
    Storage(E),
    /// The wake did not end within its step bound (a state-machine bug).
    #[error("wake did not end within {0} steps")]
    Stuck(usize),
}

/// Runs one wake of `dev` (already restored) against `handler` over `up`/`down`, starting at
/// `*now` ms and advancing it. Messages still in flight to the device when it sleeps are lost.
#[allow(clippy::too_many_arguments)]
pub fn run_wake<V, const C: usize, S, D, I>(
    dev: &mut Device<V, C>,
    storage: &mut S,
    handler: &Handler<D, I>,
    link: &LinkProfile,
    up: &mut Pipe,
    down: &mut Pipe,
    rng: &mut SimRng,
    now: &mut u64,
    budget: WakeBudget,
) -> Result<WakeOutcome, SimError<S::Error>>
where
    V: Verifier,
    S: UpdateStorage,
    D: DesiredState,
    I: ImageSource,
{
    const MAX_STEPS: usize = 1_000_000;
    let start = *now;
    let mut buf = vec![0u8; 8192];
    dev.wake(Instant(*now), budget);
    for _ in 0..MAX_STEPS {
        while let Some(n) = dev.poll_transmit(Instant(*now), &mut buf) {
            up.send(*now, buf.get(..n).unwrap_or(&[]), link, rng);
        }
        dev.drive_storage(storage).map_err(SimError::Storage)?;
        while let Some(ev) = dev.poll_event() {
            if let Event::Sleep { secs, reason } = ev {
                down.clear();
                return Ok(WakeOutcome {
                    reason,
                    sleep_secs: secs,
                    awake_ms: *now - start,
                });
            }
        }
        let next = [
            up.next_arrival(),
            down.next_arrival(),
            dev.poll_timeout().map(|t| t.0),
        ]
        .into_iter()
        .flatten()
        .min();
        let Some(next) = next else {
            return Err(SimError::Stuck(0));
        };
        *now = (*now).max(next);
        for req in up.due(*now) {
            if let Ok(Some(reply)) = handler.handle(&req, crate::host::Peer::Anonymous) {
                down.send(*now, &reply, link, rng);
            }
        }
        for msg in down.due(*now) {
            let _ = dev.handle_message(Instant(*now), &msg);
            dev.drive_storage(storage).map_err(SimError::Storage)?;
        }
        dev.handle_timeout(Instant(*now));
    }
    Err(SimError::Stuck(MAX_STEPS))
}
