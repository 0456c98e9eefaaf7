//! The fleet at a glance, as the dashboard and `GET /api/v1/fleet` show it: aggregates in SQL,
//! so a page over a hundred thousand devices reads a few hundred rows.

use std::collections::BTreeMap;

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

/// Failure lines (result and reason) shown at most, the most frequent first.
pub const MAX_FAILURE_LINES: usize = 50;

/// The results that count as failures, as SQL.
const FAILED: &str = "('failed', 'rolled back', 'refused', 'rejected')";

/// Grace beyond a device's interval before it counts as silent, seconds.
pub const SILENCE_GRACE_SECS: i64 = 30;

impl Store {
    /// The fleet at a glance.
    pub async fn summary(&self) -> anyhow::Result<Summary> {
        let now = unix_now();
        let db = self.backend();
        // One pass over every device, counting by class, version and phase: the versions
        // per class and each rollout's progress are summed from these few groups (a query
        // each read the table once per rollout). No index spares these reads: every
        // check-in rewrites its device's row, and on SQLite one more index on `devices`,
        // even a partial one that no row entered, halved the serving rate at 256 clients.
        let mut groups = Vec::new();
        for r in db
            .query(
                "SELECT class, running, running_seq, phase, COUNT(*) FROM devices
                 GROUP BY class, running, running_seq, phase",
                vec![],
            )
            .await?
        {
            let n: u64 = r.num(4)?;
            groups.push((r.text(0)?, r.text(1)?, r.num::<u32>(2)?, r.text(3)?, n));
        }
        let mut by_version: BTreeMap<(&str, &str), u64> = BTreeMap::new();
        for (class, running, _, _, n) in &groups {
            *by_version.entry((class, running)).or_default() += n;
        }
        let versions: Vec<VersionCount> = by_version
            .into_iter()
            .map(|((class, version), devices)| VersionCount {
                class: class.to_string(),
                version: version.to_string(),
                devices,
            })
            .collect();
        let devices = versions.iter().map(|v| v.devices).sum();
        let mut rollouts = Vec::new();
        for r in self.rollouts().await? {
            let mut by_phase: BTreeMap<&str, u64> = BTreeMap::new();
            let mut updated = 0;
            for (_, _, seq, phase, n) in groups.iter().filter(|g| g.0 == r.class) {
                *by_phase.entry(phase).or_default() += n;
                if *seq >= r.release.sequence {
                    updated += n;
                }
            }
            let phases: Vec<(String, u64)> = by_phase
                .into_iter()
                .map(|(p, n)| (p.to_string(), n))
                .collect();
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
        // Every failed device's (result, reason), its group's size and rank by last seen, in
        // one pass: the five most recent of each group are its examples. The lines are
        // ordered here (most devices first, then by result and reason byte by byte), so that
        // both databases order them alike whatever their collation.
        let mut failures: Vec<FailureCount> = Vec::new();
        for r in db
            .query(
                &format!("SELECT result, reason, n, id FROM (
                     SELECT result, reason, id,
                            COUNT(*) OVER (PARTITION BY result, reason) AS n,
                            ROW_NUMBER() OVER (PARTITION BY result, reason ORDER BY last_seen DESC, id) AS k
                     FROM devices WHERE result IN {FAILED}
                 ) AS f WHERE k <= 5 ORDER BY result, reason, k"),
                vec![],
            )
            .await?
        {
            let (result, reason, id) = (r.text(0)?, r.text(1)?, r.text(3)?);
            if let Some(f) = failures
                .last_mut()
                .filter(|f| f.result == result && f.reason == reason)
            {
                f.examples.push(id);
                continue;
            }
            failures.push(FailureCount {
                result,
                reason,
                devices: r.num(2)?,
                examples: vec![id],
            });
        }
        failures.sort_by(|a, b| {
            (b.devices, &a.result, &a.reason).cmp(&(a.devices, &b.result, &b.reason))
        });
        failures.truncate(MAX_FAILURE_LINES);
        // The 50 silent the longest, and (the window counts before the limit) how many in all.
        let rows = db
            .query(
                "SELECT id, class, running, last_seen, next_check_in, COUNT(*) OVER ()
                 FROM devices WHERE last_seen + next_check_in + $1 < $2 ORDER BY last_seen, id LIMIT 50",
                params![SILENCE_GRACE_SECS, now],
            )
            .await?;
        let silent_total = rows.first().map(|r| r.num(5)).transpose()?.unwrap_or(0);
        let silent = rows
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
