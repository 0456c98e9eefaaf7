//! The server's decisive answer to a check-in.

use serde::{Deserialize, Serialize};

use super::types::ImageId;
use crate::manifest::SignedManifest;

/// The longest check-in reply, encoded: an offer carrying the longest signed manifest
/// ([`crate::manifest::MAX_MANIFEST_BODY`] and its signature), every number at its longest.
/// A device's receive buffer holds at least this and its link's framing.
pub const MAX_REPLY_LEN: usize = 230;

/// Server → device: the one answer to a check-in.
///
/// `UpToDate` with a one-hour next check-in is 9 bytes on the wire, envelope and CRC included.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CheckInReply<'a> {
    /// Nothing for you; check in again after this many seconds.
    UpToDate {
        /// Seconds until the next check-in.
        next_check_in: u32,
    },
    /// An update is for you.
    Update {
        /// Handle to use in chunk requests.
        image: ImageId,
        /// The signed manifest; left out when the device's resume hint already names it, since
        /// the device keeps the manifest of a download in progress in its own storage.
        #[serde(borrow)]
        manifest: Option<SignedManifest<'a>>,
        /// The offset the server expects the device to resume from.
        resume_from: u32,
        /// How strongly the fleet owner wants it applied.
        urgency: Urgency,
        /// Seconds until the next check-in after this wake.
        next_check_in: u32,
    },
    /// Not now; ask again later.
    Defer {
        /// Seconds until the device should ask again.
        retry_after: u32,
        /// Why.
        reason: DeferReason,
    },
    /// Abandon the download in progress.
    Cancel {
        /// Seconds until the next check-in.
        next_check_in: u32,
    },
}

/// How strongly an update is wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Urgency {
    /// Fetch within the device's own energy budget, across as many wakes as it takes.
    #[default]
    Attempt,
    /// Fetch and apply as soon as possible (a security fix, say).
    Forced,
}

/// Why the server deferred.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeferReason {
    /// Outside the fleet's maintenance window.
    OutsideWindow,
    /// The staged rollout has not reached this device yet.
    RolloutNotReached,
    /// The server is overloaded.
    ServerBusy,
    /// The release on offer cannot reach this device as it is (its chunk size is beyond what
    /// the device said it takes); an operator must act.
    Unsupported,
}
