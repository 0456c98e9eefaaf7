//! An exact link for tests about timing: every datagram arrives `ONE_WAY_MS` after it left,
//! with no rate limit, and the link loses only the device's sends a test names.

use ota_core::device::{Congestion, Event, SleepReason};
use ota_core::host::{DesiredState, Handler, MemImages, Peer};
use ota_core::manifest::Ed25519Verifier;
use ota_core::storage::UpdateStorage;
use ota_core::wire::{self, Message, WakeBudget};
use ota_core::{Device, Instant};
use ota_test_support::MemStorage;

/// One way, ms.
pub const ONE_WAY_MS: u64 = 300;

/// What the device sent: when, what (a chunk request's offset, or `None` for any other
/// message), and whether the link lost it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Send {
    pub at: u64,
    pub offset: Option<u32>,
    pub checkin: bool,
    pub lost: bool,
    /// The device asked for it to go twice ([`ota_core::device::Transmit::twice`]); the exact
    /// link carries it as one send (`lost` is the pair's fate).
    pub twice: bool,
}

type InFlight = Vec<(u64, Vec<u8>)>;

/// Runs one wake of `dev` from `*now`; `lose(sends so far, this one)` says whether the link
/// drops a send. Appends every send to `log`; returns why the wake ended and the replies
/// still on their way when it did.
pub fn wake<D: DesiredState>(
    dev: &mut Device<Ed25519Verifier>,
    storage: &mut MemStorage,
    handler: &Handler<D, MemImages>,
    now: &mut u64,
    budget: WakeBudget,
    log: &mut Vec<Send>,
    lose: &dyn Fn(&[Send], &Send) -> bool,
) -> SleepReason {
    dev.restore_from(storage).unwrap();
    dev.wake(Instant(*now), budget);
    let (mut up, mut down): (InFlight, InFlight) = (vec![], vec![]);
    let mut buf = [0u8; 256];
    let drain = |dev: &mut Device<Ed25519Verifier>, storage: &mut MemStorage| {
        while let Some(op) = dev.poll_storage() {
            storage.apply(op).unwrap();
            dev.storage_done(Ok(()));
        }
    };
    for _ in 0..20_000 {
        while let Some(t) = dev.poll_transmit(Instant(*now), &mut buf) {
            let msg = buf[..t.len].to_vec();
            let decoded = wire::decode(&msg).unwrap();
            let mut send = Send {
                at: *now,
                offset: match decoded {
                    Message::ChunkRequest(r) => Some(r.offset),
                    _ => None,
                },
                checkin: matches!(decoded, Message::CheckIn(_)),
                lost: false,
                twice: t.twice,
            };
            send.lost = lose(log, &send);
            log.push(send);
            if !send.lost {
                up.push((*now + ONE_WAY_MS, msg));
            }
        }
        drain(dev, storage);
        while let Some(ev) = dev.poll_event() {
            if let Event::Sleep { reason, .. } = ev {
                return reason;
            }
        }
        let next = up
            .iter()
            .chain(down.iter())
            .map(|(t, _)| *t)
            .chain(dev.poll_timeout().map(|t| t.0))
            .min()
            .expect("the device waits for something");
        *now = (*now).max(next);
        let (due, rest): (InFlight, InFlight) = up.into_iter().partition(|(t, _)| *t <= *now);
        up = rest;
        for (_, req) in due {
            if let Ok(Some(reply)) = handler.handle(&req, Peer::Anonymous) {
                down.push((*now + ONE_WAY_MS, reply));
            }
        }
        let (due, rest): (InFlight, InFlight) = down.into_iter().partition(|(t, _)| *t <= *now);
        down = rest;
        for (_, msg) in due {
            let _ = dev.handle_message(Instant(*now), &msg);
            drain(dev, storage);
        }
        dev.handle_timeout(Instant(*now));
    }
    panic!("the wake did not end");
}

/// A fresh device and its storage after one wake over the exact link: what [`woken`] returns.
pub struct Woken {
    pub dev: Device<Ed25519Verifier>,
    pub storage: MemStorage,
    /// Every send of the wake.
    pub log: Vec<Send>,
    /// When the wake ended.
    pub now: u64,
    pub reason: SleepReason,
}

/// One wake, from 1 s with `budget`, of a fresh device (`window` requests in flight under
/// `congestion`, room to stage `img_len` bytes) served by `handler`; `lose` as for [`wake`].
pub fn woken<D: DesiredState>(
    img_len: usize,
    handler: &Handler<D, MemImages>,
    (window, congestion): (u8, Congestion),
    budget: WakeBudget,
    lose: &dyn Fn(&[Send], &Send) -> bool,
) -> Woken {
    woken_with(img_len, handler, (window, congestion), budget, lose, |_| {})
}

/// [`woken`] with `prepare` run on the new device before it wakes.
pub fn woken_with<D: DesiredState>(
    img_len: usize,
    handler: &Handler<D, MemImages>,
    (window, congestion): (u8, Congestion),
    budget: WakeBudget,
    lose: &dyn Fn(&[Send], &Send) -> bool,
    prepare: impl FnOnce(&mut Device<Ed25519Verifier>),
) -> Woken {
    let mut storage = MemStorage::new(img_len as u32 + 4096);
    let mut cfg = super::config(storage.capacity(), window);
    cfg.congestion = congestion;
    let mut dev: Device<Ed25519Verifier> = Device::new(cfg, super::verifier());
    prepare(&mut dev);
    let (mut now, mut log) = (1_000, vec![]);
    let reason = wake(
        &mut dev,
        &mut storage,
        handler,
        &mut now,
        budget,
        &mut log,
        lose,
    );
    Woken {
        dev,
        storage,
        log,
        now,
        reason,
    }
}

/// Downloads `img` in `chunk`-byte chunks in one wake of a device with `window` requests in
/// flight and `congestion`; `lose` as for [`wake`]. The image must stage whole. Every send
/// and the device.
pub fn download(
    img: &[u8],
    chunk: u16,
    window: u8,
    congestion: Congestion,
    lose: &dyn Fn(&[Send], &Send) -> bool,
) -> (Vec<Send>, Device<Ed25519Verifier>) {
    let handler = super::handler(img, chunk);
    let w = woken(
        img.len(),
        &handler,
        (window, congestion),
        WakeBudget::default(),
        lose,
    );
    assert_eq!(w.reason, SleepReason::Staged);
    assert_eq!(w.storage.staged(img.len()), img);
    (w.log, w.dev)
}
