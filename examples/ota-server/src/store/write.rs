//! What the serving path writes behind the request, and the error a batched write reports.

/// One device's row as the serving path leaves it (every column is written).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceRow {
    /// Id.
    pub id: String,
    /// Class name (or `#` and the numeric id if unknown).
    pub class: String,
    /// Running version.
    pub running: String,
    /// Running sequence number.
    pub running_seq: u32,
    /// Phase of its update.
    pub phase: String,
    /// Bytes staged / image bytes, when downloading.
    pub progress: Option<(u32, u32)>,
    /// Last result.
    pub result: String,
    /// Its reason.
    pub reason: String,
    /// Unix seconds of the last check-in or report.
    pub last_seen: i64,
    /// Sequence number of a release that failed on it (not offered again).
    pub failed_seq: Option<u32>,
    /// Sequence number of a release whose patch did not apply on it: offered again as the
    /// whole image.
    pub whole_seq: Option<u32>,
    /// Seconds until it said it would check in again (the interval it was given).
    pub next_check_in: u32,
    /// Its last check-in, encoded (to work out its desired state again when a rollout
    /// changes while it sleeps).
    pub checkin: Option<Vec<u8>>,
}

/// A write queued behind the request ([`super::sql::Backend::record`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// Upsert a device's row.
    Device(DeviceRow),
    /// Append to a device's history.
    Event {
        /// The device.
        device: String,
        /// Unix seconds.
        at: i64,
        /// What happened (`offered`, `confirmed`, `rolled back`…).
        kind: String,
        /// Release, reason, figures.
        detail: String,
    },
    /// Image bytes sent to a device for a release (added to what was counted before).
    Bytes {
        /// The device.
        device: String,
        /// The release (image id).
        release: u32,
        /// Bytes.
        bytes: u64,
        /// Whether they were a patch's bytes (else the whole image's).
        patch: bool,
        /// Unix seconds (the transfer's start, if this is its first count).
        at: i64,
    },
    /// How a device's update to a release ended.
    Outcome {
        /// The device.
        device: String,
        /// The release.
        release: u32,
        /// `success`, `failure` or `rollback`.
        outcome: String,
        /// Unix seconds.
        at: i64,
    },
}

/// A batched write failed (the database is unreachable, say).
#[derive(Debug, Clone, thiserror::Error)]
#[error("store write: {0}")]
pub struct WriteError(pub String);
