//! The one question a device asks on every wake.

use serde::{Deserialize, Serialize};

use super::types::{DigestPrefix, ResultCode, Version};

/// The longest message a device sends, encoded: a check-in with a [`super::MAX_DEVICE_ID`]-byte
/// id, an outcome, a resume hint and a budget, every number at its longest (a report is 46
/// bytes, a chunk request 19). A device's send buffer holds this.
pub const MAX_SENT_LEN: usize = 109;

/// Device → server: "this is what I run; is anything waiting for me?"
///
/// A typical check-in (8-byte id, no download in progress, no budget) is 35 bytes on the wire,
/// envelope and CRC included; with a rollback to report, a resume hint and a budget, 55.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckIn<'a> {
    /// Stable device identifier, checked by [`super::check_device_id`] when decoded.
    pub device_id: &'a [u8],
    /// Vendor id the device's manifests must carry.
    pub vendor: u32,
    /// Device class id the device's manifests must carry.
    pub class: u32,
    /// The firmware it runs now.
    pub running: RunningFirmware,
    /// What became of the last update it tried, reported until the server has seen it.
    pub last: LastOutcome,
    /// Present while a download is in progress, so the server can answer "resume from here".
    pub resume: Option<ResumeHint>,
    /// What the device can take.
    pub caps: Capabilities,
    /// What this wake may spend, if the device has a limit.
    pub budget: Option<WakeBudget>,
}

/// The firmware a device runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RunningFirmware {
    /// Semantic version.
    pub version: Version,
    /// First eight bytes of the running image's SHA-256.
    pub digest: DigestPrefix,
    /// Anti-rollback sequence number of the running image's manifest.
    pub sequence: u32,
}

/// The outcome of the last update attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum LastOutcome {
    /// Nothing to report.
    #[default]
    None,
    /// The update with this sequence number was confirmed and runs now.
    Confirmed {
        /// Sequence number of the confirmed manifest.
        sequence: u32,
    },
    /// The update was tried and reverted to the previous image.
    RolledBack {
        /// Sequence number of the manifest that was reverted.
        sequence: u32,
        /// Why.
        reason: ResultCode,
    },
    /// The update failed before it ever booted (refused manifest, integrity, storage).
    Failed {
        /// Sequence number of the manifest that failed.
        sequence: u32,
        /// Why.
        reason: ResultCode,
    },
}

/// Where a download in progress stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumeHint {
    /// First eight bytes of the SHA-256 of the manifest being downloaded.
    pub manifest: DigestPrefix,
    /// Every byte below this offset is staged.
    pub next_offset: u32,
}

/// Limits the device announces so the server can shape its offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// Largest chunk payload the device accepts, in bytes.
    pub max_chunk: u16,
    /// How many chunk requests it keeps outstanding at once.
    pub window: u8,
}

/// What one wake may spend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct WakeBudget {
    /// Radio bytes (both directions, application layer).
    pub bytes: Option<u32>,
    /// Milliseconds awake.
    pub millis: Option<u32>,
}
