//! What one wake learnt about the path, for the next wake to start from.

/// What a wake measured of the path, for the next wake to start from.
///
/// A device that sleeps with its RAM off builds a new [`Device`](super::Device) every wake, and
/// each wake would otherwise start blind: the first timeout is RFC 7252's 2 s guess, and the
/// window opens from two requests. On a lossy path that start is slow, because the window only
/// grows with the chunks that get through. RFC 9040 (TCP control block interdependence,
/// temporal sharing) keeps a closed connection's round trip for the next one to the same host;
/// this does the same across wakes, as a first guess only: each wake measures the path
/// afresh, and a remembered timeout that proves too short doubles as the default guess does
/// (the path may have changed since). The application keeps the few bytes where it likes (RAM
/// kept in sleep, a backup register, flash) and drops them when the path may have changed
/// (another cell, hours of sleep).
///
/// | field | what the next wake does with it |
/// |---|---|
/// | `min_rtt_ms` | its first guess of the timeout, before it measures one: twice the path's smallest round trip (RACK-TLP's probe timeout), within [`DeviceConfig::min_rto_ms`](super::DeviceConfig::min_rto_ms) and [`max_rto_ms`](super::DeviceConfig::max_rto_ms) (in place of [`initial_rto_ms`](super::DeviceConfig::initial_rto_ms)) |
/// | `window` | its window starts at half of it (at least the usual two, at most [`DeviceConfig::window`](super::DeviceConfig::window)); the queue test cuts it back at once if the path has a queue |
/// | `fail_rate` | its prior for the share of requests that go unanswered (the copies' gate, how many timeouts in a row mean silence), at most a half |
/// | `twice` | its requests start out sent twice, as the last wake's ended ([`DeviceConfig::request_copies`](super::DeviceConfig::request_copies)) |
/// | `drops_copies` | it may send requests twice before the server says again that it drops copies ([`Device::server_drops_copies`](super::Device::server_drops_copies)): a resent check-in, chunk requests resumed early |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathMemory {
    /// The smallest round trip the wake measured, ms: the path with no queue. A wake's check-in
    /// goes out with nothing queued ahead of it, so its smoothed round trip, which its own
    /// window's queue inflated, overstated the check-in's (`ota-bench`, demo link: 110 -> 109 s
    /// awake at 15 % loss, 156 -> 153 s at 30 %, four hundred seeds).
    pub min_rtt_ms: u32,
    /// Requests the window allowed in flight at the end of the wake.
    pub window: u8,
    /// Share of requests unanswered, in 256ths (an average over the wake's last outcomes).
    pub fail_rate: u8,
    /// Requests went twice at the end of the wake (`fail_rate` was measured so).
    pub twice: bool,
    /// The server drops the second copy of a request sent twice.
    pub drops_copies: bool,
}
