//! `braid snapshot save|list|restore|prune`: consistent copies of the live
//! database in `.braid/backups/`, written to a temp name, fsynced and
//! renamed; restore under an exclusive lock; prune with bounded parallelism.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use braid_store::Store;
use clap::Subcommand;
use serde_json::json;

use crate::cmd::Ctx;
use crate::exit::{self, Failure};

#[derive(Subcommand, Debug)]
pub enum SnapshotCmd {
    /// Save a consistent copy of the database (safe while others write).
    Save,
    /// List saved snapshots, newest first.
    List,
    /// Replace the database with a snapshot; the current one is kept as a snapshot first.
    Restore {
        /// The snapshot file (a path, or a name from `snapshot list`).
        file: PathBuf,
    },
    /// Delete old snapshots, keeping the newest N.
    Prune {
        /// How many of the newest snapshots to keep.
        #[arg(long)]
        keep: usize,
        /// Only delete snapshots older than this (e.g. 7d, 12h).
        #[arg(long, value_parser = humantime::parse_duration)]
        older_than: Option<Duration>,
    },
}

/// Deletions in flight at once: bounds open files and threads (seed 000's
/// EMFILE came from deleting thousands of backups at once).
pub const PRUNE_PARALLELISM: usize = 16;
const PREFIX: &str = "braid-";
const SUFFIX: &str = ".db";

struct Snap {
    path: PathBuf,
    modified: SystemTime,
    size: u64,
}

fn stamp() -> String {
    // Sortable, filesystem-safe, unique to the millisecond.
    jiff::Timestamp::now()
        .strftime("%Y%m%dT%H%M%S%.3fZ")
        .to_string()
        .replace('.', "")
}

fn list_snaps(dir: &Path) -> Result<Vec<Snap>> {
    let mut out = Vec::new();
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    for entry in rd {
        let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !(name.starts_with(PREFIX) && name.ends_with(SUFFIX)) {
            continue;
        }
        let meta = entry
            .metadata()
            .with_context(|| format!("reading {}", entry.path().display()))?;
        out.push(Snap {
            path: entry.path(),
            modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            size: meta.len(),
        });
    }
    // Newest first: names carry the time, so they sort with it.
    out.sort_by(|a, b| b.path.cmp(&a.path));
    Ok(out)
}

pub fn run(ctx: &Ctx, cmd: SnapshotCmd) -> Result<i32> {
    let project = ctx.project()?;
    if project.url.is_some() {
        return Err(Failure::usage(
            "snapshots are of a SQLite project; a PostgreSQL database is backed up with the server's tools (pg_dump)",
        )
        .into());
    }
    let dir = project.backups();
    match cmd {
        SnapshotCmd::Save => {
            let store = braid_store::SqliteStore::open(&project.db)?;
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let name = format!("{PREFIX}{}{SUFFIX}", stamp());
            let dest = dir.join(&name);
            // Write under a temp name and rename: a crash never leaves a
            // half-written file under a snapshot's name.
            let tmp = dir.join(format!(".{name}.tmp"));
            let _ = std::fs::remove_file(&tmp);
            store.backup_to(&tmp)?;
            std::fs::rename(&tmp, &dest)
                .with_context(|| format!("renaming into {}", dest.display()))?;
            braid_store::fsx::sync_dir(&dir)
                .with_context(|| format!("syncing {}", dir.display()))?;
            let size = std::fs::metadata(&dest).map(|m| m.len()).unwrap_or(0);
            if ctx.global.json {
                ctx.print_json(&json!({"path": dest, "bytes": size}))?;
            } else {
                outln!("Saved {} ({size} bytes).", dest.display());
            }
        }
        SnapshotCmd::List => {
            let snaps = list_snaps(&dir)?;
            if ctx.global.json {
                let v: Vec<_> = snaps
                    .iter()
                    .map(|s| json!({"path": s.path, "bytes": s.size, "modified": jiff::Timestamp::try_from(s.modified).map(|t| t.to_string()).unwrap_or_default()}))
                    .collect();
                ctx.print_json(&v)?;
            } else if snaps.is_empty() {
                outln!(
                    "No snapshots in {} (make one with `braid snapshot save`).",
                    dir.display()
                );
            } else {
                for s in &snaps {
                    outln!("{}  {:>10} bytes", s.path.display(), s.size);
                }
            }
        }
        SnapshotCmd::Restore { file } => {
            let src = if file.exists() {
                file.clone()
            } else {
                dir.join(&file)
            };
            if !src.is_file() {
                return Err(Failure::usage(format!(
                    "{}: no such snapshot (see `braid snapshot list`)",
                    file.display()
                ))
                .into());
            }
            let wait = match std::env::var("BRAID_LOCK_WAIT") {
                Ok(v) => humantime::parse_duration(&v)
                    .map_err(|e| Failure::usage(format!("BRAID_LOCK_WAIT={v:?}: {e}")))?,
                Err(_) => Duration::from_secs(10),
            };
            let store = braid_store::SqliteStore::open(&project.db)?.with_lock_wait(wait);
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let keep = dir.join(format!("{PREFIX}{}-before-restore{SUFFIX}", stamp()));
            store.restore_from(&src, &keep)?;
            braid_store::fsx::sync_dir(&dir)
                .with_context(|| format!("syncing {}", dir.display()))?;
            if ctx.global.json {
                ctx.print_json(&json!({"restored": src, "previous_kept_at": keep}))?;
            } else {
                outln!(
                    "Restored {}; the replaced database is kept at {}.",
                    src.display(),
                    keep.display()
                );
            }
        }
        SnapshotCmd::Prune { keep, older_than } => {
            let snaps = list_snaps(&dir)?;
            let now = SystemTime::now();
            let doomed: Vec<&Snap> = snaps
                .iter()
                .skip(keep)
                .filter(|s| {
                    older_than
                        .is_none_or(|d| now.duration_since(s.modified).unwrap_or_default() >= d)
                })
                .collect();
            let (deleted, failures) = delete_bounded(&doomed);
            if ctx.global.json {
                ctx.print_json(&json!({
                    "deleted": deleted, "kept": snaps.len() - deleted,
                    "failed": failures.iter().map(|(p, e)| json!({"path": p, "error": e})).collect::<Vec<_>>(),
                }))?;
            } else {
                outln!(
                    "Deleted {deleted} snapshots; {} remain.",
                    snaps.len() - deleted
                );
                for (p, e) in &failures {
                    errln!("could not delete {}: {e}", p.display());
                }
            }
            if !failures.is_empty() {
                return Ok(exit::FAILED);
            }
        }
    }
    Ok(exit::OK)
}

/// Deletes files with at most [`PRUNE_PARALLELISM`] operations in flight.
/// Returns how many were deleted and every failure with its path.
fn delete_bounded(doomed: &[&Snap]) -> (usize, Vec<(PathBuf, String)>) {
    let next = AtomicUsize::new(0);
    let deleted = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::new());
    let workers = PRUNE_PARALLELISM.min(doomed.len());
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(snap) = doomed.get(i) else { break };
                    match std::fs::remove_file(&snap.path) {
                        Ok(()) => {
                            deleted.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => failures
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push((snap.path.clone(), e.to_string())),
                    }
                }
            });
        }
    });
    let mut failures = failures.into_inner().unwrap_or_else(|p| p.into_inner());
    failures.sort();
    (deleted.into_inner(), failures)
}
