//! Deterministic simulation of a lossy, slow, high-latency link, and a driver that runs one
//! device wake against the host handler over it.
//!
//! Time is simulated: a wake that takes minutes of link time runs in microseconds, and a seed
//! replays the same losses. Tests, benchmarks and the fleet demo share it.
//!
//! A [`Pipe`] loses datagrams independently at [`LinkProfile::loss_percent`], or in bursts
//! under a [`GilbertElliott`] model ([`Pipe::with_bursts`]); with [`Pipe::with_queue_limit`]
//! it is a bottleneck with a bounded drop-tail queue, and [`bottleneck`] runs a fleet of
//! devices behind one.

pub mod bottleneck;

use ota_core::device::{Device, SleepReason, Transmit};
use ota_core::host::{DesiredState, Handler, ImageSource};
use ota_core::manifest::Verifier;
use ota_core::runtime::block::block_on;
use ota_core::runtime::{
    Blocking, Incoming, Link, LinkError, LinkLimits, OpenContext, Opened, Session, WakeError,
    WakeOptions,
};
use ota_core::storage::{CounterStore, UpdateStorage};
use ota_core::time::Instant;
use ota_core::wire::WakeBudget;

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
    /// Messages the link carried (lost ones included; a queue's tail drops are not).
    pub messages: u64,
    /// Bytes the link carried (lost ones included; a queue's tail drops are not).
    pub bytes: u64,
    /// Messages the link lost on the way.
    pub lost: u64,
    /// Messages dropped on arrival at a full queue ([`Pipe::with_queue_limit`]).
    pub queue_drops: u64,
    /// Most messages waiting in the queue at once (the one being sent included).
    pub max_queue: u64,
}

/// The Gilbert-Elliott loss model: the link is in a good or a bad state, each with its own
/// loss rate, and changes state before each message with the given probabilities. Mean burst
/// length in the bad state is `100 / bad_to_good_percent` messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GilbertElliott {
    /// Chance per message, percent, of going from good to bad.
    pub good_to_bad_percent: u32,
    /// Chance per message, percent, of going from bad to good.
    pub bad_to_good_percent: u32,
    /// Loss in the good state, percent.
    pub good_loss_percent: u32,
    /// Loss in the bad state, percent.
    pub bad_loss_percent: u32,
}

impl GilbertElliott {
    /// Long-run share of messages lost, percent.
    pub fn mean_loss_percent(&self) -> f64 {
        let (p, r) = (
            f64::from(self.good_to_bad_percent),
            f64::from(self.bad_to_good_percent),
        );
        if p + r == 0.0 {
            return f64::from(self.good_loss_percent);
        }
        (r * f64::from(self.good_loss_percent) + p * f64::from(self.bad_loss_percent)) / (p + r)
    }
}

/// One direction of a link: messages in flight with their arrival times.
#[derive(Debug, Default)]
pub struct Pipe {
    /// (arrival ms, tag, bytes).
    in_flight: Vec<(u64, u32, Vec<u8>)>,
    busy_until: u64,
    /// Departure times of the messages queued or being sent (with a queue limit only).
    queue: std::collections::VecDeque<u64>,
    queue_limit: Option<usize>,
    bursts: Option<GilbertElliott>,
    bad: bool,
    /// Counters.
    pub stats: PipeStats,
}

impl Pipe {
    /// A pipe whose queue holds at most `limit` messages (the one being sent included); a
    /// message that finds it full is dropped (drop-tail) and never goes on the air.
    pub fn with_queue_limit(mut self, limit: usize) -> Self {
        self.queue_limit = Some(limit.max(1));
        self
    }

    /// A pipe that loses messages in bursts, following `model` instead of the link profile's
    /// `loss_percent`.
    pub fn with_bursts(mut self, model: GilbertElliott) -> Self {
        self.bursts = Some(model);
        self
    }

    /// Messages waiting in the queue or being sent at `now`.
    pub fn queued(&self, now: u64) -> usize {
        self.queue.iter().filter(|&&d| d > now).count()
    }

    fn lose(&mut self, link: &LinkProfile, rng: &mut SimRng) -> bool {
        match self.bursts {
            None => rng.chance(link.loss_percent),
            Some(ge) => {
                let flip = if self.bad {
                    ge.bad_to_good_percent
                } else {
                    ge.good_to_bad_percent
                };
                if rng.chance(flip) {
                    self.bad = !self.bad;
                }
                rng.chance(if self.bad {
                    ge.bad_loss_percent
                } else {
                    ge.good_loss_percent
                })
            }
        }
    }

