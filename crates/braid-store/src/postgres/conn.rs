//! A synchronous face on pooled tokio-postgres connections (the `Store`
//! trait is synchronous; the graph algorithms call back into the
//! transaction). Each connection has a single-threaded runtime of its own,
//! and a call drives the connection's socket on the calling thread, as the
//! `postgres` crate does: a round trip costs no wake-up of another thread.
//! Statements are prepared once per connection and cached.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio_postgres::tls::NoTlsStream;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row, Socket, Statement};

use crate::{Error, Result};

pub(crate) type Param<'a> = &'a (dyn ToSql + Sync);

pub(crate) fn pg_err(e: tokio_postgres::Error) -> Error {
    match e.as_db_error() {
        // Class 08 (connection exception) and 57P (operator intervention:
        // a terminated backend, a shutdown): worth a retry on a new
        // connection.
        Some(db) if db.code().code().starts_with("08") || db.code().code().starts_with("57P") => {
            let context = format!("SQLSTATE {}", db.code().code());
            Error::unavailable(context, Some(Box::new(e)))
        }
        // A deadlock or serialization failure rolled the transaction back
        // whole: it can run again.
        Some(db) if matches!(db.code().code(), "40P01" | "40001") => {
            let context = format!("SQLSTATE {}", db.code().code());
            Error::unavailable(context, Some(Box::new(e)))
        }
        Some(db) => {
            let context = format!("SQLSTATE {}", db.code().code());
            Error::backend_from(context, e)
        }
        None if e.is_closed() => Error::unavailable("PostgreSQL", Some(Box::new(e))),
        None => Error::backend_from("PostgreSQL", e),
    }
}

/// A statement with its own parameters, kept to be sent later.
pub(crate) type Owned = (String, Vec<Box<dyn ToSql + Sync + Send>>);

/// One connection to the server: the client, the socket's I/O (polled
/// only while a call runs) and the runtime that drives both.
pub(crate) struct PgConn {
    client: Client,
    io: RefCell<Pin<Box<tokio_postgres::Connection<Socket, NoTlsStream>>>>,
    statements: RefCell<HashMap<String, Statement>>,
    /// The connection failed or closed: the pool drops it.
    broken: Cell<bool>,
    rt: Option<tokio::runtime::Runtime>,
}

impl Drop for PgConn {
    fn drop(&mut self) {
        // Never blocks, wherever the last connection is dropped.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl PgConn {
    /// The connection failed or closed.
    pub fn is_broken(&self) -> bool {
        self.broken.get() || self.client.is_closed()
    }

    fn rt(&self) -> &tokio::runtime::Runtime {
        self.rt.as_ref().expect("a live connection has its runtime")
    }

    /// Runs `fut` on the calling thread while driving the socket.
    fn run<T>(
        &self,
        fut: impl Future<Output = std::result::Result<T, tokio_postgres::Error>>,
    ) -> Result<T> {
        let mut io = self.io.borrow_mut();
        let out = self.rt().block_on(async {
            tokio::select! {
                biased;
                r = fut => Some(r),
                _ = io.as_mut() => None,
            }
        });
        match out {
            Some(Ok(v)) => Ok(v),
            Some(Err(e)) => {
                if e.is_closed() {
                    self.broken.set(true);
                }
                Err(pg_err(e))
            }
            None => {
                self.broken.set(true);
                Err(Error::unavailable(
                    "the connection to the database closed",
                    None,
                ))
            }
        }
    }
}

/// Opens [`PgConn`]s for the pool.
pub(crate) struct Manager {
    pub config: tokio_postgres::Config,
}

impl r2d2::ManageConnection for Manager {
    type Connection = PgConn;
    type Error = tokio_postgres::Error;

    fn connect(&self) -> std::result::Result<PgConn, tokio_postgres::Error> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a single-threaded runtime starts");
        let (client, io) = rt.block_on(self.config.connect(tokio_postgres::NoTls))?;
        Ok(PgConn {
            client,
            io: RefCell::new(Box::pin(io)),
            statements: RefCell::new(HashMap::new()),
            broken: Cell::new(false),
            rt: Some(rt),
        })
    }

