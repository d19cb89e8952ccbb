//! `braid demo`: builds a sample project — an epic tree of about thirty
//! tasks with dependencies, some work finished and some under way — then
//! shows its ready queue, tree and health.

use std::path::PathBuf;

use anyhow::{Context, Result};
use braid_core::{Dep, DepKind, NewTask, State, TaskId, TaskType};
use braid_store::{Command as StoreCmd, SqliteStore, Store};
use clap::Args;

use crate::cmd::Ctx;
use crate::exit::{self, Failure};

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Where to create the demo project (default: a new temp directory).
    pub dir: Option<PathBuf>,
}

/// (key, title, type, priority, parent key, blocking dependency keys)
type Spec = (
    &'static str,
    &'static str,
    TaskType,
    u8,
    Option<&'static str>,
    &'static [&'static str],
);

const SPECS: &[Spec] = &[
    (
        "app",
        "Ship the bookmarks app v1",
        TaskType::Epic,
        1,
        None,
        &[],
    ),
    (
        "api",
        "HTTP API",
        TaskType::Epic,
        1,
        Some("app"),
        &["schema"],
    ),
    ("db", "Storage layer", TaskType::Epic, 0, Some("app"), &[]),
    (
        "schema",
        "Design the database schema",
        TaskType::Task,
        0,
        Some("db"),
        &[],
    ),
    (
        "migr",
        "Write migrations",
        TaskType::Task,
        1,
        Some("db"),
        &["schema"],
    ),
    (
        "repo",
        "Bookmark repository (CRUD)",
        TaskType::Task,
        1,
        Some("db"),
        &["migr"],
    ),
    (
        "idx",
        "Indexes for tag search",
        TaskType::Task,
        2,
        Some("db"),
        &["migr"],
    ),
    (
        "seed",
        "Seed data for development",
        TaskType::Chore,
        3,
        Some("db"),
        &["migr"],
    ),
    (
        "routes",
        "Route table and handlers",
        TaskType::Task,
        1,
        Some("api"),
        &[],
    ),
    (
        "auth",
        "Token authentication",
        TaskType::Task,
        0,
        Some("api"),
        &[],
    ),
    (
        "crud",
        "Bookmark endpoints",
        TaskType::Task,
        1,
        Some("api"),
        &["repo", "routes"],
    ),
    (
        "search",
        "Search endpoint",
        TaskType::Task,
        2,
        Some("api"),
        &["idx", "routes"],
    ),
    (
        "errors",
        "Error responses with stable codes",
        TaskType::Task,
        2,
        Some("api"),
        &["routes"],
    ),
    (
        "limits",
        "Rate limiting",
        TaskType::Task,
        3,
        Some("api"),
        &["routes"],
    ),
    ("ui", "Web UI", TaskType::Epic, 2, Some("app"), &[]),
    (
        "layout",
        "Page layout and styles",
        TaskType::Task,
        2,
        Some("ui"),
        &[],
    ),
    (
        "list",
        "Bookmark list view",
        TaskType::Task,
        2,
        Some("ui"),
        &["layout", "crud"],
    ),
    (
        "form",
        "Add-bookmark form",
        TaskType::Task,
        2,
        Some("ui"),
        &["layout", "crud"],
    ),
    (
        "filter",
        "Tag filter",
        TaskType::Task,
        3,
        Some("ui"),
        &["list", "search"],
    ),
    (
        "a11y",
        "Accessibility pass",
        TaskType::Chore,
        3,
        Some("ui"),
        &["list", "form"],
    ),
    (
        "crash",
        "Crash on empty tag list",
        TaskType::Bug,
        0,
        Some("ui"),
        &["layout"],
    ),
    (
        "ops",
        "Release",
        TaskType::Epic,
        2,
        Some("app"),
        &["api", "ui"],
    ),
    ("ci", "CI pipeline", TaskType::Task, 1, Some("app"), &[]),
    (
        "docker",
        "Container image",
        TaskType::Task,
        2,
        Some("ops"),
        &[],
    ),
    (
        "deploy",
        "Deploy to staging",
        TaskType::Task,
        2,
        Some("ops"),
        &["docker"],
    ),
    (
        "smoke",
        "Smoke tests on staging",
        TaskType::Task,
        2,
        Some("ops"),
        &["deploy"],
    ),
    ("docs", "User guide", TaskType::Task, 3, Some("app"), &[]),
    (
        "readme",
        "README quickstart",
        TaskType::Chore,
        3,
        Some("app"),
        &[],
    ),
    ("license", "Choose a license", TaskType::Chore, 4, None, &[]),
    ("logo", "Draw a logo", TaskType::Task, 4, None, &[]),
];

