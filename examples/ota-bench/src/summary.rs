//! What the dashboard's summary costs over a large fleet: `Store::summary` (versions, rollout
//! progress by phase, failures with examples, silent devices, bytes per update) timed over
//! device rows written the way the server writes them, on SQLite and on PostgreSQL, each
//! summary checked against the rows counted one by one. Run it on a database of its own: the
//! check counts every device in the store.

use std::collections::BTreeMap;
use std::time::{Duration, Instant as Wall};

use ota_server::store::summary::{Summary, MAX_FAILURE_LINES, SILENCE_GRACE_SECS};
use ota_server::store::{DeviceRow, Location, Store, Write};

/// Distinct reasons among the failed rows: devices of a large fleet fail for many reasons (an
/// unknown result code is its own reason), and each is a line of the dashboard, which shows
/// the most frequent [`MAX_FAILURE_LINES`].
const REASONS: usize = 60;

/// Summaries timed per figure (the median is printed).
const RUNS: usize = 5;

/// Rows `from..to` of a fleet of devices of `class`: most idle on one of two versions, 5 %
/// downloading, 4 % failed for one of [`REASONS`] reasons, rolled back, refused or rejected,
/// 2 % silent.
fn rows(class: &str, from: usize, to: usize, now: i64) -> Vec<DeviceRow> {
    (from..to)
        .map(|i| {
            let updated = i % 5 == 0;
            let (phase, progress) = match i % 20 {
                0 => ("downloading", Some(((i % 97) as u32 * 1024, 200_000))),
                _ => ("idle", None),
            };
            let (result, reason) = match i % 25 {
                0 => ("failed", format!("code {} (LwM2M 9)", i / 25 % REASONS)),
                1 => ("rolled back", "health check failed".to_string()),
                2 if i % 100 == 2 => ("refused", "bad manifest signature".to_string()),
                3 if i % 100 == 3 => ("rejected", "not enough flash".to_string()),
                _ if updated => ("success", "success".to_string()),
                _ => ("", String::new()),
            };
            let silent = i % 50 == 7;
            DeviceRow {
                id: format!("{class}-{i:06}"),
                class: class.to_string(),
                running: if updated { "1.1.0" } else { "1.0.0" }.to_string(),
                running_seq: u32::from(updated),
                phase: phase.to_string(),
                progress,
                result: result.to_string(),
                reason,
                last_seen: now - if silent { 10_000 } else { (i % 3000) as i64 },
                failed_seq: None,
                whole_seq: None,
                next_check_in: 3600,
                checkin: Some(vec![0x5a; 44]),
            }
        })
        .collect()
}

/// Median time of [`RUNS`] summaries once rows `from..to` are added to the store (written
/// through the store's own batched writer, as serving writes them) and to `all`; each
/// summary is checked against `all` counted here.
async fn time_summary(
    store: &Store,
    class: &str,
    from: usize,
    to: usize,
    all: &mut Vec<DeviceRow>,
) -> Duration {
    let now = ota_server::store::unix_now();
    for row in rows(class, from, to, now) {
        store.record(Write::Device(row.clone()));
        all.push(row);
    }
    store.flush().await.expect("rows written");
    let mut times: Vec<Duration> = Vec::new();
    for _ in 0..RUNS {
        let t = Wall::now();
        let s = store.summary().await.expect("a summary");
        times.push(t.elapsed());
        check(&s, all);
    }
    times.sort();
    times[RUNS / 2]
}

