//! The wire: one set of input and view types for the command line's
//! `--json`, the HTTP API, the MCP tools and the task files. Views are built
//! from stored types on purpose, never by serialising them (a stored type
//! may change; a view changes only on purpose). The OpenAPI document
//! (utoipa) and the MCP tools' JSON schemas (schemars) derive from these
//! same types, and docs/json.md is checked against them by a test.

use std::collections::BTreeMap;

use braid_core::{Dep, DepKind, Event, EventKind, State, Task, TaskId, TaskType};
use braid_store::TreeRow;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// RFC 3339 UTC, with milliseconds when they are not zero.
pub fn ts(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| ms.to_string())
}

/// Reads an RFC 3339 time back into ms since the epoch.
pub fn parse_ts(field: &'static str, s: &str) -> Result<i64, braid_core::Error> {
    s.parse::<jiff::Timestamp>()
        .map(|t| t.as_millisecond())
        .map_err(|e| {
            braid_core::Error::invalid(field, format!("{s:?} is not an RFC 3339 time: {e}"))
        })
}

fn id_of(field: &'static str, s: &str) -> Result<TaskId, braid_core::Error> {
    TaskId::parse(s).map_err(|e| braid_core::Error::invalid(field, e.to_string()))
}

/// A dependency: the task depends on `id`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema, JsonSchema)]
pub struct DepView {
    pub id: String,
    /// blocks | related | discovered-from
    #[schema(value_type = String)]
    #[schemars(with = "String")]
    pub kind: DepKind,
}

/// A claim on a task.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema, JsonSchema)]
pub struct LeaseView {
    pub expires_at: String,
    pub attempt: u32,
    /// Only in the answer to the claim that took it: present it to finish
    /// or renew the claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// A task.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema, JsonSchema)]
pub struct TaskView {
    pub id: String,
    pub title: String,
    #[serde(default)]
    pub description: String,
    /// task | epic | bug | chore
    #[serde(rename = "type")]
    #[schema(value_type = String)]
    #[schemars(with = "String")]
    pub kind: TaskType,
    /// 0 (highest) .. 4
    pub priority: u8,
    /// open | in_progress | review | done | failed | cancelled | deferred
    #[schema(value_type = String)]
    #[schemars(with = "String")]
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
    /// Derived: open, not an epic, no unfinished blocker, no held ancestor.
    #[serde(default)]
    pub ready: bool,
    /// Only while claimed.
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
                token: None,
            }),
        }
    }
}

