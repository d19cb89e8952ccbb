//! The PostgreSQL backend: several braid processes, on several machines,
//! share one database. tokio-postgres connections in an r2d2 pool, each
//! driven by the thread that uses it (see `PgStore::blocking` for calls
//! from async code). Writes that may change the graph's
//! shape take the writers' advisory lock and apply one at a time across
//! nodes, as SQLite's `BEGIN IMMEDIATE` does on one machine; claims and the
//! ends of claims take it shared and run side by side under row locks (see
//! `conn::Writers`). Migrations are embedded and versioned in `meta`.

mod conn;
mod import;
mod write;

use std::path::Path;

use braid_core::{
    Dep, DepKind, Event, EventKind, Health, SharedClock, State, Task, TaskId, TaskType,
};
use tokio_postgres::Row;

use self::conn::{Conn, Param};
use crate::{
    Changes, Error, ExportItem, ImportBatch, ImportOptions, ImportReport, ListFilter, Result,
    Store, TreeRow,
};
use crate::{UsageBy, UsageQuery, UsageRow, UsageTotal};

/// Each entry moves the schema one version forward; never edit one that has
/// shipped, append a new one.
const MIGRATIONS: &[&str] = &[
    include_str!("schema.sql"),
    include_str!("schema2.sql"),
    include_str!("schema3.sql"),
    include_str!("schema4.sql"),
    include_str!("schema5.sql"),
];

pub(crate) const TASK_COLS: &str = "id, title, description, type, priority, state, parent, labels, \
    assignee, acceptance, gates, agent, branch, created_at, updated_at, closed_at, close_reason, \
    blockers, held_by, ready, lease_token, lease_expires, attempt";

/// Connections kept by one store.
const POOL_SIZE: u32 = 8;

pub struct PgStore {
    /// Runs the change feeds and the calls made from async code. (An
    /// `Option` only so that dropping the store never blocks.)
    rt: Option<tokio::runtime::Runtime>,
    pool: conn::Pool,
    /// The connection `open` made, kept for the first call that finds it
    /// free (a short-lived command then opens one connection, not two).
    spare: std::sync::Arc<std::sync::Mutex<Option<conn::PgConn>>>,
    url: String,
    config: tokio_postgres::Config,
    /// Stamps rows and events.
    clock: SharedClock,
}

