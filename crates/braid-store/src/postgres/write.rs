//! The single write path on PostgreSQL: each batch of commands runs in one
//! transaction that first takes the writers' advisory lock (shared for
//! claims and the ends of claims, see [`Writers`]); the logic of each
//! command is [`crate::apply`]'s, over the rows here.
//!
//! A batch costs a handful of round trips whatever its size. The rows the
//! commands name (and the tasks that depend on them) are read in one go
//! before the first command; a run of claims of "the next ready task" takes
//! its heads with one locking query; every change is made to the rows in
//! memory and written back at the end: one statement for the rows, then one
//! for the events, counters and the write's record, sent with the COMMIT.
//! Statements that other reads depend on (new rows, edges, parents, labels)
//! go out at once, so a query by anything but a row's id always sees this
//! transaction's changes.

use std::collections::{HashMap, VecDeque};

use braid_core::graph::{GraphTx, Node};
use braid_core::model::Lease;
use braid_core::{
    Dep, DepKind, Event, EventKind, HealthDelta, NewTask, State, Task, TaskId, TaskType,
};
use serde_json::{Value, json};
use tokio_postgres::types::ToSql;

use super::conn::{Conn, LOG_LOCK, Param, Writers};
use super::{TASK_COLS, row_to_task};
use crate::apply::{self, Field, LeaseRow, WriteTx, new_lease_token};
use crate::json::{json_list, json_strings};
use crate::{Applied, Command, Error, Result};

/// A task row as this transaction sees it.
struct Row {
    /// The row's columns (`lease` is rebuilt from the three below on load).
    task: Task,
    attempt: i64,
    token: Option<String>,
    expires: Option<i64>,
    /// Changed since read (or since the last write-back).
    dirty: bool,
}

impl Row {
    fn node(&self) -> Node {
        Node {
            kind: self.task.kind,
            state: self.task.state,
            blockers: self.task.blockers,
            held_by: self.task.held_by,
        }
    }

    fn snapshot(&self) -> Task {
        let mut t = self.task.clone();
        t.lease = self.token.clone().map(|token| Lease {
            token,
            expires_at: self.expires.unwrap_or(0),
            attempt: self.attempt as u32,
        });
        t
    }
}

/// An event appended in this transaction, numbered when written.
struct Pending {
    at: i64,
    actor: String,
    kind: EventKind,
    task: Option<String>,
    payload: String,
}

/// The select list of a whole row with its dependencies (tasks aliased `t`).
fn row_select() -> String {
    row_select_of("t")
}

/// [`row_select`] for a row source named `alias`.
fn row_select_of(alias: &str) -> String {
    format!(
        "{TASK_COLS}, \
         ARRAY(SELECT x.to_id FROM deps x WHERE x.from_id = {alias}.id ORDER BY x.to_id), \
         ARRAY(SELECT x.kind FROM deps x WHERE x.from_id = {alias}.id ORDER BY x.to_id)"
    )
}

/// A query reading whole rows (`{row}` in the text: [`row_select`]), built
/// once, in the form for `$self`: as is, or, for a shared writer, locking
/// every row it reads, in id order.
macro_rules! reading {
    ($self:ident, $fmt:literal) => {{
        static SQL: std::sync::LazyLock<[String; 2]> = std::sync::LazyLock::new(|| {
            let plain = format!($fmt, row = row_select());
            let locking = format!("{plain} ORDER BY t.id FOR UPDATE OF t");
            [plain, locking]
        });
        SQL[usize::from($self.shared)].as_str()
    }};
}

/// The ids of `ids` not yet keys of `held`.
fn absent<'i, V>(held: &HashMap<TaskId, V>, ids: &[&'i TaskId]) -> Vec<&'i str> {
    ids.iter()
        .filter(|id| !held.contains_key(**id))
        .map(|id| id.as_str())
        .collect()
}

fn read_row(r: &tokio_postgres::Row) -> Result<Row> {
    let mut task = row_to_task(r)?;
    let to: Vec<String> = r.get(23);
    let kinds: Vec<String> = r.get(24);
    task.deps = to
        .into_iter()
        .zip(kinds)
        .map(|(id, kind)| {
            Ok(Dep {
                id: TaskId::parse(&id)?,
                kind: DepKind::parse(&kind)?,
            })
        })
        .collect::<Result<_>>()?;
    let token = task.lease.as_ref().map(|l| l.token.clone());
    let expires = r.get(21);
    task.lease = None;
    Ok(Row {
        task,
        attempt: r.get(22),
        token,
        expires,
        dirty: false,
    })
}

/// [`GraphTx`] and [`WriteTx`] over an open PostgreSQL transaction, with the
/// rows it has read held in memory (see the module's comment).
pub(crate) struct PgGraph<'a, 'b> {
    tx: &'a Conn<'b>,
    rows: HashMap<TaskId, Row>,
    /// Complete `blocks` dependents of some tasks, as read (and kept up to
    /// date by this transaction's edge changes).
    dependents: HashMap<TaskId, Vec<TaskId>>,
    /// Ready tasks taken, locked, for the current run of claims.
    queue: VecDeque<TaskId>,
    /// How many claims the current run still makes.
    want: usize,
    events: Vec<Pending>,
    counters: HashMap<&'static str, i64>,
    /// Beside other shared writers (see [`Writers`]): every row read is
    /// locked, in id order.
    shared: bool,
}

