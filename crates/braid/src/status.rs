//! `braid status`: the project at a glance — its health, what is being
//! worked on (by an agent, or claimed by hand), what waits for you and
//! what awaits review — each with the command that shows more.

use anyhow::Result;
use braid_app::ops;
use braid_app::wire::{AttentionView, HealthView, TaskView};
use braid_core::{EventKind, State};
use braid_store::{ListFilter, Store};
use serde::Serialize;

use crate::cmd::Ctx;
use crate::exit;
use crate::style::plural;

/// Rows listed under each heading, at most.
const SHOWN: usize = 10;

/// One task being worked on, and by whom.
#[derive(Serialize)]
struct Working {
    task: TaskView,
    /// The agent an attempt runs, or `null` for a claim taken by hand.
    agent: Option<String>,
}

#[derive(Serialize)]
struct Status {
    project: String,
    health: HealthView,
    working: Vec<Working>,
    needs: Vec<AttentionView>,
    review: Vec<TaskView>,
}

/// The agent of the task's current attempt, from its latest `dispatched`
/// event, when that event belongs to the attempt the lease holds.
fn agent_of(store: &dyn Store, t: &braid_core::Task) -> Result<Option<String>> {
    let Some(lease) = &t.lease else {
        return Ok(None);
    };
    Ok(store
        .task_events(&t.id, 50)?
        .iter()
        .rev()
        .find(|e| e.kind == EventKind::Dispatched)
        .filter(|e| e.payload["attempt"].as_u64() == Some(u64::from(lease.attempt)))
        .and_then(|e| e.payload["agent"].as_str().map(str::to_owned)))
}

pub fn run(ctx: &Ctx) -> Result<i32> {
    let (project, store) = ctx.open()?;
    let health = ops::health(&store)?;
    let list = |state| {
        store.list(&ListFilter {
            states: vec![state],
            limit: Some(SHOWN),
            ..ListFilter::default()
        })
    };
    let mut working = Vec::new();
    for t in list(State::InProgress)? {
        working.push(Working {
            agent: agent_of(&store, &t)?,
            task: TaskView::from(&t),
        });
    }
    let status = Status {
        project: project
            .url
            .clone()
            .unwrap_or_else(|| project.db.display().to_string()),
        working,
        needs: ops::needs_you(&store, SHOWN)?,
        review: list(State::Review)?.iter().map(TaskView::from).collect(),
        health,
    };
    if ctx.global.json {
        ctx.print_json(&status)?;
        return Ok(exit::OK);
    }
    print(ctx, &status);
    Ok(exit::OK)
}

fn count(h: &HealthView, state: &str) -> u64 {
    h.by_state.get(state).copied().unwrap_or(0)
}

fn print(ctx: &Ctx, s: &Status) {
    let st = ctx.style;
    let h = &s.health;
    outln!("{}  {}", st.bold("braid"), s.project);
    outln!(
        "{}: {} ready, {} blocked, {} in progress, {} in review, {} done, {} failed",
        plural(h.total.saturating_sub(h.epics), "task", "tasks"),
        h.ready,
        h.blocked,
        count(h, "in_progress"),
        count(h, "review"),
        count(h, "done"),
        count(h, "failed"),
    );
    let in_progress = count(h, "in_progress");
    if in_progress == 0 {
        outln!("\nNothing is being worked on.");
    } else {
        outln!("\nWorking ({in_progress}):");
        for w in &s.working {
            let who = match &w.agent {
                Some(agent) => format!("agent {agent}"),
                None => format!(
                    "claimed by {} (no agent)",
                    w.task.assignee.as_deref().unwrap_or("?")
                ),
            };
            let attempt = w
                .task
                .lease
                .as_ref()
                .map(|l| format!(", attempt {}", l.attempt))
                .unwrap_or_default();
            outln!(
                "  {}  {}  [{who}{attempt}]",
                st.bold(&w.task.id),
                w.task.title
            );
        }
        more(
            in_progress,
            s.working.len(),
            "braid list --state in_progress",
        );
    }
    if s.needs.is_empty() {
        outln!("\nNothing waits for you.");
    } else {
        outln!("\nNeeds you ({}):", s.needs.len());
        for n in &s.needs {
            let q = n.question.lines().next().unwrap_or("");
            outln!("  {}  {}  [{}] {q}", st.bold(&n.id), n.title, n.reason);
        }
        outln!("  `braid needs` shows the questions, `braid answer ID \"…\"` answers.");
    }
    let review = count(h, "review");
    if review > 0 {
        outln!("\nAwaiting review ({review}):");
        for t in &s.review {
            outln!("  {}  {}", st.bold(&t.id), t.title);
        }
        more(review, s.review.len(), "braid review list");
        outln!(
            "  `braid diff ID` to look, `braid review approve ID` or `braid review reject ID -m \"…\"` to decide."
        );
    }
}

fn more(total: u64, shown: usize, command: &str) {
    let rest = total.saturating_sub(shown as u64);
    if rest > 0 {
        outln!("  … {rest} more (`{command}`)");
    }
}