    fn is_valid(&self, conn: &mut PgConn) -> std::result::Result<(), tokio_postgres::Error> {
        let c = &*conn;
        let mut io = c.io.borrow_mut();
        c.rt().block_on(async {
            tokio::select! {
                biased;
                r = c.client.simple_query("") => r.map(|_| ()),
                r = io.as_mut() => r,
            }
        })
    }

    fn has_broken(&self, conn: &mut PgConn) -> bool {
        conn.is_broken()
    }
}

/// The pool of a store's connections.
pub(crate) type Pool = r2d2::Pool<Manager>;

/// A pool of at most `size` connections; a caller waits for one at most
/// `wait`. No connection is opened until one is needed.
pub(crate) fn pool(config: tokio_postgres::Config, size: u32, wait: Duration) -> Pool {
    r2d2::Pool::builder()
        .max_size(size)
        .min_idle(Some(0))
        .connection_timeout(wait)
        // A dropped connection shows as an error on its next use, which
        // the caller retries on a new one: no test query per checkout.
        .test_on_check_out(false)
        .error_handler(Box::new(r2d2::NopErrorHandler))
        .build_unchecked(Manager { config })
}

/// One pooled connection in use by one call.
///
/// Round trips are what a transaction costs here, so a transaction's BEGIN
/// (and lock) travels with its first statement, and its last statements
/// travel with the COMMIT (see [`Conn::at_commit`]).
pub(crate) struct Conn<'a> {
    pc: &'a PgConn,
    client: &'a Client,
    /// A BEGIN not yet sent: it goes out ahead of the next statement.
    begin: Cell<Option<&'static str>>,
    /// Statements to send with the COMMIT (at most [`TAIL`]).
    tail: RefCell<Vec<Owned>>,
    /// The transaction made work ready: its notification says so.
    made_ready: Cell<bool>,
    /// The transaction's statements send their own notification.
    notifies: Cell<bool>,
}

