//! PostgreSQL, for fleets served by several instances (`serve --db postgres://…`).
//!
//! Driver: `tokio-postgres`. It pipelines: concurrent queries on one connection go out without
//! waiting for each other's answers, so a handful of connections carry thousands of check-ins
//! in flight; and it is small. (`sqlx` would give one API over both databases, but its SQLite
//! side runs every statement through a worker thread, which the embedded store's group commit
//! on `rusqlite` does not need.)
//!
//! What `serve` writes is batched by a writer task, as on SQLite, but each batch is a few
//! statements over arrays (`unnest`) rather than one statement per row. The replay floor is one
//! conditional `UPDATE … WHERE floor IS NULL OR floor < seq`: row locks make it atomic across
//! instances (a second instance updating the same row waits, then re-checks the condition),
//! and a floor is reported fresh only once its batch committed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::Context;
use async_trait::async_trait;
use bytes::BytesMut;
use tokio::sync::{mpsc, oneshot, Mutex};
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};
use tokio_postgres::{Client, NoTls, Statement};

use super::sql::{Backend, Dialect, Row, Tx, Value};
use super::write::{Write, WriteError};

/// Connections shared by queries (pipelined).
const SHARED: usize = 4;
/// Connections for transactions (one transaction each at a time).
const TX: usize = 2;
/// Most writes in one batch.
const MAX_GROUP: usize = 4096;

impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(v) if *ty == Type::INT4 => i32::try_from(*v)?.to_sql(ty, out),
            Value::Int(v) if *ty == Type::BOOL => (*v != 0).to_sql(ty, out),
            Value::Int(v) => v.to_sql(ty, out),
            Value::Bool(b) => b.to_sql(ty, out),
            Value::Text(s) => s.to_sql(ty, out),
            Value::Bytes(b) => b.to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

fn row_of(r: &tokio_postgres::Row) -> Result<Row, tokio_postgres::Error> {
    let mut out = Vec::with_capacity(r.len());
    for (i, col) in r.columns().iter().enumerate() {
        let t = col.type_();
        let v = if *t == Type::INT8 {
            r.try_get::<_, Option<i64>>(i)?.map(Value::Int)
        } else if *t == Type::INT4 {
            r.try_get::<_, Option<i32>>(i)?
                .map(|v| Value::Int(i64::from(v)))
        } else if *t == Type::INT2 {
            r.try_get::<_, Option<i16>>(i)?
                .map(|v| Value::Int(i64::from(v)))
        } else if *t == Type::BYTEA {
            r.try_get::<_, Option<Vec<u8>>>(i)?.map(Value::Bytes)
        } else if *t == Type::BOOL {
            r.try_get::<_, Option<bool>>(i)?.map(Value::Bool)
        } else {
            // Text, and anything else as text if it converts (`void` of a function call does
            // not, and reads as NULL).
            r.try_get::<_, Option<String>>(i)
                .ok()
                .flatten()
                .map(Value::Text)
        };
        out.push(v.unwrap_or(Value::Null));
    }
    Ok(Row(out))
}

/// A connection and its prepared statements.
struct Conn {
    client: Client,
    statements: Mutex<HashMap<String, Statement>>,
}

impl Conn {
    async fn connect(url: &str) -> anyhow::Result<Self> {
        let (client, connection) = tokio_postgres::connect(url, NoTls)
            .await
            .with_context(|| format!("cannot connect to {}", redact(url)))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                eprintln!("ota-server: PostgreSQL connection: {e}");
            }
        });
        Ok(Self {
            client,
            statements: Mutex::new(HashMap::new()),
        })
    }

    async fn statement(&self, sql: &str) -> Result<Statement, tokio_postgres::Error> {
        if let Some(s) = self.statements.lock().await.get(sql) {
            return Ok(s.clone());
        }
        let s = self.client.prepare(sql).await?;
        self.statements
            .lock()
            .await
            .insert(sql.to_string(), s.clone());
        Ok(s)
    }

    async fn query(&self, sql: &str, params: &[Value]) -> anyhow::Result<Vec<Row>> {
        let stmt = self.statement(sql).await?;
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as _).collect();
        let rows = self.client.query(&stmt, &refs).await?;
        Ok(rows.iter().map(row_of).collect::<Result<_, _>>()?)
    }

    async fn execute(&self, sql: &str, params: &[Value]) -> anyhow::Result<u64> {
        let stmt = self.statement(sql).await?;
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as _).collect();
        Ok(self.client.execute(&stmt, &refs).await?)
    }
}

