//! The schema, as numbered migrations both backends apply in order (each once, recorded in
//! `schema_migrations`). Written once in the common dialect; `{BLOB}` and `{ID}` become each
//! database's byte string and auto-numbered key.

use anyhow::Context as _;

use super::sql::{Backend, Value};

/// The migrations, in order: (version, script).
pub const MIGRATIONS: &[(i64, &str)] = &[(1, V1), (2, V2)];

const V1: &str = "
CREATE TABLE classes (id BIGINT PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE images (digest {BLOB} PRIMARY KEY, bytes {BLOB} NOT NULL);
CREATE TABLE releases (
    id {ID}, class TEXT NOT NULL, major BIGINT NOT NULL, minor BIGINT NOT NULL,
    patch BIGINT NOT NULL, sequence BIGINT NOT NULL, digest {BLOB} NOT NULL REFERENCES images(digest),
    body {BLOB} NOT NULL, signature {BLOB} NOT NULL, created BIGINT NOT NULL, halted TEXT,
    UNIQUE (class, sequence));
CREATE TABLE rollouts (
    class TEXT PRIMARY KEY, release BIGINT NOT NULL REFERENCES releases(id),
    steps TEXT NOT NULL, step BIGINT NOT NULL, step_started BIGINT NOT NULL,
    soak_secs BIGINT NOT NULL, max_failure_percent BIGINT NOT NULL, min_outcomes BIGINT NOT NULL,
    devices TEXT NOT NULL, maintenance TEXT, state TEXT NOT NULL, state_reason TEXT NOT NULL,
    created BIGINT NOT NULL, updated BIGINT NOT NULL);
CREATE TABLE devices (
    id TEXT PRIMARY KEY, class TEXT NOT NULL, running TEXT NOT NULL, running_seq BIGINT NOT NULL,
    phase TEXT NOT NULL, staged BIGINT, size BIGINT, result TEXT NOT NULL, reason TEXT NOT NULL,
    last_seen BIGINT NOT NULL, failed_seq BIGINT, next_check_in BIGINT NOT NULL, checkin {BLOB});
CREATE TABLE credentials (
    id TEXT PRIMARY KEY, class TEXT NOT NULL, kid {BLOB} NOT NULL UNIQUE, secret {BLOB} NOT NULL,
    salt {BLOB} NOT NULL, floor BIGINT, created BIGINT NOT NULL);
CREATE TABLE integrity_reports (
    release BIGINT NOT NULL, device TEXT NOT NULL, PRIMARY KEY (release, device));
CREATE TABLE events (
    id {ID}, device TEXT NOT NULL, at BIGINT NOT NULL, kind TEXT NOT NULL, detail TEXT NOT NULL);
CREATE INDEX events_device ON events (device, id);
CREATE TABLE transfers (
    device TEXT NOT NULL, release BIGINT NOT NULL, bytes BIGINT NOT NULL, started BIGINT NOT NULL,
    finished BIGINT, outcome TEXT, PRIMARY KEY (device, release));
CREATE INDEX transfers_release ON transfers (release, finished);
CREATE TABLE tokens (hash {BLOB} PRIMARY KEY, name TEXT NOT NULL, created BIGINT NOT NULL);
CREATE TABLE meta (key TEXT PRIMARY KEY, value BIGINT NOT NULL);
INSERT INTO meta (key, value) VALUES ('config', 0);
";

/// Delta updates: a release's patches from earlier releases (the patch bytes are in `images`
/// under their own SHA-256), the image bytes of a transfer that were patch bytes, and the
/// release a device failed to apply a patch of (it is offered the whole image instead).
const V2: &str = "
CREATE TABLE patches (
    id {ID}, release BIGINT NOT NULL REFERENCES releases(id),
    source BIGINT NOT NULL REFERENCES releases(id), source_prefix {BLOB} NOT NULL,
    digest {BLOB} NOT NULL REFERENCES images(digest), size BIGINT NOT NULL,
    body {BLOB} NOT NULL, signature {BLOB} NOT NULL, UNIQUE (release, source));
ALTER TABLE transfers ADD COLUMN patch_bytes BIGINT NOT NULL DEFAULT 0;
ALTER TABLE devices ADD COLUMN whole_seq BIGINT;
";

/// Applies migration `version` (`script`) unless it was: in one transaction, recorded in
/// `schema_migrations`; `true` if it ran now.
pub async fn migrate(db: &dyn Backend, version: i64, script: &str) -> anyhow::Result<bool> {
    let dialect = db.dialect();
    let mut tx = db.begin().await?;
    if let Some(lock) = dialect.serialize {
        tx.query(lock, vec![]).await?;
    }
    tx.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied BIGINT NOT NULL)",
        vec![],
    )
    .await?;
    let done = !tx
        .query(
            "SELECT 1 FROM schema_migrations WHERE version = $1",
            vec![Value::Int(version)],
        )
        .await?
        .is_empty();
    if done {
        return Ok(false);
    }
    let script = render(script, dialect.blob, dialect.id);
    for stmt in statements(&script) {
        tx.execute(stmt, vec![])
            .await
            .with_context(|| format!("migration {version}: {stmt}"))?;
    }
    tx.execute(
        "INSERT INTO schema_migrations (version, applied) VALUES ($1, $2)",
        vec![Value::Int(version), Value::Int(super::unix_now())],
    )
    .await?;
    tx.commit().await?;
    Ok(true)
}

/// `script` for a database whose byte string type is `blob` and auto-numbered key `id`.
pub fn render(script: &str, blob: &str, id: &str) -> String {
    script.replace("{BLOB}", blob).replace("{ID}", id)
}

/// The statements of a script (split at `;`).
pub fn statements(script: &str) -> impl Iterator<Item = &str> {
    script.split(';').map(str::trim).filter(|s| !s.is_empty())
}
