//! Which braid started which process group, kept on disk so that a run
//! that dies (kill -9, a crash, a lost machine) cannot leave an agent
//! working where the next run puts another. Each braid process keeps one
//! journal, `.braid/procs/<pid>-<start>.jsonl`, to which it appends a line
//! when it starts a group (the workspace it works in — a task id,
//! `merge` —, its process group, the start time of its leader so a
//! recycled pid is never taken for it, the machine's boot, the owning
//! braid process) and a line when it reaps one. Its running groups are the
//! ones started and not ended.
//!
//! A journal, not a file per group: a process then costs two appends to an
//! open file instead of a file created and one removed, and on an ext4
//! without a journal every removal makes the next creations of inodes
//! slower for seconds (bench/RESULTS.md). The journal is rewritten with
//! only its running groups once ended lines outnumber them, and removed
//! when its process ends with none running.
//!
//! Two ways a recorded group is stopped: [`Registry::sweep_orphans`] (every
//! run, merge run and `serve --run` calls it first) stops groups whose
//! owner is dead; [`Registry::evict`] (before an agent starts in a
//! workspace) stops any group in that workspace that another braid owns,
//! alive or not — the lease has passed to this run, so the old agent must
//! go before the new one starts.
//!
//! Linux only (it reads `/proc`); elsewhere nothing is recorded.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

/// How long a stopped group has to end after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// How often a stopping group is looked at. A foreign process group cannot
/// be waited for (it is not our child), so this is the one place braid
/// looks again on a timer, and only while a group is being stopped.
const STOP_LOOK: Duration = Duration::from_millis(25);
/// Ended lines a journal holds before it is rewritten with only its
/// running groups (when they are also most of it).
const COMPACT_AFTER: usize = 1024;

/// A process as it can be recognised later: its pid and the time it
/// started, in clock ticks since boot (`/proc/PID/stat`, field 22), on this
/// boot of this machine.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Identity {
    pub pid: u32,
    pub start: u64,
}

impl Identity {
    /// The identity of a process now running, if it is.
    pub fn of(pid: u32) -> Option<Identity> {
        stat(pid).map(|s| Identity {
            pid,
            start: s.start,
        })
    }

    /// Whether this very process still runs (not another that got its pid).
    pub fn alive(&self) -> bool {
        stat(self.pid).is_some_and(|s| s.start == self.start && !s.dead())
    }
}

/// One recorded process group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The group's leader (its pid is the group id).
    pub leader: Identity,
    /// `/proc/sys/kernel/random/boot_id` when it started.
    pub boot: String,
    /// The braid process that started it.
    pub owner: Identity,
    /// The workspace it works in.
    pub holds: String,
    /// Its program, for messages.
    pub program: String,
}

/// A line of a journal.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Line {
    Started(Record),
    Ended { holds: String, pgid: u32 },
}

/// A group that was stopped, for the run's output and the event log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stopped {
    pub record: Record,
    /// It had to be killed (SIGKILL) after not ending on SIGTERM.
    pub killed: bool,
}

impl Stopped {
    pub fn describe(&self) -> String {
        let r = &self.record;
        format!(
            "stopped {} (process group {}, working in {}) left by braid process {}{}",
            r.program,
            r.leader.pid,
            r.holds,
            r.owner.pid,
            if self.killed { ", with SIGKILL" } else { "" }
        )
    }
}

/// The records of one project (`.braid/procs`), as seen by one braid
/// process.
#[derive(Clone, Debug)]
pub struct Registry {
    dir: PathBuf,
    me: Option<Identity>,
    boot: Option<String>,
    /// This process's journal in `dir` (one per process and folder, shared
    /// by every registry of it); `None` where nothing can be recorded.
    journal: Option<Arc<Mutex<Journal>>>,
}

/// This process's journal of one folder.
#[derive(Debug)]
struct Journal {
    path: PathBuf,
    /// Open for appending; `None` until the first group is recorded, and
    /// after the file was removed.
    file: Option<std::fs::File>,
    /// The groups started and not ended.
    running: HashMap<(String, u32), Record>,
    /// Ended lines in the file.
    ended: usize,
}

