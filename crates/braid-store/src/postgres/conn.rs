//! A synchronous face on a pooled tokio-postgres connection, for code that
//! runs on the store runtime's blocking pool (the `Store` trait is
//! synchronous; the graph algorithms call back into the transaction).
//! Statements are prepared once per connection and cached.

use tokio::runtime::Handle;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use crate::{Error, Result};

pub(crate) type Param<'a> = &'a (dyn ToSql + Sync);

pub(crate) fn pg_err(e: tokio_postgres::Error) -> Error {
    match e.as_db_error() {
        // Class 08 (connection exception) and 57P (operator intervention:
        // a terminated backend, a shutdown): worth a retry on a new
        // connection.
        Some(db) if db.code().code().starts_with("08") || db.code().code().starts_with("57P") => {
            Error::Unavailable(format!("{}: {}", db.code().code(), db.message()))
        }
        Some(db) => Error::Backend(format!("{}: {}", db.code().code(), db.message())),
        None if e.is_closed() => Error::Unavailable(e.to_string()),
        None => Error::Backend(e.to_string()),
    }
}

/// One pooled connection, used from a blocking thread of the store's runtime.
pub(crate) struct Conn<'a> {
    pub client: &'a deadpool_postgres::Object,
    pub handle: &'a Handle,
}

impl Conn<'_> {
    pub fn query(&self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>> {
        self.handle
            .block_on(async {
                let st = self.client.prepare_cached(sql).await?;
                self.client.query(&st, params).await
            })
            .map_err(pg_err)
    }

    pub fn query_opt(&self, sql: &str, params: &[Param<'_>]) -> Result<Option<Row>> {
        Ok(self.query(sql, params)?.into_iter().next())
    }

    pub fn execute(&self, sql: &str, params: &[Param<'_>]) -> Result<u64> {
        self.handle
            .block_on(async {
                let st = self.client.prepare_cached(sql).await?;
                self.client.execute(&st, params).await
            })
            .map_err(pg_err)
    }

    /// Statements without parameters (BEGIN, COMMIT, DDL).
    pub fn batch(&self, sql: &str) -> Result<()> {
        self.handle
            .block_on(self.client.batch_execute(sql))
            .map_err(pg_err)
    }

    /// Runs `f` in a transaction: committed when it returns `Ok`, rolled
    /// back otherwise. `serialize`: writers take one advisory lock, so
    /// writes apply one at a time across every node (the graph's maintained
    /// counts and the event log's order depend on it).
    pub fn transaction<T>(
        &self,
        serialize: bool,
        f: impl FnOnce(&Conn<'_>) -> Result<T>,
    ) -> Result<T> {
        self.transaction_inner(serialize, None, |c| f(c).map(|v| (v, String::new())))
    }

    /// A write transaction that records `write_id` and `f`'s record of what
    /// it did (see [`Conn::recorded`]), so it can be retried when the
    /// connection drops, even during COMMIT.
    pub fn write_once<T>(
        &self,
        write_id: &str,
        f: impl FnOnce(&Conn<'_>) -> Result<(T, String)>,
    ) -> Result<T> {
        self.transaction_inner(true, Some(write_id), f)
    }

    /// What the write `write_id` recorded, if it committed.
    pub fn recorded(&self, write_id: &str) -> Result<Option<String>> {
        Ok(self
            .query_opt("SELECT result FROM writes WHERE id = $1", &[&write_id])?
            .map(|r| r.get(0)))
    }

    fn transaction_inner<T>(
        &self,
        serialize: bool,
        write_id: Option<&str>,
        f: impl FnOnce(&Conn<'_>) -> Result<(T, String)>,
    ) -> Result<T> {
        // BEGIN and the lock in one round trip.
        self.batch(if serialize { BEGIN_LOCKED } else { "BEGIN" })?;
        let result = (|| {
            let (v, record) = f(self)?;
            if let Some(id) = write_id {
                let now = crate::sqlite::now_ms();
                self.execute(
                    "INSERT INTO writes (id, at, result) VALUES ($1, $2, $3)",
                    &[&id, &now, &record],
                )?;
                // Records are needed only while a caller may retry.
                if now % 256 == 0 {
                    self.execute("DELETE FROM writes WHERE at < $1", &[&(now - 3_600_000)])?;
                }
            }
            Ok(v)
        })();
        match result {
            Ok(v) => {
                // One notification per write transaction (never one per
                // row: each takes a lock at commit), sent with the COMMIT.
                match self.batch(if serialize { NOTIFY_COMMIT } else { "COMMIT" }) {
                    Ok(()) => Ok(v),
                    // The server may have committed before the connection
                    // went: not safe to run again, so not `Unavailable`.
                    // With a write id the caller asks on a new connection.
                    Err(Error::Unavailable(e)) if write_id.is_some() => Err(Error::Unavailable(e)),
                    Err(Error::Unavailable(e)) => Err(Error::Backend(format!(
                        "the connection dropped while committing; the change may or may not have been applied ({e})"
                    ))),
                    Err(e) => Err(e),
                }
            }
            Err(e) => {
                let _ = self.batch("ROLLBACK");
                Err(e)
            }
        }
    }
}

/// The channel writes are announced on.
pub(crate) const CHANNEL: &str = "braid_changes";
const NOTIFY_COMMIT: &str = "NOTIFY braid_changes; COMMIT";

/// Every write transaction takes one advisory lock (the key is "braid" in
/// ASCII, 0x62_7261_6964).
const BEGIN_LOCKED: &str = "BEGIN; SELECT pg_advisory_xact_lock(422825781604)";
