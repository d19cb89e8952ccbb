//! task-master's `tasks.json` (tagged `{"master": {"tasks": [...]}}` or the
//! older `{"tasks": [...]}`): tasks become `tm-N`, subtasks `tm-N.M` under
//! them, and a task with subtasks becomes an epic.

use braid_core::{Dep, DepKind, State, Task, TaskId, TaskType};
use serde::Deserialize;
use serde_json::Value;

use super::Parsed;

#[derive(Deserialize)]
struct TmTask {
    id: Value,
    title: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    details: String,
    #[serde(default, rename = "testStrategy")]
    test_strategy: String,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    priority: Option<String>,
    #[serde(default)]
    dependencies: Vec<Value>,
    #[serde(default)]
    subtasks: Vec<TmTask>,
}

fn id_text(v: &Value) -> Option<String> {
    match v {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        _ => None,
    }
}

pub fn parse(name: &str, text: &str) -> Parsed {
    let mut out = Parsed::default();
    let doc: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            out.errors.push(format!("{name}:{}: {e}", e.line()));
            return out;
        }
    };
    // Legacy layout, or one entry per tag.
    let mut lists: Vec<(String, Value)> = Vec::new();
    if let Some(tasks) = doc.get("tasks") {
        lists.push(("master".into(), tasks.clone()));
    } else if let Value::Object(tags) = &doc {
        for (tag, v) in tags {
            match v.get("tasks") {
                Some(t) => lists.push((tag.clone(), t.clone())),
                None => out.note(format!(
                    "top-level key `{tag}` has no tasks and was ignored"
                )),
            }
        }
    }
    if lists.is_empty() {
        out.errors.push(format!(
            "{name}:1: no `tasks` list found (expected task-master's tasks.json)"
        ));
        return out;
    }
    let now = braid_core::clock::now_ms();
    for (tag, list) in lists {
        let prefix = if tag == "master" {
            "tm-".to_owned()
        } else {
            format!("tm-{tag}-")
        };
        let Value::Array(items) = list else {
            out.errors
                .push(format!("{name}: tag `{tag}`: `tasks` is not a list"));
            continue;
        };
        for (i, item) in items.into_iter().enumerate() {
            let at = format!("{name}: tag `{tag}` task #{}", i + 1);
            let t: TmTask = match serde_json::from_value(item) {
                Ok(t) => t,
                Err(e) => {
                    out.errors.push(format!("{at}: {e}"));
                    continue;
                }
            };
            if let Err(e) = convert(&prefix, t, now, &at, &mut out) {
                out.errors.push(format!("{at}: {e}"));
            }
        }
    }
    out
}

fn state(s: Option<&str>, out: &mut Parsed) -> State {
    match s.unwrap_or("pending") {
        "pending" => State::Open,
        "in-progress" | "in_progress" => State::InProgress,
        "done" | "completed" => State::Done,
        "review" => State::Review,
        "deferred" => State::Deferred,
        "cancelled" => State::Cancelled,
        "blocked" => {
            out.note("status `blocked` became open (braid derives blocked from dependencies)");
            State::Open
        }
        other => {
            out.note(format!("status `{other}` became open"));
            State::Open
        }
    }
}

fn priority(p: Option<&str>, out: &mut Parsed) -> u8 {
    match p.unwrap_or("medium") {
        "critical" => 0,
        "high" => 1,
        "medium" => 2,
        "low" => 3,
        other => {
            out.note(format!("priority `{other}` became 2"));
            2
        }
    }
}

fn body(description: String, details: String) -> String {
    match (description.is_empty(), details.is_empty()) {
        (_, true) => description,
        (true, false) => details,
        (false, false) => format!("{description}\n\n## Details\n\n{details}"),
    }
}

fn task(
    id: TaskId,
    title: String,
    description: String,
    kind: TaskType,
    st: State,
    prio: u8,
    now: i64,
) -> Task {
    Task {
        id,
        title,
        description,
        kind,
        priority: prio,
        state: st,
        parent: None,
        labels: Vec::new(),
        assignee: None,
        acceptance: String::new(),
        gates: Vec::new(),
        agent: None,
        branch: None,
        created_at: now,
        updated_at: now,
        closed_at: st.is_closed().then_some(now),
        close_reason: None,
        deps: Vec::new(),
        ready: false,
        blockers: 0,
        held_by: 0,
        lease: None,
    }
}

fn convert(prefix: &str, t: TmTask, now: i64, at: &str, out: &mut Parsed) -> Result<(), String> {
    let num = id_text(&t.id).ok_or("task has no usable `id`")?;
    let id = TaskId::parse(&format!("{prefix}{num}")).map_err(|e| e.to_string())?;
    let kind = if t.subtasks.is_empty() {
        TaskType::Task
    } else {
        out.note("tasks with subtasks became epics");
        TaskType::Epic
    };
    let st = state(t.status.as_deref(), out);
    let prio = priority(t.priority.as_deref(), out);
    let mut parent_task = task(
        id.clone(),
        t.title,
        body(t.description, t.details),
        kind,
        st,
        prio,
        now,
    );
    parent_task.acceptance = t.test_strategy;
    for d in &t.dependencies {
        let Some(d) = id_text(d) else {
            out.note("unreadable dependency values were ignored");
            continue;
        };
        let dep = TaskId::parse(&format!("{prefix}{d}")).map_err(|e| format!("dependency: {e}"))?;
        if !parent_task.deps.iter().any(|x| x.id == dep) {
            parent_task.deps.push(Dep {
                id: dep,
                kind: DepKind::Blocks,
            });
        }
    }
    out.tasks.push(parent_task);
    out.origins.push(at.to_owned());
    for (j, s) in t.subtasks.into_iter().enumerate() {
        let sat = format!("{at} subtask #{}", j + 1);
        let Some(snum) = id_text(&s.id) else {
            out.errors
                .push(format!("{sat}: subtask has no usable `id`"));
            continue;
        };
        let sid = TaskId::parse(&format!("{prefix}{num}.{snum}")).map_err(|e| e.to_string())?;
        let sst = state(s.status.as_deref(), out);
        let sprio = match s.priority.as_deref() {
            Some(p) => priority(Some(p), out),
            None => prio,
        };
        let mut sub = task(
            sid,
            s.title,
            body(s.description, s.details),
            TaskType::Task,
            sst,
            sprio,
            now,
        );
        sub.acceptance = s.test_strategy;
        sub.parent = Some(id.clone());
        for d in &s.dependencies {
            // A number names a sibling subtask; "N.M" a subtask elsewhere;
            // "N" (as a string) a top-level task.
            let target = match d {
                Value::Number(n) => format!("{prefix}{num}.{n}"),
                Value::String(x) if !x.trim().is_empty() => format!("{prefix}{}", x.trim()),
                _ => {
                    out.note("unreadable dependency values were ignored");
                    continue;
                }
            };
            let dep = TaskId::parse(&target).map_err(|e| format!("subtask dependency: {e}"))?;
            if !sub.deps.iter().any(|x| x.id == dep) {
                sub.deps.push(Dep {
                    id: dep,
                    kind: DepKind::Blocks,
                });
            }
        }
        if !s.subtasks.is_empty() {
            out.note("nested subtasks below the first level were not imported");
        }
        out.tasks.push(sub);
        out.origins.push(sat);
    }
    Ok(())
}
