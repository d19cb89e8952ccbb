//! The one process supervisor, for agents and gates alike (the engine,
//! `braid gate run` and the merge run's candidates): each process starts in
//! its own process group with output going straight to a log file (nothing
//! buffered in memory), is waited for by a thread that reports its exit,
//! and is stopped as a group (SIGTERM, then SIGKILL). With a
//! [`Registry`], each group is also recorded on disk while it runs, so a
//! later braid can stop it if this one dies.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

pub use crate::procs::{Identity, Registry, Stopped};

/// What to run.
#[derive(Clone, Debug)]
pub struct Spec {
    pub argv: Vec<String>,
    pub cwd: PathBuf,
    /// `Some`: the environment is cleared and only these reach the process.
    pub env_allow: Option<Vec<String>>,
    pub extra_env: Vec<(String, String)>,
    pub log: PathBuf,
    /// The workspace it works in (a task id, `merge`), under which a
    /// [`Registry`] records it; `None`: not recorded.
    pub holds: Option<String>,
    /// A file given to the process as its standard input (a prompt too
    /// large for an argument); `None`: no input.
    pub stdin: Option<PathBuf>,
    /// The most bytes its log keeps ([`cap_log`]); `None`: no cap.
    pub log_max: Option<u64>,
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
    /// The running process `key` as it can be recognised later (its
    /// process group's leader).
    fn identity(&self, _key: u64) -> Option<Identity> {
        None
    }
    /// Stops processes another braid left working in `holds`, before this
    /// one starts work there.
    fn evict(&mut self, _holds: &str) -> Vec<Stopped> {
        Vec::new()
    }
    /// What `key` left running when it ended, stopped then (names), asked
    /// once after its exit was reported.
    fn leftovers(&mut self, _key: u64) -> Vec<String> {
        Vec::new()
    }
}

/// The real spawner: process groups, log files, and waiting threads that
/// each wait for one child at a time and then take the next. The threads
/// are kept (as many as children ran at once, at most), so a process costs
/// no thread creation (measured: a thread each was a tenth of the engine's
/// own time on trivial tasks).
pub struct Supervisor {
    on_exit: OnExit,
    /// Running groups by key: the leader and where it is recorded.
    groups: HashMap<u64, Group>,
    registry: Option<Registry>,
    waiters: std::sync::mpsc::Sender<Waited>,
    queue: Arc<std::sync::Mutex<std::sync::mpsc::Receiver<Waited>>>,
    /// Keeps running processes' logs within their cap.
    keeper: Option<std::sync::mpsc::Sender<Keep>>,
    /// What each ended process left running, stopped by its waiter.
    left: Arc<std::sync::Mutex<HashMap<u64, Vec<String>>>>,
    /// Waiting threads with no child to wait for and none reserved.
    idle: Arc<std::sync::atomic::AtomicUsize>,
}

/// A child to wait for, the log to cap when it ends, and the tag its
/// descendants carry.
type Waited = (u64, std::process::Child, PathBuf, Option<u64>, String);

/// What the log keeper is told.
enum Keep {
    /// Keep `path` within `max` bytes while `key` runs.
    Add(u64, PathBuf, u64),
    Remove(u64),
}

/// Set when a write met a full disk: from then on logs keep only
/// [`FULL_KEEP`] bytes (their head and tail), so processes' output drains
/// into holes and braid's own writes find room.
pub static DISK_FULL: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// What a log keeps while the disk is full.
const FULL_KEEP: u64 = 128 << 10;

/// The cap a log has now: its own, or [`FULL_KEEP`] while the disk is full.
fn cap_now(max: u64) -> u64 {
    if DISK_FULL.load(std::sync::atomic::Ordering::Relaxed) {
        max.min(FULL_KEEP)
    } else {
        max
    }
}

/// How often the log keeper looks at running processes' logs: a file's
/// growth is not announced, and a look is one `stat` per running process.
const KEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// A running process group.
struct Group {
    pgid: u32,
    identity: Option<Identity>,
    holds: Option<String>,
}