impl Journal {
    fn append(&mut self, line: &Line) -> std::io::Result<()> {
        let mut bytes = serde_json::to_vec(line).map_err(std::io::Error::other)?;
        bytes.push(b'\n');
        if self.file.is_none() {
            let open = || {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)
            };
            let file = match open() {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    std::fs::create_dir_all(self.path.parent().unwrap_or(Path::new(".")))?;
                    open()
                }
                r => r,
            }?;
            self.file = Some(file);
        }
        // One write: a line is never interleaved with another's, and a
        // crash leaves at most the last one torn (skipped when read).
        self.file.as_mut().expect("opened above").write_all(&bytes)
    }

    /// Rewrites the file with only the running groups (or removes it when
    /// none runs), once ended lines are most of it.
    fn compact(&mut self) -> std::io::Result<()> {
        if self.ended < COMPACT_AFTER || self.ended < 4 * self.running.len() {
            return Ok(());
        }
        self.file = None;
        self.ended = 0;
        if self.running.is_empty() {
            return remove_if_there(&self.path);
        }
        let mut bytes = Vec::new();
        for r in self.running.values() {
            serde_json::to_writer(&mut bytes, &Line::Started(r.clone()))
                .map_err(std::io::Error::other)?;
            bytes.push(b'\n');
        }
        braid_store::fsx::write_atomic(&self.path, &bytes)
    }
}

impl Drop for Journal {
    /// The last registry of this process and folder is gone: a journal of
    /// no running group goes with it.
    fn drop(&mut self) {
        if self.running.is_empty()
            && self.file.is_some()
            && let Err(e) = remove_if_there(&self.path)
        {
            tracing::warn!(path = %self.path.display(), error = %e, "removing a process journal");
        }
    }
}

fn remove_if_there(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

/// This process's journals, by folder: every registry of a folder shares
/// one, so its lines and its rewrites never race.
fn journal_for(dir: &Path, me: &Identity) -> Arc<Mutex<Journal>> {
    static JOURNALS: Mutex<Vec<(PathBuf, Weak<Mutex<Journal>>)>> = Mutex::new(Vec::new());
    let mut all = JOURNALS.lock().unwrap_or_else(|p| p.into_inner());
    all.retain(|(_, j)| j.strong_count() > 0);
    if let Some(j) = all
        .iter()
        .find(|(d, _)| d == dir)
        .and_then(|(_, j)| j.upgrade())
    {
        return j;
    }
    let j = Arc::new(Mutex::new(Journal {
        path: dir.join(journal_name(me)),
        file: None,
        running: HashMap::new(),
        ended: 0,
    }));
    all.push((dir.to_owned(), Arc::downgrade(&j)));
    j
}

fn journal_name(owner: &Identity) -> String {
    format!("{}-{}.jsonl", owner.pid, owner.start)
}

/// The owner a journal's name gives (`<pid>-<start>.jsonl`).
fn owner_of(name: &str) -> Option<Identity> {
    let (pid, start) = name.strip_suffix(".jsonl")?.split_once('-')?;
    Some(Identity {
        pid: pid.parse().ok()?,
        start: start.parse().ok()?,
    })
}

/// The groups a journal records as running; a torn line is skipped.
fn replay(bytes: &[u8]) -> Vec<Record> {
    let mut running: Vec<Record> = Vec::new();
    for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        match serde_json::from_slice::<Line>(line) {
            Ok(Line::Started(r)) => running.push(r),
            Ok(Line::Ended { holds, pgid }) => {
                running.retain(|r| !(r.leader.pid == pgid && r.holds == holds));
            }
            Err(_) => {}
        }
    }
    running
}

/// Every group the journals in `dir` record as running (whether it still
/// runs or not), for `braid doctor` and tests.
pub fn recorded(dir: &Path) -> Vec<Record> {
    journals(dir)
        .into_iter()
        .flat_map(|(path, _)| std::fs::read(path).map(|b| replay(&b)).unwrap_or_default())
        .collect()
}

