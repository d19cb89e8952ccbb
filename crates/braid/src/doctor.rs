//! `braid doctor`: what braid needs from this machine and this project,
//! checked in one go — the database's integrity, the config, each agent's
//! program, git (worktrees, locks, branches), workspaces and processes left
//! over, free disk and memory against their floors, snapshots, the server's
//! port — each finding with its fix. Exit 1 when a check fails (warnings
//! alone exit 0). It reads and probes; it changes nothing but what `braid
//! run`'s own preflight makes (the workspaces' folder).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Result;
use braid_core::TaskId;
use braid_run::Config;
use braid_run::config::{Agent, ConfigError};
use braid_store::Store;
use serde::Serialize;
use serde_json::json;

use crate::cmd::Ctx;
use crate::exit;
use crate::project::Project;
use crate::run::human_bytes;
use crate::snapshot::shown;

/// How long an agent's program has to answer `--version`.
const VERSION_WAIT: Duration = Duration::from_secs(5);
/// How long the server's port has to answer as a braid serve.
const PROBE_WAIT: Duration = Duration::from_secs(2);
/// Problems `quick_check` lists before it stops.
const INTEGRITY_PROBLEMS: usize = 10;
/// A git lock file older than this was most likely left by a git that died
/// (git holds one for the length of one command).
const STALE_GIT_LOCK: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

/// One finding: what was checked, how it stands, and what to do about it.
#[derive(Debug, Serialize)]
pub struct Check {
    pub name: String,
    pub status: Status,
    pub detail: String,
    pub fix: Option<String>,
}

