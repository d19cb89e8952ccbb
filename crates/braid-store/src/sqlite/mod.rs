//! The SQLite backend: one database file in WAL mode, a busy timeout and
//! `BEGIN IMMEDIATE` for every write, embedded versioned migrations, and a
//! shared file lock held while open so that a snapshot restore (which takes
//! it exclusively) never races a writer.

pub mod cache_index;
mod import;
mod write;

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use braid_core::{
    Dep, DepKind, Event, EventKind, Health, SharedClock, State, Task, TaskId, TaskType,
};
use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::json::json_list;
use crate::{
    Changes, Error, ExportItem, ImportBatch, ImportOptions, ImportReport, ListFilter, Result,
    Store, TreeRow,
};
use crate::{UsageBy, UsageQuery, UsageRow, UsageTotal};

/// Each entry moves the schema one version forward; never edit one that has
/// shipped, append a new one.
const MIGRATIONS: &[&str] = &[include_str!("schema.sql"), include_str!("schema2.sql")];

/// How long a write waits for another process's transaction.
const BUSY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long opening waits for a snapshot restore to finish.
const LOCK_WAIT: Duration = Duration::from_secs(10);

pub(crate) const TASK_COLS: &str = "id, title, description, type, priority, state, parent, labels, \
    assignee, acceptance, gates, agent, branch, created_at, updated_at, closed_at, close_reason, \
    blockers, held_by, ready, lease_token, lease_expires, attempt";

pub struct SqliteStore {
    path: PathBuf,
    conn: Mutex<Connection>,
    /// Extra connections for queries (see [`SqliteStore::with_readers`]);
    /// empty: queries share the writer's connection.
    readers: Vec<Mutex<Connection>>,
    next_reader: std::sync::atomic::AtomicUsize,
    /// Holds a shared lock on `<db>.lock` for as long as the store is open.
    lock: Mutex<File>,
    /// How long a restore waits for other processes to close the database.
    lock_wait: Duration,
    /// When set, commits are counted and a background thread checkpoints the
    /// WAL every [`CHECKPOINT_EVERY`] of them (see `checkpoint_in_background`).
    checkpointer: Mutex<Option<(std::sync::mpsc::SyncSender<()>, u32)>>,
    /// Stamps rows and events.
    clock: SharedClock,
}

/// Commits between background checkpoints.
const CHECKPOINT_EVERY: u32 = 256;

pub(crate) fn db_err(e: rusqlite::Error) -> Error {
    if let rusqlite::Error::SqliteFailure(f, _) = &e
        && matches!(
            f.code,
            rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
        )
    {
        return Error::Locked(format!(
            "another braid process kept the database busy for over {}s",
            BUSY_TIMEOUT.as_secs()
        ));
    }
    Error::backend_from("SQLite", e)
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        db_err(e)
    }
}

pub(crate) fn io_err(path: &Path, e: std::io::Error) -> Error {
    Error::io(path, e)
}

/// The file whose modification time every committed write bumps, after the
/// commit: watch it (inotify) to learn of changes without polling. Watching
/// the WAL itself races: its last write lands just before the commit becomes
/// visible to readers.
pub fn change_marker(db: &Path) -> PathBuf {
    lock_path(db)
}

fn lock_path(db: &Path) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push(".lock");
    PathBuf::from(p)
}

/// Takes a file lock, retrying with bounded exponential backoff.
fn lock_with_backoff(file: &File, exclusive: bool, wait: Duration) -> std::io::Result<bool> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(5);
    loop {
        let r = if exclusive {
            file.try_lock()
        } else {
            file.try_lock_shared()
        };
        match r {
            Ok(()) => return Ok(true),
            Err(std::fs::TryLockError::WouldBlock) => {}
            Err(std::fs::TryLockError::Error(e)) => return Err(e),
        }
        if start.elapsed() >= wait {
            return Ok(false);
        }
        std::thread::sleep(pause.min(wait.saturating_sub(start.elapsed())));
        pause = (pause * 2).min(Duration::from_millis(250));
    }
}

fn configure(conn: &Connection) -> Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "OFF")?;
    conn.pragma_update(None, "cache_size", -16_000)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

fn migrate(conn: &mut Connection) -> Result<()> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version as usize >= MIGRATIONS.len() {
        if version as usize > MIGRATIONS.len() {
            return Err(Error::Invalid(format!(
                "this database has schema version {version}, newer than this braid understands ({}); upgrade braid",
                MIGRATIONS.len()
            )));
        }
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    // Another process may have migrated while we waited for the write lock.
    let version: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
    }
    tx.commit()?;
    Ok(())
}

