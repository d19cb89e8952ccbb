//! The scheduler's decisions, apart from their effects. [`Core`] takes
//! inputs (a process exited, a claim was granted, a signal arrived, time
//! passed) with the time, and answers with [`Action`]s (claim, spawn,
//! signal, run a gate, finish, renew, rescue) for a runner to perform. It
//! reads no clock, spawns nothing, touches no file or database: the time
//! and the answers to its questions (the ready queue's head, available
//! memory, a task's gates) come in as inputs. So every decision — priority
//! order, per-agent caps, cooldown and failover, retry backoff, lease
//! renewal and rescue, timeouts, the memory floor, the first and second
//! signal — can be driven step by step in a test.
//!
//! A runner performs each action in order and feeds its answer back
//! before the next external input: a question asked (`Fetch`,
//! `ReadMemory`, `ListGates`, `Probe`) is answered in the same turn.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use braid_core::{EventKind, State, TaskId};
use serde_json::json;

use crate::config::Config;
use crate::supervise::Exit;

/// Time since the run began, on a monotonic clock.
pub type Time = Duration;

/// Free space a following run waits for after a full disk, at least.
const FULL_RESUME: u64 = 2 << 20;

/// Available memory is read at most this often while dispatching.
const MEMORY_FRESH: Duration = Duration::from_millis(100);
/// While below the memory floor, look again this often (the OS does not
/// announce free memory).
pub const MEMORY_RECHECK: Duration = Duration::from_secs(1);

/// What a run was asked to do.
#[derive(Clone, Debug)]
pub struct Scope {
    /// Keep running when nothing is left (until a signal).
    pub follow: bool,
    /// Start at most this many tasks.
    pub max_tasks: Option<usize>,
    /// A merge loop runs beside (finished work is handed to it).
    pub merge: bool,
    /// The most agents this run may start, retries included (every loop
    /// has a ceiling).
    pub max_dispatches: usize,
}

impl Default for Scope {
    fn default() -> Self {
        Scope {
            follow: false,
            max_tasks: None,
            merge: false,
            max_dispatches: usize::MAX,
        }
    }
}

/// Why a process never started: not the agent's doing, so it costs no
/// attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NotStarted {
    /// Its program could not be run (not found, not executable): the
    /// config is wrong, and every task would meet it — the run stops
    /// dispatching.
    Program(String),
    /// The task's workspace could not be made (git refused a worktree):
    /// the task is given back and left alone by this run.
    Workspace(String),
    /// Its dependencies' unlanded branches conflict: it cannot start on
    /// their work. Given back and left alone until a merge pass lands
    /// something (or the next run).
    Base(String),
    /// A budget it falls under is spent. `halt`: the run's or the day's —
    /// the run stops dispatching; else the task's own — the task waits for
    /// a person (the runner holds what to tell them).
    Budget { why: String, halt: bool },
    /// The task's prompt cannot be given to its agent as the agent's
    /// command asks (too large for an argument): given back and left
    /// alone by this run; the reason says what to change.
    Prompt(String),
}

/// A task at the head of the ready queue: its id and preferred agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    pub id: TaskId,
    pub agent: Option<String>,
}

/// What a process is, to the scheduler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProcKind {
    Agent(String),
    Gate(String),
}

/// An input: something happened, or a question was answered.
#[derive(Clone, Debug)]
pub enum Input {
    /// The run begins.
    Start,
    /// Time passed (a deadline the core gave may be due).
    Tick,
    /// The ready queue's head, answering [`Action::Fetch`].
    Ready(Vec<Head>),
    /// Available memory in bytes (`None`: unknown), answering
    /// [`Action::ReadMemory`].
    Memory(Option<u64>),
    /// Free disk space, answering [`Action::ReadDisk`]: the place with the
    /// least room (`.braid` or the worktrees) and its free bytes (`None`:
    /// unknown).
    Disk(Option<(String, u64)>),
    /// A write failed because a disk is full: no more work starts (what
    /// runs finishes, or times out), and the run ends saying why.
    DiskFull(String),
    /// A claim was granted.
    Claimed { id: TaskId, attempt: u32 },
    /// A claim was refused (another runner took the task).
    ClaimRefused { id: TaskId },
    /// The next attempt started under the same claim (`None`: the claim
    /// is gone).
    Attempt { id: TaskId, attempt: Option<u32> },
    /// The gates a task must pass, by name, answering [`Action::ListGates`].
    Gates { id: TaskId, gates: Vec<String> },
    /// A process ended (or could not start). `tail`: the end of its own
    /// output when it failed; `rate_limited`: how long its agent should
    /// rest, when its output says so; `cached`: the gate was answered by
    /// the result cache (its original duration, ms).
    Exited {
        key: u64,
        exit: Exit,
        tail: String,
        rate_limited: Option<Duration>,
        cached: Option<u64>,
        /// Why an agent that exited 0 has still not done its work: it
        /// changed nothing (when that is not allowed), or, resolving a
        /// conflict, its branch lacks a side of it.
        unfit: Option<String>,
        /// The agent stopped to ask a person something (the runner holds
        /// the question): the task waits for an answer.
        asks: bool,
    },
    /// Whether an agent showed any sign of life (output, a worktree
    /// change) since it was last asked, answering [`Action::CheckActivity`].
    Activity { key: u64, active: bool },
    /// A process was never started (see [`NotStarted`]).
    NotStarted { key: u64, why: NotStarted },
    /// A finish was applied (`ok`) or refused (the claim was gone).
    Finished { id: TaskId, to: State, ok: bool },
    /// The passing work could not be committed.
    CommitFailed { id: TaskId, error: String },
    /// A claim of ours is gone (renewal refused, cancelled or taken
    /// elsewhere). `cancelled`: the task was cancelled.
    Lost { id: TaskId, cancelled: bool },
    /// Someone else wrote to the store.
    StoreChanged,
    /// A merge pass ended (and the store may have changed): tasks waiting
    /// for their dependencies' work are tried again.
    Landed,
    /// SIGINT or SIGTERM.
    Signal,
    /// Whether anything may still come when nothing runs, answering
    /// [`Action::Probe`].
    Idle {
        ready_waiting: bool,
        /// When the earliest claim held by someone else expires.
        lease_expiry: Option<Time>,
        /// The merge loop is working or asked to (a landing may make work
        /// ready).
        merge_pending: bool,
    },
}

