//! `braid migrate --to postgres://… [--from PATH]`: copies a SQLite project's
//! work graph (tasks, dependencies, labels, the event log) into PostgreSQL in
//! one all-or-nothing import, then reads both back and compares counts and
//! checksums. A non-empty target is refused unless `--force`.

use std::path::PathBuf;

use anyhow::Result;
use braid_core::{Event, Task};
use braid_store::{ExportItem, ImportBatch, ImportOptions, PgStore, SqliteStore, Store};
use clap::Args;
use serde_json::json;

use crate::cmd::Ctx;
use crate::exit::{self, Failure};
use crate::project::Project;

#[derive(Args, Debug)]
pub struct MigrateArgs {
    /// The PostgreSQL database to copy into (postgres://user@host:port/db).
    #[arg(long, value_name = "URL")]
    pub to: String,
    /// The SQLite database to copy (default: this project's).
    #[arg(long, value_name = "PATH")]
    pub from: Option<PathBuf>,
    /// Replace what the target already holds.
    #[arg(long)]
    pub force: bool,
}

/// What a store holds, summed up: counts and a BLAKE3 checksum of every
/// task (fields and dependencies, in id order) and every event.
#[derive(Debug, PartialEq, serde::Serialize)]
struct Summary {
    tasks: usize,
    deps: usize,
    events: usize,
    tasks_checksum: String,
    events_checksum: String,
}

/// Everything a store holds: tasks (with dependencies) and events.
fn read_all(store: &dyn Store) -> Result<(Vec<Task>, Vec<Event>)> {
    let mut tasks: Vec<Task> = Vec::new();
    let mut events: Vec<Event> = Vec::new();
    store.export(true, &mut |item| {
        match item {
            ExportItem::Task(t) => tasks.push(t),
            ExportItem::Event(e) => events.push(e),
        }
        Ok(())
    })?;
    Ok((tasks, events))
}

fn summarize(tasks: &[Task], events: &[Event]) -> Summary {
    let mut tasks: Vec<&Task> = tasks.iter().collect();
    tasks.sort_by(|a, b| a.id.cmp(&b.id));
    let mut h = blake3::Hasher::new();
    let mut deps = 0;
    for t in &tasks {
        let mut ds: Vec<(String, &str)> = t
            .deps
            .iter()
            .map(|d| (d.id.to_string(), d.kind.as_str()))
            .collect();
        ds.sort();
        deps += ds.len();
        let line = json!([
            t.id,
            t.title,
            t.description,
            t.kind.as_str(),
            t.priority,
            t.state.as_str(),
            t.parent,
            t.labels,
            t.assignee,
            t.acceptance,
            t.gates,
            t.agent,
            t.branch,
            t.created_at,
            t.updated_at,
            t.closed_at,
            t.close_reason,
            ds
        ]);
        h.update(line.to_string().as_bytes());
        h.update(b"\n");
    }
    let tasks_checksum = h.finalize().to_hex().to_string();
    let mut h = blake3::Hasher::new();
    for e in events {
        let line = json!([e.seq, e.at, e.actor, e.kind.as_str(), e.task, e.payload]);
        h.update(line.to_string().as_bytes());
        h.update(b"\n");
    }
    Summary {
        tasks: tasks.len(),
        deps,
        events: events.len(),
        tasks_checksum,
        events_checksum: h.finalize().to_hex().to_string(),
    }
}

pub fn run(ctx: &Ctx, a: MigrateArgs) -> Result<i32> {
    if !braid_store::postgres::is_url(&a.to) {
        return Err(Failure::usage(format!(
            "--to must be a PostgreSQL URL (postgres://user@host:port/db), not {:?}",
            a.to
        ))
        .into());
    }
    let project = match a.from {
        Some(p) => {
            let db = if p.is_dir() {
                p.join(crate::project::DB_FILE)
            } else {
                p
            };
            let dir = db
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."))
                .to_owned();
            Project { db, dir, url: None }
        }
        None => {
            let project = ctx.project()?;
            if project.url.is_some() {
                return Err(Failure::usage(
                    "this project is already on PostgreSQL; name the SQLite file with --from PATH",
                )
                .into());
            }
            project
        }
    };
    let from = project.db.clone();
    if !from.is_file() {
        return Err(Failure::usage(format!("no braid database at {}", from.display())).into());
    }
    let source = SqliteStore::open(&from)?;
    // The source as it was when it left, beside it (a move to a server is
    // a moment worth a restore point).
    let snapshot = crate::snapshot::before(&project, &source, "migrate")?;
    let target = PgStore::open(&a.to)?;
    let shown = braid_store::postgres::redact(&a.to);
    let held = target.health()?.total;
    if held > 0 || target.last_seq()? > 0 {
        if !a.force {
            return Err(Failure {
                code: exit::CONFLICT,
                message: format!(
                    "{shown} already holds a work graph ({held} tasks); nothing was copied (--force replaces it)"
                ),
            }
            .into());
        }
        target.clear()?;
    }
    // The source is read once: the summary and the copy come from it.
    let (tasks, events) = read_all(&source)?;
    let before = summarize(&tasks, &events);
    let batch = ImportBatch {
        source: format!("migrate from {}", from.display()),
        tasks,
        events,
    };
    let started = std::time::Instant::now();
    let report = target.import(&ctx.actor(), batch, ImportOptions::default())?;
    let (tasks, mut events) = read_all(&target)?;
    if events
        .last()
        .is_some_and(|e| e.kind == braid_core::EventKind::Imported)
    {
        // The target's own record of the copy.
        events.pop();
    }
    let after = summarize(&tasks, &events);
    let verified = before == after;
    if ctx.global.json {
        ctx.print_json(&json!({
            "from": from, "to": shown, "tasks": report.tasks, "deps": report.deps,
            "events": report.events, "verified": verified, "source": before, "target": after,
            "gate_cache": "kept on this machine", "snapshot": snapshot,
            "ms": started.elapsed().as_millis() as u64,
        }))?;
    } else {
        outln!(
            "Copied {} tasks, {} dependencies and {} events from {} to {shown} in {:.1} s.",
            report.tasks,
            report.deps,
            report.events,
            from.display(),
            started.elapsed().as_secs_f64()
        );
        if verified {
            outln!(
                "Verified: counts and checksums match (tasks {}, events {}).",
                &after.tasks_checksum[..16],
                &after.events_checksum[..16]
            );
            outln!(
                "The gate cache stays where it is on this machine (its index lives beside its entries) and keeps answering."
            );
            outln!("Use it with --db {shown} (or BRAID_DB).");
        }
    }
    if !verified {
        return Err(anyhow::anyhow!(
            "the copy does not match its source (source {before:?}, target {after:?})"
        ));
    }
    Ok(exit::OK)
}