impl Supervisor {
    pub fn new(on_exit: OnExit) -> Supervisor {
        crate::procs::become_subreaper();
        let (waiters, rx) = std::sync::mpsc::channel();
        Supervisor {
            on_exit,
            groups: HashMap::new(),
            registry: None,
            waiters,
            queue: Arc::new(std::sync::Mutex::new(rx)),
            idle: Arc::default(),
            keeper: None,
            left: Arc::default(),
        }
    }

    /// The log keeper's channel, started on first use.
    fn keeper(&mut self) -> Option<&std::sync::mpsc::Sender<Keep>> {
        if self.keeper.is_none() {
            let (tx, rx) = std::sync::mpsc::channel::<Keep>();
            let started = std::thread::Builder::new()
                .name("braid-logs".into())
                .stack_size(64 * 1024)
                .spawn(move || keep_logs(&rx));
            match started {
                Ok(_) => self.keeper = Some(tx),
                Err(e) => tracing::warn!(error = %e, "starting the log keeper"),
            }
        }
        self.keeper.as_ref()
    }

    /// Records every group started with a `holds` in `registry`.
    pub fn with_registry(mut self, registry: Registry) -> Supervisor {
        self.registry = Some(registry);
        self
    }

    /// Processes started and not yet reaped.
    pub fn running(&self) -> usize {
        self.groups.len()
    }

    /// Starts a waiting thread for the child about to be queued. It ends
    /// when the supervisor does.
    fn add_waiter(&self) -> std::io::Result<()> {
        use std::sync::atomic::Ordering::SeqCst;
        let (queue, idle, on_exit) = (self.queue.clone(), self.idle.clone(), self.on_exit.clone());
        let left = self.left.clone();
        std::thread::Builder::new()
            .name("braid-wait".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                loop {
                    let next = queue.lock().unwrap_or_else(|p| p.into_inner()).recv();
                    let Ok((key, mut child, log, cap, tag)) = next else {
                        return;
                    };
                    let full = DISK_FULL.load(SeqCst);
                    let cap = if full {
                        Some(cap.map_or(FULL_KEEP, cap_now))
                    } else {
                        cap
                    };
                    let exit = match child.wait() {
                        Ok(s) => exit_of(s),
                        Err(e) => Exit::SpawnFailed(e.to_string()),
                    };
                    // Nothing outlives its attempt: the rest of its group,
                    // and daemons that left it, are stopped now.
                    let stopped = crate::procs::stop_leftovers(child.id(), Some(&tag));
                    if full && let Some(max) = cap {
                        // Room first, without writing: the middle becomes a
                        // hole (rewriting it would need space); then a note.
                        match punch(&log, max, 0) {
                            Ok(_) => note_full(&log),
                            Err(e) => {
                                tracing::debug!(log = %log.display(), error = %e, "freeing a log on a full disk");
                            }
                        }
                    }
                    if !stopped.is_empty() {
                        note_in_log(&log, &stopped);
                        left.lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(key, stopped);
                    }
                    if let Some(max) = cap
                        && let Err(e) = cap_log(&log, max)
                    {
                        tracing::warn!(log = %log.display(), error = %e, "capping a log");
                    }
                    // Free for another child before this one is reported, so
                    // a spawn answering the report finds it.
                    idle.fetch_add(1, SeqCst);
                    on_exit(key, exit);
                }
            })
            .map(|_| ())
    }

    /// Reserves a waiting thread for one child: an idle one, else a new
    /// one. Each queued child has its own, so none waits behind another.
    fn reserve_waiter(&self) -> std::io::Result<()> {
        use std::sync::atomic::Ordering::SeqCst;
        let took = self
            .idle
            .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if took { Ok(()) } else { self.add_waiter() }
    }
}

