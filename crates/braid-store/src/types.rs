//! The store's commands, results and errors: backend-neutral.

use braid_core::{DepKind, ErrorKind, Event, NewTask, State, Task, TaskId, TaskPatch, TaskType};

/// The cause of a backend failure, kept for the error's chain.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A store's errors. Failures of the machinery keep their cause as the
/// error's `source`, so a chain printer (`{:#}` in anyhow, the log) shows
/// the whole story while `to_string` names only what braid was doing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    Domain(#[from] braid_core::Error),
    #[error("{0}")]
    Invalid(String),
    #[error("locked: {0}")]
    Locked(String),
    #[error("nothing is ready to claim")]
    NothingReady,
    /// An id prefix that names several tasks.
    #[error("{prefix:?} names {} tasks: {}{}; give more of the id", .candidates.len(), format_ids(.candidates), if *.more { ", ..." } else { "" })]
    Ambiguous {
        prefix: String,
        candidates: Vec<TaskId>,
        /// More tasks match than are listed.
        more: bool,
    },
    #[error("{}", .path.display())]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("database error: {context}")]
    Backend {
        context: String,
        #[source]
        source: Option<BoxError>,
    },
    /// The database could not be reached, or dropped the connection (a
    /// server restart, a terminated backend). Nothing was committed by the
    /// call that failed unless it says so; calls are retried with backoff
    /// before this reaches a caller.
    #[error("database unavailable: {context}")]
    Unavailable {
        context: String,
        #[source]
        source: Option<BoxError>,
    },
    #[error("import rejected: {} problem(s); first: {}", .0.len(), .0.first().map(|p| p.to_string()).unwrap_or_default())]
    Import(Vec<ImportProblem>),
}

