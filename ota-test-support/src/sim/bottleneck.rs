//! A fleet behind one shared cell link: many devices, each running the real state machine
//! against the host handler, share one uplink and one downlink whose queue is bounded
//! (drop-tail), in simulated time.
//!
//! It shows what a congestion control does to the cell rather than to one device: whether the
//! queue keeps growing (every device's round trip with it), whether the link carries copies of
//! chunks nobody needs (a retransmission storm), and how evenly the devices share the link
//! (Jain's fairness index over their goodputs: 1 when equal, `1/n` when one device takes all).

use super::{LinkProfile, Pipe, PipeStats, SimError, SimRng};
use ota_core::device::{Device, Event};
use ota_core::host::{DesiredState, Handler, ImageSource, Peer};
use ota_core::manifest::Verifier;
use ota_core::storage::UpdateStorage;
use ota_core::time::Instant;
use ota_core::wire::WakeBudget;

/// The shared link and how the fleet uses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bottleneck {
    /// Devices behind the link.
    pub devices: u32,
    /// The cell link, each direction (its rate is shared by every device).
    pub link: LinkProfile,
    /// Messages the downlink queue holds (drop-tail beyond).
    pub queue_limit: usize,
    /// Devices wake at random moments in `0..start_spread_ms`.
    pub start_spread_ms: u64,
    /// Simulated time measured, ms.
    pub duration_ms: u64,
    /// Seed for wake times and link faults.
    pub seed: u64,
}

/// What the fleet got out of the link.
#[derive(Debug, Clone, PartialEq)]
pub struct BottleneckReport {
    /// Per device: chunk payload accepted, bits per second of its time awake.
    pub goodput_bps: Vec<f64>,
    /// All chunk payload accepted, bits per second of the whole run.
    pub total_goodput_bps: f64,
    /// Jain's fairness index over `goodput_bps`.
    pub jain: f64,
    /// What the uplink carried.
    pub up: PipeStats,
    /// What the downlink carried.
    pub down: PipeStats,
    /// Mean downlink queue, messages, over the first and the second half of the run.
    pub mean_queue: (f64, f64),
    /// Chunk requests sent again, all devices.
    pub retransmissions: u64,
    /// Chunks that arrived as duplicates or late (the link carried them for nothing).
    pub duplicate_chunks: u64,
    /// Requests sent twice back to back (`Transmit::twice`), and second copies the server
    /// dropped because the first had arrived.
    pub copies: (u64, u64),
    /// Devices that staged the image within the run.
    pub staged: u32,
}

/// Jain's fairness index of `xs`: `(Σx)² / (n·Σx²)`; 1 for an empty or all-zero list.
pub fn jain(xs: &[f64]) -> f64 {
    let sum: f64 = xs.iter().sum();
    let sq: f64 = xs.iter().map(|x| x * x).sum();
    if sq == 0.0 {
        1.0
    } else {
        sum * sum / (xs.len() as f64 * sq)
    }
}

struct Member<V: Verifier, const C: usize, const W: usize, S> {
    dev: Device<V, C, W>,
    storage: S,
    wakes_at: u64,
    awake: bool,
    /// When it went to sleep, if it did.
    slept_at: Option<u64>,
    /// Its sends so far: each names its datagram on the uplink, and a copy shares its name.
    sends: u32,
    /// The names the server saw last, so it answers one copy of a pair (as the CoAP server
    /// drops a byte-identical datagram by its message id).
    seen: std::collections::VecDeque<u32>,
}

/// Uplink tags: the device's index in the low bits, the send's name above.
const DEVICE_BITS: u32 = 20;

