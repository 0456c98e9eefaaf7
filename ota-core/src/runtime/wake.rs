//! [`run_wake`]: one wake of a device over a link, start to sleep.

use crate::device::{Device, Event, SleepReason};
use crate::manifest::Verifier;
use crate::time::Instant;
use crate::wire::{LastOutcome, WakeBudget};

use super::clock::{with_deadline, yield_now, Clock};
use super::link::{Incoming, Link, LinkError, OpenContext, Opened, Session};
use super::storage::Storage;

/// Timing of a wake beyond the state machine's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WakeOptions {
    /// Bound on opening a session (connect, subscribe, a retained state).
    pub open_timeout_ms: u32,
    /// Pause before opening again a session the link lost.
    pub reconnect_delay_ms: u32,
}

impl Default for WakeOptions {
    fn default() -> Self {
        Self {
            open_timeout_ms: 10_000,
            reconnect_delay_ms: 1_000,
        }
    }
}

/// How a wake ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WakeEnd {
    /// Seconds to sleep.
    pub sleep_secs: u32,
    /// Why the wake ended.
    pub reason: SleepReason,
    /// True if a check-in went out on a session (false if the link settled the wake, or no
    /// session could be opened).
    pub checked_in: bool,
    /// Sessions opened (more than one if the link lost one during the wake).
    pub sessions: u32,
}

/// What ends a wake early. A lost session is not one: it is opened again.
#[derive(Debug, thiserror::Error)]
pub enum WakeError<L: core::fmt::Debug, S: core::fmt::Debug> {
    /// The link refused to go on.
    #[error("link: {0:?}")]
    Link(L),
    /// Storage failed (the state machine was told, and reported it where it could).
    #[error("storage: {0:?}")]
    Storage(S),
    /// The receive buffer given to [`run_wake_in`] cannot hold a check-in reply with its
    /// manifest over this link; nothing was done.
    #[error(
        "a {len}-byte receive buffer cannot hold a check-in reply over this link ({need} bytes)"
    )]
    ReceiveBuffer {
        /// The buffer's length.
        len: usize,
        /// [`crate::wire::MAX_REPLY_LEN`] and the link's overhead.
        need: usize,
    },
}

/// Where a session left the wake.
enum Step<E> {
    Done(u32, SleepReason),
    Lost,
    Fatal(E),
    /// A message arrived at this time, in these bytes of the receive buffer: the caller hands
    /// it to the state machine and talks on.
    Message(Instant, core::ops::Range<usize>),
}

/// Runs one wake of `dev`: restores it from `storage`, opens a session on `link` (again if
/// the link loses it), checks in and downloads within `budget`, carries out every storage
/// operation, hands every event to `on_event` (the sleep event last), closes the session and
/// stores the link's counter. Every byte the link carried is counted into the device's
/// statistics and byte budget. Messages arrive in a buffer of [`RX`] bytes inside the wake's
/// future, room for 1 KiB chunks; [`run_wake_in`] takes one sized for the device.
pub async fn run_wake<V, const N: usize, const W: usize, L, S, C>(
    dev: &mut Device<V, N, W>,
    link: &mut L,
    storage: &mut S,
    clock: &C,
    budget: WakeBudget,
    options: &WakeOptions,
    on_event: impl FnMut(&Event),
) -> Result<WakeEnd, WakeError<L::Error, S::Error>>
where
    V: Verifier,
    L: Link,
    S: Storage,
    C: Clock,
{
    let mut rx = [0u8; RX];
    let mut wake = Wake::new(budget, clock, &mut rx);
    wake.run(dev, link, storage, clock, options, on_event).await
}

