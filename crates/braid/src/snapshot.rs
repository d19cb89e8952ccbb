//! `braid snapshot save|list|restore|prune`: consistent copies of the live
//! database in `.braid/backups/`, written to a temp name, fsynced and
//! renamed; restore under an exclusive lock (over a damaged database too);
//! prune with bounded parallelism. Also the snapshots braid takes by
//! itself: before import, migrate and restore ([`before`]), and every so
//! often while `run` or `serve` runs ([`periodic`]); and what to say when
//! the database is damaged ([`damage_advice`]).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use braid_store::{SqliteStore, Store};
use clap::Subcommand;
use serde_json::json;

use crate::cmd::Ctx;
use crate::exit::{self, Failure};
use crate::project::Project;

#[derive(Subcommand, Debug)]
pub enum SnapshotCmd {
    /// Save a consistent copy of the database (safe while others write).
    Save,
    /// List saved snapshots, newest first.
    List,
    /// Replace the database with a snapshot; the current one is kept as a
    /// snapshot first (a damaged one is moved aside, as damaged-TIME.db).
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
/// How a damaged database that a restore replaced is kept: not a snapshot
/// (it cannot be restored, listed or pruned), there for salvage.
const DAMAGED_PREFIX: &str = "damaged-";

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
            let store = SqliteStore::open(&project.db)?;
            let dest = save_into(&store, &dir, "")?;
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
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let restored = restore(&project, &src, wait)?;
            prune_quietly(&dir, snapshot_keep(&project), Some(&src));
            if ctx.global.json {
                ctx.print_json(&json!({
                    "restored": src,
                    "previous_kept_at": restored.kept,
                    "previous_damaged": restored.damaged,
                }))?;
            } else if restored.damaged {
                outln!(
                    "Restored {}; the damaged database was moved to {} (not a snapshot: keep it to salvage from, or delete it).",
                    src.display(),
                    restored.kept.display()
                );
            } else {
                outln!(
                    "Restored {}; the replaced database is kept at {}.",
                    src.display(),
                    restored.kept.display()
                );
            }
        }
        SnapshotCmd::Prune { keep, older_than } => {
            let (kept, deleted, failures) = prune(&dir, keep, older_than, None)?;
            if ctx.global.json {
                ctx.print_json(&json!({
                    "deleted": deleted, "kept": kept,
                    "failed": failures.iter().map(|(p, e)| json!({"path": p, "error": e})).collect::<Vec<_>>(),
                }))?;
            } else {
                outln!("Deleted {deleted} snapshots; {kept} remain.");
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

/// Writes a consistent copy of `store` into `dir` as
/// `braid-<time><tag>.db`: under a temp name first, fsynced, renamed, the
/// folder fsynced, so a crash never leaves a half-written file under a
/// snapshot's name.
fn save_into(store: &dyn Store, dir: &Path, tag: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = format!("{PREFIX}{}{tag}{SUFFIX}", stamp());
    let dest = dir.join(&name);
    let tmp = dir.join(format!(".{name}.tmp"));
    remove_if_there(&tmp);
    if let Err(e) = store.backup_to(&tmp) {
        remove_if_there(&tmp);
        return Err(e.into());
    }
    std::fs::rename(&tmp, &dest).with_context(|| format!("renaming into {}", dest.display()))?;
    braid_store::fsx::sync_dir(dir).with_context(|| format!("syncing {}", dir.display()))?;
    Ok(dest)
}

fn remove_if_there(path: &Path) {
    if let Err(e) = std::fs::remove_file(path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), error = %e, "removing a snapshot's temporary file");
    }
}

/// `[snapshot] keep` from the project's config (the default when the
/// config does not read: the command that needs the config says why).
fn snapshot_keep(project: &Project) -> usize {
    crate::run::load_config(project)
        .map(|c| c.snapshot_keep)
        .unwrap_or_else(|_| braid_run::Config::default().snapshot_keep)
}

