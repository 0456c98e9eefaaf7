//! What a device is and how patient it is.

use heapless::Vec;

use super::congestion::Congestion;
use crate::wire::{check_device_id, DeviceIdError, LastOutcome, RunningFirmware, MAX_DEVICE_ID};

/// Most chunk requests a device may keep outstanding (half the resume bitmap's reach,
/// [`crate::resume::MAX_AHEAD`], so a lost chunk can be asked for again while the window
/// moves on).
pub const MAX_WINDOW: usize = crate::resume::MAX_AHEAD as usize / 2;

/// Static facts about the device and the retransmission policy.
#[derive(Debug, Clone)]
pub struct DeviceConfig {
    /// Stable id, following [`check_device_id`]'s rule.
    pub device_id: Vec<u8, MAX_DEVICE_ID>,
    /// Vendor id.
    pub vendor: u32,
    /// Device class id.
    pub class: u32,
    /// The firmware running now.
    pub running: RunningFirmware,
    /// Outcome of the last update, reported in every check-in until cleared by the application.
    pub last_outcome: LastOutcome,
    /// Size of the staging slot.
    pub staging_capacity: u32,
    /// Largest chunk the device accepts (further capped by the state machine's buffer and by
    /// its link: [`crate::runtime::LinkLimits`]).
    pub max_chunk: u16,
    /// Only chunk sizes that are powers of two (set from the link's limits: CoAP Block2).
    pub pow2_chunks: bool,
    /// Chunk requests kept outstanding, 1 (stop-and-wait) to [`MAX_WINDOW`], capped at the
    /// `WINDOW` of the [`Device`](super::Device) it configures.
    pub window: u8,
    /// First retransmission timeout before any round trip was measured, ms (RFC 7252's
    /// ACK_TIMEOUT is 2000).
    pub initial_rto_ms: u32,
    /// Floor for the timeout derived from measured round trips, ms.
    pub min_rto_ms: u32,
    /// Ceiling for the backed-off timeout, ms.
    pub max_rto_ms: u32,
    /// Sends of one request before the wake gives up on the link (RFC 7252's MAX_RETRANSMIT + 1).
    pub max_attempts: u8,
    /// Seconds to sleep when the server said nothing about it (link lost, protocol error).
    pub fallback_sleep_secs: u32,
    /// How the number of requests in flight and the retransmission timers react to loss and
    /// delay; see [`Congestion`]. Never above `window` whichever is chosen.
    pub congestion: Congestion,
    /// A wake that restores an unfinished download asks for its chunks with its check-in,
    /// before the reply (under [`Congestion::LossTolerant`] only). On by default; off, a resumed
    /// wake waits one round trip for the reply before its first chunk request.
    pub early_resume: bool,
    /// Under [`Congestion::LossTolerant`], once [`TWICE_ON`] or more of the requests go
    /// unanswered, each request goes twice, back to back ([`Transmit::twice`]), until fewer
    /// than [`TWICE_OFF`] of these pairs do. On by default; the link's limits turn it off
    /// where copies cannot help ([`crate::runtime::LinkLimits::copies`]: a stream).
    ///
    /// [`TWICE_ON`]: super::TWICE_ON
    /// [`TWICE_OFF`]: super::TWICE_OFF
    /// [`Transmit::twice`]: super::Transmit::twice
    pub request_copies: bool,
}

impl DeviceConfig {
    /// A config with the default policy: window 12, 1 KiB chunks, RFC 7252-like timeouts,
    /// [`Congestion::LossTolerant`]. An id
    /// that breaks [`check_device_id`]'s rule is refused (never cut short: two devices would
    /// share a record).
    pub fn new(
        device_id: &[u8],
        vendor: u32,
        class: u32,
        running: RunningFirmware,
    ) -> Result<Self, DeviceIdError> {
        check_device_id(device_id)?;
        let mut id = Vec::<u8, MAX_DEVICE_ID>::new();
        id.extend_from_slice(device_id)
            .map_err(|_| DeviceIdError::TooLong(device_id.len()))?;
        Ok(Self {
            device_id: id,
            vendor,
            class,
            running,
            last_outcome: LastOutcome::None,
            staging_capacity: 0,
            max_chunk: 1024,
            pow2_chunks: false,
            window: 12,
            initial_rto_ms: 2000,
            min_rto_ms: 300,
            max_rto_ms: 32_000,
            max_attempts: 5,
            fallback_sleep_secs: 3600,
            congestion: Congestion::LossTolerant,
            early_resume: true,
            request_copies: true,
        })
    }
}