fn parse_id(s: String) -> Result<TaskId> {
    Ok(TaskId::parse(&s)?)
}

impl<'a, 'b> PgGraph<'a, 'b> {
    pub(crate) fn new(tx: &'a Conn<'b>) -> PgGraph<'a, 'b> {
        PgGraph {
            tx,
            rows: HashMap::new(),
            dependents: HashMap::new(),
            queue: VecDeque::new(),
            want: 0,
            events: Vec::new(),
            counters: HashMap::new(),
            shared: false,
        }
    }

    /// Keeps rows read from the database, never replacing one already held
    /// (that copy may have changes not yet written).
    fn keep(&mut self, rows: Vec<tokio_postgres::Row>) -> Result<Vec<TaskId>> {
        let mut ids = Vec::with_capacity(rows.len());
        for r in &rows {
            let row = read_row(r)?;
            let id = row.task.id.clone();
            self.rows.entry(id.clone()).or_insert(row);
            ids.push(id);
        }
        Ok(ids)
    }

    /// Reads the rows of `ids` not yet held, in one query.
    fn fetch(&mut self, ids: &[&TaskId]) -> Result<()> {
        let missing = absent(&self.rows, ids);
        if missing.is_empty() {
            return Ok(());
        }
        let sql = reading!(self, "SELECT {row} FROM tasks t WHERE t.id = ANY($1)");
        let rows = self.tx.query(sql, &[&missing])?;
        self.keep(rows)?;
        Ok(())
    }

    /// Reads the `blocks` dependents of `ids` (and their rows) in one query.
    fn fetch_dependents(&mut self, ids: &[&TaskId]) -> Result<()> {
        let missing = absent(&self.dependents, ids);
        if missing.is_empty() {
            return Ok(());
        }
        let sql = reading!(
            self,
            "SELECT {row}, d.to_id FROM deps d JOIN tasks t ON t.id = d.from_id \
             WHERE d.to_id = ANY($1) AND d.kind = 'blocks'"
        );
        let rows = self.tx.query(sql, &[&missing])?;
        for id in &missing {
            self.dependents
                .insert(TaskId::trusted((*id).to_owned()), Vec::new());
        }
        for r in rows {
            let to = TaskId::trusted(r.get::<_, String>(25));
            let from = self.keep(vec![r])?.remove(0);
            self.dependents.entry(to).or_default().push(from);
        }
        Ok(())
    }

    /// The held row of `id`, read if needed.
    fn row(&mut self, id: &TaskId) -> Result<&mut Row> {
        if !self.rows.contains_key(id) {
            self.fetch(&[id])?;
        }
        self.rows
            .get_mut(id)
            .ok_or_else(|| braid_core::Error::NotFound(id.clone()).into())
    }

    /// The held row of `id`, to be changed.
    fn change(&mut self, id: &TaskId) -> Result<&mut Row> {
        let row = self.row(id)?;
        row.dirty = true;
        Ok(row)
    }

    /// Reads, before the first command, what a batch will touch: the rows
    /// it names, and the dependents of tasks whose state it changes.
    fn prefetch(&mut self, cmds: &[Command]) -> Result<()> {
        let mut named = Vec::new();
        let mut moving = Vec::new();
        for c in cmds {
            match c {
                Command::Add(new) => {
                    named.extend(new.parent.iter());
                    named.extend(new.deps.iter().map(|d| &d.id));
                }
                Command::Update { id, .. }
                | Command::Renew { id, .. }
                | Command::NextAttempt { id, .. }
                | Command::Rescue { id, .. }
                | Command::Record { id, .. } => named.push(id),
                Command::Claim { id, .. } => named.extend(id.iter()),
                Command::SetState { id, .. } | Command::Finish { id, .. } => {
                    named.push(id);
                    moving.push(id);
                }
                Command::DepAdd { from, to, .. } | Command::DepRm { from, to } => {
                    named.push(from);
                    named.push(to);
                }
            }
        }
        // One command's ids need no prefetch: it reads them as it goes.
        if cmds.len() > 1 {
            self.fetch(&named)?;
            self.fetch_dependents(&moving)?;
        }
        Ok(())
    }

