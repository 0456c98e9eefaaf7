//! The embedded store: SQLite in `DATA/ota.db`, in WAL mode (readers never wait for the writer;
//! a commit is a write to the log, not an fsync, with `synchronous = NORMAL`: it survives the
//! process being killed, and only a power cut can lose the last commits).
//!
//! Statements from the CLI and the API run on one connection. What `serve` writes goes through
//! a writer thread with its own connection: it takes every queued write, commits them in one
//! transaction, then answers every replay floor that waited for it (group commit), so a
//! check-in costs a share of one commit rather than one of its own.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use async_trait::async_trait;
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::Connection;
use tokio::sync::{oneshot, Mutex};

use super::sql::{Backend, Dialect, Row, Tx, Value};
use super::write::{Write, WriteError};

/// Most writes committed in one transaction.
const MAX_GROUP: usize = 4096;

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Value::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Value::Int(v) => ToSqlOutput::Borrowed(ValueRef::Integer(*v)),
            Value::Bool(b) => ToSqlOutput::Borrowed(ValueRef::Integer(i64::from(*b))),
            Value::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Value::Bytes(b) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
        })
    }
}

/// `$1` placeholders as SQLite's `?1`.
fn dialect(sql: &str) -> String {
    sql.replace('$', "?")
}

fn row_of(r: &rusqlite::Row<'_>, n: usize) -> rusqlite::Result<Row> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        out.push(match r.get_ref(i)? {
            ValueRef::Null => Value::Null,
            ValueRef::Integer(v) => Value::Int(v),
            ValueRef::Real(v) => Value::Int(v as i64),
            ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
            ValueRef::Blob(b) => Value::Bytes(b.to_vec()),
        });
    }
    Ok(Row(out))
}

fn query(conn: &Connection, sql: &str, params: &[Value]) -> anyhow::Result<Vec<Row>> {
    let mut stmt = conn.prepare_cached(&dialect(sql))?;
    let n = stmt.column_count();
    let rows = stmt.query_map(rusqlite::params_from_iter(params.iter()), |r| row_of(r, n))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn execute(conn: &Connection, sql: &str, params: &[Value]) -> anyhow::Result<u64> {
    let mut stmt = conn.prepare_cached(&dialect(sql))?;
    Ok(stmt.execute(rusqlite::params_from_iter(params.iter()))? as u64)
}

/// `serve`'s hold on a SQLite data directory: an exclusive `flock` on `DIR/serve.lock` for the
/// life of the process (the kernel lets go when it exits, however it exits). A second `serve`
/// on the same directory is refused: a serving process keeps device rows and the
/// credentials read at start in memory as their only writer, and two would hand out replay
/// floors and overwrite rows behind each other's back. Other commands (`release`, `device
/// add`) take no lock and may run beside it.
pub struct ServeLock {
    _file: std::fs::File,
}

impl ServeLock {
    /// Takes the lock on `dir` (created if missing), or says who holds it.
    pub fn take(dir: &Path) -> anyhow::Result<ServeLock> {
        use std::io::Write as _;
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let path = dir.join("serve.lock");
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        #[cfg(unix)]
        if let Err(e) =
            rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive)
        {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            if e == rustix::io::Errno::WOULDBLOCK {
                bail!(
                    "another ota-server serve uses {} (pid {}): one serve per SQLite data directory (several instances need --db postgres://…)",
                    dir.display(),
                    holder.trim()
                );
            }
            bail!("cannot lock {}: {e}", path.display());
        }
        file.set_len(0)?;
        writeln!(file, "{}", std::process::id())?;
        Ok(ServeLock { _file: file })
    }
}

fn connect(path: &Path) -> anyhow::Result<Connection> {
    let conn = Connection::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(conn)
}

enum Job {
    Advance(String, u64, oneshot::Sender<Result<bool, WriteError>>),
    Record(Write),
    Flush(oneshot::Sender<Result<(), WriteError>>),
}

/// SQLite under a data directory.
pub struct Sqlite {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
    writer: std::sync::Mutex<Option<mpsc::Sender<Job>>>,
    wal: WalPolicy,
}