/// An action for the runner.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Read the ready queue's head (at most `want`): answer `Ready`.
    Fetch { want: usize },
    /// Read available memory: answer `Memory`.
    ReadMemory,
    /// Read free disk space: answer `Disk`.
    ReadDisk,
    /// Tell the person running this something (once per occasion).
    Note(String),
    /// After a full disk, space is back (a following run goes on).
    DiskBack,
    /// Claim `id` for `agent`: answer `Claimed` or `ClaimRefused`.
    Claim { id: TaskId, agent: String },
    /// Start the next attempt under the claim: answer `Attempt`.
    NextAttempt { id: TaskId },
    /// Start `agent` on `id` (workspace, prompt, process). If it cannot
    /// start, answer `Exited` with `Exit::SpawnFailed`.
    StartAgent {
        key: u64,
        id: TaskId,
        agent: String,
        attempt: u32,
    },
    /// Which gates `id` must pass: answer `Gates`.
    ListGates { id: TaskId },
    /// Run gate `gate` for `id` (or answer from the cache); answer
    /// `Exited` when it ends.
    StartGate {
        key: u64,
        id: TaskId,
        gate: String,
        attempt: u32,
    },
    /// The gate process `key` passed: keep its result in the cache.
    CacheGate { key: u64 },
    /// Has agent `key` written output or changed its worktree since the
    /// last look? Answer `Activity`.
    CheckActivity { key: u64 },
    /// Send SIGTERM (or, with `kill`, SIGKILL) to process `key`'s group.
    Signal { key: u64, kill: bool },
    /// Append an event about `id` (batched by the runner).
    Record {
        id: TaskId,
        kind: EventKind,
        payload: serde_json::Value,
    },
    /// End the claim on `id` by moving it to `to` (committing the work
    /// first when `commit`): answer `Finished`, or `CommitFailed`.
    Finish {
        id: TaskId,
        to: State,
        reason: String,
        refund: bool,
        commit: bool,
    },
    /// Park `id` for a person: end the claim by deferring the task, with
    /// the `needs-human` label and an `attention` event saying what the
    /// runner was told (an agent's question, a spent budget); answer
    /// `Finished`.
    Park { id: TaskId },
    /// Extend these claims; answer `Lost` for each refused.
    Renew { ids: Vec<TaskId> },
    /// Check these claims are still ours (someone else wrote); answer
    /// `Lost` for each that is not.
    CheckClaims { ids: Vec<TaskId> },
    /// Take back claims of others whose lease expired.
    Rescue,
    /// The task no longer needs its workspace.
    RemoveWorkspace { id: TaskId },
    /// Work reached review: wake the merge loop.
    RequestMerge,
    /// Nothing runs: answer `Idle`.
    Probe,
}

/// How a run ended.
/// Why a claim whose attempt failed goes back without a retry.
const STOPPED_BEFORE_RETRY: &str = "the run was stopped before the failed attempt's retry";

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    /// Dispatch latency in ms (p50, p99): from the moment a start became
    /// possible (a slot freed, work finished, the store changed) to the
    /// agent's process being spawned. Measured by the runner.
    pub latency_ms: Option<(f64, f64)>,
    pub dispatched: usize,
    pub review: usize,
    pub done: usize,
    pub failed: usize,
    pub released: usize,
    /// Tasks that wait for a person's answer (`braid answer`).
    pub waiting: usize,
    pub interrupted: bool,
    /// Why the run stopped dispatching before the work ran out (a program
    /// that could not start, the dispatch limit).
    pub halted: Option<String>,
    /// Processes another braid left working that this run stopped (its
    /// owner died, or its lease passed to this run). Filled by the runner.
    pub stopped: Vec<String>,
}

impl Report {
    pub fn exit_code(&self) -> i32 {
        if self.failed > 0 || self.interrupted || self.halted.is_some() {
            1
        } else {
            0
        }
    }
}

#[derive(Clone, Debug)]
struct Proc {
    task: TaskId,
    kind: ProcKind,
    started: Time,
    deadline: Time,
    killed_at: Option<Time>,
    /// For an agent with a stall limit: how long it may stay silent, and
    /// when it is next looked at (`None` while the look is answered).
    stall: Option<(Duration, Option<Time>)>,
    /// Stopped for staying silent too long.
    stalled: bool,
}

/// How a process ended, as the core hears it.
struct Outcome {
    exit: Exit,
    tail: String,
    rate_limited: Option<Duration>,
    cached: Option<u64>,
    unfit: Option<String>,
    asks: bool,
}

/// A question about a task the core waits to hear answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pending {
    /// A claim: an agent will start (it holds a slot).
    Claim,
    /// The next attempt: an agent will start (it holds a slot).
    Attempt,
    /// Which gates to run.
    Gates,
    /// A finish or release.
    Finish,
}

#[derive(Clone, Debug)]
struct Work {
    attempt: u32,
    agent: String,
    gates_pending: usize,
    failure: Option<(String, String)>,
    retry_at: Option<Time>,
    /// Not acted on again until this is answered.
    pending: Option<Pending>,
}

impl Work {
    /// An agent is about to start for it.
    fn starting(&self) -> bool {
        matches!(self.pending, Some(Pending::Claim | Pending::Attempt))
    }
}

/// Where reading the ready queue stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fetch {
    /// Something changed since the last read: read again when a slot is
    /// free.
    Stale,
    /// Asked; the answer comes in this turn.
    Asked,
    /// Answered; `claimed` claims were asked for from it.
    Got { claimed: usize },
    /// The last read started nothing: wait for a change.
    Spent,
}

