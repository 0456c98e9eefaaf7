//! The other end over MQTT: a minimal in-memory MQTT 5 broker and update server in one, holding
//! the same signed release as the CoAP peer and the retained desired state a server would keep.
//! It breaks the connection once mid-download, so the firmware redials and resumes within a
//! wake. Also a simulated clock for `embassy-time` and a busy-polling `block_on`.

use core::cell::{Cell, RefCell};
use core::future::{poll_fn, Future};
use core::pin::pin;
use core::task::{Context, Poll, Waker};

use critical_section::Mutex;
use embedded_io_async::{ErrorKind, ErrorType, Read, Write};
use heapless::{Deque, Vec};
use ota_core::wire::{self, CheckInReply, Chunk, ImageId, Message, Urgency};
use ota_transport_mqtt::device::Connector;

use crate::fixture::IMAGE;

/// Simulated microseconds since reset: every reading advances it by 100 µs, so a busy-polled
/// timer always comes due.
static NOW_US: Mutex<Cell<u64>> = Mutex::new(Cell::new(0));

struct SimDriver;

impl embassy_time_driver::Driver for SimDriver {
    fn now(&self) -> u64 {
        critical_section::with(|cs| {
            let c = NOW_US.borrow(cs);
            c.set(c.get() + 100);
            c.get()
        })
    }

    fn schedule_wake(&self, _at: u64, _waker: &Waker) {
        // `block_on` polls continuously; nothing to arm.
    }
}

embassy_time_driver::time_driver_impl!(static DRIVER: SimDriver = SimDriver);

/// Runs a future to completion by polling it in a loop.
pub fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

/// Counters of the link.
#[derive(Default, Clone, Copy)]
pub struct LinkStats {
    /// MQTT packets from the device.
    pub packets_up: u32,
    /// MQTT packets to the device.
    pub packets_down: u32,
    /// Bytes both ways.
    pub bytes: u32,
    /// Connections made.
    pub connects: u32,
}

/// The broker's side of the one connection.
pub struct Broker {
    /// Bytes from the device not yet a whole packet.
    up: Vec<u8, 1024>,
    down: Deque<u8, 4096>,
    next_id: u16,
    requests: u32,
    /// The chunk request at which the connection breaks (once).
    break_at: Option<u32>,
    broken: bool,
    /// Counters.
    pub stats: LinkStats,
}

impl Broker {
    /// A broker that breaks the connection at the `break_at`-th chunk request.
    pub fn new(break_at: u32) -> Self {
        Self {
            up: Vec::new(),
            down: Deque::new(),
            next_id: 1,
            requests: 0,
            break_at: Some(break_at),
            broken: false,
            stats: LinkStats::default(),
        }
    }

    fn send(&mut self, packet: &[u8]) {
        self.stats.packets_down += 1;
        self.stats.bytes += packet.len() as u32;
        for &b in packet {
            // A full queue means the device stopped reading; the rest is lost as on a dead link.
            let _ = self.down.push_back(b);
        }
    }

    /// Takes whole packets off the front of `up` and answers them.
    fn process(&mut self) {
        while let Some((kind, body_at, len)) = header(&self.up) {
            let mut packet = [0u8; 1024];
            let Some(p) = self.up.get(body_at..body_at + len) else {
                return;
            };
            packet[..len].copy_from_slice(p);
            let rest: Vec<u8, 1024> =
                Vec::from_slice(self.up.get(body_at + len..).unwrap_or(&[])).unwrap_or_default();
            self.up = rest;
            self.stats.packets_up += 1;
            self.stats.bytes += (body_at + len) as u32;
            self.answer(kind, &packet[..len]);
        }
    }

    fn answer(&mut self, kind: u8, body: &[u8]) {
        match kind >> 4 {
            // CONNECT: accepted, no session kept here.
            1 => self.send(&[0x20, 3, 0, 0, 0]),
            // SUBSCRIBE: grant what was asked, then the retained desired state for `s`.
            8 => self.subscribe(body),
            // PUBLISH from the device.
            3 => self.publish(kind, body),
            // UNSUBSCRIBE (one filter): done.
            10 => {
                if let Some(id) = body.get(..2) {
                    self.send(&[0xB0, 4, id[0], id[1], 0, 0]);
                }
            }
            // PINGREQ.
            12 => self.send(&[0xD0, 0]),
            // PUBACK, DISCONNECT: nothing to say.
            _ => {}
        }
    }

    fn subscribe(&mut self, body: &[u8]) {
        let (Some(id), Some((props, at))) = (body.get(..2), body.get(2..).and_then(varint)) else {
            return;
        };
        let mut ack: Vec<u8, 16> = Vec::new();
        let _ = ack.extend_from_slice(&[0x90, 0, id[0], id[1], 0]);
        let mut filters = body.get(2 + at + props..).unwrap_or(&[]);
        let mut desired: Option<Vec<u8, 32>> = None;
        while let Some((topic, options, rest)) = filter(filters) {
            let _ = ack.push(options & 3);
            if topic.ends_with(b"/s") {
                desired = Vec::from_slice(topic).ok();
            }
            filters = rest;
        }
        if let Some(len) = ack.len().checked_sub(2) {
            ack[1] = len as u8;
        }
        self.send(&ack);
        if let Some(topic) = desired {
            // What a server retains for this device: an offer, without its manifest.
            let mut state = [0u8; 32];
            let msg = Message::CheckInReply(CheckInReply::Update {
                image: ImageId(1),
                manifest: None,
                resume_from: 0,
                urgency: Urgency::Attempt,
                next_check_in: 60,
            });
            if let Ok(n) = wire::encode(&msg, &mut state) {
                self.publish_to(&topic, 0x31, &state[..n]);
            }
        }
    }

