//! The single write path on SQLite: each batch of commands runs in one
//! `BEGIN IMMEDIATE` transaction; the logic of each command is
//! [`crate::apply`]'s, over SQLite's statements here.

use braid_core::graph::{GraphTx, Node};
use braid_core::{DepKind, Event, EventKind, HealthDelta, NewTask, State, Task, TaskId, TaskType};
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;

use super::{TASK_COLS, load_tasks};
use crate::apply::{self, Field, LeaseRow, WriteTx};
use crate::json::json_strings;
use crate::{Applied, Command, Error, Result};

/// [`GraphTx`] over a connection with an open transaction.
pub(crate) struct SqlGraph<'a> {
    pub tx: &'a Connection,
}

fn parse_id(s: String) -> Result<TaskId> {
    Ok(TaskId::parse(&s)?)
}

fn ids(tx: &Connection, sql: &str, id: &TaskId) -> Result<Vec<TaskId>> {
    let mut stmt = tx.prepare_cached(sql)?;
    let rows = stmt
        .query_map([id.as_str()], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    rows.into_iter().map(parse_id).collect()
}

impl GraphTx for SqlGraph<'_> {
    type Error = Error;

    fn node(&mut self, id: &TaskId) -> Result<Option<Node>> {
        let mut stmt = self
            .tx
            .prepare_cached("SELECT type, state, blockers, held_by FROM tasks WHERE id = ?1")?;
        let row = stmt
            .query_row([id.as_str()], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })
            .optional()?;
        row.map(|(k, s, b, h)| {
            Ok(Node {
                kind: TaskType::parse(&k)?,
                state: State::parse(&s)?,
                blockers: b as u32,
                held_by: h as u32,
            })
        })
        .transpose()
    }

    fn put_node(&mut self, id: &TaskId, n: &Node) -> Result<()> {
        let mut stmt = self.tx.prepare_cached(
            "UPDATE tasks SET type = ?2, state = ?3, blockers = ?4, held_by = ?5, ready = ?6 WHERE id = ?1",
        )?;
        stmt.execute(params![
            id.as_str(),
            n.kind.as_str(),
            n.state.as_str(),
            n.blockers,
            n.held_by,
            n.ready() as i64
        ])?;
        Ok(())
    }

    fn parent(&mut self, id: &TaskId) -> Result<Option<TaskId>> {
        let mut stmt = self
            .tx
            .prepare_cached("SELECT parent FROM tasks WHERE id = ?1")?;
        let p: Option<Option<String>> = stmt.query_row([id.as_str()], |r| r.get(0)).optional()?;
        p.flatten().map(parse_id).transpose()
    }

    fn set_parent(&mut self, id: &TaskId, parent: Option<&TaskId>) -> Result<()> {
        let mut stmt = self
            .tx
            .prepare_cached("UPDATE tasks SET parent = ?2 WHERE id = ?1")?;
        stmt.execute(params![id.as_str(), parent.map(|p| p.as_str())])?;
        Ok(())
    }

    fn children(&mut self, id: &TaskId) -> Result<Vec<TaskId>> {
        ids(self.tx, "SELECT id FROM tasks WHERE parent = ?1", id)
    }

    fn dependents(&mut self, id: &TaskId) -> Result<Vec<TaskId>> {
        ids(
            self.tx,
            "SELECT from_id FROM deps WHERE to_id = ?1 AND kind = 'blocks'",
            id,
        )
    }

    fn blockers(&mut self, id: &TaskId) -> Result<Vec<TaskId>> {
        ids(
            self.tx,
            "SELECT to_id FROM deps WHERE from_id = ?1 AND kind = 'blocks' ORDER BY to_id",
            id,
        )
    }

    fn edge(&mut self, from: &TaskId, to: &TaskId) -> Result<Option<DepKind>> {
        let mut stmt = self
            .tx
            .prepare_cached("SELECT kind FROM deps WHERE from_id = ?1 AND to_id = ?2")?;
        let k: Option<String> = stmt
            .query_row([from.as_str(), to.as_str()], |r| r.get(0))
            .optional()?;
        Ok(k.map(|k| DepKind::parse(&k)).transpose()?)
    }

    fn insert_edge(&mut self, from: &TaskId, to: &TaskId, kind: DepKind) -> Result<()> {
        let mut stmt = self
            .tx
            .prepare_cached("INSERT INTO deps (from_id, to_id, kind) VALUES (?1, ?2, ?3)")?;
        stmt.execute([from.as_str(), to.as_str(), kind.as_str()])?;
        Ok(())
    }

    fn remove_edge(&mut self, from: &TaskId, to: &TaskId) -> Result<()> {
        let mut stmt = self
            .tx
            .prepare_cached("DELETE FROM deps WHERE from_id = ?1 AND to_id = ?2")?;
        stmt.execute([from.as_str(), to.as_str()])?;
        Ok(())
    }
}