/// A URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = url.get(s + 3..at).unwrap_or("");
            let user = creds.split(':').next().unwrap_or("");
            format!(
                "{}{user}:***{}",
                url.get(..s + 3).unwrap_or(""),
                url.get(at..).unwrap_or("")
            )
        }
        _ => url.to_string(),
    }
}

/// Where a floor's answer goes.
type FloorReply = oneshot::Sender<Result<bool, WriteError>>;

enum Job {
    Advance(String, u64, FloorReply),
    Record(Write),
    Flush(oneshot::Sender<Result<(), WriteError>>),
}

/// A PostgreSQL database.
pub struct Postgres {
    shared: Vec<Arc<Conn>>,
    tx: Vec<Arc<Mutex<TxConn>>>,
    next: AtomicUsize,
    writer: mpsc::UnboundedSender<Job>,
}

struct TxConn {
    conn: Conn,
    /// A transaction was dropped uncommitted: roll it back before the next.
    dirty: bool,
}

impl Postgres {
    /// Connects to `url` (`postgres://user:password@host:port/db`).
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let mut shared = Vec::new();
        for _ in 0..SHARED {
            shared.push(Arc::new(Conn::connect(url).await?));
        }
        let mut tx = Vec::new();
        for _ in 0..TX {
            tx.push(Arc::new(Mutex::new(TxConn {
                conn: Conn::connect(url).await?,
                dirty: false,
            })));
        }
        let writer_conn = Conn::connect(url).await?;
        let (wtx, wrx) = mpsc::unbounded_channel();
        tokio::spawn(writer_loop(writer_conn, wrx));
        Ok(Self {
            shared,
            tx,
            next: AtomicUsize::new(0),
            writer: wtx,
        })
    }

    fn conn(&self) -> anyhow::Result<&Conn> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.shared.len().max(1);
        self.shared
            .get(i)
            .map(|c| &**c)
            .context("no PostgreSQL connection")
    }
}

struct PgTx {
    /// Taken by `Drop` to roll back a transaction left open.
    conn: Option<tokio::sync::OwnedMutexGuard<TxConn>>,
    open: bool,
}

impl PgTx {
    fn conn(&mut self) -> anyhow::Result<&mut tokio::sync::OwnedMutexGuard<TxConn>> {
        self.conn.as_mut().context("transaction already ended")
    }
}

#[async_trait]
impl Tx for PgTx {
    async fn query(&mut self, sql: &str, params: Vec<Value>) -> anyhow::Result<Vec<Row>> {
        self.conn()?.conn.query(sql, &params).await
    }
    async fn execute(&mut self, sql: &str, params: Vec<Value>) -> anyhow::Result<u64> {
        self.conn()?.conn.execute(sql, &params).await
    }
    async fn commit(mut self: Box<Self>) -> anyhow::Result<()> {
        self.conn()?.conn.client.batch_execute("COMMIT").await?;
        self.open = false;
        Ok(())
    }
}

impl Drop for PgTx {
    /// A transaction dropped without commit (an early return, an error) is rolled back at
    /// once, so the locks it took (advisory locks serialise migrations, provisioning and
    /// releases across instances) do not outlive it; the connection stays taken until then.
    /// Without a runtime, the next `begin` on the connection rolls it back.
    fn drop(&mut self) {
        let Some(mut guard) = self.conn.take() else {
            return;
        };
        if !self.open {
            return;
        }
        guard.dirty = true;
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if guard.conn.client.batch_execute("ROLLBACK").await.is_ok() {
                    guard.dirty = false;
                }
            });
        }
    }
}

