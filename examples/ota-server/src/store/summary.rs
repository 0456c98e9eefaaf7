//! The fleet at a glance, as the dashboard and `GET /api/v1/fleet` show it: aggregates in SQL,
//! so a page over a hundred thousand devices reads a few hundred rows.

use serde::Serialize;

use super::{unix_now, vtext, Store};
use crate::params;

/// How many devices of a class run a version.
#[derive(Debug, Clone, Serialize)]
pub struct VersionCount {
    /// Class.
    pub class: String,
    /// Version.
    pub version: String,
    /// Devices.
    pub devices: u64,
}

/// A rollout and its devices by phase.
#[derive(Debug, Clone, Serialize)]
pub struct RolloutProgress {
    /// Class.
    pub class: String,
    /// Version rolled out.
    pub version: String,
    /// Image id.
    pub release: u32,
    /// `running`, `paused`, `cancelled`, `complete`.
    pub state: String,
    /// Why (a pause's cause).
    pub reason: String,
    /// Steps, percent.
    pub steps: Vec<u8>,
    /// Current step (0-based).
    pub step: usize,
    /// Share offered now, percent.
    pub percent: u8,
    /// Devices of the class running the release (or newer).
    pub updated: u64,
    /// Devices of the class.
    pub devices: u64,
    /// Devices of the class by phase.
    pub phases: Vec<(String, u64)>,
    /// Why the release is halted, if it is.
    pub halted: Option<String>,
}

/// Devices that ended an update badly, by result and reason.
#[derive(Debug, Clone, Serialize)]
pub struct FailureCount {
    /// `failed`, `rolled back`, `refused`, `rejected`.
    pub result: String,
    /// The reason.
    pub reason: String,
    /// Devices.
    pub devices: u64,
    /// Some of them.
    pub examples: Vec<String>,
}

/// A device not heard from for longer than its check-in interval.
#[derive(Debug, Clone, Serialize)]
pub struct Silent {
    /// Id.
    pub id: String,
    /// Class.
    pub class: String,
    /// Version it ran.
    pub running: String,
    /// Seconds since it was seen.
    pub silent_secs: i64,
    /// Its interval.
    pub interval_secs: u32,
}

/// Bytes sent for one release.
#[derive(Debug, Clone, Serialize)]
pub struct BytesPerUpdate {
    /// Class.
    pub class: String,
    /// Version.
    pub version: String,
    /// Image size.
    pub image_bytes: u32,
    /// Devices that fetched from it.
    pub devices: u64,
    /// Image bytes sent in all.
    pub bytes_sent: u64,
    /// Of those, patch bytes.
    pub patch_bytes: u64,
    /// Devices that confirmed it.
    pub confirmed: u64,
    /// Mean bytes sent per confirmed device (0 if none).
    pub bytes_per_confirmed: u64,
}

/// Everything the dashboard shows.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Unix seconds it was read.
    pub at: i64,
    /// Devices in all.
    pub devices: u64,
    /// Versions per class.
    pub versions: Vec<VersionCount>,
    /// Rollouts.
    pub rollouts: Vec<RolloutProgress>,
    /// Failures.
    pub failures: Vec<FailureCount>,
    /// Silent devices (at most 50), and how many in all.
    pub silent: Vec<Silent>,
    /// All silent devices.
    pub silent_total: u64,
    /// Bytes per update.
    pub bytes: Vec<BytesPerUpdate>,
}

/// Grace beyond a device's interval before it counts as silent, seconds.
pub const SILENCE_GRACE_SECS: i64 = 30;