impl Drop for PgStore {
    fn drop(&mut self) {
        // Wherever the store is dropped, async code included.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// A lost notification is covered by a ping at least this often.
const BACKSTOP: std::time::Duration = std::time::Duration::from_secs(1);

/// True for `postgres://` and `postgresql://` addresses.
pub fn is_url(s: &str) -> bool {
    s.starts_with("postgres://") || s.starts_with("postgresql://")
}

impl PgStore {
    /// Connects to `url` (`postgres://user@host:port/db`, options such as
    /// `?options=-c search_path%3Dname` pass through) and brings the schema
    /// up to date.
    pub fn open(url: &str) -> Result<PgStore> {
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| Error::Invalid(format!("{}: {e}", redact(url))))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("braid-pg")
            .enable_all()
            .build()
            .map_err(|e| Error::backend_from("starting the database runtime", e))?;
        let pool = conn::pool(
            config.clone(),
            POOL_SIZE,
            std::time::Duration::from_secs(30),
        );
        let store = PgStore {
            rt: Some(rt),
            spare: Default::default(),
            pool,
            url: redact(url),
            config,
            clock: braid_core::clock::system(),
        };
        // A wrong address or a server that is down is reported at once
        // (the pool would keep trying): the first connection is opened
        // here, and brings the schema up to date.
        let manager = conn::Manager {
            config: store.config.clone(),
        };
        let url = store.url.clone();
        let first = move || -> Result<conn::PgConn> {
            let c = r2d2::ManageConnection::connect(&manager)
                .map_err(|e| Error::unavailable(format!("connecting to {url}"), Some(e.into())))?;
            migrate(&Conn::new(&c))?;
            Ok(c)
        };
        let c = store.blocking(first)??;
        *store.spare.lock().unwrap_or_else(|e| e.into_inner()) = Some(c);
        Ok(store)
    }

    /// Stamps rows and events with `clock`'s time instead of the system's.
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    fn rt(&self) -> &tokio::runtime::Runtime {
        self.rt
            .as_ref()
            .expect("the store's runtime lives as long as the store")
    }

    /// Empties the work graph (tasks, dependencies, labels, counters, the
    /// event log), for `braid migrate --force`.
    pub fn clear(&self) -> Result<()> {
        self.with(|c| {
            c.transaction(true, |c| {
                c.batch("TRUNCATE tasks, deps, labels, counters, events RESTART IDENTITY")
            })
        })
    }

    /// Runs `f` with a pooled connection and waits for its answer (see
    /// [`PgStore::blocking`]). When
    /// the database is unreachable or drops the connection (or a deadlock
    /// rolls the transaction back), `f` runs again on a new connection,
    /// with backoff, for up to [`RECONNECT_FOR`]: a transaction that failed
    /// that way before its COMMIT was rolled back by the server. (A
    /// connection lost during the COMMIT itself is reported, not retried,
    /// unless the write can tell whether it landed: see `Conn::write_once`.)
    fn with<T: Send + 'static>(
        &self,
        f: impl Fn(&Conn<'_>) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let pool = self.pool.clone();
        let spare = self.spare.clone();
        let url = self.url.clone();
        let call = move || {
            let started = std::time::Instant::now();
            let mut pause = std::time::Duration::from_millis(20);
            loop {
                let left = RECONNECT_FOR.saturating_sub(started.elapsed());
                let taken = spare.lock().unwrap_or_else(|e| e.into_inner()).take();
                let result = match taken {
                    Some(pc) => {
                        let r = f(&Conn::new(&pc));
                        if !pc.is_broken() {
                            *spare.lock().unwrap_or_else(|e| e.into_inner()) = Some(pc);
                        }
                        r
                    }
                    None => match pool.get_timeout(left.max(std::time::Duration::from_secs(1))) {
                        Ok(pc) => f(&Conn::new(&pc)),
                        Err(e) => Err(Error::unavailable(
                            format!("connecting to {url}"),
                            Some(e.into()),
                        )),
                    },
                };
                match result {
                    Err(Error::Unavailable { .. }) if started.elapsed() < RECONNECT_FOR => {
                        std::thread::sleep(pause);
                        pause = (pause * 2).min(std::time::Duration::from_secs(1));
                    }
                    r => break r,
                }
            }
        };
        self.blocking(call)?
    }

    /// Runs `call`, which blocks on the database, where that is allowed: a
    /// plain thread runs it itself; async code may not block its worker
    /// unannounced, so on a multi-threaded runtime the call says so (the
    /// worker's other tasks move to another thread meanwhile), and from a
    /// single-threaded one it goes to the store runtime's blocking pool
    /// (a connection's own runtime cannot start inside another's worker).
    fn blocking<T: Send + 'static>(&self, call: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        match tokio::runtime::Handle::try_current() {
            Err(_) => return Ok(call()),
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                return Ok(tokio::task::block_in_place(call));
            }
            Ok(_) => {}
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.rt().spawn_blocking(move || {
            // The caller waits on `rx` until this is sent.
            let _ = tx.send(call());
        });
        rx.recv()
            .map_err(|_| Error::backend("the database call stopped before it answered"))
    }
}

/// How long a call keeps reconnecting before it reports the database
/// unavailable.
const RECONNECT_FOR: std::time::Duration = std::time::Duration::from_secs(30);

/// The address without its password.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

