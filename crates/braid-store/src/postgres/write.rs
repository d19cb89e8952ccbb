//! The single write path on PostgreSQL: each batch of commands runs in one
//! transaction that first takes the writers' advisory lock; the logic of
//! each command is [`crate::apply`]'s, over PostgreSQL's statements here.

use braid_core::graph::{GraphTx, Node};
use braid_core::{DepKind, Event, EventKind, HealthDelta, NewTask, State, Task, TaskId, TaskType};
use serde_json::{Value, json};

use super::conn::Conn;
use super::{TASK_COLS, load_tasks};
use crate::apply::{self, Field, LeaseRow, WriteTx, json_strings};
use crate::{Applied, Command, Error, Result};

/// [`GraphTx`] over an open PostgreSQL transaction.
pub(crate) struct PgGraph<'a, 'b> {
    pub tx: &'a Conn<'b>,
}

fn parse_id(s: String) -> Result<TaskId> {
    Ok(TaskId::parse(&s)?)
}

fn ids(tx: &Conn<'_>, sql: &str, id: &TaskId) -> Result<Vec<TaskId>> {
    tx.query(sql, &[&id.as_str()])?
        .into_iter()
        .map(|r| parse_id(r.get(0)))
        .collect()
}

impl GraphTx for PgGraph<'_, '_> {
    type Error = Error;

    fn node(&mut self, id: &TaskId) -> Result<Option<Node>> {
        let row = self.tx.query_opt(
            "SELECT type, state, blockers, held_by FROM tasks WHERE id = $1",
            &[&id.as_str()],
        )?;
        row.map(|r| {
            Ok(Node {
                kind: TaskType::parse(r.get(0))?,
                state: State::parse(r.get(1))?,
                blockers: r.get::<_, i64>(2) as u32,
                held_by: r.get::<_, i64>(3) as u32,
            })
        })
        .transpose()
    }

    fn put_node(&mut self, id: &TaskId, n: &Node) -> Result<()> {
        self.tx.execute(
            "UPDATE tasks SET type = $2, state = $3, blockers = $4, held_by = $5, ready = $6 WHERE id = $1",
            &[
                &id.as_str(),
                &n.kind.as_str(),
                &n.state.as_str(),
                &(n.blockers as i64),
                &(n.held_by as i64),
                &(n.ready() as i64),
            ],
        )?;
        Ok(())
    }

    fn parent(&mut self, id: &TaskId) -> Result<Option<TaskId>> {
        let r = self
            .tx
            .query_opt("SELECT parent FROM tasks WHERE id = $1", &[&id.as_str()])?;
        r.and_then(|r| r.get::<_, Option<String>>(0))
            .map(parse_id)
            .transpose()
    }

    fn set_parent(&mut self, id: &TaskId, parent: Option<&TaskId>) -> Result<()> {
        self.tx.execute(
            "UPDATE tasks SET parent = $2 WHERE id = $1",
            &[&id.as_str(), &parent.map(|p| p.as_str())],
        )?;
        Ok(())
    }

    fn children(&mut self, id: &TaskId) -> Result<Vec<TaskId>> {
        ids(self.tx, "SELECT id FROM tasks WHERE parent = $1", id)
    }

    fn dependents(&mut self, id: &TaskId) -> Result<Vec<TaskId>> {
        ids(
            self.tx,
            "SELECT from_id FROM deps WHERE to_id = $1 AND kind = 'blocks'",
            id,
        )
    }

    fn blockers(&mut self, id: &TaskId) -> Result<Vec<TaskId>> {
        ids(
            self.tx,
            "SELECT to_id FROM deps WHERE from_id = $1 AND kind = 'blocks'",
            id,
        )
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
        Ok(())
    }

    fn remove_edge(&mut self, from: &TaskId, to: &TaskId) -> Result<()> {
        self.tx.execute(
            "DELETE FROM deps WHERE from_id = $1 AND to_id = $2",
            &[&from.as_str(), &to.as_str()],
        )?;
        Ok(())
    }
}

/// Adds the transaction's counter changes.
pub(crate) fn write_counters(tx: &Conn<'_>, delta: &HealthDelta) -> Result<()> {
    let (names, values): (Vec<&str>, Vec<i64>) = delta.changes().unzip();
    if names.is_empty() {
        return Ok(());
    }
    // Every counter in one statement.
    tx.execute(
        "INSERT INTO counters (name, value) SELECT * FROM UNNEST($1::text[], $2::bigint[]) \
         ON CONFLICT (name) DO UPDATE SET value = counters.value + excluded.value",
        &[&names, &values],
    )?;
    Ok(())
}

/// Appends one event and returns it with its sequence number.
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

fn load_one(tx: &Conn<'_>, id: &TaskId) -> Result<Task> {
    let sql = format!("SELECT {TASK_COLS} FROM tasks WHERE id = $1");
    load_tasks(tx, &sql, &[&id.as_str()])?
        .pop()
        .ok_or_else(|| braid_core::Error::NotFound(id.clone()).into())
}

/// Applies commands in order in one transaction: all or nothing. The
/// transaction records `write_id` with what it did; when a previous try of
/// the same call committed (its answer lost with the connection), its
/// results are read back instead of applying the commands again.
pub(crate) fn apply_all(
    conn: &Conn<'_>,
    actor: &str,
    cmds: Vec<Command>,
    write_id: &str,
    retry: bool,
) -> Result<Vec<Applied>> {
    if retry && let Some(record) = conn.recorded(write_id)? {
        return replay(conn, &record);
    }
    conn.write_once(write_id, |tx| {
        let mut out = Vec::with_capacity(cmds.len());
        let mut g = PgGraph { tx };
        for cmd in cmds {
            out.push(apply::apply_one(&mut g, actor, cmd)?);
        }
        let record: Vec<Value> = out
            .iter()
            .map(|a| {
                json!({
                    "task": a.task.id,
                    "events": a.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
                    "token": a.lease_token,
                })
            })
            .collect();
        Ok((out, Value::Array(record).to_string()))
    })
}

