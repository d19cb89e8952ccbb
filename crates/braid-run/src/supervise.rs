//! Running agents and gates: each in its own process group, output going
//! straight to a log file (nothing buffered in memory), killed as a group
//! (SIGTERM, then SIGKILL after a grace period).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

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

/// Starts the process in a new process group with stdout and stderr
/// appended to the log file.
pub fn spawn(spec: &Spec) -> std::io::Result<Child> {
    if let Some(dir) = spec.log.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&spec.log)?;
    let mut cmd = Command::new(&spec.argv[0]);
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
pub fn signal_group(pgid: u32, sig: Signal) {
    let _ = killpg(Pid::from_raw(pgid as i32), sig);
}

pub fn terminate(pgid: u32) {
    signal_group(pgid, Signal::SIGTERM);
}

pub fn kill(pgid: u32) {
    signal_group(pgid, Signal::SIGKILL);
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
/// own output, when several attempts append to the same log.
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
    let _ = f.take(max as u64).read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}