/// The scheduler's state and decisions.
pub struct Core {
    config: Config,
    scope: Scope,
    rng: u64,
    works: BTreeMap<TaskId, Work>,
    procs: BTreeMap<u64, Proc>,
    gate_queue: VecDeque<(TaskId, String)>,
    busy: HashMap<String, usize>,
    cooldown: HashMap<String, Time>,
    next_key: u64,
    stopping: Option<Time>,
    memory: Option<(Time, Option<u64>)>,
    memory_asked: bool,
    memory_wait: Option<Time>,
    disk: Option<(Time, Option<(String, u64)>)>,
    disk_asked: bool,
    disk_wait: Option<Time>,
    /// The run said it waits for disk space (said once per wait).
    disk_said: bool,
    /// A write met a full disk: work given back now is not charged.
    disk_full: bool,
    /// A following run that met a full disk waits until this many bytes
    /// are free before it starts work again.
    full_until: Option<u64>,
    next_heartbeat: Time,
    lease_timer: Option<Time>,
    /// Heads fetched and not yet tried.
    candidates: VecDeque<Head>,
    fetch: Fetch,
    probing: bool,
    done: bool,
    /// Agents started, retries included.
    dispatches: usize,
    /// Tasks this run gave back because their workspace could not be made:
    /// not claimed again by it.
    set_aside: std::collections::BTreeSet<TaskId>,
    /// Set aside because its dependencies' branches conflict: tried again
    /// after a merge pass (a landing may settle it).
    waiting_base: std::collections::BTreeSet<TaskId>,
    report: Report,
}

impl Core {
    /// `seed` drives the backoff's jitter (tests fix it).
    pub fn new(config: Config, scope: Scope, seed: u64) -> Core {
        let beat = config.run.lease / 3;
        Core {
            config,
            scope,
            rng: seed | 1,
            works: BTreeMap::new(),
            procs: BTreeMap::new(),
            gate_queue: VecDeque::new(),
            busy: HashMap::new(),
            cooldown: HashMap::new(),
            next_key: 0,
            stopping: None,
            memory: None,
            memory_asked: false,
            memory_wait: None,
            disk: None,
            disk_asked: false,
            disk_wait: None,
            disk_said: false,
            disk_full: false,
            full_until: None,
            next_heartbeat: beat,
            lease_timer: None,
            candidates: VecDeque::new(),
            fetch: Fetch::Stale,
            probing: false,
            done: false,
            dispatches: 0,
            set_aside: std::collections::BTreeSet::new(),
            waiting_base: std::collections::BTreeSet::new(),
            report: Report::default(),
        }
    }

    pub fn report(&self) -> &Report {
        &self.report
    }

    /// True once the run should end.
    pub fn done(&self) -> bool {
        self.done
    }

    /// Agents running now.
    pub fn active_agents(&self) -> usize {
        self.busy.values().sum()
    }

    /// The tasks this run holds claims on.
    pub fn holding(&self) -> impl Iterator<Item = &TaskId> {
        self.works.keys()
    }

    /// Whether process `key` is an agent or a gate, and of which task.
    pub fn proc(&self, key: u64) -> Option<(&TaskId, &ProcKind)> {
        self.procs.get(&key).map(|p| (&p.task, &p.kind))
    }

    /// When the core next needs a `Tick`, if it waits for time at all.
    pub fn deadline(&self, now: Time) -> Option<Time> {
        let mut d: Option<Time> = None;
        let mut at = |t: Time| d = Some(d.map_or(t, |x| x.min(t)));
        for p in self.procs.values() {
            at(p.deadline);
            if let Some((_, Some(t))) = p.stall {
                at(t);
            }
        }
        for w in self.works.values() {
            // A retry that is due but cannot start waits for a slot or an
            // agent, not for a past deadline.
            if let Some(t) = w.retry_at.filter(|t| *t > now) {
                at(t);
            }
        }
        for t in self.cooldown.values().filter(|t| **t > now) {
            at(*t);
        }
        if !self.works.is_empty() {
            at(self.next_heartbeat);
        }
        if let Some(t) = self.memory_wait {
            at(t);
        }
        if let Some(t) = self.disk_wait {
            at(t);
        }
        if let Some(t) = self.stopping.filter(|t| *t > now) {
            at(t);
        }
        if let Some(t) = self.lease_timer {
            at(t);
        }
        d
    }

