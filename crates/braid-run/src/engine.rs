//! The engine's runner: performs what the scheduler core ([`crate::sched`])
//! decides. One loop owns everything: it blocks on one channel until a
//! message (a process exited, the store changed, a signal arrived) or the
//! core's earliest deadline, hands that to the core with the time, and
//! performs the actions it answers — claims and finishes through the store,
//! processes through the supervisor, workspaces through git — feeding each
//! answer back in the same turn. Nothing polls.
//!
//! The runner is generic over the [`Spawner`] and the [`Host`] (the clock
//! and available memory), so tests drive it step by step with a fake clock
//! and a spawner that records instead of running, against a real store.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::{Duration, Instant};

use braid_core::{Event, EventKind, State, TaskId};
use braid_store::{Command, Store};
use serde_json::json;

pub use crate::sched::Report;
pub use braid_app::Paths;

use crate::config::{Config, Gate};
use crate::sched::{Action, Core, Head, Input, NotStarted, Scope, Time};
use crate::supervise::{self, Exit, Spawner, Spec, Supervisor};
use crate::telemetry::Telemetry;

/// Bytes of an agent's log scanned for rate-limit messages.
const RATE_LIMIT_SCAN: usize = 64 * 1024;
/// Observability events (dispatched, agent and gate results) wait at most
/// this long to be written: with the next state change when one comes
/// sooner (one commit instead of two, the common case under load), else on
/// their own.
const RECORD_DELAY: Duration = Duration::from_millis(20);
/// The ready-queue depth metric is read at most this often.
const QUEUE_METRIC_EVERY: Duration = Duration::from_millis(200);

#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    pub follow: bool,
    pub max_tasks: Option<usize>,
    pub only: Vec<TaskId>,
    pub actor: String,
    /// A merge loop running beside the engine (`braid run --merge`).
    pub merge: Option<MergeHook>,
}

/// Ties a merge loop to a run (`braid run --merge`). The engine raises
/// `requested` and wakes the merger when work reaches review; the merger
/// raises `active` before it lowers `requested` and lowers `active` when a
/// pass ends, then wakes the engine ([`Waker`]). While either is up the
/// engine stays, since a landing makes dependents ready.
#[derive(Clone, Debug)]
pub struct MergeHook {
    pub requested: Arc<std::sync::atomic::AtomicBool>,
    pub active: Arc<std::sync::atomic::AtomicBool>,
    pub wake: Sender<()>,
}

impl MergeHook {
    fn pending(&self) -> bool {
        use std::sync::atomic::Ordering::SeqCst;
        self.requested.load(SeqCst) || self.active.load(SeqCst)
    }
}

/// A message to the runner's loop.
#[derive(Debug)]
pub enum Msg {
    Exited {
        key: u64,
        exit: Exit,
    },
    /// A write committed (by anyone).
    StoreChanged,
    /// Look again: something outside the store changed (a merge pass).
    Wake,
    Signal,
}

/// Wakes a running engine from another thread (it then looks at the store
/// and its hooks again).
#[derive(Clone, Debug)]
pub struct Waker(Sender<Msg>);

impl Waker {
    pub fn wake(&self) {
        // The engine is gone: nothing to wake.
        let _ = self.0.send(Msg::Wake);
    }
}

/// The machine the runner runs on, as far as decisions need it.
pub trait Host {
    /// Time since the run began (monotonic).
    fn now(&self) -> Time;
    /// Available memory in bytes, if known.
    fn available_memory(&self) -> Option<u64>;
    /// Free bytes on the filesystem holding `path` (or its nearest
    /// existing ancestor), if known.
    fn free_disk(&self, path: &std::path::Path) -> Option<u64> {
        free_disk(path)
    }
}

/// Logs of a run's latest processes kept in mind for a full disk.
const RUN_LOGS: usize = 1024;

/// Bytes held back in `.braid/reserve` for a full disk.
const RESERVE: u64 = 1 << 20;

/// Whether a store error is a full disk (SQLite's `SQLITE_FULL`, or the
/// OS's `ENOSPC` anywhere in its chain).
pub fn is_disk_full(e: &braid_store::Error) -> bool {
    let text = braid_core::error::chain(e);
    text.contains("database or disk is full") || text.contains("No space left on device")
}

/// Free bytes for an unprivileged writer on the filesystem holding `path`
/// (its nearest existing ancestor), from `statvfs`.
pub fn free_disk(path: &std::path::Path) -> Option<u64> {
    let existing = path.ancestors().find(|p| p.exists())?;
    let st = nix::sys::statvfs::statvfs(existing).ok()?;
    Some(st.blocks_available() as u64 * st.fragment_size() as u64)
}

/// The real machine: `Instant` and `/proc/meminfo`.
pub struct RealHost {
    start: Instant,
}

impl Default for RealHost {
    fn default() -> Self {
        RealHost {
            start: Instant::now(),
        }
    }
}

impl Host for RealHost {
    fn now(&self) -> Time {
        self.start.elapsed()
    }

    fn available_memory(&self) -> Option<u64> {
        let text = std::fs::read_to_string("/proc/meminfo").ok()?;
        let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }
}

/// What the runner keeps about a process it started.
struct Proc {
    task: TaskId,
    log: PathBuf,
    /// Where this process's output starts in its (appended) log.
    log_start: u64,
    /// For gates: the result cache key, stored when the gate passes.
    cache_key: Option<(String, String)>,
    agent: Option<String>,
    started: Instant,
    /// For an agent with a stall limit: its log's length and its worktree's
    /// content at the last look.
    seen: Option<(u64, Option<blake3::Hash>)>,
    /// For an agent: its attempt.
    attempt: Option<u32>,
    /// For an agent whose CLI braid reads: how far its log has been read
    /// for its latest action, and the action last recorded.
    activity: Option<(u64, Option<String>)>,
    /// For an agent: the session it resumed, if it did.
    resumed: Option<String>,
    /// For an agent: where it may write a question for a person
    /// (`$BRAID_QUESTION`).
    question: Option<PathBuf>,
}

/// Performs the core's actions.
pub struct Runner<'a, S: Spawner, H: Host> {
    core: Core,
    store: &'a dyn Store,
    config: Config,
    paths: Paths,
    opts: RunOptions,
    spawner: S,
    host: H,
    on_event: Box<dyn FnMut(&Event) + 'a>,
    telemetry: Telemetry,
    cache: Option<crate::cache::Cache>,
    /// Observability events waiting to be written in one batch, and since
    /// when the oldest waits.
    pending: Vec<Command>,
    pending_since: Option<Instant>,
    queue_metric_at: Option<Instant>,
    tokens: HashMap<TaskId, String>,
    /// The gates a task just claimed names (read with the claim, so its
    /// first gate round needs no read of its own).
    claimed_gates: HashMap<TaskId, Vec<String>>,
    /// A task's workspace identity for its gate round (the cache key's
    /// content part).
    content: HashMap<TaskId, String>,

    procs: HashMap<u64, Proc>,
    /// Processes that ended in this turn, until the core has decided about
    /// them (a passing gate's result is cached from its log).
    ended: HashMap<u64, Proc>,
    /// Events this run wrote since it last looked for writes by others.
    own_since_check: usize,
    last_checked_seq: i64,
    /// When the input that began this turn arrived: dispatch latency runs
    /// from it to the agent's spawn.
    turn_began: Instant,
    latencies: Vec<Duration>,
    /// Processes another braid left working that this runner stopped.
    stopped: Vec<String>,
    /// What an agent CLI reported of its run, by task, until its
    /// `agent_finished` event is recorded.
    reports: HashMap<TaskId, serde_json::Value>,
    /// A write met a full disk: dispatching stopped, said once.
    disk_full: bool,
    /// Claims a full disk kept from being given back: (task, token),
    /// tried again when the run ends (its processes gone, their logs
    /// freed).
    unreleased: Vec<(TaskId, String)>,
    /// The logs this run's latest processes wrote (at most
    /// [`RUN_LOGS`]): on a full disk, their middles are freed.
    run_logs: VecDeque<PathBuf>,
    /// What a task's gates left running and braid stopped, for the next
    /// `gate_finished` event.
    gate_left: HashMap<TaskId, Vec<String>>,
    /// What a task waits on a person for, until it is parked.
    asked: HashMap<TaskId, braid_app::ops::Attention>,
    /// What this run's agents reported they cost (for `run_usd`).
    run_spent: f64,
    /// Where each task's branch started, when this run made it (its
    /// `dispatched` event may still wait to be written).
    bases: HashMap<TaskId, String>,
    /// When the running agents' latest actions are next looked at.
    activity_at: Option<Instant>,
    queue: VecDeque<Input>,
}

/// How often a running agent's latest action is looked for (and, when it
/// changed, recorded as an `activity` event).
const ACTIVITY_EVERY: Duration = Duration::from_secs(3);
/// The most of an agent's new output read per look (the latest action is
/// near the end).
const ACTIVITY_READ: u64 = 64 << 10;

