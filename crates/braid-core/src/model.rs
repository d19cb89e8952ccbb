//! The data model: task types, dependency kinds, the task record, and the
//! inputs that create and change tasks.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::TaskId;
use crate::state::State;
use crate::text::{self, Lines};

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
    check_text("text", text)?;
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
    check_name("author", author)?;
    Ok(serde_json::json!({"author": author, "text": text}))
}

/// Why a control character is refused, and where it is.
fn control_message(at: usize, c: char, lines: Lines) -> String {
    let rule = match (lines, c) {
        (Lines::One, _) => "this field is one line of printable text",
        (Lines::Many, '\r') => "line breaks are \\n alone",
        (Lines::Many, _) => "only line breaks (\\n) and tabs are kept",
    };
    format!(
        "control character U+{:04X} at byte {at} is not allowed ({rule})",
        c as u32
    )
}

/// Refuses control characters (C0, DEL, C1) in a one-line field: a name
/// (assignee, agent, actor, author, branch, gate) or any text shown on
/// one line. A terminal would act on them (`\e]52;…` writes the
/// clipboard), and a line break would forge a row of a listing.
pub fn check_name(field: &'static str, value: &str) -> Result<()> {
    match text::first_control(value, Lines::One) {
        None => Ok(()),
        Some((at, c)) => Err(Error::invalid(field, control_message(at, c, Lines::One))),
    }
}

/// Refuses control characters other than `\n` and `\t` in text of
/// several lines (a description, acceptance criteria, a comment, a
/// reason). A carriage return is refused: alone it hides what came before
/// it on its line; a task file's CRLF line ends are made LF where it is
/// read.
pub fn check_text(field: &'static str, value: &str) -> Result<()> {
    match text::first_control(value, Lines::Many) {
        None => Ok(()),
        Some((at, c)) => Err(Error::invalid(field, control_message(at, c, Lines::Many))),
    }
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
    check_name("title", t)?;
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
    if let Some((at, c)) = text::first_control(l, Lines::One) {
        return Err(Error::invalid(
            "label",
            format!("{l:?}: {}", control_message(at, c, Lines::One)),
        ));
    }
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

impl Task {
    /// Checks the text of a task given whole (an import), beyond its title
    /// and labels ([`check_title`], [`check_label`]): its names and its
    /// text of several lines, as [`NewTask::validate`] and
    /// [`TaskPatch::validate`] check them.
    pub fn check_text(&self) -> Result<()> {
        check_text("description", &self.description)?;
        check_text("acceptance", &self.acceptance)?;
        if let Some(r) = &self.close_reason {
            check_text("close_reason", r)?;
        }
        if let Some(b) = &self.branch {
            check_name("branch", b)?;
        }
        check_optional_names(self.assignee.as_deref(), self.agent.as_deref(), &self.gates)
    }
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
        check_text("description", &self.description)?;
        check_text("acceptance", &self.acceptance)?;
        check_optional_names(self.assignee.as_deref(), self.agent.as_deref(), &self.gates)
    }
}

/// The names a task carries: who it is for, which agent, which gates.
fn check_optional_names(
    assignee: Option<&str>,
    agent: Option<&str>,
    gates: &[String],
) -> Result<()> {
    if let Some(a) = assignee {
        check_name("assignee", a)?;
    }
    if let Some(a) = agent {
        check_name("agent", a)?;
    }
    for g in gates {
        check_name("gates", g)?;
    }
    Ok(())
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
        if let Some(d) = &self.description {
            check_text("description", d)?;
        }
        if let Some(a) = &self.acceptance {
            check_text("acceptance", a)?;
        }
        if let Some(Some(b)) = &self.branch {
            check_name("branch", b)?;
        }
        check_optional_names(
            self.assignee.as_ref().and_then(Option::as_deref),
            self.agent.as_ref().and_then(Option::as_deref),
            self.gates.as_deref().unwrap_or_default(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(e: Error) -> (&'static str, String) {
        match e {
            Error::InvalidField { field, message } => (field, message),
            other => panic!("not a field error: {other}"),
        }
    }

    #[test]
    fn one_line_fields_refuse_every_control_character_naming_field_and_place() {
        for c in (0..=0x9f_u32)
            .filter_map(char::from_u32)
            .filter(|&c| text::is_control(c))
        {
            let bad = format!("esc{c}x");
            let (field, message) = field_of(NewTask::titled(&bad).validate().unwrap_err());
            assert_eq!(field, "title");
            assert!(
                message.contains(&format!("U+{:04X} at byte 3", c as u32)),
                "{message}"
            );
            let new = NewTask {
                labels: vec![bad.clone()],
                ..NewTask::titled("t")
            };
            assert_eq!(field_of(new.validate().unwrap_err()).0, "label");
            let new = NewTask {
                assignee: Some(bad.clone()),
                ..NewTask::titled("t")
            };
            assert_eq!(field_of(new.validate().unwrap_err()).0, "assignee");
            let patch = TaskPatch {
                branch: Some(Some(bad.clone())),
                ..TaskPatch::default()
            };
            assert_eq!(field_of(patch.validate().unwrap_err()).0, "branch");
            let patch = TaskPatch {
                gates: Some(vec![bad.clone()]),
                ..TaskPatch::default()
            };
            assert_eq!(field_of(patch.validate().unwrap_err()).0, "gates");
            assert_eq!(
                field_of(comment_payload(&bad, "hi").unwrap_err()).0,
                "author"
            );
        }
    }

    #[test]
    fn text_of_several_lines_keeps_newline_and_tab_only() {
        let ok = NewTask {
            description: "line one\n\tindented\nline three".into(),
            acceptance: "- a\n- b".into(),
            ..NewTask::titled("t")
        };
        ok.validate().unwrap();
        for bad in ["a\u{1b}[2Jb", "a\rb", "a\r\nb", "a\u{9b}b", "a\u{0}b"] {
            let new = NewTask {
                description: bad.into(),
                ..NewTask::titled("t")
            };
            assert_eq!(field_of(new.validate().unwrap_err()).0, "description");
            let patch = TaskPatch {
                acceptance: Some(bad.into()),
                ..TaskPatch::default()
            };
            assert_eq!(field_of(patch.validate().unwrap_err()).0, "acceptance");
            assert_eq!(field_of(comment_payload("me", bad).unwrap_err()).0, "text");
        }
        comment_payload("me", "a\n\tb").unwrap();
        let (_, m) = field_of(check_text("description", "a\rb").unwrap_err());
        assert!(m.contains("U+000D at byte 1"), "{m}");
    }
}
