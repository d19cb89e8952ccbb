//! braid-store: the [`Store`] trait — the work graph's single write path and
//! its queries — with a contract test suite every backend runs, and the
//! SQLite backend. Only this crate knows SQL.

mod apply;
pub use apply::CLOSE_EPICS;
mod changes;
pub mod contract;
pub mod fsx;
mod import_check;
mod json;
pub mod postgres;
pub mod sqlite;
mod types;

pub use changes::Changes;
pub use postgres::PgStore;
pub use sqlite::SqliteStore;
pub use sqlite::cache_index;
pub use types::*;

use std::path::Path;

use braid_core::{DepKind, Event, EventKind, Health, SharedClock, Task, TaskId};

/// A place tasks live. Every mutation goes through [`Store::apply`], which
/// validates it against the core state machine, updates rows, maintains
/// readiness and health incrementally and appends events — in one
/// transaction. Implementations hold no backend types in this interface.
pub trait Store: Send + Sync {
    /// The single write path: applies commands in order in one
    /// transaction, all or nothing.
    fn apply_all(&self, actor: &str, cmds: Vec<Command>) -> Result<Vec<Applied>>;

    /// Applies one command.
    fn apply(&self, actor: &str, cmd: Command) -> Result<Applied> {
        Ok(self
            .apply_all(actor, vec![cmd])?
            .pop()
            .expect("one command, one result"))
    }

    /// Appends an event about no task in particular (a file sync rejected a
    /// file, say). Changes no task.
    fn note(&self, actor: &str, kind: EventKind, payload: serde_json::Value) -> Result<Event>;

    /// The latest `limit` comments on a task (`commented` events, appended
    /// with `Command::Record`), oldest first.
    fn comments(&self, id: &TaskId, limit: usize) -> Result<Vec<Event>>;

    /// The latest `limit` events of one task, oldest first.
    fn task_events(&self, id: &TaskId, limit: usize) -> Result<Vec<Event>>;

    /// One task's attempts in the cost ledger, oldest first.
    fn task_usage(&self, id: &TaskId) -> Result<Vec<UsageRow>>;

    /// The cost ledger summed by task, agent, model or day, the costliest
    /// first.
    fn usage_totals(&self, q: &UsageQuery) -> Result<Vec<UsageTotal>>;

    /// Imports a batch all-or-nothing (or, with `skip_invalid`, everything
    /// but the entries reported as skipped).
    fn import(&self, actor: &str, batch: ImportBatch, opts: ImportOptions) -> Result<ImportReport>;

    fn task(&self, id: &TaskId) -> Result<Task>;
    fn list(&self, filter: &ListFilter) -> Result<Vec<Task>>;
    /// Ready tasks, highest priority (lowest number) first, oldest first.
    fn ready(&self, limit: usize) -> Result<Vec<Task>>;
    /// The ready queue's head as (id, preferred agent) only: what a
    /// scheduler needs to pick work, without loading whole tasks.
    fn ready_heads(&self, limit: usize) -> Result<Vec<(TaskId, Option<String>)>> {
        Ok(self
            .ready(limit)?
            .into_iter()
            .map(|t| (t.id, t.agent))
            .collect())
    }
    /// Ids that start with `prefix`, in id order, at most `limit`: an index
    /// range, for resolving an id typed short.
    fn ids_with_prefix(&self, prefix: &str, limit: usize) -> Result<Vec<TaskId>>;
    /// What keeps a task from being ready, in words.
    fn why_blocked(&self, id: &TaskId) -> Result<Vec<String>>;
    /// Light rows of the subtree under `root` (the whole forest for `None`),
    /// parents before children.
    fn subtree(&self, root: Option<&TaskId>) -> Result<Vec<TreeRow>>;
    fn health(&self) -> Result<Health>;
    /// The dependencies of the given tasks, as `(from, to, kind)`: from
    /// depends on to. Costs one index lookup per id.
    fn deps_of(&self, ids: &[TaskId]) -> Result<Vec<(TaskId, TaskId, DepKind)>>;
    /// The tasks that depend on `id` (any kind), as `(from, kind)` in id
    /// order; at most `limit`. One index range read.
    fn dependents_of(&self, id: &TaskId, limit: usize) -> Result<Vec<(TaskId, DepKind)>>;
    /// Sets a project setting the write path reads (e.g.
    /// [`CLOSE_EPICS`]).
    fn set_setting(&self, key: &str, value: &str) -> Result<()>;
    /// Every `blocks` edge `(from, to)`: from depends on to.
    fn blocks_edges(&self) -> Result<Vec<(TaskId, TaskId)>>;
    fn events(&self, after: i64, limit: usize) -> Result<Vec<Event>>;
    fn last_seq(&self) -> Result<i64>;
    /// Claims whose lease expired before `now` (ms), oldest first, with
    /// their tokens, for rescue.
    fn expired_leases(&self, now: i64, limit: usize) -> Result<Vec<(TaskId, String)>>;
    /// When the next lease expires, if any (to set a timer, not to poll).
    fn next_lease_expiry(&self) -> Result<Option<i64>>;
    /// Streams every task (with deps) in creation order, then, when asked,
    /// every event.
    fn export(
        &self,
        with_events: bool,
        sink: &mut dyn FnMut(ExportItem) -> Result<()>,
    ) -> Result<()>;
    /// Writes a consistent copy of the whole database to `dest`, safe while
    /// others write. `dest` must not exist.
    fn backup_to(&self, dest: &Path) -> Result<()>;
    /// Replaces the database's content with the copy at `src`, first saving
    /// the current content to `keep_current_at`, while no other process uses
    /// the database.
    fn restore_from(&self, src: &Path, keep_current_at: &Path) -> Result<()>;