impl<'a, S: Spawner, H: Host> Runner<'a, S, H> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: &'a dyn Store,
        config: Config,
        paths: Paths,
        opts: RunOptions,
        spawner: S,
        host: H,
        seed: u64,
        on_event: Box<dyn FnMut(&Event) + 'a>,
    ) -> Self {
        let telemetry = Telemetry::new(
            &paths.braid_dir.join("telemetry"),
            Duration::from_secs(30 * 86_400),
        );
        let cache = if config.cache.enabled {
            match crate::cache::Cache::open(&config.cache) {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::warn!(error = %braid_core::error::chain(&e), "the gate cache is off for this run");
                    None
                }
            }
        } else {
            None
        };
        let max_dispatches = config.run.max_dispatches.unwrap_or_else(|| {
            // Ten dispatches for each task that may need one, at least 100
            // (a run that follows may get its work later).
            let unfinished = store.health().map_or(0, |h| {
                let n = |s: State| h.by_state.get(&s).copied().unwrap_or(0) as usize;
                n(State::Open) + n(State::InProgress)
            });
            (unfinished * 10).max(100)
        });
        let scope = Scope {
            follow: opts.follow,
            max_tasks: opts.max_tasks,
            merge: opts.merge.is_some(),
            max_dispatches,
        };
        Runner {
            core: Core::new(config.clone(), scope, seed),
            store,
            config,
            paths,
            opts,
            spawner,
            host,
            on_event,
            telemetry,
            cache,
            pending: Vec::new(),
            pending_since: None,
            queue_metric_at: None,
            tokens: HashMap::new(),
            claimed_gates: HashMap::new(),
            content: HashMap::new(),
            procs: HashMap::new(),
            ended: HashMap::new(),
            own_since_check: 0,
            last_checked_seq: 0,
            turn_began: Instant::now(),
            latencies: Vec::new(),
            stopped: Vec::new(),
            reports: HashMap::new(),
            disk_full: false,
            unreleased: Vec::new(),
            run_logs: VecDeque::new(),
            gate_left: HashMap::new(),
            asked: HashMap::new(),
            run_spent: 0.0,
            bases: HashMap::new(),
            activity_at: None,
            queue: VecDeque::new(),
        }
    }

    pub fn core(&self) -> &Core {
        &self.core
    }

    pub fn spawner(&mut self) -> &mut S {
        &mut self.spawner
    }

    pub fn host(&mut self) -> &mut H {
        &mut self.host
    }

    /// Begins the run: takes back expired claims and dispatches.
    pub fn start(&mut self) {
        crate::metrics::describe();
        self.keep_reserve();
        self.last_checked_seq = self.store.last_seq().unwrap_or(0);
        self.turn(Input::Start);
    }

    /// Handles one message from the world.
    pub fn deliver(&mut self, msg: Msg) {
        self.turn_began = Instant::now();
        match msg {
            Msg::Exited { key, exit } => {
                self.spawner.reaped(key);
                let input = self.exited(key, exit);
                self.turn(input);
            }
            Msg::StoreChanged => {
                // Our own writes notify us too; only look when the log grew
                // by more than what we wrote since the last look.
                let Ok(latest) = self.store.last_seq() else {
                    return;
                };
                let outside = latest - self.last_checked_seq > self.own_since_check as i64;
                let since = self.last_checked_seq;
                self.last_checked_seq = latest;
                self.own_since_check = 0;
                if outside {
                    if self.opts.merge.is_some() && self.approved_since(since) {
                        // A person approved work in review: the merge queue
                        // looks again (it left unapproved work out).
                        self.perform(Action::RequestMerge);
                    }
                    self.turn(Input::StoreChanged);
                }
            }
            // The merge loop ended a pass: what it landed may settle a
            // task that waited for its dependencies' work.
            Msg::Wake => self.turn(Input::Landed),
            Msg::Signal => self.turn(Input::Signal),
        }
    }

    /// Whether an approval was recorded after `seq` (a bounded read of the
    /// log's newest events).
    fn approved_since(&self, seq: i64) -> bool {
        match self.store.events(seq, 1000) {
            Ok(events) => events.iter().any(|e| e.kind == EventKind::Approved),
            Err(e) => {
                tracing::warn!(error = %e, "reading new events for approvals");
                false
            }
        }
    }

    /// Time passed: lets the core act on its deadlines.
    pub fn tick(&mut self) {
        self.turn_began = Instant::now();
        self.turn(Input::Tick);
        self.look_at_activity();
        if self
            .telemetry
            .deadline()
            .is_some_and(|t| t <= Instant::now())
        {
            self.telemetry.flush();
        }
    }

    /// Ticks only if one of the core's deadlines has come (a tick costs a
    /// look at the ready queue).
    pub fn tick_if_due(&mut self) {
        let now = self.host.now();
        if self.core.deadline(now).is_some_and(|t| t <= now) {
            self.tick();
        } else if self.activity_at.is_some_and(|t| t <= Instant::now()) {
            self.look_at_activity();
        } else if self
            .telemetry
            .deadline()
            .is_some_and(|t| t <= Instant::now())
        {
            self.telemetry.flush();
        }
    }

    /// True once the run should end.
    pub fn done(&self) -> bool {
        self.core.done()
    }

    /// How long the loop may wait for a message before a `tick`.
    pub fn wait(&self) -> Option<Duration> {
        let now = self.host.now();
        let core = self.core.deadline(now).map(|t| t.saturating_sub(now));
        let real = Instant::now();
        [
            core,
            self.telemetry
                .deadline()
                .map(|t| t.saturating_duration_since(real)),
            self.pending_since
                .map(|t| (t + RECORD_DELAY).saturating_duration_since(real)),
            self.activity_at.map(|t| t.saturating_duration_since(real)),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Writes queued events that have waited long enough (the loop calls
    /// this before it waits), and the cache's hits.
    pub fn flush(&mut self) {
        if self
            .pending_since
            .is_some_and(|t| t.elapsed() >= RECORD_DELAY)
        {
            self.flush_records();
        }
    }

    /// Writes every queued event now.
    pub fn flush_all(&mut self) {
        self.flush_records();
        if let Some(c) = self.cache.as_mut() {
            c.flush();
        }
    }

    /// Ends the run: writes what is queued, and reports.
    pub fn finish(mut self) -> Report {
        self.give_back_again();
        self.flush_all();
        self.telemetry.flush();
        let mut report = self.core.report().clone();
        if self.config.budget.run_usd.is_some() {
            let file = self.run_file();
            if let Err(e) = std::fs::remove_file(&file)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(file = %file.display(), error = %e, "removing the run's spend file");
            }
        }
        report.latency_ms = percentiles(&self.latencies);
        report.stopped = std::mem::take(&mut self.stopped);
        report
    }

    /// One input and everything it leads to, answers included.
    fn turn(&mut self, input: Input) {
        self.queue.push_back(input);
        let mut out = Vec::new();
        while let Some(input) = self.queue.pop_front() {
            let now = self.host.now();
            self.core.handle(now, input, &mut out);
            for a in out.drain(..) {
                self.perform(a);
            }
        }
        self.ended.clear();
        crate::metrics::active_agents(self.core.active_agents());
    }

    fn answer(&mut self, input: Input) {
        self.queue.push_back(input);
    }

    fn perform(&mut self, action: Action) {
        match action {
            Action::Fetch { want } => {
                let heads = self.fetch(want);
                self.answer(Input::Ready(heads));
            }
            Action::ReadMemory => {
                let m = self.host.available_memory();
                self.answer(Input::Memory(m));
            }
            Action::ReadDisk => {
                let places = [self.paths.braid_dir.clone(), self.paths.worktrees()];
                let least = places
                    .iter()
                    .filter_map(|p| Some((p.display().to_string(), self.host.free_disk(p)?)))
                    .min_by_key(|(_, free)| *free);
                self.answer(Input::Disk(least));
            }
            Action::Note(text) => tracing::warn!("{text}"),
            Action::DiskBack => {
                self.disk_full = false;
                supervise::DISK_FULL.store(false, std::sync::atomic::Ordering::SeqCst);
                self.give_back_again();
                self.keep_reserve();
            }
            Action::Claim { id, agent } => {
                let claim = Command::Claim {
                    id: Some(id.clone()),
                    assignee: agent,
                    lease_ms: self.lease_ms(),
                };
                match self.apply(claim) {
                    Ok(a) => {
                        let attempt = a.task.lease.as_ref().map_or(1, |l| l.attempt);
                        self.tokens
                            .insert(id.clone(), a.lease_token.unwrap_or_default());
                        self.claimed_gates.insert(id.clone(), a.task.gates);
                        crate::metrics::dispatched();
                        self.answer(Input::Claimed { id, attempt });
                    }
                    // Another runner took it, or it stopped being ready.
                    Err(_) => self.answer(Input::ClaimRefused { id }),
                }
            }
            Action::NextAttempt { id } => {
                let cmd = Command::NextAttempt {
                    id: id.clone(),
                    token: self.token(&id),
                    lease_ms: self.lease_ms(),
                };
                let token = self.token(&id);
                let applied = self.apply(cmd);
                if let Err(e) = &applied
                    && is_disk_full(e)
                {
                    self.unreleased.push((id.clone(), token));
                }
                let attempt = applied.ok().map(|a| a.task.lease.map_or(1, |l| l.attempt));
                self.answer(Input::Attempt { id, attempt });
            }
            Action::StartAgent {
                key,
                id,
                agent,
                attempt,
            } => self.start_agent(key, &id, &agent, attempt),
            Action::ListGates { id } => {
                let gates = self.gates_of(&id);
                self.answer(Input::Gates { id, gates });
            }
            Action::StartGate {
                key,
                id,
                gate,
                attempt,
            } => self.start_gate(key, &id, &gate, attempt),
            Action::CacheGate { key } => self.cache_gate(key),
            Action::CheckActivity { key } => {
                let active = self.activity(key);
                self.answer(Input::Activity { key, active });
            }
            Action::Signal { key, kill } => self.spawner.signal(key, kill),
            Action::Record { id, kind, payload } => self.record(id, kind, payload),
            Action::Finish {
                id,
                to,
                reason,
                refund,
                commit,
            } => self.finish_work(id, to, reason, refund, commit),
            Action::Park { id } => self.park(id),
            Action::Renew { ids } => {
                let lease_ms = self.lease_ms();
                for id in ids {
                    let renew = Command::Renew {
                        id: id.clone(),
                        token: self.token(&id),
                        lease_ms,
                    };
                    match self.store.apply(&self.opts.actor, renew) {
                        Ok(_) => {}
                        // Lost the claim (cancelled or rescued elsewhere).
                        Err(braid_store::Error::Locked(_) | braid_store::Error::Domain(_)) => {
                            self.answer(Input::Lost {
                                id,
                                cancelled: false,
                            });
                        }
                        // A passing failure (disk, busy): keep the work; the
                        // next heartbeat tries again.
                        Err(e) => {
                            tracing::warn!(task = %id, error = %braid_core::error::chain(&e), "renewing a claim");
                        }
                    }
                }
            }
            Action::CheckClaims { ids } => {
                for id in ids {
                    let Ok(t) = self.store.task(&id) else {
                        continue;
                    };
                    let token = self.tokens.get(&id);
                    let ours =
                        t.state == State::InProgress && t.lease.as_ref().map(|l| &l.token) == token;
                    if !ours {
                        self.answer(Input::Lost {
                            id,
                            cancelled: t.state == State::Cancelled,
                        });
                    }
                }
            }
            Action::Rescue => self.rescue_expired(),
            Action::RemoveWorkspace { id } => {
                self.tokens.remove(&id);
                self.claimed_gates.remove(&id);
                self.bases.remove(&id);
                if let Some(repo) = &self.paths.repo {
                    let ws = self.paths.workspace(&id);
                    if let Err(e) = braid_git::remove_worktree(repo, &ws) {
                        tracing::debug!(task = %id, error = %e, "removing a worktree");
                    }
                }
            }
            Action::RequestMerge => {
                if let Some(h) = &self.opts.merge {
                    h.requested.store(true, std::sync::atomic::Ordering::SeqCst);
                    // The merger is gone: nothing to wake.
                    let _ = h.wake.send(());
                }
            }
            Action::Probe => {
                let input = self.probe();
                self.answer(input);
            }
        }
    }

    fn lease_ms(&self) -> i64 {
        self.config.run.lease.as_millis() as i64
    }

    fn token(&self, id: &TaskId) -> String {
        self.tokens.get(id).cloned().unwrap_or_default()
    }

    fn fetch(&mut self, want: usize) -> Vec<Head> {
        let heads: Result<Vec<Head>, braid_store::Error> = if self.opts.only.is_empty() {
            self.store.ready_heads(want).map(|v| {
                v.into_iter()
                    .map(|(id, agent)| Head { id, agent })
                    .collect()
            })
        } else {
            Ok(self
                .opts
                .only
                .iter()
                .filter_map(|id| self.store.task(id).ok())
                .filter(|t| t.ready)
                .map(|t| Head {
                    id: t.id,
                    agent: t.agent,
                })
                .collect())
        };
        match heads {
            Ok(h) => {
                if self
                    .queue_metric_at
                    .is_none_or(|t| t.elapsed() >= QUEUE_METRIC_EVERY)
                {
                    self.queue_metric_at = Some(Instant::now());
                    if let Ok(health) = self.store.health() {
                        crate::metrics::queue_depth(health.ready);
                    }
                }
                h
            }
            Err(e) => {
                tracing::warn!(error = %braid_core::error::chain(&e), "reading the ready queue");
                Vec::new()
            }
        }
    }

    fn probe(&mut self) -> Input {
        let ready_waiting = if self.opts.only.is_empty() {
            self.store.ready(1).is_ok_and(|r| !r.is_empty())
        } else {
            self.opts
                .only
                .iter()
                .any(|id| self.store.task(id).is_ok_and(|t| t.ready))
        };
        let now = self.host.now();
        let wall = self.store.now_ms();
        // A run limited to some tasks waits only on their claims (another
        // runner's work elsewhere is not its business).
        let next_expiry = if self.opts.only.is_empty() {
            self.store.next_lease_expiry().ok().flatten()
        } else {
            self.opts
                .only
                .iter()
                .filter_map(|id| self.store.task(id).ok())
                .filter(|t| t.state == State::InProgress)
                .filter_map(|t| t.lease.map(|l| l.expires_at))
                .min()
        };
        let lease_expiry = next_expiry
            // A few ms past the expiry, so the lease has expired by then.
            .map(|ms| now + Duration::from_millis((ms - wall).max(0) as u64 + 5));
        Input::Idle {
            ready_waiting,
            lease_expiry,
            merge_pending: self.opts.merge.as_ref().is_some_and(MergeHook::pending),
        }
    }

    fn emit(&mut self, events: &[Event]) {
        self.own_since_check += events.len();
        for e in events {
            (self.on_event)(e);
            if let Some(cmd) = &self.config.notify {
                crate::notify::send(cmd, e);
            }
            let line = json!({
                "seq": e.seq, "at": e.at, "actor": e.actor, "kind": e.kind.as_str(),
                "task": e.task, "payload": e.payload,
            });
            self.telemetry.record(line.to_string());
        }
    }

    /// Queues an observability event (written with the next state change,
    /// or within [`RECORD_DELAY`]).
    fn record(&mut self, id: TaskId, kind: EventKind, mut payload: serde_json::Value) {
        if kind == EventKind::AgentFinished
            && let Some(extra) = self.reports.remove(&id)
            && let (Some(p), Some(e)) = (payload.as_object_mut(), extra.as_object())
        {
            p.extend(e.clone());
        }
        if kind == EventKind::GateFinished
            && let Some(left) = self.gate_left.remove(&id)
        {
            payload["leftovers"] = json!(left);
        }
        self.pending_since.get_or_insert_with(Instant::now);
        self.pending.push(Command::Record { id, kind, payload });
    }

    /// Applies a state-changing command, writing any queued observability
    /// events in the same transaction (one commit instead of two).
    fn apply(&mut self, cmd: Command) -> Result<braid_store::Applied, braid_store::Error> {
        let actor = self.opts.actor.clone();
        if !self.pending.is_empty() {
            let mut cmds = self.pending.clone();
            cmds.push(cmd.clone());
            if let Ok(mut applied) = self.store.apply_all(&actor, cmds) {
                self.pending.clear();
                self.pending_since = None;
                let last = applied.pop().expect("one result per command");
                let mut events: Vec<Event> = applied.into_iter().flat_map(|a| a.events).collect();
                events.extend(last.events.iter().cloned());
                self.emit(&events);
                return Ok(last);
            }
            // The command was refused (or a record was): keep the records,
            // and let the command report its own error.
            self.flush_records();
        }
        let r = self.store.apply(&actor, cmd);
        match &r {
            Ok(a) => {
                let events = a.events.clone();
                self.emit(&events);
            }
            Err(e) => self.check_disk_full(e),
        }
        r
    }

    /// Gives back, uncharged, the claims a full disk kept this run from
    /// giving back; one that still cannot be written is left to expire
    /// (and be rescued), and said so.
    fn give_back_again(&mut self) {
        for (id, token) in std::mem::take(&mut self.unreleased) {
            let cmd = Command::Finish {
                id: id.clone(),
                token,
                to: State::Open,
                reason: Some("given back after a full disk (not charged)".into()),
                refund_attempt: true,
            };
            if let Err(e) = self.store.apply(&self.opts.actor, cmd) {
                tracing::warn!(task = %id, error = %braid_core::error::chain(&e), "giving a claim back after a full disk; it is rescued when its lease expires");
            }
        }
    }

    /// Where a little disk space is held back for a full disk: enough to
    /// give claims back and record why, so a full disk charges no attempt.
    fn reserve_path(&self) -> PathBuf {
        self.paths.braid_dir.join("reserve")
    }

    /// Makes sure the reserve is there ([`RESERVE`] bytes, written, so the
    /// filesystem really holds them).
    fn keep_reserve(&self) {
        let path = self.reserve_path();
        if std::fs::metadata(&path).is_ok_and(|m| m.len() == RESERVE) {
            return;
        }
        if let Err(e) = std::fs::write(&path, vec![0u8; RESERVE as usize]) {
            tracing::debug!(error = %e, "keeping a disk reserve");
            // Half a reserve is worse than none: it would hide the space.
            let _ = std::fs::remove_file(&path);
        }
    }

    /// A write that failed because the disk is full stops all dispatching
    /// (once, saying where and how much is free); braid never retries it in
    /// a loop. Work running finishes, or times out.
    fn check_disk_full(&mut self, e: &braid_store::Error) {
        if self.disk_full || !is_disk_full(e) {
            return;
        }
        self.disk_full = true;
        supervise::DISK_FULL.store(true, std::sync::atomic::Ordering::SeqCst);
        // The reserve goes: its space lets claims be given back (uncharged)
        // and the end of the run be recorded.
        let freed = std::fs::remove_file(self.reserve_path()).is_ok();
        // And the middles of this run's logs (running processes' first, so
        // what they print next does not take the room back), now.
        for p in self.procs.values() {
            supervise::free_log(&p.log);
        }
        for log in &self.run_logs {
            supervise::free_log(log);
        }
        let place = self.paths.db.clone();
        let free = free_disk(&place).map_or("unknown".to_owned(), |b| format!("{} MiB", b >> 20));
        let why = format!(
            "disk full writing {} ({free} free): free some space, then run again (nothing was charged for it)",
            place.display()
        );
        tracing::warn!(reserve_freed = freed, "{why}");
        self.answer(Input::DiskFull(why));
    }

    /// Applies several commands in one transaction, with any queued
    /// observability events.
    fn apply_batch(
        &mut self,
        cmds: Vec<Command>,
    ) -> Result<Vec<braid_store::Applied>, braid_store::Error> {
        self.flush_records();
        let actor = self.opts.actor.clone();
        let r = self.store.apply_all(&actor, cmds);
        match &r {
            Ok(applied) => {
                let events: Vec<Event> = applied.iter().flat_map(|a| a.events.clone()).collect();
                self.emit(&events);
            }
            Err(e) => {
                tracing::warn!(error = %braid_core::error::chain(e), "applying the engine's commands");
            }
        }
        r
    }

    /// Writes queued events in one transaction.
    fn flush_records(&mut self) {
        self.pending_since = None;
        if self.pending.is_empty() {
            return;
        }
        let cmds = std::mem::take(&mut self.pending);
        let actor = self.opts.actor.clone();
        match self.store.apply_all(&actor, cmds.clone()) {
            Ok(applied) => {
                let events: Vec<Event> = applied.into_iter().flat_map(|a| a.events).collect();
                self.emit(&events);
            }
            Err(_) => {
                // One bad record (its task deleted, say) must not lose the rest.
                for c in cmds {
                    match self.store.apply(&actor, c) {
                        Ok(a) => self.emit(&a.events),
                        Err(e) => {
                            tracing::warn!(error = %braid_core::error::chain(&e), "recording an engine event");
                            self.check_disk_full(&e);
                        }
                    }
                }
            }
        }
    }

    /// Takes back claims whose lease expired (their holder died). Only a
    /// matching token is rescued, so a claim renewed meanwhile is left alone.
    fn rescue_expired(&mut self) {
        loop {
            let expired = match self.store.expired_leases(self.store.now_ms(), 100) {
                Ok(e) if !e.is_empty() => e,
                Ok(_) => return,
                Err(e) => {
                    tracing::warn!(error = %braid_core::error::chain(&e), "reading expired claims");
                    return;
                }
            };
            let mut rescued = 0;
            for (id, token) in expired {
                if self.apply(Command::Rescue { id, token }).is_ok() {
                    crate::metrics::rescue();
                    rescued += 1;
                }
            }
            if rescued == 0 {
                // Nothing could be taken back (another runner got there
                // first, or the store refuses writes): do not spin.
                return;
            }
        }
    }

    /// Makes the task's workspace: its git worktree, or a scratch folder.
    /// A new branch starts from its base (the target, with the unlanded
    /// work of finished dependencies merged in): answered so the attempt
    /// records it. `Made::Was`: the workspace was there already.
    fn prepare_workspace(&self, id: &TaskId, path: &std::path::Path) -> Result<Made, NotStarted> {
        let Some(repo) = &self.paths.repo else {
            return make_dir(path)
                .map(|new| if new { Made::New(None) } else { Made::Was })
                .map_err(|e| NotStarted::Workspace(format!("{}: {e}", path.display())));
        };
        let failed = |e: &dyn std::fmt::Display| {
            tracing::warn!(task = %id, workspace = %path.display(), error = %e, "preparing a workspace");
            NotStarted::Workspace(format!("{}: {e}", path.display()))
        };
        let branch = format!("braid/{id}");
        if path.join(".git").exists()
            || braid_git::rev_exists(repo, &format!("refs/heads/{branch}"))
        {
            braid_git::ensure_worktree(repo, path, &branch, "HEAD").map_err(|e| failed(&e))?;
            return Ok(Made::Was);
        }
        let mut target = self
            .config
            .merge_into
            .clone()
            .unwrap_or_else(|| "HEAD".into());
        let remote = self.config.remote.as_deref();
        if let Some(r) = remote {
            // The remote's target and every pushed task branch: work a
            // node that died pushed is continued, not started again.
            crate::remote::fetch_work(repo, r, &target).map_err(|e| failed(&e))?;
            let theirs = crate::remote::tracking(r, &branch);
            if braid_git::rev_exists(repo, &theirs) {
                braid_git::ensure_worktree(repo, path, &branch, &theirs).map_err(|e| failed(&e))?;
                return Ok(Made::Was);
            }
            target = crate::remote::tracking(r, &target);
        }
        let base = match crate::base::base_for(self.store, repo, &target, remote, id) {
            Ok(b) => b,
            Err(e @ crate::base::BaseError::Conflict { .. }) => {
                return Err(NotStarted::Base(e.to_string()));
            }
            Err(e) => return Err(failed(&e)),
        };
        braid_git::ensure_worktree(repo, path, &branch, &base.commit).map_err(|e| failed(&e))?;
        Ok(Made::New(Some(base)))
    }

    fn start_agent(&mut self, key: u64, id: &TaskId, agent_name: &str, attempt: u32) {
        let Some(agent) = self.config.agent(agent_name).cloned() else {
            return self.answer(Input::NotStarted {
                key,
                why: NotStarted::Program(format!("no agent named {agent_name}")),
            });
        };
        if let Some(why) = self.budget_spent(id, agent_name) {
            return self.answer(Input::NotStarted { key, why });
        }
        let workspace = self.paths.workspace(id);
        let (base, fresh) = match self.prepare_workspace(id, &workspace) {
            Ok(Made::New(b)) => (b, true),
            Ok(Made::Was) => (None, false),
            Err(why) => return self.answer(Input::NotStarted { key, why }),
        };
        let logs = self.paths.logs(id);
        // The task's first attempt here makes its log folder: nothing of an
        // earlier one (a question file) can be in it.
        let first_logs = match make_dir(&logs) {
            Ok(new) => new,
            Err(e) => {
                let why = format!("{}: {e}", logs.display());
                if e.raw_os_error() == Some(nix::libc::ENOSPC) {
                    self.check_disk_full(&braid_store::Error::Io {
                        path: logs.clone(),
                        source: e,
                    });
                }
                return self.answer(Input::NotStarted {
                    key,
                    why: NotStarted::Workspace(why),
                });
            }
        };
        // A retry, or a task a person answered, resumes the agent's own
        // session with only what is new (the failure, the answer).
        let resume = self.resume_of(id, &agent);
        let (template, prompt) = match &resume {
            Some((argv, message, _)) => (argv.clone(), message.clone()),
            None => {
                // Built only for agents that are told it (a command without
                // {prompt} or {prompt_file} reads the task itself, if at all).
                let prompt = if agent.command.iter().any(|a| a.contains("{prompt")) {
                    match braid_app::prompt::build(self.store, id) {
                        Ok(p) => p,
                        Err(e) => format!("Task {id}. (The task could not be read: {e}.)"),
                    }
                } else {
                    String::new()
                };
                (agent.command.clone(), prompt)
            }
        };
        let prompt_file = logs.join(format!("{attempt}-prompt.md"));
        // A prompt too large for an argument goes through stdin (the
        // adapters), or cannot be given as `{prompt}` at all.
        let mut template = template;
        let mut stdin = None;
        if prompt.len() > crate::adapter::ARG_MAX && template.iter().any(|a| a.contains("{prompt}"))
        {
            match crate::adapter::prompt_on_stdin(agent.kind, &template) {
                Some(argv) => {
                    template = argv;
                    stdin = Some(prompt_file.clone());
                }
                None => {
                    let why = format!(
                        "its prompt is {} KiB, more than one argument can hold ({} KiB): give agent {agent_name:?} the prompt as a file ({{prompt_file}} in its command) instead of {{prompt}}",
                        prompt.len() / 1024,
                        crate::adapter::ARG_MAX / 1024
                    );
                    return self.answer(Input::NotStarted {
                        key,
                        why: NotStarted::Prompt(why),
                    });
                }
            }
        }
        // Written only for agents that read it (one file fewer per task).
        if (stdin.is_some() || template.iter().any(|a| a.contains("{prompt_file}")))
            && let Err(e) = std::fs::write(&prompt_file, &prompt)
        {
            tracing::warn!(task = %id, error = %e, "writing the prompt file");
            if stdin.is_some() {
                let why = format!(
                    "the prompt file {} could not be written: {e}",
                    prompt_file.display()
                );
                return self.answer(Input::NotStarted {
                    key,
                    why: NotStarted::Workspace(why),
                });
            }
        }
        let subst = |s: &str| {
            s.replace("{prompt_file}", &prompt_file.to_string_lossy())
                .replace("{prompt}", &prompt)
                .replace("{task}", id.as_str())
                .replace("{worktree}", &workspace.to_string_lossy())
        };
        // Where the agent may leave a question for a person (any agent:
        // a plain command asks this way).
        let question = logs.join(format!("{attempt}-question.md"));
        if !first_logs
            && let Err(e) = std::fs::remove_file(&question)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(task = %id, error = %e, "removing an old question file");
        }
        let spec = Spec {
            argv: template.iter().map(|a| subst(a)).collect(),
            cwd: workspace.clone(),
            env_allow: agent.env.clone(),
            stdin,
            extra_env: vec![
                ("BRAID_TASK".into(), id.to_string()),
                ("BRAID_ATTEMPT".into(), attempt.to_string()),
                (
                    "BRAID_DB".into(),
                    self.paths.db.to_string_lossy().into_owned(),
                ),
                (
                    "BRAID_QUESTION".into(),
                    question.to_string_lossy().into_owned(),
                ),
            ],
            log: logs.join(format!("{attempt}-{agent_name}.log")),
            holds: Some(id.to_string()),
            log_max: Some(self.config.run.log_max),
        };
        // Whatever another braid left working here (a run that died, or one
        // whose lease ran out) stops before this agent starts: two agents
        // never share a workspace. A workspace made just now has nobody in
        // it (a process works in a folder that exists).
        let evicted: Vec<String> = if fresh {
            Vec::new()
        } else {
            self.spawner
                .evict(id.as_str())
                .iter()
                .map(|s| s.describe())
                .collect()
        };
        self.stopped.extend(evicted.iter().cloned());
        let session = resume.map(|(_, _, s)| s);
        let mut payload = json!({"agent": agent_name, "attempt": attempt, "workspace": workspace, "log": spec.log});
        if let Some(s) = &session {
            payload["resumed"] = json!(s);
        }
        if let Some(b) = &base {
            payload["base"] = json!({"commit": b.commit, "target": b.target, "stacked": b.stacked});
            self.bases.insert(id.clone(), b.commit.clone());
        }
        if !evicted.is_empty() {
            payload["stopped"] = json!(evicted);
        }
        let launched = self.launch(key, id, &spec, None, Some(agent_name.to_owned()));
        // The attempt records its process group and the leader's start time
        // (a recycled pid is never taken for it).
        if let Some(leader) = self.spawner.identity(key).filter(|_| launched.is_ok()) {
            payload["pgid"] = json!(leader.pid);
            payload["started"] = json!(leader.start);
        }
        self.record(id.clone(), EventKind::Dispatched, payload);
        if let Err(why) = launched {
            return self.answer(Input::NotStarted { key, why });
        }
        let reads_stream = agent.kind != crate::adapter::Kind::Command;
        if let Some(p) = self.procs.get_mut(&key) {
            p.attempt = Some(attempt);
            p.resumed = session;
            p.question = Some(question);
            if reads_stream {
                p.activity = Some((p.log_start, None));
            }
        }
        if reads_stream && self.activity_at.is_none() {
            self.activity_at = Some(Instant::now() + ACTIVITY_EVERY);
        }
        if agent.stall.is_some() {
            let content = self.worktree_content(&workspace);
            if let Some(p) = self.procs.get_mut(&key) {
                p.seen = Some((p.log_start, content));
            }
        }
        self.latencies.push(self.turn_began.elapsed());
    }

    /// Whether a budget stops this attempt: the day's or the run's stops
    /// the run's dispatching; the task's parks the task for a person.
    fn budget_spent(&mut self, id: &TaskId, agent: &str) -> Option<NotStarted> {
        let budget = self.config.budget;
        if budget.is_empty() {
            return None;
        }
        let now = self.store.now_ms();
        match budget.spent(self.store, Some(id), self.run_spent, now) {
            Ok(None) => None,
            Ok(Some(spent)) => {
                let why = spent.to_string();
                let halt = spent.budget != "task_usd";
                if !halt {
                    self.asked.insert(
                        id.clone(),
                        braid_app::ops::Attention {
                            question: format!(
                                "{why}. Raise the budget and answer this task (`braid answer {id} \"go on\"`) to let it try again, or cancel it."
                            ),
                            reason: "budget",
                            agent: Some(agent.to_owned()),
                            session: self.last_session(id, agent),
                        },
                    );
                }
                Some(NotStarted::Budget { why, halt })
            }
            Err(e) => {
                // Unknown spend is not spent: the ledger is read again at
                // the next attempt.
                tracing::warn!(task = %id, error = %braid_core::error::chain(&e), "reading the cost ledger for the budget");
                None
            }
        }
    }

    /// The session `agent` last reported for `id` (from the ledger).
    fn last_session(&self, id: &TaskId, agent: &str) -> Option<String> {
        let rows = self.store.task_usage(id).ok()?;
        rows.iter()
            .rev()
            .filter(|r| r.agent == agent)
            .find_map(|r| r.session.clone())
    }

    /// The argv template, message and session that resume `agent`'s
    /// session on `id`, when there is one to resume and something new to
    /// tell it.
    fn resume_of(
        &self,
        id: &TaskId,
        agent: &crate::config::Agent,
    ) -> Option<(Vec<String>, String, String)> {
        if !agent.resume || agent.kind == crate::adapter::Kind::Command {
            return None;
        }
        let session = self.last_session(id, &agent.name)?;
        let events = self.store.task_events(id, 100).ok()?;
        // Only a session of this agent's latest run on the task (a
        // failover agent's run in between starts it afresh).
        let last_run = events
            .iter()
            .rev()
            .find(|e| e.kind == EventKind::AgentFinished)?;
        if last_run.payload["agent"] != agent.name.as_str() {
            return None;
        }
        let message = braid_app::prompt::resume_message(&events)?;
        let argv = crate::adapter::resume_argv(agent.kind, &agent.command, &session)?;
        Some((argv, message, session))
    }

    /// Looks at each running agent's new output for its latest action and
    /// records those that changed (throttled to one look per
    /// [`ACTIVITY_EVERY`]; only the last [`ACTIVITY_READ`] bytes of new
    /// output are read).
    fn look_at_activity(&mut self) {
        if self.activity_at.is_none_or(|t| t > Instant::now()) {
            return;
        }
        self.activity_at = None;
        let mut found = Vec::new();
        let mut any = false;
        for p in self.procs.values_mut() {
            let (Some((offset, last)), Some(agent)) = (p.activity.as_mut(), p.agent.as_deref())
            else {
                continue;
            };
            any = true;
            let Some(a) = self.config.agent(agent) else {
                continue;
            };
            let (action, read_to) = read_action(a.kind, &p.log, *offset);
            *offset = read_to;
            if let Some(action) = action
                && last.as_ref() != Some(&action)
            {
                *last = Some(action.clone());
                found.push((p.task.clone(), agent.to_owned(), p.attempt, action));
            }
        }
        for (task, agent, attempt, action) in found {
            self.record(
                task,
                EventKind::Activity,
                json!({"agent": agent, "attempt": attempt, "action": action}),
            );
        }
        if any {
            self.activity_at = Some(Instant::now() + ACTIVITY_EVERY);
        }
    }

    /// Parks a task for a person: the claim ends with the task deferred,
    /// labelled `needs-human`, and an `attention` event saying what was
    /// asked — one transaction. The attempt is not charged.
    fn park(&mut self, id: TaskId) {
        let attention = self
            .asked
            .remove(&id)
            .unwrap_or_else(|| braid_app::ops::Attention {
                question: "The agent stopped to ask something; its log has the question.".into(),
                reason: "question",
                ..Default::default()
            });
        let labelled = self
            .store
            .task(&id)
            .is_ok_and(|t| t.labels.iter().any(|l| l == braid_app::ops::NEEDS_HUMAN));
        let actor = self.opts.actor.clone();
        let mut cmds = vec![Command::Finish {
            id: id.clone(),
            token: self.token(&id),
            to: State::Deferred,
            reason: Some(format!("waits for a person ({})", attention.reason)),
            refund_attempt: true,
        }];
        match braid_app::ops::attention_commands(&actor, &id, labelled, &attention) {
            Ok(c) => cmds.extend(c),
            Err(e) => {
                tracing::warn!(task = %id, error = %braid_core::error::chain(&e), "recording a question");
            }
        }
        let ok = self.apply_batch(cmds).is_ok();
        self.content.remove(&id);
        self.tokens.remove(&id);
        self.claimed_gates.remove(&id);
        self.answer(Input::Finished {
            id,
            to: State::Deferred,
            ok,
        });
    }

    /// Writes what this run has spent where the board reads it.
    fn publish_run_spend(&self) {
        let spend = braid_app::budget::RunSpend {
            pid: std::process::id(),
            spent_usd: self.run_spent,
        };
        let file = self.run_file();
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(self.paths.runs())?;
            braid_store::fsx::write_replace(&file, serde_json::to_string(&spend)?.as_bytes())
        };
        if let Err(e) = write() {
            tracing::warn!(file = %file.display(), error = %e, "writing the run's spend");
        }
    }

    fn run_file(&self) -> PathBuf {
        self.paths
            .runs()
            .join(format!("{}.json", std::process::id()))
    }

    fn spawn(
        &mut self,
        key: u64,
        task: &TaskId,
        spec: &Spec,
        cache_key: Option<(String, String)>,
        agent: Option<String>,
    ) {
        if let Err(why) = self.launch(key, task, spec, cache_key, agent) {
            self.answer(Input::NotStarted { key, why });
        }
    }

    /// Starts a process; `Err` says why it could not start (the caller
    /// answers the core).
    fn launch(
        &mut self,
        key: u64,
        task: &TaskId,
        spec: &Spec,
        cache_key: Option<(String, String)>,
        agent: Option<String>,
    ) -> Result<(), NotStarted> {
        let log_start = supervise::log_len(&spec.log);
        if self.run_logs.len() == RUN_LOGS {
            self.run_logs.pop_front();
        }
        self.run_logs.push_back(spec.log.clone());
        self.procs.insert(
            key,
            Proc {
                task: task.clone(),
                log: spec.log.clone(),
                log_start,
                cache_key,
                agent,
                started: Instant::now(),
                seen: None,
                attempt: None,
                activity: None,
                resumed: None,
                question: None,
            },
        );
        if let Err(e) = self.spawner.spawn(key, spec) {
            self.procs.remove(&key);
            if e.raw_os_error() == Some(nix::libc::ENOSPC) {
                // Not the program's fault: its log could not be made.
                let why = format!("disk full making {}: {e}", spec.log.display());
                self.check_disk_full(&braid_store::Error::Io {
                    path: spec.log.clone(),
                    source: e,
                });
                return Err(NotStarted::Workspace(why));
            }
            let program = spec.argv.first().map(String::as_str).unwrap_or("");
            return Err(NotStarted::Program(format!("{program}: {e}")));
        }
        Ok(())
    }

    /// The gates `id` must pass: its own (by name), else all of them. The
    /// workspace's content identity for the cache is taken once here.
    fn gates_of(&mut self, id: &TaskId) -> Vec<String> {
        // A retry reads them again: a person may have changed them.
        let wanted: Vec<String> = match self.claimed_gates.remove(id) {
            Some(g) => g,
            None => self.store.task(id).map(|t| t.gates).unwrap_or_default(),
        };
        let gates: Vec<String> = self
            .config
            .gates
            .iter()
            .filter(|g| wanted.is_empty() || wanted.contains(&g.name))
            .map(|g| g.name.clone())
            .collect();
        self.content.remove(id);
        if !gates.is_empty()
            && self.cache.is_some()
            && let Ok(c) = crate::cache::workspace_identity(&self.paths.workspace(id))
        {
            self.content.insert(id.clone(), c);
        }
        gates
    }

    fn gate(&self, name: &str) -> Option<Gate> {
        self.config.gates.iter().find(|g| g.name == name).cloned()
    }

    fn start_gate(&mut self, key: u64, id: &TaskId, name: &str, attempt: u32) {
        let Some(gate) = self.gate(name) else {
            return self.answer(Input::NotStarted {
                key,
                why: NotStarted::Program(format!("no gate named {name}")),
            });
        };
        let cache_key = self
            .content
            .get(id)
            .map(|c| crate::cache::gate_key(&gate, c));
        if let (Some(k), Some(cache)) = (&cache_key, &self.cache)
            && let Some(hit) = cache.lookup(k)
        {
            crate::metrics::gate(Duration::ZERO, true);
            return self.answer(Input::Exited {
                key,
                exit: Exit::Code(0),
                tail: String::new(),
                rate_limited: None,
                cached: Some(hit.duration_ms),
                unfit: None,
                asks: false,
            });
        }
        let spec = Spec {
            argv: gate.command.clone(),
            cwd: self.paths.workspace(id),
            env_allow: Some(gate.env.clone()),
            extra_env: Vec::new(),
            log: self
                .paths
                .logs(id)
                .join(format!("{attempt}-gate-{}.log", gate.name)),
            holds: Some(id.to_string()),
            stdin: None,
            log_max: Some(self.config.run.log_max),
        };
        self.spawn(
            key,
            id,
            &spec,
            cache_key.map(|k| (name.to_owned(), k)),
            None,
        );
    }

    fn cache_gate(&mut self, key: u64) {
        let Some(p) = self.ended.get(&key) else {
            return;
        };
        let (Some((gate, k)), Some(cache)) = (&p.cache_key, self.cache.as_mut()) else {
            return;
        };
        let result = crate::cache::CachedResult {
            gate: gate.clone(),
            duration_ms: p.started.elapsed().as_millis() as u64,
            at: braid_core::clock::now_ms(),
            tail: supervise::tail_since(&p.log, p.log_start, 1024),
        };
        if let Err(e) = cache.store(k, &result) {
            tracing::warn!(gate = %gate, error = %e, "keeping a gate's result in the cache");
        }
    }

    /// What the core needs to hear of an exit: the end of a failed
    /// process's own output, and, for an agent, whether it says it hit a
    /// rate limit.
    fn exited(&mut self, key: u64, exit: Exit) -> Input {
        let proc = self.procs.remove(&key);
        // A process that failed on a full disk: say so before the core
        // judges the failure (its output could not be written).
        if !exit.success()
            && let Some(p) = &proc
            && free_disk(&p.log).is_some_and(|free| free < RESERVE)
        {
            let full = std::io::Error::from_raw_os_error(nix::libc::ENOSPC);
            self.check_disk_full(&braid_store::Error::Io {
                path: p.log.clone(),
                source: full,
            });
        }
        let left = self.spawner.leftovers(key);
        if let Some(p) = &proc
            && !left.is_empty()
        {
            tracing::warn!(task = %p.task, stopped = ?left, "stopped processes an attempt left running");
            if p.agent.is_some() {
                let r = self
                    .reports
                    .entry(p.task.clone())
                    .or_insert_with(|| json!({}));
                r["leftovers"] = json!(left);
            } else {
                self.gate_left.insert(p.task.clone(), left);
            }
        }
        let unfit = match &proc {
            Some(Proc {
                agent: Some(agent),
                task,
                ..
            }) if exit.success() => self.unfit(task, agent),
            _ => None,
        };
        // What an agent CLI's structured output said: its usage goes into
        // the attempt's `agent_finished` event (and so the ledger), and a
        // rate limit it reports is one, whatever the text says.
        let report = proc.as_ref().and_then(|p| {
            let agent = self.config.agent(p.agent.as_deref()?)?;
            crate::adapter::read(agent.kind, &p.log, p.log_start).map(|r| (agent.clone(), r))
        });
        let mut asks = false;
        if let Some(p) = &proc
            && let Some(q) = p.question.as_deref().and_then(read_question)
        {
            self.asked.insert(
                p.task.clone(),
                braid_app::ops::Attention {
                    question: q,
                    reason: "question",
                    agent: p.agent.clone(),
                    session: report.as_ref().and_then(|(_, r)| r.session.clone()),
                },
            );
            asks = true;
        }
        let report = report.map(|(agent, mut r)| {
            if r.model.is_none() {
                r.model = agent.model.clone();
            }
            if let Some(p) = &proc {
                self.own_usage(&p.task, p.resumed.as_deref(), &agent, &mut r);
            }
            (agent.cooldown, r)
        });
        if let (Some(p), Some((_, r))) = (&proc, &report) {
            let mut usage = json!({"usage": r.usage_json()});
            if let Some(a) = p.attempt {
                usage["attempt"] = json!(a);
            }
            if !r.denials.is_empty() {
                usage["denied"] = json!(r.denials);
            }
            if let Some(e) = &r.error {
                usage["error"] = json!(e);
            }
            if let Some(m) = &r.final_message {
                usage["final_message"] = json!(crate::adapter::clip(m, 2000));
            }
            crate::metrics::agent_usage(p.agent.as_deref().unwrap_or(""), r);
            self.reports.insert(p.task.clone(), usage);
            if let Some(c) = r.cost_usd {
                self.run_spent += c;
                if self.config.budget.run_usd.is_some() {
                    self.publish_run_spend();
                }
            }
            // An agent that stopped to ask, leaving no work: a person
            // answers (the rules: Report::asks).
            if !asks
                && r.asks(true).is_some()
                && let Some((reason, q)) = r.asks(self.has_no_work(&p.task))
            {
                self.asked.insert(
                    p.task.clone(),
                    braid_app::ops::Attention {
                        question: q,
                        reason,
                        agent: p.agent.clone(),
                        session: r.session.clone(),
                    },
                );
                asks = true;
            }
        }
        let (tail, rate_limited) = match (&proc, exit.success()) {
            (Some(p), false) => {
                let tail = supervise::tail_since(&p.log, p.log_start, self.config.run.failure_tail);
                let rate = match &report {
                    Some((cooldown, r)) if r.rate_limited => {
                        crate::metrics::cooldown(p.agent.as_deref().unwrap_or(""));
                        Some(*cooldown)
                    }
                    _ => p
                        .agent
                        .as_deref()
                        .and_then(|a| self.rate_limited(a, &p.log, p.log_start)),
                };
                (tail, rate)
            }
            _ => (String::new(), None),
        };
        if let Some(p) = proc {
            if p.agent.is_none() {
                crate::metrics::gate(p.started.elapsed(), false);
            }
            self.ended.insert(key, p);
        }
        Input::Exited {
            key,
            exit,
            tail,
            rate_limited,
            cached: None,
            unfit,
            asks,
        }
    }

    /// Makes `r` this attempt's own usage, priced: Codex reports a resumed
    /// thread's running total, so what the session's earlier attempts
    /// reported is taken off; a CLI that reports no cost is priced from
    /// `[prices]` (marked `cost_source = "prices"`).
    fn own_usage(
        &self,
        id: &TaskId,
        resumed: Option<&str>,
        agent: &crate::config::Agent,
        r: &mut crate::adapter::Report,
    ) {
        if agent.kind == crate::adapter::Kind::Codex
            && let Some(session) = resumed
            && r.session.as_deref() == Some(session)
            && let Ok(rows) = self.store.task_usage(id)
        {
            for row in rows
                .iter()
                .filter(|x| x.session.as_deref() == Some(session))
            {
                let sub = |v: &mut u64, by: i64| *v = v.saturating_sub(by.max(0) as u64);
                sub(&mut r.input_tokens, row.input_tokens);
                sub(&mut r.output_tokens, row.output_tokens);
                sub(&mut r.cache_read_tokens, row.cache_read_tokens);
                sub(&mut r.cache_write_tokens, row.cache_write_tokens);
            }
        }
        if let Some(price) = r.model.as_deref().and_then(|m| self.config.price(m)) {
            r.priced = r.price(&price);
        }
    }

    /// Why an agent that exited 0 has not done its work: it must leave work
    /// on its branch (unless its config allows an empty exit), and a task
    /// resolving a merge conflict must hold both sides of it.
    fn unfit(&self, id: &TaskId, agent: &str) -> Option<String> {
        let allow_empty = self.config.agent(agent).is_some_and(|a| a.allow_empty);
        if !allow_empty && self.has_no_work(id) {
            return Some("made no changes: exit 0 with no commit and no diff".into());
        }
        self.unresolved(id)
    }

    /// For a task resolving a merge conflict (labelled `merge-conflict`):
    /// which side of the conflict its branch does not contain, checked
    /// with git against the commits pinned when the task was made (the
    /// conflicting branch's tip, and the target as it was). Committing
    /// over the conflict without merging is not resolving it.
    fn unresolved(&self, id: &TaskId) -> Option<String> {
        let repo = self.paths.repo.as_ref()?;
        let task = self.store.task(id).ok()?;
        if !task
            .labels
            .iter()
            .any(|l| l == braid_app::ops::MERGE_CONFLICT)
        {
            return None;
        }
        let ws = self.paths.workspace(id);
        let check = || -> Result<Option<String>, braid_git::Error> {
            let head = braid_git::rev_parse(&ws, "HEAD")?;
            for (side, commit) in braid_git::pins(repo, &crate::integrate::resolves_pin(id))? {
                if !braid_git::is_ancestor(repo, &commit, &head)? {
                    let name = match side.as_str() {
                        "target" => self.config.merge_into.as_deref().unwrap_or("the target"),
                        _ => "the conflicting branch",
                    };
                    return Ok(Some(format!(
                        "did not resolve the conflict: its branch does not contain {name} at {} \
                         (merge it with `git merge {}`, settle the conflicts, and commit the merge)",
                        &commit[..commit.len().min(10)],
                        &commit[..commit.len().min(10)],
                    )));
                }
            }
            Ok(None)
        };
        check().unwrap_or_else(|e| {
            // Unknown is not unresolved: the merge run checks again.
            tracing::warn!(task = %id, error = %e, "checking a resolve task's branch");
            None
        })
    }

    /// True when a task's worktree holds no work: no commit of its own (its
    /// HEAD is already in the target, or the repository's HEAD without a
    /// target) and no uncommitted change. Work an earlier attempt left
    /// counts: the gates judge it. Outside git there is nothing to tell by.
    fn has_no_work(&self, id: &TaskId) -> bool {
        let Some(repo) = &self.paths.repo else {
            return false;
        };
        let ws = self.paths.workspace(id);
        let target = self.config.merge_into.as_deref().unwrap_or("HEAD");
        // Where its branch started, as its first attempt recorded it: a
        // base holding its dependencies' work (or the remote's target) is
        // not work of its own.
        let started = self.bases.get(id).cloned().or_else(|| {
            crate::base::recorded(self.store, id)
                .ok()
                .flatten()
                .and_then(|b| b["commit"].as_str().map(str::to_owned))
        });
        let check = || -> Result<bool, braid_git::Error> {
            let head = braid_git::rev_parse(&ws, "HEAD")?;
            let base = braid_git::rev_parse(repo, target)?;
            let own_commits = !braid_git::is_ancestor(repo, &head, &base)?
                && !started
                    .as_deref()
                    .map(|s| braid_git::is_ancestor(repo, &head, s))
                    .transpose()?
                    .unwrap_or(false);
            let (_, dirty) = braid_git::content_identity(&ws)?;
            Ok(!own_commits && dirty.is_empty())
        };
        match check() {
            Ok(empty) => empty,
            Err(e) => {
                // Unknown is not empty: the gates still judge the work.
                tracing::warn!(task = %id, error = %e, "telling whether an agent changed anything");
                false
            }
        }
    }

    /// What a git worktree holds (HEAD's tree and any uncommitted change),
    /// hashed; `None` outside git or when git cannot tell.
    fn worktree_content(&self, ws: &std::path::Path) -> Option<blake3::Hash> {
        self.paths.repo.as_ref()?;
        match braid_git::content_identity(ws) {
            Ok((tree, dirty)) => {
                let mut h = blake3::Hasher::new();
                h.update(tree.as_bytes());
                h.update(&dirty);
                Some(h.finalize())
            }
            Err(e) => {
                tracing::debug!(workspace = %ws.display(), error = %e, "reading a worktree's content");
                None
            }
        }
    }

    /// Whether agent `key` wrote output or changed its worktree since the
    /// last look (a stall check).
    fn activity(&mut self, key: u64) -> bool {
        let Some(p) = self.procs.get(&key) else {
            return true;
        };
        let len = supervise::log_len(&p.log);
        let content = self.worktree_content(&self.paths.workspace(&p.task));
        let Some(p) = self.procs.get_mut(&key) else {
            return true;
        };
        let before = p.seen.replace((len, content));
        match before {
            Some((l, c)) => l != len || (content.is_some() && c != content),
            None => true,
        }
    }

    /// When the agent's output matches one of its rate-limit patterns: how
    /// long it should rest.
    fn rate_limited(&self, agent: &str, log: &std::path::Path, from: u64) -> Option<Duration> {
        let a = self.config.agent(agent)?;
        if a.rate_limit.is_empty() {
            return None;
        }
        let text = supervise::tail_since(log, from, RATE_LIMIT_SCAN);
        for rl in &a.rate_limit {
            if let Some(c) = rl.pattern.captures(&text) {
                let wait = c
                    .name("retry_after")
                    .and_then(|m| m.as_str().trim().parse::<u64>().ok())
                    .map(Duration::from_secs)
                    .or_else(|| c.name("reset").and_then(|m| until_clock(m.as_str())))
                    .unwrap_or(a.cooldown);
                crate::metrics::cooldown(agent);
                return Some(wait);
            }
        }
        None
    }

    fn finish_work(&mut self, id: TaskId, to: State, reason: String, refund: bool, commit: bool) {
        if commit && let Some(_repo) = &self.paths.repo {
            let title = self.store.task(&id).map(|t| t.title).unwrap_or_default();
            let ws = self.paths.workspace(&id);
            if let Err(e) = braid_git::commit_all(&ws, &format!("{id}: {title}")) {
                return self.answer(Input::CommitFailed {
                    id,
                    error: e.to_string(),
                });
            }
        }
        let mut reason = reason;
        if commit && let (Some(repo), Some(remote)) = (&self.paths.repo, &self.config.remote) {
            // Shared: any node may merge it, or continue it.
            let branch = format!("braid/{id}");
            match crate::remote::push_branch(repo, remote, &branch) {
                Ok(braid_git::Pushed::Done) => reason.push_str(&format!("; pushed to {remote}")),
                Ok(braid_git::Pushed::Rejected(why)) => {
                    tracing::warn!(task = %id, %remote, %why, "the remote refused the task's branch");
                    reason.push_str(&format!(
                        "; {remote} refused its branch ({why}); not forced"
                    ));
                }
                Err(e) => {
                    tracing::warn!(task = %id, %remote, error = %e, "pushing the task's branch");
                    reason.push_str(&format!("; not pushed to {remote}: {e}"));
                }
            }
        }
        let cmd = Command::Finish {
            id: id.clone(),
            token: self.token(&id),
            to,
            reason: Some(reason.clone()),
            refund_attempt: refund,
        };
        let token = self.token(&id);
        let result = self.apply(cmd);
        if let Err(e) = &result
            && to == State::Open
            && is_disk_full(e)
        {
            self.unreleased.push((id.clone(), token));
        }
        let ok = result.is_ok();
        if ok && to == State::Failed {
            self.escalate_failed_resolution(&id, &reason);
        }
        self.content.remove(&id);
        self.tokens.remove(&id);
        self.claimed_gates.remove(&id);
        self.answer(Input::Finished { id, to, ok });
    }
}