impl Sqlite {
    /// Opens (creating) `DIR/ota.db`.
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let path = dir.join("ota.db");
        let conn = connect(&path)?;
        let old: bool = conn
            .prepare("SELECT 1 FROM sqlite_master WHERE name = 'checkins'")?
            .exists([])?;
        if old {
            bail!(
                "{} was written by an earlier ota-server (before schema migrations); start from a new data directory",
                path.display()
            );
        }
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            path,
            writer: std::sync::Mutex::new(None),
            wal: WalPolicy::default(),
        })
    }

    /// The writer thread's queue, started on first use.
    fn writer(&self) -> Result<mpsc::Sender<Job>, WriteError> {
        let mut w = self
            .writer
            .lock()
            .map_err(|_| WriteError("poisoned".into()))?;
        if let Some(tx) = w.as_ref() {
            return Ok(tx.clone());
        }
        let conn = connect(&self.path).map_err(|e| WriteError(format!("{e:#}")))?;
        // The writer does not checkpoint after every so many pages (a checkpoint in a commit
        // stalls every request waiting on that group): a thread of its own copies the WAL back
        // without blocking it, and asks the writer to finish the job when the log grows long.
        let policy = self.wal;
        conn.pragma_update(None, "wal_autocheckpoint", 0)
            .and_then(|()| {
                conn.pragma_update(None, "journal_size_limit", policy.frames_limit * 4096)
            })
            .map_err(|e| WriteError(e.to_string()))?;
        let checkpointer = connect(&self.path).map_err(|e| WriteError(format!("{e:#}")))?;
        let (tx, rx) = mpsc::channel();
        let wal = Arc::new(WalState::default());
        let shared = wal.clone();
        std::thread::Builder::new()
            .name("ota-sqlite-writer".into())
            .spawn(move || {
                writer_loop(conn, rx, &shared);
                shared.stopped.store(true, Ordering::Relaxed);
            })
            .map_err(|e| WriteError(e.to_string()))?;
        std::thread::Builder::new()
            .name("ota-sqlite-checkpoint".into())
            .spawn(move || checkpoint_loop(checkpointer, &wal, policy))
            .map_err(|e| WriteError(e.to_string()))?;
        *w = Some(tx.clone());
        Ok(tx)
    }
}

/// When the WAL is copied back into the database.
///
/// The background checkpoint never waits for the writer, so under writes without a pause it
/// never finds the log wholly copied, and SQLite starts a log over only once it is: the log
/// grew by 220 MB/s at 50 000 check-ins/s, reached 1 GB in 4.5 s, and would have grown until
/// the load paused. A checkpoint by the writer itself meets no new frames, so it finishes
/// (unless a reader still holds an older snapshot) and the next commit starts the log over.
/// Asked for just after a background pass, it has only that pass's commits to copy, but the
/// check-ins waiting on the writer stall while it runs (10 to 25 ms here). The limit sets how
/// often: at 64 MiB it came twice a second under load, and p99 at 256 clients rose from 12-17
/// to 24-30 ms; at 256 MiB, 12-17 ms.
#[derive(Debug, Clone, Copy)]
struct WalPolicy {
    /// How often the background thread copies the log back.
    every: Duration,
    /// Frames in the log (4 KiB pages) past which the writer is asked to finish the job. The
    /// log file is also cut back to this length when it starts over.
    frames_limit: i64,
}

impl Default for WalPolicy {
    fn default() -> Self {
        Self {
            every: Duration::from_millis(200),
            frames_limit: 65_536,
        }
    }
}

/// What the writer and the checkpoint thread share.
#[derive(Default)]
struct WalState {
    /// Set by the checkpoint thread when the log is long; taken by the writer.
    finish: AtomicBool,
    /// Set when the writer has stopped.
    stopped: AtomicBool,
}

/// Copies what it can of the log back (`PASSIVE`): the frames in the log, or `None` if
/// another checkpoint was running.
fn checkpoint(conn: &Connection) -> rusqlite::Result<Option<i64>> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((r.get::<_, i64>(0)? == 0).then_some(r.get(1)?))
    })
}

/// Copies committed WAL pages back into the database (`PASSIVE`: never waits for the writer,
/// never makes it wait) until the writer has stopped, and asks the writer to finish the job
/// when the log has grown past the policy's limit.
fn checkpoint_loop(conn: Connection, wal: &WalState, policy: WalPolicy) {
    while !wal.stopped.load(Ordering::Relaxed) {
        std::thread::sleep(policy.every);
        match checkpoint(&conn) {
            Ok(Some(log)) if log > policy.frames_limit => wal.finish.store(true, Ordering::Relaxed),
            Ok(_) => {}
            Err(e) => eprintln!("ota-server: WAL checkpoint: {e}"),
        }
    }
}

fn writer_loop(mut conn: Connection, rx: mpsc::Receiver<Job>, wal: &WalState) {
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        // Replay floors first, in a commit of their own: a request waits on its floor, never on
        // the rows queued behind other requests. Then the rows, and the flushes that wait on
        // them, in order.
        let (floors, rest): (Vec<Job>, Vec<Job>) = jobs
            .into_iter()
            .partition(|j| matches!(j, Job::Advance(..)));
        for group in [floors, rest] {
            if !group.is_empty() {
                commit_group(&mut conn, group);
            }
        }
        if wal.finish.swap(false, Ordering::Relaxed) {
            match checkpoint(&conn) {
                Ok(Some(_)) => {}
                // The background pass was still running: again after the next group.
                Ok(None) => wal.finish.store(true, Ordering::Relaxed),
                Err(e) => eprintln!("ota-server: WAL checkpoint: {e}"),
            }
        }
    }
}