/// [`run_wake`] with messages received into `rx`, which a small device sizes for its chunks:
/// the link's overhead ([`LinkLimits::overhead`](super::LinkLimits)) on top of the larger of
/// its chunk buffer and [`MAX_REPLY_LEN`](crate::wire::MAX_REPLY_LEN), the longest check-in
/// reply (a smaller buffer ends the wake at once with [`WakeError::ReceiveBuffer`]). The
/// device then never asks for a chunk that would not fit: its largest chunk is narrowed to
/// `rx` less that overhead.
// The eight arguments are run_wake's seven and the buffer.
#[allow(clippy::too_many_arguments)]
pub async fn run_wake_in<V, const N: usize, const W: usize, L, S, C>(
    dev: &mut Device<V, N, W>,
    link: &mut L,
    storage: &mut S,
    clock: &C,
    budget: WakeBudget,
    options: &WakeOptions,
    rx: &mut [u8],
    on_event: impl FnMut(&Event),
) -> Result<WakeEnd, WakeError<L::Error, S::Error>>
where
    V: Verifier,
    L: Link,
    S: Storage,
    C: Clock,
{
    // The wake's state lives here and `run` borrows it: an `async fn` taking it by value
    // would keep it twice (the argument and its copy).
    let mut wake = Wake::new(budget, clock, rx);
    wake.run(dev, link, storage, clock, options, on_event).await
}

impl<'r> Wake<'r> {
    fn new<C: Clock>(budget: WakeBudget, clock: &C, rx: &'r mut [u8]) -> Self {
        let end = budget.millis.map(|ms| clock.now() + u64::from(ms));
        Wake {
            talking: false,
            redial_first: false,
            sessions: 0,
            budget,
            end,
            pending: None,
            tx: [0; TX],
            rx,
        }
    }

    async fn run<V, const N: usize, const W: usize, L, S, C>(
        &mut self,
        dev: &mut Device<V, N, W>,
        link: &mut L,
        storage: &mut S,
        clock: &C,
        options: &WakeOptions,
        mut on_event: impl FnMut(&Event),
    ) -> Result<WakeEnd, WakeError<L::Error, S::Error>>
    where
        V: Verifier,
        L: Link,
        S: Storage,
        C: Clock,
    {
        let w = self;
        let need = crate::wire::MAX_REPLY_LEN + usize::from(link.limits().overhead);
        if w.rx.len() < need {
            return Err(WakeError::ReceiveBuffer {
                len: w.rx.len(),
                need,
            });
        }
        let persisted = storage.load().await.map_err(WakeError::Storage)?;
        dev.restore(persisted);
        link.limits().apply_within(dev.config_mut(), w.rx.len());
        link.restore_counter(storage.load_counter().await.map_err(WakeError::Storage)?);
        let end = w.end;
        let bound = |t: Instant| end.map_or(t, |e| t.min(e));
        loop {
            let ctx = OpenContext {
                running: dev.config().running.digest,
                idle: dev.resume_state().is_none()
                    && dev.config().last_outcome == LastOutcome::None,
                deadline: end,
            };
            let deadline = bound(clock.now() + u64::from(options.open_timeout_ms));
            // The session borrows the link: it is closed and dropped inside this block. One
            // call of `talk` serves a session and the wait without one, so a firmware carries
            // one copy of its future.
            let ended = {
                let mut session = None;
                let mut settled = None;
                if !w.redial_first {
                    match with_deadline(clock, deadline, link.open(ctx)).await {
                        Ok(Ok(Opened::Settled { sleep_secs })) if !w.talking => {
                            settled = Some(sleep_secs);
                        }
                        Ok(Ok(Opened::Session(opened))) => {
                            w.sessions += 1;
                            session = Some(opened);
                        }
                        Ok(Err(LinkError::Fatal(e))) => return Err(WakeError::Link(e)),
                        // Settled after the wake began talking, failed or timed out: the
                        // state machine's clock keeps running until the next attempt.
                        _ => {}
                    }
                }
                match settled {
                    Some(sleep_secs) => Err(sleep_secs),
                    None => {
                        w.start_talking(dev, clock);
                        let redial = match session {
                            Some(_) => Instant(u64::MAX),
                            None => clock.now() + u64::from(options.reconnect_delay_ms),
                        };
                        // A lost session is followed by the wait before dialling again.
                        w.redial_first = session.is_some();
                        let ended = loop {
                            let talked = w
                                .talk(session.as_mut(), dev, storage, clock, redial, &mut on_event)
                                .await;
                            match talked {
                                // Handled here, outside the talk loop's frame: a check-in
                                // reply's signature is verified with that frame off the stack
                                // (about 2 KB less at the high-water mark with Ed25519).
                                Step::Message(at, bytes) => {
                                    // Bad or late input is dropped; the state machine's
                                    // timers fetch again what it still needs.
                                    let m = w.rx.get(bytes).unwrap_or(&[]);
                                    let _ = dev.handle_message(at, m);
                                    dev.handle_timeout(clock.now());
                                }
                                Step::Done(sleep_secs, reason) => break Some((sleep_secs, reason)),
                                Step::Lost => break None,
                                Step::Fatal(e) => return Err(e),
                            }
                        };
                        if let (Some((_, reason)), Some(session)) = (ended, session) {
                            let cut_short = matches!(
                                reason,
                                SleepReason::BudgetExhausted | SleepReason::LinkLost
                            );
                            session.close(cut_short).await;
                        }
                        Ok(ended)
                    }
                }
            };
            let (sent, received) = link.take_link_bytes();
            dev.link_bytes(sent, received);
            let ended = match ended {
                Ok(ended) => ended,
                Err(sleep_secs) => {
                    on_event(&Event::Sleep {
                        secs: sleep_secs,
                        reason: SleepReason::UpToDate,
                    });
                    return Ok(WakeEnd {
                        sleep_secs,
                        reason: SleepReason::UpToDate,
                        checked_in: false,
                        sessions: w.sessions + 1,
                    });
                }
            };
            if let Some((sleep_secs, reason)) = ended {
                if let Some(next) = link.settle_counter() {
                    storage
                        .store_counter(next)
                        .await
                        .map_err(WakeError::Storage)?;
                }
                return Ok(WakeEnd {
                    sleep_secs,
                    reason,
                    checked_in: w.sessions > 0,
                    sessions: w.sessions,
                });
            }
        }
    }
}

