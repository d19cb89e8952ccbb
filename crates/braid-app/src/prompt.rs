//! What an agent is told: the task, its acceptance criteria, its parent
//! chain, the state of its dependencies, on a retry the tail of the
//! failure, and what a reviewer asked to change. A piece that cannot be read degrades the prompt (and says so); it
//! never fails the dispatch. `braid context ID` prints exactly this.

use std::fmt::Write;

use braid_core::{EventKind, TaskId};
use braid_store::Store;

/// `writeln!` into the prompt: writing to a `String` cannot fail.
macro_rules! line {
    ($($arg:tt)*) => {
        writeln!($($arg)*).expect("writing to a String")
    };
}

/// Builds the prompt for `id` from the store.
pub fn build(store: &dyn Store, id: &TaskId) -> Result<String, braid_store::Error> {
    let task = store.task(id)?;
    let mut p = String::new();
    line!(p, "# Task {}: {}\n", task.id, task.title);
    line!(p, "Type: {} · Priority: P{}", task.kind, task.priority);
    if !task.labels.is_empty() {
        line!(p, "Labels: {}", task.labels.join(", "));
    }
    if !task.description.trim().is_empty() {
        line!(p, "\n## Description\n\n{}", task.description.trim());
    }
    if !task.acceptance.trim().is_empty() {
        line!(p, "\n## Acceptance criteria\n\n{}", task.acceptance.trim());
    }
    // Parent chain, nearest first; bounded so a deep chain stays short.
    let mut chain = Vec::new();
    let mut cur = task.parent.clone();
    let mut degraded = Vec::new();
    while let Some(pid) = cur {
        if chain.len() == 20 {
            chain.push("…".to_owned());
            break;
        }
        match store.task(&pid) {
            Ok(pt) => {
                chain.push(format!(
                    "{} {} ({}): {}",
                    pt.kind, pt.id, pt.state, pt.title
                ));
                cur = pt.parent;
            }
            Err(e) => {
                degraded.push(format!("parent {pid}: {e}"));
                break;
            }
        }
    }
    if !chain.is_empty() {
        line!(p, "\n## Part of\n");
        for c in &chain {
            line!(p, "- {c}");
        }
    }
    if !task.deps.is_empty() {
        line!(p, "\n## Dependencies\n");
        for d in &task.deps {
            match store.task(&d.id) {
                Ok(dt) => {
                    line!(p, "- {} ({}): {} [{}]", dt.id, d.kind, dt.title, dt.state);
                }
                Err(e) => degraded.push(format!("dependency {}: {e}", d.id)),
            }
        }
    }
    match store.task_events(id, 200) {
        Ok(events) => {
            if let Some(e) = events.iter().rev().find(|e| e.kind == EventKind::Retrying) {
                line!(p, "\n## The previous attempt failed\n\n{}", failure(e));
            }
            if let Some(b) = events
                .iter()
                .rev()
                .find(|e| e.kind == EventKind::Dispatched)
                .map(|e| &e.payload["base"])
                .filter(|b| b["stacked"].as_array().is_some_and(|s| !s.is_empty()))
            {
                let deps: Vec<&str> = b["stacked"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|d| d.as_str())
                    .collect();
                line!(
                    p,
                    "\n## Where your branch starts\n\nFrom {} with the finished work of {} merged in (it has not landed on {} yet; it will before yours).",
                    b["target"].as_str().unwrap_or("the target"),
                    deps.join(", "),
                    b["target"].as_str().unwrap_or("the target"),
                );
            }
            if let Some(m) = answered(&events) {
                line!(p, "\n## A person answered\n\n{m}");
            }
            if let Some(r) = crate::review::asked_for(&events) {
                line!(
                    p,
                    "\n## A reviewer sent your work back\n\n{r}\nYour branch already holds your earlier work: change it as asked."
                );
            }
        }
        Err(e) => degraded.push(format!("history: {e}")),
    }
    if !degraded.is_empty() {
        line!(
            p,
            "\n(Some context could not be read: {}.)",
            degraded.join("; ")
        );
    }
    line!(
        p,
        "\n## How to finish\n\nWork in the current directory (a worktree for this task). Commit your changes. Exit 0 when the task is done; braid then runs the project's checks."
    );
    Ok(p)
}

/// What a `retrying` event says failed, and what to do.
fn failure(e: &braid_core::Event) -> String {
    let what = e.payload["failed"].as_str().unwrap_or("a check");
    let tail = e.payload["tail"].as_str().unwrap_or("");
    format!(
        "{what} failed. The end of its output:\n\n```\n{}\n```\n\nFix the cause, then finish the task.",
        tail.trim_end()
    )
}

/// The latest answer, when it came after the latest question: what was
/// asked and what the person said.
fn answered(events: &[braid_core::Event]) -> Option<String> {
    let i = events.iter().rposition(|e| e.kind == EventKind::Answered)?;
    let answer = events[i].payload["text"].as_str().unwrap_or("");
    let asked = events[..i]
        .iter()
        .rev()
        .find(|e| e.kind == EventKind::Attention)
        .and_then(|e| e.payload["question"].as_str());
    Some(match asked {
        Some(q) => format!(
            "You stopped to ask:\n\n> {}\n\nThe answer:\n\n{answer}\n\nGo on with the task.",
            q.trim().replace('\n', "\n> ")
        ),
        None => format!("{answer}\n\nGo on with the task."),
    })
}

/// Why a resumed session is being resumed, from the task's events after
/// its latest agent run: a person's answer, or the checks that failed.
/// This is the whole message a resumed agent gets (it has the task in its
/// context already). `None`: nothing new to say (start afresh).
pub fn resume_message(events: &[braid_core::Event]) -> Option<String> {
    let after = events
        .iter()
        .rposition(|e| e.kind == EventKind::AgentFinished)
        .map_or(0, |i| i + 1);
    let newer = &events[after..];
    if let Some(m) = answered(newer) {
        return Some(format!("A person answered your question. {m}"));
    }
    if newer.iter().any(|e| e.kind == EventKind::ChangesRequested)
        && let Some(r) = crate::review::asked_for(newer)
    {
        return Some(format!(
            "A reviewer looked at your work and sent it back. {r}\nMake these changes, commit them and exit 0 when they are done; braid then runs the checks again."
        ));
    }
    let e = newer.iter().rev().find(|e| e.kind == EventKind::Retrying)?;
    Some(format!(
        "Your last attempt did not pass. {}\nCommit your changes and exit 0 when it is done; braid then runs the checks again.",
        failure(e)
    ))
}