    /// Sends `bytes` at `now` (ms): queued behind earlier messages at the link rate, then
    /// delayed, possibly lost, duplicated or corrupted.
    pub fn send(&mut self, now: u64, bytes: &[u8], link: &LinkProfile, rng: &mut SimRng) {
        self.send_tagged(now, 0, bytes, link, rng);
    }

    /// [`Pipe::send`] for a message that carries `tag` (which device of many it is for or
    /// from); [`Pipe::due_tagged`] hands the tag back.
    pub fn send_tagged(
        &mut self,
        now: u64,
        tag: u32,
        bytes: &[u8],
        link: &LinkProfile,
        rng: &mut SimRng,
    ) {
        if let Some(limit) = self.queue_limit {
            while self.queue.front().is_some_and(|&d| d <= now) {
                self.queue.pop_front();
            }
            if self.queue.len() >= limit {
                self.stats.queue_drops += 1;
                return;
            }
        }
        self.stats.messages += 1;
        self.stats.bytes += bytes.len() as u64;
        let tx_ms = match link.bits_per_sec {
            0 => 0,
            bps => (bytes.len() as u64 * 8 * 1000).div_ceil(bps),
        };
        let departs = self.busy_until.max(now) + tx_ms;
        self.busy_until = departs;
        if self.queue_limit.is_some() {
            self.queue.push_back(departs);
            self.stats.max_queue = self.stats.max_queue.max(self.queue.len() as u64);
        }
        if self.lose(link, rng) {
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
            self.in_flight.push((at, tag, b));
        }
    }

    /// Removes and returns the messages that have arrived by `now`, earliest first.
    pub fn due(&mut self, now: u64) -> Vec<Vec<u8>> {
        self.due_tagged(now).into_iter().map(|(_, b)| b).collect()
    }

    /// [`Pipe::due`] with each message's tag.
    pub fn due_tagged(&mut self, now: u64) -> Vec<(u32, Vec<u8>)> {
        let mut due: Vec<(u64, u32, Vec<u8>)> = Vec::new();
        let mut i = 0;
        while i < self.in_flight.len() {
            if self.in_flight.get(i).is_some_and(|(t, _, _)| *t <= now) {
                due.push(self.in_flight.swap_remove(i));
            } else {
                i += 1;
            }
        }
        due.sort_by_key(|(t, _, _)| *t);
        due.into_iter().map(|(_, tag, b)| (tag, b)).collect()
    }

    /// When the next message arrives, if any is in flight.
    pub fn next_arrival(&self) -> Option<u64> {
        self.in_flight.iter().map(|(t, _, _)| *t).min()
    }

    /// Drops everything in flight (the receiver went to sleep).
    pub fn clear(&mut self) -> usize {
        self.busy_until = 0;
        self.queue.clear();
        std::mem::take(&mut self.in_flight).len()
    }

    /// Drops what is in flight to the device tagged `tag` (it went to sleep); returns how many.
    pub fn clear_tagged(&mut self, tag: u32) -> usize {
        let before = self.in_flight.len();
        self.in_flight.retain(|(_, t, _)| *t != tag);
        before - self.in_flight.len()
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

impl ota_core::runtime::Clock for SimClock {
    fn now(&self) -> Instant {
        Instant(self.0.get())
    }

    async fn sleep_until(&self, t: Instant) {
        self.0.set(self.0.get().max(t.0));
    }
}

/// Receives before a simulated wake is declared stuck (a state-machine bug).
const MAX_RECEIVES: usize = 1_000_000;

/// The simulated link as a [`ota_core::runtime::Link`]: requests cross `up` to the host handler at
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
            overhead: ota_core::runtime::WIRE_CHUNK_OVERHEAD,
            // The host handler answers every datagram: a copy would bring a second chunk.
            copies: false,
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

    async fn send(&mut self, _t: Transmit, msg: &[u8]) -> Result<(), LinkError<usize>> {
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
                if let Ok(Some(reply)) = self.handler.handle(&req, ota_core::host::Peer::Anonymous)
                {
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
/// ([`ota_core::runtime::run_wake`], restoring from `storage` first), starting at `*now` ms and
/// advancing it. Messages still in flight to the device when it sleeps are lost.
#[allow(clippy::too_many_arguments)]
pub fn run_wake<V, const C: usize, const W: usize, S, D, I>(
    dev: &mut Device<V, C, W>,
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
    let end = block_on(ota_core::runtime::run_wake(
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
        // `run_wake`'s own buffer holds any reply.
        Err(WakeError::ReceiveBuffer { .. }) => Err(SimError::Stuck(0)),
    }
}