    /// The parameters writing every changed row back (the id, then
    /// [`WRITTEN`]), and whether there is one row (plain values) or several
    /// (arrays); `None` when no row changed. Marks the rows written.
    fn rows_update(&mut self) -> Option<(bool, Vec<Box<dyn ToSql + Sync + Send>>)> {
        let rows: Vec<&Row> = self.rows.values().filter(|r| r.dirty).collect();
        if rows.is_empty() {
            return None;
        }
        // One row (a single command, mostly): plain values, which plan
        // faster than arrays.
        let one = rows.len() == 1;
        let col = |f: &dyn Fn(&Row) -> Box<dyn ToSql + Sync + Send>,
                   many: &dyn Fn(&[&Row]) -> Box<dyn ToSql + Sync + Send>| {
            if one { f(rows[0]) } else { many(&rows) }
        };
        macro_rules! col {
            ($r:ident => $e:expr) => {
                col(&|$r: &Row| Box::new($e), &|rs: &[&Row]| {
                    Box::new(rs.iter().map(|$r| $e).collect::<Vec<_>>())
                })
            };
        }
        let params = vec![
            col!(r => r.task.id.as_str().to_owned()),
            col!(r => r.task.title.clone()),
            col!(r => r.task.description.clone()),
            col!(r => r.task.kind.as_str()),
            col!(r => r.task.priority as i64),
            col!(r => r.task.state.as_str()),
            col!(r => json_strings(&r.task.labels)),
            col!(r => r.task.assignee.clone()),
            col!(r => r.task.acceptance.clone()),
            col!(r => json_strings(&r.task.gates)),
            col!(r => r.task.agent.clone()),
            col!(r => r.task.branch.clone()),
            col!(r => r.task.updated_at),
            col!(r => r.task.closed_at),
            col!(r => r.task.close_reason.clone()),
            col!(r => r.task.blockers as i64),
            col!(r => r.task.held_by as i64),
            col!(r => r.node().ready() as i64),
            col!(r => r.token.clone()),
            col!(r => r.expires),
            col!(r => r.attempt),
        ];
        for r in self.rows.values_mut() {
            r.dirty = false;
        }
        Some((one, params))
    }

    /// Writes every changed row back, in one statement.
    fn write_rows(&mut self) -> Result<()> {
        if let Some((one, params)) = self.rows_update() {
            let refs: Vec<Param<'_>> = params.iter().map(|b| b.as_ref() as Param<'_>).collect();
            self.tx.execute(write_rows_sql(one), &refs)?;
        }
        Ok(())
    }

    /// Queues what the transaction changed to go with its COMMIT: the rows,
    /// then the events, numbered there in the order they were appended, the
    /// counters and the write's `record` (see [`LOG_WRITE`]).
    fn write_back(&mut self, write_id: &str, record: String) {
        if self
            .counters
            .get(braid_core::health::READY)
            .is_some_and(|d| *d > 0)
        {
            self.tx.made_ready();
        }
        // One changed row (a single command, mostly) goes in the same
        // statement as the log; many go ahead of it, outside the log lock.
        let (log, row) = match self.rows_update() {
            Some((true, row)) => (log_write_row(), row),
            Some((false, rows)) => {
                self.tx.at_commit((write_rows_sql(false).to_owned(), rows));
                (LOG_WRITE, Vec::new())
            }
            None => (LOG_WRITE, Vec::new()),
        };
        let e = std::mem::take(&mut self.events);
        let (names, values): (Vec<&'static str>, Vec<i64>) =
            self.counters.drain().filter(|(_, v)| *v != 0).unzip();
        let mut params: Vec<Box<dyn ToSql + Sync + Send>> = vec![
            Box::new(e.iter().map(|e| e.at).collect::<Vec<i64>>()),
            Box::new(e.iter().map(|e| e.actor.clone()).collect::<Vec<String>>()),
            Box::new(e.iter().map(|e| e.kind.as_str()).collect::<Vec<&str>>()),
            Box::new(
                e.iter()
                    .map(|e| e.task.clone())
                    .collect::<Vec<Option<String>>>(),
            ),
            Box::new(e.iter().map(|e| e.payload.clone()).collect::<Vec<String>>()),
            Box::new(names),
            Box::new(values),
            Box::new(write_id.to_owned()),
            Box::new(braid_core::clock::now_ms()),
            Box::new(record),
            Box::new(e.len() as i64),
            Box::new(self.shared),
            Box::new(LOG_LOCK),
        ];
        params.extend(row);
        self.tx.at_commit((log.to_owned(), params));
    }
}

/// A write's events, counters and record, in one statement sent with the
/// COMMIT. A shared writer first takes the log lock (`l`), held to the
/// commit, so events commit in the order they are numbered; then one call
/// reserves the events' numbers (`r`: no other writer numbers events until
/// this one commits, so the range is the next one). Every insert reads `r`,
/// so none runs before the lock. Returns the last number taken (0: none).
const LOG_WRITE: &str = "WITH \
    l AS MATERIALIZED (SELECT count(*) AS n FROM \
        (SELECT pg_advisory_xact_lock($13::bigint) WHERE $12::boolean) x), \
    r AS MATERIALIZED (SELECT CASE WHEN $11::bigint > 0 THEN \
        setval(pg_get_serial_sequence('events', 'seq'), \
               nextval(pg_get_serial_sequence('events', 'seq')) + $11::bigint - 1) \
        ELSE 0 END AS last FROM l), \
    e AS (INSERT INTO events (seq, at, actor, kind, task, payload) OVERRIDING SYSTEM VALUE \
        SELECT r.last - $11::bigint + u.i, u.at, u.actor, u.kind, u.task, u.payload \
        FROM r, UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[]) \
        WITH ORDINALITY AS u(at, actor, kind, task, payload, i)), \
    c AS (INSERT INTO counters (name, value) SELECT u.name, u.value \
        FROM r, UNNEST($6::text[], $7::bigint[]) AS u(name, value) \
        ON CONFLICT (name) DO UPDATE SET value = counters.value + excluded.value), \
    w AS (INSERT INTO writes (id, at, result, last_seq) SELECT $8::text, $9::bigint, $10::text, r.last FROM r) \
    SELECT last FROM r";

