//! Rollouts a fleet owner trusts (after AWS IoT Jobs' rollout rates and abort criteria and
//! hawkBit's rollout groups): a release goes to a rising share of a class in steps (1 % → 10 %
//! → 100 %, say), each held for a minimum soak time; when the share of the current step's
//! finished updates that failed or rolled back passes a threshold (once enough have finished
//! to judge), the rollout pauses itself: devices that have not started wait, downloads under
//! way finish, and a person resumes or cancels it.
//!
//! Every serving instance evaluates every rollout each [`super::REFRESH`]; a step or a pause
//! is one conditional `UPDATE` on the state it saw, so two instances never both act.

use crate::store::{Rollout, RolloutState, Store};

/// What a rollout should do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Pause, for this reason.
    Pause(String),
    /// Move to step `.0` (the last step completes the ramp).
    Ramp(usize),
}

impl Action {
    /// In words, for the log.
    pub fn describe(&self) -> String {
        match self {
            Action::Pause(why) => format!("paused: {why}"),
            Action::Ramp(step) => format!("ramped to step {}", step + 1),
        }
    }
}

/// Whether the current step's failures pass the threshold: `Some(reason)` if so.
pub fn failing(r: &Rollout, ok: u32, bad: u32) -> Option<String> {
    let total = ok + bad;
    if total == 0 || total < r.plan.min_outcomes {
        return None;
    }
    let pct = u64::from(bad) * 100 / u64::from(total);
    (u64::from(bad) * 100 > u64::from(r.plan.max_failure_percent) * u64::from(total)).then(|| {
        format!(
            "{bad} of {total} updates at step {} ({}%) failed or rolled back ({pct}%), above the {}% threshold",
            r.step + 1,
            r.percent(),
            r.plan.max_failure_percent
        )
    })
}

/// What `r` should do at `now` (unix seconds), judging the outcomes since its step began.
pub async fn evaluate(store: &Store, r: &Rollout, now: i64) -> anyhow::Result<Option<Action>> {
    if !matches!(r.state, RolloutState::Running | RolloutState::Complete) {
        return Ok(None);
    }
    let (ok, bad) = store.outcomes_since(r.release.id, r.step_started).await?;
    if let Some(why) = failing(r, ok, bad) {
        return Ok(Some(Action::Pause(why)));
    }
    let soaked = now.saturating_sub(r.step_started) >= i64::from(r.plan.soak_secs);
    if r.state == RolloutState::Running && soaked && r.step + 1 < r.plan.steps.len() {
        return Ok(Some(Action::Ramp(r.step + 1)));
    }
    Ok(None)
}

/// Applies `action` to `r` if it is still in the state it was seen in; `true` if it was.
pub async fn apply(store: &Store, r: &Rollout, action: &Action) -> anyhow::Result<bool> {
    match action {
        Action::Pause(why) => {
            store
                .transition(&r.class, r.state, RolloutState::Paused, why, None)
                .await
        }
        Action::Ramp(step) => {
            let to = if step + 1 >= r.plan.steps.len() {
                RolloutState::Complete
            } else {
                RolloutState::Running
            };
            store
                .transition(&r.class, r.state, to, "", Some(*step))
                .await
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::store::RolloutPlan;

    fn rollout(max: u8, min: u32) -> Rollout {
        let key = ed25519_dalek::SigningKey::from_bytes(&[1; 32]);
        let m = ota_core::manifest::Manifest {
            format: ota_core::manifest::MANIFEST_FORMAT,
            vendor: 1,
            class: 2,
            sequence: 1,
            version: ota_core::wire::Version::new(1, 0, 0),
            image_size: 10,
            digest: ota_core::wire::Digest([0; 32]),
            chunk_size: 1024,
            min_running: None,
            patch: None,
        };
        Rollout {
            class: "c".into(),
            release: crate::store::Release {
                id: 1,
                class: "c".into(),
                version: m.version,
                sequence: 1,
                manifest: ota_core::host::OwnedManifest::sign(&m, &key),
                halted: None,
                created: 0,
                patches: Vec::new(),
            },
            plan: RolloutPlan {
                steps: vec![1, 10, 100],
                soak_secs: 60,
                max_failure_percent: max,
                min_outcomes: min,
                devices: vec![],
                window: None,
            },
            step: 1,
            step_started: 0,
            state: RolloutState::Running,
            state_reason: String::new(),
            created: 0,
        }
    }

    #[test]
    fn the_threshold_needs_enough_outcomes_and_more_than_its_share() {
        let r = rollout(20, 5);
        assert_eq!(failing(&r, 0, 4), None, "4 outcomes are too few to judge");
        assert_eq!(failing(&r, 4, 1), None, "20% is not above 20%");
        let why = failing(&r, 3, 2).unwrap();
        assert!(why.contains("2 of 5 updates at step 2 (10%)"), "{why}");
        assert_eq!(failing(&rollout(100, 1), 0, 9), None, "100% never pauses");
    }
}