impl<'a> Conn<'a> {
    pub fn new(pc: &'a PgConn) -> Conn<'a> {
        Conn {
            pc,
            client: &pc.client,
            begin: Cell::new(None),
            tail: RefCell::new(Vec::new()),
            made_ready: Cell::new(false),
            notifies: Cell::new(false),
        }
    }

    /// Marks this transaction as one whose statements notify when they
    /// change something (`pg_notify`): its COMMIT sends nothing more.
    pub fn notifies_itself(&self) {
        self.notifies.set(true);
    }

    /// Marks this transaction as one that made work ready (see
    /// [`READY`]).
    pub fn made_ready(&self) {
        self.made_ready.set(true);
    }

    /// The statement for `sql`, prepared on this connection once.
    async fn prepare_cached(
        &self,
        sql: &str,
    ) -> std::result::Result<Statement, tokio_postgres::Error> {
        if let Some(st) = self.pc.statements.borrow().get(sql) {
            return Ok(st.clone());
        }
        let st = self.client.prepare(sql).await?;
        self.pc
            .statements
            .borrow_mut()
            .insert(sql.to_owned(), st.clone());
        Ok(st)
    }

    /// Runs `fut` after sending any pending BEGIN ahead of it, in the same
    /// flight. (Each request goes out when its future is first polled, and
    /// `join!` first polls in order.)
    async fn after_begin<T>(
        &self,
        fut: impl Future<Output = std::result::Result<T, tokio_postgres::Error>>,
    ) -> std::result::Result<T, tokio_postgres::Error> {
        match self.begin.take() {
            None => fut.await,
            Some(begin) => {
                let (b, r) = tokio::join!(self.client.batch_execute(begin), fut);
                b?;
                r
            }
        }
    }

    pub fn query(&self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>> {
        self.pc.run(async {
            let st = self.prepare_cached(sql).await?;
            self.after_begin(self.client.query(&st, params)).await
        })
    }

    pub fn query_opt(&self, sql: &str, params: &[Param<'_>]) -> Result<Option<Row>> {
        Ok(self.query(sql, params)?.into_iter().next())
    }

    pub fn execute(&self, sql: &str, params: &[Param<'_>]) -> Result<u64> {
        self.pc.run(async {
            let st = self.prepare_cached(sql).await?;
            self.after_begin(self.client.execute(&st, params)).await
        })
    }

    /// Statements without parameters (BEGIN, COMMIT, DDL).
    pub fn batch(&self, sql: &str) -> Result<()> {
        self.pc
            .run(self.after_begin(self.client.batch_execute(sql)))
    }

    /// Sends `stmt` with this transaction's COMMIT, in the same flight and
    /// in the order given; if it fails, nothing commits. Its rows come back
    /// from [`Conn::write`].
    pub fn at_commit(&self, stmt: Owned) {
        let mut tail = self.tail.borrow_mut();
        assert!(
            tail.len() < TAIL,
            "at most {TAIL} statements go with a commit"
        );
        tail.push(stmt);
    }

    async fn run_owned(
        &self,
        st: Option<Statement>,
        s: Option<&Owned>,
    ) -> std::result::Result<Option<Vec<Row>>, tokio_postgres::Error> {
        let params: Vec<Param<'_>> = s
            .map(|(_, p)| p.iter().map(|b| b.as_ref() as Param<'_>).collect())
            .unwrap_or_default();
        match st {
            Some(st) => self.client.query(&st, &params).await.map(Some),
            None => Ok(None),
        }
    }

    /// The tail statements, the write's record and the COMMIT, in one
    /// flight. The first failure is reported; otherwise the tail's rows.
    fn commit(&self, record: Option<Owned>, commit: &str) -> Result<Vec<Vec<Row>>> {
        let tail = self.tail.take();
        self.pc.run(async {
            let prepare = |s: Option<&Owned>| {
                let sql = s.map(|(sql, _)| sql.clone());
                async move {
                    match sql {
                        Some(sql) => self.prepare_cached(&sql).await.map(Some),
                        None => Ok(None),
                    }
                }
            };
            // Prepared first (from the cache, after the first time), so
            // each request goes out on its first poll, in order.
            let st0 = prepare(tail.first()).await?;
            let st1 = prepare(tail.get(1)).await?;
            let st_record = prepare(record.as_ref()).await?;
            let all = async {
                let (t0, t1, r, c) = tokio::join!(
                    self.run_owned(st0, tail.first()),
                    self.run_owned(st1, tail.get(1)),
                    self.run_owned(st_record, record.as_ref()),
                    self.client.batch_execute(commit)
                );
                let rows: Vec<Vec<Row>> = [t0?, t1?].into_iter().flatten().collect();
                r?;
                c?;
                Ok(rows)
            };
            self.after_begin(all).await
        })
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
        let lock = if serialize {
            Writers::Exclusive
        } else {
            Writers::None
        };
        self.transaction_inner(lock, None, |c| f(c).map(|v| (v, None)))
            .map(|(v, _)| v)
    }

    /// A write transaction that records `write_id` and `f`'s record of what
    /// it did (see [`Conn::recorded`]), so it can be retried when the
    /// connection drops, even during COMMIT.
    pub fn write_once<T>(
        &self,
        write_id: &str,
        lock: Writers,
        f: impl FnOnce(&Conn<'_>) -> Result<(T, String)>,
    ) -> Result<T> {
        self.transaction_inner(lock, Some(write_id), |c| {
            f(c).map(|(v, record)| (v, Some(record)))
        })
        .map(|(v, _)| v)
    }

    /// A write transaction whose statements sent with the COMMIT (see
    /// [`Conn::at_commit`]) record `write_id` themselves; returns their
    /// rows with `f`'s answer.
    pub fn write<T>(
        &self,
        write_id: &str,
        lock: Writers,
        f: impl FnOnce(&Conn<'_>) -> Result<T>,
    ) -> Result<(T, Vec<Vec<Row>>)> {
        self.transaction_inner(lock, Some(write_id), |c| f(c).map(|v| (v, None)))
    }

    /// What the write `write_id` recorded, if it committed, with the last
    /// event number it took.
    pub fn recorded(&self, write_id: &str) -> Result<Option<(String, Option<i64>)>> {
        Ok(self
            .query_opt(
                "SELECT result, last_seq FROM writes WHERE id = $1",
                &[&write_id],
            )?
            .map(|r| (r.get(0), r.get(1))))
    }

    fn transaction_inner<T>(
        &self,
        lock: Writers,
        write_id: Option<&str>,
        f: impl FnOnce(&Conn<'_>) -> Result<(T, Option<String>)>,
    ) -> Result<(T, Vec<Vec<Row>>)> {
        // BEGIN and the lock go out with the first statement.
        self.begin.set(Some(match lock {
            Writers::None => "BEGIN",
            Writers::Shared => BEGIN_SHARED,
            Writers::Exclusive => BEGIN_LOCKED,
        }));
        self.tail.take();
        let result = (|| {
            let (v, record) = f(self)?;
            let now = braid_core::clock::now_ms();
            // Records are needed only while a caller may retry.
            if write_id.is_some() && now % 256 == 0 {
                self.execute("DELETE FROM writes WHERE at < $1", &[&(now - 3_600_000)])?;
            }
            let record = match (write_id, record) {
                (Some(id), Some(record)) => {
                    let params: Vec<Box<dyn ToSql + Sync + Send>> =
                        vec![Box::new(id.to_owned()), Box::new(now), Box::new(record)];
                    Some((
                        "INSERT INTO writes (id, at, result) VALUES ($1, $2, $3)".to_owned(),
                        params,
                    ))
                }
                _ => None,
            };
            Ok((v, record))
        })();
        match result {
            // Nothing was sent: there is nothing to commit.
            Ok((v, None)) if self.begin.get().is_some() && self.tail.borrow().is_empty() => {
                self.begin.take();
                Ok((v, Vec::new()))
            }
            Ok((v, record)) => {
                // One notification per write transaction (never one per
                // row: each takes a lock at commit), sent with the COMMIT.
                let commit = if lock == Writers::None || self.notifies.take() {
                    "COMMIT"
                } else if self.made_ready.take() {
                    NOTIFY_READY_COMMIT
                } else {
                    NOTIFY_COMMIT
                };
                match self.commit(record, commit) {
                    Ok(rows) => Ok((v, rows)),
                    // The server may have committed before the connection
                    // went: not safe to run again, so not `Unavailable`.
                    // With a write id the caller asks on a new connection.
                    Err(e @ Error::Unavailable { .. }) if write_id.is_some() => Err(e),
                    Err(e @ Error::Unavailable { .. }) => Err(Error::backend_from(
                        "the connection dropped while committing; the change may or may not have been applied",
                        e,
                    )),
                    Err(e) => {
                        // The error is what matters; a connection that
                        // cannot roll back is broken and dropped by the pool.
                        let _ = self.batch("ROLLBACK");
                        Err(e)
                    }
                }
            }
            Err(e) => {
                self.tail.borrow_mut().clear();
                // Nothing to roll back when BEGIN never went out.
                if self.begin.take().is_none() {
                    // As above: the first error is reported.
                    let _ = self.batch("ROLLBACK");
                }
                Err(e)
            }
        }
    }
}

/// How many statements may go with a commit.
const TAIL: usize = 2;

/// The channel writes are announced on.
pub(crate) const CHANNEL: &str = "braid_changes";
const NOTIFY_COMMIT: &str = "NOTIFY braid_changes; COMMIT";
const NOTIFY_READY_COMMIT: &str = "NOTIFY braid_changes, 'ready'; COMMIT";

/// The payload of a notification whose write made work ready (a task
/// added, unblocked, reopened...); others carry none.
pub(crate) const READY: &str = "ready";

/// How a transaction stands with other writers. Writes that may change the
/// graph's shape take the writers' advisory lock exclusively (the key is
/// "braid" in ASCII, 0x62_7261_6964) and apply one at a time. Claims and
/// the ends of claims take it shared: they run side by side, each holding
/// row locks on every task row it reads, and take [`LOG_LOCK`] only to
/// number and append their events, so the log's order is still the commit
/// order.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Writers {
    None,
    Shared,
    Exclusive,
}

const BEGIN_LOCKED: &str = "BEGIN; SELECT pg_advisory_xact_lock(422825781604)";
const BEGIN_SHARED: &str = "BEGIN; SELECT pg_advisory_xact_lock_shared(422825781604)";

/// Held from numbering a shared writer's events to its commit ("braidlog").
pub(crate) const LOG_LOCK: i64 = 0x62_7261_6964_6c6f;
