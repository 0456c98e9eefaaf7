//! The fleet at a glance ([`Store::summary`]) as the dashboard and `GET /api/v1/fleet` serve it:
//! computed by one caller at a time and served again to every other for a while. Over 200 000
//! devices a summary reads the devices table for a few hundred milliseconds, so each open page
//! (it reloads every 10 s) or API poller would otherwise take that much from serving, per view.
//!
//! A summary is served again until the configuration changes (a release or rollout, from the
//! API or the CLI: what a fleet owner who just acted expects to see) or it ages past
//! [`fresh_for`] its cost: device states change continuously, and the summary says when it was
//! read ([`Summary::at`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use crate::store::summary::Summary;
use crate::store::Store;

/// The shortest time a summary is served again.
pub const MIN_FRESH: Duration = Duration::from_secs(1);

/// The longest.
pub const MAX_FRESH: Duration = Duration::from_secs(30);

/// How long a summary that took `cost` to read is served again: ten times its cost, so that
/// reading summaries takes at most a tenth of the time however many ask, within
/// [`MIN_FRESH`]..=[`MAX_FRESH`].
pub fn fresh_for(cost: Duration) -> Duration {
    (cost * 10).clamp(MIN_FRESH, MAX_FRESH)
}

struct Cached {
    read_at: Instant,
    cost: Duration,
    config: i64,
    summary: Arc<Summary>,
}

/// The last summary and what it was read at; see the module documentation.
#[derive(Default)]
pub struct Glance {
    last: Mutex<Option<Cached>>,
}

impl Glance {
    /// The summary of `store` at configuration version `config`: the last one if it was read at
    /// that version within [`fresh_for`] its cost, else a new one. Callers that come while one
    /// is read wait for it rather than read another.
    pub async fn get(&self, store: &Store, config: i64) -> anyhow::Result<Arc<Summary>> {
        let mut last = self.last.lock().await;
        if let Some(c) = &*last {
            if c.config == config && c.read_at.elapsed() < fresh_for(c.cost) {
                return Ok(c.summary.clone());
            }
        }
        let started = Instant::now();
        let summary = Arc::new(store.summary().await?);
        *last = Some(Cached {
            read_at: Instant::now(),
            cost: started.elapsed(),
            config,
            summary: summary.clone(),
        });
        Ok(summary)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn viewers_share_one_read_until_it_ages_or_the_configuration_moves() {
        let dir = std::env::temp_dir().join(format!("ota-glance-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Arc::new(Store::open(&dir).await.unwrap());
        let glance = Arc::new(Glance::default());
        // Eight at once: one reads, the others wait for it.
        let views: Vec<_> = (0..8)
            .map(|_| {
                let (g, s) = (glance.clone(), store.clone());
                tokio::spawn(async move { g.get(&s, 1).await.unwrap() })
            })
            .collect();
        let mut got = Vec::new();
        for v in views {
            got.push(v.await.unwrap());
        }
        assert!(
            got.iter().all(|s| Arc::ptr_eq(s, &got[0])),
            "one read for all"
        );
        let again = glance.get(&store, 1).await.unwrap();
        assert!(Arc::ptr_eq(&again, &got[0]), "served again while fresh");
        let moved = glance.get(&store, 2).await.unwrap();
        assert!(
            !Arc::ptr_eq(&moved, &got[0]),
            "read again at a new configuration"
        );
        tokio::time::sleep(MIN_FRESH + Duration::from_millis(100)).await;
        let aged = glance.get(&store, 2).await.unwrap();
        assert!(!Arc::ptr_eq(&aged, &moved), "read again once aged");
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_summary_is_read_at_most_a_tenth_of_the_time() {
        assert_eq!(fresh_for(Duration::from_millis(5)), MIN_FRESH);
        assert_eq!(
            fresh_for(Duration::from_millis(300)),
            Duration::from_secs(3)
        );
        assert_eq!(fresh_for(Duration::from_secs(10)), MAX_FRESH);
    }
}