/// [`LOG_WRITE`] and one changed row (its id $14, [`WRITTEN`] from $15).
fn log_write_row() -> &'static str {
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        let (ctes, last) = LOG_WRITE
            .rsplit_once(" SELECT last FROM r")
            .expect("LOG_WRITE ends with its answer");
        format!(
            "{ctes}, t AS (UPDATE tasks SET {} WHERE id = $14) SELECT last FROM r{last}",
            assignments(14)
        )
    });
    &SQL
}

/// The columns a row's write-back sets, with their types, in the order of
/// [`PgGraph::rows_update`]'s parameters after the id: all but `id`,
/// `parent` and `created_at`, which a row's changes never touch here or
/// write at once.
const WRITTEN: [(&str, &str); 20] = [
    ("title", "text"),
    ("description", "text"),
    ("type", "text"),
    ("priority", "bigint"),
    ("state", "text"),
    ("labels", "text"),
    ("assignee", "text"),
    ("acceptance", "text"),
    ("gates", "text"),
    ("agent", "text"),
    ("branch", "text"),
    ("updated_at", "bigint"),
    ("closed_at", "bigint"),
    ("close_reason", "text"),
    ("blockers", "bigint"),
    ("held_by", "bigint"),
    ("ready", "bigint"),
    ("lease_token", "text"),
    ("lease_expires", "bigint"),
    ("attempt", "bigint"),
];

