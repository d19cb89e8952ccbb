//! `braid gc`: what nobody needs any more goes — the workspaces of tasks
//! that ended, the logs of tasks that ended longer ago than `[gc] keep`
//! (and of tasks that no longer exist), telemetry files older than that,
//! and with a remote the branches of landed tasks there. `--dry-run` lists
//! what would go and its size. `braid run` and `braid serve` sweep at
//! start and daily while they run ([`periodic`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;
use braid_core::{State, TaskId};
use braid_store::Store;
use serde::Serialize;
use serde_json::json;

use crate::cmd::Ctx;
use crate::exit;
use crate::project::Project;
use crate::style::plural;

#[derive(clap::Args, Debug)]
pub struct GcArgs {
    /// List what would be removed, and its size; remove nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// One thing removed (or that would be).
#[derive(Serialize, Debug)]
pub struct Item {
    pub path: PathBuf,
    /// `workspace`, `logs` or `telemetry`.
    pub what: &'static str,
    pub bytes: u64,
    /// Why it goes.
    pub why: String,
}

/// The size of a file or a folder, walked with an explicit stack.
fn size_of(path: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&p) {
                stack.extend(rd.flatten().map(|e| e.path()));
            }
        } else {
            total += meta.len();
        }
    }
    total
}

/// A task named by a folder, and how long ago it ended (`None`: it has
/// not ended; `Some(None)`: there is no such task).
fn ended(store: &dyn Store, name: &str, now: i64) -> Option<Option<Duration>> {
    let Ok(id) = TaskId::parse(name) else {
        return Some(None);
    };
    match store.task(&id) {
        Err(_) => Some(None),
        Ok(t) if matches!(t.state, State::Done | State::Cancelled) => {
            let at = t.closed_at.unwrap_or(t.updated_at);
            Some(Some(Duration::from_millis((now - at).max(0) as u64)))
        }
        Ok(_) => None,
    }
}

/// What goes: workspaces of tasks that are done, cancelled or gone (as
/// soon as they end: a workspace is large and its work is on its branch);
/// logs of tasks gone, or ended more than `keep` ago; telemetry files not
/// written for `keep`.
pub fn candidates(project: &Project, store: &dyn Store, keep: Duration) -> Vec<Item> {
    let paths = crate::run::paths(project);
    let now = store.now_ms();
    let mut out = Vec::new();
    for dir in [paths.worktrees(), paths.scratch()] {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let why = match ended(store, &name, now) {
                None => continue,
                Some(None) => format!("no task {name}"),
                Some(Some(_)) => format!("{name} ended"),
            };
            out.push(Item {
                bytes: size_of(&e.path()),
                path: e.path(),
                what: "workspace",
                why,
            });
        }
    }
    if let Ok(rd) = std::fs::read_dir(paths.logs_root()) {
        for e in rd.flatten().filter(|e| e.path().is_dir()) {
            let name = e.file_name().to_string_lossy().into_owned();
            let why = match ended(store, &name, now) {
                Some(None) if TaskId::parse(&name).is_ok() => format!("no task {name}"),
                Some(Some(ago)) if ago > keep => format!(
                    "{name} ended {} ago",
                    humantime::format_duration(Duration::from_secs(ago.as_secs() / 3600 * 3600))
                ),
                _ => continue,
            };
            out.push(Item {
                bytes: size_of(&e.path()),
                path: e.path(),
                what: "logs",
                why,
            });
        }
    }
    if let Ok(rd) = std::fs::read_dir(project.dir.join("telemetry")) {
        for e in rd.flatten() {
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|m| m.elapsed().ok())
                .is_some_and(|age| age > keep);
            if old {
                out.push(Item {
                    bytes: size_of(&e.path()),
                    path: e.path(),
                    what: "telemetry",
                    why: format!("not written for {}", humantime::format_duration(keep)),
                });
            }
        }
    }
    out
}