impl<S: Spawner, H: Host> Runner<'_, S, H> {
    /// A task resolving a merge conflict that spent its attempts goes to a
    /// person (the task it unblocks waits on it): braid makes no other
    /// resolve task for the same pair.
    fn escalate_failed_resolution(&mut self, id: &TaskId, reason: &str) {
        let resolving = self
            .store
            .task(id)
            .is_ok_and(|t| t.labels.iter().any(|l| l == braid_app::ops::MERGE_CONFLICT));
        if !resolving {
            return;
        }
        let why = format!(
            "Needs a person: this conflict was not resolved ({reason}). braid will not make another \
             resolve task for it. Resolve it on this task's branch and land it, or cancel this task \
             and settle the conflict by hand; then remove the needs-human label."
        );
        let actor = self.opts.actor.clone();
        match braid_app::ops::escalate(self.store, &actor, id, &why) {
            // Its events reach the run's output like any other.
            Ok(events) => self.emit(&events),
            Err(e) => {
                tracing::warn!(task = %id, error = %braid_core::error::chain(&e), "handing a failed resolution to a person");
            }
        }
    }
}

/// The engine on the real machine: processes through the [`Supervisor`],
/// time from `Instant`, memory from `/proc`.
pub struct Engine<'a> {
    runner: Runner<'a, Supervisor, RealHost>,
    tx: Sender<Msg>,
    rx: Receiver<Msg>,
}

