//! The write path's logic, once for every backend: what each command checks
//! and changes, which events it appends, how health counters move. A
//! backend supplies an open write transaction as a [`WriteTx`] — the graph
//! reads and writes of [`GraphTx`] plus the few row statements that differ
//! by SQL dialect.

use braid_core::graph::{self, GraphTx, Node};
use braid_core::{EventKind, HealthDelta, NewTask, State, Task, TaskId, TaskType};
use serde_json::{Value, json};

use crate::json::json_strings;
use crate::{Applied, Command, Error, Result};

/// A value for one column of a task row.
pub(crate) enum Field<'a> {
    Text(Option<&'a str>),
    Int(i64),
}

/// A task's lease as stored: (state, token, expiry).
pub(crate) type LeaseRow = (String, Option<String>, Option<i64>);

/// An open write transaction of a backend.
pub(crate) trait WriteTx: GraphTx<Error = Error> {
    fn exists(&mut self, id: &TaskId) -> Result<bool>;
    /// The state of each child of `id` as this transaction sees it,
    /// without locking the children (the caller holds the parent).
    fn child_states(&mut self, id: &TaskId) -> Result<Vec<State>>;
    /// A project setting (the `meta` table), if set.
    fn setting(&mut self, key: &str) -> Result<Option<String>>;
    /// Inserts a new open task (labels and gates as given, already sorted);
    /// false, changing nothing, when the id is taken.
    fn insert_task(
        &mut self,
        id: &TaskId,
        new: &NewTask,
        kind: TaskType,
        priority: u8,
        labels: &[String],
        now: i64,
    ) -> Result<bool>;
    /// Sets one column of a task (`col` is one of the patchable columns).
    fn set_field(&mut self, id: &TaskId, col: &str, value: Field<'_>) -> Result<()>;
    /// Replaces the label index rows of a task.
    fn index_labels(&mut self, id: &TaskId, labels: &[String], replace: bool) -> Result<()>;
    fn reset_attempts(&mut self, id: &TaskId) -> Result<()>;
    fn refund_attempt(&mut self, id: &TaskId) -> Result<()>;
    /// The ready queue's head, locked for this transaction where the
    /// backend locks rows.
    fn next_ready(&mut self) -> Result<Option<TaskId>>;
    /// Gives the task a lease; returns its attempt number.
    fn take_lease(&mut self, id: &TaskId, assignee: &str, token: &str, expires: i64)
    -> Result<i64>;
    /// Moves a lease's expiry (and, for a new attempt, counts it).
    fn extend_lease(
        &mut self,
        id: &TaskId,
        expires: i64,
        next_attempt: bool,
        now: i64,
    ) -> Result<()>;
    fn lease(&mut self, id: &TaskId) -> Result<Option<LeaseRow>>;
    /// Timestamps, close reason, and (when work stops) the lease's removal.
    fn state_columns(
        &mut self,
        id: &TaskId,
        now: i64,
        closed_at: Option<i64>,
        close_reason: Option<&str>,
        drop_lease: bool,
    ) -> Result<()>;
    fn touch(&mut self, id: &TaskId, now: i64) -> Result<()>;
    fn append_event(
        &mut self,
        at: i64,
        actor: &str,
        kind: EventKind,
        task: Option<&TaskId>,
        payload: Value,
    ) -> Result<braid_core::Event>;
    fn write_counters(&mut self, delta: &HealthDelta) -> Result<()>;
    fn load(&mut self, id: &TaskId) -> Result<Task>;
}

/// Inserts the row of a new task under its given id or, without one, under
/// a fresh id, lengthened while candidates collide. Returns the id.
fn insert_new<T: WriteTx>(
    tx: &mut T,
    new: &NewTask,
    kind: TaskType,
    priority: u8,
    labels: &[String],
    now: i64,
) -> Result<TaskId> {
    if let Some(id) = &new.id {
        if !tx.insert_task(id, new, kind, priority, labels, now)? {
            return Err(Error::Invalid(format!("id {id} is already taken")));
        }
        return Ok(id.clone());
    }
    let mut len = braid_core::id::MIN_RANDOM_LEN;
    loop {
        for _ in 0..3 {
            let id = TaskId::random(len);
            if tx.insert_task(&id, new, kind, priority, labels, now)? {
                return Ok(id);
            }
        }
        len += 1;
    }
}

/// A fresh secret for a claim's lease.
pub(crate) fn new_lease_token() -> String {
    TaskId::random(24).as_str()[3..].to_owned()
}

/// Checks that `token` holds the current lease on an in-progress task;
/// returns the lease's expiry.
fn check_lease<T: WriteTx>(tx: &mut T, id: &TaskId, token: &str) -> Result<i64> {
    let Some((state, current, expires)) = tx.lease(id)? else {
        return Err(braid_core::Error::NotFound(id.clone()).into());
    };
    if state != State::InProgress.as_str() || current.as_deref() != Some(token) {
        return Err(Error::Locked(format!(
            "{id}: the lease presented is not the current one (the task is {state}; it was rescued, cancelled or finished elsewhere)"
        )));
    }
    Ok(expires.unwrap_or(0))
}

/// The row changes that go with a state change.
fn record_state<T: WriteTx>(
    tx: &mut T,
    id: &TaskId,
    from: State,
    to: State,
    reason: Option<&str>,
    now: i64,
) -> Result<()> {
    let closed_at = to.is_closed().then_some(now);
    let close_reason = if to.is_closed() { reason } else { None };
    let drop_lease = from == State::InProgress && to != State::InProgress;
    tx.state_columns(id, now, closed_at, close_reason, drop_lease)
}

/// Checks the names a batch writes before any backend opens a
/// transaction: who acts (every event records it) and who each claim is
/// for. The rest of a command's input is checked as it applies (a
/// [`NewTask`] or a patch validates itself).
pub(crate) fn check_names(actor: &str, cmds: &[Command]) -> Result<()> {
    braid_core::model::check_name("actor", actor)?;
    for c in cmds {
        if let Command::Claim { assignee, .. } = c {
            braid_core::model::check_name("assignee", assignee)?;
        }
    }
    Ok(())
}

/// Applies one command inside the backend's open write transaction, at
/// `now` (ms since the epoch, from the store's clock).
/// The project setting that keeps epics open when their children are
/// done (`[run] close_epics = false`).
pub const CLOSE_EPICS: &str = "close_epics";

/// After `id` finished: each epic above it whose children are now all
/// done (or cancelled, with at least one done) is done too, with an
/// `epic_completed` event — up the chain, in the same transaction. The
/// parent is read (and, on PostgreSQL, locked) before its children, so two
/// siblings finishing at once on two nodes take turns and the second sees
/// the first.
fn close_epics<T: WriteTx>(
    tx: &mut T,
    actor: &str,
    now: i64,
    id: &TaskId,
    delta: &mut HealthDelta,
    events: &mut Vec<braid_core::Event>,
) -> Result<()> {
    if tx.setting(CLOSE_EPICS)?.as_deref() == Some("false") {
        return Ok(());
    }
    let mut cur = tx.parent(id)?;
    // Bounded by the depth of the hierarchy; a loop, not recursion.
    while let Some(p) = cur {
        let Some(node) = tx.node(&p)? else { break };
        if node.kind != TaskType::Epic || !node.state.can_move_to(State::Done) {
            break;
        }
        let kids = tx.child_states(&p)?;
        let finished = kids
            .iter()
            .all(|s| matches!(s, State::Done | State::Cancelled));
        let done = kids.iter().filter(|s| **s == State::Done).count();
        if !finished || done == 0 {
            break;
        }
        let reason = "every child is done";
        let from = graph::set_state(tx, &p, State::Done, delta)?;
        record_state(tx, &p, from, State::Done, Some(reason), now)?;
        events.push(tx.append_event(
            now,
            actor,
            EventKind::StateChanged,
            Some(&p),
            json!({"from": from.as_str(), "to": "done", "reason": reason}),
        )?);
        events.push(tx.append_event(
            now,
            actor,
            EventKind::EpicCompleted,
            Some(&p),
            json!({"children": kids.len(), "done": done, "last": id}),
        )?);
        cur = tx.parent(&p)?;
    }
    Ok(())
}

pub(crate) fn apply_one<T: WriteTx>(
    tx: &mut T,
    actor: &str,
    now: i64,
    cmd: Command,
) -> Result<Applied> {
    let mut delta = HealthDelta::default();
    let mut events = Vec::new();
    let mut lease_token = None;
    let id = match cmd {
        Command::Add(new) => {
            new.validate()?;
            let kind = new.kind.unwrap_or(TaskType::Task);
            let priority = new.priority.unwrap_or(braid_core::model::DEFAULT_PRIORITY);
            let mut labels = new.labels.clone();
            labels.sort();
            labels.dedup();
            let id = insert_new(tx, &new, kind, priority, &labels, now)?;
            tx.index_labels(&id, &labels, false)?;
            let deps: Vec<(TaskId, braid_core::DepKind)> =
                new.deps.iter().map(|d| (d.id.clone(), d.kind)).collect();
            graph::attach_new(tx, &id, new.parent.as_ref(), &deps, &mut delta)?;
            events.push(tx.append_event(
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
            let before = tx.load(&id)?;
            let mut changes = serde_json::Map::new();
            if let Some(parent) = &patch.parent
                && *parent != before.parent
            {
                graph::set_parent(tx, &id, parent.as_ref(), &mut delta)?;
                changes.insert(
                    "parent".into(),
                    json!({"from": before.parent, "to": parent}),
                );
            }
            if let Some(kind) = patch.kind
                && kind != before.kind
            {
                let old = tx.node(&id)?.expect("task loaded above");
                let new = Node { kind, ..old };
                tx.put_node(&id, &new)?;
                delta.sub(&old);
                delta.add(&new);
                changes.insert(
                    "type".into(),
                    json!({"from": before.kind.as_str(), "to": kind.as_str()}),
                );
            }
            let mut labels = before.labels.clone();
            if !patch.add_labels.is_empty() || !patch.remove_labels.is_empty() {
                labels.retain(|l| !patch.remove_labels.contains(l));
                labels.extend(patch.add_labels.iter().cloned());
                labels.sort();
                labels.dedup();
            }
            let gates_json = patch.gates.as_ref().map(|g| json_strings(g));
            let labels_json = json_strings(&labels);
            // (column, before, after, the value to store)
            let mut sets: Vec<(&str, Value, Value, Field<'_>)> = Vec::new();
            if let Some(t) = &patch.title {
                sets.push(("title", json!(before.title), json!(t), Field::Text(Some(t))));
            }
            if let Some(d) = &patch.description {
                sets.push((
                    "description",
                    json!(before.description),
                    json!(d),
                    Field::Text(Some(d)),
                ));
            }
            if let Some(p) = patch.priority {
                sets.push((
                    "priority",
                    json!(before.priority),
                    json!(p),
                    Field::Int(p as i64),
                ));
            }
            if let Some(a) = &patch.assignee {
                sets.push((
                    "assignee",
                    json!(before.assignee),
                    json!(a),
                    Field::Text(a.as_deref()),
                ));
            }
            if let Some(a) = &patch.acceptance {
                sets.push((
                    "acceptance",
                    json!(before.acceptance),
                    json!(a),
                    Field::Text(Some(a)),
                ));
            }
            if let (Some(gates), Some(j)) = (&patch.gates, &gates_json) {
                sets.push((
                    "gates",
                    json!(before.gates),
                    json!(gates),
                    Field::Text(Some(j)),
                ));
            }
            if let Some(a) = &patch.agent {
                sets.push((
                    "agent",
                    json!(before.agent),
                    json!(a),
                    Field::Text(a.as_deref()),
                ));
            }
            if let Some(b) = &patch.branch {
                sets.push((
                    "branch",
                    json!(before.branch),
                    json!(b),
                    Field::Text(b.as_deref()),
                ));
            }
            let labels_changed = labels != before.labels;
            if labels_changed {
                sets.push((
                    "labels",
                    json!(before.labels),
                    json!(labels),
                    Field::Text(Some(&labels_json)),
                ));
            }
            for (col, from, to, value) in sets {
                if from != to {
                    tx.set_field(&id, col, value)?;
                    changes.insert(col.into(), json!({"from": from, "to": to}));
                }
            }
            if labels_changed {
                tx.index_labels(&id, &labels, true)?;
            }
            if changes.is_empty() {
                return Err(Error::Invalid(format!(
                    "{id}: nothing changed (the values given are the current ones)"
                )));
            }
            tx.touch(&id, now)?;
            events.push(tx.append_event(
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
            let from = graph::set_state(tx, &id, to, &mut delta)?;
            record_state(tx, &id, from, to, reason.as_deref(), now)?;
            if to == State::Open && from.is_closed() {
                // Reopened work gets a fresh set of attempts.
                tx.reset_attempts(&id)?;
            }
            events.push(tx.append_event(
                now,
                actor,
                EventKind::StateChanged,
                Some(&id),
                json!({"from": from.as_str(), "to": to.as_str(), "reason": reason}),
            )?);
            if matches!(to, State::Done | State::Cancelled) {
                close_epics(tx, actor, now, &id, &mut delta, &mut events)?;
            }
            id
        }
        Command::Claim {
            id,
            assignee,
            lease_ms,
        } => {
            let id = match id {
                Some(id) => {
                    let node = tx
                        .node(&id)?
                        .ok_or_else(|| braid_core::Error::NotFound(id.clone()))?;
                    if !node.ready() {
                        let why = if node.kind == TaskType::Epic {
                            "it is an epic (epics are containers; claim a task under it)".to_owned()
                        } else if node.state != State::Open {
                            format!("it is {}", node.state)
                        } else {
                            graph::why_blocked(tx, &id)?.join("; ")
                        };
                        return Err(braid_core::Error::NotReady { id, why }.into());
                    }
                    id
                }
                None => tx.next_ready()?.ok_or(Error::NothingReady)?,
            };
            let from = graph::set_state(tx, &id, State::InProgress, &mut delta)?;
            record_state(tx, &id, from, State::InProgress, None, now)?;
            let token = new_lease_token();
            let expires = now + lease_ms;
            let attempt = tx.take_lease(&id, &assignee, &token, expires)?;
            events.push(tx.append_event(
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
            tx.extend_lease(&id, now + lease_ms, false, now)?;
            id
        }
        Command::NextAttempt {
            id,
            token,
            lease_ms,
        } => {
            check_lease(tx, &id, &token)?;
            tx.extend_lease(&id, now + lease_ms, true, now)?;
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
            let from = graph::set_state(tx, &id, to, &mut delta)?;
            record_state(tx, &id, from, to, reason.as_deref(), now)?;
            if refund_attempt {
                tx.refund_attempt(&id)?;
            }
            let kind = if to == State::Open {
                EventKind::Released
            } else {
                EventKind::StateChanged
            };
            events.push(tx.append_event(
                now,
                actor,
                kind,
                Some(&id),
                json!({"from": from.as_str(), "to": to.as_str(), "reason": reason, "refund_attempt": refund_attempt}),
            )?);
            if to == State::Done {
                close_epics(tx, actor, now, &id, &mut delta, &mut events)?;
            }
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
            let from = graph::set_state(tx, &id, State::Open, &mut delta)?;
            record_state(tx, &id, from, State::Open, None, now)?;
            events.push(tx.append_event(
                now,
                actor,
                EventKind::Rescued,
                Some(&id),
                json!({"expired_ms_ago": now - expires}),
            )?);
            id
        }
        Command::Record { id, kind, payload } => {
            if !tx.exists(&id)? {
                return Err(braid_core::Error::NotFound(id).into());
            }
            events.push(tx.append_event(now, actor, kind, Some(&id), payload)?);
            id
        }
        Command::DepAdd { from, to, kind } => {
            graph::add_dep(tx, &from, &to, kind, &mut delta)?;
            tx.touch(&from, now)?;
            events.push(tx.append_event(
                now,
                actor,
                EventKind::DepAdded,
                Some(&from),
                json!({"to": to, "kind": kind.as_str()}),
            )?);
            from
        }
        Command::DepRm { from, to } => {
            let kind = graph::remove_dep(tx, &from, &to, &mut delta)?;
            tx.touch(&from, now)?;
            events.push(tx.append_event(
                now,
                actor,
                EventKind::DepRemoved,
                Some(&from),
                json!({"to": to, "kind": kind.as_str()}),
            )?);
            from
        }
    };
    tx.write_counters(&delta)?;
    let task = tx.load(&id)?;
    Ok(Applied {
        task,
        events,
        lease_token,
    })
}