impl TaskView {
    /// Back to a stored task (imports). Derived fields are recomputed by the
    /// store; `ready` and `lease` are ignored.
    pub fn into_task(self) -> Result<Task, braid_core::Error> {
        let deps = self
            .deps
            .into_iter()
            .map(|d| {
                Ok(Dep {
                    id: id_of("deps", &d.id)?,
                    kind: d.kind,
                })
            })
            .collect::<Result<Vec<_>, braid_core::Error>>()?;
        Ok(Task {
            id: id_of("id", &self.id)?,
            title: self.title,
            description: self.description,
            kind: self.kind,
            priority: self.priority,
            state: self.state,
            parent: self.parent.map(|p| id_of("parent", &p)).transpose()?,
            labels: self.labels,
            assignee: self.assignee,
            acceptance: self.acceptance,
            gates: self.gates,
            agent: self.agent,
            branch: self.branch,
            created_at: parse_ts("created_at", &self.created_at)?,
            updated_at: parse_ts("updated_at", &self.updated_at)?,
            closed_at: self
                .closed_at
                .map(|c| parse_ts("closed_at", &c))
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

/// An entry of the event log.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema, JsonSchema)]
pub struct EventView {
    /// Strictly increasing.
    pub seq: i64,
    pub at: String,
    pub actor: String,
    pub kind: String,
    #[serde(default)]
    pub task: Option<String>,
    /// What changed; the shape depends on `kind` (docs/json.md).
    #[serde(default)]
    #[schema(value_type = Object)]
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
            payload: payload_view(e.kind, &e.payload),
        }
    }
}

/// A stored payload as the wire shows it: times as RFC 3339 (a claim's
/// `lease_expires` is kept as ms since the epoch).
pub fn payload_view(kind: EventKind, payload: &serde_json::Value) -> serde_json::Value {
    let mut p = payload.clone();
    if kind == EventKind::Claimed
        && let Some(ms) = p["lease_expires"].as_i64()
    {
        p["lease_expires"] = serde_json::Value::String(ts(ms));
    }
    p
}

impl EventView {
    /// Back to a stored event (imports).
    /// The event as stored (an import). Its actor and, for a comment, its
    /// author and text are checked as a comment made today is; other
    /// payloads (agent output in a `retrying` tail, say) are kept as they
    /// were recorded.
    pub fn into_event(self) -> Result<Event, braid_core::Error> {
        braid_core::model::check_name("actor", &self.actor)?;
        let kind = EventKind::parse(&self.kind).ok_or_else(|| {
            braid_core::Error::invalid("kind", format!("unknown event kind {:?}", self.kind))
        })?;
        if kind == EventKind::Commented {
            if let Some(author) = self.payload["author"].as_str() {
                braid_core::model::check_name("author", author)?;
            }
            if let Some(text) = self.payload["text"].as_str() {
                braid_core::model::check_text("text", text)?;
            }
        }
        let mut payload = self.payload;
        if kind == EventKind::Claimed
            && let Some(t) = payload["lease_expires"].as_str()
        {
            payload["lease_expires"] = parse_ts("lease_expires", t)?.into();
        }
        Ok(Event {
            seq: self.seq,
            at: parse_ts("at", &self.at)?,
            actor: self.actor,
            kind,
            task: self.task.map(|t| id_of("task", &t)).transpose()?,
            payload,
        })
    }
}

/// A comment on a task (a `commented` event).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema, JsonSchema)]
pub struct CommentView {
    pub seq: i64,
    pub at: String,
    pub author: String,
    pub text: String,
}

impl From<&Event> for CommentView {
    fn from(e: &Event) -> Self {
        CommentView {
            seq: e.seq,
            at: ts(e.at),
            author: e.payload["author"].as_str().unwrap_or(&e.actor).to_owned(),
            text: e.payload["text"].as_str().unwrap_or_default().to_owned(),
        }
    }
}

/// Counts by state, ready and blocked work (maintained counters).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema, JsonSchema)]
pub struct HealthView {
    pub total: u64,
    pub epics: u64,
    pub ready: u64,
    pub blocked: u64,
    pub by_state: BTreeMap<String, u64>,
    /// The event log's last seq.
    pub last_seq: i64,
}

/// A task in full: the task, why it is not ready, its children, its latest
/// events and comments (`braid show`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema, JsonSchema)]
pub struct ShowView {
    #[serde(flatten)]
    pub task: TaskView,
    /// Why it is not ready, in words.
    pub blocked_by: Vec<String>,
    pub children: Vec<String>,
    /// The tasks that depend on it (any kind), at most 100.
    pub dependents: Vec<DepView>,
    /// The latest events, oldest first.
    pub events: Vec<EventView>,
    /// The latest comments, oldest first.
    pub comments: Vec<CommentView>,
    /// Its agent attempts as the cost ledger holds them, oldest first.
    pub attempts: Vec<UsageView>,
    /// What its attempts cost in all, in USD (attempts of unknown cost
    /// not included).
    pub cost_usd: f64,
    /// Its branch, where it started and whether it landed (filled where
    /// the repository is at hand: the command line).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git: Option<GitView>,
}

/// A task's branch: where it started, and whether its work is on the
/// target.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema, JsonSchema)]
pub struct GitView {
    /// `braid/<id>`.
    pub branch: String,
    /// The branch is there (an agent has started on the task).
    pub exists: bool,
    /// The branch finished work lands on (`HEAD` without `[merge]`).
    pub target: String,
    /// The commit the branch started at, as its first attempt recorded it.
    pub base: Option<String>,
    /// Dependencies whose unlanded work its base holds.
    pub stacked: Vec<String>,
    /// Every commit of the branch is on the target.
    pub landed: bool,
}

/// One agent attempt in the cost ledger: what its CLI reported.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema, JsonSchema)]
pub struct UsageView {
    pub task: String,
    pub attempt: Option<i64>,
    pub agent: String,
    pub model: Option<String>,
    pub session: Option<String>,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cache_read_tokens: i64,
    pub cache_write_tokens: i64,
    /// As reported; `null` when the agent reports none.
    pub cost_usd: Option<f64>,
    pub turns: Option<i64>,
    pub duration_ms: i64,
    pub outcome: String,
    /// When it ended (RFC 3339).
    pub at: String,
}

impl From<&braid_store::UsageRow> for UsageView {
    fn from(r: &braid_store::UsageRow) -> Self {
        UsageView {
            task: r.task.to_string(),
            attempt: r.attempt,
            agent: r.agent.clone(),
            model: r.model.clone(),
            session: r.session.clone(),
            input_tokens: r.input_tokens,
            output_tokens: r.output_tokens,
            cache_read_tokens: r.cache_read_tokens,
            cache_write_tokens: r.cache_write_tokens,
            cost_usd: r.cost_usd,
            turns: r.turns,
            duration_ms: r.duration_ms,
            outcome: r.outcome.clone(),
            at: ts(r.at),
        }
    }
}

/// The ledger summed by one key (`braid cost`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema, JsonSchema)]
pub struct CostView {
    /// The task id, agent, model or UTC day.
    pub key: String,
    pub attempts: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cache_read_tokens: i64,
    pub cache_write_tokens: i64,
    pub cost_usd: f64,
    /// Attempts whose agent reported no cost (counted in `attempts` only).
    pub unpriced: i64,
    pub duration_ms: i64,
}

impl From<&braid_store::UsageTotal> for CostView {
    fn from(t: &braid_store::UsageTotal) -> Self {
        CostView {
            key: t.key.clone(),
            attempts: t.attempts,
            input_tokens: t.input_tokens,
            output_tokens: t.output_tokens,
            cache_read_tokens: t.cache_read_tokens,
            cache_write_tokens: t.cache_write_tokens,
            cost_usd: t.cost_usd,
            unpriced: t.unpriced,
            duration_ms: t.duration_ms,
        }
    }
}

/// One row of a tree: a flat list in depth-first order (never nested, so a
/// million-deep chain serialises without recursion).
#[derive(Clone, Debug, Serialize, ToSchema, JsonSchema)]
pub struct TreeRowView<'a> {
    pub id: &'a str,
    pub parent: Option<&'a str>,
    pub depth: usize,
    pub title: &'a str,
    #[serde(rename = "type")]
    #[schema(value_type = String)]
    #[schemars(with = "String")]
    pub kind: TaskType,
    #[schema(value_type = String)]
    #[schemars(with = "String")]
    pub state: State,
    pub priority: u8,
    pub ready: bool,
}

impl<'a> TreeRowView<'a> {
    pub fn new(r: &'a TreeRow, depth: usize) -> Self {
        TreeRowView {
            id: r.id.as_str(),
            parent: r.parent.as_ref().map(TaskId::as_str),
            depth,
            title: &r.title,
            kind: r.kind,
            state: r.state,
            priority: r.priority,
            ready: r.ready,
        }
    }
}

/// Why a task is not ready.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, JsonSchema, PartialEq)]
pub struct WhyView {
    pub id: String,
    pub ready: bool,
    /// In words: which dependency or ancestor holds it, and how.
    pub reasons: Vec<String>,
    /// The unfinished `blocks` dependencies, by id.
    pub blocked_by: Vec<String>,
}

/// A node of a dependency graph.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, JsonSchema, PartialEq)]
pub struct NodeView {
    pub id: String,
    pub title: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub state: String,
    pub parent: Option<String>,
    pub ready: bool,
}

/// A dependency edge: `from` depends on `to`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, JsonSchema, PartialEq)]
pub struct EdgeView {
    pub from: String,
    pub to: String,
    pub kind: String,
}

/// An epic's subtree and the dependencies among (and out of) it.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, JsonSchema, PartialEq)]
pub struct GraphView {
    pub root: String,
    pub nodes: Vec<NodeView>,
    pub edges: Vec<EdgeView>,
    /// True when the subtree was cut at the node limit.
    pub truncated: bool,
}

/// One log file of a task's attempts.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, JsonSchema, PartialEq)]
pub struct LogView {
    /// `<attempt>-<name>.log`
    pub name: String,
    pub size: u64,
}

/// A task being worked on, with its logs.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, JsonSchema, PartialEq)]
pub struct RunView {
    pub task: TaskView,
    pub logs: Vec<LogView>,
}

/// Every error: a stable `code` and a message that names the thing and the
/// rule (never SQL, paths or stack traces).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, JsonSchema)]
pub struct ErrorView {
    pub error: ErrorBody,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, JsonSchema)]