impl Spawner for Supervisor {
    fn spawn(&mut self, key: u64, spec: &Spec) -> std::io::Result<()> {
        // A waiter first: a child nobody could wait for is never started.
        self.reserve_waiter()?;
        // Unique in this process across supervisors (several run gates
        // at once, each counting keys from 0).
        static NEXT_TAG: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let tag = format!(
            "{}-{}",
            std::process::id(),
            NEXT_TAG.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let child = match start(spec, &tag) {
            Ok(c) => c,
            Err(e) => {
                // The reserved waiter stays free.
                self.idle.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                return Err(e);
            }
        };
        let pgid = child.id();
        if let Some(max) = spec.log_max
            && let Some(k) = self.keeper()
        {
            // The keeper is gone only if its thread died: logs then are
            // capped when their process ends.
            let _ = k.send(Keep::Add(key, spec.log.clone(), max));
        }
        if self
            .waiters
            .send((key, child, spec.log.clone(), spec.log_max, tag))
            .is_err()
        {
            // Cannot happen while the supervisor holds the queue; stop the
            // child rather than leave it unwatched.
            signal_group(pgid, Signal::SIGKILL);
            return Err(std::io::Error::other("no thread to wait for the process"));
        }
        let identity = match (&self.registry, &spec.holds) {
            (Some(r), Some(holds)) => {
                let program = spec.argv.first().map(String::as_str).unwrap_or("");
                r.add(holds, pgid, program)
            }
            _ => Identity::of(pgid),
        };
        self.groups.insert(
            key,
            Group {
                pgid,
                identity,
                holds: spec.holds.clone(),
            },
        );
        Ok(())
    }

    fn signal(&mut self, key: u64, kill: bool) {
        if let Some(g) = self.groups.get(&key) {
            signal_group(
                g.pgid,
                if kill {
                    Signal::SIGKILL
                } else {
                    Signal::SIGTERM
                },
            );
        }
    }

    fn reaped(&mut self, key: u64) {
        if let Some(k) = &self.keeper {
            // See spawn: a dead keeper has nothing to forget.
            let _ = k.send(Keep::Remove(key));
        }
        if let Some(g) = self.groups.remove(&key)
            && let (Some(r), Some(holds)) = (&self.registry, &g.holds)
        {
            r.remove(holds, g.pgid);
        }
    }

    fn identity(&self, key: u64) -> Option<Identity> {
        self.groups.get(&key)?.identity.clone()
    }

    fn evict(&mut self, holds: &str) -> Vec<Stopped> {
        self.registry
            .as_ref()
            .map(|r| r.evict(holds))
            .unwrap_or_default()
    }

    fn leftovers(&mut self, key: u64) -> Vec<String> {
        self.left
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key)
            .unwrap_or_default()
    }
}

