//! What a check-in or a report does to a device, worked out without touching the store: the
//! decision, the device's new row, and the entries for its history. [`super::Fleet`] gathers
//! the inputs and writes the results.

use ota_core::host::Decision;
use ota_core::wire::{
    CheckIn, DeferReason, ImageId, LastOutcome, Phase, Report, ResultCode, Urgency,
};

use ota_core::host::OwnedManifest;

use crate::store::{vtext, DeviceRow, Release, Rollout, RolloutState};

/// Human words for a result code.
pub fn reason_text(code: ResultCode) -> String {
    let text = match code {
        ResultCode::SUCCESS => "success",
        ResultCode::OUT_OF_STORAGE => "not enough flash",
        ResultCode::OUT_OF_MEMORY => "out of RAM",
        ResultCode::CONNECTION_LOST => "connection lost",
        ResultCode::INTEGRITY_FAILURE => "integrity check failed",
        ResultCode::UNSUPPORTED_PACKAGE => "unsupported package (vendor or class)",
        ResultCode::UPDATE_FAILED => "update failed",
        ResultCode::BAD_SIGNATURE => "bad manifest signature",
        ResultCode::NOT_NEWER => "not newer than running (anti-rollback)",
        ResultCode::CHUNK_TOO_LARGE => "chunk size beyond the device's limit",
        ResultCode::RUNNING_TOO_OLD => "running version below the minimum",
        ResultCode::HEALTH_CHECK_FAILED => "health check failed",
        ResultCode::TRIAL_RESET => "reset during trial boot",
        ResultCode::CANCELLED => "cancelled",
        ResultCode::STORAGE_ERROR => "flash error",
        ResultCode::PATCH_SOURCE_MISMATCH => "running image is not the patch's source",
        ResultCode::PATCH_FAILED => "patch did not apply",
        ResultCode(c) => return format!("code {c} (LwM2M {})", ResultCode(c).lwm2m()),
    };
    text.to_string()
}

/// Whether `code` says a patch did not apply: not the update's end, since the device is
/// offered the whole image at its next check-in.
pub fn patch_failed(code: ResultCode) -> bool {
    matches!(
        code,
        ResultCode::PATCH_SOURCE_MISMATCH | ResultCode::PATCH_FAILED
    )
}

/// What a device whose check-in is `c` is offered of `release`: the download it has under way
/// (whole or patch), else a patch from the image it runs (unless `patches` is off or a patch of
/// this release failed on it), else the whole image.
fn choose<'r>(
    release: &'r Release,
    c: &CheckIn<'_>,
    patches: bool,
    whole_seq: Option<u32>,
) -> (ImageId, &'r OwnedManifest) {
    if let Some(started) = c.resume.and_then(|h| release.by_manifest(h.manifest)) {
        return started;
    }
    release
        .patches
        .iter()
        .filter(|_| patches && whole_seq != Some(release.sequence))
        .find(|p| p.source_prefix == c.running.digest)
        .map_or((ImageId(release.id), &release.manifest), |p| {
            (ImageId(p.id), &p.manifest)
        })
}

/// What a check-in is decided on.
pub struct Inputs<'a> {
    /// The device (as authenticated, or as claimed in lab mode).
    pub id: &'a str,
    /// Its class name, from the class id it sent (`#id` if unknown).
    pub class: String,
    /// The class it was provisioned with, if it was.
    pub provisioned_class: Option<&'a str>,
    /// Its row before this check-in.
    pub prev: Option<DeviceRow>,
    /// The rollout of its class.
    pub rollout: Option<&'a Rollout>,
    /// Whether the rollout's release may be offered (not halted, image matches).
    pub release_ok: bool,
    /// Whether its patches may be offered (each one's bytes match its manifest).
    pub patches: bool,
    /// Seconds since midnight UTC.
    pub secs_of_day: u32,
    /// Unix seconds.
    pub now: i64,
    /// Seconds between check-ins.
    pub next_check_in: u32,
}

/// The outcome of an update a check-in or report tells of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Sequence number of the release (check-ins name it so).
    pub sequence: Option<u32>,
    /// Image id (reports name it so).
    pub image: Option<u32>,
    /// `success`, `failure`, `rollback`.
    pub outcome: &'static str,
    /// Result code.
    pub code: ResultCode,
}