impl<'a> Engine<'a> {
    pub fn new(
        store: &'a dyn Store,
        config: Config,
        paths: Paths,
        opts: RunOptions,
        on_event: Box<dyn FnMut(&Event) + 'a>,
    ) -> Engine<'a> {
        let (tx, rx) = mpsc::channel();
        let exits = tx.clone();
        let registry = supervise::Registry::new(paths.procs());
        // A braid that died (kill -9, a crash) left its agents and gates
        // working: they stop before this run starts any.
        let orphans: Vec<String> = registry
            .sweep_orphans()
            .iter()
            .map(|s| s.describe())
            .collect();
        let supervisor = Supervisor::new(Arc::new(move |key, exit| {
            // The engine is gone: nobody needs to hear of it.
            let _ = exits.send(Msg::Exited { key, exit });
        }))
        .with_registry(registry);
        let mut seed = [0u8; 8];
        if let Err(e) = getrandom::fill(&mut seed) {
            tracing::debug!(error = %e, "no OS random source; the backoff jitter is fixed");
        }
        let runner = Runner::new(
            store,
            config,
            paths,
            opts,
            supervisor,
            RealHost::default(),
            u64::from_le_bytes(seed),
            on_event,
        );
        let mut runner = runner;
        runner.stopped = orphans;
        Engine { runner, tx, rx }
    }

    /// A handle that wakes this engine from another thread.
    pub fn waker(&self) -> Waker {
        Waker(self.tx.clone())
    }

    /// Runs until nothing is running and nothing can start (or, with
    /// `follow`, until a signal).
    pub fn run(mut self) -> Result<Report, braid_store::Error> {
        self.watch()?;
        let runner = &mut self.runner;
        runner.start();
        while !runner.done() {
            // Queued events are written before we wait, so the log is never
            // behind by more than one turn of the loop.
            runner.flush();
            let msg = match runner.wait() {
                Some(w) => match self.rx.recv_timeout(w) {
                    Ok(m) => Some(m),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                },
                None => match self.rx.recv() {
                    Ok(m) => Some(m),
                    Err(_) => break,
                },
            };
            match msg {
                Some(m) => {
                    runner.deliver(m);
                    // Take whatever else arrived meanwhile before the timers.
                    while let Ok(m) = self.rx.try_recv() {
                        runner.deliver(m);
                    }
                    runner.tick_if_due();
                }
                // The wait ran out: a deadline came (a cooldown or backoff
                // that was due drops out of the core's next deadline).
                None => runner.tick(),
            }
        }
        Ok(self.runner.finish())
    }

    /// Wakes the loop on every committed write (any process, any node) and
    /// on SIGINT/SIGTERM.
    fn watch(&self) -> Result<(), braid_store::Error> {
        let tx = self.tx.clone();
        self.runner
            .store
            .changes()?
            .forward("braid-changes", move || tx.send(Msg::StoreChanged).is_ok())
            .map_err(|e| braid_store::Error::backend_from("starting the change feed", e))?;
        let tx = self.tx.clone();
        let mut signals = signal_hook::iterator::Signals::new([
            signal_hook::consts::SIGINT,
            signal_hook::consts::SIGTERM,
        ])
        .map_err(|e| braid_store::Error::backend_from("listening for signals", e))?;
        std::thread::Builder::new()
            .name("braid-signals".into())
            .spawn(move || {
                for _ in signals.forever() {
                    if tx.send(Msg::Signal).is_err() {
                        break;
                    }
                }
            })
            .map_err(|e| braid_store::Error::backend_from("listening for signals", e))?;
        Ok(())
    }
}