/// Runs `scenario`: device `i` is `make(i)` (a device and its storage, restored or fresh),
/// woken once with no budget at a random moment, and served by `handler` through the shared
/// link until `duration_ms`.
pub fn run<V, const C: usize, const W: usize, S, D, I>(
    scenario: &Bottleneck,
    handler: &Handler<D, I>,
    mut make: impl FnMut(u32) -> (Device<V, C, W>, S),
) -> Result<BottleneckReport, SimError<S::Error>>
where
    V: Verifier,
    S: UpdateStorage,
    D: DesiredState,
    I: ImageSource,
{
    let mut rng = SimRng::new(scenario.seed);
    let mut members: Vec<Member<V, C, W, S>> = (0..scenario.devices)
        .map(|i| {
            let (dev, storage) = make(i);
            Member {
                dev,
                storage,
                wakes_at: rng.below(scenario.start_spread_ms.max(1)),
                awake: false,
                slept_at: None,
                sends: 0,
                seen: Default::default(),
            }
        })
        .collect();
    let link = scenario.link;
    let mut up = Pipe::default();
    let mut down = Pipe::default().with_queue_limit(scenario.queue_limit);
    let mut buf = vec![0u8; 8192];
    let mut now = 0u64;
    let half = scenario.duration_ms / 2;
    let mut queue_area = [0f64; 2];
    let mut copies = (0u64, 0u64);
    const MAX_STEPS: usize = 10_000_000;
    for _ in 0..MAX_STEPS {
        for (i, m) in members.iter_mut().enumerate() {
            let tag = u32::try_from(i).unwrap_or(u32::MAX);
            if !m.awake && m.slept_at.is_none() && m.wakes_at <= now {
                m.awake = true;
                m.dev
                    .restore_from(&mut m.storage)
                    .map_err(SimError::Storage)?;
                m.dev.wake(Instant(now), WakeBudget::default());
            }
            if !m.awake {
                continue;
            }
            while let Some(t) = m.dev.poll_transmit(Instant(now), &mut buf) {
                let named = tag | (m.sends << DEVICE_BITS);
                m.sends = (m.sends + 1) & (u32::MAX >> DEVICE_BITS);
                for _ in 0..if t.twice { 2 } else { 1 } {
                    up.send_tagged(now, named, buf.get(..t.len).unwrap_or(&[]), &link, &mut rng);
                    // Counted as sent even when the queue drops it: the device spent the bytes.
                    m.dev.link_bytes(t.len as u64, 0);
                }
                copies.0 += u64::from(t.twice);
            }
            m.dev
                .drive_storage(&mut m.storage)
                .map_err(SimError::Storage)?;
            while let Some(ev) = m.dev.poll_event() {
                if let Event::Sleep { .. } = ev {
                    m.awake = false;
                    m.slept_at = Some(now);
                    down.clear_tagged(tag);
                }
            }
        }
        if now >= scenario.duration_ms {
            break;
        }
        let next = members
            .iter()
            .filter_map(|m| {
                if m.awake {
                    m.dev.poll_timeout().map(|t| t.0)
                } else if m.slept_at.is_none() {
                    Some(m.wakes_at)
                } else {
                    None
                }
            })
            .chain(
                [up.next_arrival(), down.next_arrival()]
                    .into_iter()
                    .flatten(),
            )
            .min()
            .unwrap_or(scenario.duration_ms)
            .min(scenario.duration_ms);
        let next = next.max(now);
        // Time-weighted queue length, split at half time.
        let q = down.queued(now) as f64;
        for (k, slot) in queue_area.iter_mut().enumerate() {
            let (lo, hi) = if k == 0 {
                (0, half)
            } else {
                (half, scenario.duration_ms)
            };
            let span = next.min(hi).saturating_sub(now.max(lo));
            *slot += q * span as f64;
        }
        now = next;
        for (named, req) in up.due_tagged(now) {
            let tag = named & ((1 << DEVICE_BITS) - 1);
            let name = named >> DEVICE_BITS;
            if let Some(m) = members.get_mut(tag as usize) {
                if m.seen.contains(&name) {
                    copies.1 += 1;
                    continue;
                }
                if m.seen.len() >= 64 {
                    m.seen.pop_front();
                }
                m.seen.push_back(name);
            }
            if let Ok(Some(reply)) = handler.handle(&req, Peer::Anonymous) {
                down.send_tagged(now, tag, &reply, &link, &mut rng);
            }
        }
        for (tag, msg) in down.due_tagged(now) {
            if let Some(m) = members.get_mut(tag as usize).filter(|m| m.awake) {
                m.dev.link_bytes(0, msg.len() as u64);
                let _ = m.dev.handle_message(Instant(now), &msg);
                m.dev
                    .drive_storage(&mut m.storage)
                    .map_err(SimError::Storage)?;
            }
        }
        for m in members.iter_mut().filter(|m| m.awake) {
            m.dev.handle_timeout(Instant(now));
        }
    }
    let end = scenario.duration_ms;
    let goodput_bps: Vec<f64> = members
        .iter()
        .map(|m| {
            let until = m.slept_at.unwrap_or(end).min(end);
            let span = until.saturating_sub(m.wakes_at).max(1) as f64 / 1000.0;
            m.dev.stats().payload_bytes_accepted as f64 * 8.0 / span
        })
        .collect();
    let total: u64 = members
        .iter()
        .map(|m| m.dev.stats().payload_bytes_accepted)
        .sum();
    let halves = [half.max(1) as f64, (end - half).max(1) as f64];
    Ok(BottleneckReport {
        jain: jain(&goodput_bps),
        goodput_bps,
        total_goodput_bps: total as f64 * 8.0 / (end.max(1) as f64 / 1000.0),
        up: up.stats,
        down: down.stats,
        mean_queue: (queue_area[0] / halves[0], queue_area[1] / halves[1]),
        retransmissions: members
            .iter()
            .map(|m| u64::from(m.dev.stats().retransmissions))
            .sum(),
        duplicate_chunks: members
            .iter()
            .map(|m| u64::from(m.dev.stats().duplicate_chunks))
            .sum(),
        copies,
        staged: members
            .iter()
            .filter(|m| {
                m.dev
                    .resume_state()
                    .is_some_and(|s| s.phase == ota_core::resume::ResumePhase::Staged)
            })
            .count() as u32,
    })
}