fn migrate(c: &Conn<'_>) -> Result<()> {
    // Up to date (the usual case): one read, no write and no NOTIFY. (A
    // new database has no `meta` yet: the read fails and we migrate.)
    let current = c
        .query_opt("SELECT value FROM meta WHERE key = 'schema_version'", &[])
        .ok()
        .flatten()
        .and_then(|r| r.get::<_, String>(0).parse::<usize>().ok());
    if current == Some(MIGRATIONS.len()) {
        return Ok(());
    }
    c.transaction(true, |c| {
        c.batch("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")?;
        let version: i64 = c
            .query_opt("SELECT value FROM meta WHERE key = 'schema_version'", &[])?
            .and_then(|r| r.get::<_, String>(0).parse().ok())
            .unwrap_or(0);
        if version as usize > MIGRATIONS.len() {
            return Err(Error::Invalid(format!(
                "the database's schema is version {version}, newer than this braid knows ({}); upgrade braid",
                MIGRATIONS.len()
            )));
        }
        for m in &MIGRATIONS[version as usize..] {
            c.batch(m)?;
        }
        c.execute(
            "INSERT INTO meta (key, value) VALUES ('schema_version', $1) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            &[&MIGRATIONS.len().to_string()],
        )?;
        Ok(())
    })
}

pub(crate) fn row_to_task(r: &Row) -> Result<Task> {
    let lease_token: Option<String> = r.get(20);
    Ok(Task {
        id: TaskId::parse(r.get(0))?,
        title: r.get(1),
        description: r.get(2),
        kind: TaskType::parse(r.get(3))?,
        priority: r.get::<_, i64>(4) as u8,
        state: State::parse(r.get(5))?,
        parent: r.get::<_, Option<&str>>(6).map(TaskId::parse).transpose()?,
        labels: crate::json::json_list(r.get(7)),
        assignee: r.get(8),
        acceptance: r.get(9),
        gates: crate::json::json_list(r.get(10)),
        agent: r.get(11),
        branch: r.get(12),
        created_at: r.get(13),
        updated_at: r.get(14),
        closed_at: r.get(15),
        close_reason: r.get(16),
        deps: Vec::new(),
        blockers: r.get::<_, i64>(17) as u32,
        held_by: r.get::<_, i64>(18) as u32,
        ready: r.get::<_, i64>(19) != 0,
        lease: lease_token.map(|token| braid_core::model::Lease {
            token,
            expires_at: r.get::<_, Option<i64>>(21).unwrap_or(0),
            attempt: r.get::<_, i64>(22) as u32,
        }),
    })
}

/// Runs a task query and fills in every task's dependencies with one query
/// per 512 tasks (never one per task).
pub(crate) fn load_tasks(c: &Conn<'_>, sql: &str, params: &[Param<'_>]) -> Result<Vec<Task>> {
    let mut tasks = c
        .query(sql, params)?
        .iter()
        .map(row_to_task)
        .collect::<Result<Vec<_>>>()?;
    fill_deps(c, &mut tasks)?;
    Ok(tasks)
}

fn fill_deps(c: &Conn<'_>, tasks: &mut [Task]) -> Result<()> {
    for chunk in tasks.chunks_mut(512) {
        let ids: Vec<&str> = chunk.iter().map(|t| t.id.as_str()).collect();
        let rows = c.query(
            "SELECT from_id, to_id, kind FROM deps WHERE from_id = ANY($1) ORDER BY from_id, to_id",
            &[&ids],
        )?;
        let mut by_id: std::collections::HashMap<String, Vec<Dep>> = Default::default();
        for r in rows {
            let dep = Dep {
                id: TaskId::parse(r.get(1))?,
                kind: DepKind::parse(r.get(2))?,
            };
            by_id.entry(r.get(0)).or_default().push(dep);
        }
        for t in chunk.iter_mut() {
            t.deps = by_id.remove(t.id.as_str()).unwrap_or_default();
        }
    }
    Ok(())
}

pub(crate) fn row_to_event(r: &Row) -> Event {
    Event {
        seq: r.get(0),
        at: r.get(1),
        actor: r.get(2),
        kind: EventKind::parse(r.get(3)).unwrap_or(EventKind::Updated),
        task: r
            .get::<_, Option<&str>>(4)
            .and_then(|t| TaskId::parse(t).ok()),
        payload: serde_json::from_str(r.get(5)).unwrap_or(serde_json::Value::Null),
    }
}

