//! The device-side update state machine, sans-IO.
//!
//! [`Device`] takes received bytes and the current time in, and hands out bytes to send
//! ([`Device::poll_transmit`]), storage operations ([`Device::poll_storage`]), the next deadline
//! ([`Device::poll_timeout`]) and events ([`Device::poll_event`]). It never blocks and owns no
//! socket, clock or flash chip, so one implementation serves a Cortex-M, a host simulator, the
//! property tests and the fuzzer.
//!
//! One wake, from the caller's side:
//!
//! ```text
//! restore(storage.load()) ── wake(now, budget)
//!   loop {
//!     while let Some(n) = poll_transmit(now, buf)   -> send buf[..n]
//!     drive_storage(storage) / poll_storage + storage_done
//!     if let Some(Event::Sleep { .. }) = poll_event -> sleep
//!     wait for a datagram or poll_timeout()         -> handle_message / handle_timeout
//!   }
//! ```
//!
//! | state | leaves on | to |
//! |---|---|---|
//! | idle | `wake` | checking in (with `early_resume`, a restored download asks for chunks meanwhile) |
//! | checking in | reply `UpToDate`/`Defer`/`Cancel`, link lost | asleep |
//! | checking in | reply `Update`, manifest verified | downloading |
//! | downloading | last chunk staged | verifying |
//! | downloading | budget spent, link lost | asleep (progress persisted) |
//! | verifying | digest read back from storage matches | staged |
//! | verifying | mismatch | asleep (download abandoned, failure reported) |
//!
//! Trial boot, confirm and rollback happen after a reboot, in the installer (`ota-storage`);
//! their outcome comes back through [`DeviceConfig::last_outcome`] and the next check-in.

mod config;
mod congestion;
mod path;
mod rtt;
mod transmit;
mod window;

use heapless::Deque;
use sha2::{Digest as _, Sha256};

pub use config::{DeviceConfig, MAX_WINDOW};
use congestion::Controller;
pub use congestion::{Congestion, TWICE_OFF, TWICE_ON};
pub use path::PathMemory;
use rtt::RttEstimator;
pub use transmit::{Sent, Transmit};
use window::Window;

use crate::manifest::{DeviceProfile, Manifest, ManifestError, StoredManifest, Verifier};
use crate::resume::{ResumePhase, ResumeState};
use crate::storage::{Persisted, StorageFailure, StorageOp, UpdateStorage};
use crate::time::Instant;
use crate::wire::{
    self, Capabilities, CheckIn, CheckInReply, Chunk, ChunkRequest, DecodeError, DeferReason,
    Digest, ImageId, Inbound, LastOutcome, Outbound, Phase, Report, ResultCode, ResumeHint,
    Urgency, Version, WakeBudget,
};

/// Something the application should know about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The server offered a manifest and it passed every check.
    UpdateOffered {
        /// Version on offer.
        version: Version,
        /// Bytes to fetch: the image's, or the patch's if it comes as one.
        size: u32,
        /// Bytes already staged from earlier wakes.
        resume_from: u32,
        /// How strongly it is wanted.
        urgency: Urgency,
    },
    /// The offered manifest was refused.
    ManifestRejected(ManifestError),
    /// The image is staged and its digest verified from storage: ready to install.
    Staged {
        /// Version staged.
        version: Version,
        /// Its manifest's sequence number.
        sequence: u32,
    },
    /// The download was given up; the reason is reported to the server too.
    DownloadFailed(ResultCode),
    /// This wake is over: nothing more to send or store. Sleep for `secs`.
    Sleep {
        /// Seconds until the next wake.
        secs: u32,
        /// Why the wake ended.
        reason: SleepReason,
    },
}

/// Why a wake ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SleepReason {
    /// Nothing to do.
    UpToDate,
    /// The server asked to come back later.
    Deferred(DeferReason),
    /// The server cancelled the download.
    Cancelled,
    /// The wake's time or byte budget is spent; progress is persisted.
    BudgetExhausted,
    /// The server stopped answering.
    LinkLost,
    /// The image is staged.
    Staged,
    /// The offered manifest was refused.
    Rejected,
    /// A download failed (integrity, storage) or the server answered nonsense.
    Failed,
}

/// Why received bytes were not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecvError {
    /// They did not decode.
    #[error("undecodable message: {0}")]
    Decode(#[from] DecodeError),
    /// A message a device never receives (a check-in, say), or a kind no message has.
    #[error("message not meant for a device")]
    NotForDevice,
    /// Not expected now (late reply, duplicate, unknown offset); dropped.
    #[error("unexpected message dropped")]
    Unexpected,
    /// A chunk whose CRC, length or offset is wrong; it will be refetched.
    #[error("corrupt chunk at {0}; refetching")]
    CorruptChunk(u32),
    /// A chunk arrived while the previous one was still being written; it will be refetched.
    #[error("storage busy; chunk at {0} will be refetched")]
    Busy(u32),
    /// The reply names a resumed download the device has no record of.
    #[error("server resumed a download this device does not hold")]
    UnknownResume,
}

/// Counters since the device was created (RAM only).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Bytes sent on the link, as the driver reported them ([`Device::link_bytes`]).
    pub bytes_sent: u64,
    /// Bytes received from the link, as the driver reported them.
    pub bytes_received: u64,
    /// Messages sent.
    pub messages_sent: u32,
    /// Messages received.
    pub messages_received: u32,
    /// Chunk payload bytes accepted and written.
    pub payload_bytes_accepted: u64,
    /// Chunks dropped for a bad CRC, length or offset.
    pub corrupt_chunks: u32,
    /// Chunks dropped as duplicates or late.
    pub duplicate_chunks: u32,
    /// Requests sent again after a timeout or a corrupt reply.
    pub retransmissions: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Idle,
    CheckingIn,
    Downloading,
    Verifying,
    Staged,
    Asleep,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpKind {
    Begin,
    Write { offset: u32, len: u16 },
    Persist,
    Read { offset: u32, len: u16 },
    MarkStaged,
    Abandon,
    SetOutcome(LastOutcome),
    Rebuild,
}

#[derive(Debug, Clone, Copy)]
struct Download {
    image: ImageId,
    manifest: Manifest,
    state: ResumeState,
    next_request: u32,
    /// No new requests this wake (budget spent).
    stopping: bool,
}

impl Download {
    fn chunk(&self) -> u32 {
        u32::from(self.manifest.chunk_size)
    }