#[async_trait]
impl Backend for Postgres {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    async fn query(&self, sql: &str, params: Vec<Value>) -> anyhow::Result<Vec<Row>> {
        self.conn()?.query(sql, &params).await
    }

    async fn execute(&self, sql: &str, params: Vec<Value>) -> anyhow::Result<u64> {
        self.conn()?.execute(sql, &params).await
    }

    async fn begin(&self) -> anyhow::Result<Box<dyn Tx>> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.tx.len().max(1);
        let slot = self.tx.get(i).context("no PostgreSQL connection")?.clone();
        let mut conn = slot.lock_owned().await;
        if conn.dirty {
            conn.conn.client.batch_execute("ROLLBACK").await?;
            conn.dirty = false;
        }
        conn.conn.client.batch_execute("BEGIN").await?;
        Ok(Box::new(PgTx {
            conn: Some(conn),
            open: true,
        }))
    }

    fn dialect(&self) -> Dialect {
        Dialect {
            blob: "BYTEA",
            id: "BIGSERIAL PRIMARY KEY",
            serialize: Some("SELECT pg_advisory_xact_lock(7261001)"),
        }
    }

    async fn advance(&self, device: &str, seq: u64) -> Result<bool, WriteError> {
        let (tx, rx) = oneshot::channel();
        self.writer
            .send(Job::Advance(device.to_string(), seq, tx))
            .map_err(|_| WriteError("writer stopped".into()))?;
        rx.await.map_err(|_| WriteError("writer stopped".into()))?
    }

    fn record(&self, write: Write) {
        let _ = self.writer.send(Job::Record(write));
    }

    async fn flush(&self) -> Result<(), WriteError> {
        let (tx, rx) = oneshot::channel();
        self.writer
            .send(Job::Flush(tx))
            .map_err(|_| WriteError("writer stopped".into()))?;
        rx.await.map_err(|_| WriteError("writer stopped".into()))?
    }

    fn sole_writer(&self) -> bool {
        false
    }
}

async fn writer_loop(conn: Conn, mut rx: mpsc::UnboundedReceiver<Job>) {
    let mut deferred: Vec<Job> = Vec::new();
    loop {
        let mut jobs = std::mem::take(&mut deferred);
        if jobs.is_empty() {
            match rx.recv().await {
                Some(j) => jobs.push(j),
                None => return,
            }
        }
        while jobs.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        // One floor per device per batch: a second one waits for the next (an UPDATE cannot
        // change a row twice, and the second must see the first's result).
        let mut advances: Vec<(String, i64, FloorReply)> = Vec::new();
        let mut writes = Vec::new();
        let mut flushes = Vec::new();
        for job in jobs {
            match job {
                Job::Advance(d, seq, reply) => {
                    if advances.iter().any(|(x, _, _)| *x == d) {
                        deferred.push(Job::Advance(d, seq, reply));
                    } else {
                        advances.push((d, i64::try_from(seq).unwrap_or(i64::MAX), reply));
                    }
                }
                Job::Record(w) => writes.push(w),
                Job::Flush(r) => flushes.push(r),
            }
        }
        if !advances.is_empty() {
            let ids: Vec<&str> = advances.iter().map(|(d, _, _)| d.as_str()).collect();
            let seqs: Vec<i64> = advances.iter().map(|(_, s, _)| *s).collect();
            let result = retry(|| async {
                conn.client
                    .query(
                        "UPDATE credentials AS c SET floor = v.seq
                         FROM unnest($1::text[], $2::bigint[]) AS v(id, seq)
                         WHERE c.id = v.id AND (c.floor IS NULL OR c.floor < v.seq)
                         RETURNING c.id",
                        &[&ids, &seqs],
                    )
                    .await
            })
            .await;
            match result {
                Ok(rows) => {
                    let fresh: std::collections::HashSet<String> =
                        rows.iter().filter_map(|r| r.try_get(0).ok()).collect();
                    for (d, _, reply) in advances {
                        let _ = reply.send(Ok(fresh.contains(&d)));
                    }
                }
                Err(e) => {
                    eprintln!("ota-server: replay floors: {e}");
                    for (_, _, reply) in advances {
                        let _ = reply.send(Err(WriteError(e.to_string())));
                    }
                }
            }
        }
        let result = if writes.is_empty() {
            Ok(())
        } else {
            apply(&conn, writes).await
        };
        if let Err(e) = &result {
            eprintln!("ota-server: store write: {e}");
        }
        for f in flushes {
            let _ = f.send(result.clone().map_err(|e| WriteError(e.to_string())));
        }
    }
}