fn format_ids(ids: &[TaskId]) -> String {
    ids.iter()
        .map(TaskId::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Domain(e) => e.kind(),
            Error::Invalid(_) | Error::Import(_) | Error::Ambiguous { .. } => ErrorKind::Invalid,
            Error::Locked(_) => ErrorKind::Conflict,
            Error::NothingReady => ErrorKind::NotFound,
            Error::Io { .. } | Error::Backend { .. } | Error::Unavailable { .. } => {
                ErrorKind::Invalid
            }
        }
    }

    /// True for failures of the machinery rather than of the input.
    pub fn is_internal(&self) -> bool {
        matches!(
            self,
            Error::Io { .. } | Error::Backend { .. } | Error::Unavailable { .. }
        )
    }

    /// A failure of the backend with nothing underneath it.
    pub fn backend(context: impl Into<String>) -> Error {
        Error::Backend {
            context: context.into(),
            source: None,
        }
    }

    /// A failure of the backend, with its cause.
    pub fn backend_from(context: impl Into<String>, source: impl Into<BoxError>) -> Error {
        Error::Backend {
            context: context.into(),
            source: Some(source.into()),
        }
    }

    /// The database cannot be reached, with the cause.
    pub fn unavailable(context: impl Into<String>, source: Option<BoxError>) -> Error {
        Error::Unavailable {
            context: context.into(),
            source,
        }
    }

    /// A file braid reads or writes failed.
    pub fn io(path: &std::path::Path, source: std::io::Error) -> Error {
        Error::Io {
            path: path.to_owned(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A mutation of the work graph.
#[derive(Clone, Debug)]
pub enum Command {
    Add(NewTask),
    Update {
        id: TaskId,
        patch: TaskPatch,
    },
    SetState {
        id: TaskId,
        to: State,
        reason: Option<String>,
    },
    /// Claims `id`, or the next ready task, for `assignee` under a lease.
    Claim {
        id: Option<TaskId>,
        assignee: String,
        lease_ms: i64,
    },
    /// Extends a claim. Refused (conflict) unless `token` is the current one.
    Renew {
        id: TaskId,
        token: String,
        lease_ms: i64,
    },
    /// Starts the next attempt under the same claim (after a retry backoff).
    NextAttempt {
        id: TaskId,
        token: String,
        lease_ms: i64,
    },
    /// Ends a claim by moving the task to `to` (review, done, failed, open).
    /// Refused unless `token` is the current one and the task is in progress,
    /// so a rescued or cancelled task is never completed by a stale holder.
    Finish {
        id: TaskId,
        token: String,
        to: State,
        reason: Option<String>,
        /// For `to = open`: give the attempt back (a rate limit is not an attempt).
        refund_attempt: bool,
    },
    /// Takes back a claim whose lease expired: the task returns to open and
    /// the lost attempt counts. Refused unless the token still matches and
    /// the lease has expired.
    Rescue {
        id: TaskId,
        token: String,
    },
    /// Appends an engine event about a task (dispatch, gate result, ...)
    /// without changing the task.
    Record {
        id: TaskId,
        kind: braid_core::EventKind,
        payload: serde_json::Value,
    },
    DepAdd {
        from: TaskId,
        to: TaskId,
        kind: DepKind,
    },
    DepRm {
        from: TaskId,
        to: TaskId,
    },
}

/// What a command did: the task it touched (as it is now) and its events.
#[derive(Clone, Debug)]
pub struct Applied {
    pub task: Task,
    pub events: Vec<Event>,
    /// The claim's secret token (only for `Claim`).
    pub lease_token: Option<String>,
}

#[derive(Clone, Debug, Default)]
pub struct ListFilter {
    pub states: Vec<State>,
    pub kinds: Vec<TaskType>,
    pub label: Option<String>,
    pub parent: Option<TaskId>,
    pub assignee: Option<String>,
    pub ready: Option<bool>,
    pub limit: Option<usize>,
}

/// A light row for tree views.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeRow {
    pub id: TaskId,
    pub parent: Option<TaskId>,
    pub title: String,
    pub kind: TaskType,
    pub state: State,
    pub priority: u8,
    pub ready: bool,
}

#[derive(Clone, Debug, Default)]
pub struct ImportBatch {
    pub tasks: Vec<Task>,
    pub events: Vec<Event>,
    /// Says where the batch came from, for the `imported` event.
    pub source: String,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct ImportOptions {
    pub skip_invalid: bool,
}

/// A task of the batch the store refused, by its position in the batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportProblem {
    pub index: usize,
    pub id: Option<TaskId>,
    pub message: String,
}

impl std::fmt::Display for ImportProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.id {
            Some(id) => write!(f, "entry {} ({id}): {}", self.index + 1, self.message),
            None => write!(f, "entry {}: {}", self.index + 1, self.message),
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct ImportReport {
    pub tasks: usize,
    pub deps: usize,
    pub events: usize,
    pub skipped: Vec<ImportProblem>,
}

#[derive(Clone, Debug)]
pub enum ExportItem {
    Task(Task),
    Event(Event),
}

/// One agent attempt in the cost ledger, as its agent reported it (taken
/// from the attempt's `agent_finished` event).
#[derive(Clone, Debug, PartialEq)]
pub struct UsageRow {
    /// The `agent_finished` event it came from.
    pub seq: i64,
    pub task: TaskId,
    pub at: i64,
    pub agent: String,
    pub attempt: Option<i64>,
    pub model: Option<String>,
    pub session: Option<String>,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cache_read_tokens: i64,
    pub cache_write_tokens: i64,
    /// As reported (or priced from `[prices]`); `None`: unknown.
    pub cost_usd: Option<f64>,
    pub turns: Option<i64>,
    pub duration_ms: i64,
    /// How the agent's process ended (`exit 0`, `timed out (...)`, ...).
    pub outcome: String,
}

/// What the ledger is summed by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UsageBy {
    Task,
    Agent,
    Model,
    /// The UTC day, `YYYY-MM-DD`.
    Day,
}

/// A question to the ledger: totals by one key, since a time, for one task
/// or all.
#[derive(Clone, Debug)]
pub struct UsageQuery {
    pub by: UsageBy,
    /// Only attempts that ended at or after this (epoch ms).
    pub since: Option<i64>,
    pub task: Option<TaskId>,
    /// At most this many groups, the costliest first.
    pub limit: usize,
}

/// The ledger's sums for one key.
#[derive(Clone, Debug, PartialEq)]
pub struct UsageTotal {
    /// The task id, agent, model (`""` when unknown) or day.
    pub key: String,
    pub attempts: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cache_read_tokens: i64,
    pub cache_write_tokens: i64,
    pub cost_usd: f64,
    /// Attempts whose cost is unknown (counted in `attempts`, not in
    /// `cost_usd`).
    pub unpriced: i64,
    pub duration_ms: i64,
}

/// The ledger's columns, in the order [`UsageRow`] is read from.
pub(crate) const USAGE_COLS: &str = "seq, task, at, agent, attempt, model, session, input_tokens, \
     output_tokens, cache_read_tokens, cache_write_tokens, cost_usd, turns, duration_ms, outcome";

/// The sums [`UsageTotal`] is read from, after its key.
pub(crate) const USAGE_SUMS: &str = "count(*), sum(input_tokens), sum(output_tokens), \
     sum(cache_read_tokens), sum(cache_write_tokens), coalesce(sum(cost_usd), 0), \
     sum(CASE WHEN cost_usd IS NULL THEN 1 ELSE 0 END), sum(duration_ms)";

/// [`USAGE_SUMS`] typed for PostgreSQL (its sums of bigint are numeric).
pub(crate) const USAGE_SUMS_PG: &str = "count(*), sum(input_tokens)::bigint, \
     sum(output_tokens)::bigint, sum(cache_read_tokens)::bigint, sum(cache_write_tokens)::bigint, \
     coalesce(sum(cost_usd), 0)::double precision, \
     count(*) FILTER (WHERE cost_usd IS NULL), sum(duration_ms)::bigint";