/// Removes `items`: a worktree through git (so git forgets it too), the
/// rest from the disk. Answers what could not be removed, and why.
pub fn remove(project: &Project, items: &[Item]) -> Vec<(PathBuf, String)> {
    let repo = crate::run::paths(project).repo;
    let worktrees = crate::run::paths(project).worktrees();
    let mut failed = Vec::new();
    for it in items {
        let r = match &repo {
            Some(repo) if it.path.starts_with(&worktrees) => {
                braid_git::remove_worktree(repo, &it.path).map_err(|e| e.to_string())
            }
            _ if it.path.is_dir() => std::fs::remove_dir_all(&it.path).map_err(|e| e.to_string()),
            _ => std::fs::remove_file(&it.path).map_err(|e| e.to_string()),
        };
        if let Err(e) = r {
            failed.push((it.path.clone(), e));
        }
    }
    failed
}

/// One sweep, as `run` and `serve` do it (quietly; a failure is a warning).
pub fn sweep(project: &Project, store: &dyn Store, keep: Duration) {
    let items = candidates(project, store, keep);
    let bytes: u64 = items.iter().map(|i| i.bytes).sum();
    for (path, e) in remove(project, &items) {
        tracing::warn!(path = %path.display(), error = %e, "gc: could not remove");
    }
    if !items.is_empty() {
        tracing::info!(removed = items.len(), bytes, "gc swept");
    }
}

/// Sweeps now, then every day, on a thread of its own, until the handle
/// is dropped.
pub struct Periodic {
    _stop: std::sync::mpsc::Sender<()>,
}

pub fn periodic(project: Project, keep: Duration) -> std::io::Result<Periodic> {
    const DAY: Duration = Duration::from_secs(86_400);
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("braid-gc".into())
        .spawn(move || {
            loop {
                match project.open() {
                    Ok(store) => sweep(&project, &store, keep),
                    Err(e) => tracing::warn!(error = %e, "gc: opening the store"),
                }
                // Woken by the handle being dropped, or a day later.
                match rx.recv_timeout(DAY) {
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
                    _ => return,
                }
            }
        })?;
    Ok(Periodic { _stop: tx })
}

pub fn run(ctx: &Ctx, a: GcArgs) -> Result<i32> {
    let (project, store) = ctx.open()?;
    let config = crate::run::load_config(&project)?;
    let items = candidates(&project, &store, config.gc_keep);
    let bytes: u64 = items.iter().map(|i| i.bytes).sum();
    let failed = if a.dry_run {
        Vec::new()
    } else {
        remove(&project, &items)
    };
    // With a remote: the branches of landed tasks go from it.
    let deleted = if a.dry_run {
        Vec::new()
    } else {
        crate::run::delete_landed_remote_branches(&project, &store, &config)?
    };
    if ctx.global.json {
        ctx.print_json(&json!({
            "dry_run": a.dry_run,
            "removed": if a.dry_run { Vec::new() } else { items.iter().map(|i| &i.path).collect() },
            "items": items,
            "bytes": bytes,
            "failed": failed.iter().map(|(p, e)| json!({"path": p, "error": e})).collect::<Vec<_>>(),
            "remote_branches_deleted": deleted,
        }))?;
    } else {
        let verb = if a.dry_run { "Would remove" } else { "Removed" };
        for i in &items {
            outln!(
                "{:<10} {:>10}  {}  ({})",
                i.what,
                crate::run::human_bytes(i.bytes),
                i.path.display(),
                i.why
            );
        }
        outln!(
            "{verb} {} ({}); logs are kept {} after their task ends ([gc] keep).",
            plural(items.len() as u64, "item", "items"),
            crate::run::human_bytes(bytes),
            humantime::format_duration(config.gc_keep)
        );
        for (p, e) in &failed {
            errln!("could not remove {}: {e}", p.display());
        }
        if !deleted.is_empty() {
            outln!(
                "Deleted {} on the remote: {}",
                plural(
                    deleted.len() as u64,
                    "landed task branch",
                    "landed task branches"
                ),
                deleted.join(", ")
            );
        }
    }
    Ok(if failed.is_empty() {
        exit::OK
    } else {
        exit::FAILED
    })
}