/// Adds the transaction's counter changes.
pub(crate) fn write_counters(tx: &Connection, delta: &HealthDelta) -> Result<()> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO counters (name, value) VALUES (?1, ?2) \
         ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
    )?;
    for (k, v) in delta.changes() {
        stmt.execute(params![k, v])?;
    }
    Ok(())
}

/// Appends one event and returns it with its sequence number.
pub(crate) fn append_event(
    tx: &Connection,
    at: i64,
    actor: &str,
    kind: EventKind,
    task: Option<&TaskId>,
    payload: Value,
) -> Result<Event> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO events (at, actor, kind, task, payload) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    stmt.execute(params![
        at,
        actor,
        kind.as_str(),
        task.map(|t| t.as_str()),
        payload.to_string()
    ])?;
    Ok(Event {
        seq: tx.last_insert_rowid(),
        at,
        actor: actor.to_owned(),
        kind,
        task: task.cloned(),
        payload,
    })
}

fn load_one(tx: &Connection, id: &TaskId) -> Result<Task> {
    let sql = format!("SELECT {TASK_COLS} FROM tasks WHERE id = ?1");
    load_tasks(tx, &sql, &[&id.as_str()])?
        .pop()
        .ok_or_else(|| braid_core::Error::NotFound(id.clone()).into())
}

/// Applies commands in order in one transaction: all or nothing. BEGIN
/// and COMMIT are prepared once per connection (rusqlite's `Transaction`
/// parses them on every call, a measurable share of a small write).
pub(crate) fn apply_all(
    conn: &mut Connection,
    actor: &str,
    now: i64,
    cmds: Vec<Command>,
) -> Result<Vec<Applied>> {
    conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
    let applied = (|| {
        let mut out = Vec::with_capacity(cmds.len());
        let mut g = SqlGraph { tx: conn };
        for cmd in cmds {
            out.push(apply::apply_one(&mut g, actor, now, cmd)?);
        }
        conn.prepare_cached("COMMIT")?.execute([])?;
        Ok(out)
    })();
    if applied.is_err() && !conn.is_autocommit() {
        // The error is what the caller hears; a failed rollback leaves the
        // transaction to be rolled back when the connection closes.
        let _ = conn
            .prepare_cached("ROLLBACK")
            .and_then(|mut s| s.execute([]));
    }
    applied
}