impl Check {
    fn ok(name: impl Into<String>, detail: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            status: Status::Ok,
            detail: detail.into(),
            fix: None,
        }
    }

    fn warn(name: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            status: Status::Warn,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    fn fail(name: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            status: Status::Fail,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

pub fn run(ctx: &Ctx) -> Result<i32> {
    let project = ctx.project()?;
    let mut checks = Vec::new();
    let (integrity, store) = database(&project, ctx.global.db.is_some());
    checks.push(integrity);
    let file = project.dir.join("config.toml");
    let loaded = Config::load(&file);
    let paths = crate::run::paths(&project);
    checks.push(config(&loaded, &file, &paths));
    let config = loaded.unwrap_or_default();
    checks.extend(agents(&config, &paths));
    checks.extend(git(&paths, store.as_ref().map(|s| s as &dyn Store)));
    checks.push(workspaces(
        &project,
        store.as_ref().map(|s| s as &dyn Store),
        config.gc_keep,
    ));
    checks.push(processes(&paths));
    checks.push(disk(&paths, config.run.disk_floor));
    checks.push(memory(config.run.memory_floor));
    checks.push(snapshots(&project));
    checks.push(server(&file));
    let ok = checks.iter().all(|c| c.status != Status::Fail);
    if ctx.global.json {
        ctx.print_json(&json!({"ok": ok, "checks": checks}))?;
    } else {
        print_human(ctx, &checks);
    }
    Ok(if ok { exit::OK } else { exit::FAILED })
}

fn print_human(ctx: &Ctx, checks: &[Check]) {
    let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    for c in checks {
        let status = match c.status {
            Status::Ok => ctx.style.paint("32", "ok  "),
            Status::Warn => ctx.style.paint("33", "warn"),
            Status::Fail => ctx.style.paint("31", "FAIL"),
        };
        let fix = c
            .fix
            .as_deref()
            .map(|f| format!("; fix: {f}"))
            .unwrap_or_default();
        outln!("{status}  {:<width$}  {}{fix}", c.name, c.detail);
    }
    let failed = checks.iter().filter(|c| c.status == Status::Fail).count();
    let warned = checks.iter().filter(|c| c.status == Status::Warn).count();
    match (failed, warned) {
        (0, 0) => outln!("All is well."),
        (0, w) => outln!("Nothing failed; {w} warning(s)."),
        (f, w) => outln!("{f} check(s) failed, {w} warning(s)."),
    }
}

/// The database: on SQLite its integrity (`PRAGMA quick_check`, every page
/// read) and schema version, and the store when it reads; on PostgreSQL
/// the connection (opening brings the schema up to date, or refuses one
/// newer than this braid).
fn database(project: &Project, named: bool) -> (Check, Option<braid_store::AnyStore>) {
    const NAME: &str = "database";
    if let Some(url) = &project.url {
        let shown = braid_store::postgres::redact(url);
        return match braid_store::PgStore::open(url) {
            Ok(store) => (
                Check::ok(
                    NAME,
                    format!("connected to {shown}; its schema is this braid's"),
                ),
                Some(braid_store::AnyStore::Postgres(store)),
            ),
            Err(e) => (
                Check::fail(
                    NAME,
                    format!("{shown}: {}", chain(e)),
                    "start the server or correct the address (--db, BRAID_DB)",
                ),
                None,
            ),
        };
    }
    let db = shown(&project.db);
    let found = match braid_store::sqlite::check_file(&project.db, INTEGRITY_PROBLEMS) {
        Ok(found) => found,
        Err(e) => {
            return (
                Check::fail(
                    NAME,
                    format!("{db} could not be checked: {}", chain(e)),
                    "see that the file is there and readable (braid init makes one)",
                ),
                None,
            );
        }
    };
    if !found.problems.is_empty() {
        return (
            Check::fail(
                NAME,
                format!("{db} is damaged: {}", found.problems.join("; ")),
                crate::snapshot::way_back(project, named),
            ),
            None,
        );
    }
    if found.schema_version > found.schema_known {
        return (
            Check::fail(
                NAME,
                format!(
                    "{db} has schema version {}, newer than this braid knows ({})",
                    found.schema_version, found.schema_known
                ),
                "upgrade braid",
            ),
            None,
        );
    }
    match braid_store::SqliteStore::open(&project.db) {
        Ok(store) => (
            Check::ok(
                NAME,
                format!(
                    "{db} is sound (quick_check found nothing; schema version {})",
                    found.schema_known
                ),
            ),
            Some(braid_store::AnyStore::Sqlite(store)),
        ),
        Err(e) => (
            Check::fail(
                NAME,
                format!("{db}: {}", chain(e)),
                "see the message; then run braid doctor again",
            ),
            None,
        ),
    }
}

/// A store error with its causes.
fn chain(e: braid_store::Error) -> String {
    format!("{:#}", anyhow::Error::from(e))
}

/// The config reads, and passes what `braid run` checks before it claims
/// anything (programs found, the merge target there, workspaces possible).
fn config(loaded: &Result<Config, ConfigError>, file: &Path, paths: &braid_run::Paths) -> Check {
    const NAME: &str = "config";
    let fix_at = |e: &ConfigError| {
        if e.line > 0 {
            format!("edit {}:{} (every key: braid config)", e.file, e.line)
        } else {
            format!("edit {} (every key: braid config)", e.file)
        }
    };
    let config = match loaded {
        Ok(c) => c,
        Err(e) => return Check::fail(NAME, e.to_string(), fix_at(e)),
    };
    let at = shown(file);
    // Agents' programs are each a check of their own (below), so one that
    // is missing hides none of what comes after it here.
    let mut rest = config.clone();
    rest.agents.clear();
    match braid_run::preflight::check(&rest, &at, paths) {
        Ok(()) => Check::ok(
            NAME,
            if file.exists() {
                format!("{at} reads and passes braid run's checks (agents: below)")
            } else {
                format!("no {at}: the defaults apply")
            },
        ),
        Err(e) => Check::fail(NAME, e.message.clone(), fix_at(&e)),
    }
}

/// Each agent's program: found (on PATH, or by its path), and what it
/// answers to `--version`, within a few seconds (all asked at once).
fn agents(config: &Config, paths: &braid_run::Paths) -> Vec<Check> {
    if config.agents.is_empty() {
        return vec![Check::warn(
            "agents",
            "no [[agent]] in the config: braid run has no one to give work to",
            "add an [[agent]] to .braid/config.toml (examples: braid config)",
        )];
    }
    let base = paths.repo.clone().unwrap_or_else(|| {
        paths
            .braid_dir
            .parent()
            .unwrap_or(Path::new("."))
            .to_owned()
    });
    std::thread::scope(|s| {
        let asked: Vec<_> = config
            .agents
            .iter()
            .map(|a| {
                let base = &base;
                s.spawn(move || agent(a, base))
            })
            .collect();
        asked
            .into_iter()
            .zip(&config.agents)
            .map(|(h, a)| {
                h.join().unwrap_or_else(|_| {
                    Check::fail(
                        format!("agent {}", a.name),
                        "checking it failed",
                        "run braid doctor again",
                    )
                })
            })
            .collect()
    })
}

fn agent(a: &Agent, base: &Path) -> Check {
    let name = format!("agent {}", a.name);
    let program = &a.command[0];
    let at = format!(".braid/config.toml:{}", a.line);
    let full = match find_program(program, base) {
        Ok(Some(full)) => full,
        Ok(None) => {
            return Check::ok(
                name,
                format!("{program:?} is known only at dispatch (it has a placeholder)"),
            );
        }
        Err(why) => {
            return Check::fail(
                name,
                why,
                format!("install it, or write its full path in the agent's command ({at})"),
            );
        }
    };
    let plain = matches!(a.kind, braid_run::adapter::Kind::Command);
    match version(&full) {
        Version::Said(v) => Check::ok(name, format!("{} ({v})", full.display())),
        Version::Exited(code, said) if plain => Check::ok(
            name,
            format!(
                "{} (found; `--version` is not its option: {code}{})",
                full.display(),
                said.map(|s| format!(", {s}")).unwrap_or_default()
            ),
        ),
        Version::Exited(code, said) => Check::warn(
            name,
            format!(
                "{} --version ended with {code}{}",
                full.display(),
                said.map(|s| format!(": {s}")).unwrap_or_default()
            ),
            format!(
                "run `{} --version` yourself and see what it needs",
                full.display()
            ),
        ),
        Version::Silent => Check::warn(
            name,
            format!(
                "{} --version did not answer within {} s",
                full.display(),
                VERSION_WAIT.as_secs()
            ),
            format!(
                "run `{} --version` yourself: it may wait for a login or an update",
                full.display()
            ),
        ),
        Version::Failed(e) => Check::fail(
            name,
            format!("{} could not be started: {e}", full.display()),
            format!("make it executable, or fix the agent's command ({at})"),
        ),
    }
}

/// Where a command's program is (`None`: it holds a placeholder, known at
/// dispatch), or why it cannot run: by its path (relative to the
/// repository, where workspaces are checkouts of it), else on PATH.
fn find_program(name: &str, base: &Path) -> Result<Option<PathBuf>, String> {
    if name.contains('{') {
        return Ok(None);
    }
    let runnable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if name.contains('/') {
        let p = Path::new(name);
        let full = if p.is_absolute() {
            p.to_owned()
        } else {
            base.join(p)
        };
        return if runnable(&full) {
            Ok(Some(full))
        } else if full.exists() {
            Err(format!(
                "the program {name:?} ({}) is not an executable file",
                full.display()
            ))
        } else {
            Err(format!(
                "the program {name:?} does not exist (looked for {})",
                full.display()
            ))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| runnable(p))
        .map(Some)
        .ok_or_else(|| format!("the program {name:?} is not on PATH"))
}

/// What a program answered to `--version`.
enum Version {
    /// Its first line of output.
    Said(String),
    /// It ended unsuccessfully (how), with its first line of output.
    Exited(String, Option<String>),
    /// Nothing within [`VERSION_WAIT`]: it was stopped.
    Silent,
    /// It could not be started.
    Failed(std::io::Error),
}

/// Runs `program --version` in a process group of its own, stdin closed,
/// and stops the group (SIGKILL) if it has not ended in [`VERSION_WAIT`].
fn version(program: &Path) -> Version {
    use wait_timeout::ChildExt;
    let mut child = match Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => return Version::Failed(e),
    };
    // Both pipes are drained on threads so a chatty program never blocks
    // on a full pipe; only the first few KiB are kept.
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(r) = r {
                let mut r = r.take(8192);
                if let Err(e) = r.read_to_end(&mut buf) {
                    tracing::debug!(error = %e, "reading a program's --version output");
                }
            }
            buf
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let status = match child.wait_timeout(VERSION_WAIT) {
        Ok(Some(status)) => Some(status),
        Ok(None) => None,
        Err(e) => return Version::Failed(e),
    };
    if status.is_none() {
        let group = nix::unistd::Pid::from_raw(child.id() as i32);
        if let Err(e) = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL) {
            tracing::debug!(error = %e, "stopping a program's --version");
        }
        if let Err(e) = child.wait() {
            tracing::debug!(error = %e, "reaping a program's --version");
        }
    }
    let first_line = |b: Vec<u8>| {
        String::from_utf8_lossy(&b)
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .map(|l| crate::style::truncate(l, 120))
    };
    let said = first_line(out.join().unwrap_or_default())
        .or_else(|| first_line(err.join().unwrap_or_default()));
    match status {
        None => Version::Silent,
        Some(s) if s.success() => Version::Said(said.unwrap_or_else(|| "no output".into())),
        Some(s) => Version::Exited(
            s.code()
                .map(|c| format!("exit {c}"))
                .unwrap_or_else(|| "a signal".into()),
            said,
        ),
    }
}

/// Git: the repository; worktrees git still lists whose folder is gone
/// (prunable); lock files a git that died left; `braid/*` branches of
/// tasks the database does not hold. braid's own locks in `.git`
/// (`braid-worktrees.lock`, `braid-fetch.lock`) are OS locks that end
/// with their holder: a file there is never stale.
fn git(paths: &braid_run::Paths, store: Option<&dyn Store>) -> Vec<Check> {
    let root = paths.braid_dir.parent().unwrap_or(Path::new("."));
    let Some(repo) = braid_git::repo_root(root) else {
        return vec![Check::ok(
            "git",
            "not in a git repository: agents work in scratch folders (.braid/work), and nothing is merged",
        )];
    };
    if paths.repo.is_none() {
        return vec![Check::warn(
            "git",
            format!("{} has no commit yet: worktrees need one", repo.display()),
            format!("git -C {} commit --allow-empty -m start", repo.display()),
        )];
    }
    let mut checks = vec![Check::ok(
        "git",
        format!("repository at {}", repo.display()),
    )];
    checks.push(match braid_git::worktrees(&repo) {
        Ok(list) => {
            let gone: Vec<String> = list
                .iter()
                .filter(|(p, _)| !p.exists())
                .map(|(p, b)| match b {
                    Some(b) => format!("{} ({b})", p.display()),
                    None => p.display().to_string(),
                })
                .collect();
            if gone.is_empty() {
                Check::ok(
                    "worktrees",
                    format!("{} worktree(s), none prunable", list.len()),
                )
            } else {
                Check::warn(
                    "worktrees",
                    format!(
                        "{} prunable (the folder is gone): {}",
                        gone.len(),
                        gone.join(", ")
                    ),
                    format!("git -C {} worktree prune", repo.display()),
                )
            }
        }
        Err(e) => Check::warn("worktrees", e.to_string(), "see git's message"),
    });
    checks.push(git_locks(&repo));
    checks.push(branches(&repo, store));
    checks
}

fn git_locks(repo: &Path) -> Check {
    const NAME: &str = "git locks";
    let git_dir = repo.join(".git");
    if !git_dir.is_dir() {
        return Check::ok(
            NAME,
            "the repository's .git is not a folder here; not looked at",
        );
    }
    let mut candidates = vec![git_dir.join("index.lock"), git_dir.join("HEAD.lock")];
    if let Ok(rd) = std::fs::read_dir(git_dir.join("worktrees")) {
        candidates.extend(rd.flatten().map(|e| e.path().join("index.lock")));
    }
    let stale: Vec<(PathBuf, Duration)> = candidates
        .into_iter()
        .filter_map(|p| {
            let age = std::fs::metadata(&p)
                .ok()?
                .modified()
                .ok()?
                .elapsed()
                .ok()?;
            (age > STALE_GIT_LOCK).then_some((p, age))
        })
        .collect();
    if stale.is_empty() {
        return Check::ok(NAME, "no stale lock files");
    }
    let listed: Vec<String> = stale
        .iter()
        .map(|(p, age)| {
            format!(
                "{} ({} old)",
                shown(p),
                crate::snapshot::age(std::time::SystemTime::now() - *age)
            )
        })
        .collect();
    let files: Vec<String> = stale.iter().map(|(p, _)| shown(p)).collect();
    Check::warn(
        NAME,
        format!("left by a git that stopped: {}", listed.join(", ")),
        format!("if no git command is running: rm {}", files.join(" ")),
    )
}

fn branches(repo: &Path, store: Option<&dyn Store>) -> Check {
    const NAME: &str = "branches";
    let Some(store) = store else {
        return Check::warn(
            NAME,
            "not checked: the database does not read",
            "see database",
        );
    };
    let refs = match braid_git::refs_under(repo, "refs/heads/braid/") {
        Ok(r) => r,
        Err(e) => return Check::warn(NAME, e.to_string(), "see git's message"),
    };
    let orphans: Vec<String> = refs
        .iter()
        .filter_map(|(name, _)| {
            let id = TaskId::parse(name).ok()?;
            match store.task(&id) {
                Err(e) if e.kind() == braid_core::ErrorKind::NotFound => {
                    Some(format!("braid/{name}"))
                }
                _ => None,
            }
        })
        .collect();
    if orphans.is_empty() {
        return Check::ok(
            NAME,
            format!("{} braid/* branch(es), each of a task", refs.len()),
        );
    }
    Check::warn(
        NAME,
        format!(
            "{} branch(es) of tasks this database does not hold: {}",
            orphans.len(),
            orphans.join(", ")
        ),
        format!(
            "if their work is not wanted: git -C {} branch -D {}",
            repo.display(),
            orphans.join(" ")
        ),
    )
}

/// Workspaces of tasks that ended (done, cancelled) or are gone: what
/// `braid gc` removes.
fn workspaces(project: &Project, store: Option<&dyn Store>, keep: Duration) -> Check {
    const NAME: &str = "workspaces";
    let Some(store) = store else {
        return Check::warn(
            NAME,
            "not checked: the database does not read",
            "see database",
        );
    };
    let left: Vec<crate::gc::Item> = crate::gc::candidates(project, store, keep)
        .into_iter()
        .filter(|i| i.what == "workspace")
        .collect();
    if left.is_empty() {
        return Check::ok(NAME, "none left by tasks that ended");
    }
    let bytes: u64 = left.iter().map(|i| i.bytes).sum();
    let why: Vec<&str> = left.iter().map(|i| i.why.as_str()).collect();
    Check::warn(
        NAME,
        format!(
            "{} left by tasks that ended or are gone ({}): {}",
            left.len(),
            human_bytes(bytes),
            why.join(", ")
        ),
        "braid gc",
    )
}

/// Process groups braid started (`.braid/procs`) that still run while the
/// braid that started them is gone: agents or gates nobody supervises.
fn processes(paths: &braid_run::Paths) -> Check {
    const NAME: &str = "processes";
    let records = braid_run::procs::recorded(&paths.procs());
    if records.is_empty() {
        return Check::ok(NAME, "no process groups recorded");
    }
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|b| b.trim().to_owned())
        .ok();
    let mut owned = 0;
    let mut orphans = Vec::new();
    for record in records {
        if boot.as_ref() != Some(&record.boot) || !record.leader.alive() {
            continue; // ended (the next run forgets the record)
        }
        if record.owner.alive() {
            owned += 1;
        } else {
            orphans.push(record);
        }
    }
    if orphans.is_empty() {
        return Check::ok(
            NAME,
            format!("none left over ({owned} running under a live braid)"),
        );
    }
    let listed: Vec<String> = orphans
        .iter()
        .map(|r| {
            format!(
                "{} (process group {}, in {}, started by braid process {})",
                r.program, r.leader.pid, r.holds, r.owner.pid
            )
        })
        .collect();
    let groups: Vec<String> = orphans
        .iter()
        .map(|r| format!("-{}", r.leader.pid))
        .collect();
    Check::fail(
        NAME,
        format!(
            "{} still running, their braid gone: {}",
            orphans.len(),
            listed.join("; ")
        ),
        format!(
            "braid run stops them when it starts; or now: kill -TERM -- {}",
            groups.join(" ")
        ),
    )
}