/// The journals in `dir`, with their owners.
fn journals(dir: &Path) -> Vec<(PathBuf, Identity)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let owner = owner_of(e.file_name().to_str()?)?;
            Some((e.path(), owner))
        })
        .collect()
}

impl Registry {
    pub fn new(dir: PathBuf) -> Registry {
        let me = Identity::of(std::process::id());
        let boot = boot_id();
        let journal = match (&me, &boot) {
            (Some(me), Some(_)) => Some(journal_for(&dir, me)),
            _ => None,
        };
        Registry {
            dir,
            me,
            boot,
            journal,
        }
    }

    /// Records a group this process just started. A record that cannot be
    /// written is logged: the process runs anyway (it is still stopped by
    /// this run; only a later run could not find it).
    pub fn add(&self, holds: &str, pgid: u32, program: &str) -> Option<Identity> {
        let (Some(me), Some(boot), Some(journal)) = (&self.me, &self.boot, &self.journal) else {
            return None;
        };
        let leader = Identity::of(pgid)?;
        let record = Record {
            leader: leader.clone(),
            boot: boot.clone(),
            owner: me.clone(),
            holds: holds.to_owned(),
            program: program.to_owned(),
        };
        let mut j = journal.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = j.append(&Line::Started(record.clone())) {
            tracing::warn!(path = %j.path.display(), error = %e, "recording a process group");
        }
        j.running.insert((holds.to_owned(), pgid), record);
        Some(leader)
    }

    /// The group was reaped: forget it.
    pub fn remove(&self, holds: &str, pgid: u32) {
        let Some(journal) = &self.journal else {
            return;
        };
        let mut j = journal.lock().unwrap_or_else(|p| p.into_inner());
        if j.running.remove(&(holds.to_owned(), pgid)).is_none() {
            return;
        }
        let ended = Line::Ended {
            holds: holds.to_owned(),
            pgid,
        };
        let written = j.append(&ended).and_then(|()| {
            j.ended += 1;
            j.compact()
        });
        if let Err(e) = written {
            tracing::warn!(path = %j.path.display(), error = %e, "recording a process group's end");
        }
    }

    /// Stops every recorded group whose owner is dead (and forgets groups
    /// that already ended or belong to an earlier boot).
    pub fn sweep_orphans(&self) -> Vec<Stopped> {
        if self.journal.is_none() {
            return Vec::new();
        }
        self.stop_where(None)
    }

    /// Stops every recorded group working in `holds` that another braid
    /// process owns, alive or dead, before this one starts work there.
    pub fn evict(&self, holds: &str) -> Vec<Stopped> {
        if self.journal.is_none() {
            return Vec::new();
        }
        self.stop_where(Some(holds))
    }

    /// Stops the groups other braid processes recorded: under `holds`
    /// (alive or dead owners), or with `None` all of dead owners, whose
    /// journals then go.
    fn stop_where(&self, holds: Option<&str>) -> Vec<Stopped> {
        let mut stopped = Vec::new();
        for (path, owner) in journals(&self.dir) {
            if Some(&owner) == self.me.as_ref() {
                continue; // this process's own: never stopped from here
            }
            let dead = !owner.alive();
            if holds.is_none() && !dead {
                continue;
            }
            let Ok(bytes) = std::fs::read(&path) else {
                continue; // removed meanwhile by its owner or another sweep
            };
            for record in replay(&bytes) {
                if holds.is_some_and(|want| want != record.holds) {
                    continue;
                }
                if Some(&record.boot) != self.boot.as_ref() {
                    continue; // the machine restarted since: that group is gone
                }
                if let Some(killed) = stop_group(&record.leader, STOP_GRACE) {
                    tracing::warn!(
                        pgid = record.leader.pid,
                        holds = %record.holds,
                        owner = record.owner.pid,
                        killed,
                        "stopped a process group left by another braid process"
                    );
                    stopped.push(Stopped { record, killed });
                }
            }
            // A dead owner's groups are all stopped (or were gone): its
            // journal goes. A live owner records its own groups' ends.
            if dead
                && holds.is_none()
                && let Err(e) = remove_if_there(&path)
            {
                tracing::warn!(path = %path.display(), error = %e, "removing a process journal");
            }
        }
        stopped
    }
}