impl SqliteStore {
    /// Creates the database (and its parent directory) if missing, then opens it.
    pub fn create(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        }
        Self::open_inner(path, true)
    }

    /// Opens an existing database.
    pub fn open(path: &Path) -> Result<Self> {
        if !path.exists() {
            return Err(Error::io(
                path,
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no such database (run `braid init` first)",
                ),
            ));
        }
        Self::open_inner(path, false)
    }

    fn open_inner(path: &Path, create: bool) -> Result<Self> {
        let lp = lock_path(path);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&lp)
            .map_err(|e| io_err(&lp, e))?;
        if !lock_with_backoff(&lock, false, LOCK_WAIT).map_err(|e| io_err(&lp, e))? {
            return Err(Error::Locked(format!(
                "{} is held by a snapshot restore; try again when it finishes",
                lp.display()
            )));
        }
        let mut conn = Connection::open(path)?;
        configure(&conn)?;
        if create {
            let mode: String =
                conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
            if !mode.eq_ignore_ascii_case("wal") {
                return Err(Error::backend(format!(
                    "could not switch {} to WAL mode",
                    path.display()
                )));
            }
        }
        migrate(&mut conn)?;
        tracing::debug!(db = %path.display(), created = create, "opened the SQLite store");
        Ok(SqliteStore {
            path: path.to_owned(),
            conn: Mutex::new(conn),
            readers: Vec::new(),
            next_reader: std::sync::atomic::AtomicUsize::new(0),
            lock: Mutex::new(lock),
            lock_wait: LOCK_WAIT,
            checkpointer: Mutex::new(None),
            clock: braid_core::clock::system(),
        })
    }

    /// Moves WAL checkpoints off this connection's commits: SQLite's
    /// automatic checkpoint runs inside the commit that crosses the
    /// threshold, stalling that writer for milliseconds. A long-lived writer
    /// with latency targets (the engine) calls this; a thread with its own
    /// connection then runs passive checkpoints (which never block writers)
    /// after every few hundred commits. The thread ends with the store.
    pub fn checkpoint_in_background(&self) -> Result<()> {
        let conn = Connection::open(&self.path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let (tx, rx) = std::sync::mpsc::sync_channel::<()>(1);
        std::thread::Builder::new()
            .name("braid-checkpoint".into())
            .spawn(move || {
                while rx.recv().is_ok() {
                    // A passive checkpoint that finds readers in the way does
                    // part of the work; the next one does the rest.
                    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                    {
                        tracing::debug!(error = %e, "a background WAL checkpoint");
                    }
                }
            })
            .map_err(|e| io_err(&self.path, e))?;
        self.conn().pragma_update(None, "wal_autocheckpoint", 0)?;
        *self.checkpointer.lock().unwrap_or_else(|p| p.into_inner()) = Some((tx, 0));
        Ok(())
    }

    fn count_commit(&self) {
        let mut guard = self.checkpointer.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((tx, n)) = guard.as_mut() {
            *n += 1;
            if *n >= CHECKPOINT_EVERY {
                *n = 0;
                // A checkpoint already pending covers this one too.
                let _ = tx.try_send(());
            }
        }
    }

    /// Opens `n` more connections that serve queries, so reads run in
    /// parallel with each other and with a write (WAL readers never block
    /// the writer). For long-lived processes with many readers: the server.
    pub fn with_readers(mut self, n: usize) -> Result<Self> {
        for _ in 0..n {
            let conn = Connection::open(&self.path)?;
            configure(&conn)?;
            conn.pragma_update(None, "query_only", true)?;
            self.readers.push(Mutex::new(conn));
        }
        Ok(self)
    }

    /// A connection for a query: a free reader if there is one, else the
    /// next in turn (or the writer's, without readers).
    pub(crate) fn read(&self) -> std::sync::MutexGuard<'_, Connection> {
        if self.readers.is_empty() {
            return self.conn();
        }
        let start = self
            .next_reader
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let n = self.readers.len();
        for i in 0..n {
            if let Ok(g) = self.readers[(start + i) % n].try_lock() {
                return g;
            }
        }
        self.readers[start % n]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// The latest `limit` events of a task (of one kind, if given), oldest
    /// first. The limit is literal (see `ready`).
    fn latest_events(
        &self,
        id: &TaskId,
        kind: Option<EventKind>,
        limit: usize,
    ) -> Result<Vec<Event>> {
        let conn = self.read();
        let only = kind
            .map(|k| format!("AND kind = '{}'", k.as_str()))
            .unwrap_or_default();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT seq, at, actor, kind, task, payload FROM events \
             WHERE task = ?1 {only} ORDER BY seq DESC LIMIT {limit}"
        ))?;
        let mut rows = stmt
            .query_map(params![id.as_str()], row_to_event)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.reverse();
        Ok(rows)
    }

    /// Stamps rows and events with `clock`'s time instead of the system's.
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// Sets how long `restore_from` waits for other processes (default 10 s).
    pub fn with_lock_wait(mut self, wait: Duration) -> Self {
        self.lock_wait = wait;
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Tells watchers a write has committed (see [`change_marker`]).
    fn announce(&self) {
        self.count_commit();
        let lock = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = lock.set_modified(std::time::SystemTime::now()) {
            // Followers (events --follow, the engine, the server) would miss
            // this commit until the next one.
            tracing::warn!(marker = %change_marker(&self.path).display(), error = %e, "announcing a commit");
        }
    }

    pub(crate) fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub(crate) fn row_to_task(r: &Row<'_>) -> rusqlite::Result<Task> {
    let parse_err = |i: usize, e: braid_core::Error| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
    };
    let id: String = r.get(0)?;
    let kind: String = r.get(3)?;
    let state: String = r.get(5)?;
    let parent: Option<String> = r.get(6)?;
    let labels: String = r.get(7)?;
    let gates: String = r.get(10)?;
    let lease_token: Option<String> = r.get(20)?;
    Ok(Task {
        id: TaskId::parse(&id).map_err(|e| parse_err(0, e))?,
        title: r.get(1)?,
        description: r.get(2)?,
        kind: TaskType::parse(&kind).map_err(|e| parse_err(3, e))?,
        priority: r.get::<_, i64>(4)? as u8,
        state: State::parse(&state).map_err(|e| parse_err(5, e))?,
        parent: parent
            .map(|p| TaskId::parse(&p))
            .transpose()
            .map_err(|e| parse_err(6, e))?,
        labels: json_list(&labels),
        assignee: r.get(8)?,
        acceptance: r.get(9)?,
        gates: json_list(&gates),
        agent: r.get(11)?,
        branch: r.get(12)?,
        created_at: r.get(13)?,
        updated_at: r.get(14)?,
        closed_at: r.get(15)?,
        close_reason: r.get(16)?,
        deps: Vec::new(),
        blockers: r.get::<_, i64>(17)? as u32,
        held_by: r.get::<_, i64>(18)? as u32,
        ready: r.get::<_, i64>(19)? != 0,
        lease: match lease_token {
            Some(token) => Some(braid_core::model::Lease {
                token,
                expires_at: r.get::<_, Option<i64>>(21)?.unwrap_or(0),
                attempt: r.get::<_, i64>(22)? as u32,
            }),
            None => None,
        },
    })
}