fn percentiles(samples: &[Duration]) -> Option<(f64, f64)> {
    if samples.is_empty() {
        return None;
    }
    let mut v: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    v.sort_by(|a, b| a.total_cmp(b));
    let q = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    Some((q(0.5), q(0.99)))
}

/// Time until a wall-clock time like `3pm`, `3:30 pm` or `15:30` (local),
/// today or tomorrow.
pub fn until_clock(s: &str) -> Option<Duration> {
    let t = s.trim().to_ascii_lowercase().replace(' ', "");
    let (body, pm, am) = if let Some(b) = t.strip_suffix("pm") {
        (b.to_owned(), true, false)
    } else if let Some(b) = t.strip_suffix("am") {
        (b.to_owned(), false, true)
    } else {
        (t.clone(), false, false)
    };
    // Agent output is untrusted: anything out of range is not a time.
    let (h, m) = match body.split_once(':') {
        Some((h, m)) => (h.parse::<u8>().ok()?, m.parse::<u8>().ok()?),
        None => (body.parse::<u8>().ok()?, 0),
    };
    if m > 59 || ((pm || am) && !(1..=12).contains(&h)) || h > 23 {
        return None;
    }
    let h = match (pm, am, h) {
        (true, _, 12) => 12,
        (true, _, h) => h + 12,
        (_, true, 12) => 0,
        (_, _, h) => h,
    } as i8;
    let m = m as i8;
    let now = jiff::ZonedDateTime::now();
    let today = now
        .date()
        .at(h, m, 0, 0)
        .to_zoned_datetime(now.time_zone().clone())
        .ok()?;
    let target = if today > now {
        today
    } else {
        today.checked_add(jiff::Span::new().days(1)).ok()?
    };
    let secs = (target.timestamp().as_second() - now.timestamp().as_second()).max(0) as u64;
    Some(Duration::from_secs(secs))
}