/// Runs `jobs` in one transaction and answers those that wait, with the commit's result.
fn commit_group(conn: &mut Connection, jobs: Vec<Job>) {
    let mut answers = Vec::new();
    let result = (|| -> rusqlite::Result<()> {
        let tx = conn.transaction()?;
        for job in jobs {
            match job {
                Job::Advance(device, seq, reply) => {
                    let seq = i64::try_from(seq).unwrap_or(i64::MAX);
                    let n = tx
                        .prepare_cached(
                            "UPDATE credentials SET floor = ?2 WHERE id = ?1 AND (floor IS NULL OR floor < ?2)",
                        )?
                        .execute(rusqlite::params![device, seq])?;
                    answers.push(Answer::Advance(reply, n == 1));
                }
                Job::Record(w) => apply(&tx, &w)?,
                Job::Flush(reply) => answers.push(Answer::Flush(reply)),
            }
        }
        tx.commit()
    })();
    let failed = result.err().map(|e| WriteError(e.to_string()));
    if let Some(e) = &failed {
        eprintln!("ota-server: {e}");
    }
    for a in answers {
        match (a, &failed) {
            (Answer::Advance(r, fresh), None) => {
                let _ = r.send(Ok(fresh));
            }
            (Answer::Advance(r, _), Some(e)) => {
                let _ = r.send(Err(e.clone()));
            }
            (Answer::Flush(r), None) => {
                let _ = r.send(Ok(()));
            }
            (Answer::Flush(r), Some(e)) => {
                let _ = r.send(Err(e.clone()));
            }
        }
    }
}

enum Answer {
    Advance(oneshot::Sender<Result<bool, WriteError>>, bool),
    Flush(oneshot::Sender<Result<(), WriteError>>),
}

