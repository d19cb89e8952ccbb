//! `braid demo`: builds a sample project — an epic tree of about thirty
//! tasks with dependencies, some work finished and some under way — then
//! shows its ready queue, tree and health.

use std::path::PathBuf;

use anyhow::{Context, Result};
use braid_app::ops::{self, Transition};
use braid_app::wire::{ClaimIn, DepIn, NewTaskIn};
use braid_core::TaskType;
use braid_store::{SqliteStore, Store};
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
    let project = crate::project::init(&dir, None)?.project;
    let store = SqliteStore::open(&project.db)?;
    let actor = "demo";
    let mut ids: std::collections::HashMap<&str, String> = std::collections::HashMap::new();
    let mut deps_after = Vec::new();
    for (key, title, kind, priority, parent, deps) in SPECS {
        let mut t = NewTaskIn {
            title: (*title).to_owned(),
            kind: Some(kind.as_str().to_owned()),
            priority: Some(i64::from(*priority)),
            parent: parent.map(|p| ids[p].clone()),
            ..NewTaskIn::default()
        };
        for d in *deps {
            match ids.get(d) {
                Some(id) => t.deps.push(DepIn {
                    id: id.clone(),
                    kind: None,
                }),
                None => deps_after.push((*key, *d)),
            }
        }
        if *kind != TaskType::Epic {
            t.acceptance = format!("{title}: done when it works and its tests pass.");
        }
        let id = ops::add(&store, actor, t)?.id;
        ids.insert(key, id);
    }
    for (from, to) in deps_after {
        let dep = DepIn {
            id: ids[to].clone(),
            kind: None,
        };
        ops::dep_add(&store, actor, &ids[from], dep)?;
    }
    // Some history: the schema is done, migrations are under way.
    let one = |key: &str| vec![ids[key].clone()];
    ops::transition(
        &store,
        actor,
        &one("schema"),
        Transition::Done,
        Some("reviewed".into()),
    )?;
    let claim = ClaimIn {
        assignee: Some("agent-1".into()),
        lease_seconds: None,
    };
    ops::claim(&store, actor, Some(&ids["migr"]), claim)?;
    ops::transition(&store, actor, &one("logo"), Transition::Defer, None)?;
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
    outln!(
        "{}",
        s.bold(&format!("A demo project in {}", dir.display()))
    );
    outln!("\n{}", s.bold("Ready to start (braid ready):"));
    crate::cmd::run(crate::Cli {
        global: sub.global.clone(),
        command: crate::Verb::Ready(crate::cmd::ReadyArgs { limit: 10 }),
    })?;
    outln!("\n{}", s.bold("The plan (braid tree):"));
    crate::cmd::run(crate::Cli {
        global: sub.global.clone(),
        command: crate::Verb::Tree(crate::cmd::TreeArgs { id: None }),
    })?;
    outln!("\n{}", s.bold("Health (braid health):"));
    crate::cmd::run(crate::Cli {
        global: sub.global.clone(),
        command: crate::Verb::Health,
    })?;
    // `cargo run -- demo` leaves braid in target/: name the binary that
    // ran, unless `braid` on the PATH is this very program.
    let me = std::env::current_exe().ok();
    let on_path = std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|d| {
            let candidate = d.join("braid");
            candidate.is_file()
                && me.as_ref().is_some_and(|m| {
                    std::fs::canonicalize(&candidate).ok() == std::fs::canonicalize(m).ok()
                })
        })
    });
    let braid = match (&me, on_path) {
        (Some(m), false) => m.display().to_string(),
        _ => "braid".to_owned(),
    };
    outln!(
        "\nTry it: cd {} && {braid} claim && {braid} done <ID> && {braid} ready",
        dir.display(),
    );
    if braid != "braid" {
        outln!("(braid is not on your PATH: `cargo install --path crates/braid` puts it there.)");
    }
    Ok(exit::OK)
}