/// `title = $N+1, description = $N+2, …` for a row whose id is `$N`.
fn assignments(id_param: usize) -> String {
    WRITTEN
        .iter()
        .enumerate()
        .map(|(i, (col, _))| format!("{col} = ${}", id_param + 1 + i))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The write-back of one changed row (plain values), or of several (one
/// array per column, joined by id).
fn write_rows_sql(one: bool) -> &'static str {
    static SQL: std::sync::LazyLock<[String; 2]> = std::sync::LazyLock::new(|| {
        let one = format!("UPDATE tasks SET {} WHERE id = $1", assignments(1));
        let sets: Vec<String> = WRITTEN
            .iter()
            .map(|(col, _)| format!("{col} = v.{col}"))
            .collect();
        let arrays: Vec<String> = WRITTEN
            .iter()
            .enumerate()
            .map(|(i, (_, ty))| format!("${}::{ty}[]", i + 2))
            .collect();
        let names: Vec<&str> = WRITTEN.iter().map(|(col, _)| *col).collect();
        let many = format!(
            "UPDATE tasks t SET {} FROM UNNEST($1::text[], {}) AS v(id, {}) WHERE t.id = v.id",
            sets.join(", "),
            arrays.join(", "),
            names.join(", ")
        );
        [many, one]
    });
    SQL[usize::from(one)].as_str()
}

impl GraphTx for PgGraph<'_, '_> {
    type Error = Error;

    fn node(&mut self, id: &TaskId) -> Result<Option<Node>> {
        if !self.rows.contains_key(id) {
            self.fetch(&[id])?;
        }
        Ok(self.rows.get(id).map(Row::node))
    }

    fn put_node(&mut self, id: &TaskId, n: &Node) -> Result<()> {
        if self.row(id)?.node() == *n {
            return Ok(());
        }
        let row = self.change(id)?;
        row.task.kind = n.kind;
        row.task.state = n.state;
        row.task.blockers = n.blockers;
        row.task.held_by = n.held_by;
        row.task.ready = n.ready();
        Ok(())
    }

    fn parent(&mut self, id: &TaskId) -> Result<Option<TaskId>> {
        if !self.rows.contains_key(id) {
            self.fetch(&[id])?;
        }
        Ok(self.rows.get(id).and_then(|r| r.task.parent.clone()))
    }

    fn set_parent(&mut self, id: &TaskId, parent: Option<&TaskId>) -> Result<()> {
        // At once: `children` reads this column.
        self.tx.execute(
            "UPDATE tasks SET parent = $2 WHERE id = $1",
            &[&id.as_str(), &parent.map(|p| p.as_str())],
        )?;
        self.row(id)?.task.parent = parent.cloned();
        Ok(())
    }

    fn children(&mut self, id: &TaskId) -> Result<Vec<TaskId>> {
        // The whole rows: the caller reads each child next.
        let sql = reading!(self, "SELECT {row} FROM tasks t WHERE t.parent = $1");
        let rows = self.tx.query(sql, &[&id.as_str()])?;
        self.keep(rows)
    }

    fn dependents(&mut self, id: &TaskId) -> Result<Vec<TaskId>> {
        self.fetch_dependents(&[id])?;
        Ok(self.dependents.get(id).cloned().unwrap_or_default())
    }

    fn blockers(&mut self, id: &TaskId) -> Result<Vec<TaskId>> {
        self.tx
            .query(
                "SELECT to_id FROM deps WHERE from_id = $1 AND kind = 'blocks' ORDER BY to_id COLLATE \"C\"",
                &[&id.as_str()],
            )?
            .into_iter()
            .map(|r| parse_id(r.get(0)))
            .collect()
    }

    fn edge(&mut self, from: &TaskId, to: &TaskId) -> Result<Option<DepKind>> {
        let r = self.tx.query_opt(
            "SELECT kind FROM deps WHERE from_id = $1 AND to_id = $2",
            &[&from.as_str(), &to.as_str()],
        )?;
        Ok(r.map(|r| DepKind::parse(r.get(0))).transpose()?)
    }

    fn insert_edge(&mut self, from: &TaskId, to: &TaskId, kind: DepKind) -> Result<()> {
        self.tx.execute(
            "INSERT INTO deps (from_id, to_id, kind) VALUES ($1, $2, $3)",
            &[&from.as_str(), &to.as_str(), &kind.as_str()],
        )?;
        if let Some(row) = self.rows.get_mut(from) {
            row.task.deps.push(Dep {
                id: to.clone(),
                kind,
            });
            row.task
                .deps
                .sort_by(|a, b| a.id.as_str().cmp(b.id.as_str()));
        }
        if kind == DepKind::Blocks
            && let Some(list) = self.dependents.get_mut(to)
        {
            list.push(from.clone());
        }
        Ok(())
    }

    fn remove_edge(&mut self, from: &TaskId, to: &TaskId) -> Result<()> {
        self.tx.execute(
            "DELETE FROM deps WHERE from_id = $1 AND to_id = $2",
            &[&from.as_str(), &to.as_str()],
        )?;
        if let Some(row) = self.rows.get_mut(from) {
            row.task.deps.retain(|d| d.id != *to);
        }
        if let Some(list) = self.dependents.get_mut(to) {
            list.retain(|d| d != from);
        }
        Ok(())
    }
}

/// Adds counter changes, every counter in one statement.
fn write_counter_rows(tx: &Conn<'_>, names: &[&str], values: &[i64]) -> Result<()> {
    if names.is_empty() {
        return Ok(());
    }
    tx.execute(
        "INSERT INTO counters (name, value) SELECT * FROM UNNEST($1::text[], $2::bigint[]) \
         ON CONFLICT (name) DO UPDATE SET value = counters.value + excluded.value",
        &[&names, &values],
    )?;
    Ok(())
}

/// Adds a transaction's counter changes.
pub(crate) fn write_counters(tx: &Conn<'_>, delta: &HealthDelta) -> Result<()> {
    let (names, values): (Vec<&str>, Vec<i64>) = delta.changes().unzip();
    write_counter_rows(tx, &names, &values)
}

/// Appends one event at once and returns it with its sequence number.
pub(crate) fn append_event(
    tx: &Conn<'_>,
    at: i64,
    actor: &str,
    kind: EventKind,
    task: Option<&TaskId>,
    payload: Value,
) -> Result<Event> {
    let row = tx.query(
        "INSERT INTO events (at, actor, kind, task, payload) VALUES ($1, $2, $3, $4, $5) RETURNING seq",
        &[
            &at,
            &actor,
            &kind.as_str(),
            &task.map(|t| t.as_str()),
            &payload.to_string(),
        ],
    )?;
    Ok(Event {
        seq: row[0].get(0),
        at,
        actor: actor.to_owned(),
        kind,
        task: task.cloned(),
        payload,
    })
}

/// How many commands from `i` on claim "the next ready task".
fn claim_run(cmds: &[Command], i: usize) -> usize {
    cmds[i..]
        .iter()
        .take_while(|c| matches!(c, Command::Claim { id: None, .. }))
        .count()
}

/// Applies commands in order in one transaction: all or nothing. The
/// transaction records `write_id` with what it did; when a previous try of
/// the same call committed (its answer lost with the connection), its
/// results are read back instead of applying the commands again.
pub(crate) fn apply_all(
    conn: &Conn<'_>,
    actor: &str,
    now: i64,
    cmds: Vec<Command>,
    write_id: &str,
    retry: bool,
) -> Result<Vec<Applied>> {
    if retry && let Some((record, last)) = conn.recorded(write_id)? {
        return replay(conn, &record, last.unwrap_or(0));
    }
    if let [
        Command::Claim {
            id: None,
            assignee,
            lease_ms,
        },
    ] = cmds.as_slice()
    {
        return claim_next(conn, actor, now, assignee, *lease_ms, write_id);
    }
    // Claims and the ends of claims change only the rows they lock (and
    // the counters and the log): they need not wait for each other.
    let shared = cmds.iter().all(|c| {
        matches!(
            c,
            Command::Claim { .. }
                | Command::Renew { .. }
                | Command::NextAttempt { .. }
                | Command::Finish { .. }
                | Command::Rescue { .. }
                | Command::Record { .. }
        )
    });
    let lock = if shared {
        Writers::Shared
    } else {
        Writers::Exclusive
    };
    let (mut out, rows) = conn.write(write_id, lock, |tx| {
        let mut out = Vec::with_capacity(cmds.len());
        let mut g = PgGraph::new(tx);
        g.shared = shared;
        g.prefetch(&cmds)?;
        let mut run = 0;
        for (i, cmd) in cmds.iter().enumerate() {
            if run == 0 {
                // A new run of claims (or none): heads taken for an earlier
                // run are not this one's to use.
                run = claim_run(&cmds, i);
                g.want = run;
                g.queue.clear();
            }
            run = run.saturating_sub(1);
            out.push(apply::apply_one(&mut g, actor, now, cmd.clone())?);
        }
        g.write_back(write_id, record_of(&out));
        Ok(out)
    })?;
    // The events were numbered as they were written.
    let last: i64 = rows
        .last()
        .and_then(|r| r.first())
        .map(|r| r.get(0))
        .ok_or_else(|| Error::backend("a write did not say how its events were numbered"))?;
    number_events(&mut out, last);
    Ok(out)
}

/// Claims the next ready task (one `Command::Claim` with no id) in one
/// flight: BEGIN and the shared lock, [`CLAIM_NEXT`], COMMIT. What it
/// changes is what [`apply::apply_one`] changes for such a claim: the task
/// goes from ready `open` to `in_progress` under a new lease, one `claimed`
/// event, the counters `open` -1, `in_progress` +1, `ready` -1 (a ready
/// task is never an epic nor blocked). The differential test against SQLite
/// holds the two to the same results.
fn claim_next(
    conn: &Conn<'_>,
    actor: &str,
    now: i64,
    assignee: &str,
    lease_ms: i64,
    write_id: &str,
) -> Result<Vec<Applied>> {
    let token = new_lease_token();
    let expires = now + lease_ms;
    let ready = Node::new(TaskType::Task, State::Open);
    let claimed = Node {
        state: State::InProgress,
        ..ready
    };
    let mut delta = HealthDelta::default();
    delta.sub(&ready);
    delta.add(&claimed);
    let (names, values): (Vec<&'static str>, Vec<i64>) = delta.changes().unzip();
    let params: Vec<Box<dyn ToSql + Sync + Send>> = vec![
        Box::new(assignee.to_owned()),
        Box::new(token.clone()),
        Box::new(expires),
        Box::new(now),
        Box::new(LOG_LOCK),
        Box::new(actor.to_owned()),
        Box::new(names),
        Box::new(values),
        Box::new(write_id.to_owned()),
        Box::new(EventKind::Claimed.as_str()),
        Box::new(State::InProgress.as_str()),
    ];
    let ((), rows) = conn.write(write_id, Writers::Shared, |tx| {
        tx.at_commit((claim_next_sql().to_owned(), params));
        tx.notifies_itself();
        Ok(())
    })?;
    let Some(r) = rows.first().and_then(|rows| rows.first()) else {
        return Err(Error::NothingReady);
    };
    let row = read_row(r)?;
    let seq: i64 = r.get(25);
    Ok(vec![Applied {
        events: vec![Event {
            seq,
            at: now,
            actor: actor.to_owned(),
            kind: EventKind::Claimed,
            task: Some(row.task.id.clone()),
            payload: json!({"assignee": assignee, "attempt": row.attempt, "lease_expires": expires}),
        }],
        task: row.snapshot(),
        lease_token: Some(token),
    }])
}

/// The statement of [`claim_next`]: the head of the ready queue, locked
/// (`FOR UPDATE SKIP LOCKED` inside a CTE with its LIMIT), claimed; then,
/// only when a task was claimed, the log lock, its event's number, the
/// event, the counters, the write's record and the notification. Returns
/// the claimed row and its event's number, or nothing.
fn claim_next_sql() -> &'static str {
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "WITH next AS MATERIALIZED (SELECT id FROM tasks WHERE ready = 1 \
                 ORDER BY priority, created_at, ord LIMIT 1 FOR UPDATE SKIP LOCKED), \
             c AS MATERIALIZED (UPDATE tasks t SET state = $11::text, ready = 0, \
                 assignee = $1::text, lease_token = $2::text, lease_expires = $3::bigint, \
                 attempt = t.attempt + 1, updated_at = $4::bigint, closed_at = NULL, \
                 close_reason = NULL FROM next WHERE t.id = next.id RETURNING t.*), \
             l AS MATERIALIZED (SELECT count(*) AS n FROM \
                 (SELECT pg_advisory_xact_lock($5::bigint) FROM c) x), \
             r AS MATERIALIZED (SELECT nextval(pg_get_serial_sequence('events', 'seq')) AS last \
                 FROM c, l), \
             e AS (INSERT INTO events (seq, at, actor, kind, task, payload) OVERRIDING SYSTEM VALUE \
                 SELECT r.last, $4::bigint, $6::text, $10::text, c.id, \
                 json_build_object('assignee', $1::text, 'attempt', c.attempt, \
                     'lease_expires', $3::bigint)::text FROM c, r), \
             k AS (INSERT INTO counters (name, value) SELECT u.name, u.value \
                 FROM r, UNNEST($7::text[], $8::bigint[]) AS u(name, value) \
                 ON CONFLICT (name) DO UPDATE SET value = counters.value + excluded.value), \
             w AS (INSERT INTO writes (id, at, result, last_seq) \
                 SELECT $9::text, $4::bigint, json_build_array(json_build_object('task', c.id, \
                     'events', 1, 'token', $2::text))::text, r.last FROM c, r), \
             n AS MATERIALIZED (SELECT pg_notify('{}', '') AS sent FROM r) \
             SELECT {}, r.last FROM c, r, n",
            super::conn::CHANNEL,
            row_select_of("c")
        )
    });
    &SQL
}

