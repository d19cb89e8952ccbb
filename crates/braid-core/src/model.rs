//! The data model: task types, dependency kinds, the task record, and the
//! inputs that create and change tasks.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::TaskId;
use crate::state::State;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskType {
    Task,
    /// A container: never dispatched, never ready itself.
    Epic,
    Bug,
    Chore,
}

impl TaskType {
    pub const ALL: [TaskType; 4] = [
        TaskType::Task,
        TaskType::Epic,
        TaskType::Bug,
        TaskType::Chore,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskType::Task => "task",
            TaskType::Epic => "epic",
            TaskType::Bug => "bug",
            TaskType::Chore => "chore",
        }
    }

    pub fn parse(s: &str) -> Result<TaskType> {
        if let Some(t) = TaskType::ALL.into_iter().find(|t| t.as_str() == s) {
            return Ok(t);
        }
        let norm = s.trim().to_ascii_lowercase();
        TaskType::ALL
            .into_iter()
            .find(|t| t.as_str() == norm)
            .ok_or_else(|| {
                Error::invalid(
                    "type",
                    format!("{s:?} is not a type; types are task, epic, bug, chore"),
                )
            })
    }
}

impl fmt::Display for TaskType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DepKind {
    /// `A blocks-on B`: A cannot start until B is done (or cancelled).
    Blocks,
    Related,
    DiscoveredFrom,
}

impl DepKind {
    pub const ALL: [DepKind; 3] = [DepKind::Blocks, DepKind::Related, DepKind::DiscoveredFrom];

    pub fn as_str(self) -> &'static str {
        match self {
            DepKind::Blocks => "blocks",
            DepKind::Related => "related",
            DepKind::DiscoveredFrom => "discovered-from",
        }
    }

    pub fn parse(s: &str) -> Result<DepKind> {
        let norm = s.trim().to_ascii_lowercase().replace('_', "-");
        DepKind::ALL
            .into_iter()
            .find(|k| k.as_str() == norm)
            .ok_or_else(|| {
                Error::invalid(
                    "kind",
                    format!(
                        "{s:?} is not a dependency kind; kinds are blocks, related, discovered-from"
                    ),
                )
            })
    }
}

impl fmt::Display for DepKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One dependency of a task: the task depends on `id` with `kind`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct Dep {
    pub id: TaskId,
    pub kind: DepKind,
}

pub const MIN_PRIORITY: u8 = 0;
pub const MAX_PRIORITY: u8 = 4;
pub const DEFAULT_PRIORITY: u8 = 2;

/// The longest comment kept, in bytes.
pub const MAX_COMMENT: usize = 64 * 1024;

/// Checks a comment and gives the payload of its `commented` event.
pub fn comment_payload(author: &str, text: &str) -> Result<serde_json::Value> {
    let text = text.trim();
    if text.is_empty() {
        return Err(Error::invalid("text", "a comment needs some text"));
    }
    if text.len() > MAX_COMMENT {
        return Err(Error::invalid(
            "text",
            format!(
                "the comment is {} bytes; at most {MAX_COMMENT} are kept (attach long output as a file)",
                text.len()
            ),
        ));
    }
    let author = author.trim();
    if author.is_empty() || author.len() > 200 {
        return Err(Error::invalid(
            "author",
            "say who comments (1 to 200 characters)",
        ));
    }
    Ok(serde_json::json!({"author": author, "text": text}))
}

pub fn check_priority(p: i64) -> Result<u8> {
    if (MIN_PRIORITY as i64..=MAX_PRIORITY as i64).contains(&p) {
        Ok(p as u8)
    } else {
        Err(Error::invalid(
            "priority",
            format!("{p} is out of range; priority is 0 (highest) to 4"),
        ))
    }
}

pub fn check_title(t: &str) -> Result<()> {
    if t.trim().is_empty() {
        return Err(Error::invalid("title", "must not be empty"));
    }
    if t.len() > 500 {
        return Err(Error::invalid(
            "title",
            format!(
                "is {} bytes; the limit is 500 (put detail in the description)",
                t.len()
            ),
        ));
    }
    Ok(())
}

pub fn check_label(l: &str) -> Result<()> {
    if l.is_empty() || l.len() > 100 || l.chars().any(|c| c.is_whitespace() || c == ',') {
        return Err(Error::invalid(
            "label",
            format!("{l:?}: labels are 1-100 characters without spaces or commas"),
        ));
    }
    Ok(())
}

/// A task as stored, with its derived readiness. Times are milliseconds since
/// the Unix epoch.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Task {
    pub id: TaskId,
    pub title: String,
    pub description: String,
    pub kind: TaskType,
    pub priority: u8,
    pub state: State,
    pub parent: Option<TaskId>,
    pub labels: Vec<String>,
    pub assignee: Option<String>,
    pub acceptance: String,
    pub gates: Vec<String>,
    pub agent: Option<String>,
    pub branch: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub closed_at: Option<i64>,
    pub close_reason: Option<String>,
    pub deps: Vec<Dep>,
    pub ready: bool,
    /// Unfinished `blocks` dependencies (maintained count).
    pub blockers: u32,
    /// Ancestors that hold their subtree (maintained count).
    pub held_by: u32,
    pub lease: Option<Lease>,
}

/// A claim on a task: completion and rescue must present the token.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Lease {
    pub token: String,
    pub expires_at: i64,
    pub attempt: u32,
}

/// The fields of a task to create.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct NewTask {
    /// Set by imports; otherwise the store picks a fresh random id.
    pub id: Option<TaskId>,
    pub title: String,
    pub description: String,
    pub kind: Option<TaskType>,
    pub priority: Option<u8>,
    pub parent: Option<TaskId>,
    pub labels: Vec<String>,
    pub assignee: Option<String>,
    pub acceptance: String,
    pub gates: Vec<String>,
    pub agent: Option<String>,
    pub deps: Vec<Dep>,
}

impl NewTask {
    pub fn titled(title: impl Into<String>) -> Self {
        NewTask {
            title: title.into(),
            ..NewTask::default()
        }
    }

    pub fn validate(&self) -> Result<()> {
        check_title(&self.title)?;
        for l in &self.labels {
            check_label(l)?;
        }
        if let Some(p) = self.priority {
            check_priority(p as i64)?;
        }
        Ok(())
    }
}

/// Changes to a task's own fields. `None` leaves a field alone; for the
/// optional fields, `Some(None)` clears it.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct TaskPatch {
    pub title: Option<String>,
    pub description: Option<String>,
    pub kind: Option<TaskType>,
    pub priority: Option<u8>,
    pub parent: Option<Option<TaskId>>,
    pub add_labels: Vec<String>,
    pub remove_labels: Vec<String>,
    pub assignee: Option<Option<String>>,
    pub acceptance: Option<String>,
    pub gates: Option<Vec<String>>,
    pub agent: Option<Option<String>>,
    pub branch: Option<Option<String>>,
}

impl TaskPatch {
    pub fn is_empty(&self) -> bool {
        *self == TaskPatch::default()
    }

    pub fn validate(&self) -> Result<()> {
        if let Some(t) = &self.title {
            check_title(t)?;
        }
        for l in self.add_labels.iter().chain(&self.remove_labels) {
            check_label(l)?;
        }
        if let Some(p) = self.priority {
            check_priority(p as i64)?;
        }
        Ok(())
    }
}