    /// Takes one input at `now`; the actions to perform are appended to
    /// `out`, in order.
    pub fn handle(&mut self, now: Time, input: Input, out: &mut Vec<Action>) {
        // Anything but an answer to the dispatch's own questions may have
        // made other work ready (or freed an agent): look at the queue
        // afresh, in priority order.
        let answer = matches!(
            input,
            Input::Ready(_)
                | Input::Memory(_)
                | Input::Claimed { .. }
                | Input::ClaimRefused { .. }
                | Input::Attempt { .. }
                | Input::Gates { .. }
                | Input::Idle { .. }
        );
        if !answer && self.fetch != Fetch::Asked {
            self.fetch = Fetch::Stale;
            self.candidates.clear();
        }
        match input {
            Input::Start => {
                out.push(Action::Rescue);
            }
            Input::Tick => self.on_timers(now, out),
            Input::Ready(heads) => {
                self.fetch = Fetch::Got { claimed: 0 };
                self.candidates = heads.into();
            }
            Input::Memory(avail) => {
                self.memory_asked = false;
                self.memory = Some((now, avail));
            }
            Input::Disk(least) => {
                self.disk_asked = false;
                self.disk = Some((now, least));
            }
            Input::DiskFull(why) => {
                self.disk_full = true;
                if self.scope.follow {
                    // It waits for space instead of ending: a fresh reading
                    // must show room for work again.
                    self.full_until = Some(self.config.run.disk_floor.max(FULL_RESUME));
                    self.disk = None;
                } else if self.report.halted.is_none() {
                    self.report.halted = Some(why.clone());
                }
                // Work that waits (a retry's backoff, its gates' turn) is
                // given back now, uncharged; work running finishes or times
                // out. A give-back that cannot be written either leaves the
                // claim to expire.
                let waiting: Vec<TaskId> = self
                    .works
                    .iter()
                    .filter(|(id, w)| {
                        w.pending.is_none() && !self.procs.values().any(|p| &p.task == *id)
                    })
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in waiting {
                    self.give_back(&id, &why, true, out);
                }
            }
            Input::Claimed { id, attempt } => self.claimed(now, id, attempt, out),
            Input::ClaimRefused { id } => {
                // Another runner took it first.
                self.works.remove(&id);
            }
            Input::Attempt { id, attempt } => match attempt {
                Some(n) => {
                    if let Some(w) = self.works.get_mut(&id) {
                        w.pending = None;
                        w.attempt = n;
                        w.failure = None;
                    }
                    self.start_agent(now, &id, out);
                }
                None => {
                    self.works.remove(&id);
                }
            },
            Input::Gates { id, gates } => self.queue_gates(&id, gates, out),
            Input::Exited {
                key,
                exit,
                tail,
                rate_limited,
                cached,
                unfit,
                asks,
            } => {
                if let Some(p) = self.procs.remove(&key) {
                    let outcome = Outcome {
                        exit,
                        tail,
                        rate_limited,
                        cached,
                        unfit,
                        asks,
                    };
                    self.on_exit(now, key, p, outcome, out);
                }
            }
            Input::Activity { key, active } => {
                let grace = self.config.run.kill_grace;
                if let Some(p) = self.procs.get_mut(&key)
                    && let Some((limit, at)) = p.stall.as_mut()
                    && p.killed_at.is_none()
                {
                    if active {
                        *at = Some(now + *limit);
                    } else {
                        // Silent for the whole limit: stopped, and the
                        // attempt fails as stalled when it exits.
                        p.stalled = true;
                        p.killed_at = Some(now);
                        p.deadline = now + grace;
                        out.push(Action::Signal { key, kill: false });
                    }
                }
            }
            Input::NotStarted { key, why } => {
                if let Some(p) = self.procs.remove(&key) {
                    self.not_started(now, p, why, out);
                }
            }
            Input::Finished { id, to, ok } => self.finished(id, to, ok, out),
            Input::CommitFailed { id, error } => {
                if let Some(w) = self.works.get_mut(&id) {
                    w.pending = None;
                }
                self.attempt_failed(now, &id, "committing the work".into(), error, out);
            }
            Input::Lost { id, cancelled } => {
                self.kill_task(now, &id, out);
                self.works.remove(&id);
                if cancelled {
                    // A cancelled task's workspace goes (its branch stays).
                    out.push(Action::RemoveWorkspace { id });
                }
            }
            Input::Landed => {
                for id in std::mem::take(&mut self.waiting_base) {
                    self.set_aside.remove(&id);
                }
                return self.handle(now, Input::StoreChanged, out);
            }
            Input::StoreChanged => {
                let ids: Vec<TaskId> = self
                    .works
                    .iter()
                    .filter(|(_, w)| w.pending.is_none())
                    .map(|(id, _)| id.clone())
                    .collect();
                if !ids.is_empty() {
                    out.push(Action::CheckClaims { ids });
                }
            }
            Input::Signal => self.on_signal(now, out),
            Input::Idle {
                ready_waiting,
                lease_expiry,
                merge_pending,
            } => {
                self.probing = false;
                self.idle(now, ready_waiting, lease_expiry, merge_pending);
                return;
            }
        }
        self.dispatch(now, out);
    }

    fn slots_free(&self) -> usize {
        let starting = self.works.values().filter(|w| w.starting()).count();
        self.config
            .run
            .jobs
            .saturating_sub(self.procs.len() + starting)
    }

    fn agent_available(&self, name: &str, now: Time) -> bool {
        let Some(a) = self.config.agent(name) else {
            return false;
        };
        self.cooldown.get(name).is_none_or(|t| *t <= now)
            && self.busy.get(name).copied().unwrap_or(0) + self.claiming_for(name)
                < a.max_concurrent
    }

    /// Agents of this name about to start (claims and next attempts asked
    /// for, not answered yet).
    fn claiming_for(&self, agent: &str) -> usize {
        self.works
            .values()
            .filter(|w| w.starting() && w.agent == agent)
            .count()
    }

    /// The agent for a task: its own (or the first), else the first free
    /// one of its failover list.
    fn pick_agent(&self, preferred: Option<&str>, now: Time) -> Option<String> {
        let first = preferred
            .and_then(|p| self.config.agent(p))
            .or_else(|| self.config.agents.first())?;
        std::iter::once(&first.name)
            .chain(first.failover.iter())
            .find(|n| self.agent_available(n, now))
            .cloned()
    }

    /// Whether an agent may start now for memory's sake. Asks for a
    /// reading when the last is stale (the answer comes in this turn and
    /// dispatch runs again).
    fn memory_ok(&mut self, now: Time, out: &mut Vec<Action>) -> bool {
        if self.config.run.memory_floor == 0 {
            return true;
        }
        match self.memory {
            Some((at, avail)) if now.saturating_sub(at) < MEMORY_FRESH => match avail {
                Some(a) if a < self.config.run.memory_floor => {
                    self.memory_wait = Some(now + MEMORY_RECHECK);
                    false
                }
                _ => {
                    self.memory_wait = None;
                    true
                }
            },
            _ => {
                if !self.memory_asked {
                    self.memory_asked = true;
                    out.push(Action::ReadMemory);
                }
                false
            }
        }
    }

    /// Whether an agent may start now for disk space's sake (`[run]
    /// disk_floor` on `.braid` and the worktrees), like [`Self::memory_ok`];
    /// says once why it waits.
    fn disk_ok(&mut self, now: Time, out: &mut Vec<Action>) -> bool {
        let floor = self.full_until.unwrap_or(self.config.run.disk_floor);
        if floor == 0 {
            return true;
        }
        match &self.disk {
            Some((at, least)) if now.saturating_sub(*at) < MEMORY_FRESH => match least {
                Some((path, free)) if *free < floor => {
                    if !self.disk_said {
                        self.disk_said = true;
                        let wanted = if self.full_until.is_some() {
                            "what work needs after a full disk"
                        } else {
                            "[run] disk_floor"
                        };
                        out.push(Action::Note(format!(
                            "no agent starts: {path} has {} MiB free, below {wanted} ({} MiB); waiting for space (free some, or lower disk_floor)",
                            free >> 20,
                            floor >> 20
                        )));
                    }
                    self.disk_wait = Some(now + MEMORY_RECHECK);
                    false
                }
                _ => {
                    if self.disk_said {
                        self.disk_said = false;
                        out.push(Action::Note(
                            "disk space is back above [run] disk_floor: agents start again".into(),
                        ));
                    }
                    if self.full_until.take().is_some() {
                        self.disk_full = false;
                        out.push(Action::DiskBack);
                    }
                    self.disk_wait = None;
                    true
                }
            },
            _ => {
                if !self.disk_asked {
                    self.disk_asked = true;
                    out.push(Action::ReadDisk);
                }
                false
            }
        }
    }