fn tree_row(r: &Row) -> Result<TreeRow> {
    Ok(TreeRow {
        id: TaskId::trusted(r.get(0)),
        parent: r.get::<_, Option<String>>(1).map(TaskId::trusted),
        title: r.get(2),
        kind: TaskType::parse(r.get(3))?,
        state: State::parse(r.get(4))?,
        priority: r.get::<_, i64>(5) as u8,
        ready: r.get::<_, i64>(6) != 0,
    })
}

impl PgStore {
    fn latest_events(
        &self,
        id: &TaskId,
        kind: Option<EventKind>,
        limit: usize,
    ) -> Result<Vec<Event>> {
        let id = id.clone();
        self.with(move |c| {
            let only = kind
                .map(|k| format!("AND kind = '{}'", k.as_str()))
                .unwrap_or_default();
            let mut rows: Vec<Event> = c
                .query(
                    &format!(
                        "SELECT seq, at, actor, kind, task, payload FROM events \
                         WHERE task = $1 {only} ORDER BY seq DESC LIMIT {limit}"
                    ),
                    &[&id.as_str()],
                )?
                .iter()
                .map(row_to_event)
                .collect();
            rows.reverse();
            Ok(rows)
        })
    }
}

impl Store for PgStore {
    fn apply_all(&self, actor: &str, cmds: Vec<crate::Command>) -> Result<Vec<crate::Applied>> {
        crate::apply::check_names(actor, &cmds)?;
        let actor = actor.to_owned();
        let write_id = TaskId::random(20).as_str()[3..].to_owned();
        // Only a retry can find its write already recorded.
        let retry = std::sync::atomic::AtomicBool::new(false);
        let now = self.clock.now_ms();
        self.with(move |c| {
            let retry = retry.swap(true, std::sync::atomic::Ordering::Relaxed);
            write::apply_all(c, &actor, now, cmds.clone(), &write_id, retry)
        })
    }

    fn note(&self, actor: &str, kind: EventKind, payload: serde_json::Value) -> Result<Event> {
        let actor = actor.to_owned();
        let now = self.clock.now_ms();
        self.with(move |c| {
            c.transaction(true, |c| {
                write::append_event(c, now, &actor, kind, None, payload.clone())
            })
        })
    }

    fn comments(&self, id: &TaskId, limit: usize) -> Result<Vec<Event>> {
        self.latest_events(id, Some(EventKind::Commented), limit)
    }

    fn task_events(&self, id: &TaskId, limit: usize) -> Result<Vec<Event>> {
        self.latest_events(id, None, limit)
    }

    fn task_usage(&self, id: &TaskId) -> Result<Vec<UsageRow>> {
        let id = id.clone();
        self.with(move |c| {
            Ok(c.query(
                &format!(
                    "SELECT {} FROM usage WHERE task = $1 ORDER BY seq",
                    crate::types::USAGE_COLS
                ),
                &[&id.as_str()],
            )?
            .iter()
            .map(|r| UsageRow {
                seq: r.get(0),
                task: TaskId::trusted(r.get::<_, String>(1)),
                at: r.get(2),
                agent: r.get(3),
                attempt: r.get(4),
                model: r.get(5),
                session: r.get(6),
                input_tokens: r.get(7),
                output_tokens: r.get(8),
                cache_read_tokens: r.get(9),
                cache_write_tokens: r.get(10),
                cost_usd: r.get(11),
                turns: r.get(12),
                duration_ms: r.get(13),
                outcome: r.get(14),
            })
            .collect())
        })
    }