impl Store {
    /// The fleet at a glance.
    pub async fn summary(&self) -> anyhow::Result<Summary> {
        let now = unix_now();
        let db = self.backend();
        let versions: Vec<VersionCount> = db
            .query(
                "SELECT class, running, COUNT(*) FROM devices GROUP BY class, running ORDER BY class, running",
                vec![],
            )
            .await?
            .iter()
            .map(|r| {
                Ok(VersionCount {
                    class: r.text(0)?,
                    version: r.text(1)?,
                    devices: r.num(2)?,
                })
            })
            .collect::<anyhow::Result<_>>()?;
        let devices = versions.iter().map(|v| v.devices).sum();
        let mut rollouts = Vec::new();
        for r in self.rollouts().await? {
            let phases: Vec<(String, u64)> = db
                .query(
                    "SELECT phase, COUNT(*) FROM devices WHERE class = $1 GROUP BY phase ORDER BY phase",
                    params![r.class.as_str()],
                )
                .await?
                .iter()
                .map(|x| Ok((x.text(0)?, x.num(1)?)))
                .collect::<anyhow::Result<_>>()?;
            let updated = db
                .query(
                    "SELECT COUNT(*) FROM devices WHERE class = $1 AND running_seq >= $2",
                    params![r.class.as_str(), r.release.sequence],
                )
                .await?
                .first()
                .map(|x| x.num(0))
                .transpose()?
                .unwrap_or(0);
            rollouts.push(RolloutProgress {
                class: r.class.clone(),
                version: vtext(r.release.version),
                release: r.release.id,
                state: r.state.as_str().into(),
                reason: r.state_reason.clone(),
                steps: r.plan.steps.clone(),
                step: r.step,
                percent: r.percent(),
                updated,
                devices: phases.iter().map(|p| p.1).sum(),
                phases,
                halted: r.release.halted.clone(),
            });
        }
        let mut failures = Vec::new();
        for r in db
            .query(
                "SELECT result, reason, COUNT(*) FROM devices WHERE result IN ('failed', 'rolled back', 'refused', 'rejected')
                 GROUP BY result, reason ORDER BY COUNT(*) DESC, result, reason LIMIT 50",
                vec![],
            )
            .await?
        {
            let (result, reason) = (r.text(0)?, r.text(1)?);
            let examples = db
                .query(
                    "SELECT id FROM devices WHERE result = $1 AND reason = $2 ORDER BY last_seen DESC LIMIT 5",
                    params![result.as_str(), reason.as_str()],
                )
                .await?
                .iter()
                .map(|x| x.text(0))
                .collect::<Result<_, _>>()?;
            failures.push(FailureCount {
                result,
                reason,
                devices: r.num(2)?,
                examples,
            });
        }
        let silent_cond = "last_seen + next_check_in + $1 < $2";
        let silent = db
            .query(
                &format!("SELECT id, class, running, last_seen, next_check_in FROM devices WHERE {silent_cond} ORDER BY last_seen LIMIT 50"),
                params![SILENCE_GRACE_SECS, now],
            )
            .await?
            .iter()
            .map(|r| {
                Ok(Silent {
                    id: r.text(0)?,
                    class: r.text(1)?,
                    running: r.text(2)?,
                    silent_secs: now - r.int(3)?,
                    interval_secs: r.num(4)?,
                })
            })
            .collect::<anyhow::Result<_>>()?;
        let silent_total = db
            .query(
                &format!("SELECT COUNT(*) FROM devices WHERE {silent_cond}"),
                params![SILENCE_GRACE_SECS, now],
            )
            .await?
            .first()
            .map(|r| r.num(0))
            .transpose()?
            .unwrap_or(0);
        let releases = self.releases().await?;
        let mut bytes = Vec::new();
        for t in self.transfer_totals().await? {
            let (release, devices, sent, confirmed, confirmed_bytes) = (
                t.release,
                t.devices,
                t.bytes,
                t.confirmed,
                t.confirmed_bytes,
            );
            let Some(r) = releases.iter().find(|r| r.id == release) else {
                continue;
            };
            bytes.push(BytesPerUpdate {
                class: r.class.clone(),
                version: vtext(r.version),
                image_bytes: r.manifest.manifest().image_size,
                devices,
                bytes_sent: sent,
                patch_bytes: t.patch_bytes,
                confirmed,
                bytes_per_confirmed: confirmed_bytes.checked_div(confirmed).unwrap_or(0),
            });
        }
        Ok(Summary {
            at: now,
            devices,
            versions,
            rollouts,
            failures,
            silent,
            silent_total,
            bytes,
        })
    }
}
