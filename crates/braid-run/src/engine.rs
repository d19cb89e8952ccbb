//! The scheduler: one loop owns all dispatch state and reacts to messages —
//! a process exited, the database changed (OS file notification), a signal
//! arrived — and to timers it computes itself (process timeouts, retry
//! backoffs, cooldowns, lease heartbeats). Nothing polls: between events the
//! loop blocks on its channel until the earliest timer.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::{Duration, Instant};

use braid_core::{Event, EventKind, State, TaskId};
use braid_store::{Command, Store};
use serde_json::json;

pub use braid_app::Paths;

use crate::config::{Agent, Config, Gate};
use crate::supervise::{self, Exit, Spec};
use crate::telemetry::Telemetry;

/// Bytes of an agent's log scanned for rate-limit messages.
const RATE_LIMIT_SCAN: usize = 64 * 1024;
/// Re-check available memory this often while below the floor (the OS does
/// not notify when memory comes back).
const MEMORY_RECHECK: Duration = Duration::from_secs(1);

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
    pub requested: std::sync::Arc<std::sync::atomic::AtomicBool>,
    pub active: std::sync::Arc<std::sync::atomic::AtomicBool>,
    pub wake: Sender<()>,
}

impl MergeHook {
    fn pending(&self) -> bool {
        use std::sync::atomic::Ordering::SeqCst;
        self.requested.load(SeqCst) || self.active.load(SeqCst)
    }
}

/// Wakes a running engine from another thread (it then looks at the store
/// and its hooks again).
#[derive(Clone, Debug)]
pub struct Waker(Sender<Msg>);

impl Waker {
    pub fn wake(&self) {
        let _ = self.0.send(Msg::StoreChanged);
    }
}

/// How a run ended.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    /// Dispatch latency in ms (p50, p99): from the moment a start became
    /// possible (a slot freed, work finished, the store changed) to the
    /// agent's process being spawned.
    pub latency_ms: Option<(f64, f64)>,
    pub dispatched: usize,
    pub review: usize,
    pub done: usize,
    pub failed: usize,
    pub released: usize,
    pub interrupted: bool,
}

impl Report {
    pub fn exit_code(&self) -> i32 {
        if self.failed > 0 || self.interrupted {
            1
        } else {
            0
        }
    }
}

