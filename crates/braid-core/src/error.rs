//! The domain's errors: each names the thing at fault and the rule it broke.

use crate::id::TaskId;
use crate::state::State;

/// The broad class of an error, which decides the command line's exit code
/// (DESIGN.md: 2 usage or bad input, 3 not found, 4 conflict).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The input broke a rule (bad field value, cycle, self-dependency).
    Invalid,
    /// A task or dependency that was named does not exist.
    NotFound,
    /// The input is well formed but clashes with the current state
    /// (invalid transition, task already claimed, lock held).
    Conflict,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("task {0} not found")]
    NotFound(TaskId),
    #[error("{id}: cannot go from {from} to {to} (allowed from {from}: {allowed})")]
    Transition {
        id: TaskId,
        from: State,
        to: State,
        allowed: String,
    },
    #[error("dependency {from} -> {to} would create a cycle: {}", format_cycle(.cycle))]
    Cycle {
        from: TaskId,
        to: TaskId,
        cycle: Vec<TaskId>,
    },
    #[error("{id}: a task cannot depend on itself")]
    SelfDependency { id: TaskId },
    #[error("{from} already depends on {to} ({kind})")]
    DuplicateDependency {
        from: TaskId,
        to: TaskId,
        kind: crate::model::DepKind,
    },
    #[error("{from} does not depend on {to}")]
    NoSuchDependency { from: TaskId, to: TaskId },
    #[error("{id}: cannot be placed under {parent}: {parent} is {id} itself or inside it")]
    ParentCycle { id: TaskId, parent: TaskId },
    #[error("{id}: not ready to claim: {why}")]
    NotReady { id: TaskId, why: String },
    #[error("invalid {field}: {message}")]
    InvalidField {
        field: &'static str,
        message: String,
    },
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NotFound(_) | Error::NoSuchDependency { .. } => ErrorKind::NotFound,
            Error::Transition { .. } | Error::NotReady { .. } => ErrorKind::Conflict,
            Error::Cycle { .. }
            | Error::SelfDependency { .. }
            | Error::DuplicateDependency { .. }
            | Error::ParentCycle { .. }
            | Error::InvalidField { .. } => ErrorKind::Invalid,
        }
    }

    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Error::InvalidField {
            field,
            message: message.into(),
        }
    }
}

/// Renders a cycle as `a -> b -> c -> a`.
pub fn format_cycle(cycle: &[TaskId]) -> String {
    let mut out = String::new();
    for (i, id) in cycle.iter().enumerate() {
        if i > 0 {
            out.push_str(" -> ");
        }
        out.push_str(id.as_str());
    }
    if let Some(first) = cycle.first() {
        out.push_str(" -> ");
        out.push_str(first.as_str());
    }
    out
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error with its causes, `what: why: why`, for a log line or a message
/// that shows the whole story (errors keep their cause as `source`, and
/// their own text names only what was being done).
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let text = c.to_string();
        // A wrapper that repeats its cause's text adds nothing.
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = c.source();
    }
    out
}