    /// Bytes fetched: the patch's for a patch, else the image's. Chunk offsets, the resume
    /// record and the hint are all in these bytes.
    fn size(&self) -> u32 {
        self.manifest.transfer_size()
    }

    fn chunk_len(&self, offset: u32) -> u16 {
        let left = self.size().saturating_sub(offset);
        // Bounded by chunk_size, which is a u16.
        u16::try_from(left.min(self.chunk())).unwrap_or(self.manifest.chunk_size)
    }

    /// Advances `next_request` past chunks already staged.
    fn skip_staged(&mut self) {
        let chunk = self.chunk();
        while self.next_request < self.size() && self.state.has(self.next_request, chunk) {
            self.next_request = self.next_request.saturating_add(chunk);
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Wake {
    deadline: Option<Instant>,
    budget: Option<WakeBudget>,
    bytes_at_start: u64,
    /// The deadline ended a confirmed download with its last writes still pending: if they
    /// complete it, it is verified and staged now (local work) instead of a wake later.
    deadline_cut: bool,
}

/// The device-side state machine; `CHUNK` is the size of its one chunk buffer (the largest
/// chunk it can take), `WINDOW` the most chunk requests it can keep outstanding (1 to
/// [`MAX_WINDOW`]; 48 bytes of RAM each, so a device configured for the default window of 12
/// saves 960 bytes with `WINDOW = 12`). [`DeviceConfig::window`] is capped at `WINDOW`.
pub struct Device<V, const CHUNK: usize = 1024, const WINDOW: usize = MAX_WINDOW> {
    config: DeviceConfig,
    verifier: V,
    state: State,
    wake: Wake,
    /// The download storage held at the start of the wake, not (yet) taken up by this one.
    restored: Option<ResumeState>,
    /// The signed manifest of the download restored or in progress: one copy for both, as a
    /// download resumed early is the restored one, and an offer of another replaces it.
    stored: Option<StoredManifest>,
    dl: Option<Download>,
    checkin_sent: Option<Instant>,
    checkin_due: Instant,
    checkin_attempts: u8,
    /// Check-in sends since the server was last heard (a chunk of a download resumed early
    /// proves the path alive): what the check-in's timer backs off by and gives up after.
    checkin_silent: u8,
    window: Window<WINDOW>,
    /// Congestion control: requests allowed in flight now (1..=`config.window`) and the
    /// retransmission timers, as [`DeviceConfig::congestion`] chooses.
    cc: Controller,
    next_check_in: u32,
    rtt: RttEstimator,
    ops: Deque<OpKind, 4>,
    op_in_flight: Option<OpKind>,
    buf: [u8; CHUNK],
    buf_busy: bool,
    hasher: Sha256,
    report: Option<(ImageId, Phase, ResultCode)>,
    events: Deque<Event, 8>,
    pending_sleep: Option<(u32, SleepReason)>,
    /// Chunk writes still queued or running for a download the check-in reply did not confirm
    /// (see [`Device::resume_early`]): their completions mark and persist nothing.
    stale_writes: u8,
    /// The server drops the second copy of a request sent twice ([`Device::server_drops_copies`]).
    drops_copies: bool,
    stats: Stats,
}

impl<V: Verifier, const CHUNK: usize, const WINDOW: usize> Device<V, CHUNK, WINDOW> {
    /// A device that has not woken yet.
    pub fn new(mut config: DeviceConfig, verifier: V) -> Self {
        const {
            assert!(
                WINDOW >= 1 && WINDOW <= MAX_WINDOW,
                "WINDOW must be 1 to MAX_WINDOW"
            )
        };
        let cap = u16::try_from(CHUNK).unwrap_or(u16::MAX);
        config.max_chunk = config.max_chunk.min(cap);
        config.window = config.window.clamp(1, WINDOW as u8);
        config.max_attempts = config.max_attempts.max(1);
        Self {
            cc: Controller::new(&config),
            config,
            verifier,
            state: State::Idle,
            wake: Wake {
                deadline: None,
                budget: None,
                bytes_at_start: 0,
                deadline_cut: false,
            },
            restored: None,
            stored: None,
            dl: None,
            checkin_sent: None,
            checkin_due: Instant(0),
            checkin_attempts: 0,
            checkin_silent: 0,
            window: Window::default(),
            next_check_in: 0,
            rtt: RttEstimator::default(),
            ops: Deque::new(),
            op_in_flight: None,
            buf: [0; CHUNK],
            buf_busy: false,
            hasher: Sha256::new(),
            report: None,
            events: Deque::new(),
            pending_sleep: None,
            stale_writes: 0,
            drops_copies: false,
            stats: Stats::default(),
        }
    }

    /// What the link learnt of the server: whether it drops the second copy of a request sent
    /// twice back to back (CoAP: an option in a check-in response that offers a download).
    /// While it does, in this wake and in later ones given this wake's [`PathMemory`],
    /// requests may go twice ([`Transmit::twice`]); otherwise they go once, as another
    /// server would answer both copies.
    pub fn server_drops_copies(&mut self, drops: bool) {
        self.drops_copies = drops;
        self.cc.allow_twice(self.may_twice());
    }

    /// Requests may go twice: the link copies ([`DeviceConfig::request_copies`]) and the
    /// server drops copies.
    fn may_twice(&self) -> bool {
        self.config.request_copies && self.drops_copies
    }

    /// The configuration (the application updates `last_outcome` through [`Device::config_mut`]).
    pub fn config(&self) -> &DeviceConfig {
        &self.config
    }

    /// Mutable configuration, for the application between wakes.
    pub fn config_mut(&mut self) -> &mut DeviceConfig {
        &mut self.config
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The persisted download this device resumes, as restored or as progressed since.
    pub fn resume_state(&self) -> Option<ResumeState> {
        self.dl.map(|d| d.state).or(self.restored)
    }

    /// Bytes of the persisted download staged so far, chunks staged past
    /// [`ResumeState::next_offset`] included: what the next [`Event::UpdateOffered`] gives as
    /// `resume_from` if the server offers the same release. `None` without a download.
    pub fn staged_bytes(&self) -> Option<u32> {
        let state = self.dl.map(|d| d.state).or(self.restored)?;
        // The manifest was verified before it was kept; only its sizes are read here.
        let manifest = self.stored.as_ref()?.as_signed().decode_verified().ok()?;
        let chunk = u32::from(manifest.chunk_size);
        Some(state.staged_bytes(chunk, manifest.transfer_size()))
    }

    /// True once the wake has ended.
    pub fn is_asleep(&self) -> bool {
        self.state == State::Asleep
    }

    /// Hands the state machine what storage holds (call before [`Device::wake`]): the staging
    /// capacity and the outcome to report go into the configuration, the download in progress
    /// is resumed.
    pub fn restore(&mut self, persisted: Persisted) {
        self.config.staging_capacity = persisted.capacity;
        self.config.last_outcome = persisted.outcome;
        let (restored, stored) = persisted.download.unzip();
        self.restored = restored;
        self.stored = stored;
        self.dl = None;
    }

    /// [`Device::restore`] from a blocking storage.
    pub fn restore_from<S: UpdateStorage>(&mut self, storage: &mut S) -> Result<(), S::Error> {
        let persisted = storage.load()?;
        self.restore(persisted);
        Ok(())
    }

    /// What this device has measured of the path, once it has measured a round trip: give it
    /// to the next wake's device with [`Device::remember_path`] (see [`PathMemory`]).
    pub fn path_memory(&self) -> Option<PathMemory> {
        let min_rtt_ms = self.cc.min_rtt().or(self.rtt.srtt())?;
        let (window, fail_rate, twice) = self.cc.memory();
        Some(PathMemory {
            min_rtt_ms,
            window,
            fail_rate,
            twice,
            drops_copies: self.drops_copies,
        })
    }

    /// Starts the next wakes from what an earlier wake measured of the path (see
    /// [`PathMemory`]); call it before [`Device::wake`]. The memory sets the first guess of
    /// the timeout ([`DeviceConfig::initial_rto_ms`], within the configured bounds), not the
    /// round-trip estimate: the wake measures the path afresh, and a guess that proves too
    /// short doubles as the default one does. Under [`Congestion::LossTolerant`] only: `Aimd`
    /// keeps the earlier behaviour.
    pub fn remember_path(&mut self, memory: PathMemory) {
        if self.config.congestion != Congestion::LossTolerant {
            return;
        }
        self.config.initial_rto_ms = memory
            .min_rtt_ms
            .saturating_mul(2)
            .clamp(self.config.min_rto_ms, self.config.max_rto_ms);
        self.cc.remember(memory, &self.config);
        self.drops_copies = memory.drops_copies;
        self.cc.allow_twice(self.may_twice());
    }

    /// Starts a wake at `now` with the given budget: the next [`Device::poll_transmit`] yields
    /// the check-in.
    pub fn wake(&mut self, now: Instant, budget: WakeBudget) {
        if let Some(dl) = self.dl.take() {
            // Carry the progress of this process's earlier wakes.
            self.restored = Some(dl.state);
        }
        self.state = State::CheckingIn;
        self.wake = Wake {
            deadline: budget.millis.map(|ms| now + u64::from(ms)),
            budget: (budget.bytes.is_some() || budget.millis.is_some()).then_some(budget),
            bytes_at_start: self.stats.bytes_sent + self.stats.bytes_received,
            deadline_cut: false,
        };
        self.checkin_sent = None;
        self.checkin_due = now;
        self.checkin_attempts = 0;
        self.checkin_silent = 0;
        self.cc.on_wake(now, &self.config);
        self.cc.allow_twice(self.may_twice());
        self.pending_sleep = None;
        self.events.clear();
        self.ops.clear();
        self.op_in_flight = None;
        self.buf_busy = false;
        self.report = None;
        self.stale_writes = 0;
        self.window.clear();
        self.resume_early();
    }

    /// A download left unfinished by an earlier wake goes on at once: its chunk requests go
    /// out right after the check-in instead of a round trip later, and keep going while a lost
    /// check-in is asked again. The stored manifest was verified before it was stored; it is
    /// decoded here, checked against what this device takes, and verified in full when the
    /// reply confirms the download (an offer of the same manifest), as any offer is. Any other
    /// reply ends the download as it would have without this (see [`Device::on_reply`]). At
    /// most the chunks asked for before the reply are fetched for a release the server no
    /// longer offers. Only under [`Congestion::LossTolerant`]; `Aimd`
    /// keeps the earlier behaviour.
    fn resume_early(&mut self) {
        if !self.config.early_resume || self.config.congestion != Congestion::LossTolerant {
            return;
        }
        let (Some(state), Some(stored)) = (self.restored, self.stored.as_ref()) else {
            return;
        };
        if state.phase != ResumePhase::Downloading {
            return;
        }
        let Ok(manifest) = stored.as_signed().decode_verified() else {
            return;
        };
        // What this build of the device can take (the full check runs at the reply).
        let c = &self.config;
        let fits = manifest.chunk_size > 0
            && manifest.chunk_size <= c.max_chunk
            && (!c.pow2_chunks || manifest.chunk_size.is_power_of_two())
            && manifest.image_size <= c.staging_capacity;
        if !fits || state.is_complete(manifest.transfer_size()) {
            return;
        }
        self.dl = Some(Download {
            image: state.image,
            manifest,
            state,
            next_request: state.next_offset,
            stopping: false,
        });
    }

    /// The check-in reply did not confirm the download resumed early: forget it as this wake
    /// knows it, keeping what storage holds as the download restored.
    fn drop_early(&mut self) {
        let Some(dl) = self.dl.take() else {
            return;
        };
        self.window.clear();
        self.restored = Some(dl.state);
        let mut stale = u8::from(matches!(self.op_in_flight, Some(OpKind::Write { .. })));
        for _ in 0..self.ops.len() {
            if let Some(op) = self.ops.pop_front() {
                match op {
                    OpKind::Persist => {}
                    OpKind::Write { .. } => {
                        stale += 1;
                        let _ = self.ops.push_back(op);
                    }
                    _ => {
                        let _ = self.ops.push_back(op);
                    }
                }
            }
        }
        self.stale_writes = stale;
    }

    fn profile(&self) -> DeviceProfile {
        DeviceProfile {
            vendor: self.config.vendor,
            class: self.config.class,
            running_sequence: self.config.running.sequence,
            running_version: self.config.running.version,
            staging_capacity: self.config.staging_capacity,
            max_chunk: self.config.max_chunk,
            pow2_chunks: self.config.pow2_chunks,
        }
    }

    fn sample_rtt(&mut self, sent: Instant, now: Instant) {
        self.rtt
            .sample(u32::try_from(now.since(sent)).unwrap_or(u32::MAX));
    }

    fn used_bytes(&self) -> u64 {
        (self.stats.bytes_sent + self.stats.bytes_received).saturating_sub(self.wake.bytes_at_start)
    }

    fn finish(&mut self, secs: u32, reason: SleepReason) {
        // An outcome (staged, or failed) outranks the deadline that ended the wake while the
        // last chunk was written.
        let outcome = matches!(reason, SleepReason::Staged | SleepReason::Failed);
        if self.pending_sleep.is_none() || outcome {
            self.pending_sleep = Some((secs, reason));
        }
        if let Some(dl) = self.dl.as_mut() {
            dl.stopping = true;
        }
        if self.state != State::Staged {
            self.state = State::Asleep;
        }
    }

    fn push_event(&mut self, e: Event) {
        if self.events.is_full() {
            // The application is not reading events; keep the newest.
            let _ = self.events.pop_front();
        }
        let _ = self.events.push_back(e);
    }

    fn push_op(&mut self, op: OpKind) {
        // Four slots suffice: one buffer means at most one write (or the persist after it) is
        // pending when a reply adds its own: set outcome, abandon, begin.
        let pushed = self.ops.push_back(op).is_ok();
        debug_assert!(pushed, "storage operation queue full");
    }

    // ---------------------------------------------------------------- transmit

    /// The next message to send at `now`, encoded into `buf`: what it is and its length;
    /// `None` if nothing is due. The driver reports what the link carried for it with
    /// [`Device::link_bytes`].
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        let t = self.next_transmit(now, buf)?;
        self.stats.messages_sent += 1;
        Some(t)
    }

    fn next_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        if let Some((image, phase, result)) = self.report.take() {
            let msg = Outbound::Report(Report {
                device_id: &self.config.device_id,
                image,
                phase,
                result,
            });
            let len = wire::encode_outbound(&msg, buf).ok()?;
            return Some(Transmit {
                len,
                what: Sent::Report,
                twice: self.twice(),
            });
        }
        match self.state {
            State::CheckingIn => match self.transmit_checkin(now, buf) {
                Some(t) => Some(t),
                // A download resumed early asks for chunks while the check-in is answered.
                None if self.dl.is_some() => self.transmit_request(now, buf),
                None => None,
            },
            State::Downloading => self.transmit_request(now, buf),
            _ => None,
        }
    }

    /// Whether requests go twice now: the link allows it, the server drops copies and the
    /// path loses that much.
    fn twice(&self) -> bool {
        self.may_twice() && self.cc.twice()
    }

    /// The check-in went out `max_attempts` times in silence, or as often as any request may
    /// while the path answers otherwise.
    fn checkin_exhausted(&self) -> bool {
        self.checkin_silent >= self.config.max_attempts
            || self.checkin_attempts
                >= self
                    .config
                    .max_attempts
                    .saturating_mul(congestion::MAX_SENDS_FACTOR)
    }

    fn transmit_checkin(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        if self.checkin_sent.is_some() && now < self.checkin_due {
            return None;
        }
        if self.checkin_exhausted() {
            return None;
        }
        let resume = self.resume_state().and_then(|s| {
            (s.phase == ResumePhase::Downloading).then_some(ResumeHint {
                manifest: s.manifest.prefix(),
                next_offset: s.next_offset,
            })
        });
        let msg = Outbound::CheckIn(CheckIn {
            device_id: &self.config.device_id,
            vendor: self.config.vendor,
            class: self.config.class,
            running: self.config.running,
            last: self.config.last_outcome,
            resume,
            caps: Capabilities {
                max_chunk: self.config.max_chunk,
                window: self.config.window,
            },
            budget: self.wake.budget,
        });
        let len = wire::encode_outbound(&msg, buf).ok()?;
        self.checkin_attempts += 1;
        self.checkin_silent += 1;
        if self.checkin_attempts > 1 {
            self.stats.retransmissions += 1;
        }
        self.checkin_sent = Some(now);
        // Backed off per send in silence only: while chunks arrive, a lost check-in is random
        // loss, asked again at the measured timeout.
        self.checkin_due = now
            + self
                .cc
                .backed_off_rto(&self.rtt, &self.config, self.checkin_silent);
        Some(Transmit {
            len,
            what: Sent::CheckIn,
            // Most wakes send nothing else: the first send goes once. A resend goes twice on
            // a lossy path even before the server said it drops copies: a CoAP server answers
            // a repeated message from its deduplication cache (RFC 7252 section 4.5), so one
            // that keeps both sends a reply of a few dozen bytes twice at worst.
            twice: self.checkin_attempts > 1 && self.config.request_copies && self.cc.pairs_gate(),
        })
    }

    fn transmit_request(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        if self.past_deadline(now) {
            return None;
        }
        let (image, chunk_size) = self.dl.as_ref().map(|d| (d.image, d.manifest.chunk_size))?;
        // Retransmissions first, then new requests while the window and the budget allow.
        self.drop_late_resends(now);
        let oldest = self.window.oldest_sent();
        let ahead = self.window.items.len().saturating_sub(1);
        let (offset, len) = match self.window.next_due(now) {
            Some(o) if self.cc.may_resend(o, &self.config, oldest) => {
                self.cc
                    .on_resend(now, o, &self.rtt, &self.config, oldest, ahead);
                self.stats.retransmissions += 1;
                (o.offset, o.len)
            }
            _ => match self.new_request(now) {
                Some(request) => request,
                None => self.copy_request(now)?,
            },
        };
        let n = wire::encode_outbound(
            &Outbound::ChunkRequest(ChunkRequest { image, offset, len }),
            buf,
        )
        .ok()?;
        Some(Transmit {
            len: n,
            what: Sent::ChunkRequest {
                image,
                offset,
                len,
                chunk_size,
            },
            twice: self.twice(),
        })
    }

    /// Leaves for the next wake the requests due again whose resends the budget no longer
    /// allows (their replies could not come back in time, or the bytes are spent): sending
    /// them would only buy bytes for a sleeping radio.
    fn drop_late_resends(&mut self, now: Instant) {
        let mut dropped = false;
        while let Some((offset, len, sent, backoff)) = self
            .window
            .next_due(now)
            .map(|o| (o.offset, o.len, o.sent_at, o.backoff))
        {
            if self.budget_allows(now, len) {
                break;
            }
            // Refused for its bytes while the wake still has time: the reply may only be late
            // (a round trip measured on the small check-in, a chunk slow on the link), and
            // waiting for it costs no bytes, so it gets one more timer before it is dropped.
            // Refused because the wake's end is near: it is due before its timer only if a
            // later request's reply showed it lost (or its own came corrupt), so waiting out
            // the timer would keep the radio on for a reply that is not coming; it is dropped
            // now, and the wake ends once nothing else is on its way. (Waiting cost the demo
            // link 2 s of 112 awake at 15 % loss, for no bytes saved over a hundred seeds.)
            let in_time = self
                .wake
                .deadline
                .is_none_or(|d| now + self.reply_horizon() <= d);
            let timer = sent.filter(|_| in_time).map(|s| {
                s + self
                    .cc
                    .backed_off_rto(&self.rtt, &self.config, backoff.saturating_add(2))
            });
            match timer {
                Some(timer) if timer > now => {
                    if let Some(o) = self.window.items.iter_mut().find(|o| o.offset == offset) {
                        o.due = timer;
                    }
                }
                _ => {
                    let _ = self.window.take(offset);
                    dropped = true;
                }
            }
        }
        if dropped {
            if let Some(dl) = self.dl.as_mut() {
                dl.stopping = true;
            }
            self.maybe_finish_stopped();
        }
    }

    /// Opens a new request if the window, the image and the budget allow one.
    fn new_request(&mut self, now: Instant) -> Option<(u32, u16)> {
        if !self.cc.allows_new(self.window.in_flight(now)) {
            return None;
        }
        let dl = self.dl.as_mut()?;
        if dl.stopping {
            return None;
        }
        dl.skip_staged();
        let offset = dl.next_request;
        if offset >= dl.size() {
            return None;
        }
        let len = dl.chunk_len(offset);
        // Keep within the resume bitmap's reach of next_offset.
        let reach = dl
            .state
            .next_offset
            .saturating_add(dl.chunk().saturating_mul(crate::resume::MAX_AHEAD));
        if offset > reach {
            return None;
        }
        if !self.budget_allows(now, len) {
            // Before the check-in's reply the budget is judged by a guess of the round trip
            // (half the initial timeout); the reply measures it, and the requests go on.
            if self.state != State::CheckingIn {
                if let Some(dl) = self.dl.as_mut() {
                    dl.stopping = true;
                }
                self.maybe_finish_stopped();
            }
            return None;
        }
        let dl = self.dl.as_mut()?;
        dl.next_request = offset.saturating_add(u32::from(len));
        let due = self.cc.first_send(now, &self.rtt, &self.config);
        if !self.window.push(offset, len, now, due) {
            return None;
        }
        Some((offset, len))
    }

    /// A copy of an outstanding request, for a slot of the window that nothing new may fill
    /// (the image's last chunks are all asked for, or the resume bitmap's reach is): see
    /// `Controller::on_copy`.
    fn copy_request(&mut self, now: Instant) -> Option<(u32, u16)> {
        let in_flight = self.window.in_flight(now);
        if !self.cc.copies_allowed(in_flight)
            || !self.cc.allows_new(in_flight)
            || self.dl.as_ref().is_none_or(|dl| dl.stopping)
        {
            return None;
        }
        let len = self.window.copy_candidate()?.len;
        if !self.budget_allows(now, len) {
            return None;
        }
        let ahead = self.window.items.len().saturating_sub(1);
        let o = self.window.copy_candidate()?;
        self.cc.on_copy(now, o, &self.rtt, &self.config, ahead);
        self.stats.retransmissions += 1;
        Some((o.offset, o.len))
    }

    /// Estimated radio bytes for one chunk request and its reply, the request twice while
    /// requests go twice.
    fn exchange_cost(&self, len: u16) -> u64 {
        // Request: envelope 2 + image 5 + offset 5 + len 3; reply: envelope 2 + image 5 +
        // offset 5 + length 2 + CRC 4 + payload. Upper bounds, so the budget is never overrun.
        15 * (1 + u64::from(self.twice())) + 18 + u64::from(len)
    }

    fn budget_allows(&self, now: Instant, len: u16) -> bool {
        if let Some(deadline) = self.wake.deadline {
            if now + self.reply_horizon() > deadline {
                return false;
            }
        }
        if let Some(budget) = self.wake.budget.and_then(|b| b.bytes) {
            let in_flight: u64 = self
                .window
                .items
                .iter()
                .map(|o| self.exchange_cost(o.len) * (1 + u64::from(o.copies)))
                .sum::<u64>()
                + self.exchange_cost(len) * self.window.orphans(now) as u64;
            if self.used_bytes() + in_flight + self.exchange_cost(len) > u64::from(budget) {
                return false;
            }
        }
        true
    }

    /// How long before the wake's deadline the last request may go: the smoothed round trip
    /// and its variation, or, where shorter, the path's minimum plus the replies of the
    /// requests outstanding ([`Controller::reply_within`]). The smoothed round trip measured
    /// replies queued behind a whole window; a wake's last requests, with few outstanding,
    /// come back sooner, and stopping that early left the link idle for the last second of
    /// the wake.
    fn reply_horizon(&self) -> u64 {
        let smoothed = self.rtt.expected(&self.config);
        self.cc
            .reply_within(self.window.items.len())
            .map_or(smoothed, |r| r.min(smoothed))
    }

    fn past_deadline(&self, now: Instant) -> bool {
        self.wake.deadline.is_some_and(|d| now >= d)
    }

    /// Ends the wake once a download that stopped asking has nothing left in flight.
    fn maybe_finish_stopped(&mut self) {
        let stopped = self.dl.is_some_and(|d| d.stopping);
        if self.state == State::Downloading && stopped && self.window.is_empty() {
            self.finish(self.next_check_in, SleepReason::BudgetExhausted);
        }
    }

    // ---------------------------------------------------------------- receive

    /// Feeds one received message. Errors say why it was not used; none of them is fatal, and
    /// nothing from a message that fails is ever written as valid data.
    pub fn handle_message(&mut self, now: Instant, bytes: &[u8]) -> Result<(), RecvError> {
        self.stats.messages_received += 1;
        match wire::decode_inbound(bytes) {
            Ok(Inbound::CheckInReply(reply)) => self.on_reply(now, reply),
            Ok(Inbound::Chunk(chunk)) => self.on_chunk(now, &chunk),
            Err(DecodeError::NotInbound(_)) => Err(RecvError::NotForDevice),
            Err(e) => Err(e.into()),
        }
    }

    fn on_reply(&mut self, now: Instant, reply: CheckInReply<'_>) -> Result<(), RecvError> {
        if self.state != State::CheckingIn {
            return Err(RecvError::Unexpected);
        }
        if self.checkin_attempts == 1 {
            if let Some(sent) = self.checkin_sent {
                self.sample_rtt(sent, now);
            }
        }
        if self.config.last_outcome != LastOutcome::None {
            // The server has seen the outcome with this check-in: storage may forget it. Only
            // a reply says so; a check-in nobody answered keeps it for the next wake.
            self.config.last_outcome = LastOutcome::None;
            self.push_op(OpKind::SetOutcome(LastOutcome::None));
        }
        if let Some(early) = self.dl.as_ref().map(|d| d.state.manifest) {
            // A download resumed early: an offer of the same manifest confirms it.
            let confirms = match &reply {
                CheckInReply::Update {
                    manifest: Some(m), ..
                } => m.digest() == early,
                CheckInReply::Update { manifest: None, .. } => true,
                _ => false,
            };
            // Verified again as any offer is; a manifest that no longer passes ends the
            // download through the offer's own path, which reports why.
            let verified = confirms && self.early_passes();
            match reply {
                CheckInReply::Update {
                    image,
                    urgency,
                    next_check_in,
                    ..
                } if verified => {
                    self.confirm_early(image, urgency, next_check_in);
                    return Ok(());
                }
                _ => self.drop_early(),
            }
        }
        match reply {
            CheckInReply::UpToDate { next_check_in } => {
                if self.restored.is_some() {
                    self.push_op(OpKind::Abandon);
                    self.restored = None;
                }
                self.finish(next_check_in, SleepReason::UpToDate);
            }
            CheckInReply::Defer {
                retry_after,
                reason,
            } => {
                self.finish(retry_after, SleepReason::Deferred(reason));
            }
            CheckInReply::Cancel { next_check_in } => {
                if let Some(state) = self.restored.take() {
                    self.push_op(OpKind::Abandon);
                    self.report = Some((state.image, Phase::Failed, ResultCode::CANCELLED));
                }
                self.finish(next_check_in, SleepReason::Cancelled);
            }
            CheckInReply::Update {
                image,
                manifest,
                resume_from: _,
                urgency,
                next_check_in,
            } => {
                self.next_check_in = next_check_in;
                let stored = match (manifest, self.restored) {
                    (Some(m), _) => StoredManifest::from_signed(&m),
                    (None, Some(_)) => self.stored,
                    (None, None) => None,
                };
                let Some(stored) = stored else {
                    self.finish(self.config.fallback_sleep_secs, SleepReason::Failed);
                    return Err(RecvError::UnknownResume);
                };
                self.accept_offer(image, stored, urgency, next_check_in);
            }
        }
        Ok(())
    }

    /// True if the manifest of the download resumed early passes every check of an offer.
    fn early_passes(&self) -> bool {
        self.dl.is_some()
            && self.stored.as_ref().is_some_and(|m| {
                m.as_signed()
                    .verify(&self.verifier, &self.profile())
                    .is_ok()
            })
    }

    /// The reply offered the download resumed early: it goes on, as the download of this wake.
    fn confirm_early(&mut self, image: ImageId, urgency: Urgency, next_check_in: u32) {
        self.next_check_in = next_check_in;
        self.restored = None;
        let Some(dl) = self.dl.as_mut() else {
            return;
        };
        if dl.image != image {
            // The same image under another id: ask again under this one.
            dl.image = image;
            dl.state.image = image;
            dl.next_request = dl.state.next_offset;
            self.window.clear();
        }
        let (chunk, size) = (dl.chunk(), dl.size());
        let complete = dl.state.is_complete(size);
        // The early requests' timers came from the guess made before the reply measured the
        // round trip.
        self.cc.retime(&mut self.window, &self.rtt, &self.config);
        let (version, resume_from) = (dl.manifest.version, dl.state.staged_bytes(chunk, size));
        self.push_event(Event::UpdateOffered {
            version,
            size,
            resume_from,
            urgency,
        });
        self.state = State::Downloading;
        if complete {
            // Every chunk is written (marking follows the write); its reads queue behind
            // whatever is still pending.
            self.downloaded();
        } else {
            // The budget may have stopped new requests while the check-in was answered.
            self.maybe_finish_stopped();
        }
    }

    fn accept_offer(
        &mut self,
        image: ImageId,
        stored: StoredManifest,
        urgency: Urgency,
        next_check_in: u32,
    ) {
        let signed = stored.as_signed();
        let manifest = match signed.verify(&self.verifier, &self.profile()) {
            Ok(m) => m,
            Err(e) => {
                self.report = Some((image, Phase::Rejected, e.result_code()));
                self.push_event(Event::ManifestRejected(e));
                self.finish(next_check_in, SleepReason::Rejected);
                return;
            }
        };
        let digest = signed.digest();
        let state = match self.restored.take() {
            Some(mut state) if state.manifest == digest => {
                state.image = image;
                state
            }
            earlier => {
                if earlier.is_some() {
                    self.push_op(OpKind::Abandon);
                }
                self.push_op(OpKind::Begin);
                ResumeState::new(digest, image)
            }
        };
        let (chunk, size) = (u32::from(manifest.chunk_size), manifest.transfer_size());
        self.push_event(Event::UpdateOffered {
            version: manifest.version,
            size,
            resume_from: state.staged_bytes(chunk, size),
            urgency,
        });
        self.window.clear();
        self.stored = Some(stored);
        self.dl = Some(Download {
            image,
            manifest,
            state,
            next_request: state.next_offset,
            stopping: false,
        });
        match state.phase {
            ResumePhase::Staged => {
                self.state = State::Staged;
                self.push_event(Event::Staged {
                    version: manifest.version,
                    sequence: manifest.sequence,
                });
                self.finish(next_check_in, SleepReason::Staged);
            }
            ResumePhase::Downloading if state.is_complete(size) => self.downloaded(),
            ResumePhase::Downloading => self.state = State::Downloading,
        }
    }

    /// Feeds one chunk that a transport received in its own framing (a CoAP Block2 response,
    /// say), as if it had arrived in a [`Message::Chunk`](crate::wire::Message::Chunk).
    pub fn handle_chunk(&mut self, now: Instant, chunk: &Chunk<'_>) -> Result<(), RecvError> {
        self.stats.messages_received += 1;
        self.on_chunk(now, chunk)
    }

    /// Counts what the link carried, as the driver saw it (framing, acknowledgements, messages
    /// that were no use included): byte budgets and statistics are in link bytes.
    pub fn link_bytes(&mut self, sent: u64, received: u64) {
        self.stats.bytes_sent = self.stats.bytes_sent.saturating_add(sent);
        self.stats.bytes_received = self.stats.bytes_received.saturating_add(received);
    }

    /// The chunk size of the download in progress.
    pub fn chunk_size(&self) -> Option<u16> {
        self.dl.as_ref().map(|d| d.manifest.chunk_size)
    }

    /// The image digest of the download in progress (transports check cache validators such
    /// as a CoAP ETag against it).
    pub fn image_digest(&self) -> Option<Digest> {
        self.dl.as_ref().map(|d| d.manifest.digest)
    }

    fn on_chunk(&mut self, now: Instant, chunk: &Chunk<'_>) -> Result<(), RecvError> {
        self.cc.on_heard(now);
        self.checkin_silent = 0;
        let Some(dl) = self.dl.as_ref() else {
            return Err(RecvError::Unexpected);
        };
        let early = self.state == State::CheckingIn;
        if !(self.state == State::Downloading || early) || chunk.image != dl.image {
            self.stats.duplicate_chunks += 1;
            return Err(RecvError::Unexpected);
        }
        let Some(item) = self
            .window
            .items
            .iter()
            .find(|o| o.offset == chunk.offset)
            .copied()
        else {
            self.stats.duplicate_chunks += 1;
            self.window.orphan_answered();
            return Err(RecvError::Unexpected);
        };
        if chunk.payload.len() != usize::from(item.len) || !chunk.crc_ok() {
            self.stats.corrupt_chunks += 1;
            self.window.resend_now(chunk.offset, now);
            return Err(RecvError::CorruptChunk(chunk.offset));
        }
        if self.buf_busy {
            self.window.resend_now(chunk.offset, now);
            return Err(RecvError::Busy(chunk.offset));
        }
        let dst = self
            .buf
            .get_mut(..chunk.payload.len())
            .ok_or(RecvError::CorruptChunk(chunk.offset))?;
        dst.copy_from_slice(chunk.payload);
        let _ = self.window.take(chunk.offset);
        self.cc
            .on_chunk(now, &item, &mut self.rtt, &mut self.window);
        self.buf_busy = true;
        self.stats.payload_bytes_accepted += chunk.payload.len() as u64;
        self.push_op(OpKind::Write {
            offset: chunk.offset,
            len: item.len,
        });
        Ok(())
    }

    // ---------------------------------------------------------------- timers

    /// When [`Device::handle_timeout`] should next be called, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let timer = match self.state {
            State::CheckingIn => {
                let checkin = self.checkin_sent.map(|_| self.checkin_due);
                match (checkin, self.window.earliest_due()) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            }
            State::Downloading => self.window.earliest_due(),
            _ => None,
        };
        let talking = matches!(self.state, State::CheckingIn | State::Downloading);
        match (timer, self.wake.deadline) {
            (Some(t), Some(d)) if talking => Some(t.min(d)),
            (None, Some(d)) if talking => Some(d),
            (t, _) => t,
        }
    }