    fn usage_totals(&self, q: &UsageQuery) -> Result<Vec<UsageTotal>> {
        let key = match q.by {
            UsageBy::Task => "task",
            UsageBy::Agent => "agent",
            UsageBy::Model => "coalesce(model, '')",
            UsageBy::Day => "to_char(to_timestamp(at / 1000.0) AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
        };
        let (since, task, limit) = (q.since, q.task.clone(), q.limit);
        self.with(move |c| {
            Ok(c.query(
                &format!(
                    "SELECT {key} AS k, {} FROM usage \
                     WHERE ($1::bigint IS NULL OR at >= $1) AND ($2::text IS NULL OR task = $2) \
                     GROUP BY k ORDER BY 7 DESC, k LIMIT {limit}",
                    crate::types::USAGE_SUMS_PG
                ),
                &[&since, &task.as_ref().map(|t| t.as_str())],
            )?
            .iter()
            .map(|r| UsageTotal {
                key: r.get(0),
                attempts: r.get(1),
                input_tokens: r.get(2),
                output_tokens: r.get(3),
                cache_read_tokens: r.get(4),
                cache_write_tokens: r.get(5),
                cost_usd: r.get(6),
                unpriced: r.get(7),
                duration_ms: r.get(8),
            })
            .collect())
        })
    }

    fn import(&self, actor: &str, batch: ImportBatch, opts: ImportOptions) -> Result<ImportReport> {
        crate::apply::check_names(actor, &[])?;
        let actor = actor.to_owned();
        let write_id = TaskId::random(20).as_str()[3..].to_owned();
        // Shared by the retries, not copied for each.
        let batch = std::sync::Arc::new(batch);
        let now = self.clock.now_ms();
        self.with(move |c| import::import(c, &actor, &batch, opts, now, &write_id))
    }

    fn task(&self, id: &TaskId) -> Result<Task> {
        let id = id.clone();
        self.with(move |c| {
            let sql = format!("SELECT {TASK_COLS} FROM tasks WHERE id = $1");
            load_tasks(c, &sql, &[&id.as_str()])?
                .pop()
                .ok_or_else(|| braid_core::Error::NotFound(id.clone()).into())
        })
    }