/// Panics unless `s` says what counting `rows` (the store's every device) one by one says.
fn check(s: &Summary, rows: &[DeviceRow]) {
    assert_eq!(s.devices, rows.len() as u64, "devices");
    let mut versions: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for r in rows {
        *versions.entry((&r.class, &r.running)).or_default() += 1;
    }
    let got: Vec<_> = s
        .versions
        .iter()
        .map(|v| ((v.class.as_str(), v.version.as_str()), v.devices))
        .collect();
    assert_eq!(got, versions.into_iter().collect::<Vec<_>>(), "versions");
    // The bench's one rollout: release 1.1.0, sequence 1.
    assert_eq!(s.rollouts.len(), 1, "rollouts");
    for ro in &s.rollouts {
        assert_eq!(ro.version, "1.1.0");
        let mut phases: BTreeMap<&str, u64> = BTreeMap::new();
        let mut updated = 0;
        for r in rows.iter().filter(|r| r.class == ro.class) {
            *phases.entry(&r.phase).or_default() += 1;
            updated += u64::from(r.running_seq >= 1);
        }
        let got: Vec<_> = ro.phases.iter().map(|(p, n)| (p.as_str(), *n)).collect();
        assert_eq!(got, phases.into_iter().collect::<Vec<_>>(), "phases");
        assert_eq!(ro.updated, updated, "updated");
    }
    let failed = ["failed", "rolled back", "refused", "rejected"];
    let mut groups: BTreeMap<(&str, &str), Vec<&DeviceRow>> = BTreeMap::new();
    for r in rows.iter().filter(|r| failed.contains(&r.result.as_str())) {
        groups.entry((&r.result, &r.reason)).or_default().push(r);
    }
    let mut want: Vec<_> = groups.into_iter().collect();
    want.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(&b.0)));
    want.truncate(MAX_FAILURE_LINES);
    assert_eq!(s.failures.len(), want.len(), "failure lines");
    for (f, ((result, reason), mut devices)) in s.failures.iter().zip(want) {
        assert_eq!((f.result.as_str(), f.reason.as_str()), (result, reason));
        assert_eq!(f.devices, devices.len() as u64, "{result} {reason}");
        devices.sort_by(|a, b| b.last_seen.cmp(&a.last_seen).then(a.id.cmp(&b.id)));
        let examples: Vec<&str> = devices.iter().take(5).map(|d| d.id.as_str()).collect();
        assert_eq!(f.examples, examples, "examples of {result} {reason}");
    }
    let mut silent: Vec<&DeviceRow> = rows
        .iter()
        .filter(|r| r.last_seen + i64::from(r.next_check_in) + SILENCE_GRACE_SECS < s.at)
        .collect();
    assert_eq!(s.silent_total, silent.len() as u64, "silent");
    silent.sort_by(|a, b| a.last_seen.cmp(&b.last_seen).then(a.id.cmp(&b.id)));
    let got: Vec<&str> = s.silent.iter().map(|d| d.id.as_str()).collect();
    let want: Vec<&str> = silent.iter().take(50).map(|d| d.id.as_str()).collect();
    assert_eq!(got, want, "the silent listed");
}

/// One row per (store, fleet size): the summary's median time.
pub fn summary_rows(pg: Option<&str>) -> Vec<(String, String)> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let dir = std::env::temp_dir().join(format!("ota-bench-summary-{}", std::process::id()));
    let mut stores = vec![("SQLite", Location::Dir(dir.clone()))];
    if let Some(url) = pg {
        stores.push(("PostgreSQL", Location::Postgres(url.to_string())));
    }
    let mut out = Vec::new();
    for (name, location) in stores {
        let _ = std::fs::remove_dir_all(&dir);
        // A release rolled out to the class, so the summary has a rollout to count.
        let class = "sumbench";
        let _ = super::served::provision(&location, class, 0);
        rt.block_on(async {
            let store = Store::open_at(&location).await.expect("the store");
            let mut so_far = 0;
            let mut all = Vec::new();
            for n in [20_000usize, 200_000] {
                // Rows are added up to `n`: the first run's stay.
                let t = time_summary(&store, class, so_far, n, &mut all).await;
                so_far = n;
                out.push((
                    format!("dashboard summary, {name}, {n} devices, {REASONS} failure reasons"),
                    format!("{:.1} ms", t.as_secs_f64() * 1e3),
                ));
            }
        });
    }
    let _ = std::fs::remove_dir_all(&dir);
    out
}