    /// Advances timers to `now`: gives up on a silent link, ends the wake at its deadline.
    /// Due retransmissions come out of the next [`Device::poll_transmit`].
    pub fn handle_timeout(&mut self, now: Instant) {
        self.window.expire_orphans(now);
        match self.state {
            // No answer within the wake's time: try again after the fallback sleep.
            State::CheckingIn if self.past_deadline(now) => {
                self.finish(
                    self.config.fallback_sleep_secs,
                    SleepReason::BudgetExhausted,
                );
            }
            // A download resumed early whose requests went unanswered as often as the path
            // allows: no more of them; the check-in decides the rest of the wake.
            State::CheckingIn
                if self.dl.is_some() && self.cc.exhausted(&self.window, now, &self.config) =>
            {
                self.window.clear();
                if let Some(dl) = self.dl.as_mut() {
                    dl.stopping = true;
                }
            }
            State::CheckingIn if self.checkin_exhausted() && now >= self.checkin_due => {
                self.finish(self.config.fallback_sleep_secs, SleepReason::LinkLost);
            }
            State::Downloading => {
                if self.past_deadline(now) {
                    self.window.clear();
                    self.wake.deadline_cut = true;
                    self.finish(self.next_check_in, SleepReason::BudgetExhausted);
                } else if self.cc.exhausted(&self.window, now, &self.config) {
                    self.window.clear();
                    self.finish(self.next_check_in, SleepReason::LinkLost);
                }
            }
            _ => {}
        }
    }