/// Runs a task query and fills in every task's dependencies with one query
/// per 500 tasks (never one per task).
pub(crate) fn load_tasks(
    conn: &Connection,
    sql: &str,
    params: &[&dyn rusqlite::ToSql],
) -> Result<Vec<Task>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut tasks = stmt
        .query_map(params, row_to_task)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    fill_deps(conn, &mut tasks)?;
    Ok(tasks)
}

pub(crate) fn fill_deps(conn: &Connection, tasks: &mut [Task]) -> Result<()> {
    const CHUNK: usize = 512;
    for chunk in tasks.chunks_mut(CHUNK) {
        // Placeholders in powers of two (padded by repeating an id), so a
        // handful of statements cover every size and stay prepared.
        let slots = chunk.len().next_power_of_two();
        let placeholders = vec!["?"; slots].join(",");
        let sql = format!(
            "SELECT from_id, to_id, kind FROM deps WHERE from_id IN ({placeholders}) ORDER BY from_id, to_id"
        );
        let mut stmt = conn.prepare_cached(&sql)?;
        let mut ids: Vec<&str> = chunk.iter().map(|t| t.id.as_str()).collect();
        let last = ids.last().copied().unwrap_or_default();
        ids.resize(slots, last);
        let mut by_id: std::collections::HashMap<String, Vec<Dep>> =
            std::collections::HashMap::new();
        let rows = stmt.query_map(rusqlite::params_from_iter(ids.iter()), |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        for row in rows {
            let (from, to, kind) = row?;
            let dep = Dep {
                id: TaskId::parse(&to)?,
                kind: DepKind::parse(&kind)?,
            };
            by_id.entry(from).or_default().push(dep);
        }
        for t in chunk.iter_mut() {
            t.deps = by_id.remove(t.id.as_str()).unwrap_or_default();
        }
    }
    Ok(())
}

fn row_to_event(r: &Row<'_>) -> rusqlite::Result<Event> {
    let kind: String = r.get(3)?;
    let task: Option<String> = r.get(4)?;
    let payload: String = r.get(5)?;
    Ok(Event {
        seq: r.get(0)?,
        at: r.get(1)?,
        actor: r.get(2)?,
        kind: EventKind::parse(&kind).unwrap_or(EventKind::Updated),
        task: task.and_then(|t| TaskId::parse(&t).ok()),
        payload: serde_json::from_str(&payload).unwrap_or(serde_json::Value::Null),
    })
}

/// Watches the change marker of the database at `db`: a ping for each
/// committed write of any process (see [`change_marker`]). The marker file
/// itself is watched, not its folder: the folder also holds the WAL, whose
/// every page write would wake the watcher (measured: ~40 wake-ups per
/// engine task). braid never deletes or replaces the marker while a store
/// is open (it is also the store's lock), so the watch holds.
pub fn watch(db: &Path) -> Result<Changes> {
    use notify::Watcher;
    let marker = change_marker(db);
    if !marker.exists() {
        // Created (empty) so there is something to watch; opening a store
        // creates it anyway.
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&marker)
            .map_err(|e| io_err(&marker, e))?;
    }
    let (tx, rx) = std::sync::mpsc::sync_channel::<()>(1);
    let mut w = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if let Ok(ev) = ev
            && matches!(
                ev.kind,
                notify::EventKind::Modify(_) | notify::EventKind::Create(_)
            )
        {
            // Full: a ping already waits, and it covers this write too.
            let _ = tx.try_send(());
        }
    })
    .map_err(|e| Error::backend_from("starting a file watcher", e))?;
    w.watch(&marker, notify::RecursiveMode::NonRecursive)
        .map_err(|e| Error::backend_from(format!("watching {}", marker.display()), e))?;
    Ok(Changes::new(rx, Some(Box::new(w))))
}

impl Store for SqliteStore {
    fn apply_all(&self, actor: &str, cmds: Vec<crate::Command>) -> Result<Vec<crate::Applied>> {
        crate::apply::check_names(actor, &cmds)?;
        let result = {
            let mut conn = self.conn();
            write::apply_all(&mut conn, actor, self.clock.now_ms(), cmds)
        };
        if result.is_ok() {
            self.announce();
        }
        result
    }

