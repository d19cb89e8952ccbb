//! `braid merge plan`: the order in which finished branches merge into the
//! target — levels by dependency, conflict-free batches inside a level, and
//! the conflict matrix — for tasks in review or for a plan file of plain
//! branches.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use braid_core::{DepKind, State, TaskId};
use braid_run::merge::{Plan, PlanFile, PlanInput};
use braid_store::{ListFilter, Store};
use clap::{Args, Subcommand};
use serde_json::json;

use crate::cmd::{Ctx, parse_id};
use crate::exit::{self, Failure};

#[derive(Subcommand, Debug)]
pub enum MergeCmd {
    /// Show how finished branches would merge: levels (after their
    /// dependencies), conflict-free batches, and the conflict matrix
    /// (pairs checked with `git merge-tree`; nothing is touched).
    Plan(PlanArgs),
}

#[derive(Args, Debug)]
pub struct PlanArgs {
    /// Only these tasks (default: every task in review with a branch).
    #[arg(value_parser = parse_id)]
    pub ids: Vec<TaskId>,
    /// The branch to merge into (default: [merge] into, else main).
    #[arg(long)]
    pub into: Option<String>,
    /// Plan these plain branches instead of tasks: a JSON file
    /// `{"into": "main", "branches": [{"name": "x", "deps": ["y"]}]}`
    /// (schema: docs/merge-plan.schema.json).
    #[arg(long, value_name = "FILE")]
    pub plan: Option<PathBuf>,
    /// merge-tree checks at once.
    #[arg(long, default_value_t = 4)]
    pub jobs: usize,
}

pub fn run(ctx: &Ctx, cmd: MergeCmd) -> Result<i32> {
    match cmd {
        MergeCmd::Plan(a) => plan(ctx, a),
    }
}

/// The branches of tasks in review, their dependencies among themselves,
/// and those that must wait for unfinished work outside the plan.
fn task_inputs(
    store: &dyn Store,
    repo: &Path,
    only: &[TaskId],
) -> Result<(Vec<PlanInput>, Vec<String>)> {
    let tasks = if only.is_empty() {
        store.list(&ListFilter {
            states: vec![State::Review],
            limit: Some(100_000),
            ..ListFilter::default()
        })?
    } else {
        only.iter()
            .map(|id| store.task(id))
            .collect::<Result<Vec<_>, _>>()?
    };
    let branch_of = |t: &braid_core::Task| {
        t.branch
            .clone()
            .unwrap_or_else(|| format!("braid/{}", t.id))
    };
    let mut notes = Vec::new();
    let mut candidates = Vec::new();
    for t in &tasks {
        let b = branch_of(t);
        if !only.is_empty() && t.state != State::Review {
            notes.push(format!(
                "{} is {}, not in review; planned anyway",
                t.id, t.state
            ));
        }
        if braid_git::rev_exists(repo, &b) {
            candidates.push((t, b));
        } else {
            notes.push(format!("{} has no branch {b}; left out", t.id));
        }
    }
    let names: std::collections::HashMap<&TaskId, &str> = candidates
        .iter()
        .map(|(t, b)| (&t.id, b.as_str()))
        .collect();
    let mut inputs = Vec::new();
    for (t, b) in &candidates {
        let mut deps = Vec::new();
        let mut waits = Vec::new();
        for d in t.deps.iter().filter(|d| d.kind == DepKind::Blocks) {
            match names.get(&d.id) {
                Some(name) => deps.push((*name).to_owned()),
                None => {
                    let dep = store.task(&d.id)?;
                    if !dep.state.is_finished() {
                        waits.push(format!("{} ({})", d.id, dep.state));
                    }
                }
            }
        }
        if waits.is_empty() {
            inputs.push(PlanInput {
                name: b.clone(),
                task: Some(t.id.to_string()),
                deps,
            });
        } else {
            notes.push(format!("{b} waits for {}; left out", waits.join(", ")));
        }
    }
    // A branch whose dependency was left out waits too (repeat until stable).
    loop {
        let present: std::collections::HashSet<String> =
            inputs.iter().map(|i| i.name.clone()).collect();
        let before = inputs.len();
        inputs.retain(|i| {
            let ok = i.deps.iter().all(|d| present.contains(d));
            if !ok {
                notes.push(format!("{} waits for a branch that is left out", i.name));
            }
            ok
        });
        if inputs.len() == before {
            break;
        }
    }
    Ok((inputs, notes))
}