/// Runs `f` again after a deadlock or serialization failure (two instances' batches locking
/// rows in different orders), up to three times.
async fn retry<T, F, Fut>(f: F) -> Result<T, tokio_postgres::Error>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, tokio_postgres::Error>>,
{
    let mut tries = 0;
    loop {
        match f().await {
            Err(e)
                if tries < 3
                    && matches!(
                        e.code(),
                        Some(&tokio_postgres::error::SqlState::T_R_DEADLOCK_DETECTED)
                            | Some(&tokio_postgres::error::SqlState::T_R_SERIALIZATION_FAILURE)
                    ) =>
            {
                tries += 1;
            }
            other => return other,
        }
    }
}

async fn apply(conn: &Conn, writes: Vec<Write>) -> Result<(), WriteError> {
    let mut devices: HashMap<String, super::write::DeviceRow> = HashMap::new();
    let mut events = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    // (device, release) → (bytes, first count's time, patch bytes)
    let mut bytes: HashMap<(String, i64), (i64, i64, i64)> = HashMap::new();
    let mut outcomes: HashMap<(String, i64), (String, i64)> = HashMap::new();
    for w in writes {
        match w {
            Write::Device(d) => {
                devices.insert(d.id.clone(), d);
            }
            Write::Event {
                device,
                at,
                kind,
                detail,
            } => {
                events.0.push(device);
                events.1.push(at);
                events.2.push(kind);
                events.3.push(detail);
            }
            Write::Bytes {
                device,
                release,
                bytes: n,
                patch,
                at,
            } => {
                let n = i64::try_from(n).unwrap_or(i64::MAX);
                let e = bytes
                    .entry((device, i64::from(release)))
                    .or_insert((0, at, 0));
                e.0 = e.0.saturating_add(n);
                if patch {
                    e.2 = e.2.saturating_add(n);
                }
            }
            Write::Outcome {
                device,
                release,
                outcome,
                at,
            } => {
                outcomes.insert((device, i64::from(release)), (outcome, at));
            }
        }
    }
    let err = |e: tokio_postgres::Error| WriteError(e.to_string());
    let c = &conn.client;
    if !devices.is_empty() {
        let d: Vec<_> = devices.into_values().collect();
        let ids: Vec<&str> = d.iter().map(|r| r.id.as_str()).collect();
        let class: Vec<&str> = d.iter().map(|r| r.class.as_str()).collect();
        let running: Vec<&str> = d.iter().map(|r| r.running.as_str()).collect();
        let rseq: Vec<i64> = d.iter().map(|r| i64::from(r.running_seq)).collect();
        let phase: Vec<&str> = d.iter().map(|r| r.phase.as_str()).collect();
        let staged: Vec<Option<i64>> = d
            .iter()
            .map(|r| r.progress.map(|p| i64::from(p.0)))
            .collect();
        let size: Vec<Option<i64>> = d
            .iter()
            .map(|r| r.progress.map(|p| i64::from(p.1)))
            .collect();
        let result: Vec<&str> = d.iter().map(|r| r.result.as_str()).collect();
        let reason: Vec<&str> = d.iter().map(|r| r.reason.as_str()).collect();
        let seen: Vec<i64> = d.iter().map(|r| r.last_seen).collect();
        let failed: Vec<Option<i64>> = d.iter().map(|r| r.failed_seq.map(i64::from)).collect();
        let whole: Vec<Option<i64>> = d.iter().map(|r| r.whole_seq.map(i64::from)).collect();
        let next: Vec<i64> = d.iter().map(|r| i64::from(r.next_check_in)).collect();
        let checkin: Vec<Option<&[u8]>> = d.iter().map(|r| r.checkin.as_deref()).collect();
        retry(|| async {
            c.execute(
                "INSERT INTO devices (id, class, running, running_seq, phase, staged, size, result, reason, last_seen, failed_seq, next_check_in, checkin, whole_seq)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::bigint[], $7::bigint[],
                                      $8::text[], $9::text[], $10::bigint[], $11::bigint[], $12::bigint[], $13::bytea[], $14::bigint[])
                 ON CONFLICT (id) DO UPDATE SET class = excluded.class, running = excluded.running,
                    running_seq = excluded.running_seq, phase = excluded.phase, staged = excluded.staged,
                    size = excluded.size, result = excluded.result, reason = excluded.reason,
                    last_seen = excluded.last_seen, failed_seq = excluded.failed_seq, whole_seq = excluded.whole_seq,
                    next_check_in = excluded.next_check_in, checkin = COALESCE(excluded.checkin, devices.checkin)",
                &[&ids, &class, &running, &rseq, &phase, &staged, &size, &result, &reason, &seen, &failed, &next, &checkin, &whole],
            )
            .await
        })
        .await
        .map_err(err)?;
    }
    if !events.0.is_empty() {
        c.execute(
            "INSERT INTO events (device, at, kind, detail)
             SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[])",
            &[&events.0, &events.1, &events.2, &events.3],
        )
        .await
        .map_err(err)?;
    }
    if !bytes.is_empty() {
        let (keys, vals): (Vec<_>, Vec<_>) = bytes.into_iter().unzip();
        let devs: Vec<&str> = keys.iter().map(|k| k.0.as_str()).collect();
        let rels: Vec<i64> = keys.iter().map(|k| k.1).collect();
        let n: Vec<i64> = vals.iter().map(|v| v.0).collect();
        let at: Vec<i64> = vals.iter().map(|v| v.1).collect();
        let patch: Vec<i64> = vals.iter().map(|v| v.2).collect();
        retry(|| async {
            c.execute(
                "INSERT INTO transfers (device, release, bytes, started, patch_bytes)
                 SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[])
                 ON CONFLICT (device, release) DO UPDATE SET bytes = transfers.bytes + excluded.bytes,
                    patch_bytes = transfers.patch_bytes + excluded.patch_bytes",
                &[&devs, &rels, &n, &at, &patch],
            )
            .await
        })
        .await
        .map_err(err)?;
    }
    if !outcomes.is_empty() {
        let (keys, vals): (Vec<_>, Vec<_>) = outcomes.into_iter().unzip();
        let devs: Vec<&str> = keys.iter().map(|k| k.0.as_str()).collect();
        let rels: Vec<i64> = keys.iter().map(|k| k.1).collect();
        let what: Vec<&str> = vals.iter().map(|v| v.0.as_str()).collect();
        let at: Vec<i64> = vals.iter().map(|v| v.1).collect();
        retry(|| async {
            c.execute(
                "INSERT INTO transfers (device, release, bytes, started, finished, outcome)
                 SELECT d, r, 0, a, a, o FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[]) AS v(d, r, o, a)
                 ON CONFLICT (device, release) DO UPDATE SET finished = excluded.finished, outcome = excluded.outcome",
                &[&devs, &rels, &what, &at],
            )
            .await
        })
        .await
        .map_err(err)?;
    }
    Ok(())
}