fn apply(tx: &rusqlite::Transaction<'_>, w: &Write) -> rusqlite::Result<()> {
    use rusqlite::params;
    match w {
        Write::Device(d) => {
            tx.prepare_cached(
                "INSERT INTO devices (id, class, running, running_seq, phase, staged, size, result, reason, last_seen, failed_seq, next_check_in, checkin, whole_seq)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
                 ON CONFLICT (id) DO UPDATE SET class = excluded.class, running = excluded.running,
                    running_seq = excluded.running_seq, phase = excluded.phase, staged = excluded.staged,
                    size = excluded.size, result = excluded.result, reason = excluded.reason,
                    last_seen = excluded.last_seen, failed_seq = excluded.failed_seq, whole_seq = excluded.whole_seq,
                    next_check_in = excluded.next_check_in, checkin = COALESCE(excluded.checkin, devices.checkin)",
            )?
            .execute(params![
                d.id,
                d.class,
                d.running,
                d.running_seq,
                d.phase,
                d.progress.map(|p| p.0),
                d.progress.map(|p| p.1),
                d.result,
                d.reason,
                d.last_seen,
                d.failed_seq,
                d.next_check_in,
                d.checkin,
                d.whole_seq
            ])?;
        }
        Write::Event {
            device,
            at,
            kind,
            detail,
        } => {
            tx.prepare_cached(
                "INSERT INTO events (device, at, kind, detail) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![device, at, kind, detail])?;
        }
        Write::Bytes {
            device,
            release,
            bytes,
            patch,
            at,
        } => {
            let n = i64::try_from(*bytes).unwrap_or(i64::MAX);
            tx.prepare_cached(
                "INSERT INTO transfers (device, release, bytes, started, patch_bytes) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (device, release) DO UPDATE SET bytes = transfers.bytes + excluded.bytes,
                    patch_bytes = transfers.patch_bytes + excluded.patch_bytes",
            )?
            .execute(params![device, release, n, at, if *patch { n } else { 0 }])?;
        }
        Write::Outcome {
            device,
            release,
            outcome,
            at,
        } => {
            tx.prepare_cached(
                "INSERT INTO transfers (device, release, bytes, started, finished, outcome) VALUES (?1, ?2, 0, ?4, ?4, ?3)
                 ON CONFLICT (device, release) DO UPDATE SET finished = excluded.finished, outcome = excluded.outcome",
            )?
            .execute(params![device, release, outcome, at])?;
        }
    }
    Ok(())
}

struct SqliteTx {
    conn: tokio::sync::OwnedMutexGuard<Connection>,
    open: bool,
}

#[async_trait]
impl Tx for SqliteTx {
    async fn query(&mut self, sql: &str, params: Vec<Value>) -> anyhow::Result<Vec<Row>> {
        query(&self.conn, sql, &params)
    }
    async fn execute(&mut self, sql: &str, params: Vec<Value>) -> anyhow::Result<u64> {
        execute(&self.conn, sql, &params)
    }
    async fn commit(mut self: Box<Self>) -> anyhow::Result<()> {
        self.conn.execute_batch("COMMIT")?;
        self.open = false;
        Ok(())
    }
}

impl Drop for SqliteTx {
    fn drop(&mut self) {
        if self.open {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}

#[async_trait]
impl Backend for Sqlite {
    fn kind(&self) -> &'static str {
        "sqlite"
    }

    async fn query(&self, sql: &str, params: Vec<Value>) -> anyhow::Result<Vec<Row>> {
        query(&*self.conn.lock().await, sql, &params)
    }

    async fn execute(&self, sql: &str, params: Vec<Value>) -> anyhow::Result<u64> {
        execute(&*self.conn.lock().await, sql, &params)
    }

    async fn begin(&self) -> anyhow::Result<Box<dyn Tx>> {
        let conn = self.conn.clone().lock_owned().await;
        conn.execute_batch("BEGIN IMMEDIATE")?;
        Ok(Box::new(SqliteTx { conn, open: true }))
    }

    fn dialect(&self) -> Dialect {
        Dialect {
            blob: "BLOB",
            id: "INTEGER PRIMARY KEY",
            serialize: None,
        }
    }

    async fn advance(&self, device: &str, seq: u64) -> Result<bool, WriteError> {
        let (tx, rx) = oneshot::channel();
        self.writer()?
            .send(Job::Advance(device.to_string(), seq, tx))
            .map_err(|_| WriteError("writer stopped".into()))?;
        rx.await.map_err(|_| WriteError("writer stopped".into()))?
    }

    fn record(&self, write: Write) {
        if let Ok(w) = self.writer() {
            let _ = w.send(Job::Record(write));
        }
    }

    async fn flush(&self) -> Result<(), WriteError> {
        let (tx, rx) = oneshot::channel();
        self.writer()?
            .send(Job::Flush(tx))
            .map_err(|_| WriteError("writer stopped".into()))?;
        rx.await.map_err(|_| WriteError("writer stopped".into()))?
    }

    fn sole_writer(&self) -> bool {
        true
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::schema;
    use crate::store::write::DeviceRow;

    /// Device rows written from a loop that never pauses, so the background checkpoint never
    /// finds the log wholly copied: the log must stay near its limit, where before it grew
    /// with every commit. Bounded in writes and time.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_log_stays_bounded_under_writes_without_a_pause() {
        let dir = std::env::temp_dir().join(format!("ota-sqlite-wal-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut db = Sqlite::open(&dir).unwrap();
        let policy = WalPolicy {
            every: Duration::from_millis(20),
            frames_limit: 64,
        };
        db.wal = policy;
        for (version, script) in schema::MIGRATIONS {
            schema::migrate(&db, *version, script).await.unwrap();
        }
        let wal = dir.join("ota.db-wal");
        let (mut most, mut written) = (0u64, 0u64);
        let started = std::time::Instant::now();
        // A few rows at a time, as check-ins come: many small commits, each writing its pages.
        while written < 200_000 && started.elapsed() < Duration::from_secs(2) {
            for _ in 0..4 {
                db.record(Write::Device(DeviceRow {
                    id: format!("d{:05}", written % 20_000),
                    checkin: Some(vec![7; 44]),
                    last_seen: written as i64,
                    ..DeviceRow::default()
                }));
                written += 1;
            }
            most = most.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
            std::thread::sleep(Duration::from_micros(20));
        }
        db.flush().await.unwrap();
        // Once the writes stop, a background pass copies the whole log; the next commit starts
        // it over and cuts the file back to the limit.
        tokio::time::sleep(policy.every * 5).await;
        db.record(Write::Device(DeviceRow {
            id: "d00000".into(),
            ..DeviceRow::default()
        }));
        db.flush().await.unwrap();
        let after = std::fs::metadata(&wal).map_or(0, |m| m.len());
        let limit = policy.frames_limit as u64 * 4096;
        println!(
            "{written} rows written in {:.1} s; the log's file reached {} KiB against a limit of {} KiB, {} KiB after the writes stopped",
            started.elapsed().as_secs_f64(),
            most / 1024,
            limit / 1024,
            after / 1024
        );
        // The limit, plus what a background period and a pass let through at this rate (3 to
        // 8 MiB here; without the writer's checkpoints, 135 MiB in these 2 s).
        assert!(most < 40 << 20, "the log grew to {most} bytes");
        assert!(
            after <= limit,
            "the log's file was not cut back: {after} bytes"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