pub struct ErrorBody {
    /// invalid | not_found | conflict | too_large | rate_limited | internal
    pub code: String,
    pub message: String,
}

// ---- Inputs --------------------------------------------------------------

/// A dependency to add: the task depends on `id`. Also accepted as a bare
/// id string (kind blocks).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, JsonSchema, PartialEq, Default)]
#[serde(from = "DepInRepr")]
pub struct DepIn {
    /// The task depended on (an id, or a unique prefix of one).
    pub id: String,
    /// blocks (default) | related | discovered-from
    #[serde(default)]
    pub kind: Option<String>,
}

/// How a dependency may be written: a bare id, or an object.
#[derive(Deserialize, JsonSchema)]
#[serde(untagged)]
enum DepInRepr {
    /// The id of the task depended on (kind blocks).
    Id(String),
    Full {
        /// The task depended on (an id, or a unique prefix of one).
        id: String,
        /// blocks (default) | related | discovered-from
        #[serde(default)]
        kind: Option<String>,
    },
}

impl From<DepInRepr> for DepIn {
    fn from(r: DepInRepr) -> DepIn {
        match r {
            DepInRepr::Id(id) => DepIn { id, kind: None },
            DepInRepr::Full { id, kind } => DepIn { id, kind },
        }
    }
}