pub fn run(ctx: &Ctx, a: DemoArgs) -> Result<i32> {
    let dir = match a.dir {
        Some(d) => d,
        None => tempfile::Builder::new()
            .prefix("braid-demo-")
            .tempdir()
            .context("creating a temp directory")?
            .keep(),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let db = dir.join(crate::project::DIR).join(crate::project::DB_FILE);
    if db.exists() {
        return Err(Failure::usage(format!(
            "{} already holds a braid project; pick an empty directory",
            dir.display()
        ))
        .into());
    }
    let (project, _) = crate::project::init(&dir, None)?;
    let store = SqliteStore::open(&project.db)?;
    let actor = "demo";
    let mut ids: std::collections::HashMap<&str, TaskId> = std::collections::HashMap::new();
    let mut cmds_after = Vec::new();
    for (key, title, kind, priority, parent, deps) in SPECS {
        let mut t = NewTask::titled(*title);
        t.kind = Some(*kind);
        t.priority = Some(*priority);
        t.parent = parent.map(|p| ids[p].clone());
        for d in *deps {
            match ids.get(d) {
                Some(id) => t.deps.push(Dep {
                    id: id.clone(),
                    kind: DepKind::Blocks,
                }),
                None => cmds_after.push((*key, *d)),
            }
        }
        if *kind != TaskType::Epic {
            t.acceptance = format!("{title}: done when it works and its tests pass.");
        }
        let id = store.apply(actor, StoreCmd::Add(t))?.task.id;
        ids.insert(key, id);
    }
    for (from, to) in cmds_after {
        store.apply(
            actor,
            StoreCmd::DepAdd {
                from: ids[from].clone(),
                to: ids[to].clone(),
                kind: DepKind::Blocks,
            },
        )?;
    }
    // Some history: the schema is done, migrations are under way.
    store.apply(
        actor,
        StoreCmd::SetState {
            id: ids["schema"].clone(),
            to: State::Done,
            reason: Some("reviewed".into()),
        },
    )?;
    store.apply(
        actor,
        StoreCmd::Claim {
            id: Some(ids["migr"].clone()),
            assignee: "agent-1".into(),
            lease_ms: 30 * 60_000,
        },
    )?;
    store.apply(
        actor,
        StoreCmd::SetState {
            id: ids["logo"].clone(),
            to: State::Deferred,
            reason: None,
        },
    )?;
    drop(store);

    let sub = Ctx {
        global: crate::Global {
            db: Some(project.db.clone()),
            ..ctx.global.clone()
        },
        style: ctx.style,
    };
    if ctx.global.json {
        let store = SqliteStore::open(&project.db)?;
        let h = store.health()?;
        ctx.print_json(
            &serde_json::json!({"dir": dir, "db": project.db, "tasks": h.total, "ready": h.ready}),
        )?;
        return Ok(exit::OK);
    }
    let s = &ctx.style;
    println!(
        "{}",
        s.bold(&format!("A demo project in {}", dir.display()))
    );
    println!("\n{}", s.bold("Ready to start (braid ready):"));
    crate::cmd::run(crate::Cli {
        global: sub.global.clone(),
        command: crate::Command::Ready(crate::cmd::ReadyArgs { limit: 10 }),
    })?;
    println!("\n{}", s.bold("The plan (braid tree):"));
    crate::cmd::run(crate::Cli {
        global: sub.global.clone(),
        command: crate::Command::Tree(crate::cmd::TreeArgs { id: None }),
    })?;
    println!("\n{}", s.bold("Health (braid health):"));
    crate::cmd::run(crate::Cli {
        global: sub.global.clone(),
        command: crate::Command::Health,
    })?;
    println!(
        "\nTry it: cd {} && braid claim && braid done <ID> && braid ready   (or pass --db {})",
        dir.display(),
        project.db.display()
    );
    Ok(exit::OK)
}