/// The results of a write that committed, read back from its record.
fn replay(c: &Conn<'_>, record: &str) -> Result<Vec<Applied>> {
    let items: Vec<Value> = serde_json::from_str(record)
        .map_err(|e| Error::Backend(format!("a write's record does not parse: {e}")))?;
    items
        .into_iter()
        .map(|item| {
            let id = TaskId::parse(item["task"].as_str().unwrap_or_default())?;
            let seqs: Vec<i64> = item["events"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_i64).collect())
                .unwrap_or_default();
            let events = c
                .query(
                    "SELECT seq, at, actor, kind, task, payload FROM events WHERE seq = ANY($1) ORDER BY seq",
                    &[&seqs],
                )?
                .iter()
                .map(super::row_to_event)
                .collect();
            Ok(Applied {
                task: load_one(c, &id)?,
                events,
                lease_token: item["token"].as_str().map(str::to_owned),
            })
        })
        .collect()
}

impl WriteTx for PgGraph<'_, '_> {
    fn exists(&mut self, id: &TaskId) -> Result<bool> {
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
    ) -> Result<()> {
        self.tx.execute(
            "INSERT INTO tasks (id, title, description, type, priority, state, parent, labels, \
             assignee, acceptance, gates, agent, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, 'open', $6, $7, $8, $9, $10, $11, $12, $12)",
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
            ],
        )?;
        Ok(())
    }

    fn set_field(&mut self, id: &TaskId, col: &str, value: Field<'_>) -> Result<()> {
        let sql = format!("UPDATE tasks SET {col} = $2 WHERE id = $1");
        match value {
            Field::Text(t) => self.tx.execute(&sql, &[&id.as_str(), &t])?,
            Field::Int(i) => self.tx.execute(&sql, &[&id.as_str(), &i])?,
        };
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
        self.tx.execute(
            "UPDATE tasks SET attempt = 0 WHERE id = $1",
            &[&id.as_str()],
        )?;
        Ok(())
    }

    fn refund_attempt(&mut self, id: &TaskId) -> Result<()> {
        self.tx.execute(
            "UPDATE tasks SET attempt = GREATEST(attempt - 1, 0) WHERE id = $1",
            &[&id.as_str()],
        )?;
        Ok(())
    }

    fn next_ready(&mut self) -> Result<Option<TaskId>> {
        // SKIP LOCKED inside a CTE with its LIMIT: the planner cannot lock
        // more rows than the one taken, and a row another transaction holds
        // is passed over, not waited on.
        self.tx
            .query_opt(
                "WITH next AS (SELECT id FROM tasks WHERE ready = 1 \
                 ORDER BY priority, created_at, ord LIMIT 1 FOR UPDATE SKIP LOCKED) \
                 SELECT id FROM next",
                &[],
            )?
            .map(|r| parse_id(r.get(0)))
            .transpose()
    }

    fn take_lease(
        &mut self,
        id: &TaskId,
        assignee: &str,
        token: &str,
        expires: i64,
    ) -> Result<i64> {
        let row = self.tx.query(
            "UPDATE tasks SET assignee = $2, lease_token = $3, lease_expires = $4, attempt = attempt + 1 \
             WHERE id = $1 RETURNING attempt",
            &[&id.as_str(), &assignee, &token, &expires],
        )?;
        Ok(row[0].get(0))
    }

    fn extend_lease(
        &mut self,
        id: &TaskId,
        expires: i64,
        next_attempt: bool,
        now: i64,
    ) -> Result<()> {
        if next_attempt {
            self.tx.execute(
                "UPDATE tasks SET lease_expires = $2, attempt = attempt + 1, updated_at = $3 WHERE id = $1",
                &[&id.as_str(), &expires, &now],
            )?;
        } else {
            self.tx.execute(
                "UPDATE tasks SET lease_expires = $2 WHERE id = $1",
                &[&id.as_str(), &expires],
            )?;
        }
        Ok(())
    }

    fn lease(&mut self, id: &TaskId) -> Result<Option<LeaseRow>> {
        Ok(self
            .tx
            .query_opt(
                "SELECT state, lease_token, lease_expires FROM tasks WHERE id = $1",
                &[&id.as_str()],
            )?
            .map(|r| (r.get(0), r.get(1), r.get(2))))
    }

    fn state_columns(
        &mut self,
        id: &TaskId,
        now: i64,
        closed_at: Option<i64>,
        close_reason: Option<&str>,
        drop_lease: bool,
    ) -> Result<()> {
        self.tx.execute(
            "UPDATE tasks SET updated_at = $2, closed_at = $3, close_reason = $4, \
             lease_token = CASE WHEN $5 THEN NULL ELSE lease_token END, \
             lease_expires = CASE WHEN $5 THEN NULL ELSE lease_expires END WHERE id = $1",
            &[&id.as_str(), &now, &closed_at, &close_reason, &drop_lease],
        )?;
        Ok(())
    }

    fn touch(&mut self, id: &TaskId, now: i64) -> Result<()> {
        self.tx.execute(
            "UPDATE tasks SET updated_at = $2 WHERE id = $1",
            &[&id.as_str(), &now],
        )?;
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
