//! Events: the append-only log every mutation writes to. It feeds live
//! streams (resume from `seq`), audit, telemetry and sync.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::id::TaskId;

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Created,
    Updated,
    StateChanged,
    Claimed,
    DepAdded,
    DepRemoved,
    Imported,
    Restored,
    Commented,
    /// A claim was given back (released) without finishing.
    Released,
    /// An expired claim was taken back by another process.
    Rescued,
    /// The engine started an attempt: agent, worktree, attempt number.
    Dispatched,
    /// An agent process ended: exit status, duration.
    AgentFinished,
    /// A gate finished: name, passed, duration, cached.
    GateFinished,
    /// An agent hit a rate limit and cools down until a time.
    Cooldown,
    /// A failed attempt will be retried after a backoff.
    Retrying,
    /// A task file could not be applied (does not parse, unknown
    /// dependency, cycle, name outside the tasks folder); nothing changed.
    SyncRejected,
    /// An agent stopped to ask a person something (a permission it was
    /// refused, a question): the task waits, deferred, labelled
    /// `needs-human`. Also a budget that stopped work.
    Attention,
    /// A person answered an attention: the task is open again and its
    /// agent's session resumes with the answer.
    Answered,
    /// What a running agent is doing (the tool it calls, its last line of
    /// text), throttled.
    Activity,
    /// A person approved a branch's work as it stands (the commit is in the
    /// payload): the merge queue may take it.
    Approved,
    /// A person sent work back with a message and line comments: the task
    /// is open again and its next attempt is told what to change.
    ChangesRequested,
    /// Every child of an epic is done: the epic is done too.
    EpicCompleted,
}

impl EventKind {
    pub const ALL: [EventKind; 23] = [
        EventKind::Created,
        EventKind::Updated,
        EventKind::StateChanged,
        EventKind::Claimed,
        EventKind::DepAdded,
        EventKind::DepRemoved,
        EventKind::Imported,
        EventKind::Restored,
        EventKind::Commented,
        EventKind::Released,
        EventKind::Rescued,
        EventKind::Dispatched,
        EventKind::AgentFinished,
        EventKind::GateFinished,
        EventKind::Cooldown,
        EventKind::Retrying,
        EventKind::SyncRejected,
        EventKind::Attention,
        EventKind::Answered,
        EventKind::Activity,
        EventKind::Approved,
        EventKind::ChangesRequested,
        EventKind::EpicCompleted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Created => "created",
            EventKind::Updated => "updated",
            EventKind::StateChanged => "state_changed",
            EventKind::Claimed => "claimed",
            EventKind::DepAdded => "dep_added",
            EventKind::DepRemoved => "dep_removed",
            EventKind::Imported => "imported",
            EventKind::Restored => "restored",
            EventKind::Commented => "commented",
            EventKind::Released => "released",
            EventKind::Rescued => "rescued",
            EventKind::Dispatched => "dispatched",
            EventKind::AgentFinished => "agent_finished",
            EventKind::GateFinished => "gate_finished",
            EventKind::Cooldown => "cooldown",
            EventKind::Retrying => "retrying",
            EventKind::SyncRejected => "sync_rejected",
            EventKind::Attention => "attention",
            EventKind::Answered => "answered",
            EventKind::Activity => "activity",
            EventKind::Approved => "approved",
            EventKind::ChangesRequested => "changes_requested",
            EventKind::EpicCompleted => "epic_completed",
        }
    }

    pub fn parse(s: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One entry of the log. `seq` strictly increases; `at` is ms since epoch.
#[derive(Clone, PartialEq, Debug)]
pub struct Event {
    pub seq: i64,
    pub at: i64,
    pub actor: String,
    pub kind: EventKind,
    pub task: Option<TaskId>,
    pub payload: serde_json::Value,
}

/// An event not yet appended (the store assigns `seq`).
#[derive(Clone, PartialEq, Debug)]
pub struct NewEvent {
    pub kind: EventKind,
    pub task: Option<TaskId>,
    pub payload: serde_json::Value,
}