    // ---------------------------------------------------------------- storage

    /// The next storage operation to carry out; report its result with [`Device::storage_done`]
    /// before polling again.
    pub fn poll_storage(&mut self) -> Option<StorageOp<'_>> {
        if self.op_in_flight.is_some() {
            return None;
        }
        let kind = self.ops.pop_front()?;
        self.op_in_flight = Some(kind);
        let dl = self.dl.as_ref();
        Some(match kind {
            OpKind::Begin => StorageOp::Begin {
                manifest: self.stored.as_ref()?,
                state: dl?.state,
            },
            OpKind::Write { offset, len } => StorageOp::Write {
                offset,
                data: self.buf.get(..usize::from(len))?,
            },
            OpKind::Persist => StorageOp::Persist(dl?.state),
            OpKind::Read { offset, len } => StorageOp::Read {
                offset,
                buf: self.buf.get_mut(..usize::from(len))?,
            },
            OpKind::MarkStaged => StorageOp::MarkStaged(dl?.state),
            OpKind::Abandon => StorageOp::Abandon,
            OpKind::SetOutcome(o) => StorageOp::SetOutcome(o),
            OpKind::Rebuild => {
                let dl = dl?;
                StorageOp::Rebuild {
                    patch: dl.manifest.patch.as_ref()?,
                    image_size: dl.manifest.image_size,
                }
            }
        })
    }

    /// Reports the result of the operation last returned by [`Device::poll_storage`].
    pub fn storage_done(&mut self, result: Result<(), StorageFailure>) {
        let Some(kind) = self.op_in_flight.take() else {
            return;
        };
        if let Err(failure) = result {
            self.storage_failed(failure);
            return;
        }
        match kind {
            OpKind::Write { offset, .. } => {
                self.buf_busy = false;
                if self.stale_writes > 0 {
                    // Written for a download the reply did not confirm: not recorded.
                    self.stale_writes -= 1;
                    return;
                }
                if let Some(dl) = self.dl.as_mut() {
                    let (chunk, size) = (dl.chunk(), dl.size());
                    dl.state.mark(offset, chunk, size);
                }
                self.push_op(OpKind::Persist);
            }
            OpKind::Persist => {
                let complete = self.dl.is_some_and(|d| d.state.is_complete(d.size()));
                let confirmed = self.state == State::Downloading
                    || (self.state == State::Asleep && self.wake.deadline_cut);
                if complete && confirmed && self.ops.is_empty() {
                    self.downloaded();
                } else {
                    self.maybe_finish_stopped();
                }
            }
            OpKind::Read { offset, len } => {
                if let Some(data) = self.buf.get(..usize::from(len)) {
                    self.hasher.update(data);
                }
                self.verify_next(offset.saturating_add(u32::from(len)));
            }
            OpKind::Rebuild => self.start_verify(),
            OpKind::Begin | OpKind::MarkStaged | OpKind::Abandon | OpKind::SetOutcome(_) => {}
        }
    }

    fn storage_failed(&mut self, failure: StorageFailure) {
        self.ops.clear();
        self.window.clear();
        self.buf_busy = false;
        let code = match failure {
            StorageFailure::OutOfSpace => ResultCode::OUT_OF_STORAGE,
            StorageFailure::Io => ResultCode::STORAGE_ERROR,
            StorageFailure::PatchSource => ResultCode::PATCH_SOURCE_MISMATCH,
            StorageFailure::Patch => ResultCode::PATCH_FAILED,
        };
        self.push_event(Event::DownloadFailed(code));
        if failure.ends_wake() {
            if let Some(dl) = self.dl.as_ref() {
                self.report = Some((dl.image, Phase::Failed, code));
            }
            self.finish(self.config.fallback_sleep_secs, SleepReason::Failed);
        } else if let Some(dl) = self.dl.take() {
            // This patch cannot be used: persisted, so the next check-in tells the server even
            // after a reset, and the server offers the whole image instead.
            self.fail_download(dl.image, dl.manifest.sequence, code);
        }
    }

    /// Forgets the download and remembers why it failed for the next check-in.
    fn fail_download(&mut self, image: ImageId, sequence: u32, reason: ResultCode) {
        let failed = LastOutcome::Failed { sequence, reason };
        self.push_op(OpKind::Abandon);
        self.push_op(OpKind::SetOutcome(failed));
        self.report = Some((image, Phase::Failed, reason));
        self.config.last_outcome = failed;
        self.finish(self.next_check_in, SleepReason::Failed);
    }

    /// Carries out every pending operation on a blocking storage.
    pub fn drive_storage<S: UpdateStorage>(&mut self, storage: &mut S) -> Result<(), S::Error> {
        while let Some(op) = self.poll_storage() {
            match storage.apply(op) {
                Ok(()) => self.storage_done(Ok(())),
                Err(e) => {
                    let failure = S::failure(&e);
                    self.storage_done(Err(failure));
                    if failure.ends_wake() {
                        return Err(e);
                    }
                }
            }
        }
        Ok(())
    }

    // ---------------------------------------------------------------- verify

    /// Every chunk is staged: a patch rebuilds the image first (again after a reset that cut a
    /// rebuild short), then the image's digest is checked from storage.
    fn downloaded(&mut self) {
        if self.dl.is_some_and(|d| d.manifest.patch.is_some()) {
            self.state = State::Verifying;
            self.window.clear();
            self.push_op(OpKind::Rebuild);
        } else {
            self.start_verify();
        }
    }

    fn start_verify(&mut self) {
        self.state = State::Verifying;
        self.window.clear();
        self.hasher = Sha256::new();
        self.verify_next(0);
    }

    fn verify_next(&mut self, offset: u32) {
        let Some(dl) = self.dl.as_ref() else {
            return;
        };
        let size = dl.manifest.image_size;
        if offset < size {
            let cap = u32::try_from(CHUNK)
                .unwrap_or(u32::MAX)
                .min(u32::from(u16::MAX));
            let len = (size - offset).min(cap);
            self.push_op(OpKind::Read {
                offset,
                len: u16::try_from(len).unwrap_or(u16::MAX),
            });
            return;
        }
        let hasher = core::mem::take(&mut self.hasher);
        let digest = Digest(hasher.finalize().into());
        let (image, manifest) = (dl.image, dl.manifest);
        if digest == manifest.digest {
            if let Some(dl) = self.dl.as_mut() {
                dl.state.phase = ResumePhase::Staged;
            }
            self.push_op(OpKind::MarkStaged);
            self.state = State::Staged;
            self.push_event(Event::Staged {
                version: manifest.version,
                sequence: manifest.sequence,
            });
            self.report = Some((image, Phase::Staged, ResultCode::INITIAL));
            self.finish(self.next_check_in, SleepReason::Staged);
        } else {
            // A patch that rebuilt the wrong image failed as a patch: the whole image may
            // still do. Persisted, so the next check-in tells the server even after a reset,
            // and the server stops offering this device what it cannot stage.
            let reason = if manifest.patch.is_some() {
                ResultCode::PATCH_FAILED
            } else {
                ResultCode::INTEGRITY_FAILURE
            };
            self.dl = None;
            self.push_event(Event::DownloadFailed(reason));
            self.fail_download(image, manifest.sequence, reason);
        }
    }

    // ---------------------------------------------------------------- events

    /// The next event. [`Event::Sleep`] comes last, once nothing is left to send or store.
    pub fn poll_event(&mut self) -> Option<Event> {
        if let Some(e) = self.events.pop_front() {
            return Some(e);
        }
        let idle = self.ops.is_empty() && self.op_in_flight.is_none() && self.report.is_none();
        if idle {
            if let Some((secs, reason)) = self.pending_sleep.take() {
                self.state = State::Asleep;
                return Some(Event::Sleep { secs, reason });
            }
        }
        None
    }
}