    fn list(&self, f: &ListFilter) -> Result<Vec<Task>> {
        let f = f.clone();
        self.with(move |c| {
            let mut clauses: Vec<String> = Vec::new();
            let mut params: Vec<Box<dyn tokio_postgres::types::ToSql + Sync + Send>> = Vec::new();
            let mut next = |p: Box<dyn tokio_postgres::types::ToSql + Sync + Send>| {
                params.push(p);
                params.len()
            };
            if !f.states.is_empty() {
                let v: Vec<String> = f.states.iter().map(|s| s.as_str().to_owned()).collect();
                clauses.push(format!("state = ANY(${})", next(Box::new(v))));
            }
            if !f.kinds.is_empty() {
                let v: Vec<String> = f.kinds.iter().map(|k| k.as_str().to_owned()).collect();
                clauses.push(format!("type = ANY(${})", next(Box::new(v))));
            }
            if let Some(l) = &f.label {
                clauses.push(format!(
                    "id IN (SELECT task FROM labels WHERE label = ${})",
                    next(Box::new(l.clone()))
                ));
            }
            if let Some(p) = &f.parent {
                clauses.push(format!(
                    "parent = ${}",
                    next(Box::new(p.as_str().to_owned()))
                ));
            }
            if let Some(a) = &f.assignee {
                clauses.push(format!("assignee = ${}", next(Box::new(a.clone()))));
            }
            if let Some(r) = f.ready {
                clauses.push(format!("ready = ${}", next(Box::new(r as i64))));
            }
            let mut sql = format!("SELECT {TASK_COLS} FROM tasks");
            if !clauses.is_empty() {
                sql.push_str(" WHERE ");
                sql.push_str(&clauses.join(" AND "));
            }
            sql.push_str(" ORDER BY priority, created_at, ord");
            if let Some(limit) = f.limit {
                sql.push_str(&format!(" LIMIT {limit}"));
            }
            let refs: Vec<Param<'_>> = params.iter().map(|b| b.as_ref() as Param<'_>).collect();
            load_tasks(c, &sql, &refs)
        })
    }

    fn ready(&self, limit: usize) -> Result<Vec<Task>> {
        self.with(move |c| {
            let sql = format!(
                "SELECT {TASK_COLS} FROM tasks WHERE ready = 1 \
                 ORDER BY priority, created_at, ord LIMIT {limit}"
            );
            load_tasks(c, &sql, &[])
        })
    }

    fn ready_heads(&self, limit: usize) -> Result<Vec<(TaskId, Option<String>)>> {
        self.with(move |c| {
            Ok(c.query(
                &format!(
                    "SELECT id, agent FROM tasks WHERE ready = 1 \
                     ORDER BY priority, created_at, ord LIMIT {limit}"
                ),
                &[],
            )?
            .iter()
            .map(|r| (TaskId::trusted(r.get(0)), r.get(1)))
            .collect())
        })
    }

    fn why_blocked(&self, id: &TaskId) -> Result<Vec<String>> {
        let id = id.clone();
        self.with(move |c| {
            c.transaction(false, |tx| {
                let mut g = write::PgGraph::new(tx);
                braid_core::graph::why_blocked(&mut g, &id)
            })
        })
    }

    fn subtree(&self, root: Option<&TaskId>) -> Result<Vec<TreeRow>> {
        let root = root.cloned();
        self.with(move |c| {
            let Some(root) = root.clone() else {
                return c
                    .query(
                        "SELECT id, parent, title, type, state, priority, ready FROM tasks ORDER BY ord",
                        &[],
                    )?
                    .iter()
                    .map(tree_row)
                    .collect();
            };
            // Breadth first, so parents come before children.
            let rows = c.query(
                "WITH RECURSIVE sub(id, parent, title, type, state, priority, ready, depth, ord) AS ( \
                 SELECT id, parent, title, type, state, priority, ready, 0, ord FROM tasks WHERE id = $1 \
                 UNION ALL SELECT t.id, t.parent, t.title, t.type, t.state, t.priority, t.ready, sub.depth + 1, t.ord \
                 FROM sub JOIN tasks t ON t.parent = sub.id) \
                 SELECT id, parent, title, type, state, priority, ready FROM sub ORDER BY depth, ord",
                &[&root.as_str()],
            )?;
            if rows.is_empty() {
                return Err(braid_core::Error::NotFound(root).into());
            }
            rows.iter().map(tree_row).collect()
        })
    }

    fn health(&self) -> Result<Health> {
        self.with(|c| {
            let rows = c.query("SELECT name, value FROM counters", &[])?;
            Ok(Health::from_counters(
                rows.iter()
                    .map(|r| (r.get::<_, &str>(0), r.get::<_, i64>(1))),
            ))
        })
    }

    fn deps_of(&self, ids: &[TaskId]) -> Result<Vec<(TaskId, TaskId, DepKind)>> {
        let ids: Vec<String> = ids.iter().map(|i| i.as_str().to_owned()).collect();
        self.with(move |c| {
            c.query(
                "SELECT from_id, to_id, kind FROM deps WHERE from_id = ANY($1) \
                 ORDER BY array_position($1, from_id), to_id",
                &[&ids],
            )?
            .iter()
            .map(|r| {
                Ok((
                    TaskId::parse(r.get(0))?,
                    TaskId::parse(r.get(1))?,
                    DepKind::parse(r.get(2))?,
                ))
            })
            .collect()
        })
    }

    fn set_setting(&self, key: &str, value: &str) -> Result<()> {
        let (key, value) = (key.to_owned(), value.to_owned());
        self.with(move |c| {
            c.execute(
                "INSERT INTO meta (key, value) VALUES ($1, $2) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                &[&key, &value],
            )?;
            Ok(())
        })
    }

    fn dependents_of(&self, id: &TaskId, limit: usize) -> Result<Vec<(TaskId, DepKind)>> {
        let id = id.as_str().to_owned();
        self.with(move |c| {
            c.query(
                "SELECT from_id, kind FROM deps WHERE to_id = $1 ORDER BY from_id COLLATE \"C\" LIMIT $2",
                &[&id, &(limit as i64)],
            )?
            .iter()
            .map(|r| Ok((TaskId::parse(r.get(0))?, DepKind::parse(r.get(1))?)))
            .collect()
        })
    }

    fn ids_with_prefix(&self, prefix: &str, limit: usize) -> Result<Vec<TaskId>> {
        let prefix = prefix.to_owned();
        self.with(move |c| {
            // Byte-wise operators (`~>=~`), served by the text_pattern_ops
            // index whatever the database's collation (schema 4).
            let end = format!("{prefix}\u{7f}");
            c.query(
                &format!(
                    "SELECT id FROM tasks WHERE id ~>=~ $1 AND id ~<~ $2 ORDER BY id COLLATE \"C\" LIMIT {limit}"
                ),
                &[&prefix, &end],
            )?
            .iter()
            .map(|r| Ok(TaskId::parse(r.get(0))?))
            .collect()
        })
    }

    fn blocks_edges(&self) -> Result<Vec<(TaskId, TaskId)>> {
        self.with(|c| {
            c.query("SELECT from_id, to_id FROM deps WHERE kind = 'blocks'", &[])?
                .iter()
                .map(|r| Ok((TaskId::parse(r.get(0))?, TaskId::parse(r.get(1))?)))
                .collect()
        })
    }

    fn events(&self, after: i64, limit: usize) -> Result<Vec<Event>> {
        self.with(move |c| {
            Ok(c.query(
                &format!(
                    "SELECT seq, at, actor, kind, task, payload FROM events WHERE seq > $1 ORDER BY seq LIMIT {limit}"
                ),
                &[&after],
            )?
            .iter()
            .map(row_to_event)
            .collect())
        })
    }

    fn last_seq(&self) -> Result<i64> {
        self.with(|c| {
            Ok(c.query_opt("SELECT max(seq) FROM events", &[])?
                .and_then(|r| r.get::<_, Option<i64>>(0))
                .unwrap_or(0))
        })
    }

    fn expired_leases(&self, now: i64, limit: usize) -> Result<Vec<(TaskId, String)>> {
        self.with(move |c| {
            c.query(
                &format!(
                    "SELECT id, lease_token FROM tasks WHERE lease_expires IS NOT NULL AND lease_expires < $1 \
                     AND state = 'in_progress' ORDER BY lease_expires LIMIT {limit}"
                ),
                &[&now],
            )?
            .iter()
            .map(|r| Ok((TaskId::parse(r.get(0))?, r.get(1))))
            .collect()
        })
    }

    fn next_lease_expiry(&self) -> Result<Option<i64>> {
        self.with(|c| {
            Ok(c.query_opt(
                "SELECT min(lease_expires) FROM tasks WHERE lease_expires IS NOT NULL AND state = 'in_progress'",
                &[],
            )?
            .and_then(|r| r.get::<_, Option<i64>>(0)))
        })
    }

    fn export(
        &self,
        with_events: bool,
        sink: &mut dyn FnMut(ExportItem) -> Result<()>,
    ) -> Result<()> {
        // One repeatable-read transaction: a consistent view while others
        // write, read in pages of 1,000.
        let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Vec<ExportItem>>>(2);
        let pool = self.pool.clone();
        self.rt().spawn_blocking(move || {
            let pc = match pool.get() {
                Ok(c) => c,
                Err(e) => {
                    // The reader stops at the first error (or has gone).
                    let _ = tx.send(Err(Error::unavailable("connecting", Some(e.into()))));
                    return;
                }
            };
            let c = Conn::new(&pc);
            let result = (|| -> Result<()> {
                c.batch("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")?;
                let mut after = i64::MIN;
                loop {
                    let sql = format!(
                        "SELECT {TASK_COLS}, ord FROM tasks WHERE ord > $1 ORDER BY ord LIMIT 1000"
                    );
                    let rows = c.query(&sql, &[&after])?;
                    let Some(last) = rows.last() else { break };
                    after = last.get(23);
                    let mut tasks = rows.iter().map(row_to_task).collect::<Result<Vec<_>>>()?;
                    fill_deps(&c, &mut tasks)?;
                    if tx.send(Ok(tasks.into_iter().map(ExportItem::Task).collect())).is_err() {
                        return Ok(());
                    }
                }
                if with_events {
                    let mut after = 0i64;
                    loop {
                        let rows = c.query(
                            "SELECT seq, at, actor, kind, task, payload FROM events WHERE seq > $1 ORDER BY seq LIMIT 1000",
                            &[&after],
                        )?;
                        let Some(last) = rows.last() else { break };
                        after = last.get(0);
                        let events = rows.iter().map(|r| ExportItem::Event(row_to_event(r))).collect();
                        if tx.send(Ok(events)).is_err() {
                            return Ok(());
                        }
                    }
                }
                Ok(())
            })();
            // A read-only transaction: its end changes nothing, and a
            // broken connection is dropped by the pool.
            let _ = c.batch("COMMIT");
            if let Err(e) = result {
                // The reader stops at the first error (or has gone).
                let _ = tx.send(Err(e));
            }
        });
        for page in rx {
            for item in page? {
                sink(item)?;
            }
        }
        Ok(())
    }

    fn backup_to(&self, _dest: &Path) -> Result<()> {
        Err(Error::Invalid(
            "snapshots of a PostgreSQL store are the server's business (pg_dump, or its backups); braid snapshot works on SQLite projects".into(),
        ))
    }

    /// Woken by every write of every node (see [`PgStore::feed`]).
    fn changes(&self) -> Result<Changes> {
        Ok(Changes::new(self.feed(false), None))
    }

    fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    fn restore_from(&self, _src: &Path, _keep_current_at: &Path) -> Result<()> {
        Err(Error::Invalid(
            "restore a PostgreSQL store with the server's tools (pg_restore); braid snapshot works on SQLite projects".into(),
        ))
    }
}