/// A task to create.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema, JsonSchema, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NewTaskIn {
    pub title: String,
    #[serde(default)]
    pub description: String,
    /// task (default) | epic | bug | chore
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    /// 0 (highest) .. 4; default 2
    #[serde(default)]
    pub priority: Option<i64>,
    /// The epic (or task) it belongs under.
    #[serde(default)]
    pub parent: Option<String>,
    /// What it waits for.
    #[serde(default)]
    pub deps: Vec<DepIn>,
    #[serde(default)]
    pub labels: Vec<String>,
    /// Gates (names or commands) it must pass.
    #[serde(default)]
    pub gates: Vec<String>,
    /// What "done" means.
    #[serde(default)]
    pub acceptance: String,
    #[serde(default)]
    pub assignee: Option<String>,
    /// The agent that should do it.
    #[serde(default)]
    pub agent: Option<String>,
}

/// Changes to a task. Absent fields stay; `parent`, `assignee`, `agent`
/// and `branch` set to null (or "") clear the field.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema, JsonSchema, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PatchIn {
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub priority: Option<i64>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    #[schemars(with = "Option<String>")]
    pub parent: Option<Option<String>>,
    #[serde(default)]
    pub add_labels: Vec<String>,
    #[serde(default)]
    pub remove_labels: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    #[schemars(with = "Option<String>")]
    pub assignee: Option<Option<String>>,
    #[serde(default)]
    pub acceptance: Option<String>,
    /// Replaces the gates.
    #[serde(default)]
    pub gates: Option<Vec<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    #[schemars(with = "Option<String>")]
    pub agent: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    #[schemars(with = "Option<String>")]
    pub branch: Option<Option<String>>,
}

/// Present-but-null becomes `Some(None)`; absent stays `None`.
fn nullable<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Ok(Some(Option::deserialize(d)?))
}

/// A reason, recorded with a state change.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct ReasonIn {
    #[serde(default)]
    pub reason: Option<String>,
}

/// A claim to take.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct ClaimIn {
    /// Who takes it (default: the caller). Also accepted as `as`.
    #[serde(default, alias = "as")]
    pub assignee: Option<String>,
    /// How long the claim holds before it may be rescued: 10 s to 7 days
    /// (default 1800).
    #[serde(default)]
    pub lease_seconds: Option<u64>,
}

/// A person's answer to a task that waits on one (`braid answer`).
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AnswerIn {
    pub text: String,
}