/// Deletes all but the newest `keep` snapshots (only those older than
/// `older_than`, if given; never `spare`). Returns how many remain, how
/// many were deleted, and each failure with its path.
fn prune(
    dir: &Path,
    keep: usize,
    older_than: Option<Duration>,
    spare: Option<&Path>,
) -> Result<(usize, usize, Vec<(PathBuf, String)>)> {
    let snaps = list_snaps(dir)?;
    let now = SystemTime::now();
    let doomed: Vec<&Snap> = snaps
        .iter()
        .skip(keep)
        .filter(|s| {
            older_than.is_none_or(|d| now.duration_since(s.modified).unwrap_or_default() >= d)
        })
        .filter(|s| spare.is_none_or(|p| !same_file(p, &s.path)))
        .collect();
    let (deleted, failures) = delete_bounded(&doomed);
    Ok((snaps.len() - deleted, deleted, failures))
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// Prunes to `keep` after braid saved a snapshot by itself: a failure is
/// logged, and the work the snapshot came before goes on.
fn prune_quietly(dir: &Path, keep: usize, spare: Option<&Path>) {
    match prune(dir, keep, None, spare) {
        Ok((_, _, failures)) => {
            for (path, error) in failures {
                tracing::warn!(path = %path.display(), %error, "pruning an old snapshot");
            }
        }
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = format!("{e:#}"), "pruning old snapshots")
        }
    }
}

/// Saves a snapshot of a SQLite project's database before `what` (import,
/// migrate) changes much at once, named `braid-<time>-before-<what>.db`,
/// and prunes to `[snapshot] keep`. `None` on PostgreSQL (its server's
/// tools back it up). A snapshot that cannot be saved stops `what`:
/// nothing has changed yet.
pub fn before(project: &Project, store: &dyn Store, what: &str) -> Result<Option<PathBuf>> {
    if project.url.is_some() {
        return Ok(None);
    }
    let dir = project.backups();
    let path = save_into(store, &dir, &format!("-before-{what}"))
        .with_context(|| format!("saving a snapshot before {what} (nothing was changed)"))?;
    prune_quietly(&dir, snapshot_keep(project), Some(&path));
    Ok(Some(path))
}

/// How a restore went.
struct Restored {
    /// Where the database that was replaced is now.
    kept: PathBuf,
    /// It was damaged: moved aside as it was, not saved as a snapshot.
    damaged: bool,
}

/// Replaces the project's database with the snapshot `src`. A database
/// that reads is saved as a snapshot first (`braid-<time>-before-restore.db`);
/// one that is damaged (the reason to restore, often) cannot be copied by
/// SQLite, so it is moved aside whole, as `damaged-<time>.db`.
fn restore(project: &Project, src: &Path, wait: Duration) -> Result<Restored> {
    let dir = project.backups();
    let keep = dir.join(format!("{PREFIX}{}-before-restore{SUFFIX}", stamp()));
    let healthy = SqliteStore::open(&project.db)
        .and_then(|store| store.with_lock_wait(wait).restore_from(src, &keep));
    match healthy {
        Ok(()) => {
            braid_store::fsx::sync_dir(&dir)
                .with_context(|| format!("syncing {}", dir.display()))?;
            Ok(Restored {
                kept: keep,
                damaged: false,
            })
        }
        Err(e) if braid_store::sqlite::is_damage(&e) => {
            // A copy begun before SQLite met the damage is no snapshot.
            remove_if_there(&keep);
            let aside = dir.join(format!("{DAMAGED_PREFIX}{}{SUFFIX}", stamp()));
            braid_store::sqlite::restore_over_damaged(&project.db, src, &aside, wait)?;
            Ok(Restored {
                kept: aside,
                damaged: true,
            })
        }
        Err(e) => Err(e.into()),
    }
}

/// The newest snapshot in `dir` and when it was written, if there is one.
pub fn newest(dir: &Path) -> Option<(PathBuf, SystemTime)> {
    list_snaps(dir)
        .ok()?
        .into_iter()
        .next()
        .map(|s| (s.path, s.modified))
}

