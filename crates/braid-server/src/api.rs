//! The API's wire types: built from stored types on purpose (never by
//! serialising them), documented in the OpenAPI document. Field names and
//! shapes match the command line's `--json` (docs/json.md).

use braid_core::{Event, Task};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

fn ts(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| ms.to_string())
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct DepOut {
    pub id: String,
    /// blocks | related | discovered-from
    pub kind: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct LeaseOut {
    pub expires_at: String,
    pub attempt: u32,
    /// Only in the answer to the claim that took it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// A task.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct TaskOut {
    pub id: String,
    pub title: String,
    pub description: String,
    /// task | epic | bug | chore
    #[serde(rename = "type")]
    pub kind: String,
    pub priority: u8,
    /// open | in_progress | review | done | failed | cancelled | deferred
    pub state: String,
    pub parent: Option<String>,
    pub labels: Vec<String>,
    pub assignee: Option<String>,
    pub acceptance: String,
    pub gates: Vec<String>,
    pub agent: Option<String>,
    pub branch: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub closed_at: Option<String>,
    pub close_reason: Option<String>,
    pub deps: Vec<DepOut>,
    /// Derived: open, not an epic, no unfinished blocker, no held ancestor.
    pub ready: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease: Option<LeaseOut>,
}

impl From<&Task> for TaskOut {
    fn from(t: &Task) -> Self {
        TaskOut {
            id: t.id.to_string(),
            title: t.title.clone(),
            description: t.description.clone(),
            kind: t.kind.as_str().to_owned(),
            priority: t.priority,
            state: t.state.as_str().to_owned(),
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
                .map(|d| DepOut {
                    id: d.id.to_string(),
                    kind: d.kind.as_str().to_owned(),
                })
                .collect(),
            ready: t.ready,
            lease: t.lease.as_ref().map(|l| LeaseOut {
                expires_at: ts(l.expires_at),
                attempt: l.attempt,
                token: None,
            }),
        }
    }
}

/// A task to create.
#[derive(Clone, Debug, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct NewTaskIn {
    pub title: String,
    #[serde(default)]
    pub description: String,
    /// task (default) | epic | bug | chore
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// 0 (highest) .. 4; default 2
    pub priority: Option<i64>,
    pub parent: Option<String>,
    #[serde(default)]
    pub deps: Vec<DepIn>,
    #[serde(default)]
    pub labels: Vec<String>,
    #[serde(default)]
    pub gates: Vec<String>,
    #[serde(default)]
    pub acceptance: String,
    pub assignee: Option<String>,
    pub agent: Option<String>,
}

/// A dependency to add: the task depends on `id`.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DepIn {
    pub id: String,
    /// blocks (default) | related | discovered-from
    pub kind: Option<String>,
}

/// Changes to a task. Absent fields stay; `parent`, `assignee`, `agent`
/// and `branch` set to null clear the field.
#[derive(Clone, Debug, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct PatchIn {
    pub title: Option<String>,
    pub description: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub priority: Option<i64>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub parent: Option<Option<String>>,
    #[serde(default)]
    pub add_labels: Vec<String>,
    #[serde(default)]
    pub remove_labels: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub assignee: Option<Option<String>>,
    pub acceptance: Option<String>,
    pub gates: Option<Vec<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub agent: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub branch: Option<Option<String>>,
}

/// Present-but-null becomes `Some(None)`; absent stays `None`.
fn nullable<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Ok(Some(Option::deserialize(d)?))
}

#[derive(Clone, Debug, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct ReasonIn {
    pub reason: Option<String>,
}

#[derive(Clone, Debug, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct ClaimIn {
    /// Who takes it (default: the server's actor).
    pub assignee: Option<String>,
    /// How long the claim holds (default 1800).
    pub lease_seconds: Option<u64>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct HealthOut {
    pub total: u64,
    pub epics: u64,
    pub ready: u64,
    pub blocked: u64,
    pub by_state: std::collections::BTreeMap<String, u64>,
    pub last_seq: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct EventOut {
    pub seq: i64,
    pub at: String,
    pub actor: String,
    pub kind: String,
    pub task: Option<String>,
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
}

impl From<&Event> for EventOut {
    fn from(e: &Event) -> Self {
        EventOut {
            seq: e.seq,
            at: ts(e.at),
            actor: e.actor.clone(),
            kind: e.kind.as_str().to_owned(),
            task: e.task.as_ref().map(|t| t.to_string()),
            payload: e.payload.clone(),
        }
    }
}

/// Every error: a stable `code` and a message that names the thing and the
/// rule (never SQL, paths or stack traces).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorOut {
    pub error: ErrorBody,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// invalid | not_found | conflict | internal
    pub code: String,
    pub message: String,
}

/// Why a task is not ready.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct WhyOut {
    pub id: String,
    pub ready: bool,
    /// In words: which dependency or ancestor holds it, and how.
    pub reasons: Vec<String>,
    /// The unfinished `blocks` dependencies, by id.
    pub blocked_by: Vec<String>,
}

/// A node of a dependency graph.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct NodeOut {
    pub id: String,
    pub title: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub state: String,
    pub parent: Option<String>,
    pub ready: bool,
}

/// A dependency edge: `from` depends on `to`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct EdgeOut {
    pub from: String,
    pub to: String,
    pub kind: String,
}

/// An epic's subtree and the dependencies among (and out of) it.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct GraphOut {
    pub root: String,
    pub nodes: Vec<NodeOut>,
    pub edges: Vec<EdgeOut>,
    /// True when the subtree was cut at the node limit.
    pub truncated: bool,
}

/// One log file of a task's attempts.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct LogOut {
    /// `<attempt>-<name>.log`
    pub name: String,
    pub size: u64,
}

/// A task being worked on, with its logs.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct RunOut {
    pub task: TaskOut,
    pub logs: Vec<LogOut>,
}

/// A comment on a task.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct CommentOut {
    pub seq: i64,
    pub at: String,
    pub author: String,
    pub text: String,
}

impl From<&Event> for CommentOut {
    fn from(e: &Event) -> Self {
        CommentOut {
            seq: e.seq,
            at: ts(e.at),
            author: e.payload["author"].as_str().unwrap_or(&e.actor).to_owned(),
            text: e.payload["text"].as_str().unwrap_or_default().to_owned(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommentIn {
    pub text: String,
    /// Who says it (default: the server's actor).
    pub author: Option<String>,
}