/// A task waiting for a person: what was asked, and by whom.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema, JsonSchema)]
pub struct AttentionView {
    pub id: String,
    pub title: String,
    pub state: String,
    /// The question (or why it waits), as the agent or braid put it.
    pub question: String,
    /// `question` (the agent asked), `denied` (it was refused a
    /// permission), `budget`, or `escalation` (braid gave up on it).
    pub reason: String,
    pub agent: Option<String>,
    /// The agent session an answer resumes.
    pub session: Option<String>,
    /// When it was asked (RFC 3339).
    pub at: Option<String>,
}

/// What agents cost, for the board: the project total, each task's and
/// each epic's (the sum over everything under it), and the budgets.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema, JsonSchema)]
pub struct CostSummaryView {
    pub total_usd: f64,
    pub attempts: i64,
    /// Task id → USD, for tasks that cost anything.
    pub tasks: BTreeMap<String, f64>,
    /// Epic (or any parent) id → USD over all its descendants.
    pub epics: BTreeMap<String, f64>,
    pub budgets: Vec<BudgetView>,
}

/// One budget: its limit and what was spent against it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema, JsonSchema)]
pub struct BudgetView {
    /// `task_usd`, `run_usd` or `day_usd`.
    pub budget: String,
    pub limit_usd: f64,
    /// For `task_usd`: the costliest task's spend; for `run_usd`: the
    /// current run's (0 when none runs); for `day_usd`: today's (UTC).
    pub spent_usd: f64,
    /// For `task_usd`: the costliest task.
    pub task: Option<String>,
}

/// A comment to add.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CommentIn {
    pub text: String,
    /// Who says it (default: the caller).
    #[serde(default)]
    pub author: Option<String>,
}

/// Which tasks to list.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct ListIn {
    /// Only these states.
    #[serde(default)]
    pub states: Vec<String>,
    /// Only these types.
    #[serde(default)]
    pub types: Vec<String>,
    #[serde(default)]
    pub label: Option<String>,
    /// Only direct children of this task.
    #[serde(default)]
    pub parent: Option<String>,
    #[serde(default)]
    pub assignee: Option<String>,
    /// Only ready (true) or only not ready (false) tasks.
    #[serde(default)]
    pub ready: Option<bool>,
    #[serde(default)]
    pub limit: Option<usize>,
}

/// A task as a whole document (a task file): what the task should be.
/// Applying it changes what differs, in one transaction. Absent optional
/// fields are left as they are.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema, JsonSchema, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TaskDoc {
    pub title: String,
    #[serde(default)]
    pub description: String,
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub priority: Option<i64>,
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub parent: Option<String>,
    #[serde(default)]
    pub labels: Vec<String>,
    #[serde(default)]
    pub assignee: Option<String>,
    #[serde(default)]
    pub acceptance: Option<String>,
    #[serde(default)]
    pub gates: Vec<String>,
    #[serde(default)]
    pub agent: Option<String>,
    #[serde(default)]
    pub deps: Vec<DepIn>,
}

/// One file a branch changed.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema, JsonSchema)]
pub struct DiffFileView {
    pub path: String,
    /// Where a renamed or copied file came from.
    pub old_path: Option<String>,
    /// `added`, `modified`, `deleted`, `renamed`, `copied` or `type changed`.
    pub status: String,
    pub added: u64,
    pub removed: u64,
    /// A binary file: no line counts, no text diff.
    pub binary: bool,
    /// More changed lines than a page shows at once: summarised, its diff
    /// sent only when asked for by name (`file`).
    pub large: bool,
}

/// A task's branch against where it started: the files it changed and,
/// unless only the summary was asked for, the unified diff of a page of
/// them.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema, JsonSchema)]
pub struct DiffView {
    pub id: String,
    pub branch: String,
    /// The commit the branch is compared with (where it started).
    pub base: String,
    /// The branch's tip.
    pub head: String,
    pub files: Vec<DiffFileView>,
    pub added: u64,
    pub removed: u64,
    /// `git diff` text of `files[offset..next]` (large files left out
    /// unless named); `null` with `stat`.
    pub patch: Option<String>,
    pub offset: usize,
    /// Where the next page starts, when the patch stops before the last file.
    pub next: Option<usize>,
}