    fn publish(&mut self, kind: u8, body: &[u8]) {
        let qos = (kind >> 1) & 3;
        let Some((topic, rest)) = string(body) else {
            return;
        };
        let (id, rest) = if qos > 0 {
            (rest.get(..2), rest.get(2..).unwrap_or(&[]))
        } else {
            (None, rest)
        };
        let Some((props, at)) = varint(rest) else {
            return;
        };
        let payload = rest.get(at + props..).unwrap_or(&[]);
        if let Some(id) = id {
            self.send(&[0x40, 2, id[0], id[1]]);
        }
        let mut down: Vec<u8, 32> = Vec::new();
        let _ = down.extend_from_slice(topic.get(..topic.len().saturating_sub(1)).unwrap_or(&[]));
        let _ = down.push(b'd');
        let mut out = [0u8; 600];
        let reply = match (topic.last(), wire::decode(payload)) {
            (Some(b'c'), Ok(Message::CheckIn(_))) => {
                wire::encode(&Message::CheckInReply(crate::offer()), &mut out).ok()
            }
            (Some(b'q'), Ok(Message::ChunkRequest(r))) => {
                self.requests += 1;
                if self.break_at == Some(self.requests) {
                    self.break_at = None;
                    self.broken = true;
                    return;
                }
                let start = r.offset as usize;
                let end = (start + usize::from(r.len)).min(IMAGE.len());
                let data = IMAGE.get(start..end).unwrap_or(&[]);
                let chunk = Chunk::new(r.image, r.offset, data);
                wire::encode(&Message::Chunk(chunk), &mut out).ok()
            }
            _ => None,
        };
        if let Some(n) = reply {
            self.publish_to(&down, 0x32, &out[..n]);
        }
    }

    /// PUBLISH `payload` on `topic` with the given first byte (QoS and retain flags).
    fn publish_to(&mut self, topic: &[u8], first: u8, payload: &[u8]) {
        let qos1 = first & 0x06 == 0x02;
        let len = 2 + topic.len() + if qos1 { 2 } else { 0 } + 1 + payload.len();
        let mut p: Vec<u8, 700> = Vec::new();
        let _ = p.push(first);
        let mut l = len;
        loop {
            let b = (l % 128) as u8;
            l /= 128;
            let _ = p.push(if l > 0 { b | 0x80 } else { b });
            if l == 0 {
                break;
            }
        }
        let _ = p.extend_from_slice(&(topic.len() as u16).to_be_bytes());
        let _ = p.extend_from_slice(topic);
        if qos1 {
            let id = self.next_id;
            self.next_id = self.next_id.wrapping_add(1).max(1);
            let _ = p.extend_from_slice(&id.to_be_bytes());
        }
        let _ = p.push(0);
        let _ = p.extend_from_slice(payload);
        self.send(&p);
    }
}

/// A fixed header at the front of `bytes` whose packet is all there: (first byte, where the
/// body starts, body length).
fn header(bytes: &[u8]) -> Option<(u8, usize, usize)> {
    let (&kind, rest) = bytes.split_first()?;
    let (len, at) = varint(rest)?;
    (bytes.len() >= 1 + at + len).then_some((kind, 1 + at, len))
}

/// An MQTT variable-length integer: (value, bytes it took).
fn varint(bytes: &[u8]) -> Option<(usize, usize)> {
    let mut value = 0usize;
    for (i, &b) in bytes.iter().take(4).enumerate() {
        value |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// A length-prefixed string and what follows it.
fn string(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let len = usize::from(u16::from_be_bytes([*bytes.first()?, *bytes.get(1)?]));
    Some((bytes.get(2..2 + len)?, bytes.get(2 + len..)?))
}

/// A SUBSCRIBE topic filter, its options byte, and what follows.
fn filter(bytes: &[u8]) -> Option<(&[u8], u8, &[u8])> {
    let (topic, rest) = string(bytes)?;
    let (&options, rest) = rest.split_first()?;
    Some((topic, options, rest))
}

/// Dials the in-memory broker.
pub struct Dialer<'b>(pub &'b RefCell<Broker>);

/// One connection to the in-memory broker.
pub struct Link<'b>(&'b RefCell<Broker>);

impl<'b> Connector for Dialer<'b> {
    type Io<'a>
        = Link<'b>
    where
        Self: 'a;
    type Error = ();

    async fn connect(&mut self) -> Result<Link<'b>, ()> {
        let mut b = self.0.borrow_mut();
        b.up.clear();
        b.down.clear();
        b.broken = false;
        b.stats.connects += 1;
        Ok(Link(self.0))
    }
}

impl ErrorType for Link<'_> {
    type Error = ErrorKind;
}

impl Read for Link<'_> {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, ErrorKind> {
        poll_fn(|_| {
            let mut b = self.0.borrow_mut();
            if b.broken {
                return Poll::Ready(Err(ErrorKind::ConnectionReset));
            }
            if b.down.is_empty() {
                return Poll::Pending;
            }
            let mut n = 0;
            for slot in buf.iter_mut() {
                let Some(byte) = b.down.pop_front() else {
                    break;
                };
                *slot = byte;
                n += 1;
            }
            Poll::Ready(Ok(n))
        })
        .await
    }
}

impl Write for Link<'_> {
    async fn write(&mut self, buf: &[u8]) -> Result<usize, ErrorKind> {
        let mut b = self.0.borrow_mut();
        if b.broken {
            return Err(ErrorKind::ConnectionReset);
        }
        let room = b.up.capacity() - b.up.len();
        let taken = buf.get(..room).unwrap_or(buf);
        let _ = b.up.extend_from_slice(taken);
        let n = taken.len();
        b.process();
        Ok(n)
    }

    async fn flush(&mut self) -> Result<(), ErrorKind> {
        Ok(())
    }
}
