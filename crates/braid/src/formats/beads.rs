//! beads' `issues.jsonl`: one issue per line. States, types and dependency
//! kinds are mapped to braid's; `parent-child` dependencies become the
//! parent field; everything else is reported as not mapped.

use braid_core::{Dep, DepKind, State, Task, TaskId, TaskType};
use serde::Deserialize;

use super::Parsed;
use braid_app::wire::parse_ts;

#[derive(Deserialize)]
struct Issue {
    id: String,
    title: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    design: String,
    #[serde(default)]
    acceptance_criteria: String,
    #[serde(default)]
    notes: String,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    priority: Option<i64>,
    #[serde(default)]
    issue_type: Option<String>,
    #[serde(default)]
    assignee: Option<String>,
    #[serde(default)]
    labels: Vec<String>,
    #[serde(default)]
    created_at: Option<String>,
    #[serde(default)]
    updated_at: Option<String>,
    #[serde(default)]
    closed_at: Option<String>,
    #[serde(default)]
    close_reason: Option<String>,
    #[serde(default)]
    dependencies: Vec<BeadsDep>,
    #[serde(default)]
    comments: Vec<serde_json::Value>,
    #[serde(default)]
    external_ref: Option<String>,
}

#[derive(Deserialize)]
struct BeadsDep {
    #[serde(default)]
    issue_id: Option<String>,
    depends_on_id: String,
    #[serde(rename = "type", default = "blocks")]
    kind: String,
}

fn blocks() -> String {
    "blocks".into()
}

pub fn parse(name: &str, text: &str) -> Parsed {
    let mut out = Parsed::default();
    let now = braid_core::clock::now_ms();
    for (i, line) in text.lines().enumerate() {
        let at = format!("{name}:{}", i + 1);
        if line.trim().is_empty() {
            continue;
        }
        let issue: Issue = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(e) => {
                out.errors.push(format!("{at}: {e}"));
                continue;
            }
        };
        match convert(issue, now, &mut out) {
            Ok(Some(task)) => {
                out.tasks.push(task);
                out.origins.push(at);
            }
            Ok(None) => {}
            Err(e) => out.errors.push(format!("{at}: {e}")),
        }
    }
    out
}

fn convert(issue: Issue, now: i64, out: &mut Parsed) -> Result<Option<Task>, String> {
    let id = TaskId::parse(&issue.id).map_err(|e| e.to_string())?;
    let status = issue.status.as_deref().unwrap_or("open");
    let state = match status {
        "open" => State::Open,
        "in_progress" => State::InProgress,
        "closed" => State::Done,
        "deferred" => State::Deferred,
        "blocked" => {
            out.note("status `blocked` became open (braid derives blocked from dependencies)");
            State::Open
        }
        "tombstone" => {
            out.note("deleted (`tombstone`) issues were skipped");
            return Ok(None);
        }
        other => {
            out.note(format!("status `{other}` became open"));
            State::Open
        }
    };
    let kind = match issue.issue_type.as_deref().unwrap_or("task") {
        "task" => TaskType::Task,
        "bug" => TaskType::Bug,
        "epic" => TaskType::Epic,
        "chore" => TaskType::Chore,
        "feature" => {
            out.note("type `feature` became task");
            TaskType::Task
        }
        other => {
            out.note(format!("type `{other}` became task"));
            TaskType::Task
        }
    };
    let priority = match issue.priority {
        None => braid_core::model::DEFAULT_PRIORITY,
        Some(p @ 0..=4) => p as u8,
        Some(p) => {
            out.note(format!("priority {p} out of 0-4 was clamped"));
            p.clamp(0, 4) as u8
        }
    };
    let mut description = issue.description;
    for (head, body) in [("Design", issue.design), ("Notes", issue.notes)] {
        if !body.trim().is_empty() {
            out.note(format!(
                "`{}` was appended to the description",
                head.to_lowercase()
            ));
            if !description.is_empty() {
                description.push_str("\n\n");
            }
            description.push_str(&format!("## {head}\n\n{body}"));
        }
    }
    if !issue.comments.is_empty() {
        out.note("comments were not imported");
    }
    if issue.external_ref.is_some() {
        out.note("external_ref was not imported");
    }
    let mut parent = None;
    let mut deps = Vec::new();
    for d in issue.dependencies {
        if d.issue_id.as_deref().is_some_and(|x| x != issue.id) {
            out.note("dependencies listed on the wrong issue were ignored");
            continue;
        }
        let target = TaskId::parse(&d.depends_on_id).map_err(|e| format!("dependency: {e}"))?;
        let kind = match d.kind.as_str() {
            "blocks" => DepKind::Blocks,
            "related" | "relates-to" => DepKind::Related,
            "discovered-from" => DepKind::DiscoveredFrom,
            "parent-child" => {
                parent = Some(target);
                continue;
            }
            other => {
                out.note(format!("dependency type `{other}` was not imported"));
                continue;
            }
        };
        if deps.iter().any(|x: &Dep| x.id == target) {
            out.note("repeated dependencies were merged");
            continue;
        }
        deps.push(Dep { id: target, kind });
    }
    let time = |s: Option<String>, field: &'static str| -> Result<Option<i64>, String> {
        s.filter(|s| !s.is_empty())
            .map(|s| parse_ts(field, &s).map_err(|e| e.to_string()))
            .transpose()
    };
    let created_at = time(issue.created_at, "created_at")?.unwrap_or(now);
    let updated_at = time(issue.updated_at, "updated_at")?.unwrap_or(created_at);
    let mut closed_at = time(issue.closed_at, "closed_at")?;
    if state.is_closed() && closed_at.is_none() {
        closed_at = Some(updated_at);
    }
    Ok(Some(Task {
        id,
        title: issue.title,
        description,
        kind,
        priority,
        state,
        parent,
        labels: issue.labels,
        assignee: issue.assignee.filter(|a| !a.is_empty()),
        acceptance: issue.acceptance_criteria,
        gates: Vec::new(),
        agent: None,
        branch: None,
        created_at,
        updated_at,
        closed_at,
        close_reason: issue.close_reason.filter(|r| !r.is_empty()),
        deps,
        ready: false,
        blockers: 0,
        held_by: 0,
        lease: None,
    }))
}