/// Which part of a diff to send.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct DiffIn {
    /// Only the file list and counts.
    #[serde(default)]
    pub stat: bool,
    /// The first file of the page (default 0).
    #[serde(default)]
    pub offset: Option<usize>,
    /// Changed lines a page holds, at least one file (default 5000).
    #[serde(default)]
    pub lines: Option<usize>,
    /// Only this file, however large.
    #[serde(default)]
    pub file: Option<String>,
}

/// A comment on one line of a branch's file (the new side of the diff).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, ToSchema, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LineCommentIn {
    pub file: String,
    /// 1-based, in the file as the branch has it.
    pub line: u64,
    pub text: String,
}

/// A person sends work back: why, and what to change where.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct RejectIn {
    pub message: String,
    #[serde(default)]
    pub comments: Vec<LineCommentIn>,
}

/// A person approves a branch as it stands.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct ApproveIn {
    #[serde(default)]
    pub message: Option<String>,
}

/// A line comment as recorded, and whether its line still reads the same.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema, JsonSchema)]
pub struct LineCommentView {
    pub seq: i64,
    pub at: String,
    pub author: String,
    pub file: String,
    pub line: u64,
    pub text: String,
    /// The line as it read when the comment was made.
    pub code: String,
    /// The lines around it then (up to two each side), from `start`.
    pub snippet: String,
    pub start: u64,
    /// The branch's tip the comment was made on.
    pub commit: String,
    /// The line reads differently on the branch now (or is gone).
    pub outdated: bool,
}

/// An approval or a request for changes.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema, JsonSchema)]
pub struct DecisionView {
    pub seq: i64,
    pub at: String,
    pub by: String,
    /// `approved` or `changes_requested`.
    pub kind: String,
    pub message: Option<String>,
    /// The branch's tip it was made on.
    pub head: String,
    /// Line comments sent with it.
    pub comments: usize,
}

/// A gate's result in one attempt, with its log's name.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema, JsonSchema)]
pub struct GateRunView {
    pub attempt: Option<i64>,
    pub gate: String,
    pub passed: bool,
    pub cached: bool,
    pub exit: Option<String>,
    pub duration_ms: i64,
    pub at: String,
    /// `<attempt>-gate-<name>.log` under the task's logs, when it ran.
    pub log: Option<String>,
}

/// What the merge plan makes of a branch now.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema, JsonSchema)]
pub struct MergeView {
    /// The branch lands with the next merge run.
    pub planned: bool,
    /// Its level in the merge pyramid (after the branches it depends on).
    pub level: Option<usize>,
    /// The branches it is tested with.
    pub batch: Vec<String>,
    /// Other branches it conflicts with, and the files.
    pub conflicts: Vec<ConflictView>,
    /// What keeps it out of the plan (a person, an approval, unfinished
    /// work), in the plan's words.
    pub waits: Vec<String>,
    /// The plan could not be made (no target branch, say).
    pub error: Option<String>,
}

/// A conflict between two branches.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema, JsonSchema)]
pub struct ConflictView {
    pub with: String,
    pub files: Vec<String>,
}

/// A task waiting for review, as `braid review list` shows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema, JsonSchema)]
pub struct ReviewItemView {
    pub id: String,
    pub title: String,
    pub state: String,
    pub branch: String,
    /// The branch is approved as it stands.
    pub approved: bool,
    pub files: usize,
    pub added: u64,
    pub removed: u64,
    /// Line comments made on it so far.
    pub comments: usize,
    /// When it last changed (RFC 3339).
    pub updated_at: String,
}

/// Everything a reviewer looks at: the task, the diff's file list, the
/// decisions and line comments (across attempts), the gates, the attempts
/// and the merge plan's view.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema, JsonSchema)]
pub struct ReviewView {
    pub task: TaskView,
    pub diff: DiffView,
    pub approved: bool,
    /// `[merge] require_approval`: nothing lands without an approval.
    pub require_approval: bool,
    pub decisions: Vec<DecisionView>,
    pub comments: Vec<LineCommentView>,
    pub gates: Vec<GateRunView>,
    pub attempts: Vec<UsageView>,
    pub merge: MergeView,
}
