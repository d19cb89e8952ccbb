//! Wire shapes of the command line's `--json` output and of export files.
//! These are a contract (docs/json.md): they are built from stored types on
//! purpose, never by serialising the stored types themselves.

use braid_core::{Dep, DepKind, Event, State, Task, TaskId, TaskType};
use braid_store::TreeRow;
use serde::{Deserialize, Serialize};

/// RFC 3339 UTC with milliseconds when they are not zero.
pub fn ts(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| ms.to_string())
}

pub fn parse_ts(s: &str) -> Result<i64, String> {
    s.parse::<jiff::Timestamp>()
        .map(|t| t.as_millisecond())
        .map_err(|e| format!("{s:?} is not an RFC 3339 time: {e}"))
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct DepView {
    pub id: String,
    pub kind: DepKind,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LeaseView {
    pub expires_at: String,
    pub attempt: u32,
}

/// A task on the wire.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TaskView {
    pub id: String,
    pub title: String,
    #[serde(default)]
    pub description: String,
    #[serde(rename = "type")]
    pub kind: TaskType,
    pub priority: u8,
    pub state: State,
    #[serde(default)]
    pub parent: Option<String>,
    #[serde(default)]
    pub labels: Vec<String>,
    #[serde(default)]
    pub assignee: Option<String>,
    #[serde(default)]
    pub acceptance: String,
    #[serde(default)]
    pub gates: Vec<String>,
    #[serde(default)]
    pub agent: Option<String>,
    #[serde(default)]
    pub branch: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    #[serde(default)]
    pub closed_at: Option<String>,
    #[serde(default)]
    pub close_reason: Option<String>,
    #[serde(default)]
    pub deps: Vec<DepView>,
    #[serde(default)]
    pub ready: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<LeaseView>,
}

impl From<&Task> for TaskView {
    fn from(t: &Task) -> Self {
        TaskView {
            id: t.id.to_string(),
            title: t.title.clone(),
            description: t.description.clone(),
            kind: t.kind,
            priority: t.priority,
            state: t.state,
            parent: t.parent.as_ref().map(|p| p.to_string()),
            labels: t.labels.clone(),
            assignee: t.assignee.clone(),
            acceptance: t.acceptance.clone(),
            gates: t.gates.clone(),
            agent: t.agent.clone(),
            branch: t.branch.clone(),
            created_at: ts(t.created_at),
            updated_at: ts(t.updated_at),
            closed_at: t.closed_at.map(ts),
            close_reason: t.close_reason.clone(),
            deps: t
                .deps
                .iter()
                .map(|d| DepView {
                    id: d.id.to_string(),
                    kind: d.kind,
                })
                .collect(),
            ready: t.ready,
            lease: t.lease.as_ref().map(|l| LeaseView {
                expires_at: ts(l.expires_at),
                attempt: l.attempt,
            }),
        }
    }
}

impl TaskView {
    /// Back to a stored task (for imports). Derived fields are recomputed by
    /// the store; `ready` and `lease` are ignored.
    pub fn into_task(self) -> Result<Task, String> {
        let id = TaskId::parse(&self.id).map_err(|e| e.to_string())?;
        let parent = self
            .parent
            .map(|p| TaskId::parse(&p).map_err(|e| format!("parent: {e}")))
            .transpose()?;
        let deps = self
            .deps
            .into_iter()
            .map(|d| {
                Ok(Dep {
                    id: TaskId::parse(&d.id).map_err(|e| format!("deps: {e}"))?,
                    kind: d.kind,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Task {
            id,
            title: self.title,
            description: self.description,
            kind: self.kind,
            priority: self.priority,
            state: self.state,
            parent,
            labels: self.labels,
            assignee: self.assignee,
            acceptance: self.acceptance,
            gates: self.gates,
            agent: self.agent,
            branch: self.branch,
            created_at: parse_ts(&self.created_at).map_err(|e| format!("created_at: {e}"))?,
            updated_at: parse_ts(&self.updated_at).map_err(|e| format!("updated_at: {e}"))?,
            closed_at: self
                .closed_at
                .map(|c| parse_ts(&c).map_err(|e| format!("closed_at: {e}")))
                .transpose()?,
            close_reason: self.close_reason,
            deps,
            ready: false,
            blockers: 0,
            held_by: 0,
            lease: None,
        })
    }
}

/// An event on the wire.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EventView {
    pub seq: i64,
    pub at: String,
    pub actor: String,
    pub kind: String,
    #[serde(default)]
    pub task: Option<String>,
    #[serde(default)]
    pub payload: serde_json::Value,
}

impl From<&Event> for EventView {
    fn from(e: &Event) -> Self {
        EventView {
            seq: e.seq,
            at: ts(e.at),
            actor: e.actor.clone(),
            kind: e.kind.as_str().to_owned(),
            task: e.task.as_ref().map(|t| t.to_string()),
            payload: e.payload.clone(),
        }
    }
}

impl EventView {
    pub fn into_event(self) -> Result<Event, String> {
        Ok(Event {
            seq: self.seq,
            at: parse_ts(&self.at)?,
            actor: self.actor,
            kind: braid_core::EventKind::parse(&self.kind)
                .ok_or_else(|| format!("unknown event kind {:?}", self.kind))?,
            task: self
                .task
                .map(|t| TaskId::parse(&t).map_err(|e| e.to_string()))
                .transpose()?,
            payload: self.payload,
        })
    }
}

/// One row of `braid tree --json`: a flat list in depth-first order (never
/// nested, so a million-deep chain serialises without recursion).
#[derive(Clone, Debug, Serialize)]
pub struct TreeRowView {
    pub id: String,
    pub parent: Option<String>,
    pub depth: usize,
    pub title: String,
    #[serde(rename = "type")]
    pub kind: TaskType,
    pub state: State,
    pub priority: u8,
    pub ready: bool,
}

impl TreeRowView {
    pub fn new(r: &TreeRow, depth: usize) -> Self {
        TreeRowView {
            id: r.id.to_string(),
            parent: r.parent.as_ref().map(|p| p.to_string()),
            depth,
            title: r.title.clone(),
            kind: r.kind,
            state: r.state,
            priority: r.priority,
            ready: r.ready,
        }
    }
}
