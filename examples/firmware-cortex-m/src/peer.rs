//! The other end of an in-memory link for the blocking firmware: the shared CoAP server behind a
//! socket that answers at once, plus a simulated clock. It drops every ninth response, so the
//! firmware's retransmissions are exercised too.

use core::cell::Cell;

use heapless::{Deque, Vec};
use ota_core::runtime::block::BlockingClock;
use ota_core::time::Instant;
use ota_transport_coap::link::DatagramSocket;

/// Milliseconds since reset, advanced by the link.
pub struct SimClock(pub Cell<u64>);

impl BlockingClock for SimClock {
    fn now(&self) -> Instant {
        Instant(self.0.get())
    }

    fn delay_until(&self, t: Instant) {
        self.0.set(self.0.get().max(t.0));
    }
}

/// Counters of the link.
#[derive(Default, Clone, Copy)]
pub struct LinkStats {
    /// Requests received.
    pub requests: u32,
    /// Responses the link dropped.
    pub dropped: u32,
    /// Bytes both ways.
    pub bytes: u32,
}

/// The in-memory server and link.
pub struct Peer<'c> {
    clock: &'c SimClock,
    queue: Deque<Vec<u8, 600>, 8>,
    /// Counters.
    pub stats: LinkStats,
}

impl<'c> Peer<'c> {
    /// A peer sharing `clock` with the firmware.
    pub fn new(clock: &'c SimClock) -> Self {
        Self {
            clock,
            queue: Deque::new(),
            stats: LinkStats::default(),
        }
    }
}

impl DatagramSocket for Peer<'_> {
    type Error = ();

    fn send(&mut self, datagram: &[u8]) -> Result<(), ()> {
        self.stats.requests += 1;
        self.stats.bytes += datagram.len() as u32;
        let mut out = [0u8; 600];
        let Some(n) = firmware_cortex_m::server::respond(datagram, &mut out) else {
            return Ok(());
        };
        if self.stats.requests % 9 == 0 {
            self.stats.dropped += 1;
            return Ok(());
        }
        let v = Vec::from_slice(out.get(..n).unwrap_or(&[])).map_err(|_| ())?;
        self.queue.push_back(v).map_err(|_| ())
    }

    fn recv(&mut self, buf: &mut [u8], timeout_ms: u32) -> Result<Option<usize>, ()> {
        match self.queue.pop_front() {
            Some(d) => {
                // A 200 ms round trip per datagram, as on a slow cellular link.
                self.clock.0.set(self.clock.0.get() + 200);
                self.stats.bytes += d.len() as u32;
                let dst = buf.get_mut(..d.len()).ok_or(())?;
                dst.copy_from_slice(&d);
                Ok(Some(d.len()))
            }
            None => {
                self.clock
                    .0
                    .set(self.clock.0.get() + u64::from(timeout_ms.max(1)));
                Ok(None)
            }
        }
    }
}
