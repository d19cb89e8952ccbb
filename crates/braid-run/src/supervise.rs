//! The one process supervisor, for agents and gates alike (the engine,
//! `braid gate run` and the merge run's candidates): each process starts in
//! its own process group with output going straight to a log file (nothing
//! buffered in memory), is waited for by a thread that reports its exit,
//! and is stopped as a group (SIGTERM, then SIGKILL).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// What to run.
#[derive(Clone, Debug)]
pub struct Spec {
    pub argv: Vec<String>,
    pub cwd: PathBuf,
    /// `Some`: the environment is cleared and only these reach the process.
    pub env_allow: Option<Vec<String>>,
    pub extra_env: Vec<(String, String)>,
    pub log: PathBuf,
}

/// How a process ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
    /// It could not start (no such program, ...).
    SpawnFailed(String),
}

impl Exit {
    pub fn success(&self) -> bool {
        *self == Exit::Code(0)
    }

    pub fn describe(&self) -> String {
        match self {
            Exit::Code(c) => format!("exit {c}"),
            Exit::Signal(s) => format!("killed by signal {s}"),
            Exit::SpawnFailed(e) => format!("could not start: {e}"),
        }
    }
}

/// Where exits are reported: called once per started process, from its
/// waiting thread.
pub type OnExit = Arc<dyn Fn(u64, Exit) + Send + Sync>;

/// Starts processes and stops them. The engine's runner takes any
/// spawner; tests give it one that records instead of running.
pub trait Spawner {
    /// Starts `spec` as process `key`; its exit is reported later. An error
    /// means it did not start (and no exit will be reported).
    fn spawn(&mut self, key: u64, spec: &Spec) -> std::io::Result<()>;
    /// SIGTERM (or, with `kill`, SIGKILL) to `key`'s process group.
    fn signal(&mut self, key: u64, kill: bool);
    /// `key` ended: forget it.
    fn reaped(&mut self, key: u64);
}

/// The real spawner: process groups, log files, a waiting thread each.
pub struct Supervisor {
    on_exit: OnExit,
    groups: HashMap<u64, u32>,
}

impl Supervisor {
    pub fn new(on_exit: OnExit) -> Supervisor {
        Supervisor {
            on_exit,
            groups: HashMap::new(),
        }
    }

    /// Processes started and not yet reaped.
    pub fn running(&self) -> usize {
        self.groups.len()
    }
}

impl Spawner for Supervisor {
    fn spawn(&mut self, key: u64, spec: &Spec) -> std::io::Result<()> {
        let mut child = start(spec)?;
        let pgid = child.id();
        let on_exit = self.on_exit.clone();
        let waiter = std::thread::Builder::new()
            .name("braid-wait".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                let exit = match child.wait() {
                    Ok(s) => exit_of(s),
                    Err(e) => Exit::SpawnFailed(e.to_string()),
                };
                on_exit(key, exit);
            });
        if let Err(e) = waiter {
            // Nobody would wait for it: stop it rather than leave it.
            signal_group(pgid, Signal::SIGKILL);
            return Err(e);
        }
        self.groups.insert(key, pgid);
        Ok(())
    }

    fn signal(&mut self, key: u64, kill: bool) {
        if let Some(pgid) = self.groups.get(&key) {
            signal_group(
                *pgid,
                if kill {
                    Signal::SIGKILL
                } else {
                    Signal::SIGTERM
                },
            );
        }
    }

    fn reaped(&mut self, key: u64) {
        self.groups.remove(&key);
    }
}

/// Starts the process in a new process group with stdout and stderr
/// appended to the log file.
fn start(spec: &Spec) -> std::io::Result<std::process::Child> {
    let Some(program) = spec.argv.first() else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "an empty command",
        ));
    };
    if let Some(dir) = spec.log.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&spec.log)?;
    let mut cmd = Command::new(program);
    cmd.args(&spec.argv[1..])
        .current_dir(&spec.cwd)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0);
    if let Some(allow) = &spec.env_allow {
        cmd.env_clear();
        for k in allow {
            if let Some(v) = std::env::var_os(k) {
                cmd.env(k, v);
            }
        }
    }
    for (k, v) in &spec.extra_env {
        cmd.env(k, v);
    }
    cmd.spawn()
}

pub fn exit_of(status: std::process::ExitStatus) -> Exit {
    match (status.code(), status.signal()) {
        (Some(c), _) => Exit::Code(c),
        (None, Some(s)) => Exit::Signal(s),
        _ => Exit::Code(-1),
    }
}

/// Signals a whole process group; a group that is gone is not an error.
fn signal_group(pgid: u32, sig: Signal) {
    // ESRCH: the group already ended, which is what was wanted.
    let _ = killpg(Pid::from_raw(pgid as i32), sig);
}

/// The last `max` bytes of a log (lossy UTF-8), without reading the rest.
pub fn tail(path: &Path, max: usize) -> String {
    tail_since(path, 0, max)
}

/// A log's current length (where the next process's output will start).
pub fn log_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// The last `max` bytes written to a log after offset `from`: one process's
/// own output, when several attempts append to the same log. A log that
/// cannot be read gives no text.
pub fn tail_since(path: &Path, from: u64, max: usize) -> String {
    let Ok(mut f) = File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(max as u64).max(from);
    if f.seek(SeekFrom::Start(start)).is_err() {
        return String::new();
    }
    let mut buf = Vec::with_capacity(max.min(len.saturating_sub(start) as usize));
    if let Err(e) = f.take(max as u64).read_to_end(&mut buf) {
        tracing::debug!(log = %path.display(), error = %e, "reading a log's tail");
    }
    String::from_utf8_lossy(&buf).into_owned()
}