/// What a write records for a retry to read back: each command's task, how
/// many events it appended, and its lease token.
fn record_of(out: &[Applied]) -> String {
    let items: Vec<Value> = out
        .iter()
        .map(|a| json!({"task": a.task.id, "events": a.events.len(), "token": a.lease_token}))
        .collect();
    Value::Array(items).to_string()
}

/// Numbers the events of a write, in order, ending at `last`.
fn number_events(out: &mut [Applied], last: i64) {
    let n = out.iter().map(|a| a.events.len() as i64).sum::<i64>();
    let seqs = last - n + 1..=last;
    for (e, seq) in out.iter_mut().flat_map(|a| a.events.iter_mut()).zip(seqs) {
        e.seq = seq;
    }
}

/// The results of a write that committed, read back from its record.
fn replay(c: &Conn<'_>, record: &str, last: i64) -> Result<Vec<Applied>> {
    let items: Vec<Value> = serde_json::from_str(record)
        .map_err(|e| Error::backend_from("a write's record does not parse", e))?;
    let n: i64 = items.iter().filter_map(|i| i["events"].as_i64()).sum();
    let mut events = c
        .query(
            "SELECT seq, at, actor, kind, task, payload FROM events \
             WHERE seq > $1 AND seq <= $2 ORDER BY seq",
            &[&(last - n), &last],
        )?
        .iter()
        .map(super::row_to_event)
        .collect::<Vec<_>>()
        .into_iter();
    let mut g = PgGraph::new(c);
    items
        .into_iter()
        .map(|item| {
            let id = TaskId::parse(item["task"].as_str().unwrap_or_default())?;
            let k = item["events"].as_u64().unwrap_or(0) as usize;
            Ok(Applied {
                task: g.load(&id)?,
                events: events.by_ref().take(k).collect(),
                lease_token: item["token"].as_str().map(str::to_owned),
            })
        })
        .collect()
}