/// Free space on the filesystems of `.braid` and the workspaces, against
/// `[run] disk_floor` (each filesystem once).
fn disk(paths: &braid_run::Paths, floor: u64) -> Check {
    const NAME: &str = "disk";
    let mut seen = Vec::new();
    let mut parts = Vec::new();
    let mut low = Vec::new();
    let places = [paths.braid_dir.clone(), paths.worktrees(), paths.scratch()];
    for place in places.iter().filter(|p| p.exists()) {
        let Ok(meta) = std::fs::metadata(place) else {
            continue;
        };
        if seen.contains(&meta.dev()) {
            continue;
        }
        seen.push(meta.dev());
        match nix::sys::statvfs::statvfs(place.as_path()) {
            Ok(st) => {
                // The fields are narrower than u64 on some targets.
                #[allow(clippy::unnecessary_cast)]
                let free = st.blocks_available() as u64 * st.fragment_size() as u64;
                parts.push(format!("{} free at {}", human_bytes(free), shown(place)));
                if free < floor {
                    low.push(shown(place));
                }
            }
            Err(e) => parts.push(format!("{}: {e}", shown(place))),
        }
    }
    let detail = format!(
        "{} ([run] disk_floor {})",
        parts.join("; "),
        human_bytes(floor)
    );
    if low.is_empty() {
        Check::ok(NAME, detail)
    } else {
        Check::fail(
            NAME,
            format!("below the floor at {}: {detail}", low.join(", ")),
            "free space there (braid gc; braid snapshot prune --keep N), or lower [run] disk_floor",
        )
    }
}