impl PgStore {
    /// Like [`Store::changes`], but woken only by writes that made work
    /// ready (and by the backstop): what a node waiting to claim needs,
    /// without waking for every claim and event of the others.
    pub fn ready_changes(&self) -> std::sync::mpsc::Receiver<()> {
        self.feed(true)
    }

    /// LISTEN on a connection of its own (reconnecting with backoff when it
    /// drops), plus a ping every second in case a notification was lost.
    fn feed(&self, only_ready: bool) -> std::sync::mpsc::Receiver<()> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<()>(1);
        let config = self.config.clone();
        self.rt().spawn(async move {
            let mut backstop = tokio::time::interval(BACKSTOP);
            let mut pause = std::time::Duration::from_millis(50);
            loop {
                match config.connect(tokio_postgres::NoTls).await {
                    Ok((client, mut conn)) => {
                        pause = std::time::Duration::from_millis(50);
                        let (note_tx, mut notes) = tokio::sync::mpsc::unbounded_channel();
                        let driver = tokio::spawn(async move {
                            loop {
                                match std::future::poll_fn(|cx| conn.poll_message(cx)).await {
                                    Some(Ok(tokio_postgres::AsyncMessage::Notification(n)))
                                        if !only_ready || n.payload() == conn::READY =>
                                    {
                                        if note_tx.send(()).is_err() {
                                            return;
                                        }
                                    }
                                    Some(Ok(_)) => {}
                                    Some(Err(_)) | None => return,
                                }
                            }
                        });
                        if client
                            .batch_execute(&format!("LISTEN {}", conn::CHANNEL))
                            .await
                            .is_ok()
                        {
                            // Whatever was written while we were not
                            // listening is read on this first ping (a
                            // full channel already holds one).
                            let _ = tx.try_send(());
                            loop {
                                let ping = tokio::select! {
                                    n = notes.recv() => n.is_some(),
                                    _ = backstop.tick() => true,
                                };
                                if !ping {
                                    break; // the connection dropped
                                }
                                if let Err(std::sync::mpsc::TrySendError::Disconnected(_)) =
                                    tx.try_send(())
                                {
                                    driver.abort();
                                    return;
                                }
                            }
                        }
                        driver.abort();
                    }
                    Err(_) => {
                        if let Err(std::sync::mpsc::TrySendError::Disconnected(_)) = tx.try_send(())
                        {
                            return;
                        }
                    }
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(std::time::Duration::from_secs(5));
            }
        });
        rx
    }
}