    fn note(&self, actor: &str, kind: EventKind, payload: serde_json::Value) -> Result<Event> {
        let event = {
            let mut conn = self.conn();
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let e = write::append_event(&tx, self.clock.now_ms(), actor, kind, None, payload)?;
            tx.commit()?;
            e
        };
        self.announce();
        Ok(event)
    }

    fn comments(&self, id: &TaskId, limit: usize) -> Result<Vec<Event>> {
        self.latest_events(id, Some(EventKind::Commented), limit)
    }

    fn task_events(&self, id: &TaskId, limit: usize) -> Result<Vec<Event>> {
        self.latest_events(id, None, limit)
    }

    fn task_usage(&self, id: &TaskId) -> Result<Vec<UsageRow>> {
        let conn = self.read();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {} FROM usage WHERE task = ?1 ORDER BY seq",
            crate::types::USAGE_COLS
        ))?;
        let rows = stmt
            .query_map(params![id.as_str()], |r| {
                Ok(UsageRow {
                    seq: r.get(0)?,
                    task: TaskId::trusted(r.get::<_, String>(1)?),
                    at: r.get(2)?,
                    agent: r.get(3)?,
                    attempt: r.get(4)?,
                    model: r.get(5)?,
                    session: r.get(6)?,
                    input_tokens: r.get(7)?,
                    output_tokens: r.get(8)?,
                    cache_read_tokens: r.get(9)?,
                    cache_write_tokens: r.get(10)?,
                    cost_usd: r.get(11)?,
                    turns: r.get(12)?,
                    duration_ms: r.get(13)?,
                    outcome: r.get(14)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    fn usage_totals(&self, q: &UsageQuery) -> Result<Vec<UsageTotal>> {
        let key = match q.by {
            UsageBy::Task => "task",
            UsageBy::Agent => "agent",
            UsageBy::Model => "coalesce(model, '')",
            UsageBy::Day => "date(at / 1000, 'unixepoch')",
        };
        let conn = self.read();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {key} AS k, {} FROM usage \
             WHERE (?1 IS NULL OR at >= ?1) AND (?2 IS NULL OR task = ?2) \
             GROUP BY k ORDER BY 7 DESC, k LIMIT {}",
            crate::types::USAGE_SUMS,
            q.limit
        ))?;
        let rows = stmt
            .query_map(params![q.since, q.task.as_ref().map(|t| t.as_str())], |r| {
                Ok(UsageTotal {
                    key: r.get(0)?,
                    attempts: r.get(1)?,
                    input_tokens: r.get(2)?,
                    output_tokens: r.get(3)?,
                    cache_read_tokens: r.get(4)?,
                    cache_write_tokens: r.get(5)?,
                    cost_usd: r.get(6)?,
                    unpriced: r.get(7)?,
                    duration_ms: r.get(8)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    fn import(&self, actor: &str, batch: ImportBatch, opts: ImportOptions) -> Result<ImportReport> {
        crate::apply::check_names(actor, &[])?;
        let result = {
            let mut conn = self.conn();
            import::import(&mut conn, actor, batch, opts, self.clock.now_ms())
        };
        if result.is_ok() {
            self.announce();
        }
        result
    }

    fn task(&self, id: &TaskId) -> Result<Task> {
        let conn = self.read();
        let sql = format!("SELECT {TASK_COLS} FROM tasks WHERE id = ?1");
        load_tasks(&conn, &sql, &[&id.as_str()])?
            .pop()
            .ok_or_else(|| braid_core::Error::NotFound(id.clone()).into())
    }

    fn list(&self, f: &ListFilter) -> Result<Vec<Task>> {
        let conn = self.read();
        let mut clauses: Vec<String> = Vec::new();
        let mut args: Vec<Box<dyn rusqlite::ToSql>> = Vec::new();
        if !f.states.is_empty() {
            let ph = vec!["?"; f.states.len()].join(",");
            clauses.push(format!("state IN ({ph})"));
            args.extend(
                f.states
                    .iter()
                    .map(|s| Box::new(s.as_str()) as Box<dyn rusqlite::ToSql>),
            );
        }
        if !f.kinds.is_empty() {
            let ph = vec!["?"; f.kinds.len()].join(",");
            clauses.push(format!("type IN ({ph})"));
            args.extend(
                f.kinds
                    .iter()
                    .map(|k| Box::new(k.as_str()) as Box<dyn rusqlite::ToSql>),
            );
        }
        if let Some(l) = &f.label {
            clauses.push("id IN (SELECT task FROM labels WHERE label = ?)".into());
            args.push(Box::new(l.clone()));
        }
        if let Some(p) = &f.parent {
            clauses.push("parent = ?".into());
            args.push(Box::new(p.as_str().to_owned()));
        }
        if let Some(a) = &f.assignee {
            clauses.push("assignee = ?".into());
            args.push(Box::new(a.clone()));
        }
        if let Some(r) = f.ready {
            clauses.push("ready = ?".into());
            args.push(Box::new(r as i64));
        }
        let mut sql = format!("SELECT {TASK_COLS} FROM tasks");
        if !clauses.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&clauses.join(" AND "));
        }
        sql.push_str(" ORDER BY priority, created_at, rowid");
        if let Some(limit) = f.limit {
            sql.push_str(&format!(" LIMIT {limit}"));
        }
        let refs: Vec<&dyn rusqlite::ToSql> = args.iter().map(|b| b.as_ref()).collect();
        load_tasks(&conn, &sql, &refs)
    }

    fn ready(&self, limit: usize) -> Result<Vec<Task>> {
        let conn = self.read();
        // The limit is part of the text, not a bound parameter: SQLite
        // (built with STAT4) re-prepared this statement on every call with a
        // bound LIMIT (seen in a profile of GET /api/ready: the parser in
        // every step). Limits take few values, so the statements stay cached.
        let sql = format!(
            "SELECT {TASK_COLS} FROM tasks INDEXED BY tasks_ready WHERE ready = 1 \
             ORDER BY priority, created_at, rowid LIMIT {limit}"
        );
        load_tasks(&conn, &sql, &[])
    }

    fn ready_heads(&self, limit: usize) -> Result<Vec<(TaskId, Option<String>)>> {
        let conn = self.read();
        // A literal limit (see `ready`).
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT id, agent FROM tasks INDEXED BY tasks_ready WHERE ready = 1 \
             ORDER BY priority, created_at, rowid LIMIT {limit}"
        ))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((TaskId::trusted(r.get(0)?), r.get::<_, Option<String>>(1)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    fn ids_with_prefix(&self, prefix: &str, limit: usize) -> Result<Vec<TaskId>> {
        let conn = self.read();
        // A range of the primary key: ids are ASCII, all below U+007F.
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT id FROM tasks WHERE id >= ?1 AND id < ?1 || char(127) ORDER BY id LIMIT {limit}"
        ))?;
        let rows = stmt
            .query_map([prefix], |r| Ok(TaskId::trusted(r.get(0)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    fn why_blocked(&self, id: &TaskId) -> Result<Vec<String>> {
        let mut conn = self.read();
        let tx = conn.transaction()?;
        let mut g = write::SqlGraph { tx: &tx };
        let why = braid_core::graph::why_blocked(&mut g, id)?;
        tx.finish()?;
        Ok(why)
    }

    fn subtree(&self, root: Option<&TaskId>) -> Result<Vec<TreeRow>> {
        let conn = self.read();
        let map = |r: &Row<'_>| -> rusqlite::Result<TreeRow> {
            let text = |i: usize| -> rusqlite::Result<&str> { Ok(r.get_ref(i)?.as_str()?) };
            let bad = |i: usize, e: braid_core::Error| {
                rusqlite::Error::FromSqlConversionFailure(
                    i,
                    rusqlite::types::Type::Text,
                    Box::new(e),
                )
            };
            Ok(TreeRow {
                id: TaskId::trusted(r.get(0)?),
                parent: r.get::<_, Option<String>>(1)?.map(TaskId::trusted),
                title: r.get(2)?,
                kind: TaskType::parse(text(3)?).map_err(|e| bad(3, e))?,
                state: State::parse(text(4)?).map_err(|e| bad(4, e))?,
                priority: r.get::<_, i64>(5)? as u8,
                ready: r.get::<_, i64>(6)? != 0,
            })
        };
        let all = |conn: &Connection| -> Result<Vec<TreeRow>> {
            let mut stmt = conn.prepare_cached(
                "SELECT id, parent, title, type, state, priority, ready FROM tasks ORDER BY rowid",
            )?;
            Ok(stmt
                .query_map([], map)?
                .collect::<rusqlite::Result<Vec<_>>>()?)
        };
        let Some(root) = root else {
            return all(&conn);
        };
        // Walking the parent index costs a few lookups per row; once the
        // subtree is a good part of the project, one scan is cheaper. So
        // walk up to a tenth of the tasks, and past that, scan.
        let total: i64 = conn
            .query_row("SELECT value FROM counters WHERE name = 'total'", [], |r| {
                r.get(0)
            })
            .optional()?
            .unwrap_or(0);
        let limit = (total / 10).max(10_000);
        // SQLite evaluates recursive CTEs with a queue, not a stack.
        let mut stmt = conn.prepare_cached(
            "WITH RECURSIVE sub(id, parent, title, type, state, priority, ready) AS ( \
             SELECT id, parent, title, type, state, priority, ready FROM tasks WHERE id = ?1 \
             UNION ALL SELECT t.id, t.parent, t.title, t.type, t.state, t.priority, t.ready \
             FROM sub JOIN tasks t ON t.parent = sub.id) SELECT * FROM sub LIMIT ?2",
        )?;
        let rows = stmt
            .query_map(params![root.as_str(), limit], map)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        if rows.is_empty() {
            return Err(braid_core::Error::NotFound(root.clone()).into());
        }
        if (rows.len() as i64) < limit {
            return Ok(rows);
        }
        drop(rows);
        let everything = all(&conn)?;
        // Children as one flat array (CSR), not a Vec per task.
        let mut index: foldhash::HashMap<&TaskId, u32> = foldhash::HashMap::default();
        index.reserve(everything.len());
        index.extend(
            everything
                .iter()
                .enumerate()
                .map(|(i, r)| (&r.id, i as u32)),
        );
        let parent_of: Vec<Option<u32>> = everything
            .iter()
            .map(|r| r.parent.as_ref().and_then(|p| index.get(p).copied()))
            .collect();
        let start = index.get(root).copied();
        drop(index);
        let mut offsets = vec![0u32; everything.len() + 1];
        for p in parent_of.iter().flatten() {
            offsets[*p as usize + 1] += 1;
        }
        for i in 0..everything.len() {
            offsets[i + 1] += offsets[i];
        }
        let mut fill = offsets.clone();
        let mut kids = vec![0u32; offsets[everything.len()] as usize];
        for (c, p) in parent_of.iter().enumerate() {
            if let Some(p) = p {
                kids[fill[*p as usize] as usize] = c as u32;
                fill[*p as usize] += 1;
            }
        }
        let mut keep = vec![false; everything.len()];
        let mut queue: std::collections::VecDeque<u32> = start.into_iter().collect();
        while let Some(i) = queue.pop_front() {
            keep[i as usize] = true;
            let (from, to) = (
                offsets[i as usize] as usize,
                offsets[i as usize + 1] as usize,
            );
            queue.extend(kids[from..to].iter().copied());
        }
        Ok(everything
            .into_iter()
            .zip(keep)
            .filter_map(|(r, k)| k.then_some(r))
            .collect())
    }

    fn health(&self) -> Result<Health> {
        let conn = self.read();
        let mut stmt = conn.prepare_cached("SELECT name, value FROM counters")?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(Health::from_counters(
            rows.iter().map(|(k, v)| (k.as_str(), *v)),
        ))
    }

    fn deps_of(&self, ids: &[TaskId]) -> Result<Vec<(TaskId, TaskId, DepKind)>> {
        let conn = self.read();
        let mut stmt = conn.prepare_cached("SELECT to_id, kind FROM deps WHERE from_id = ?1")?;
        let mut out = Vec::new();
        for id in ids {
            let rows = stmt.query_map([id.as_str()], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })?;
            for row in rows {
                let (to, kind) = row?;
                out.push((id.clone(), TaskId::parse(&to)?, DepKind::parse(&kind)?));
            }
        }
        Ok(out)
    }

    fn set_setting(&self, key: &str, value: &str) -> Result<()> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [key, value],
        )?;
        Ok(())
    }

    fn dependents_of(&self, id: &TaskId, limit: usize) -> Result<Vec<(TaskId, DepKind)>> {
        let conn = self.read();
        let mut stmt = conn.prepare_cached(
            "SELECT from_id, kind FROM deps WHERE to_id = ?1 ORDER BY from_id LIMIT ?2",
        )?;
        let rows = stmt
            .query_map(rusqlite::params![id.as_str(), limit as i64], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter()
            .map(|(from, kind)| Ok((TaskId::parse(&from)?, DepKind::parse(&kind)?)))
            .collect()
    }

    fn blocks_edges(&self) -> Result<Vec<(TaskId, TaskId)>> {
        let conn = self.read();
        let mut stmt =
            conn.prepare_cached("SELECT from_id, to_id FROM deps WHERE kind = 'blocks'")?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter()
            .map(|(a, b)| Ok((TaskId::parse(&a)?, TaskId::parse(&b)?)))
            .collect()
    }

    fn events(&self, after: i64, limit: usize) -> Result<Vec<Event>> {
        let conn = self.read();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT seq, at, actor, kind, task, payload FROM events WHERE seq > ?1 ORDER BY seq LIMIT {limit}"
        ))?;
        let rows = stmt
            .query_map(params![after], row_to_event)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    fn expired_leases(&self, now: i64, limit: usize) -> Result<Vec<(TaskId, String)>> {
        let conn = self.read();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT id, lease_token FROM tasks WHERE lease_expires IS NOT NULL AND lease_expires < ?1 \
             AND state = 'in_progress' ORDER BY lease_expires LIMIT {limit}"
        ))?;
        let rows = stmt
            .query_map(params![now], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter()
            .map(|(id, t)| Ok((TaskId::parse(&id)?, t)))
            .collect()
    }

    fn next_lease_expiry(&self) -> Result<Option<i64>> {
        let conn = self.read();
        Ok(conn
            .query_row(
                "SELECT min(lease_expires) FROM tasks WHERE lease_expires IS NOT NULL AND state = 'in_progress'",
                [],
                |r| r.get::<_, Option<i64>>(0),
            )
            .optional()?
            .flatten())
    }

    fn last_seq(&self) -> Result<i64> {
        let conn = self.read();
        let seq: Option<i64> = conn
            .prepare_cached("SELECT max(seq) FROM events")?
            .query_row([], |r| r.get(0))
            .optional()?
            .flatten();
        Ok(seq.unwrap_or(0))
    }

    fn export(
        &self,
        with_events: bool,
        sink: &mut dyn FnMut(ExportItem) -> Result<()>,
    ) -> Result<()> {
        let conn = self.read();
        // One read transaction: a consistent view while others write.
        conn.execute_batch("BEGIN")?;
        let result = (|| {
            let sql = format!("SELECT {TASK_COLS} FROM tasks ORDER BY rowid");
            let mut stmt = conn.prepare(&sql)?;
            let mut rows = stmt.query([])?;
            let mut batch = Vec::with_capacity(1000);
            loop {
                let row = rows.next()?;
                if let Some(r) = row {
                    batch.push(row_to_task(r)?);
                }
                if batch.len() == 1000 || (row.is_none() && !batch.is_empty()) {
                    fill_deps(&conn, &mut batch)?;
                    for t in batch.drain(..) {
                        sink(ExportItem::Task(t))?;
                    }
                }
                if row.is_none() {
                    break;
                }
            }
            if with_events {
                let mut stmt = conn.prepare(
                    "SELECT seq, at, actor, kind, task, payload FROM events ORDER BY seq",
                )?;
                let mut rows = stmt.query([])?;
                while let Some(r) = rows.next()? {
                    sink(ExportItem::Event(row_to_event(r)?))?;
                }
            }
            Ok(())
        })();
        conn.execute_batch("COMMIT")?;
        result
    }

    fn backup_to(&self, dest: &Path) -> Result<()> {
        if dest.exists() {
            return Err(Error::Invalid(format!("{} already exists", dest.display())));
        }
        let conn = self.conn();
        let dest_str = dest
            .to_str()
            .ok_or_else(|| Error::Invalid(format!("{} is not valid UTF-8", dest.display())))?;
        // VACUUM INTO reads one consistent snapshot while others keep writing.
        conn.execute("VACUUM INTO ?1", [dest_str])?;
        File::open(dest)
            .and_then(|f| f.sync_all())
            .map_err(|e| io_err(dest, e))?;
        Ok(())
    }

    /// Woken by every committed write of every process on this file.
    fn changes(&self) -> Result<Changes> {
        watch(&self.path)
    }

    fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    fn restore_from(&self, src: &Path, keep_current_at: &Path) -> Result<()> {
        check_braid_db(src)?;
        let lock = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let lp = lock_path(&self.path);
        // Upgrade our shared lock to exclusive: wait (bounded) for every
        // other braid process on this database to finish.
        lock.unlock().map_err(|e| io_err(&lp, e))?;
        let got = lock_with_backoff(&lock, true, self.lock_wait).map_err(|e| io_err(&lp, e))?;
        let result = if got {
            (|| -> Result<()> {
                let mut conn = self.conn();
                let keep = keep_current_at.to_str().ok_or_else(|| {
                    Error::Invalid(format!("{} is not valid UTF-8", keep_current_at.display()))
                })?;
                conn.execute("VACUUM INTO ?1", [keep])?;
                File::open(keep_current_at)
                    .and_then(|f| f.sync_all())
                    .map_err(|e| io_err(keep_current_at, e))?;
                conn.restore(
                    rusqlite::MAIN_DB,
                    src,
                    None::<fn(rusqlite::backup::Progress)>,
                )?;
                migrate(&mut conn)
            })()
        } else {
            Err(Error::Locked(format!(
                "other braid processes are using {}; stop them (or wait) and retry",
                self.path.display()
            )))
        };
        lock.unlock().map_err(|e| io_err(&lp, e))?;
        lock_with_backoff(&lock, false, LOCK_WAIT).map_err(|e| io_err(&lp, e))?;
        result
    }
}

/// Refuses a file that is not a braid database, before anything changes.
fn check_braid_db(src: &Path) -> Result<()> {
    let bad =
        |why: String| Error::Invalid(format!("{}: not a braid database ({why})", src.display()));
    if !src.is_file() {
        return Err(bad("no such file".into()));
    }
    let conn = Connection::open_with_flags(src, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| bad(e.to_string()))?;
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(|e| bad(e.to_string()))?;
    if version < 1 || version as usize > MIGRATIONS.len() {
        return Err(bad(format!("schema version {version}")));
    }
    conn.query_row("SELECT count(*) FROM tasks", [], |r| r.get::<_, i64>(0))
        .map_err(|e| bad(e.to_string()))?;
    Ok(())
}

/// Whether `err`, or an error under it, says a SQLite file is damaged:
/// `SQLITE_CORRUPT` ("database disk image is malformed") or
/// `SQLITE_NOTADB` ("file is not a database"). Such a file gives wrong or
/// partial answers; only a snapshot (or salvage) brings its work back.
pub fn is_damage(err: &(dyn std::error::Error + 'static)) -> bool {
    let damaged = |code: rusqlite::ErrorCode| {
        matches!(
            code,
            rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase
        )
    };
    std::iter::successors(Some(err), |e| e.source()).any(|e| {
        if let Some(rusqlite::Error::SqliteFailure(f, _)) = e.downcast_ref::<rusqlite::Error>() {
            return damaged(f.code);
        }
        e.downcast_ref::<rusqlite::ffi::Error>()
            .is_some_and(|f| damaged(f.code))
    })
}

/// What [`check_file`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileCheck {
    /// What `PRAGMA quick_check` reported (at most the number asked for),
    /// or why the file could not be read as a database. Empty: sound.
    pub problems: Vec<String>,
    /// The file's schema version (0 when it could not be read).
    pub schema_version: i64,
    /// The newest schema version this braid knows.
    pub schema_known: i64,
}

/// Checks the database at `path` without changing it: its schema version
/// and `PRAGMA quick_check`, which reads every page (O(size of the file):
/// for `braid doctor`, never for a command's own reads). Damage is a
/// problem found, not an error; an error is a file that could not be
/// opened at all (missing, unreadable, held by a restore).
pub fn check_file(path: &Path, max_problems: usize) -> Result<FileCheck> {
    let known = MIGRATIONS.len() as i64;
    if !path.is_file() {
        return Err(Error::io(
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such database"),
        ));
    }
    // Shared, as every open is: a restore in progress is waited for, not
    // read half-way through.
    let lp = lock_path(path);
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&lp)
        .map_err(|e| io_err(&lp, e))?;
    if !lock_with_backoff(&lock, false, LOCK_WAIT).map_err(|e| io_err(&lp, e))? {
        return Err(Error::Locked(format!(
            "{} is held by a snapshot restore; try again when it finishes",
            lp.display()
        )));
    }
    let found = |problems: Vec<String>, schema_version: i64| FileCheck {
        problems,
        schema_version,
        schema_known: known,
    };
    let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let version = match conn.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0)) {
        Ok(v) => v,
        Err(e) if is_damage(&e) => return Ok(found(vec![e.to_string()], 0)),
        Err(e) => return Err(e.into()),
    };
    let rows = (|| -> rusqlite::Result<Vec<String>> {
        let mut stmt = conn.prepare(&format!("PRAGMA quick_check({})", max_problems.max(1)))?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        rows.collect()
    })();
    let problems = match rows {
        Ok(rows) if rows.len() == 1 && rows[0] == "ok" => Vec::new(),
        Ok(rows) => rows,
        Err(e) if is_damage(&e) => vec![e.to_string()],
        Err(e) => return Err(e.into()),
    };
    Ok(found(problems, version))
}