/// Available memory (`MemAvailable`) against `[run] memory_floor`: below
/// it, `braid run` starts no agent (it waits).
fn memory(floor: u64) -> Check {
    const NAME: &str = "memory";
    let available = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024)
        });
    let Some(available) = available else {
        return Check::ok(NAME, "available memory unknown here (no /proc/meminfo)");
    };
    let detail = format!(
        "{} available ([run] memory_floor {})",
        human_bytes(available),
        human_bytes(floor)
    );
    if available >= floor {
        Check::ok(NAME, detail)
    } else {
        Check::warn(
            NAME,
            format!("below the floor, braid run starts no agent: {detail}"),
            "stop what uses the memory, or lower [run] memory_floor",
        )
    }
}

/// How old the newest snapshot is.
fn snapshots(project: &Project) -> Check {
    const NAME: &str = "snapshots";
    if project.url.is_some() {
        return Check::ok(
            NAME,
            "PostgreSQL: back it up with the server's tools (pg_dump)",
        );
    }
    match crate::snapshot::newest(&project.backups()) {
        Some((path, at)) => Check::ok(
            NAME,
            format!("newest {} ({} old)", shown(&path), crate::snapshot::age(at)),
        ),
        None => Check::warn(
            NAME,
            format!("none in {}", shown(&project.backups())),
            "braid snapshot save (run and serve save one every [snapshot] every)",
        ),
    }
}

