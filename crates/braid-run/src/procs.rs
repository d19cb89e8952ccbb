//! Which braid started which process group, kept on disk so that a run
//! that dies (kill -9, a crash, a lost machine) cannot leave an agent
//! working where the next run puts another. Each group the supervisor
//! starts is recorded in `.braid/procs/<holds>@<pgid>`, where `holds` names
//! the workspace it works in (a task id, `merge`): its process group, the
//! start time of its leader (so a recycled pid is never taken for it), the
//! machine's boot, and the braid process that owns it. The record goes when
//! the group is reaped.
//!
//! Two ways a recorded group is stopped: [`Registry::sweep_orphans`] (every
//! run, merge run and `serve --run` calls it first) stops groups whose
//! owner is dead; [`Registry::evict`] (before an agent starts in a
//! workspace) stops any group in that workspace that another braid owns,
//! alive or not — the lease has passed to this run, so the old agent must
//! go before the new one starts.
//!
//! Linux only (it reads `/proc`); elsewhere nothing is recorded.

use std::path::{Path, PathBuf};
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

/// A process as it can be recognised later: its pid and the time it
/// started, in clock ticks since boot (`/proc/PID/stat`, field 22), on this
/// boot of this machine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
}

impl Registry {
    pub fn new(dir: PathBuf) -> Registry {
        Registry {
            dir,
            me: Identity::of(std::process::id()),
            boot: boot_id(),
        }
    }

    /// Whether records can be kept here (not on a system without `/proc`).
    fn usable(&self) -> bool {
        self.me.is_some() && self.boot.is_some()
    }

    /// One flat folder: a record costs one file created and one removed
    /// (file creation is the dear part on some filesystems; see
    /// bench/RESULTS.md), and the folder holds only running groups, so
    /// reading it whole is cheap.
    fn path(&self, holds: &str, pgid: u32) -> PathBuf {
        self.dir.join(format!("{holds}@{pgid}"))
    }

    /// Records a group this process just started. A record that cannot be
    /// written is logged: the process runs anyway (it is still stopped by
    /// this run; only a later run could not find it).
    pub fn add(&self, holds: &str, pgid: u32, program: &str) -> Option<Identity> {
        let (Some(me), Some(boot)) = (&self.me, &self.boot) else {
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
        let path = self.path(holds, pgid);
        let write = || -> std::io::Result<()> {
            let bytes = serde_json::to_vec(&record).map_err(std::io::Error::other)?;
            // Written in place, not through a temporary file: a record read
            // half-written is skipped while fresh (see `stop_where`), and
            // a crash loses only the record itself.
            match std::fs::write(&path, &bytes) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    std::fs::create_dir_all(&self.dir)?;
                    std::fs::write(&path, &bytes)
                }
                r => r,
            }
        };
        let written = write();
        if let Err(e) = written {
            tracing::warn!(path = %path.display(), error = %e, "recording a process group");
        }
        Some(leader)
    }

    /// The group was reaped: forget it.
    pub fn remove(&self, holds: &str, pgid: u32) {
        if !self.usable() {
            return;
        }
        let path = self.path(holds, pgid);
        if let Err(e) = std::fs::remove_file(&path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %path.display(), error = %e, "removing a process record");
        }
    }

    /// Stops every recorded group whose owner is dead (and forgets groups
    /// that already ended or belong to an earlier boot).
    pub fn sweep_orphans(&self) -> Vec<Stopped> {
        if !self.usable() {
            return Vec::new();
        }
        self.stop_where(None, |r| !r.owner.alive())
    }

    /// Stops every recorded group working in `holds` that another braid
    /// process owns, alive or dead, before this one starts work there.
    pub fn evict(&self, holds: &str) -> Vec<Stopped> {
        if !self.usable() {
            return Vec::new();
        }
        let me = self.me.clone();
        self.stop_where(Some(holds), |r| Some(&r.owner) != me.as_ref())
    }

    /// Stops the groups recorded (under `holds`, or all) that `pick`
    /// chooses.
    fn stop_where(&self, holds: Option<&str>, pick: impl Fn(&Record) -> bool) -> Vec<Stopped> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut stopped = Vec::new();
        for e in entries.flatten() {
            let name = e.file_name();
            let Some((h, _pgid)) = name.to_str().and_then(|n| n.rsplit_once('@')) else {
                continue; // not a record
            };
            if holds.is_some_and(|want| want != h) {
                continue;
            }
            let path = e.path();
            let record = std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<Record>(&b).ok());
            let Some(record) = record else {
                // Being written this instant, or torn by a crash: only a
                // stale one is forgotten.
                let stale = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > STOP_GRACE));
                if stale {
                    forget(&path);
                }
                continue;
            };
            if Some(&record.boot) != self.boot.as_ref() {
                // The machine restarted since: that group is gone.
                forget(&path);
                continue;
            }
            if !pick(&record) {
                continue;
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
            forget(&path);
        }
        stopped
    }
}

fn forget(path: &Path) {
    if let Err(e) = std::fs::remove_file(path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), error = %e, "removing a process record");
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

    fn write(reg: &Registry, holds: &str, record: &Record) {
        let p = reg.path(holds, record.leader.pid);
        std::fs::create_dir_all(&reg.dir).unwrap();
        std::fs::write(p, serde_json::to_vec(record).unwrap()).unwrap();
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
        write(&reg, "br-a", &orphan_rec);
        // Owned by this (live) process.
        let kept_leader = reg.add("br-b", kept.id(), "sleep").unwrap();
        assert_eq!(kept_leader.pid, kept.id());

        let stopped = reg.sweep_orphans();
        assert_eq!(stopped.len(), 1, "{stopped:?}");
        assert_eq!(stopped[0].record, orphan_rec);
        assert!(!stopped[0].killed, "sleep ends on SIGTERM");
        assert!(gone(&mut orphan));
        assert!(!reg.path("br-a", orphan_rec.leader.pid).exists());
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
        assert!(!reg.path("br-b", kept_leader.pid).exists());
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
        write(&reg, "br-c", &recycled);
        let earlier_boot = Record {
            leader: real.clone(),
            boot: "another-boot".into(),
            owner: dead_owner(),
            holds: "br-d".into(),
            program: "agent".into(),
        };
        write(&reg, "br-d", &earlier_boot);
        assert!(reg.sweep_orphans().is_empty());
        assert!(real.alive(), "the process now under that pid lives on");
        assert!(
            !reg.path("br-c", real.pid).exists(),
            "the stale record goes"
        );
        assert!(!reg.path("br-d", real.pid).exists());
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