/// Largest message a device sends.
const TX: usize = crate::wire::MAX_SENT_LEN;
/// The receive buffer [`run_wake`] keeps: a 1 KiB chunk and its framing.
pub const RX: usize = 1280;

struct Wake<'r> {
    /// Past any settled state: the state machine is awake.
    talking: bool,
    /// A session was lost: wait out the reconnect delay before dialling again.
    redial_first: bool,
    sessions: u32,
    budget: WakeBudget,
    end: Option<Instant>,
    /// A message the link could not take yet (`LinkError::Busy`).
    pending: Option<crate::device::Transmit>,
    tx: [u8; TX],
    rx: &'r mut [u8],
}

impl Wake<'_> {
    /// Wakes the state machine with what is left of the time budget.
    fn start_talking<V: Verifier, const N: usize, const W: usize, C: Clock>(
        &mut self,
        dev: &mut Device<V, N, W>,
        clock: &C,
    ) {
        if self.talking {
            return;
        }
        self.talking = true;
        let now = clock.now();
        let budget = WakeBudget {
            millis: self
                .end
                .map(|e| u32::try_from(e.since(now)).unwrap_or(u32::MAX)),
            ..self.budget
        };
        dev.wake(now, budget);
    }

    /// Carries out the state machine's storage operations one at a time (yielding between
    /// them) and hands over its events; `Some` once it says sleep.
    async fn service<V: Verifier, const N: usize, const W: usize, S: Storage>(
        dev: &mut Device<V, N, W>,
        storage: &mut S,
        on_event: &mut impl FnMut(&Event),
    ) -> Result<Option<(u32, SleepReason)>, S::Error> {
        while let Some(op) = dev.poll_storage() {
            match storage.apply(op).await {
                Ok(()) => dev.storage_done(Ok(())),
                Err(e) => {
                    let failure = S::failure(&e);
                    dev.storage_done(Err(failure));
                    if failure.ends_wake() {
                        return Err(e);
                    }
                }
            }
            yield_now().await;
        }
        while let Some(ev) = dev.poll_event() {
            on_event(&ev);
            if let Event::Sleep { secs, reason } = ev {
                return Ok(Some((secs, reason)));
            }
        }
        Ok(None)
    }

    /// Talks on `session` until the wake ends or the session is lost; with no session, keeps
    /// the state machine's clock running until `redial` (what it sends meanwhile is lost, as on
    /// a dead radio link) and returns [`Step::Lost`] then. One loop serves both, so a firmware
    /// carries one copy of it.
    // The eight arguments are the wake's parts and the deadline.
    #[allow(clippy::too_many_arguments)]
    async fn talk<V, const N: usize, const W: usize, T, S, C, LE>(
        &mut self,
        mut session: Option<&mut T>,
        dev: &mut Device<V, N, W>,
        storage: &mut S,
        clock: &C,
        redial: Instant,
        on_event: &mut impl FnMut(&Event),
    ) -> Step<WakeError<LE, S::Error>>
    where
        V: Verifier,
        T: Session<Error = LE>,
        S: Storage,
        C: Clock,
        LE: core::fmt::Debug,
    {
        if session.is_none() {
            self.pending = None;
        }
        loop {
            // Send what the state machine has, as far as the link takes it.
            loop {
                if let Some(v) = session.as_mut().and_then(|s| s.counter_to_store()) {
                    if let Err(e) = storage.store_counter(v).await {
                        return Step::Fatal(WakeError::Storage(e));
                    }
                    if let Some(s) = session.as_mut() {
                        s.counter_stored(v);
                    }
                }
                let t = match self.pending.take() {
                    Some(p) => p,
                    None => match dev.poll_transmit(clock.now(), &mut self.tx) {
                        Some(t) => t,
                        None => break,
                    },
                };
                let Some(s) = session.as_mut() else {
                    continue;
                };
                let sent = s.send(t, self.tx.get(..t.len).unwrap_or(&[])).await;
                let (tx, rx) = s.take_link_bytes();
                dev.link_bytes(tx, rx);
                match sent {
                    Ok(()) => {}
                    Err(LinkError::Busy) => {
                        self.pending = Some(t);
                        break;
                    }
                    Err(LinkError::Lost) => return Step::Lost,
                    Err(LinkError::Fatal(e)) => return Step::Fatal(WakeError::Link(e)),
                }
            }
            match Self::service(dev, storage, on_event).await {
                Ok(Some((secs, reason))) => return Step::Done(secs, reason),
                Ok(None) => {}
                Err(e) => return Step::Fatal(WakeError::Storage(e)),
            }
            let now = clock.now();
            let due = dev.poll_timeout();
            match session.as_mut() {
                Some(s) => {
                    // Wait for the state machine's next deadline; sooner while a message
                    // waits.
                    let mut wake_at = due.unwrap_or(now + 1_000);
                    if self.pending.is_some() {
                        wake_at = wake_at.min(now + 20);
                    }
                    // Where the receive buffer lies, to say where in it a message is.
                    let (base, room) = (self.rx.as_ptr() as usize, self.rx.len());
                    let got = s.recv(self.rx, wake_at).await;
                    let (tx, rx) = s.take_link_bytes();
                    dev.link_bytes(tx, rx);
                    match got {
                        Ok(Some(incoming)) => {
                            let now = clock.now();
                            if let Some(drops) = s.drops_copies() {
                                dev.server_drops_copies(drops);
                            }
                            // Bad or late input is dropped; the state machine's timers fetch
                            // again what it still needs.
                            let _ = match incoming {
                                Incoming::Message(m) => {
                                    let at = (m.as_ptr() as usize).wrapping_sub(base);
                                    match at.checked_add(m.len()) {
                                        Some(end) if end <= room => {
                                            return Step::Message(now, at..end)
                                        }
                                        // Not in the receive buffer, against
                                        // `Session::recv`'s contract: dropped.
                                        _ => Ok(()),
                                    }
                                }
                                Incoming::Chunk(c) => dev.handle_chunk(now, &c),
                                Incoming::Nothing => Ok(()),
                            };
                        }
                        Ok(None) | Err(LinkError::Busy) => {}
                        Err(LinkError::Lost) => return Step::Lost,
                        Err(LinkError::Fatal(e)) => return Step::Fatal(WakeError::Link(e)),
                    }
                }
                None => {
                    clock
                        .sleep_until(due.map_or(redial, |t| t.min(redial)))
                        .await
                }
            }
            dev.handle_timeout(clock.now());
            if session.is_none() && clock.now() >= redial {
                return Step::Lost;
            }
        }
    }
}