impl WriteTx for PgGraph<'_, '_> {
    fn child_states(&mut self, id: &TaskId) -> Result<Vec<State>> {
        // Unlocked (a sibling's row may be held by a node finishing it;
        // the parent's lock orders the two), and what this transaction
        // changed but has not written back yet wins.
        let rows = self.tx.query(
            "SELECT id, state FROM tasks WHERE parent = $1",
            &[&id.as_str()],
        )?;
        rows.iter()
            .map(|r| {
                let child = TaskId::parse(r.get(0))?;
                Ok(match self.rows.get(&child) {
                    Some(held) => held.task.state,
                    None => State::parse(r.get(1))?,
                })
            })
            .collect()
    }

    fn setting(&mut self, key: &str) -> Result<Option<String>> {
        Ok(self
            .tx
            .query_opt("SELECT value FROM meta WHERE key = $1", &[&key])?
            .map(|r| r.get(0)))
    }

    fn exists(&mut self, id: &TaskId) -> Result<bool> {
        if self.rows.contains_key(id) {
            return Ok(true);
        }
        Ok(self
            .tx
            .query_opt("SELECT 1 FROM tasks WHERE id = $1", &[&id.as_str()])?
            .is_some())
    }

    fn insert_task(
        &mut self,
        id: &TaskId,
        new: &NewTask,
        kind: TaskType,
        priority: u8,
        labels: &[String],
        now: i64,
    ) -> Result<bool> {
        // As a task with no parent and no dependency is: the usual new
        // task needs no second write.
        let fresh = Node::new(kind, State::Open);
        // At once: `exists` and `children` read the table.
        let inserted = self.tx.execute(
            "INSERT INTO tasks (id, title, description, type, priority, state, parent, labels, \
             assignee, acceptance, gates, agent, created_at, updated_at, ready) \
             VALUES ($1, $2, $3, $4, $5, 'open', $6, $7, $8, $9, $10, $11, $12, $12, $13) \
             ON CONFLICT (id) DO NOTHING",
            &[
                &id.as_str(),
                &new.title,
                &new.description,
                &kind.as_str(),
                &(priority as i64),
                &new.parent.as_ref().map(|p| p.as_str()),
                &json_strings(labels),
                &new.assignee,
                &new.acceptance,
                &json_strings(&new.gates),
                &new.agent,
                &now,
                &(fresh.ready() as i64),
            ],
        )?;
        if inserted == 0 {
            return Ok(false);
        }
        // The row as inserted, so the next reads need no query.
        let task = Task {
            id: id.clone(),
            title: new.title.clone(),
            description: new.description.clone(),
            kind,
            priority,
            state: State::Open,
            parent: new.parent.clone(),
            labels: labels.to_vec(),
            assignee: new.assignee.clone(),
            acceptance: new.acceptance.clone(),
            gates: new.gates.clone(),
            agent: new.agent.clone(),
            branch: None,
            created_at: now,
            updated_at: now,
            closed_at: None,
            close_reason: None,
            deps: Vec::new(),
            ready: fresh.ready(),
            blockers: 0,
            held_by: 0,
            lease: None,
        };
        self.rows.insert(
            id.clone(),
            Row {
                task,
                attempt: 0,
                token: None,
                expires: None,
                dirty: false,
            },
        );
        self.dependents.insert(id.clone(), Vec::new());
        Ok(true)
    }

