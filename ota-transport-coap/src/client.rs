//! [`CoapClient`]: an `ota-core` [`Device`] and its [`CoapFraming`], sans-IO, for event loops
//! of your own, simulators and tests. The async wake loop uses [`crate::link::CoapLink`].
//!
//! Retransmission is the state machine's: the first timeout is ACK_TIMEOUT (2 s) times a random
//! factor in [1, 1.5), doubling to MAX_RETRANSMIT (4) retransmissions (RFC 7252); once round
//! trips are measured the timeout follows them (as CoCoA does), and the number of requests in
//! flight is the device's window (RFC 7252's NSTART, raised by configuration).

use ota_core::device::{Device, DeviceConfig, MAX_WINDOW};
use ota_core::manifest::Verifier;
use ota_core::time::Instant;

pub use crate::client_security::SEQUENCE_RESERVATION;
pub use crate::framing::{ClientError, ClientStats, CoapFraming, Parsed};

/// RFC 7252's ACK_TIMEOUT (2 s) times a random factor in [1, 1.5) picked by `seed`, and
/// MAX_RETRANSMIT (4) retransmissions, for a device config.
pub fn rfc7252_timers(config: &mut DeviceConfig, seed: u32) {
    config.initial_rto_ms = 2000 + seed % 1000;
    config.max_attempts = 5;
}

/// How long after its first send a copy may still go, ms (a caller drains
/// [`CoapClient::poll_transmit`] at one instant).
const AGAIN_MS: u64 = 10;

/// An `ota-core` device speaking CoAP.
pub struct CoapClient<V, const CHUNK: usize = 1024, const WINDOW: usize = MAX_WINDOW> {
    dev: Device<V, CHUNK, WINDOW>,
    framing: CoapFraming,
    scratch: [u8; 256],
    /// A datagram to send once more, back to back ([`ota_core::device::Transmit::twice`]),
    /// and when it was framed.
    again: Option<(Instant, heapless::Vec<u8, 256>)>,
}

impl<V: Verifier, const CHUNK: usize, const WINDOW: usize> CoapClient<V, CHUNK, WINDOW> {
    /// A client around a new device. `seed` should differ per device and boot (a hardware
    /// random number); it picks the first message id and token and the random factor of the
    /// first timeout.
    pub fn new(mut config: DeviceConfig, verifier: V, seed: u32) -> Self {
        rfc7252_timers(&mut config, seed);
        crate::link::LIMITS.apply(&mut config);
        Self {
            dev: Device::new(config, verifier),
            framing: CoapFraming::new(seed),
            scratch: [0; 256],
            again: None,
        }
    }

    /// Protects every request with OSCORE under `ctx` (see [`CoapFraming::secure`]).
    #[cfg(feature = "oscore")]
    pub fn secure(mut self, ctx: ota_oscore::SecurityContext) -> Self {
        self.framing = self.framing.secure(ctx);
        self
    }

    /// The CoAP state (OSCORE sequence numbers, counters).
    pub fn framing(&mut self) -> &mut CoapFraming {
        &mut self.framing
    }

    /// See [`CoapFraming::restore_sequence`].
    pub fn restore_sequence(&mut self, stored: u64) {
        self.framing.restore_sequence(stored);
    }

    /// See [`CoapFraming::sequence_reserved`].
    pub fn sequence_reserved(&mut self, value: u64) {
        self.framing.sequence_reserved(value);
    }

    /// The state machine.
    pub fn device(&self) -> &Device<V, CHUNK, WINDOW> {
        &self.dev
    }

    /// The state machine, for restore, wake, timeouts, storage and events.
    pub fn device_mut(&mut self) -> &mut Device<V, CHUNK, WINDOW> {
        &mut self.dev
    }

    /// Datagram counters.
    pub fn stats(&self) -> &ClientStats {
        self.framing.stats()
    }

    /// The next datagram to send at `now`, built in `buf`. A request the device sends twice
    /// comes out of two calls in a row, the same bytes each time.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        if let Some((at, again)) = self.again.take() {
            // A copy goes with its first send or not at all: one polled for later would arrive
            // as a second request (under OSCORE, a replay).
            let fresh = now.since(at) <= AGAIN_MS;
            if let Some(dst) = buf.get_mut(..again.len()).filter(|_| fresh) {
                dst.copy_from_slice(&again);
                self.framing.count_copy(again.len());
                self.dev.link_bytes(again.len() as u64, 0);
                return Some(again.len());
            }
        }
        let n = match self.framing.poll_ack(buf) {
            Some(n) => n,
            None => {
                if !self.framing.can_send() {
                    // Nothing is sealed before its sequence number is reserved in flash.
                    return None;
                }
                loop {
                    let t = self.dev.poll_transmit(now, &mut self.scratch)?;
                    if let Some(n) = self.framing.frame(t.what, self.scratch.get(..t.len)?, buf) {
                        if t.twice {
                            self.again = buf
                                .get(..n)
                                .and_then(|b| heapless::Vec::from_slice(b).ok())
                                .map(|b| (now, b));
                        }
                        break n;
                    }
                }
            }
        };
        self.dev.link_bytes(n as u64, 0);
        Some(n)
    }

    /// Feeds one received datagram (a protected response is decrypted in place).
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        datagram: &mut [u8],
    ) -> Result<(), ClientError> {
        self.dev.link_bytes(0, datagram.len() as u64);
        let parsed = self.framing.parse(datagram)?;
        if let Some(drops) = self.framing.drops_copies() {
            self.dev.server_drops_copies(drops);
        }
        match parsed {
            Parsed::Message(m) => Ok(self.dev.handle_message(now, m)?),
            Parsed::Chunk(c) => Ok(self.dev.handle_chunk(now, &c)?),
            Parsed::Nothing => Ok(()),
        }
    }
}
