//! The little SQL both backends speak: values, rows, and the [`Backend`] trait every typed
//! operation of [`super::Store`] is written against once.
//!
//! Statements are written with `$1`, `$2`… placeholders (PostgreSQL's form; the SQLite backend
//! rewrites them to `?1`, `?2`…) and in the common subset of the two dialects: `ON CONFLICT … DO
//! UPDATE SET … = excluded.…`, `RETURNING`, `BIGINT` and `BOOLEAN` columns.

use async_trait::async_trait;

use super::write::{Write, WriteError};

/// One SQL value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// NULL.
    Null,
    /// An integer (every integer column is `BIGINT`).
    Int(i64),
    /// Text.
    Text(String),
    /// Bytes (`BLOB` / `BYTEA`).
    Bytes(Vec<u8>),
    /// A boolean.
    Bool(bool),
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}
impl From<u32> for Value {
    fn from(v: u32) -> Self {
        Value::Int(i64::from(v))
    }
}
impl From<u16> for Value {
    fn from(v: u16) -> Self {
        Value::Int(i64::from(v))
    }
}
impl From<u8> for Value {
    fn from(v: u8) -> Self {
        Value::Int(i64::from(v))
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_string())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}
impl From<&String> for Value {
    fn from(v: &String) -> Self {
        Value::Text(v.clone())
    }
}
impl From<&[u8]> for Value {
    fn from(v: &[u8]) -> Self {
        Value::Bytes(v.to_vec())
    }
}
impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Self {
        Value::Bytes(v)
    }
}
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

/// `[Value]` from a list of expressions.
#[macro_export]
macro_rules! params {
    ($($v:expr),* $(,)?) => { vec![$($crate::store::sql::Value::from($v)),*] };
}

/// A column of the wrong type or a missing column.
#[derive(Debug, thiserror::Error)]
#[error("column {index}: expected {expected}, found {found:?}")]
pub struct ColumnError {
    index: usize,
    expected: &'static str,
    found: Option<Value>,
}

/// A result row.
#[derive(Debug, Clone, Default)]
pub struct Row(pub Vec<Value>);

impl Row {
    fn get(&self, i: usize) -> Option<&Value> {
        self.0.get(i)
    }

    fn wrong(&self, i: usize, expected: &'static str) -> ColumnError {
        ColumnError {
            index: i,
            expected,
            found: self.get(i).cloned(),
        }
    }

    /// An integer column.
    pub fn int(&self, i: usize) -> Result<i64, ColumnError> {
        match self.get(i) {
            Some(Value::Int(v)) => Ok(*v),
            Some(Value::Bool(b)) => Ok(i64::from(*b)),
            _ => Err(self.wrong(i, "an integer")),
        }
    }

    /// A nullable integer column.
    pub fn opt_int(&self, i: usize) -> Result<Option<i64>, ColumnError> {
        match self.get(i) {
            Some(Value::Null) => Ok(None),
            _ => self.int(i).map(Some),
        }
    }

    /// An integer column that fits `T`.
    pub fn num<T: TryFrom<i64>>(&self, i: usize) -> Result<T, ColumnError> {
        T::try_from(self.int(i)?).map_err(|_| self.wrong(i, "a smaller integer"))
    }

    /// A nullable integer column that fits `T`.
    pub fn opt_num<T: TryFrom<i64>>(&self, i: usize) -> Result<Option<T>, ColumnError> {
        match self.opt_int(i)? {
            None => Ok(None),
            Some(v) => T::try_from(v)
                .map(Some)
                .map_err(|_| self.wrong(i, "a smaller integer")),
        }
    }

    /// A text column.
    pub fn text(&self, i: usize) -> Result<String, ColumnError> {
        match self.get(i) {
            Some(Value::Text(v)) => Ok(v.clone()),
            _ => Err(self.wrong(i, "text")),
        }
    }

    /// A nullable text column.
    pub fn opt_text(&self, i: usize) -> Result<Option<String>, ColumnError> {
        match self.get(i) {
            Some(Value::Null) => Ok(None),
            _ => self.text(i).map(Some),
        }
    }

    /// A bytes column.
    pub fn bytes(&self, i: usize) -> Result<Vec<u8>, ColumnError> {
        match self.get(i) {
            Some(Value::Bytes(v)) => Ok(v.clone()),
            _ => Err(self.wrong(i, "bytes")),
        }
    }

    /// A nullable bytes column.
    pub fn opt_bytes(&self, i: usize) -> Result<Option<Vec<u8>>, ColumnError> {
        match self.get(i) {
            Some(Value::Null) => Ok(None),
            _ => self.bytes(i).map(Some),
        }
    }

    /// A boolean column.
    pub fn bool(&self, i: usize) -> Result<bool, ColumnError> {
        match self.get(i) {
            Some(Value::Bool(b)) => Ok(*b),
            Some(Value::Int(v)) => Ok(*v != 0),
            _ => Err(self.wrong(i, "a boolean")),
        }
    }
}

/// What differs between the databases when a migration runs ([`super::schema::migrate`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dialect {
    /// The byte string type (`{BLOB}` in the schema).
    pub blob: &'static str,
    /// An auto-numbered primary key (`{ID}`).
    pub id: &'static str,
    /// A statement that makes instances starting together migrate one after the other
    /// (holding a lock to the end of the transaction), if the database needs one.
    pub serialize: Option<&'static str>,
}

/// An open transaction: statements run in it until [`Tx::commit`]; dropped uncommitted, it is
/// rolled back.
#[async_trait]
pub trait Tx: Send {
    /// Rows of a query.
    async fn query(&mut self, sql: &str, params: Vec<Value>) -> anyhow::Result<Vec<Row>>;
    /// Rows changed by a statement.
    async fn execute(&mut self, sql: &str, params: Vec<Value>) -> anyhow::Result<u64>;
    /// Commits.
    async fn commit(self: Box<Self>) -> anyhow::Result<()>;
}

/// A database the store runs on: SQLite ([`super::sqlite`]) or PostgreSQL
/// ([`super::postgres`]).
///
/// Beside plain statements, a backend batches what the serving path writes: replay floors
/// ([`Backend::advance`], awaited but committed in groups) and device state
/// ([`Backend::record`], written behind the request).
#[async_trait]
pub trait Backend: Send + Sync {
    /// `"sqlite"` or `"postgres"`.
    fn kind(&self) -> &'static str;
    /// Rows of a query.
    async fn query(&self, sql: &str, params: Vec<Value>) -> anyhow::Result<Vec<Row>>;
    /// Rows changed by a statement.
    async fn execute(&self, sql: &str, params: Vec<Value>) -> anyhow::Result<u64>;
    /// Starts a transaction.
    async fn begin(&self) -> anyhow::Result<Box<dyn Tx>>;
    /// How the schema's common dialect is written for this database.
    fn dialect(&self) -> Dialect;
    /// Raises `device`'s replay floor to `seq` if it is below it; `false` if not (a replay).
    /// One conditional `UPDATE`, so two instances never both succeed; committed before it
    /// returns, in a group with every other one waiting.
    async fn advance(&self, device: &str, seq: u64) -> Result<bool, WriteError>;
    /// Queues `write` to be committed with the next group (not awaited).
    fn record(&self, write: Write);
    /// Waits until everything queued so far is committed.
    async fn flush(&self) -> Result<(), WriteError>;
    /// Whether this process is the only writer of device rows (one `serve` per SQLite
    /// directory): it may then keep devices in memory and read them from there.
    fn sole_writer(&self) -> bool;
}