    fn set_field(&mut self, id: &TaskId, col: &str, value: Field<'_>) -> Result<()> {
        let t = &mut self.change(id)?.task;
        let text = |v: Option<&str>| v.map(str::to_owned);
        match (col, value) {
            ("title", Field::Text(v)) => t.title = v.unwrap_or_default().to_owned(),
            ("description", Field::Text(v)) => t.description = v.unwrap_or_default().to_owned(),
            ("acceptance", Field::Text(v)) => t.acceptance = v.unwrap_or_default().to_owned(),
            ("assignee", Field::Text(v)) => t.assignee = text(v),
            ("agent", Field::Text(v)) => t.agent = text(v),
            ("branch", Field::Text(v)) => t.branch = text(v),
            ("gates", Field::Text(v)) => t.gates = json_list(v.unwrap_or("[]")),
            ("labels", Field::Text(v)) => t.labels = json_list(v.unwrap_or("[]")),
            ("priority", Field::Int(p)) => t.priority = p as u8,
            (col, _) => {
                return Err(Error::backend(format!("no such task column to set: {col}")));
            }
        }
        Ok(())
    }

    fn index_labels(&mut self, id: &TaskId, labels: &[String], replace: bool) -> Result<()> {
        if replace {
            self.tx
                .execute("DELETE FROM labels WHERE task = $1", &[&id.as_str()])?;
        }
        if !labels.is_empty() {
            self.tx.execute(
                "INSERT INTO labels (label, task) SELECT unnest($1::text[]), $2 ON CONFLICT DO NOTHING",
                &[&labels, &id.as_str()],
            )?;
        }
        Ok(())
    }

    fn reset_attempts(&mut self, id: &TaskId) -> Result<()> {
        self.change(id)?.attempt = 0;
        Ok(())
    }

    fn refund_attempt(&mut self, id: &TaskId) -> Result<()> {
        let row = self.change(id)?;
        row.attempt = (row.attempt - 1).max(0);
        Ok(())
    }

    fn next_ready(&mut self) -> Result<Option<TaskId>> {
        if let Some(id) = self.queue.pop_front() {
            return Ok(Some(id));
        }
        // The query reads `ready`: this transaction's changes go first.
        self.write_rows()?;
        // SKIP LOCKED inside a CTE with its LIMIT: the planner cannot lock
        // more rows than those taken, and a row another transaction holds
        // is passed over, not waited on. A run of claims takes its heads
        // at once.
        let want = self.want.max(1) as i64;
        self.want = 0;
        static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            format!(
                "WITH next AS (SELECT id FROM tasks WHERE ready = 1 \
                 ORDER BY priority, created_at, ord LIMIT $1 FOR UPDATE SKIP LOCKED) \
                 SELECT {} FROM tasks t WHERE t.id IN (SELECT id FROM next) \
                 ORDER BY t.priority, t.created_at, t.ord",
                row_select()
            )
        });
        let rows = self.tx.query(&SQL, &[&want])?;
        let ids = self.keep(rows)?;
        self.queue.extend(ids);
        Ok(self.queue.pop_front())
    }

    fn take_lease(
        &mut self,
        id: &TaskId,
        assignee: &str,
        token: &str,
        expires: i64,
    ) -> Result<i64> {
        let row = self.change(id)?;
        row.task.assignee = Some(assignee.to_owned());
        row.token = Some(token.to_owned());
        row.expires = Some(expires);
        row.attempt += 1;
        Ok(row.attempt)
    }

    fn extend_lease(
        &mut self,
        id: &TaskId,
        expires: i64,
        next_attempt: bool,
        now: i64,
    ) -> Result<()> {
        let row = self.change(id)?;
        row.expires = Some(expires);
        if next_attempt {
            row.attempt += 1;
            row.task.updated_at = now;
        }
        Ok(())
    }

    fn lease(&mut self, id: &TaskId) -> Result<Option<LeaseRow>> {
        if !self.rows.contains_key(id) {
            self.fetch(&[id])?;
        }
        Ok(self
            .rows
            .get(id)
            .map(|r| (r.task.state.as_str().to_owned(), r.token.clone(), r.expires)))
    }

    fn state_columns(
        &mut self,
        id: &TaskId,
        now: i64,
        closed_at: Option<i64>,
        close_reason: Option<&str>,
        drop_lease: bool,
    ) -> Result<()> {
        let row = self.change(id)?;
        row.task.updated_at = now;
        row.task.closed_at = closed_at;
        row.task.close_reason = close_reason.map(str::to_owned);
        if drop_lease {
            row.token = None;
            row.expires = None;
        }
        Ok(())
    }

    fn touch(&mut self, id: &TaskId, now: i64) -> Result<()> {
        self.change(id)?.task.updated_at = now;
        Ok(())
    }

    fn append_event(
        &mut self,
        at: i64,
        actor: &str,
        kind: EventKind,
        task: Option<&TaskId>,
        payload: Value,
    ) -> Result<Event> {
        self.events.push(Pending {
            at,
            actor: actor.to_owned(),
            kind,
            task: task.map(|t| t.as_str().to_owned()),
            payload: payload.to_string(),
        });
        // Numbered when written (`write_back`).
        Ok(Event {
            seq: 0,
            at,
            actor: actor.to_owned(),
            kind,
            task: task.cloned(),
            payload,
        })
    }

    fn write_counters(&mut self, delta: &HealthDelta) -> Result<()> {
        for (k, v) in delta.changes() {
            *self.counters.entry(k).or_insert(0) += v;
        }
        Ok(())
    }

    fn load(&mut self, id: &TaskId) -> Result<Task> {
        Ok(self.row(id)?.snapshot())
    }
}