/// How long ago, as a person says it: "40 s", "12 min", "5 h", "3 days".
pub fn age(since: SystemTime) -> String {
    let s = SystemTime::now()
        .duration_since(since)
        .unwrap_or_default()
        .as_secs();
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..172_800 => format!("{} h", s / 3600),
        _ => format!("{} days", s / 86_400),
    }
}

/// A path as the person typing the command sees it: relative to the
/// current directory when it is under it.
pub fn shown(path: &Path) -> String {
    let rel = std::env::current_dir()
        .ok()
        .and_then(|cwd| path.strip_prefix(cwd).ok().map(Path::to_path_buf));
    rel.filter(|r| !r.as_os_str().is_empty())
        .unwrap_or_else(|| path.to_owned())
        .display()
        .to_string()
}

/// A word as a POSIX shell reads it back.
fn quoted(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_./@:+=,-%".contains(&b));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// What to say about the project's damaged database (`cause`: SQLite's
/// words for it): which file, then [`way_back`].
pub fn damage_advice(project: &Project, named: bool, cause: &str) -> String {
    format!(
        "the database {} is damaged ({cause}). {}",
        shown(&project.db),
        way_back(project, named)
    )
}

/// How a damaged database comes back: the newest snapshot, its age and
/// the command that restores it (with `--db` when the database was named
/// that way, `named`); without a snapshot, how to keep and salvage the
/// file and start again.
pub fn way_back(project: &Project, named: bool) -> String {
    let db = shown(&project.db);
    match newest(&project.backups()) {
        Some((snap, at)) => {
            let snap = shown(&snap);
            let db_arg = if named {
                format!("--db {} ", quoted(&db))
            } else {
                String::new()
            };
            format!(
                "The newest snapshot is {snap} ({} old): braid {db_arg}snapshot restore {}",
                age(at),
                quoted(&snap)
            )
        }
        None => {
            let aside = format!("{db}.damaged");
            format!(
                "There is no snapshot in {} to restore. Keep the damaged file (mv {} {}), \
                 salvage what SQLite can still read (sqlite3 {} .recover > recovered.sql), \
                 and start a new database with `braid init`.",
                shown(&project.backups()),
                quoted(&db),
                quoted(&aside),
                quoted(&aside)
            )
        }
    }
}

/// The thread [`periodic`] started; dropping this stops it (a snapshot in
/// progress finishes first, so no temporary file is left behind).
#[derive(Debug)]
pub struct Periodic {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Periodic {
    fn drop(&mut self) {
        // The thread waits on this channel: closing it wakes it at once.
        drop(self.stop.take());
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            tracing::warn!("the periodic snapshot thread panicked");
        }
    }
}

/// Saves a snapshot of the project's database every `every` and prunes to
/// the newest `keep`, on a thread of its own, until the returned handle is
/// dropped (`run` and `serve` hold it while they run). The first snapshot
/// is due `every` after the newest one already there (at once when there
/// is none), so a project whose runs are shorter than `every` still gets
/// one per `every`. A snapshot that fails is logged and the next one tried
/// `every` later. On PostgreSQL (or with `every` zero) it does nothing.
pub fn periodic(project: &Project, every: Duration, keep: usize) -> std::io::Result<Periodic> {
    if project.url.is_some() || every.is_zero() {
        return Ok(Periodic {
            stop: None,
            thread: None,
        });
    }
    let db = project.db.clone();
    let dir = project.backups();
    let keep = keep.max(1);
    let (stop, stopped) = mpsc::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("braid-snapshot".into())
        .spawn(move || {
            let mut wait = newest(&dir)
                .map(|(_, at)| every.saturating_sub(at.elapsed().unwrap_or_default()))
                .unwrap_or_default();
            // Nothing is ever sent: a timeout is the next snapshot's time,
            // a closed channel the end.
            while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(wait) {
                wait = every;
                let saved = SqliteStore::open(&db)
                    .map_err(anyhow::Error::from)
                    .and_then(|store| save_into(&store, &dir, ""));
                match saved {
                    Ok(path) => {
                        tracing::debug!(path = %path.display(), "saved a periodic snapshot");
                        prune_quietly(&dir, keep, Some(&path));
                    }
                    Err(e) => tracing::warn!(
                        db = %db.display(),
                        error = format!("{e:#}"),
                        next_in = %humantime::format_duration(every),
                        "a periodic snapshot failed"
                    ),
                }
            }
        })?;
    Ok(Periodic {
        stop: Some(stop),
        thread: Some(thread),
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use notify::Watcher;

    fn project(root: &Path) -> Project {
        let dir = root.join(".braid");
        let db = dir.join("braid.db");
        SqliteStore::create(&db).unwrap();
        Project { db, dir, url: None }
    }

    fn names(dir: &Path) -> Vec<String> {
        list_snaps(dir)
            .unwrap()
            .iter()
            .map(|s| s.path.file_name().unwrap().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn periodic_saves_snapshots_prunes_to_keep_and_stops_when_dropped() {
        let root = tempfile::tempdir().unwrap();
        let p = project(root.path());
        let dir = p.backups();
        std::fs::create_dir_all(&dir).unwrap();
        let (tx, events) = mpsc::channel();
        let mut watcher = notify::recommended_watcher(tx).unwrap();
        watcher
            .watch(&dir, notify::RecursiveMode::NonRecursive)
            .unwrap();

        let handle = periodic(&p, Duration::from_millis(50), 2).unwrap();
        // Every snapshot seen, until four have been: woken by the folder's
        // changes, bounded by a deadline far beyond need.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let mut seen = std::collections::BTreeSet::new();
        while seen.len() < 4 {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match events.recv_timeout(left) {
                Ok(_) => seen.extend(names(&dir)),
                Err(e) => panic!("{e}: only {} snapshots appeared: {seen:?}", seen.len()),
            }
        }
        drop(handle);

        // Stopped between snapshots: each one saved was pruned after.
        let left = names(&dir);
        assert_eq!(left.len(), 2, "pruned to keep: {left:?}");
        let oldest_left = left.iter().min().unwrap();
        assert!(
            seen.iter()
                .filter(|n| !left.contains(n))
                .all(|n| n < oldest_left),
            "the newest are kept: {left:?} of {seen:?}"
        );
        let stray: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        assert!(stray.is_empty(), "no temporary file left: {stray:?}");
        // Each is a database with the project's schema.
        for n in &left {
            let store = SqliteStore::open(&dir.join(n)).unwrap();
            assert_eq!(store.health().unwrap().total, 0);
        }
    }

    #[test]
    fn periodic_does_nothing_for_a_postgresql_project() {
        let root = tempfile::tempdir().unwrap();
        let mut p = project(root.path());
        p.url = Some("postgres://nobody@127.0.0.1:1/none".into());
        let handle = periodic(&p, Duration::from_millis(1), 2).unwrap();
        assert!(handle.thread.is_none() && handle.stop.is_none());
        drop(handle);
        assert!(names(&p.backups()).is_empty());
    }

    #[test]
    fn damage_advice_names_the_newest_snapshot_and_quotes_what_a_shell_would_split() {
        let root = tempfile::tempdir().unwrap();
        let p = project(&root.path().join("my project"));
        let none = damage_advice(&p, false, "file is not a database");
        assert!(none.contains("There is no snapshot"), "{none}");
        let store = SqliteStore::open(&p.db).unwrap();
        let newest = save_into(&store, &p.backups(), "-before-import").unwrap();
        let said = damage_advice(&p, true, "file is not a database");
        let quoted_path = format!("'{}'", newest.display());
        assert!(
            said.ends_with(&format!("snapshot restore {quoted_path}")),
            "{said}"
        );
        assert!(said.contains("braid --db '"), "named with --db: {said}");
        assert!(said.contains(" s old): braid --db '"), "its age: {said}");
    }
}