/// What a check-in or report does.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The answer.
    pub decision: Decision,
    /// The device's row after it.
    pub row: DeviceRow,
    /// History entries: (kind, detail).
    pub events: Vec<(String, String)>,
    /// An update's end it tells of.
    pub outcome: Option<Outcome>,
}

/// Decides `c` on `inputs`.
pub fn check_in(c: &CheckIn<'_>, inputs: Inputs<'_>) -> Plan {
    let next = inputs.next_check_in;
    let up_to_date = Decision::UpToDate {
        next_check_in: next,
    };
    let id = inputs.id.to_string();
    let prev = inputs.prev.clone();
    let mut row = prev.clone().unwrap_or_default();
    row.id = id.clone();
    row.last_seen = inputs.now;
    row.next_check_in = next;
    let mut events = Vec::new();
    if let Some(own) = inputs.provisioned_class {
        if crate::class_id(own) != c.class {
            // A provisioned device speaks for its own class only.
            row.class = own.to_string();
            (row.result, row.reason) = (
                "refused".into(),
                format!("claims class {}, provisioned as {own}", inputs.class),
            );
            events.push(("refused".into(), row.reason.clone()));
            return Plan {
                decision: up_to_date,
                row,
                events,
                outcome: None,
            };
        }
    }
    row.class = inputs.class.clone();
    row.running = vtext(c.running.version);
    row.running_seq = c.running.sequence;
    row.checkin = Some(ota_core::wire::encode_vec(
        &ota_core::wire::Message::CheckIn(c.clone()),
    ));
    let mut outcome = None;
    match c.last {
        LastOutcome::Confirmed { sequence } => {
            (row.result, row.reason) = ("confirmed".into(), format!("sequence {sequence}"));
            events.push((
                "confirmed".into(),
                format!("{} (sequence {sequence})", row.running),
            ));
            outcome = Some(Outcome {
                sequence: Some(sequence),
                image: None,
                outcome: "success",
                code: ResultCode::SUCCESS,
            });
        }
        LastOutcome::RolledBack { sequence, reason } => {
            (row.result, row.reason) = ("rolled back".into(), reason_text(reason));
            row.failed_seq = Some(sequence);
            events.push((
                "rolled back".into(),
                format!("sequence {sequence}: {}", row.reason),
            ));
            outcome = Some(Outcome {
                sequence: Some(sequence),
                image: None,
                outcome: "rollback",
                code: reason,
            });
        }
        LastOutcome::Failed { sequence, reason } => {
            (row.result, row.reason) = ("failed".into(), reason_text(reason));
            if patch_failed(reason) {
                row.whole_seq = Some(sequence);
            } else {
                row.failed_seq = Some(sequence);
            }
            events.push((
                "failed".into(),
                format!("sequence {sequence}: {}", row.reason),
            ));
            outcome = Some(Outcome {
                sequence: Some(sequence),
                image: None,
                outcome: "failure",
                code: reason,
            });
        }
        LastOutcome::None => {}
    }
    let decision = match inputs.rollout {
        None => up_to_date,
        Some(_) if c.vendor != crate::VENDOR => up_to_date,
        Some(r) if r.cancelled() => {
            if c.resume.is_some() {
                Decision::Cancel {
                    next_check_in: next,
                }
            } else {
                up_to_date
            }
        }
        Some(r) if c.running.sequence >= r.release.sequence => up_to_date,
        Some(r) if row.failed_seq == Some(r.release.sequence) => up_to_date,
        Some(r) if !r.reaches(&id) => Decision::Defer {
            retry_after: next,
            reason: DeferReason::RolloutNotReached,
        },
        Some(r)
            if r.state == RolloutState::Paused
                && c.resume
                    .is_none_or(|h| r.release.by_manifest(h.manifest).is_none()) =>
        {
            // Paused: devices that have not started wait; downloads under way finish.
            Decision::Defer {
                retry_after: next,
                reason: DeferReason::RolloutNotReached,
            }
        }
        Some(r) => match r.plan.window.map(|w| w.wait_secs(inputs.secs_of_day)) {
            Some(wait) if wait > 0 => Decision::Defer {
                retry_after: wait,
                reason: DeferReason::OutsideWindow,
            },
            _ if !inputs.release_ok => Decision::Defer {
                retry_after: next,
                reason: DeferReason::ServerBusy,
            },
            _ => {
                let (image, manifest) = choose(&r.release, c, inputs.patches, row.whole_seq);
                Decision::Offer {
                    image,
                    manifest: manifest.clone(),
                    urgency: Urgency::Attempt,
                    next_check_in: next,
                }
            }
        },
    };
    row.phase = match (&decision, c.resume) {
        (Decision::Offer { manifest, .. }, Some(h)) if h.manifest == manifest.digest().prefix() => {
            let size = manifest.manifest().transfer_size();
            row.progress = Some((h.next_offset.min(size), size));
            "downloading".into()
        }
        (Decision::Offer { manifest, .. }, _) => {
            row.progress = Some((0, manifest.manifest().transfer_size()));
            "offered".into()
        }
        (
            Decision::Defer {
                reason: DeferReason::OutsideWindow,
                ..
            },
            _,
        ) => "waiting for window".into(),
        (
            Decision::Defer {
                reason: DeferReason::ServerBusy,
                ..
            },
            _,
        ) => "held: release halted".into(),
        (Decision::Defer { .. }, _)
            if inputs
                .rollout
                .is_some_and(|r| r.state == RolloutState::Paused && r.reaches(&id)) =>
        {
            "held: rollout paused".into()
        }
        (Decision::Defer { .. }, _) => "not in rollout yet".into(),
        (Decision::Cancel { .. }, _) => "cancelled".into(),
        (Decision::UpToDate { .. }, _) => {
            row.progress = None;
            if row.failed_seq.is_some() && row.result != "confirmed" {
                row.result.clone()
            } else {
                "up to date".into()
            }
        }
    };
    // A phase named after the outcome just recorded ("rolled back", "failed") is that
    // outcome: one entry in the history, not two.
    let told = events.iter().any(|(kind, _)| *kind == row.phase);
    if !told && prev.as_ref().map(|p| p.phase.as_str()) != Some(row.phase.as_str()) {
        let detail = match &decision {
            Decision::Offer { manifest, .. } => {
                let m = manifest.manifest();
                match m.patch {
                    Some(p) => format!(
                        "{} as a patch ({} bytes for the {}-byte image)",
                        vtext(m.version),
                        p.size,
                        m.image_size
                    ),
                    None => format!("{} ({} bytes)", vtext(m.version), m.image_size),
                }
            }
            _ => format!("running {}", row.running),
        };
        events.push((row.phase.clone(), detail));
    }
    Plan {
        decision,
        row,
        events,
        outcome,
    }
}