/// The latest action in `log` from byte `from` (reading at most the last
/// [`ACTIVITY_READ`] bytes of what is new), and where the next look
/// starts: after the last whole line read.
fn read_action(
    kind: crate::adapter::Kind,
    log: &std::path::Path,
    from: u64,
) -> (Option<String>, u64) {
    use std::io::{Read, Seek, SeekFrom};
    let len = supervise::log_len(log);
    if len <= from {
        return (None, from);
    }
    let start = from.max(len.saturating_sub(ACTIVITY_READ));
    let mut buf = Vec::new();
    let read = std::fs::File::open(log).and_then(|mut f| {
        f.seek(SeekFrom::Start(start))?;
        f.take(len - start).read_to_end(&mut buf)
    });
    if read.is_err() {
        return (None, from);
    }
    let Some(end) = buf.iter().rposition(|&b| b == b'\n') else {
        // No whole line yet: a long one is still being written.
        return (
            None,
            if len - start >= ACTIVITY_READ {
                len
            } else {
                from
            },
        );
    };
    (
        crate::adapter::latest_action(kind, &buf[..end]),
        start + end as u64 + 1,
    )
}

/// What an agent wrote to `$BRAID_QUESTION`, when it wrote something (at
/// most 16 KiB of it are read).
fn read_question(path: &std::path::Path) -> Option<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)
        .ok()?
        .take(16 << 10)
        .read_to_string(&mut text)
        .ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

/// What preparing a workspace did.
enum Made {
    /// Made it now (with the base a new branch started from).
    New(Option<crate::base::Base>),
    /// It was there already.
    Was,
}

/// Makes folder `path` (and its parents); `true` when it was not there.
fn make_dir(path: &std::path::Path) -> std::io::Result<bool> {
    match std::fs::create_dir(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(path).map(|()| true)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_times_parse() {
        for s in ["3pm", "3:30 pm", "15:30", "12am", "9"] {
            let d = until_clock(s).unwrap_or_else(|| panic!("{s}"));
            assert!(d <= Duration::from_secs(86_400), "{s}: {d:?}");
        }
        assert!(until_clock("soon").is_none());
    }
}