/// Stops the group `leader` led, if it still runs: SIGTERM, then SIGKILL
/// after `grace`. `None` when there was nothing to stop (the group ended,
/// or its leader's pid now belongs to another process: a group id is not
/// given out again while its group lives, so a different process under
/// that pid means the group is gone). `Some(killed)` once it is gone.
pub fn stop_group(leader: &Identity, grace: Duration) -> Option<bool> {
    let pgid = leader.pid;
    match stat(pgid) {
        // A recycled pid: not ours.
        Some(s) if s.start != leader.start => return None,
        Some(_) => {}
        // The leader is gone; members may remain (a shell's background
        // job). Only those started after the leader can be its group's.
        None if !members(pgid).any(|s| s.start >= leader.start) => return None,
        None => {}
    }
    let pg = Pid::from_raw(pgid as i32);
    // ESRCH: the group just ended, which is what was wanted.
    let _ = killpg(pg, Signal::SIGTERM);
    if wait_gone(pgid, grace) {
        return Some(false);
    }
    let _ = killpg(pg, Signal::SIGKILL);
    if !wait_gone(pgid, grace) {
        tracing::warn!(pgid, "a process group did not end on SIGKILL");
    }
    Some(true)
}

/// Waits up to `limit` for no living member of group `pgid` to remain.
fn wait_gone(pgid: u32, limit: Duration) -> bool {
    let until = Instant::now() + limit;
    loop {
        if members(pgid).next().is_none() {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        std::thread::sleep(STOP_LOOK);
    }
}

/// The living (not zombie) processes of group `pgid`.
fn members(pgid: u32) -> impl Iterator<Item = Stat> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(stat)
        .filter(move |s| s.pgrp == pgid && !s.dead())
}

/// What braid reads of `/proc/PID/stat`.
#[derive(Clone, Copy, Debug)]
struct Stat {
    state: u8,
    pgrp: u32,
    start: u64,
}

impl Stat {
    /// A zombie (waiting for its parent to reap it) or dead: it does no work.
    fn dead(&self) -> bool {
        matches!(self.state, b'Z' | b'X' | b'x')
    }
}

fn stat(pid: u32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The name (field 2) is in parentheses and may hold spaces or
    // parentheses itself: the fields after it start at the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_ascii_whitespace().collect();
    // After the name: state is field 3, pgrp 5, starttime 22.
    Some(Stat {
        state: *f.first()?.as_bytes().first()?,
        pgrp: f.get(2)?.parse().ok()?,
        start: f.get(19)?.parse().ok()?,
    })
}

fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_owned())
}

/// The environment variable that marks every process an attempt starts
/// (its descendants inherit it): how a daemon that left the attempt's
/// process group (`setsid`) is still known as the attempt's.
pub const ATTEMPT_TAG: &str = "BRAID_ATTEMPT_TAG";

/// Makes this process the reaper of its orphaned descendants
/// (`PR_SET_CHILD_SUBREAPER`): a daemon an attempt leaves behind, whose
/// parent exits, becomes braid's child instead of init's, so braid can
/// find and stop it. Once per process.
pub fn become_subreaper() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
            tracing::warn!(error = %e, "cannot become the reaper of attempts' daemons");
        }
    });
}

/// A process's short name (`/proc/PID/comm`).
fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| format!("pid {pid}"))
}