/// What `report` does to a device whose row is `prev`.
pub fn report(report: &Report<'_>, prev: DeviceRow, now: i64) -> Plan {
    let mut row = prev.clone();
    row.phase = match report.phase {
        Phase::Rejected => "rejected",
        Phase::Downloading => "downloading",
        Phase::Staged => "staged",
        Phase::TrialBoot => "trial boot",
        Phase::Confirmed => "confirmed",
        Phase::RolledBack => "rolled back",
        Phase::Failed => "failed",
    }
    .into();
    if matches!(report.phase, Phase::Staged) {
        if let Some((_, size)) = row.progress {
            row.progress = Some((size, size));
        }
    }
    let mut events = Vec::new();
    if report.result != ResultCode::INITIAL {
        row.result = row.phase.clone();
        row.reason = reason_text(report.result);
    }
    if row.phase != prev.phase || report.result != ResultCode::INITIAL {
        let detail = if report.result == ResultCode::INITIAL {
            format!("image {}", report.image.0)
        } else {
            format!("image {}: {}", report.image.0, row.reason)
        };
        events.push((row.phase.clone(), detail));
    }
    let outcome = match report.phase {
        Phase::Failed | Phase::Rejected => Some("failure"),
        Phase::RolledBack => Some("rollback"),
        _ => None,
    }
    .map(|o| Outcome {
        sequence: None,
        image: Some(report.image.0),
        outcome: o,
        code: report.result,
    });
    row.last_seen = now;
    Plan {
        decision: Decision::UpToDate { next_check_in: 0 },
        row,
        events,
        outcome,
    }
}
