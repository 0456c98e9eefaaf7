//! Progress and outcome reports, so the fleet owner sees more than "failed".

use serde::{Deserialize, Serialize};

use super::types::{ImageId, ResultCode};

/// Device → server: where an update stands and how it went.
///
/// Reports are best effort; the outcome is repeated in the next check-in's
/// [`super::LastOutcome`] until the server has seen it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report<'a> {
    /// The reporting device.
    pub device_id: &'a [u8],
    /// The image concerned.
    pub image: ImageId,
    /// Where the update stands.
    pub phase: Phase,
    /// How it went.
    pub result: ResultCode,
}

/// The phases of one update, as reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// The manifest was refused; the result says why.
    Rejected,
    /// Download started or resumed.
    Downloading,
    /// The whole image is staged and its digest verified.
    Staged,
    /// The new image runs on trial.
    TrialBoot,
    /// The new image was confirmed.
    Confirmed,
    /// The previous image was restored.
    RolledBack,
    /// The download was given up (integrity or storage failure, cancelled).
    Failed,
}