    /// A ping each time a write may have committed, by this process or any
    /// other (on PostgreSQL: any node), coalesced, for as long as the feed
    /// lives. Start it before reading what you have not seen yet, so
    /// nothing written in between is missed.
    fn changes(&self) -> Result<Changes>;

    /// The store's clock (ms since the epoch): what it stamps on rows and
    /// events, and what lease expiries are measured against.
    fn now_ms(&self) -> i64;
}

/// A store on either backend: a project's SQLite file or a PostgreSQL
/// database shared by several nodes.
pub enum AnyStore {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

impl AnyStore {
    /// The SQLite store, for what only a file can do (snapshots, WAL
    /// checkpoints, reader connections).
    pub fn sqlite(&self) -> Option<&SqliteStore> {
        match self {
            AnyStore::Sqlite(s) => Some(s),
            AnyStore::Postgres(_) => None,
        }
    }

    /// Stamps rows and events with `clock`'s time.
    pub fn with_clock(self, clock: SharedClock) -> AnyStore {
        match self {
            AnyStore::Sqlite(s) => AnyStore::Sqlite(s.with_clock(clock)),
            AnyStore::Postgres(s) => AnyStore::Postgres(s.with_clock(clock)),
        }
    }
}

macro_rules! delegate {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            AnyStore::Sqlite($s) => $e,
            AnyStore::Postgres($s) => $e,
        }
    };
}

impl Store for AnyStore {
    fn apply_all(&self, actor: &str, cmds: Vec<Command>) -> Result<Vec<Applied>> {
        delegate!(self, s => s.apply_all(actor, cmds))
    }
    fn note(&self, actor: &str, kind: EventKind, payload: serde_json::Value) -> Result<Event> {
        delegate!(self, s => s.note(actor, kind, payload))
    }
    fn comments(&self, id: &TaskId, limit: usize) -> Result<Vec<Event>> {
        delegate!(self, s => s.comments(id, limit))
    }
    fn task_events(&self, id: &TaskId, limit: usize) -> Result<Vec<Event>> {
        delegate!(self, s => s.task_events(id, limit))
    }
    fn task_usage(&self, id: &TaskId) -> Result<Vec<UsageRow>> {
        delegate!(self, s => s.task_usage(id))
    }
    fn usage_totals(&self, q: &UsageQuery) -> Result<Vec<UsageTotal>> {
        delegate!(self, s => s.usage_totals(q))
    }
    fn import(&self, actor: &str, batch: ImportBatch, opts: ImportOptions) -> Result<ImportReport> {
        delegate!(self, s => s.import(actor, batch, opts))
    }
    fn task(&self, id: &TaskId) -> Result<Task> {
        delegate!(self, s => s.task(id))
    }
    fn list(&self, filter: &ListFilter) -> Result<Vec<Task>> {
        delegate!(self, s => s.list(filter))
    }
    fn ready(&self, limit: usize) -> Result<Vec<Task>> {
        delegate!(self, s => s.ready(limit))
    }
    fn ready_heads(&self, limit: usize) -> Result<Vec<(TaskId, Option<String>)>> {
        delegate!(self, s => s.ready_heads(limit))
    }
    fn ids_with_prefix(&self, prefix: &str, limit: usize) -> Result<Vec<TaskId>> {
        delegate!(self, s => s.ids_with_prefix(prefix, limit))
    }
    fn why_blocked(&self, id: &TaskId) -> Result<Vec<String>> {
        delegate!(self, s => s.why_blocked(id))
    }
    fn subtree(&self, root: Option<&TaskId>) -> Result<Vec<TreeRow>> {
        delegate!(self, s => s.subtree(root))
    }
    fn health(&self) -> Result<Health> {
        delegate!(self, s => s.health())
    }
    fn deps_of(&self, ids: &[TaskId]) -> Result<Vec<(TaskId, TaskId, DepKind)>> {
        delegate!(self, s => s.deps_of(ids))
    }
    fn dependents_of(&self, id: &TaskId, limit: usize) -> Result<Vec<(TaskId, DepKind)>> {
        delegate!(self, s => s.dependents_of(id, limit))
    }
    fn set_setting(&self, key: &str, value: &str) -> Result<()> {
        delegate!(self, s => s.set_setting(key, value))
    }
    fn blocks_edges(&self) -> Result<Vec<(TaskId, TaskId)>> {
        delegate!(self, s => s.blocks_edges())
    }
    fn events(&self, after: i64, limit: usize) -> Result<Vec<Event>> {
        delegate!(self, s => s.events(after, limit))
    }
    fn last_seq(&self) -> Result<i64> {
        delegate!(self, s => s.last_seq())
    }
    fn expired_leases(&self, now: i64, limit: usize) -> Result<Vec<(TaskId, String)>> {
        delegate!(self, s => s.expired_leases(now, limit))
    }
    fn next_lease_expiry(&self) -> Result<Option<i64>> {
        delegate!(self, s => s.next_lease_expiry())
    }
    fn export(
        &self,
        with_events: bool,
        sink: &mut dyn FnMut(ExportItem) -> Result<()>,
    ) -> Result<()> {
        delegate!(self, s => s.export(with_events, sink))
    }
    fn backup_to(&self, dest: &Path) -> Result<()> {
        delegate!(self, s => s.backup_to(dest))
    }
    fn restore_from(&self, src: &Path, keep_current_at: &Path) -> Result<()> {
        delegate!(self, s => s.restore_from(src, keep_current_at))
    }
    fn changes(&self) -> Result<Changes> {
        delegate!(self, s => s.changes())
    }
    fn now_ms(&self) -> i64 {
        delegate!(self, s => s.now_ms())
    }
}
