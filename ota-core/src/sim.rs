//! Deterministic simulation of a lossy, slow, high-latency link, and a driver that runs one
//! device wake against the host handler over it (feature `std`).
//!
//! Time is simulated: a wake that takes minutes of link time runs in microseconds, and a seed
//! replays the same losses. Tests, benchmarks and the fleet demo share it.

use crate::device::{Device, Sent, SleepReason};
use crate::host::{DesiredState, Handler, ImageSource};
use crate::manifest::Verifier;
use crate::runtime::block::block_on;
use crate::runtime::{
    Blocking, Incoming, Link, LinkError, LinkLimits, OpenContext, Opened, Session, WakeError,
    WakeOptions,
};
use crate::storage::{CounterStore, UpdateStorage};
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

/// Simulated time, shared by the link and the wake loop.
#[derive(Debug, Default)]
pub struct SimClock(pub core::cell::Cell<u64>);

impl crate::runtime::Clock for SimClock {
    fn now(&self) -> Instant {
        Instant(self.0.get())
    }

    async fn sleep_until(&self, t: Instant) {
        self.0.set(self.0.get().max(t.0));
    }
}

/// Receives before a simulated wake is declared stuck (a state-machine bug).
const MAX_RECEIVES: usize = 1_000_000;

/// The simulated link as a [`crate::runtime::Link`]: requests cross `up` to the host handler at
/// their arrival times, replies cross `down`; a receive advances simulated time to the next
/// arrival or its deadline.
pub struct SimLink<'a, D, I> {
    handler: &'a Handler<D, I>,
    profile: &'a LinkProfile,
    up: &'a mut Pipe,
    down: &'a mut Pipe,
    rng: &'a mut SimRng,
    clock: &'a SimClock,
    arrived: std::collections::VecDeque<Vec<u8>>,
    receives: usize,
    /// Bytes sent and received since the loop last asked.
    bytes: (u64, u64),
}

impl<'a, D: DesiredState, I: ImageSource> SimLink<'a, D, I> {
    /// A link to `handler` over `up` and `down`, shaped by `profile`, in `clock`'s time.
    pub fn new(
        handler: &'a Handler<D, I>,
        profile: &'a LinkProfile,
        up: &'a mut Pipe,
        down: &'a mut Pipe,
        rng: &'a mut SimRng,
        clock: &'a SimClock,
    ) -> Self {
        Self {
            handler,
            profile,
            up,
            down,
            rng,
            clock,
            arrived: std::collections::VecDeque::new(),
            receives: 0,
            bytes: (0, 0),
        }
    }
}

impl<D: DesiredState, I: ImageSource> Link for SimLink<'_, D, I> {
    type Error = usize;
    type Session<'s>
        = &'s mut Self
    where
        Self: 's;

    fn limits(&self) -> LinkLimits {
        LinkLimits {
            max_chunk: u16::MAX,
            pow2_chunks: false,
        }
    }

    async fn open(
        &mut self,
        _ctx: OpenContext,
    ) -> Result<Opened<Self::Session<'_>>, LinkError<usize>> {
        Ok(Opened::Session(self))
    }
}

impl<D: DesiredState, I: ImageSource> Session for &mut SimLink<'_, D, I> {
    type Error = usize;

    async fn send(&mut self, _what: Sent, msg: &[u8]) -> Result<(), LinkError<usize>> {
        self.up
            .send(self.clock.0.get(), msg, self.profile, self.rng);
        self.bytes.0 += msg.len() as u64;
        Ok(())
    }

    async fn recv<'b>(
        &mut self,
        buf: &'b mut [u8],
        deadline: Instant,
    ) -> Result<Option<Incoming<'b>>, LinkError<usize>> {
        self.receives += 1;
        if self.receives > MAX_RECEIVES {
            return Err(LinkError::Fatal(MAX_RECEIVES));
        }
        loop {
            if let Some(msg) = self.arrived.pop_front() {
                let dst = buf.get_mut(..msg.len()).ok_or(LinkError::Busy)?;
                dst.copy_from_slice(&msg);
                self.bytes.1 += msg.len() as u64;
                return Ok(Some(Incoming::Message(dst)));
            }
            let now = self.clock.0.get();
            let next = [self.up.next_arrival(), self.down.next_arrival()]
                .into_iter()
                .flatten()
                .min();
            match next {
                Some(t) if t <= deadline.0 => self.clock.0.set(now.max(t)),
                _ => {
                    self.clock.0.set(now.max(deadline.0));
                    return Ok(None);
                }
            }
            let now = self.clock.0.get();
            for req in self.up.due(now) {
                if let Ok(Some(reply)) = self.handler.handle(&req, crate::host::Peer::Anonymous) {
                    self.down.send(now, &reply, self.profile, self.rng);
                }
            }
            self.arrived.extend(self.down.due(now));
        }
    }

    async fn close(self, _cut_short: bool) {
        // What is still in flight to the device is lost when it sleeps.
        self.down.clear();
    }

    fn take_link_bytes(&mut self) -> (u64, u64) {
        core::mem::take(&mut self.bytes)
    }
}

/// Runs one wake of `dev` against `handler` over `up`/`down` through the device runtime
/// ([`crate::runtime::run_wake`], restoring from `storage` first), starting at `*now` ms and
/// advancing it. Messages still in flight to the device when it sleeps are lost.
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
) -> Result<WakeOutcome, SimError<<S as UpdateStorage>::Error>>
where
    V: Verifier,
    S: UpdateStorage + CounterStore<Error = <S as UpdateStorage>::Error>,
    D: DesiredState,
    I: ImageSource,
{
    let start = *now;
    let clock = SimClock(core::cell::Cell::new(*now));
    let mut sim = SimLink::new(handler, link, up, down, rng, &clock);
    let end = block_on(crate::runtime::run_wake(
        dev,
        &mut sim,
        &mut Blocking(storage),
        &clock,
        budget,
        &WakeOptions::default(),
        |_| {},
    ));
    *now = clock.0.get();
    match end {
        Ok(end) => Ok(WakeOutcome {
            reason: end.reason,
            sleep_secs: end.sleep_secs,
            awake_ms: *now - start,
        }),
        Err(WakeError::Storage(e)) => Err(SimError::Storage(e)),
        Err(WakeError::Link(steps)) => Err(SimError::Stuck(steps)),
    }
}
