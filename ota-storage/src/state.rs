//! The update state the journal keeps, from download to confirm or revert.

use ota_core::wire::{LastOutcome, ResultCode};

/// Where the device stands in an update. The journal's newest state record wins.
///
/// | state | set by | next |
/// |---|---|---|
/// | `Idle` | start, abandon, outcome reported | `Downloading` |
/// | `Downloading` | a `Begin` record (atomically with the manifest) | `Staged`, `Idle` |
/// | `Staged` | digest verified from flash | `Installing` (application asks) |
/// | `Installing { step }` | [`crate::FlashStorage::request_install`], each swap step | `Trial` |
/// | `Trial { booted }` | swap done; `booted` once it has booted | `Confirmed`, `Reverting` |
/// | `Confirmed { sequence }` | [`crate::FlashStorage::confirm`] | `Idle` once reported |
/// | `Reverting { step, reason }` | [`crate::FlashStorage::reject`], or a reset on trial | `Reverted` |
/// | `Reverted { sequence, reason }` | swap back done | `Idle` once reported |
/// | `Failed { sequence, reason }` | the state machine gave a download up (its digest failed) | `Idle` once reported |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpdateState {
    /// No update in progress.
    #[default]
    Idle,
    /// Chunks are being staged (progress in the journal's `Begin`/`Progress` records).
    Downloading,
    /// The staged image's digest was verified from flash.
    Staged,
    /// The swap into the active slot is under way; `step` steps are done.
    Installing {
        /// Swap steps completed.
        step: u32,
    },
    /// The new image is active on trial.
    Trial {
        /// It has been booted once; a second boot without a confirm reverts.
        booted: bool,
    },
    /// The new image was confirmed.
    Confirmed {
        /// Its manifest's sequence number.
        sequence: u32,
    },
    /// The swap back to the previous image is under way.
    Reverting {
        /// Revert steps completed.
        step: u32,
        /// Why.
        reason: ResultCode,
    },
    /// The previous image was restored.
    Reverted {
        /// Sequence number of the manifest that was reverted.
        sequence: u32,
        /// Why.
        reason: ResultCode,
    },
    /// A download was given up before it was staged (its digest read back from flash failed).
    Failed {
        /// Sequence number of its manifest.
        sequence: u32,
        /// Why.
        reason: ResultCode,
    },
}

/// Encoded size of an [`UpdateState`].
pub(crate) const STATE_LEN: usize = 6;

impl UpdateState {
    /// What to report in the next check-in.
    pub fn last_outcome(&self) -> LastOutcome {
        match *self {
            UpdateState::Confirmed { sequence } => LastOutcome::Confirmed { sequence },
            UpdateState::Reverted { sequence, reason } => {
                LastOutcome::RolledBack { sequence, reason }
            }
            UpdateState::Failed { sequence, reason } => LastOutcome::Failed { sequence, reason },
            _ => LastOutcome::None,
        }
    }

    /// `tag | u32 LE | u8`.
    pub(crate) fn to_bytes(self) -> [u8; STATE_LEN] {
        let (tag, a, b) = match self {
            UpdateState::Idle => (0, 0, 0),
            UpdateState::Downloading => (1, 0, 0),
            UpdateState::Staged => (2, 0, 0),
            UpdateState::Installing { step } => (3, step, 0),
            UpdateState::Trial { booted } => (4, u32::from(booted), 0),
            UpdateState::Confirmed { sequence } => (5, sequence, 0),
            UpdateState::Reverting { step, reason } => (6, step, reason.0),
            UpdateState::Reverted { sequence, reason } => (7, sequence, reason.0),
            UpdateState::Failed { sequence, reason } => (8, sequence, reason.0),
        };
        let a = u32::to_le_bytes(a);
        [tag, a[0], a[1], a[2], a[3], b]
    }

    pub(crate) fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let b: &[u8; STATE_LEN] = bytes.try_into().ok()?;
        let [tag, a0, a1, a2, a3, b] = *b;
        let a = u32::from_le_bytes([a0, a1, a2, a3]);
        Some(match tag {
            0 => UpdateState::Idle,
            1 => UpdateState::Downloading,
            2 => UpdateState::Staged,
            3 => UpdateState::Installing { step: a },
            4 => UpdateState::Trial { booted: a != 0 },
            5 => UpdateState::Confirmed { sequence: a },
            6 => UpdateState::Reverting {
                step: a,
                reason: ResultCode(b),
            },
            7 => UpdateState::Reverted {
                sequence: a,
                reason: ResultCode(b),
            },
            8 => UpdateState::Failed {
                sequence: a,
                reason: ResultCode(b),
            },
            _ => return None,
        })
    }
}