#[derive(Debug)]
enum Msg {
    Exited { key: u64, exit: Exit },
    StoreChanged,
    Signal,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum ProcKind {
    Agent(String),
    Gate(String),
}

struct Proc {
    task: TaskId,
    kind: ProcKind,
    /// For gates: the result cache key, stored when the gate passes.
    cache_key: Option<String>,
    /// Where this process's output starts in its (appended) log.
    log_start: u64,
    pgid: u32,
    started: Instant,
    deadline: Instant,
    killed_at: Option<Instant>,
    log: PathBuf,
}

struct Work {
    token: String,
    attempt: u32,
    agent: String,
    workspace: PathBuf,
    gates_pending: usize,
    failure: Option<(String, String)>,
    retry_at: Option<Instant>,
    /// The workspace's content identity, computed once per gate round.
    content: Option<String>,
}

pub struct Engine<'a> {
    store: &'a dyn Store,
    config: Config,
    paths: Paths,
    opts: RunOptions,
    on_event: Box<dyn FnMut(&Event) + 'a>,
    tx: Sender<Msg>,
    rx: Receiver<Msg>,
    works: HashMap<TaskId, Work>,
    procs: HashMap<u64, Proc>,
    gate_queue: VecDeque<(TaskId, Gate)>,
    busy: HashMap<String, usize>,
    cooldown: HashMap<String, Instant>,
    next_key: u64,
    stopping: Option<Instant>,
    memory_wait: Option<Instant>,
    next_heartbeat: Instant,
    /// When the earliest lease held by someone else expires (ms since epoch).
    lease_timer: Option<i64>,
    telemetry: Telemetry,
    cache: Option<crate::cache::Cache>,
    /// Observability events waiting to be written in one batch.
    pending: Vec<Command>,
    /// The last seq this run wrote.
    last_own_seq: i64,
    /// The log's last seq when we last looked for outside changes, and how
    /// many events we wrote since: more growth than that means someone else
    /// wrote (a cancel, say).
    last_checked_seq: i64,
    own_since_check: usize,
    /// When something last made dispatch possible (a slot freed, work
    /// finished, the store changed): the start of dispatch latency.
    last_change: Instant,
    report: Report,
    /// Dispatch latency samples: ready seen -> process spawned.
    pub latencies: Vec<Duration>,
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
        let telemetry = Telemetry::new(
            &paths.braid_dir.join("telemetry"),
            Duration::from_secs(30 * 86_400),
        );
        let beat = config.run.lease / 3;
        let cache = if config.cache.enabled {
            crate::cache::Cache::open(&config.cache).ok()
        } else {
            None
        };
        Engine {
            store,
            config,
            paths,
            opts,
            on_event,
            tx,
            rx,
            works: HashMap::new(),
            procs: HashMap::new(),
            gate_queue: VecDeque::new(),
            busy: HashMap::new(),
            cooldown: HashMap::new(),
            next_key: 0,
            stopping: None,
            memory_wait: None,
            next_heartbeat: Instant::now() + beat,
            lease_timer: None,
            cache,
            pending: Vec::new(),
            last_own_seq: 0,
            last_checked_seq: 0,
            own_since_check: 0,
            last_change: Instant::now(),
            telemetry,
            report: Report::default(),
            latencies: Vec::new(),
        }
    }

    /// A handle that wakes this engine from another thread.
    pub fn waker(&self) -> Waker {
        Waker(self.tx.clone())
    }

    fn lease_ms(&self) -> i64 {
        self.config.run.lease.as_millis() as i64
    }

    fn emit(&mut self, events: &[Event]) {
        self.own_since_check += events.len();
        for e in events {
            (self.on_event)(e);
            let line = json!({
                "seq": e.seq, "at": e.at, "actor": e.actor, "kind": e.kind.as_str(),
                "task": e.task, "payload": e.payload,
            });
            self.telemetry.record(line.to_string());
        }
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
                let last = applied.pop().expect("one result per command");
                let mut events: Vec<Event> = applied.into_iter().flat_map(|a| a.events).collect();
                events.extend(last.events.iter().cloned());
                self.last_own_seq = events.last().map_or(self.last_own_seq, |e| e.seq);
                self.emit(&events);
                return Ok(last);
            }
            // The command was refused (or a record was): keep the records,
            // and let the command report its own error.
            self.flush_records();
        }
        let r = self.store.apply(&actor, cmd);
        if let Ok(a) = &r {
            let events = a.events.clone();
            self.last_own_seq = events.last().map_or(self.last_own_seq, |e| e.seq);
            self.emit(&events);
        }
        r
    }

    /// Writes queued events in one transaction.
    fn flush_records(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let cmds = std::mem::take(&mut self.pending);
        let actor = self.opts.actor.clone();
        match self.store.apply_all(&actor, cmds.clone()) {
            Ok(applied) => {
                let events: Vec<Event> = applied.into_iter().flat_map(|a| a.events).collect();
                self.last_own_seq = events.last().map_or(self.last_own_seq, |e| e.seq);
                self.emit(&events);
            }
            Err(_) => {
                // One bad record (its task deleted, say) must not lose the rest.
                for c in cmds {
                    if let Ok(a) = self.store.apply(&actor, c) {
                        self.last_own_seq = a.events.last().map_or(self.last_own_seq, |e| e.seq);
                        self.emit(&a.events);
                    }
                }
            }
        }
    }

    /// Queues an observability event; queued events are written together,
    /// in one transaction, before the loop next waits (or before the next
    /// state change, so the log keeps its order).
    fn record(&mut self, id: &TaskId, kind: EventKind, payload: serde_json::Value) {
        self.pending.push(Command::Record {
            id: id.clone(),
            kind,
            payload,
        });
    }

    /// Runs until nothing is running and nothing can start (or, with
    /// `follow`, until a signal).
    pub fn run(mut self) -> Result<Report, braid_store::Error> {
        crate::metrics::describe();
        let result = self.run_loop();
        if result.is_err() {
            // Leave nothing running and nothing claimed behind a failure.
            self.kill_all();
            self.release_all("the run stopped on an error");
        }
        result
    }

    fn run_loop(&mut self) -> Result<Report, braid_store::Error> {
        self.watch_store()?;
        self.watch_signals();
        self.rescue_expired()?;
        loop {
            self.dispatch()?;
            if self.finished()? {
                break;
            }
            // Queued events are written before we wait, so the log is never
            // behind by more than one turn of the loop.
            self.flush_records();
            let now = Instant::now();
            let wait = self
                .next_deadline()
                .map(|d| d.saturating_duration_since(now));
            let msg = match wait {
                Some(w) => match self.rx.recv_timeout(w) {
                    Ok(m) => Some(m),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                },
                None => self.rx.recv().ok(),
            };
            if let Some(m) = msg {
                self.handle(m)?;
                // Coalesce whatever else arrived meanwhile.
                while let Ok(m) = self.rx.try_recv() {
                    self.handle(m)?;
                }
            }
            self.on_timers()?;
        }
        self.flush_records();
        self.telemetry.flush();
        self.report.latency_ms = percentiles(&self.latencies);
        Ok(self.report.clone())
    }

    /// Wakes the loop on every committed write (any process, any node).
    fn watch_store(&self) -> Result<(), braid_store::Error> {
        let tx = self.tx.clone();
        let changes = self.store.changes()?;
        changes
            .forward("braid-changes", move || tx.send(Msg::StoreChanged).is_ok())
            .map_err(|e| braid_store::Error::backend_from("starting the change feed", e))?;
        Ok(())
    }

    fn watch_signals(&self) {
        let tx = self.tx.clone();
        if let Ok(mut signals) = signal_hook::iterator::Signals::new([
            signal_hook::consts::SIGINT,
            signal_hook::consts::SIGTERM,
        ]) {
            std::thread::spawn(move || {
                for _ in signals.forever() {
                    if tx.send(Msg::Signal).is_err() {
                        break;
                    }
                }
            });
        }
    }

    /// Takes back claims whose lease expired (their holder died). Only a
    /// matching token is rescued, so a claim renewed meanwhile is left alone.
    fn rescue_expired(&mut self) -> Result<(), braid_store::Error> {
        loop {
            let expired = self.store.expired_leases(self.store.now_ms(), 100)?;
            if expired.is_empty() {
                return Ok(());
            }
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
                return Ok(());
            }
        }
    }

    fn slots_free(&self) -> usize {
        self.config.run.jobs.saturating_sub(self.procs.len())
    }

    fn agent_available(&self, name: &str, now: Instant) -> bool {
        let Some(a) = self.config.agent(name) else {
            return false;
        };
        self.cooldown.get(name).is_none_or(|t| *t <= now)
            && self.busy.get(name).copied().unwrap_or(0) < a.max_concurrent
    }

    /// The agent for a task: its own (or the first), else the first free one
    /// of its failover list.
    fn pick_agent(&self, preferred: Option<&str>, now: Instant) -> Option<String> {
        let first = preferred
            .and_then(|p| self.config.agent(p))
            .or_else(|| self.config.agents.first())?;
        std::iter::once(&first.name)
            .chain(first.failover.iter())
            .find(|n| self.agent_available(n, now))
            .cloned()
    }

    fn memory_ok(&mut self) -> bool {
        match available_memory() {
            Some(avail) if avail < self.config.run.memory_floor => {
                self.memory_wait = Some(Instant::now() + MEMORY_RECHECK);
                false
            }
            _ => {
                self.memory_wait = None;
                true
            }
        }
    }

    fn dispatch(&mut self) -> Result<(), braid_store::Error> {
        // Re-armed by memory_ok() below if memory is still short.
        self.memory_wait = None;
        // Gates of finished agents first: they complete work in flight.
        while self.slots_free() > 0 {
            let Some((id, gate)) = self.gate_queue.pop_front() else {
                break;
            };
            self.start_gate(&id, &gate);
        }
        let now = Instant::now();
        // Retries whose backoff is over.
        let due: Vec<TaskId> = self
            .works
            .iter()
            .filter(|(_, w)| w.retry_at.is_some_and(|t| t <= now))
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            if self.slots_free() == 0 || self.stopping.is_some() {
                break;
            }
            let token = self.works[&id].token.clone();
            let Some(agent) = self.pick_agent(Some(&self.works[&id].agent.clone()), now) else {
                continue;
            };
            if !self.memory_ok() {
                break;
            }
            let lease_ms = self.lease_ms();
            match self.apply(Command::NextAttempt {
                id: id.clone(),
                token,
                lease_ms,
            }) {
                Ok(a) => {
                    let w = self.works.get_mut(&id).expect("work present");
                    w.retry_at = None;
                    w.attempt = a.task.lease.map(|l| l.attempt).unwrap_or(w.attempt + 1);
                    w.agent = agent;
                    w.failure = None;
                    self.start_agent(&id, now);
                }
                Err(_) => self.drop_work(&id),
            }
        }
        // New work.
        if self.stopping.is_some() || self.config.agents.is_empty() {
            return Ok(());
        }
        crate::metrics::queue_depth(self.store.health()?.ready);
        while self.slots_free() > 0 {
            if self
                .opts
                .max_tasks
                .is_some_and(|m| self.report.dispatched >= m)
            {
                break;
            }
            let want = self.slots_free() * 4 + 8;
            let ready: Vec<(TaskId, Option<String>)> = if self.opts.only.is_empty() {
                self.store.ready_heads(want)?
            } else {
                let mut v = Vec::new();
                for id in &self.opts.only {
                    if let Ok(t) = self.store.task(id)
                        && t.ready
                    {
                        v.push((t.id, t.agent));
                    }
                }
                v
            };
            let seen = Instant::now();
            let mut started = false;
            for (tid, preferred) in ready {
                if self.works.contains_key(&tid) {
                    continue;
                }
                let Some(agent) = self.pick_agent(preferred.as_deref(), seen) else {
                    continue;
                };
                if !self.memory_ok() {
                    return Ok(());
                }
                let claim = Command::Claim {
                    id: Some(tid.clone()),
                    assignee: agent.clone(),
                    lease_ms: self.lease_ms(),
                };
                let Ok(a) = self.apply(claim) else { continue }; // another runner took it
                let workspace = self.paths.workspace(&tid);
                self.works.insert(
                    tid.clone(),
                    Work {
                        token: a.lease_token.clone().unwrap_or_default(),
                        attempt: a.task.lease.as_ref().map(|l| l.attempt).unwrap_or(1),
                        agent,
                        workspace,
                        gates_pending: 0,
                        failure: None,
                        retry_at: None,
                        content: None,
                    },
                );
                self.report.dispatched += 1;
                crate::metrics::dispatched();
                self.start_agent(&tid, seen);
                started = true;
                break;
            }
            if !started {
                break;
            }
        }
        Ok(())
    }

    fn prepare_workspace(&self, id: &TaskId, path: &Path) -> Result<(), String> {
        match &self.paths.repo {
            Some(repo) => braid_git::ensure_worktree(repo, path, &format!("braid/{id}"))
                .map_err(|e| e.to_string()),
            None => std::fs::create_dir_all(path).map_err(|e| format!("{}: {e}", path.display())),
        }
    }

    fn start_agent(&mut self, id: &TaskId, ready_seen: Instant) {
        let w = &self.works[id];
        let (agent_name, attempt, workspace) = (w.agent.clone(), w.attempt, w.workspace.clone());
        let agent: Agent = self
            .config
            .agent(&agent_name)
            .expect("picked from config")
            .clone();
        if let Err(e) = self.prepare_workspace(id, &workspace) {
            self.attempt_failed(id, "preparing the workspace".into(), e);
            return;
        }
        let logs = self.paths.logs(id);
        let prompt = match braid_app::prompt::build(self.store, id) {
            Ok(p) => p,
            Err(e) => format!("Task {id}. (The task could not be read: {e}.)"),
        };
        let prompt_file = logs.join(format!("{attempt}-prompt.md"));
        // Written only for agents that read it (one file fewer per task).
        if agent.command.iter().any(|a| a.contains("{prompt_file}")) {
            let _ =
                std::fs::create_dir_all(&logs).and_then(|()| std::fs::write(&prompt_file, &prompt));
        }
        let subst = |s: &str| {
            s.replace("{prompt_file}", &prompt_file.to_string_lossy())
                .replace("{prompt}", &prompt)
                .replace("{task}", id.as_str())
                .replace("{worktree}", &workspace.to_string_lossy())
        };
        let spec = Spec {
            argv: agent.command.iter().map(|a| subst(a)).collect(),
            cwd: workspace.clone(),
            env_allow: agent.env.clone(),
            extra_env: vec![
                ("BRAID_TASK".into(), id.to_string()),
                ("BRAID_ATTEMPT".into(), attempt.to_string()),
                (
                    "BRAID_DB".into(),
                    self.paths.db.to_string_lossy().into_owned(),
                ),
            ],
            log: logs.join(format!("{attempt}-{agent_name}.log")),
        };
        *self.busy.entry(agent_name.clone()).or_insert(0) += 1;
        crate::metrics::active_agents(self.busy.values().sum());
        let spawned = self.spawn(
            id,
            ProcKind::Agent(agent_name.clone()),
            &spec,
            agent.timeout,
            None,
        );
        if spawned {
            let _ = ready_seen;
            self.latencies.push(self.last_change.elapsed());
        }
        self.record(
            id,
            EventKind::Dispatched,
            json!({"agent": agent_name, "attempt": attempt, "workspace": workspace, "log": spec.log}),
        );
    }

    fn start_gate(&mut self, id: &TaskId, gate: &Gate) {
        let Some(w) = self.works.get(id) else { return };
        let key = w.content.as_ref().map(|c| crate::cache::gate_key(gate, c));
        if let (Some(k), Some(cache)) = (&key, &self.cache)
            && let Some(hit) = cache.lookup(k)
        {
            crate::metrics::gate(Duration::ZERO, true);
            self.record(
                    id,
                    EventKind::GateFinished,
                    json!({"gate": gate.name, "passed": true, "exit": "exit 0", "timed_out": false, "duration_ms": 0, "cached": true, "original_duration_ms": hit.duration_ms}),
                );
            self.gate_done(id, &gate.name, None);
            return;
        }
        let spec = Spec {
            argv: gate.command.clone(),
            cwd: w.workspace.clone(),
            env_allow: Some(gate.env.clone()),
            extra_env: Vec::new(),
            log: self
                .paths
                .logs(id)
                .join(format!("{}-gate-{}.log", w.attempt, gate.name)),
        };
        self.spawn(
            id,
            ProcKind::Gate(gate.name.clone()),
            &spec,
            gate.timeout,
            key,
        );
    }

    /// One gate of a task's round finished (`failure`: what failed and the
    /// end of its output); when it was the last, the attempt is decided.
    fn gate_done(&mut self, id: &TaskId, _gate: &str, failure: Option<(String, String)>) {
        let Some(w) = self.works.get_mut(id) else {
            return;
        };
        w.gates_pending = w.gates_pending.saturating_sub(1);
        if failure.is_some() && w.failure.is_none() {
            w.failure = failure;
        }
        if w.gates_pending == 0 {
            w.content = None;
            match w.failure.take() {
                Some((what, tail)) => self.attempt_failed(id, what, tail),
                None => self.succeed(id),
            }
        }
    }

    /// Starts a process and a thread that waits for it and reports back.
    fn spawn(
        &mut self,
        id: &TaskId,
        kind: ProcKind,
        spec: &Spec,
        timeout: Duration,
        cache_key: Option<String>,
    ) -> bool {
        let key = self.next_key;
        self.next_key += 1;
        let now = Instant::now();
        let log_start = supervise::log_len(&spec.log);
        let spawned = supervise::spawn(spec);
        let pgid = spawned.as_ref().map_or(0, |c| c.id());
        self.procs.insert(
            key,
            Proc {
                task: id.clone(),
                kind,
                cache_key,
                log_start,
                pgid,
                started: now,
                deadline: now + timeout,
                killed_at: None,
                log: spec.log.clone(),
            },
        );
        match spawned {
            Ok(mut child) => {
                let tx = self.tx.clone();
                std::thread::spawn(move || {
                    let exit = match child.wait() {
                        Ok(s) => supervise::exit_of(s),
                        Err(e) => Exit::SpawnFailed(e.to_string()),
                    };
                    let _ = tx.send(Msg::Exited { key, exit });
                });
                true
            }
            Err(e) => {
                // Report as an exit so the same path handles it.
                let _ = self.tx.send(Msg::Exited {
                    key,
                    exit: Exit::SpawnFailed(format!("{}: {e}", spec.argv[0])),
                });
                false
            }
        }
    }

    fn handle(&mut self, msg: Msg) -> Result<(), braid_store::Error> {
        match msg {
            Msg::Exited { key, exit } => {
                self.last_change = Instant::now();
                if let Some(p) = self.procs.remove(&key) {
                    self.on_exit(p, exit);
                }
            }
            Msg::StoreChanged => {
                // Our own writes notify us too; only look when the log grew
                // by more than what we wrote since the last look.
                let latest = self.store.last_seq()?;
                let grew = latest - self.last_checked_seq;
                if grew > self.own_since_check as i64 {
                    self.last_change = Instant::now();
                    self.check_cancelled()?;
                }
                self.last_checked_seq = latest;
                self.own_since_check = 0;
            }
            Msg::Signal => {
                self.report.interrupted = true;
                if self.stopping.is_some() {
                    // Second signal: stop now, and give the claims back.
                    self.kill_all();
                    self.release_all("stopped by a second signal");
                } else {
                    self.stopping = Some(Instant::now() + self.config.run.shutdown_grace);
                    // Work waiting for a retry will not get one now.
                    let waiting: Vec<TaskId> = self
                        .works
                        .iter()
                        .filter(|(_, w)| w.retry_at.is_some())
                        .map(|(i, _)| i.clone())
                        .collect();
                    for id in waiting {
                        self.release(&id, "the run was stopped before its retry");
                    }
                }
            }
        }
        Ok(())
    }

    /// A task we run was cancelled (or taken) elsewhere: stop its processes.
    fn check_cancelled(&mut self) -> Result<(), braid_store::Error> {
        let ids: Vec<TaskId> = self.works.keys().cloned().collect();
        for id in ids {
            let t = self.store.task(&id)?;
            let ours = t.state == State::InProgress
                && t.lease
                    .as_ref()
                    .is_some_and(|l| l.token == self.works[&id].token);
            if !ours {
                self.kill_task(&id);
                let workspace = self.works.get(&id).map(|w| w.workspace.clone());
                self.drop_work(&id);
                // A cancelled task's worktree goes (its branch stays).
                if let (State::Cancelled, Some(repo), Some(ws)) =
                    (t.state, &self.paths.repo, workspace)
                {
                    let _ = braid_git::remove_worktree(repo, &ws);
                }
            }
        }
        Ok(())
    }

    fn kill_task(&mut self, id: &TaskId) {
        let now = Instant::now();
        for p in self.procs.values_mut().filter(|p| &p.task == id) {
            if p.pgid != 0 {
                supervise::terminate(p.pgid);
            }
            p.killed_at.get_or_insert(now);
            p.deadline = now + self.config.run.kill_grace;
        }
        self.gate_queue.retain(|(t, _)| t != id);
    }

    fn kill_all(&mut self) {
        for p in self.procs.values() {
            if p.pgid != 0 {
                supervise::kill(p.pgid);
            }
        }
    }

    /// Gives a claim back (the task returns to open, the attempt refunded).
    fn release(&mut self, id: &TaskId, why: &str) {
        if let Some(w) = self.works.remove(id) {
            let cmd = Command::Finish {
                id: id.clone(),
                token: w.token,
                to: State::Open,
                reason: Some(why.into()),
                refund_attempt: true,
            };
            if self.apply(cmd).is_ok() {
                self.report.released += 1;
            }
        }
        self.gate_queue.retain(|(t, _)| t != id);
    }

    fn release_all(&mut self, why: &str) {
        let ids: Vec<TaskId> = self.works.keys().cloned().collect();
        for id in ids {
            self.release(&id, why);
        }
        self.procs.clear();
    }

    fn drop_work(&mut self, id: &TaskId) {
        if let Some(w) = self.works.remove(id) {
            let _ = w;
        }
    }

    fn on_exit(&mut self, p: Proc, exit: Exit) {
        let duration_ms = p.started.elapsed().as_millis() as u64;
        let timed_out = p.killed_at.is_some();
        if timed_out && self.stopping.is_some_and(|t| t <= Instant::now()) {
            // Stopped by the shutdown, not by its own timeout.
            if let ProcKind::Agent(name) = &p.kind
                && let Some(n) = self.busy.get_mut(name)
            {
                *n = n.saturating_sub(1);
            }
            self.release(&p.task, "stopped by a signal before it finished");
            return;
        }
        match &p.kind {
            ProcKind::Agent(name) => {
                if let Some(n) = self.busy.get_mut(name) {
                    *n = n.saturating_sub(1);
                }
                crate::metrics::active_agents(self.busy.values().sum());
                if !self.works.contains_key(&p.task) {
                    return; // cancelled meanwhile
                }
                let mut what = exit.describe();
                if timed_out {
                    what = format!("timed out ({what})");
                }
                self.record(
                    &p.task,
                    EventKind::AgentFinished,
                    json!({"agent": name, "exit": what, "duration_ms": duration_ms}),
                );
                // Only a failed run is a rate limit: a successful agent may
                // well mention limits in its output.
                if !exit.success()
                    && let Some(until) = self.rate_limited(name, &p.log, p.log_start)
                {
                    self.cooldown_agent(&p.task, name, until);
                    return;
                }
                if exit.success() && !timed_out {
                    self.queue_gates(&p.task);
                } else {
                    let tail =
                        supervise::tail_since(&p.log, p.log_start, self.config.run.failure_tail);
                    self.attempt_failed(&p.task, format!("agent {name} ({what})"), tail);
                }
            }
            ProcKind::Gate(name) => {
                let passed = exit.success() && !timed_out;
                crate::metrics::gate(p.started.elapsed(), false);
                // Cache before recording: a recorded pass is always cached,
                // so after a crash it is never run again.
                if passed && let (Some(k), Some(cache)) = (&p.cache_key, self.cache.as_mut()) {
                    let result = crate::cache::CachedResult {
                        gate: name.clone(),
                        duration_ms,
                        at: self.store.now_ms(),
                        tail: supervise::tail_since(&p.log, p.log_start, 1024),
                    };
                    let _ = cache.store(k, &result);
                }
                self.record(
                    &p.task,
                    EventKind::GateFinished,
                    json!({"gate": name, "passed": passed, "exit": exit.describe(), "timed_out": timed_out, "duration_ms": duration_ms, "cached": false}),
                );
                if !self.works.contains_key(&p.task) {
                    return;
                }
                let failure = if passed {
                    None
                } else {
                    Some((
                        format!("gate {name} ({})", exit.describe()),
                        supervise::tail_since(&p.log, p.log_start, self.config.run.failure_tail),
                    ))
                };
                self.gate_done(&p.task, name, failure);
            }
        }
    }

    fn queue_gates(&mut self, id: &TaskId) {
        let wanted: Vec<String> = self.store.task(id).map(|t| t.gates).unwrap_or_default();
        let gates: Vec<Gate> = self
            .config
            .gates
            .iter()
            .filter(|g| wanted.is_empty() || wanted.contains(&g.name))
            .cloned()
            .collect();
        if gates.is_empty() {
            self.succeed(id);
            return;
        }
        let content = match (&self.cache, self.works.get(id)) {
            (Some(_), Some(w)) => crate::cache::workspace_identity(&w.workspace).ok(),
            _ => None,
        };
        if let Some(w) = self.works.get_mut(id) {
            w.gates_pending = gates.len();
            w.content = content;
        }
        for g in gates {
            self.gate_queue.push_back((id.clone(), g));
        }
    }

    fn succeed(&mut self, id: &TaskId) {
        let Some(w) = self.works.remove(id) else {
            return;
        };
        let to = if self.config.merge_into.is_some() {
            State::Review
        } else {
            State::Done
        };
        if to == State::Review && self.paths.repo.is_some() {
            // The branch is what merges: work the agent left uncommitted
            // (what the gates just passed) is committed onto it.
            let title = self.store.task(id).map(|t| t.title).unwrap_or_default();
            if let Err(e) = braid_git::commit_all(&w.workspace, &format!("{id}: {title}")) {
                self.works.insert(id.clone(), w);
                self.attempt_failed(id, "committing the work".into(), e.to_string());
                return;
            }
        }
        let cmd = Command::Finish {
            id: id.clone(),
            token: w.token,
            to,
            reason: Some("gates passed".into()),
            refund_attempt: false,
        };
        if self.apply(cmd).is_ok() {
            if to == State::Done {
                self.report.done += 1;
                if let Some(repo) = &self.paths.repo {
                    let _ = braid_git::remove_worktree(repo, &w.workspace);
                }
            } else {
                self.report.review += 1;
                if let Some(h) = &self.opts.merge {
                    h.requested.store(true, std::sync::atomic::Ordering::SeqCst);
                    let _ = h.wake.send(());
                }
            }
        }
    }

    fn attempt_failed(&mut self, id: &TaskId, what: String, tail: String) {
        let Some(w) = self.works.get(id) else { return };
        let attempt = w.attempt;
        if attempt < self.config.run.max_attempts && self.stopping.is_some() {
            self.release(id, "the run was stopped before a retry");
            return;
        }
        if attempt < self.config.run.max_attempts {
            let backoff = backoff(
                self.config.run.backoff_base,
                self.config.run.backoff_cap,
                attempt,
            );
            self.record(
                id,
                EventKind::Retrying,
                json!({"failed": what, "tail": tail, "attempt": attempt, "backoff_ms": backoff.as_millis() as u64}),
            );
            if let Some(w) = self.works.get_mut(id) {
                w.retry_at = Some(Instant::now() + backoff);
            }
            return;
        }
        let w = self.works.remove(id).expect("checked above");
        let reason = format!(
            "{what}; attempt {attempt} of {}",
            self.config.run.max_attempts
        );
        let cmd = Command::Finish {
            id: id.clone(),
            token: w.token,
            to: State::Failed,
            reason: Some(reason),
            refund_attempt: false,
        };
        if self.apply(cmd).is_ok() {
            self.report.failed += 1;
        }
    }

    /// When the agent's output matches one of its rate-limit patterns: until
    /// when it should rest.
    fn rate_limited(&self, agent: &str, log: &Path, from: u64) -> Option<Instant> {
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
                return Some(Instant::now() + wait);
            }
        }
        None
    }

    fn cooldown_agent(&mut self, id: &TaskId, agent: &str, until: Instant) {
        self.cooldown.insert(agent.to_owned(), until);
        crate::metrics::cooldown(agent);
        let secs = until
            .saturating_duration_since(Instant::now())
            .as_secs_f64();
        self.record(
            id,
            EventKind::Cooldown,
            json!({"agent": agent, "seconds": (secs * 1000.0).round() / 1000.0}),
        );
        if let Some(w) = self.works.remove(id) {
            let cmd = Command::Finish {
                id: id.clone(),
                token: w.token,
                to: State::Open,
                reason: Some(format!("agent {agent} is rate limited")),
                refund_attempt: true,
            };
            if self.apply(cmd).is_ok() {
                self.report.released += 1;
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let now = Instant::now();
        let mut d: Option<Instant> = None;
        let mut at = |t: Instant| d = Some(d.map_or(t, |x| x.min(t)));
        for p in self.procs.values() {
            at(p.deadline);
        }
        for w in self.works.values() {
            // A retry that is due but cannot start waits for a message
            // (a slot or an agent freeing up), not for a past deadline.
            if let Some(t) = w.retry_at.filter(|t| *t > now) {
                at(t);
            }
        }
        let now = Instant::now();
        for t in self.cooldown.values().filter(|t| **t > now) {
            at(*t);
        }
        if !self.works.is_empty() {
            at(self.next_heartbeat);
        }
        if let Some(t) = self.memory_wait {
            at(t);
        }
        if let Some(t) = self.telemetry.deadline() {
            at(t);
        }
        if let Some(t) = self.stopping.filter(|t| *t > now) {
            at(t);
        }
        if let Some(ms) = self.lease_timer {
            let wait = (ms - self.store.now_ms()).max(0) as u64 + 5;
            at(now + Duration::from_millis(wait));
        }
        d
    }

    fn on_timers(&mut self) -> Result<(), braid_store::Error> {
        let now = Instant::now();
        let grace = self.config.run.kill_grace;
        for p in self.procs.values_mut() {
            if p.deadline <= now && p.pgid != 0 {
                if p.killed_at.is_none() {
                    supervise::terminate(p.pgid);
                    p.killed_at = Some(now);
                    p.deadline = now + grace;
                } else {
                    supervise::kill(p.pgid);
                    p.deadline = now + grace;
                }
            }
        }
        if self.stopping.is_some_and(|t| t <= now) {
            // Past the grace: whatever still runs is stopped; its claim is
            // given back when its process exits (see on_exit).
            for p in self.procs.values_mut() {
                if p.killed_at.is_none() && p.pgid != 0 {
                    supervise::terminate(p.pgid);
                    p.killed_at = Some(now);
                    p.deadline = now + grace;
                }
            }
        }
        if !self.works.is_empty() && self.next_heartbeat <= now {
            self.next_heartbeat = now + self.config.run.lease / 3;
            let lease_ms = self.lease_ms();
            let ids: Vec<(TaskId, String)> = self
                .works
                .iter()
                .map(|(i, w)| (i.clone(), w.token.clone()))
                .collect();
            for (id, token) in ids {
                let renew = Command::Renew {
                    id: id.clone(),
                    token,
                    lease_ms,
                };
                match self.store.apply(&self.opts.actor, renew) {
                    Ok(_) => {}
                    // Lost the claim (cancelled or rescued elsewhere).
                    Err(e @ (braid_store::Error::Locked(_) | braid_store::Error::Domain(_))) => {
                        let _ = e;
                        self.kill_task(&id);
                        self.drop_work(&id);
                    }
                    // A passing failure (disk, busy): keep the work; the
                    // next heartbeat tries again.
                    Err(_) => {}
                }
            }
            // Heartbeats are also when other runners' dead claims are
            // taken back, even while this run is busy.
            self.rescue_expired()?;
        }
        if self.telemetry.deadline().is_some_and(|t| t <= now) {
            self.telemetry.flush();
        }
        if self.lease_timer.is_some_and(|ms| ms < self.store.now_ms()) {
            self.lease_timer = None;
            self.rescue_expired()?;
        }
        Ok(())
    }

    /// True when the run should end.
    fn finished(&mut self) -> Result<bool, braid_store::Error> {
        if !self.procs.is_empty() || !self.works.is_empty() || !self.gate_queue.is_empty() {
            return Ok(false);
        }
        if self.stopping.is_some() {
            return Ok(true);
        }
        // A merge in progress may make work ready.
        if self.opts.merge.as_ref().is_some_and(MergeHook::pending) {
            return Ok(false);
        }
        // Claims held by others: when the earliest expires (if its holder
        // died), rescue it — in follow mode too.
        self.lease_timer = self.store.next_lease_expiry()?;
        if self.opts.follow {
            return Ok(false);
        }
        if self.config.agents.is_empty()
            || self
                .opts
                .max_tasks
                .is_some_and(|m| self.report.dispatched >= m)
        {
            return Ok(true);
        }
        // Work claimed by another runner may still finish (making more work
        // ready) or, if that runner died, be rescued when its lease expires.
        if self.lease_timer.is_some() {
            return Ok(false);
        }
        // Ready work that only waits for an agent's cooldown keeps us here.
        let now = Instant::now();
        let cooling = self.cooldown.values().any(|t| *t > now);
        let waiting = if self.opts.only.is_empty() {
            !self.store.ready(1)?.is_empty()
        } else {
            self.opts
                .only
                .iter()
                .any(|id| self.store.task(id).is_ok_and(|t| t.ready))
        };
        Ok(!(waiting && (cooling || self.memory_wait.is_some())))
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

/// Exponential backoff with jitter: base · 2^(attempt-1), capped, times a
/// random factor in [0.5, 1.5).
pub fn backoff(base: Duration, cap: Duration, attempt: u32) -> Duration {
    let exp = base
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
        .min(cap);
    let mut b = [0u8; 2];
    let _ = getrandom_fill(&mut b);
    let jitter = 0.5 + (u16::from_le_bytes(b) as f64 / 65536.0);
    exp.mul_f64(jitter).min(cap)
}

fn getrandom_fill(buf: &mut [u8]) -> Option<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .ok()?
        .read_exact(buf)
        .ok()
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

/// MemAvailable from /proc/meminfo, in bytes.
fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped_with_jitter() {
        let base = Duration::from_secs(2);
        let cap = Duration::from_secs(60);
        for _ in 0..50 {
            let b1 = backoff(base, cap, 1);
            assert!(
                b1 >= Duration::from_secs(1) && b1 < Duration::from_secs(3),
                "{b1:?}"
            );
            let b3 = backoff(base, cap, 3);
            assert!(
                b3 >= Duration::from_secs(4) && b3 < Duration::from_secs(12),
                "{b3:?}"
            );
            assert!(backoff(base, cap, 30) <= cap);
        }
    }

    #[test]
    fn clock_times_parse() {
        for s in ["3pm", "3:30 pm", "15:30", "12am", "9"] {
            let d = until_clock(s).unwrap_or_else(|| panic!("{s}"));
            assert!(d <= Duration::from_secs(86_400), "{s}: {d:?}");
        }
        assert!(until_clock("soon").is_none());
    }
}
