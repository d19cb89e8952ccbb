//! The single write path on PostgreSQL: each batch of commands runs in one
//! transaction that first takes the writers' advisory lock, then, command
//! by command, validates with braid-core, updates rows, maintains readiness
//! and health counters, and appends events — the SQLite write path's
//! statements in PostgreSQL's dialect.

use braid_core::graph::{self, GraphTx, Node};
use braid_core::{DepKind, Event, EventKind, HealthDelta, State, Task, TaskId, TaskType};
use serde_json::{Value, json};

use super::conn::{Conn, Param};
use super::{TASK_COLS, load_tasks};
use crate::sqlite::now_ms;
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

pub(crate) fn exists(tx: &Conn<'_>, id: &str) -> Result<bool> {
    Ok(tx
        .query_opt("SELECT 1 FROM tasks WHERE id = $1", &[&id])?
        .is_some())
}

/// A fresh id not yet in use, lengthened while candidates collide.
fn fresh_id(tx: &Conn<'_>) -> Result<TaskId> {
    let mut len = braid_core::id::MIN_RANDOM_LEN;
    loop {
        for _ in 0..3 {
            let id = TaskId::random(len);
            if !exists(tx, id.as_str())? {
                return Ok(id);
            }
        }
        len += 1;
    }
}

fn json_strings(v: &[String]) -> String {
    serde_json::to_string(v).expect("strings serialize")
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
        for cmd in cmds {
            out.push(apply_one(tx, actor, cmd)?);
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

fn apply_one(tx: &Conn<'_>, actor: &str, cmd: Command) -> Result<Applied> {
    let now = now_ms();
    let mut delta = HealthDelta::default();
    let mut events = Vec::new();
    let mut lease_token = None;
    let id = match cmd {
        Command::Add(new) => {
            new.validate()?;
            let id = match &new.id {
                Some(id) => {
                    if exists(tx, id.as_str())? {
                        return Err(Error::Invalid(format!("id {id} is already taken")));
                    }
                    id.clone()
                }
                None => fresh_id(tx)?,
            };
            let kind = new.kind.unwrap_or(TaskType::Task);
            let priority = new.priority.unwrap_or(braid_core::model::DEFAULT_PRIORITY);
            let mut labels = new.labels.clone();
            labels.sort();
            labels.dedup();
            tx.execute(
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
                    &json_strings(&labels),
                    &new.assignee,
                    &new.acceptance,
                    &json_strings(&new.gates),
                    &new.agent,
                    &now,
                ],
            )?;
            insert_labels(tx, &id, &labels)?;
            let deps: Vec<(TaskId, DepKind)> =
                new.deps.iter().map(|d| (d.id.clone(), d.kind)).collect();
            let mut g = PgGraph { tx };
            graph::attach_new(&mut g, &id, new.parent.as_ref(), &deps, &mut delta)?;
            events.push(append_event(
                tx,
                now,
                actor,
                EventKind::Created,
                Some(&id),
                json!({
                    "title": new.title,
                    "type": kind.as_str(),
                    "priority": priority,
                    "parent": new.parent,
                    "labels": labels,
                    "deps": new.deps.iter().map(|d| json!({"id": d.id, "kind": d.kind.as_str()})).collect::<Vec<_>>(),
                }),
            )?);
            id
        }
        Command::Update { id, patch } => {
            patch.validate()?;
            if patch.is_empty() {
                return Err(Error::Invalid(format!(
                    "{id}: nothing to update (name a field to change)"
                )));
            }
            let before = load_one(tx, &id)?;
            let mut changes = serde_json::Map::new();
            let mut g = PgGraph { tx };
            if let Some(parent) = &patch.parent
                && *parent != before.parent
            {
                graph::set_parent(&mut g, &id, parent.as_ref(), &mut delta)?;
                changes.insert(
                    "parent".into(),
                    json!({"from": before.parent, "to": parent}),
                );
            }
            if let Some(kind) = patch.kind
                && kind != before.kind
            {
                let old = g.node(&id)?.expect("task loaded above");
                let new = Node { kind, ..old };
                g.put_node(&id, &new)?;
                delta.sub(&old);
                delta.add(&new);
                changes.insert(
                    "type".into(),
                    json!({"from": before.kind.as_str(), "to": kind.as_str()}),
                );
            }
            let mut set = |col: &str, from: Value, to: Value, sql_val: Param<'_>| -> Result<()> {
                if from != to {
                    tx.execute(
                        &format!("UPDATE tasks SET {col} = $2 WHERE id = $1"),
                        &[&id.as_str(), sql_val],
                    )?;
                    changes.insert(col.into(), json!({"from": from, "to": to}));
                }
                Ok(())
            };
            if let Some(t) = &patch.title {
                set("title", json!(before.title), json!(t), t)?;
            }
            if let Some(d) = &patch.description {
                set("description", json!(before.description), json!(d), d)?;
            }
            if let Some(p) = patch.priority {
                set("priority", json!(before.priority), json!(p), &(p as i64))?;
            }
            if let Some(a) = &patch.assignee {
                set("assignee", json!(before.assignee), json!(a), a)?;
            }
            if let Some(a) = &patch.acceptance {
                set("acceptance", json!(before.acceptance), json!(a), a)?;
            }
            if let Some(gates) = &patch.gates {
                set(
                    "gates",
                    json!(before.gates),
                    json!(gates),
                    &json_strings(gates),
                )?;
            }
            if let Some(a) = &patch.agent {
                set("agent", json!(before.agent), json!(a), a)?;
            }
            if let Some(b) = &patch.branch {
                set("branch", json!(before.branch), json!(b), b)?;
            }
            if !patch.add_labels.is_empty() || !patch.remove_labels.is_empty() {
                let mut labels = before.labels.clone();
                labels.retain(|l| !patch.remove_labels.contains(l));
                labels.extend(patch.add_labels.iter().cloned());
                labels.sort();
                labels.dedup();
                if labels != before.labels {
                    set(
                        "labels",
                        json!(before.labels),
                        json!(labels),
                        &json_strings(&labels),
                    )?;
                    tx.execute("DELETE FROM labels WHERE task = $1", &[&id.as_str()])?;
                    insert_labels(tx, &id, &labels)?;
                }
            }
            if changes.is_empty() {
                return Err(Error::Invalid(format!(
                    "{id}: nothing changed (the values given are the current ones)"
                )));
            }
            touch(tx, &id, now)?;
            events.push(append_event(
                tx,
                now,
                actor,
                EventKind::Updated,
                Some(&id),
                Value::Object(changes),
            )?);
            id
        }
        Command::SetState { id, to, reason } => {
            if to == State::InProgress {
                return Err(Error::Invalid(format!(
                    "{id}: work starts with a claim (braid claim {id}), which takes a lease"
                )));
            }
            let mut g = PgGraph { tx };
            let from = graph::set_state(&mut g, &id, to, &mut delta)?;
            record_state(tx, &id, from, to, reason.as_deref(), now)?;
            if to == State::Open && from.is_closed() {
                // Reopened work gets a fresh set of attempts.
                tx.execute(
                    "UPDATE tasks SET attempt = 0 WHERE id = $1",
                    &[&id.as_str()],
                )?;
            }
            events.push(append_event(
                tx,
                now,
                actor,
                EventKind::StateChanged,
                Some(&id),
                json!({"from": from.as_str(), "to": to.as_str(), "reason": reason}),
            )?);
            id
        }
        Command::Claim {
            id,
            assignee,
            lease_ms,
        } => {
            let id = match id {
                Some(id) => {
                    let mut g = PgGraph { tx };
                    let node = g
                        .node(&id)?
                        .ok_or_else(|| braid_core::Error::NotFound(id.clone()))?;
                    if !node.ready() {
                        let why = if node.kind == TaskType::Epic {
                            "it is an epic (epics are containers; claim a task under it)".to_owned()
                        } else if node.state != State::Open {
                            format!("it is {}", node.state)
                        } else {
                            graph::why_blocked(&mut g, &id)?.join("; ")
                        };
                        return Err(braid_core::Error::NotReady { id, why }.into());
                    }
                    id
                }
                None => {
                    // SKIP LOCKED inside a CTE with its LIMIT: the planner
                    // cannot lock more rows than the one taken, and a row
                    // another transaction holds is passed over, not waited on.
                    let next = tx.query_opt(
                        "WITH next AS (SELECT id FROM tasks WHERE ready = 1                          ORDER BY priority, created_at, ord LIMIT 1 FOR UPDATE SKIP LOCKED)                          SELECT id FROM next",
                        &[],
                    )?;
                    match next {
                        Some(r) => parse_id(r.get(0))?,
                        None => return Err(Error::NothingReady),
                    }
                }
            };
            let mut g = PgGraph { tx };
            let from = graph::set_state(&mut g, &id, State::InProgress, &mut delta)?;
            record_state(tx, &id, from, State::InProgress, None, now)?;
            let token = TaskId::random(24).as_str()[3..].to_owned();
            let expires = now + lease_ms;
            let row = tx.query(
                "UPDATE tasks SET assignee = $2, lease_token = $3, lease_expires = $4, attempt = attempt + 1 \
                 WHERE id = $1 RETURNING attempt",
                &[&id.as_str(), &assignee, &token, &expires],
            )?;
            let attempt: i64 = row[0].get(0);
            events.push(append_event(
                tx,
                now,
                actor,
                EventKind::Claimed,
                Some(&id),
                json!({"assignee": assignee, "attempt": attempt, "lease_expires": expires}),
            )?);
            lease_token = Some(token);
            id
        }
        Command::Renew {
            id,
            token,
            lease_ms,
        } => {
            check_lease(tx, &id, &token)?;
            tx.execute(
                "UPDATE tasks SET lease_expires = $2 WHERE id = $1",
                &[&id.as_str(), &(now + lease_ms)],
            )?;
            id
        }
        Command::NextAttempt {
            id,
            token,
            lease_ms,
        } => {
            check_lease(tx, &id, &token)?;
            tx.execute(
                "UPDATE tasks SET lease_expires = $2, attempt = attempt + 1, updated_at = $3 WHERE id = $1",
                &[&id.as_str(), &(now + lease_ms), &now],
            )?;
            id
        }
        Command::Finish {
            id,
            token,
            to,
            reason,
            refund_attempt,
        } => {
            check_lease(tx, &id, &token)?;
            let mut g = PgGraph { tx };
            let from = graph::set_state(&mut g, &id, to, &mut delta)?;
            record_state(tx, &id, from, to, reason.as_deref(), now)?;
            if refund_attempt {
                tx.execute(
                    "UPDATE tasks SET attempt = GREATEST(attempt - 1, 0) WHERE id = $1",
                    &[&id.as_str()],
                )?;
            }
            let kind = if to == State::Open {
                EventKind::Released
            } else {
                EventKind::StateChanged
            };
            events.push(append_event(
                tx,
                now,
                actor,
                kind,
                Some(&id),
                json!({"from": from.as_str(), "to": to.as_str(), "reason": reason, "refund_attempt": refund_attempt}),
            )?);
            id
        }
        Command::Rescue { id, token } => {
            let expires = check_lease(tx, &id, &token)?;
            if expires >= now {
                return Err(Error::Locked(format!(
                    "{id}: its lease is still valid for {} ms; only an expired lease can be rescued",
                    expires - now
                )));
            }
            let mut g = PgGraph { tx };
            let from = graph::set_state(&mut g, &id, State::Open, &mut delta)?;
            record_state(tx, &id, from, State::Open, None, now)?;
            events.push(append_event(
                tx,
                now,
                actor,
                EventKind::Rescued,
                Some(&id),
                json!({"expired_ms_ago": now - expires}),
            )?);
            id
        }
        Command::Record { id, kind, payload } => {
            if !exists(tx, id.as_str())? {
                return Err(braid_core::Error::NotFound(id).into());
            }
            events.push(append_event(tx, now, actor, kind, Some(&id), payload)?);
            id
        }
        Command::DepAdd { from, to, kind } => {
            let mut g = PgGraph { tx };
            graph::add_dep(&mut g, &from, &to, kind, &mut delta)?;
            touch(tx, &from, now)?;
            events.push(append_event(
                tx,
                now,
                actor,
                EventKind::DepAdded,
                Some(&from),
                json!({"to": to, "kind": kind.as_str()}),
            )?);
            from
        }
        Command::DepRm { from, to } => {
            let mut g = PgGraph { tx };
            let kind = graph::remove_dep(&mut g, &from, &to, &mut delta)?;
            touch(tx, &from, now)?;
            events.push(append_event(
                tx,
                now,
                actor,
                EventKind::DepRemoved,
                Some(&from),
                json!({"to": to, "kind": kind.as_str()}),
            )?);
            from
        }
    };
    write_counters(tx, &delta)?;
    let task = load_one(tx, &id)?;
    Ok(Applied {
        task,
        events,
        lease_token,
    })
}

