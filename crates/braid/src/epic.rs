//! `braid epic status`: each epic's progress — how much of the work under
//! it is done, in progress, ready or blocked. An epic whose children are
//! all done is done itself (`[run] close_epics`, on by default).

use std::collections::BTreeMap;

use anyhow::Result;
use braid_core::{State, TaskId, TaskType};
use braid_store::{ListFilter, Store};
use clap::{Args, Subcommand};
use serde::Serialize;

use crate::cmd::{Ctx, parse_id};
use crate::exit;
use crate::style::plural;

#[derive(Subcommand, Debug)]
pub enum EpicCmd {
    /// Each epic's progress: the work under it (at any depth) by state,
    /// and how much is done.
    Status(StatusArgs),
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Only these epics (default: every epic).
    #[arg(value_parser = parse_id)]
    pub ids: Vec<TaskId>,
    /// Also epics that are done.
    #[arg(long, short)]
    pub all: bool,
}

#[derive(Serialize)]
struct Progress {
    id: String,
    title: String,
    state: String,
    /// Tasks under it at any depth (epics not counted).
    total: usize,
    done: usize,
    ready: usize,
    by_state: BTreeMap<String, usize>,
}

fn progress(store: &dyn Store, epic: &braid_core::Task) -> Result<Progress> {
    let rows = store.subtree(Some(&epic.id))?;
    let mut by_state = BTreeMap::new();
    let (mut total, mut done, mut ready) = (0, 0, 0);
    for r in rows
        .iter()
        .filter(|r| r.id != epic.id && r.kind != TaskType::Epic)
    {
        total += 1;
        done += usize::from(r.state == State::Done);
        ready += usize::from(r.ready);
        *by_state.entry(r.state.as_str().to_owned()).or_insert(0) += 1;
    }
    Ok(Progress {
        id: epic.id.to_string(),
        title: epic.title.clone(),
        state: epic.state.as_str().to_owned(),
        total,
        done,
        ready,
        by_state,
    })
}

pub fn run(ctx: &Ctx, cmd: EpicCmd) -> Result<i32> {
    let EpicCmd::Status(a) = cmd;
    let (_, store) = ctx.open()?;
    let epics = if a.ids.is_empty() {
        store
            .list(&ListFilter {
                kinds: vec![TaskType::Epic],
                limit: Some(10_000),
                ..ListFilter::default()
            })?
            .into_iter()
            .filter(|e| a.all || e.state != State::Done)
            .collect()
    } else {
        a.ids
            .iter()
            .map(|id| braid_app::ops::task(&store, id.as_str()))
            .collect::<Result<Vec<_>, _>>()?
    };
    let rows = epics
        .iter()
        .map(|e| progress(&store, e))
        .collect::<Result<Vec<_>>>()?;
    if ctx.global.json {
        ctx.print_json(&rows)?;
        return Ok(exit::OK);
    }
    if rows.is_empty() {
        outln!("No open epics (`--all` shows done ones too).");
        return Ok(exit::OK);
    }
    let s = ctx.style;
    for p in &rows {
        let pct = (p.done * 100).checked_div(p.total).unwrap_or(0);
        const WIDTH: usize = 20;
        let filled = (p.done * WIDTH).checked_div(p.total).unwrap_or(0);
        let bar = format!("{}{}", "█".repeat(filled), "░".repeat(WIDTH - filled));
        let rest: Vec<String> = p
            .by_state
            .iter()
            .filter(|(k, _)| k.as_str() != "done")
            .map(|(k, n)| format!("{n} {}", k.replace('_', " ")))
            .collect();
        outln!(
            "{}  {}  [{}]  {bar}  {} of {} done ({pct}%){}{}",
            s.bold(&p.id),
            p.title,
            p.state,
            p.done,
            plural(p.total as u64, "task", "tasks"),
            if rest.is_empty() {
                String::new()
            } else {
                format!("; {}", rest.join(", "))
            },
            if p.ready > 0 {
                format!("; {} ready", p.ready)
            } else {
                String::new()
            }
        );
    }
    Ok(exit::OK)
}