fn plan(ctx: &Ctx, a: PlanArgs) -> Result<i32> {
    let project = ctx.project()?;
    let root = project
        .dir
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let repo = braid_git::repo_root(&root).ok_or_else(|| {
        Failure::usage(format!(
            "{} is not in a git repository; merging needs one",
            root.display()
        ))
    })?;
    let config = crate::run::load_config(&project)?;
    let (inputs, notes, file_into) = match &a.plan {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let f: PlanFile = serde_json::from_str(&text)
                .map_err(|e| Failure::usage(format!("{}:{}: {e}", path.display(), e.line())))?;
            (f.branches, Vec::new(), f.into)
        }
        None => {
            let (_, store) = ctx.open()?;
            let (i, n) = task_inputs(&store, &repo, &a.ids)?;
            (i, n, None)
        }
    };
    let into = a
        .into
        .or(file_into)
        .or(config.merge_into.clone())
        .unwrap_or_else(|| "main".to_owned());
    let plan = braid_run::merge::plan(&repo, &into, &inputs, a.jobs).map_err(|e| match e {
        braid_run::merge::PlanError::Input(m) => anyhow::Error::from(Failure::usage(m)),
        other => anyhow::Error::from(other),
    })?;
    if ctx.global.json {
        let mut v = serde_json::to_value(&plan)?;
        v["notes"] = json!(notes);
        ctx.print_json(&v)?;
    } else {
        print_plan(ctx, &plan, &notes);
    }
    Ok(exit::OK)
}

fn print_plan(ctx: &Ctx, p: &Plan, notes: &[String]) {
    let s = &ctx.style;
    println!(
        "Merge plan into {} ({}): {} branches, {} levels, {} conflicting pairs ({} pairs share files, each checked with merge-tree)",
        s.bold(&p.into),
        &p.target[..p.target.len().min(10)],
        p.branches.len(),
        p.order.len(),
        p.conflicts.len(),
        p.pairs_checked
    );
    if p.branches.is_empty() {
        println!("Nothing to merge.");
    }
    // The pyramid: the last level on top, level 0 (merged first) at the base.
    let rows: Vec<String> = p
        .order
        .iter()
        .map(|l| {
            l.batches
                .iter()
                .map(|b| format!("[{}]", b.join(" ")))
                .collect::<Vec<_>>()
                .join("  ")
        })
        .collect();
    let width = rows.iter().map(|r| r.chars().count()).max().unwrap_or(0);
    println!();
    for (l, row) in rows.iter().enumerate().rev() {
        let pad = (width - row.chars().count()) / 2;
        println!("  level {l:<3} {}{row}", " ".repeat(pad));
    }
    if !p.conflicts.is_empty() {
        println!("\n{}", s.bold("conflicts"));
        let names: Vec<&str> = p.branches.iter().map(|b| b.name.as_str()).collect();
        if names.len() <= 16 {
            // The matrix: x where a pair conflicts.
            let w = names.iter().map(|n| n.len()).max().unwrap_or(0);
            for (i, a) in names.iter().enumerate() {
                let cells: String = names
                    .iter()
                    .enumerate()
                    .map(|(j, b)| {
                        if i == j {
                            " ·"
                        } else if p
                            .conflicts
                            .iter()
                            .any(|c| (c.a == *a && c.b == *b) || (c.a == *b && c.b == *a))
                        {
                            " x"
                        } else {
                            "  "
                        }
                    })
                    .collect();
                println!("  {a:<w$} {cells}   {}", s.dim(&format!("#{}", i + 1)));
            }
        }
        for c in &p.conflicts {
            println!("  {} x {}: {}", c.a, c.b, c.files.join(", "));
        }
    }
    for n in notes {
        println!("{} {n}", s.dim("note:"));
    }
}