/// Puts the snapshot `src` in place of the database at `db` when that
/// database cannot be read (it is damaged), so [`Store::restore_from`],
/// which copies the current database aside through SQLite, cannot run: the
/// damaged file (and its WAL) is moved to `keep_damaged_at` untouched, and
/// a copy of `src`, switched to WAL mode and brought to the current
/// schema, is synced and renamed into place. All of it under the exclusive
/// lock a restore takes, so no braid process has the file open meanwhile.
pub fn restore_over_damaged(
    db: &Path,
    src: &Path,
    keep_damaged_at: &Path,
    wait: Duration,
) -> Result<()> {
    check_braid_db(src)?;
    let lp = lock_path(db);
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&lp)
        .map_err(|e| io_err(&lp, e))?;
    if !lock_with_backoff(&lock, true, wait).map_err(|e| io_err(&lp, e))? {
        return Err(Error::Locked(format!(
            "other braid processes are using {}; stop them (or wait) and retry",
            db.display()
        )));
    }
    let dir = db
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = db
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "braid.db".into());
    let tmp = dir.join(format!(".{name}.restore.tmp"));
    let side = |p: &Path, suffix: &str| {
        let mut s = p.as_os_str().to_owned();
        s.push(suffix);
        PathBuf::from(s)
    };
    let remove_tmp = || {
        for p in [tmp.clone(), side(&tmp, "-wal"), side(&tmp, "-shm")] {
            if let Err(e) = std::fs::remove_file(&p)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(path = %p.display(), error = %e, "removing a restore's temporary file");
            }
        }
    };
    remove_tmp();
    // The new file first, beside the old: nothing is moved until it is
    // complete and durable.
    let prepared = (|| -> Result<()> {
        std::fs::copy(src, &tmp).map_err(|e| io_err(&tmp, e))?;
        let mut conn = Connection::open(&tmp)?;
        configure(&conn)?;
        let mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::backend(format!(
                "could not switch {} to WAL mode",
                tmp.display()
            )));
        }
        migrate(&mut conn)?;
        conn.close().map_err(|(_, e)| db_err(e))?;
        File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| io_err(&tmp, e))
    })();
    if let Err(e) = prepared {
        remove_tmp();
        return Err(e);
    }
    let moved = (|| -> Result<()> {
        std::fs::rename(db, keep_damaged_at).map_err(|e| io_err(keep_damaged_at, e))?;
        let wal = side(db, "-wal");
        if wal.exists() {
            let to = side(keep_damaged_at, "-wal");
            std::fs::rename(&wal, &to).map_err(|e| io_err(&to, e))?;
        }
        let shm = side(db, "-shm");
        if let Err(e) = std::fs::remove_file(&shm)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            return Err(io_err(&shm, e));
        }
        Ok(())
    })();
    let placed = moved.and_then(|()| std::fs::rename(&tmp, db).map_err(|e| io_err(db, e)));
    if let Err(e) = placed {
        // Put the damaged file (and its WAL) back rather than leave no
        // database at all.
        for (from, to) in [
            (keep_damaged_at.to_owned(), db.to_owned()),
            (side(keep_damaged_at, "-wal"), side(db, "-wal")),
        ] {
            if from.exists()
                && !to.exists()
                && let Err(back) = std::fs::rename(&from, &to)
            {
                tracing::warn!(from = %from.display(), to = %to.display(), error = %back, "moving the damaged database back");
            }
        }
        remove_tmp();
        return Err(e);
    }
    for d in [dir, keep_damaged_at.parent().unwrap_or(dir)] {
        crate::fsx::sync_dir(d).map_err(|e| io_err(d, e))?;
    }
    lock.unlock().map_err(|e| io_err(&lp, e))?;
    Ok(())
}