/// Starts the process in a new process group with stdout and stderr
/// appended to the log file.
fn start(spec: &Spec, tag: &str) -> std::io::Result<std::process::Child> {
    let Some(program) = spec.argv.first() else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "an empty command",
        ));
    };
    let open = || OpenOptions::new().create(true).append(true).open(&spec.log);
    // Its folder is made only when missing (the engine made it already).
    let log = match open() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = spec.log.parent() {
                std::fs::create_dir_all(dir)?;
            }
            open()
        }
        r => r,
    }?;
    let mut cmd = Command::new(program);
    cmd.args(&spec.argv[1..])
        .current_dir(&spec.cwd)
        .stdin(match &spec.stdin {
            Some(path) => Stdio::from(File::open(path)?),
            None => Stdio::null(),
        })
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
    cmd.env(crate::procs::ATTEMPT_TAG, tag);
    // git's automatic maintenance runs before git answers, not as a daemon
    // the attempt would leave behind (and braid would stop mid-work). Only
    // where the environment passes no git config of its own this way.
    if std::env::var_os("GIT_CONFIG_COUNT").is_none()
        && !spec.extra_env.iter().any(|(k, _)| k == "GIT_CONFIG_COUNT")
    {
        cmd.env("GIT_CONFIG_COUNT", "2")
            .env("GIT_CONFIG_KEY_0", "gc.autoDetach")
            .env("GIT_CONFIG_VALUE_0", "false")
            .env("GIT_CONFIG_KEY_1", "maintenance.autoDetach")
            .env("GIT_CONFIG_VALUE_1", "false");
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

/// Says in a process's log what it left running and braid stopped.
fn note_in_log(log: &Path, stopped: &[String]) {
    use std::io::Write;
    let line = format!(
        "\n[braid] stopped {} leftover process{}: {}\n",
        stopped.len(),
        if stopped.len() == 1 { "" } else { "es" },
        stopped.join(", ")
    );
    let wrote = OpenOptions::new()
        .append(true)
        .open(log)
        .and_then(|mut f| f.write_all(line.as_bytes()));
    if let Err(e) = wrote {
        tracing::debug!(log = %log.display(), error = %e, "noting leftovers in a log");
    }
}

/// Says in a log that the disk was full and its middle was discarded.
fn note_full(log: &Path) {
    use std::io::Write;
    let wrote = OpenOptions::new().append(true).open(log).and_then(|mut f| {
        f.write_all(b"\n[braid] the disk was full: this log keeps its first and last 64 KiB; the output between was discarded\n")
    });
    if let Err(e) = wrote {
        tracing::debug!(log = %log.display(), error = %e, "noting a full disk in a log");
    }
}

/// Half of a capped log is its head, half its tail.
fn halves(max: u64) -> (u64, u64) {
    (max / 2, max - max / 2)
}

/// The log keeper: every [`KEEP_EVERY`] while processes run, frees the
/// disk blocks of the middle of each log past its cap (a hole punched in
/// the file, which keeps its length, so a process appending to it is not
/// disturbed). Blocks while nothing runs.
fn keep_logs(rx: &std::sync::mpsc::Receiver<Keep>) {
    use std::sync::mpsc::RecvTimeoutError;
    // key → (log, cap, where the punched part ends).
    let mut logs: HashMap<u64, (PathBuf, u64, u64)> = HashMap::new();
    loop {
        let msg = if logs.is_empty() {
            rx.recv().map_err(|_| RecvTimeoutError::Disconnected)
        } else {
            rx.recv_timeout(KEEP_EVERY)
        };
        match msg {
            Ok(Keep::Add(key, path, max)) => {
                logs.insert(key, (path, max, 0));
            }
            Ok(Keep::Remove(key)) => {
                logs.remove(&key);
            }
            Err(RecvTimeoutError::Timeout) => {
                for (path, max, punched) in logs.values_mut() {
                    match punch(path, cap_now(*max), *punched) {
                        Ok(to) => *punched = to,
                        Err(e) => {
                            tracing::debug!(log = %path.display(), error = %e, "freeing a log's middle");
                        }
                    }
                }
            }
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// Frees the blocks of `path` between its head and its tail (each half of
/// `max`) not freed before `punched`; answers where the freed part ends.
fn punch(path: &Path, max: u64, punched: u64) -> std::io::Result<u64> {
    use nix::fcntl::{FallocateFlags, fallocate};
    let f = OpenOptions::new().write(true).open(path)?;
    let len = f.metadata()?.len();
    let (head, tail) = halves(max);
    let (from, to) = (punched.max(head), len.saturating_sub(tail));
    if len <= max || to <= from {
        return Ok(punched);
    }
    fallocate(
        &f,
        FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
        from as i64,
        (to - from) as i64,
    )
    .map_err(std::io::Error::from)?;
    Ok(to)
}

/// Frees all but [`FULL_KEEP`] bytes of a log's blocks at once (the disk
/// is full); a log that cannot be freed is left as it is.
pub fn free_log(path: &Path) {
    match punch(path, FULL_KEEP, 0) {
        // Something was freed: say so in the log.
        Ok(to) if to > 0 => note_full(path),
        Ok(_) => {}
        Err(e) => {
            tracing::debug!(log = %path.display(), error = %e, "freeing a log on a full disk");
        }
    }
}

/// Caps a finished process's log at `max` bytes: its first and last
/// halves, with `… N bytes omitted …` between, written to a new file that
/// replaces it. The tail is the real end, so what failed is still there.
pub fn cap_log(path: &Path, max: u64) -> std::io::Result<()> {
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    if len <= max {
        return Ok(());
    }
    let (head, tail) = halves(max);
    let mut out = Vec::with_capacity(max as usize + 64);
    (&mut f).take(head).read_to_end(&mut out)?;
    let omitted = len - head - tail;
    out.extend_from_slice(format!("\n… {omitted} bytes omitted …\n").as_bytes());
    f.seek(SeekFrom::Start(len - tail))?;
    f.take(tail).read_to_end(&mut out)?;
    braid_store::fsx::write_atomic(path, &out)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_capped_log_keeps_its_head_and_real_tail_and_says_what_it_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("big.log");
        let mut text = String::new();
        for i in 0..20_000 {
            text.push_str(&format!("line {i:05}\n"));
        }
        std::fs::write(&log, &text).unwrap();
        let max = 4096;
        cap_log(&log, max).unwrap();
        let capped = std::fs::read_to_string(&log).unwrap();
        assert!(capped.starts_with("line 00000\n"), "{}", &capped[..40]);
        assert!(capped.ends_with("line 19999\n"), "the real end");
        let omitted = text.len() as u64 - max;
        assert!(
            capped.contains(&format!("\n… {omitted} bytes omitted …\n")),
            "the marker"
        );
        assert!(capped.len() < max as usize + 64, "{}", capped.len());
        // Under the cap: untouched.
        let small = dir.path().join("small.log");
        std::fs::write(&small, "short\n").unwrap();
        cap_log(&small, max).unwrap();
        assert_eq!(std::fs::read_to_string(&small).unwrap(), "short\n");
    }

    #[test]
    fn a_running_logs_middle_is_freed_while_its_length_and_ends_stay() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("running.log");
        std::fs::write(&log, vec![b'x'; 8 << 20]).unwrap();
        let before = std::fs::metadata(&log).unwrap().blocks();
        let punched = punch(&log, 1 << 20, 0).unwrap();
        assert_eq!(punched, (8 << 20) - (512 << 10));
        let m = std::fs::metadata(&log).unwrap();
        assert_eq!(
            m.len(),
            8 << 20,
            "the length stays: appends go on at the end"
        );
        // Where the filesystem can punch holes (tmpfs, ext4, xfs), the
        // middle's blocks are free.
        if m.blocks() < before {
            assert!(m.blocks() * 512 <= (1 << 20) + (64 << 10), "{}", m.blocks());
        }
        // Nothing more to free until it grows again.
        assert_eq!(punch(&log, 1 << 20, punched).unwrap(), punched);
    }

    fn spec(dir: &Path, argv: &[&str], log: &str) -> Spec {
        Spec {
            argv: argv.iter().map(|s| (*s).to_owned()).collect(),
            cwd: dir.to_owned(),
            env_allow: None,
            extra_env: Vec::new(),
            log: dir.join(log),
            holds: None,
            stdin: None,
            log_max: None,
        }
    }

    #[test]
    fn each_child_is_reported_as_it_ends_and_waiting_threads_are_reused() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let tx = std::sync::Mutex::new(tx);
        let mut sup = Supervisor::new(Arc::new(move |key, exit| {
            // The test may have stopped listening.
            let _ = tx.lock().unwrap().send((key, exit));
        }));
        let wait = std::time::Duration::from_secs(30);
        // A long child first, a short one second: the short one is heard of
        // while the long one still runs (it does not wait behind it).
        sup.spawn(0, &spec(dir.path(), &["sleep", "600"], "long.log"))
            .unwrap();
        sup.spawn(
            1,
            &spec(dir.path(), &["sh", "-c", "echo hi; exit 3"], "short.log"),
        )
        .unwrap();
        assert_eq!(rx.recv_timeout(wait).unwrap(), (1, Exit::Code(3)));
        sup.reaped(1);
        assert_eq!(tail(&dir.path().join("short.log"), 100), "hi\n");
        // The freed thread takes the next child.
        sup.spawn(2, &spec(dir.path(), &["true"], "t.log")).unwrap();
        assert_eq!(rx.recv_timeout(wait).unwrap(), (2, Exit::Code(0)));
        sup.reaped(2);
        sup.signal(0, true);
        assert_eq!(rx.recv_timeout(wait).unwrap(), (0, Exit::Signal(9)));
        sup.reaped(0);
        assert_eq!(sup.running(), 0);
        let err = sup.spawn(3, &spec(dir.path(), &["no-such-program-here"], "x.log"));
        assert!(err.is_err(), "a program that is not there does not start");
    }
}