impl WriteTx for SqlGraph<'_> {
    fn child_states(&mut self, id: &TaskId) -> Result<Vec<State>> {
        let mut stmt = self
            .tx
            .prepare_cached("SELECT state FROM tasks WHERE parent = ?1")?;
        let states = stmt
            .query_map([id.as_str()], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        states.iter().map(|s| Ok(State::parse(s)?)).collect()
    }

    fn setting(&mut self, key: &str) -> Result<Option<String>> {
        let mut stmt = self
            .tx
            .prepare_cached("SELECT value FROM meta WHERE key = ?1")?;
        Ok(stmt.query_row([key], |r| r.get(0)).optional()?)
    }

    fn exists(&mut self, id: &TaskId) -> Result<bool> {
        let mut stmt = self
            .tx
            .prepare_cached("SELECT 1 FROM tasks WHERE id = ?1")?;
        Ok(stmt.exists([id.as_str()])?)
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
        let inserted = self
            .tx
            .prepare_cached(
                "INSERT INTO tasks (id, title, description, type, priority, state, parent, labels, \
                 assignee, acceptance, gates, agent, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, 'open', ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?12) \
                 ON CONFLICT (id) DO NOTHING",
            )?
            .execute(params![
                id.as_str(),
                new.title,
                new.description,
                kind.as_str(),
                priority,
                new.parent.as_ref().map(|p| p.as_str()),
                json_strings(labels),
                new.assignee,
                new.acceptance,
                json_strings(&new.gates),
                new.agent,
                now
            ])?;
        Ok(inserted == 1)
    }

    fn set_field(&mut self, id: &TaskId, col: &str, value: Field<'_>) -> Result<()> {
        let mut stmt = self
            .tx
            .prepare_cached(&format!("UPDATE tasks SET {col} = ?2 WHERE id = ?1"))?;
        match value {
            Field::Text(t) => stmt.execute(params![id.as_str(), t])?,
            Field::Int(i) => stmt.execute(params![id.as_str(), i])?,
        };
        Ok(())
    }

    fn index_labels(&mut self, id: &TaskId, labels: &[String], replace: bool) -> Result<()> {
        if replace {
            self.tx
                .prepare_cached("DELETE FROM labels WHERE task = ?1")?
                .execute([id.as_str()])?;
        }
        let mut stmt = self
            .tx
            .prepare_cached("INSERT OR IGNORE INTO labels (label, task) VALUES (?1, ?2)")?;
        for l in labels {
            stmt.execute([l.as_str(), id.as_str()])?;
        }
        Ok(())
    }

    fn reset_attempts(&mut self, id: &TaskId) -> Result<()> {
        self.tx
            .prepare_cached("UPDATE tasks SET attempt = 0 WHERE id = ?1")?
            .execute([id.as_str()])?;
        Ok(())
    }

    fn refund_attempt(&mut self, id: &TaskId) -> Result<()> {
        self.tx
            .prepare_cached("UPDATE tasks SET attempt = max(attempt - 1, 0) WHERE id = ?1")?
            .execute([id.as_str()])?;
        Ok(())
    }

    fn next_ready(&mut self) -> Result<Option<TaskId>> {
        let next: Option<String> = self
            .tx
            .prepare_cached(
                "SELECT id FROM tasks INDEXED BY tasks_ready WHERE ready = 1 \
                 ORDER BY priority, created_at, rowid LIMIT 1",
            )?
            .query_row([], |r| r.get(0))
            .optional()?;
        next.map(parse_id).transpose()
    }

    fn take_lease(
        &mut self,
        id: &TaskId,
        assignee: &str,
        token: &str,
        expires: i64,
    ) -> Result<i64> {
        self.tx
            .prepare_cached(
                "UPDATE tasks SET assignee = ?2, lease_token = ?3, lease_expires = ?4, attempt = attempt + 1 \
                 WHERE id = ?1",
            )?
            .execute(params![id.as_str(), assignee, token, expires])?;
        Ok(self.tx.query_row(
            "SELECT attempt FROM tasks WHERE id = ?1",
            [id.as_str()],
            |r| r.get(0),
        )?)
    }

    fn extend_lease(
        &mut self,
        id: &TaskId,
        expires: i64,
        next_attempt: bool,
        now: i64,
    ) -> Result<()> {
        if next_attempt {
            self.tx
                .prepare_cached(
                    "UPDATE tasks SET lease_expires = ?2, attempt = attempt + 1, updated_at = ?3 WHERE id = ?1",
                )?
                .execute(params![id.as_str(), expires, now])?;
        } else {
            self.tx
                .prepare_cached("UPDATE tasks SET lease_expires = ?2 WHERE id = ?1")?
                .execute(params![id.as_str(), expires])?;
        }
        Ok(())
    }

    fn lease(&mut self, id: &TaskId) -> Result<Option<LeaseRow>> {
        Ok(self
            .tx
            .prepare_cached("SELECT state, lease_token, lease_expires FROM tasks WHERE id = ?1")?
            .query_row([id.as_str()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?)
    }

    fn state_columns(
        &mut self,
        id: &TaskId,
        now: i64,
        closed_at: Option<i64>,
        close_reason: Option<&str>,
        drop_lease: bool,
    ) -> Result<()> {
        self.tx
            .prepare_cached(
                "UPDATE tasks SET updated_at = ?2, closed_at = ?3, close_reason = ?4, \
                 lease_token = CASE WHEN ?5 THEN NULL ELSE lease_token END, \
                 lease_expires = CASE WHEN ?5 THEN NULL ELSE lease_expires END WHERE id = ?1",
            )?
            .execute(params![
                id.as_str(),
                now,
                closed_at,
                close_reason,
                drop_lease
            ])?;
        Ok(())
    }

    fn touch(&mut self, id: &TaskId, now: i64) -> Result<()> {
        self.tx
            .prepare_cached("UPDATE tasks SET updated_at = ?2 WHERE id = ?1")?
            .execute(params![id.as_str(), now])?;
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
        append_event(self.tx, at, actor, kind, task, payload)
    }

    fn write_counters(&mut self, delta: &HealthDelta) -> Result<()> {
        write_counters(self.tx, delta)
    }

    fn load(&mut self, id: &TaskId) -> Result<Task> {
        load_one(self.tx, id)
    }
}
