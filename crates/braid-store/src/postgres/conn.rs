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
        Some(db) => Error::Backend(format!("{}: {}", db.code().code(), db.message())),
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
        self.batch("BEGIN")?;
        let result = (|| {
            if serialize {
                self.execute("SELECT pg_advisory_xact_lock($1)", &[&WRITE_LOCK])?;
            }
            f(self)
        })();
        match result {
            Ok(v) => {
                if serialize {
                    // One notification per write transaction (never one
                    // per row: each takes a lock at commit).
                    self.batch(NOTIFY)?;
                }
                self.batch("COMMIT")?;
                Ok(v)
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
const NOTIFY: &str = "NOTIFY braid_changes";

/// The advisory lock every write transaction takes ("braid" in ASCII).
pub(crate) const WRITE_LOCK: i64 = 0x62_7261_6964;