    fn dispatch(&mut self, now: Time, out: &mut Vec<Action>) {
        if self.done {
            return;
        }
        // Gates of finished agents first: they complete work in flight.
        while self.slots_free() > 0 {
            let Some((id, gate)) = self.gate_queue.pop_front() else {
                break;
            };
            self.start_gate(now, &id, gate, out);
        }
        // Retries whose backoff is over.
        let due: Vec<TaskId> = self
            .works
            .iter()
            .filter(|(_, w)| w.pending.is_none() && w.retry_at.is_some_and(|t| t <= now))
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            if let Some(why) = self.report.halted.clone() {
                // No retry starts in a halted run: the task goes back now
                // (it would hold the run open for ever). After a full disk
                // its failure may well be the disk's, so it is not charged.
                let refund = self.disk_full;
                self.give_back(&id, &why, refund, out);
                continue;
            }
            if self.slots_free() == 0 || self.stopping.is_some() {
                break;
            }
            if !self.may_dispatch() {
                break;
            }
            let preferred = self.works[&id].agent.clone();
            let Some(agent) = self.pick_agent(Some(&preferred), now) else {
                continue;
            };
            if !self.memory_ok(now, out) || !self.disk_ok(now, out) {
                break;
            }
            let w = self.works.get_mut(&id).expect("due work present");
            w.retry_at = None;
            w.agent = agent;
            w.pending = Some(Pending::Attempt);
            out.push(Action::NextAttempt { id });
        }
        // New work.
        if self.stopping.is_some() || self.halted() || self.config.agents.is_empty() {
            return self.maybe_probe(out);
        }
        while self.slots_free() > 0 && self.fetch != Fetch::Asked {
            let claiming = self
                .works
                .values()
                .filter(|w| w.pending == Some(Pending::Claim))
                .count();
            if self
                .scope
                .max_tasks
                .is_some_and(|m| self.report.dispatched + claiming >= m)
            {
                break;
            }
            let Some(head) = self.candidates.pop_front() else {
                // A fetch that started nothing (every head taken, or no
                // agent free for any) is not repeated until something
                // changes.
                if matches!(self.fetch, Fetch::Spent | Fetch::Got { claimed: 0 }) {
                    self.fetch = Fetch::Spent;
                    break;
                }
                self.fetch = Fetch::Asked;
                out.push(Action::Fetch {
                    want: self.slots_free() * 4 + 8,
                });
                return;
            };
            if self.works.contains_key(&head.id) || self.set_aside.contains(&head.id) {
                continue;
            }
            if !self.may_dispatch() {
                break;
            }
            let Some(agent) = self.pick_agent(head.agent.as_deref(), now) else {
                continue;
            };
            if !self.memory_ok(now, out) || !self.disk_ok(now, out) {
                // Tried again when memory or disk is read (this turn) or
                // comes back.
                self.candidates.push_front(head);
                return;
            }
            self.works.insert(
                head.id.clone(),
                Work {
                    attempt: 0,
                    agent: agent.clone(),
                    gates_pending: 0,
                    failure: None,
                    retry_at: None,
                    pending: Some(Pending::Claim),
                },
            );
            if let Fetch::Got { claimed } = &mut self.fetch {
                *claimed += 1;
            }
            out.push(Action::Claim { id: head.id, agent });
        }
        self.maybe_probe(out);
    }

    fn maybe_probe(&mut self, out: &mut Vec<Action>) {
        if self.procs.is_empty()
            && self.works.is_empty()
            && self.gate_queue.is_empty()
            && self.fetch != Fetch::Asked
            && !self.probing
            && !self.done
        {
            if self.stopping.is_some() || self.halted() {
                self.done = true;
                return;
            }
            self.probing = true;
            out.push(Action::Probe);
        }
    }

    fn idle(
        &mut self,
        now: Time,
        ready_waiting: bool,
        lease_expiry: Option<Time>,
        merge_pending: bool,
    ) {
        if !(self.procs.is_empty() && self.works.is_empty() && self.gate_queue.is_empty()) {
            return;
        }
        // Claims held by others: when the earliest expires (if its holder
        // died), rescue it — in follow mode too.
        self.lease_timer = lease_expiry.map(|t| t.max(now));
        if merge_pending || self.scope.follow {
            return;
        }
        if self.config.agents.is_empty()
            || self
                .scope
                .max_tasks
                .is_some_and(|m| self.report.dispatched >= m)
        {
            self.done = true;
            return;
        }
        // Work claimed by another runner may still finish (making more
        // work ready) or, if that runner died, be rescued when its lease
        // expires.
        if self.lease_timer.is_some() {
            return;
        }
        // Ready work that only waits for an agent's cooldown or for memory
        // keeps the run.
        let cooling = self.cooldown.values().any(|t| *t > now);
        self.done =
            !(ready_waiting && (cooling || self.memory_wait.is_some() || self.disk_wait.is_some()));
    }

    fn claimed(&mut self, now: Time, id: TaskId, attempt: u32, out: &mut Vec<Action>) {
        let Some(w) = self.works.get_mut(&id) else {
            return;
        };
        w.pending = None;
        w.attempt = attempt;
        self.report.dispatched += 1;
        self.start_agent(now, &id, out);
    }

    fn halted(&self) -> bool {
        self.report.halted.is_some()
    }

    /// Whether another agent may start under the dispatch limit (agents
    /// started and about to start); at the limit the run stops dispatching.
    fn may_dispatch(&mut self) -> bool {
        let starting = self.works.values().filter(|w| w.starting()).count();
        if self.dispatches + starting < self.scope.max_dispatches {
            return true;
        }
        if self.report.halted.is_none() {
            self.report.halted = Some(format!(
                "reached the dispatch limit: {} agents started (raise [run] max_dispatches to allow more)",
                self.dispatches + starting
            ));
        }
        false
    }

    /// A process that never started: the task is given back without
    /// spending an attempt. A program that cannot run stops the run's
    /// dispatching (every task would meet it); a workspace that cannot be
    /// made sets that task aside for this run.
    fn not_started(&mut self, now: Time, p: Proc, why: NotStarted, out: &mut Vec<Action>) {
        if let ProcKind::Agent(name) = &p.kind
            && let Some(n) = self.busy.get_mut(name)
        {
            *n = n.saturating_sub(1);
        }
        let (what, reason) = match (&p.kind, &why) {
            (ProcKind::Agent(a), NotStarted::Program(e)) => {
                (format!("agent {a:?}"), format!("could not start: {e}"))
            }
            (ProcKind::Gate(g), NotStarted::Program(e)) => {
                (format!("gate {g:?}"), format!("could not start: {e}"))
            }
            (_, NotStarted::Workspace(e)) => (
                "the workspace".to_owned(),
                format!("could not be made: {e}"),
            ),
            (_, NotStarted::Budget { why, .. }) => (String::new(), why.clone()),
            (_, NotStarted::Base(why)) => ("it".to_owned(), format!("waits: {why}")),
            (_, NotStarted::Prompt(why)) => ("it".to_owned(), format!("cannot start: {why}")),
        };
        if let ProcKind::Gate(g) = &p.kind {
            out.push(Action::Record {
                id: p.task.clone(),
                kind: EventKind::GateFinished,
                payload: json!({"gate": g, "passed": false, "exit": reason, "timed_out": false, "duration_ms": 0, "cached": false, "infrastructure": true}),
            });
        }
        match why {
            NotStarted::Program(_) => {
                if self.report.halted.is_none() {
                    self.report.halted = Some(format!(
                        "{what} {reason}; no attempt was charged — fix the command in the config and run again"
                    ));
                }
            }
            NotStarted::Workspace(_) | NotStarted::Prompt(_) => {
                self.set_aside.insert(p.task.clone());
            }
            NotStarted::Base(_) => {
                self.set_aside.insert(p.task.clone());
                self.waiting_base.insert(p.task.clone());
            }
            NotStarted::Budget { halt: true, .. } => {
                if self.report.halted.is_none() {
                    self.report.halted = Some(reason.clone());
                }
            }
            NotStarted::Budget { halt: false, .. } => {
                self.kill_task(now, &p.task, out);
                return self.park(&p.task, out);
            }
        }
        // Other processes of the task (its other gates) stop too.
        self.kill_task(now, &p.task, out);
        let why = if what.is_empty() {
            format!("{reason} (not the agent's failure)")
        } else {
            format!("{what} {reason} (not the agent's failure)")
        };
        self.release(&p.task, &why, out);
    }

    /// The task waits for a person: its claim ends with it deferred and
    /// labelled (the attempt is not charged: asking is not failing).
    fn park(&mut self, id: &TaskId, out: &mut Vec<Action>) {
        self.gate_queue.retain(|(t, _)| t != id);
        if let Some(w) = self.works.get_mut(id) {
            w.pending = Some(Pending::Finish);
            w.retry_at = None;
            out.push(Action::Park { id: id.clone() });
        }
    }

    fn start_agent(&mut self, now: Time, id: &TaskId, out: &mut Vec<Action>) {
        let Some(w) = self.works.get(id) else { return };
        let agent = w.agent.clone();
        let attempt = w.attempt;
        let timeout = self
            .config
            .agent(&agent)
            .map_or(Duration::from_secs(3600), |a| a.timeout);
        *self.busy.entry(agent.clone()).or_insert(0) += 1;
        self.dispatches += 1;
        let stall = self.config.agent(&agent).and_then(|a| a.stall);
        let key = self.new_proc(now, id, ProcKind::Agent(agent.clone()), timeout);
        if let (Some(limit), Some(p)) = (stall, self.procs.get_mut(&key)) {
            p.stall = Some((limit, Some(now + limit)));
        }
        out.push(Action::StartAgent {
            key,
            id: id.clone(),
            agent,
            attempt,
        });
    }

    fn new_proc(&mut self, now: Time, id: &TaskId, kind: ProcKind, timeout: Duration) -> u64 {
        let key = self.next_key;
        self.next_key += 1;
        self.procs.insert(
            key,
            Proc {
                task: id.clone(),
                kind,
                started: now,
                deadline: now + timeout,
                killed_at: None,
                stall: None,
                stalled: false,
            },
        );
        key
    }

    fn queue_gates(&mut self, id: &TaskId, gates: Vec<String>, out: &mut Vec<Action>) {
        let Some(w) = self.works.get_mut(id) else {
            return;
        };
        w.pending = None;
        if gates.is_empty() {
            return self.succeed(id, out);
        }
        w.gates_pending = gates.len();
        for g in gates {
            self.gate_queue.push_back((id.clone(), g));
        }
    }

    fn start_gate(&mut self, now: Time, id: &TaskId, gate: String, out: &mut Vec<Action>) {
        let Some(w) = self.works.get(id) else { return };
        let attempt = w.attempt;
        let timeout = self
            .config
            .gates
            .iter()
            .find(|g| g.name == gate)
            .map_or(Duration::from_secs(3600), |g| g.timeout);
        let key = self.new_proc(now, id, ProcKind::Gate(gate.clone()), timeout);
        out.push(Action::StartGate {
            key,
            id: id.clone(),
            gate,
            attempt,
        });
    }

    /// One gate of a task's round finished (`failure`: what failed and the
    /// end of its output); when it was the last, the attempt is decided.
    fn gate_done(
        &mut self,
        now: Time,
        id: &TaskId,
        failure: Option<(String, String)>,
        out: &mut Vec<Action>,
    ) {
        let Some(w) = self.works.get_mut(id) else {
            return;
        };
        w.gates_pending = w.gates_pending.saturating_sub(1);
        if failure.is_some() && w.failure.is_none() {
            w.failure = failure;
        }
        if w.gates_pending == 0 {
            match w.failure.take() {
                Some((what, tail)) => self.attempt_failed(now, id, what, tail, out),
                None => self.succeed(id, out),
            }
        }
    }

    fn succeed(&mut self, id: &TaskId, out: &mut Vec<Action>) {
        let Some(w) = self.works.get_mut(id) else {
            return;
        };
        w.pending = Some(Pending::Finish);
        let review = self.config.merge_into.is_some();
        out.push(Action::Finish {
            id: id.clone(),
            to: if review { State::Review } else { State::Done },
            reason: "gates passed".into(),
            refund: false,
            // The branch is what merges: work the agent left uncommitted
            // (what the gates just passed) is committed onto it.
            commit: review,
        });
    }

    fn finished(&mut self, id: TaskId, to: State, ok: bool, out: &mut Vec<Action>) {
        self.works.remove(&id);
        self.gate_queue.retain(|(t, _)| *t != id);
        if !ok {
            return;
        }
        match to {
            State::Done => {
                self.report.done += 1;
                out.push(Action::RemoveWorkspace { id });
            }
            State::Review => {
                self.report.review += 1;
                if self.scope.merge {
                    out.push(Action::RequestMerge);
                }
            }
            State::Failed => self.report.failed += 1,
            State::Open => self.report.released += 1,
            State::Deferred => self.report.waiting += 1,
            _ => {}
        }
    }

    fn attempt_failed(
        &mut self,
        now: Time,
        id: &TaskId,
        what: String,
        tail: String,
        out: &mut Vec<Action>,
    ) {
        let Some(w) = self.works.get(id) else { return };
        let attempt = w.attempt;
        let max = self.config.run.max_attempts;
        if attempt < max && self.stopping.is_some() {
            // The attempt was spent: it counts, and the next run's prompt
            // shows why it failed (a task that fails every interrupted run
            // still reaches its limit).
            out.push(Action::Record {
                id: id.clone(),
                kind: EventKind::Retrying,
                payload: json!({"failed": what, "tail": tail, "attempt": attempt, "backoff_ms": 0}),
            });
            return self.give_back(id, STOPPED_BEFORE_RETRY, false, out);
        }
        if attempt < max {
            let backoff = self.backoff(attempt);
            out.push(Action::Record {
                id: id.clone(),
                kind: EventKind::Retrying,
                payload: json!({"failed": what, "tail": tail, "attempt": attempt, "backoff_ms": backoff.as_millis() as u64}),
            });
            if let Some(w) = self.works.get_mut(id) {
                w.retry_at = Some(now + backoff);
            }
            return;
        }
        if let Some(w) = self.works.get_mut(id) {
            w.pending = Some(Pending::Finish);
        }
        out.push(Action::Finish {
            id: id.clone(),
            to: State::Failed,
            reason: format!("{what}; attempt {attempt} of {max}"),
            refund: false,
            commit: false,
        });
    }

    /// Exponential backoff with jitter: base · 2^(attempt-1), capped, times
    /// a random factor in [0.5, 1.5).
    fn backoff(&mut self, attempt: u32) -> Duration {
        // xorshift64: the jitter needs spread, not secrecy.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        backoff(
            self.config.run.backoff_base,
            self.config.run.backoff_cap,
            attempt,
            (self.rng >> 48) as u16,
        )
    }

    /// Gives a claim back: the task returns to open, the attempt refunded.
    fn release(&mut self, id: &TaskId, why: &str, out: &mut Vec<Action>) {
        self.give_back(id, why, true, out);
    }

    /// Gives a claim back: the task returns to open; `refund`: the attempt
    /// does not count (it never ran its course through no fault of its own).
    fn give_back(&mut self, id: &TaskId, why: &str, refund: bool, out: &mut Vec<Action>) {
        self.gate_queue.retain(|(t, _)| t != id);
        if let Some(w) = self.works.get_mut(id) {
            w.pending = Some(Pending::Finish);
            w.retry_at = None;
            out.push(Action::Finish {
                id: id.clone(),
                to: State::Open,
                reason: why.into(),
                refund,
                commit: false,
            });
        }
    }

    fn kill_task(&mut self, now: Time, id: &TaskId, out: &mut Vec<Action>) {
        let grace = self.config.run.kill_grace;
        for (key, p) in self.procs.iter_mut().filter(|(_, p)| &p.task == id) {
            out.push(Action::Signal {
                key: *key,
                kill: false,
            });
            p.killed_at.get_or_insert(now);
            p.deadline = now + grace;
        }
        self.gate_queue.retain(|(t, _)| t != id);
    }

    fn on_exit(&mut self, now: Time, key: u64, p: Proc, o: Outcome, out: &mut Vec<Action>) {
        let Outcome {
            exit,
            tail,
            rate_limited,
            cached,
            unfit,
            asks,
        } = o;
        let duration_ms = now.saturating_sub(p.started).as_millis() as u64;
        let timed_out = p.killed_at.is_some();
        if let ProcKind::Agent(name) = &p.kind
            && let Some(n) = self.busy.get_mut(name)
        {
            *n = n.saturating_sub(1);
        }
        if timed_out && self.stopping.is_some_and(|t| t <= now) {
            // Stopped by the shutdown, not by its own timeout.
            return self.release(&p.task, "stopped by a signal before it finished", out);
        }
        match p.kind {
            ProcKind::Agent(name) => {
                if !self.works.contains_key(&p.task) {
                    return; // cancelled meanwhile
                }
                let mut what = exit.describe();
                if p.stalled {
                    let limit = p.stall.map(|(l, _)| l).unwrap_or_default();
                    what = format!(
                        "stalled: no output and no change for {} ({what})",
                        humantime::format_duration(limit)
                    );
                } else if timed_out {
                    what = format!("timed out ({what})");
                } else if exit.success()
                    && let Some(why) = &unfit
                {
                    what = why.clone();
                }
                out.push(Action::Record {
                    id: p.task.clone(),
                    kind: EventKind::AgentFinished,
                    payload: json!({"agent": name, "exit": what, "duration_ms": duration_ms}),
                });
                if asks && !timed_out {
                    return self.park(&p.task, out);
                }
                // Only a failed run is a rate limit: a successful agent may
                // well mention limits in its output.
                if !exit.success()
                    && let Some(rest) = rate_limited
                {
                    return self.cool_down(now, &p.task, &name, rest, out);
                }
                // Failed while the disk was full: the disk's fault, not the
                // agent's (its output could not be written); not charged.
                if !exit.success() && self.disk_full {
                    return self.give_back(
                        &p.task,
                        &format!("agent {name} ({what}) while the disk was full"),
                        true,
                        out,
                    );
                }
                if exit.success() && !timed_out && unfit.is_none() {
                    if let Some(w) = self.works.get_mut(&p.task) {
                        w.pending = Some(Pending::Gates);
                    }
                    out.push(Action::ListGates { id: p.task });
                } else {
                    self.attempt_failed(now, &p.task, format!("agent {name} ({what})"), tail, out);
                }
            }
            ProcKind::Gate(name) => {
                let passed = exit.success() && !timed_out;
                // Cache before recording: a recorded pass is always
                // cached, so after a crash it is never run again.
                if passed && cached.is_none() {
                    out.push(Action::CacheGate { key });
                }
                let payload = match cached {
                    Some(original) => {
                        json!({"gate": name, "passed": true, "exit": "exit 0", "timed_out": false, "duration_ms": 0, "cached": true, "original_duration_ms": original})
                    }
                    None => {
                        json!({"gate": name, "passed": passed, "exit": exit.describe(), "timed_out": timed_out, "duration_ms": duration_ms, "cached": false})
                    }
                };
                out.push(Action::Record {
                    id: p.task.clone(),
                    kind: EventKind::GateFinished,
                    payload,
                });
                if !self.works.contains_key(&p.task) {
                    return;
                }
                let failure =
                    (!passed).then(|| (format!("gate {name} ({})", exit.describe()), tail));
                self.gate_done(now, &p.task, failure, out);
            }
        }
    }

    fn cool_down(
        &mut self,
        now: Time,
        id: &TaskId,
        agent: &str,
        rest: Duration,
        out: &mut Vec<Action>,
    ) {
        self.cooldown.insert(agent.to_owned(), now + rest);
        let secs = rest.as_secs_f64();
        out.push(Action::Record {
            id: id.clone(),
            kind: EventKind::Cooldown,
            payload: json!({"agent": agent, "seconds": (secs * 1000.0).round() / 1000.0}),
        });
        self.release(id, &format!("agent {agent} is rate limited"), out);
    }

    fn on_signal(&mut self, now: Time, out: &mut Vec<Action>) {
        self.report.interrupted = true;
        if self.stopping.is_some() {
            // Second signal: stop now, and give the claims back.
            for key in self.procs.keys() {
                out.push(Action::Signal {
                    key: *key,
                    kill: true,
                });
            }
            self.procs.clear();
            self.gate_queue.clear();
            let ids: Vec<TaskId> = self.works.keys().cloned().collect();
            for id in ids {
                self.release(&id, "stopped by a second signal", out);
            }
            return;
        }
        self.stopping = Some(now + self.config.run.shutdown_grace);
        // Work waiting for a retry will not get one now.
        let waiting: Vec<TaskId> = self
            .works
            .iter()
            .filter(|(_, w)| w.retry_at.is_some() && w.pending.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        for id in waiting {
            // Their failed attempt was recorded and counts.
            self.give_back(&id, STOPPED_BEFORE_RETRY, false, out);
        }
    }

    fn on_timers(&mut self, now: Time, out: &mut Vec<Action>) {
        let grace = self.config.run.kill_grace;
        for (key, p) in self.procs.iter_mut() {
            if p.deadline <= now {
                out.push(Action::Signal {
                    key: *key,
                    kill: p.killed_at.is_some(),
                });
                p.killed_at.get_or_insert(now);
                p.deadline = now + grace;
            }
        }
        for (key, p) in self.procs.iter_mut() {
            if let Some((_, at)) = p.stall.as_mut()
                && at.is_some_and(|t| t <= now)
                && p.killed_at.is_none()
            {
                *at = None;
                out.push(Action::CheckActivity { key: *key });
            }
        }
        if self.stopping.is_some_and(|t| t <= now) {
            // Past the grace: whatever still runs is stopped; its claim is
            // given back when its process exits.
            for (key, p) in self.procs.iter_mut() {
                if p.killed_at.is_none() {
                    out.push(Action::Signal {
                        key: *key,
                        kill: false,
                    });
                    p.killed_at = Some(now);
                    p.deadline = now + grace;
                }
            }
        }
        if !self.works.is_empty() && self.next_heartbeat <= now {
            self.next_heartbeat = now + self.config.run.lease / 3;
            out.push(Action::Renew {
                ids: self.works.keys().cloned().collect(),
            });
            // Heartbeats are also when other runners' dead claims are
            // taken back, even while this run is busy.
            out.push(Action::Rescue);
        }
        if self.lease_timer.is_some_and(|t| t <= now) {
            self.lease_timer = None;
            out.push(Action::Rescue);
        }
        if self.memory_wait.is_some_and(|t| t <= now) {
            self.memory_wait = None;
        }
        if self.disk_wait.is_some_and(|t| t <= now) {
            self.disk_wait = None;
        }
    }
}

/// Exponential backoff with jitter: base · 2^(attempt-1), capped, times a
/// factor in [0.5, 1.5) chosen by `jitter` (0..=65535).
pub fn backoff(base: Duration, cap: Duration, attempt: u32, jitter: u16) -> Duration {
    let exp = base
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
        .min(cap);
    let factor = 0.5 + (jitter as f64 / 65536.0);
    exp.mul_f64(factor).min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped_with_jitter() {
        let base = Duration::from_secs(2);
        let cap = Duration::from_secs(60);
        for jitter in [0, 1, 32_768, 65_535] {
            let b1 = backoff(base, cap, 1, jitter);
            assert!(
                b1 >= Duration::from_secs(1) && b1 < Duration::from_secs(3),
                "{b1:?}"
            );
            let b3 = backoff(base, cap, 3, jitter);
            assert!(
                b3 >= Duration::from_secs(4) && b3 < Duration::from_secs(12),
                "{b3:?}"
            );
            assert!(backoff(base, cap, 30, jitter) <= cap);
        }
        assert_eq!(
            backoff(base, cap, 1, 32_768),
            base,
            "the middle is the base"
        );
    }
}