/// Checks that `token` holds the current lease on an in-progress task;
/// returns the lease's expiry.
fn check_lease(tx: &Conn<'_>, id: &TaskId, token: &str) -> Result<i64> {
    let row = tx.query_opt(
        "SELECT state, lease_token, lease_expires FROM tasks WHERE id = $1",
        &[&id.as_str()],
    )?;
    let Some(r) = row else {
        return Err(braid_core::Error::NotFound(id.clone()).into());
    };
    let (state, current, expires): (String, Option<String>, Option<i64>) =
        (r.get(0), r.get(1), r.get(2));
    if state != State::InProgress.as_str() || current.as_deref() != Some(token) {
        return Err(Error::Locked(format!(
            "{id}: the lease presented is not the current one (the task is {state}; it was rescued, cancelled or finished elsewhere)"
        )));
    }
    Ok(expires.unwrap_or(0))
}

fn insert_labels(tx: &Conn<'_>, id: &TaskId, labels: &[String]) -> Result<()> {
    if labels.is_empty() {
        return Ok(());
    }
    tx.execute(
        "INSERT INTO labels (label, task) SELECT unnest($1::text[]), $2 ON CONFLICT DO NOTHING",
        &[&labels, &id.as_str()],
    )?;
    Ok(())
}

fn touch(tx: &Conn<'_>, id: &TaskId, now: i64) -> Result<()> {
    tx.execute(
        "UPDATE tasks SET updated_at = $2 WHERE id = $1",
        &[&id.as_str(), &now],
    )?;
    Ok(())
}

/// The row changes that go with a state change: timestamps, close reason,
/// and dropping the lease when work stops.
fn record_state(
    tx: &Conn<'_>,
    id: &TaskId,
    from: State,
    to: State,
    reason: Option<&str>,
    now: i64,
) -> Result<()> {
    let closed_at = to.is_closed().then_some(now);
    let close_reason = if to.is_closed() { reason } else { None };
    let drop_lease = from == State::InProgress && to != State::InProgress;
    tx.execute(
        "UPDATE tasks SET updated_at = $2, closed_at = $3, close_reason = $4, \
         lease_token = CASE WHEN $5 THEN NULL ELSE lease_token END, \
         lease_expires = CASE WHEN $5 THEN NULL ELSE lease_expires END WHERE id = $1",
        &[&id.as_str(), &now, &closed_at, &close_reason, &drop_lease],
    )?;
    Ok(())
}