/// The server's address (`[server] bind`): free, or held by a braid serve
/// (it answers `/healthz`), or held by something else.
fn server(file: &Path) -> Check {
    const NAME: &str = "server";
    let config = match braid_server::config::ServerConfig::load(file) {
        Ok(c) => c,
        Err(e) => {
            return Check::warn(
                NAME,
                e.to_string(),
                format!("fix [server] in {} (braid config)", shown(file)),
            );
        }
    };
    let bind = config.bind;
    match TcpListener::bind(bind) {
        Ok(listener) => {
            drop(listener);
            Check::ok(NAME, format!("{bind} is free for braid serve"))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            if answers_as_braid(bind) {
                Check::ok(NAME, format!("{bind} is in use by a braid serve"))
            } else {
                Check::warn(
                    NAME,
                    format!("{bind} is in use by another program"),
                    "stop it, or give braid serve another address ([server] bind, or braid serve --bind ADDR)",
                )
            }
        }
        Err(e) => Check::warn(
            NAME,
            format!("cannot listen on {bind}: {e}"),
            "set [server] bind to an address of this machine",
        ),
    }
}

/// Whether what listens on `bind` answers `GET /healthz` as braid serve
/// does (200, `ok`).
fn answers_as_braid(bind: SocketAddr) -> bool {
    let mut addr = bind;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    let answer = (|| -> std::io::Result<String> {
        let mut s = TcpStream::connect_timeout(&addr, PROBE_WAIT)?;
        s.set_read_timeout(Some(PROBE_WAIT))?;
        s.set_write_timeout(Some(PROBE_WAIT))?;
        write!(
            s,
            "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )?;
        let mut buf = Vec::new();
        s.take(8192).read_to_end(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    })();
    answer.is_ok_and(|a| {
        a.starts_with("HTTP/1.1 200") && a.split("\r\n\r\n").nth(1).is_some_and(|b| b == "ok")
    })
}