/// This process's children as its main thread holds them: an orphan is
/// adopted by the subreaper's first live thread, which while braid runs is
/// its main thread (one small file, read at each attempt's end).
fn own_children() -> Vec<u32> {
    let path = format!("/proc/self/task/{}/children", std::process::id());
    std::fs::read_to_string(path)
        .map(|text| {
            text.split_ascii_whitespace()
                .filter_map(|p| p.parse::<u32>().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Whether process `pid`'s environment holds `BRAID_ATTEMPT_TAG=tag`.
fn tagged(pid: u32, tag: &str) -> bool {
    let want = format!("{ATTEMPT_TAG}={tag}");
    std::fs::read(format!("/proc/{pid}/environ"))
        .map(|env| env.split(|b| *b == 0).any(|v| v == want.as_bytes()))
        .unwrap_or(false)
}

/// Stops what an attempt left running once its first process ended: the
/// rest of its process group, and (with `tag`) the daemons it started
/// that left the group and were adopted by braid. Answers their names.
/// The adopted ones are reaped here (nobody else waits for them).
pub fn stop_leftovers(pgid: u32, tag: Option<&str>) -> Vec<String> {
    let mut names = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let group = Pid::from_raw(pgid as i32);
    // Cheap when the group is gone, which is the usual case.
    if killpg(group, None).is_ok() {
        let pids: Vec<u32> = std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| stat(*pid).is_some_and(|s| s.pgrp == pgid && !s.dead()))
            .collect();
        names.extend(pids.iter().map(|p| comm(*p)));
        seen.extend(pids);
        // Gone already is what was wanted.
        let _ = killpg(group, Signal::SIGKILL);
    }
    let Some(tag) = tag else { return names };
    // Daemons that left the group, adopted by braid; and members of the
    // group braid adopted (their parent exited first), now killed: braid
    // reaps them all. A killed daemon's own children are adopted next:
    // look again until none is left (bounded: a fork bomb is not followed
    // for ever).
    for _ in 0..16 {
        let adopted: Vec<u32> = own_children()
            .into_iter()
            .filter(|pid| seen.contains(pid) || tagged(*pid, tag))
            .collect();
        if adopted.is_empty() {
            break;
        }
        for pid in adopted {
            if seen.insert(pid) {
                names.push(comm(pid));
            }
            let p = Pid::from_raw(pid as i32);
            // Its own group too: a `setsid` daemon leads one.
            let _ = killpg(p, Signal::SIGKILL);
            let _ = nix::sys::signal::kill(p, Signal::SIGKILL);
            // Ours to reap now; an error means it was reaped already.
            let _ = nix::sys::wait::waitpid(p, None);
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;

    /// A `sleep` in a group of its own, as the supervisor starts processes.
    fn group() -> std::process::Child {
        std::process::Command::new("sleep")
            .arg("600")
            .process_group(0)
            .spawn()
            .unwrap()
    }

    fn gone(child: &mut std::process::Child) -> bool {
        // Reaped by us (its parent), so a stopped child is not left a zombie.
        child.wait().is_ok()
    }

    /// Writes `record` into its owner's journal, as that braid would have.
    fn write(reg: &Registry, record: &Record) {
        std::fs::create_dir_all(&reg.dir).unwrap();
        let path = reg.dir.join(journal_name(&record.owner));
        let mut line = serde_json::to_vec(&Line::Started(record.clone())).unwrap();
        line.push(b'\n');
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        f.write_all(&line).unwrap();
    }

    /// An owner that ran and is gone: a process that exited.
    fn dead_owner() -> Identity {
        let mut c = std::process::Command::new("true").spawn().unwrap();
        let id = Identity::of(c.id()).unwrap();
        c.wait().unwrap();
        id
    }

    #[test]
    fn a_group_whose_owner_died_is_stopped_and_one_whose_owner_lives_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::new(dir.path().join("procs"));
        let mut orphan = group();
        let mut kept = group();
        let orphan_rec = Record {
            leader: Identity::of(orphan.id()).unwrap(),
            boot: boot_id().unwrap(),
            owner: dead_owner(),
            holds: "br-a".into(),
            program: "sleep".into(),
        };
        write(&reg, &orphan_rec);
        // Owned by this (live) process.
        let kept_leader = reg.add("br-b", kept.id(), "sleep").unwrap();
        assert_eq!(kept_leader.pid, kept.id());

        let stopped = reg.sweep_orphans();
        assert_eq!(stopped.len(), 1, "{stopped:?}");
        assert_eq!(stopped[0].record, orphan_rec);
        assert!(!stopped[0].killed, "sleep ends on SIGTERM");
        assert!(gone(&mut orphan));
        assert!(
            !recorded(&reg.dir).contains(&orphan_rec),
            "the dead owner's journal goes"
        );
        assert!(
            kept_leader.alive(),
            "a live owner's group is left alone by the sweep"
        );

        // Another braid process taking over br-b's workspace evicts it even
        // though its owner lives.
        let other = Registry {
            me: Some(dead_owner()),
            ..reg.clone()
        };
        assert!(other.evict("br-a").is_empty());
        let evicted = other.evict("br-b");
        assert_eq!(evicted.len(), 1);
        assert!(gone(&mut kept));
        // Its owner (this process) records the end when it reaps it.
        reg.remove("br-b", kept_leader.pid);
        assert!(recorded(&reg.dir).is_empty());
    }

    #[test]
    fn a_journal_keeps_only_running_groups_once_ended_ones_pile_up_and_goes_with_its_registry() {
        let dir = tempfile::tempdir().unwrap();
        let procs = dir.path().join("procs");
        let reg = Registry::new(procs.clone());
        let mut g = group();
        let pid = g.id();
        reg.add("br-live", pid, "sleep").unwrap();
        // Another registry of the same folder in this process writes to the
        // same journal.
        let again = Registry::new(procs.clone());
        for i in 0..COMPACT_AFTER + 10 {
            let holds = format!("br-{i}");
            again.add(&holds, pid, "sleep").unwrap();
            reg.remove(&holds, pid);
        }
        let journal = procs.join(journal_name(reg.me.as_ref().unwrap()));
        let lines = std::fs::read_to_string(&journal).unwrap().lines().count();
        assert!(lines < 30, "rewritten with what runs: {lines} lines");
        let running = recorded(&procs);
        assert_eq!(running.len(), 1, "{running:?}");
        assert_eq!(running[0].holds, "br-live");
        reg.remove("br-live", pid);
        assert!(recorded(&procs).is_empty());
        drop((reg, again));
        assert!(!journal.exists(), "no journal is left with nothing running");
        g.kill().unwrap();
        g.wait().unwrap();
    }

    #[test]
    fn a_recycled_pid_or_an_earlier_boot_is_never_signalled() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::new(dir.path().join("procs"));
        let mut bystander = group();
        let real = Identity::of(bystander.id()).unwrap();
        // The recorded leader had this pid but started at another time: the
        // pid was given to another process since.
        let recycled = Record {
            leader: Identity {
                pid: real.pid,
                start: real.start.saturating_sub(1),
            },
            boot: boot_id().unwrap(),
            owner: dead_owner(),
            holds: "br-c".into(),
            program: "agent".into(),
        };
        write(&reg, &recycled);
        let earlier_boot = Record {
            leader: real.clone(),
            boot: "another-boot".into(),
            owner: dead_owner(),
            holds: "br-d".into(),
            program: "agent".into(),
        };
        write(&reg, &earlier_boot);
        assert!(reg.sweep_orphans().is_empty());
        assert!(real.alive(), "the process now under that pid lives on");
        assert!(recorded(&reg.dir).is_empty(), "the stale records go");
        bystander.kill().unwrap();
        bystander.wait().unwrap();
    }

    #[test]
    fn a_group_that_ignores_sigterm_is_killed_and_its_members_go_with_it() {
        // The leader exits at once; its background member ignores SIGTERM.
        let mut leader = std::process::Command::new("sh")
            .args(["-c", "trap '' TERM; sleep 600 & echo $! ; wait"])
            .process_group(0)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(leader.stdout.as_mut().unwrap()),
            &mut line,
        )
        .unwrap();
        let member: u32 = line.trim().parse().unwrap();
        let id = Identity::of(leader.id()).unwrap();
        assert_eq!(stop_group(&id, Duration::from_millis(200)), Some(true));
        assert!(gone(&mut leader));
        assert!(
            Identity::of(member).is_none_or(|_| stat(member).unwrap().dead()),
            "the member was killed too"
        );
        assert_eq!(stop_group(&id, Duration::from_millis(200)), None);
    }
}
