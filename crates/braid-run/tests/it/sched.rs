//! The engine's decisions, step by step and without processes: the real
//! runner and scheduler core against a real SQLite store, with a clock the
//! test moves and a spawner that records what it was asked to start. Each
//! test is a script of named steps; a failure names the step.

use std::cell::Cell;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use braid_core::{ManualClock, NewTask, State, TaskId};
use braid_run::engine::{Host, Msg, Runner};
use braid_run::supervise::{Exit, Spawner, Spec};
use braid_run::{Config, Paths, RunOptions};
use braid_store::{Command, SqliteStore, Store};

/// Records spawns and signals; a program named `missing` does not start.
#[derive(Default)]
struct FakeSpawner {
    spawned: Vec<(u64, Spec)>,
    signals: Vec<(u64, bool)>,
    ended: BTreeSet<u64>,
}

impl Spawner for FakeSpawner {
    fn spawn(&mut self, key: u64, spec: &Spec) -> std::io::Result<()> {
        if spec.argv.first().map(String::as_str) == Some("missing") {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "No such file or directory",
            ));
        }
        self.spawned.push((key, spec.clone()));
        Ok(())
    }
    fn signal(&mut self, key: u64, kill: bool) {
        self.signals.push((key, kill));
    }
    fn reaped(&mut self, key: u64) {
        self.ended.insert(key);
    }
}

/// Time the test sets, and memory it decides.
struct FakeHost {
    now: Duration,
    memory: Cell<Option<u64>>,
    reads: Cell<usize>,
    /// Free disk space it decides, for every place asked about.
    disk: Cell<Option<u64>>,
}

impl Host for FakeHost {
    fn now(&self) -> Duration {
        self.now
    }
    fn available_memory(&self) -> Option<u64> {
        self.reads.set(self.reads.get() + 1);
        self.memory.get()
    }
    fn free_disk(&self, _path: &std::path::Path) -> Option<u64> {
        self.disk.get()
    }
}

/// A running process as the fake spawner saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Running {
    key: u64,
    task: String,
    /// The agent's name, or `gate:NAME`.
    what: String,
    attempt: String,
}

struct Sim<'a> {
    runner: Runner<'a, FakeSpawner, FakeHost>,
    clock: ManualClock,
    step: String,
}

fn project(dir: &tempfile::TempDir) -> (SqliteStore, ManualClock, Paths) {
    let clock = ManualClock::at(1_700_000_000_000);
    let braid_dir = dir.path().join(".braid");
    let db = braid_dir.join("braid.db");
    let store = SqliteStore::create(&db)
        .unwrap()
        .with_clock(Arc::new(clock.clone()));
    let paths = Paths {
        braid_dir,
        db,
        repo: None,
    };
    (store, clock, paths)
}

fn config(dir: &tempfile::TempDir, body: &str) -> Config {
    // The cache lives in the test's folder (and is off unless a test says).
    let text = format!(
        "[cache]\nenabled = false\ndir = \"{}\"\n{body}",
        dir.path().join("cache").display()
    );
    Config::parse("config.toml", &text).unwrap()
}

impl<'a> Sim<'a> {
    fn new(
        store: &'a SqliteStore,
        clock: ManualClock,
        paths: Paths,
        config: Config,
        opts: RunOptions,
    ) -> Sim<'a> {
        let host = FakeHost {
            now: Duration::ZERO,
            memory: Cell::new(Some(64 << 30)),
            reads: Cell::new(0),
            disk: Cell::new(Some(500 << 30)),
        };
        let opts = RunOptions {
            actor: "engine".into(),
            ..opts
        };
        let runner = Runner::new(
            store,
            config,
            paths,
            opts,
            FakeSpawner::default(),
            host,
            42,
            Box::new(|_| {}),
        );
        Sim {
            runner,
            clock,
            step: "start".into(),
        }
    }

    /// Names what follows, for failure messages.
    fn step(&mut self, name: &str) {
        self.step = name.to_owned();
    }

    fn at(&self) -> String {
        format!("at step {:?}", self.step)
    }

    fn start(&mut self) {
        self.runner.start();
        self.runner.flush_all();
    }

    /// Moves both clocks and lets the engine act on its deadlines.
    fn advance(&mut self, d: Duration) {
        self.runner.host().now += d;
        self.clock.advance(d.as_millis() as i64);
        self.runner.tick();
        self.runner.flush_all();
    }

    fn deliver(&mut self, msg: Msg) {
        self.runner.deliver(msg);
        self.runner.tick();
        self.runner.flush_all();
    }

    fn exit(&mut self, key: u64, code: i32) {
        self.deliver(Msg::Exited {
            key,
            exit: Exit::Code(code),
        });
    }

    /// Started and not ended, oldest first.
    fn running(&mut self) -> Vec<Running> {
        let sp = self.runner.spawner();
        sp.spawned
            .iter()
            .filter(|(k, _)| !sp.ended.contains(k))
            .map(|(key, spec)| {
                let task = spec.cwd.file_name().unwrap().to_string_lossy().into_owned();
                let log = spec.log.file_name().unwrap().to_string_lossy().into_owned();
                let (attempt, rest) = log.trim_end_matches(".log").split_once('-').unwrap();
                let what = match rest.strip_prefix("gate-") {
                    Some(g) => format!("gate:{g}"),
                    None => rest.to_owned(),
                };
                Running {
                    key: *key,
                    task,
                    what,
                    attempt: attempt.to_owned(),
                }
            })
            .collect()
    }

    fn only(&mut self) -> Running {
        let r = self.running();
        assert_eq!(r.len(), 1, "one process running {}: {r:?}", self.at());
        r[0].clone()
    }

    fn signals(&mut self) -> Vec<(u64, bool)> {
        std::mem::take(&mut self.runner.spawner().signals)
    }
}

fn add(store: &dyn Store, title: &str, priority: u8) -> TaskId {
    let mut t = NewTask::titled(title);
    t.priority = Some(priority);
    store.apply("t", Command::Add(t)).unwrap().task.id
}

fn state(store: &dyn Store, id: &str) -> State {
    store.task(&TaskId::parse(id).unwrap()).unwrap().state
}

fn events_of(store: &dyn Store, kind: &str) -> Vec<serde_json::Value> {
    store
        .events(0, 10_000)
        .unwrap()
        .into_iter()
        .filter(|e| e.kind.as_str() == kind)
        .map(|e| e.payload)
        .collect()
}

#[test]
fn work_starts_in_priority_order_one_slot_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let (store, clock, paths) = project(&dir);
    let low = add(&store, "low", 3);
    let high = add(&store, "high", 0);
    let mid = add(&store, "mid", 2);
    let cfg = config(
        &dir,
        "[run]\njobs = 1\n[[agent]]\nname = \"a\"\ncommand = [\"agent\"]\n",
    );
    let mut s = Sim::new(&store, clock, paths, cfg, RunOptions::default());
    s.start();
    for want in [&high, &mid, &low] {
        s.step(&format!("{want} runs next"));
        let r = s.only();
        assert_eq!(r.task, want.as_str(), "{}", s.at());
        s.exit(r.key, 0);
        assert_eq!(state(&store, want.as_str()), State::Done, "{}", s.at());
    }
    s.step("nothing left");
    assert!(s.running().is_empty(), "{}", s.at());
    assert!(s.runner.done(), "the run ends by itself {}", s.at());
    assert_eq!(s.runner.finish().done, 3);
}

#[test]
fn an_agent_runs_at_most_its_cap_and_the_failover_takes_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let (store, clock, paths) = project(&dir);
    for i in 0..4 {
        add(&store, &format!("t{i}"), 2);
    }
    let cfg = config(
        &dir,
        "[run]\njobs = 4\n[[agent]]\nname = \"a\"\ncommand = [\"a\"]\nmax_concurrent = 1\nfailover = [\"b\"]\n[[agent]]\nname = \"b\"\ncommand = [\"b\"]\nmax_concurrent = 2\n",
    );
    let mut s = Sim::new(&store, clock, paths, cfg, RunOptions::default());
    s.start();
    s.step("a takes one, b two: three of four slots");
    let mut agents: Vec<String> = s.running().into_iter().map(|r| r.what).collect();
    agents.sort();
    assert_eq!(agents, ["a", "b", "b"], "{}", s.at());
    s.step("a finishing frees a for the fourth");
    let a = s.running().into_iter().find(|r| r.what == "a").unwrap();
    s.exit(a.key, 0);
    let agents: Vec<String> = s.running().into_iter().map(|r| r.what).collect();
    assert_eq!(agents.iter().filter(|w| *w == "a").count(), 1, "{}", s.at());
    assert_eq!(agents.len(), 3, "{}", s.at());
}

#[test]
fn a_rate_limited_agent_rests_and_its_failover_takes_the_task_without_an_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let (store, clock, paths) = project(&dir);
    let t = add(&store, "t", 2);
    let cfg = config(
        &dir,
        "[run]\njobs = 1\n[[agent]]\nname = \"a\"\ncommand = [\"a\"]\nrate_limit = ['retry after (?P<retry_after>\\d+) seconds']\nfailover = [\"b\"]\n[[agent]]\nname = \"b\"\ncommand = [\"b\"]\n",
    );
    let mut s = Sim::new(&store, clock, paths, cfg, RunOptions::default());
    s.start();
    s.step("a starts and hits its limit");
    let r = s.only();
    assert_eq!(r.what, "a", "{}", s.at());
    let log = &s.runner.spawner().spawned[0].1.log.clone();
    std::fs::create_dir_all(log.parent().unwrap()).unwrap();
    std::fs::write(log, "error: retry after 30 seconds\n").unwrap();
    s.exit(r.key, 1);
    s.step("the task went back without spending an attempt; b takes it");
    let cooldown = events_of(&store, "cooldown");
    assert_eq!(cooldown[0]["agent"], "a", "{}", s.at());
    assert_eq!(cooldown[0]["seconds"], 30.0, "{}", s.at());
    let r = s.only();
    assert_eq!(
        (r.what.as_str(), r.task.as_str()),
        ("b", t.as_str()),
        "{}",
        s.at()
    );
    let lease = store.task(&t).unwrap().lease.unwrap();
    assert_eq!(lease.attempt, 1, "the limited try was refunded {}", s.at());
    s.step("a is free again after its 30 s");
    let u = add(&store, "u", 2);
    s.exit(r.key, 0);
    let r = s.only();
    assert_eq!(
        (r.what.as_str(), r.task.as_str()),
        ("b", u.as_str()),
        "a still rests {}",
        s.at()
    );
    s.advance(Duration::from_secs(30));
    let v = add(&store, "v", 2);
    s.exit(r.key, 0);
    let r = s.only();
    assert_eq!(
        (r.what.as_str(), r.task.as_str()),
        ("a", v.as_str()),
        "{}",
        s.at()
    );
}

#[test]
fn a_failed_attempt_is_retried_after_its_backoff_then_fails_at_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let (store, clock, paths) = project(&dir);
    let t = add(&store, "t", 2);
    let cfg = config(
        &dir,
        "[run]\njobs = 1\nmax_attempts = 2\nbackoff = { base = \"10s\", cap = \"1m\" }\n[[agent]]\nname = \"a\"\ncommand = [\"a\"]\n",
    );
    let mut s = Sim::new(&store, clock, paths, cfg, RunOptions::default());
    s.start();
    s.step("attempt 1 fails");
    let r = s.only();
    assert_eq!(r.attempt, "1", "{}", s.at());
    s.exit(r.key, 3);
    let retrying = events_of(&store, "retrying");
    let backoff = retrying[0]["backoff_ms"].as_u64().unwrap();
    assert!(
        (5_000..15_000).contains(&backoff),
        "base 10 s with jitter: {backoff} {}",
        s.at()
    );
    assert!(
        retrying[0]["failed"].as_str().unwrap().contains("exit 3"),
        "{}",
        s.at()
    );
    s.step("nothing runs during the backoff");
    s.advance(Duration::from_millis(backoff - 1));
    assert!(s.running().is_empty(), "{}", s.at());
    s.step("attempt 2 starts when the backoff is over");
    s.advance(Duration::from_millis(1));
    let r = s.only();
    assert_eq!(
        (r.task.as_str(), r.attempt.as_str()),
        (t.as_str(), "2"),
        "{}",
        s.at()
    );
    s.step("attempt 2 fails: the task fails, naming the attempt");
    s.exit(r.key, 3);
    let task = store.task(&t).unwrap();
    assert_eq!(task.state, State::Failed, "{}", s.at());
    assert!(
        task.close_reason.unwrap().contains("attempt 2 of 2"),
        "{}",
        s.at()
    );
    assert!(s.runner.done(), "{}", s.at());
}

#[test]
fn claims_are_renewed_while_running_and_dead_claims_of_others_are_rescued() {
    let dir = tempfile::tempdir().unwrap();
    let (store, clock, paths) = project(&dir);
    let ours = add(&store, "ours", 0);
    let theirs = add(&store, "theirs", 1);
    // Another runner claimed `theirs` and died: its lease runs out in 20 s.
    store
        .apply(
            "ghost",
            Command::Claim {
                id: Some(theirs.clone()),
                assignee: "ghost".into(),
                lease_ms: 20_000,
            },
        )
        .unwrap();
    let cfg = config(
        &dir,
        "[run]\njobs = 2\nlease = \"30s\"\n[[agent]]\nname = \"a\"\ncommand = [\"a\"]\ntimeout = \"1h\"\n",
    );
    let mut s = Sim::new(&store, clock, paths, cfg, RunOptions::default());
    s.start();
    s.step("ours runs; theirs is held");
    assert_eq!(s.only().task, ours.as_str(), "{}", s.at());
    let first = store.task(&ours).unwrap().lease.unwrap().expires_at;
    s.step("a heartbeat every lease/3 extends our claim");
    s.advance(Duration::from_secs(10));
    let renewed = store.task(&ours).unwrap().lease.unwrap().expires_at;
    assert_eq!(renewed - first, 10_000, "{}", s.at());
    s.step("the dead claim is rescued at the heartbeat after it expires and runs here");
    s.advance(Duration::from_secs(10));
    assert!(
        events_of(&store, "rescued").is_empty(),
        "not expired yet {}",
        s.at()
    );
    s.advance(Duration::from_secs(10));
    assert_eq!(events_of(&store, "rescued").len(), 1, "{}", s.at());
    let tasks: Vec<String> = s.running().into_iter().map(|r| r.task).collect();
    assert_eq!(tasks, [ours.to_string(), theirs.to_string()], "{}", s.at());
    assert_eq!(
        store.task(&theirs).unwrap().lease.unwrap().attempt,
        2,
        "the lost attempt counts {}",
        s.at()
    );
    s.step("a task cancelled elsewhere has its agent stopped");
    store
        .apply(
            "kim",
            Command::SetState {
                id: ours.clone(),
                to: State::Cancelled,
                reason: None,
            },
        )
        .unwrap();
    s.deliver(Msg::StoreChanged);
    let key = s.running()[0].key;
    assert_eq!(
        s.signals(),
        [(key, false)],
        "SIGTERM to its group {}",
        s.at()
    );
}

#[test]
fn a_process_past_its_timeout_gets_sigterm_then_sigkill_and_the_attempt_fails() {
    let dir = tempfile::tempdir().unwrap();
    let (store, clock, paths) = project(&dir);
    let t = add(&store, "t", 2);
    let cfg = config(
        &dir,
        "[run]\njobs = 1\nmax_attempts = 1\nkill_grace = \"2s\"\n[[agent]]\nname = \"a\"\ncommand = [\"a\"]\ntimeout = \"5s\"\n",
    );
    let mut s = Sim::new(&store, clock, paths, cfg, RunOptions::default());
    s.start();
    let key = s.only().key;
    s.step("before the timeout: nothing");
    s.advance(Duration::from_millis(4_999));
    assert!(s.signals().is_empty(), "{}", s.at());
    s.step("at the timeout: SIGTERM");
    s.advance(Duration::from_millis(1));
    assert_eq!(s.signals(), [(key, false)], "{}", s.at());
    s.step("after the grace: SIGKILL");
    s.advance(Duration::from_secs(2));
    assert_eq!(s.signals(), [(key, true)], "{}", s.at());
    s.step("it dies: the attempt failed as timed out");
    s.deliver(Msg::Exited {
        key,
        exit: Exit::Signal(9),
    });
    let task = store.task(&t).unwrap();
    assert_eq!(task.state, State::Failed, "{}", s.at());
    assert!(
        task.close_reason.unwrap().contains("timed out"),
        "{}",
        s.at()
    );
}

#[test]
fn below_the_memory_floor_nothing_starts_until_memory_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let (store, clock, paths) = project(&dir);
    let t = add(&store, "t", 2);
    let cfg = config(
        &dir,
        "[run]\njobs = 1\nmemory_floor = \"1GiB\"\n[[agent]]\nname = \"a\"\ncommand = [\"a\"]\n",
    );
    let mut s = Sim::new(&store, clock, paths, cfg, RunOptions::default());
    s.runner.host().memory.set(Some(100 << 20));
    s.start();
    s.step("100 MiB free: no agent, and the run waits");
    assert!(s.running().is_empty(), "{}", s.at());
    assert_eq!(
        state(&store, t.as_str()),
        State::Open,
        "nothing claimed {}",
        s.at()
    );
    assert!(!s.runner.done(), "{}", s.at());
    assert_eq!(
        s.runner.wait(),
        Some(Duration::from_secs(1)),
        "it looks again in a second {}",
        s.at()
    );
    s.step("still short a second later");
    s.advance(Duration::from_secs(1));
    assert!(s.running().is_empty(), "{}", s.at());
    s.step("memory comes back: the agent starts at the next look");
    s.runner.host().memory.set(Some(2 << 30));
    s.advance(Duration::from_secs(1));
    assert_eq!(s.only().task, t.as_str(), "{}", s.at());
}

#[test]
fn below_the_disk_floor_nothing_starts_and_the_run_says_why_once() {
    let dir = tempfile::tempdir().unwrap();
    let (store, clock, paths) = project(&dir);
    let t = add(&store, "t", 2);
    let cfg = config(
        &dir,
        "[run]\njobs = 1\ndisk_floor = \"1GiB\"\n[[agent]]\nname = \"a\"\ncommand = [\"a\"]\n",
    );
    let mut s = Sim::new(&store, clock, paths, cfg, RunOptions::default());
    s.runner.host().disk.set(Some(300 << 20));
    s.start();
    s.step("300 MiB free: no agent, and the run waits");
    assert!(s.running().is_empty(), "{}", s.at());
    assert_eq!(
        state(&store, t.as_str()),
        State::Open,
        "nothing claimed {}",
        s.at()
    );
    assert!(!s.runner.done(), "{}", s.at());
    s.step("still short a second later");
    s.advance(Duration::from_secs(1));
    assert!(s.running().is_empty(), "{}", s.at());
    s.step("space comes back: the agent starts at the next look");
    s.runner.host().disk.set(Some(5 << 30));
    s.advance(Duration::from_secs(1));
    assert_eq!(s.only().task, t.as_str(), "{}", s.at());
}

#[test]
fn a_first_signal_lets_work_finish_within_the_grace_and_a_second_stops_everything() {
    let dir = tempfile::tempdir().unwrap();
    let (store, clock, paths) = project(&dir);
    let a = add(&store, "a", 0);
    let b = add(&store, "b", 1);
    let cfg = config(
        &dir,
        "[run]\njobs = 2\nshutdown_grace = \"10s\"\nkill_grace = \"1s\"\nbackoff = { base = \"1m\", cap = \"1m\" }\n[[agent]]\nname = \"x\"\ncommand = [\"x\"]\n",
    );
    let mut s = Sim::new(&store, clock, paths, cfg, RunOptions::default());
    s.start();
    let running = s.running();
    assert_eq!(running.len(), 2);
    s.step("b fails and waits for its retry");
    s.exit(running[1].key, 1);
    assert_eq!(state(&store, b.as_str()), State::InProgress, "{}", s.at());
    s.step("first signal: b's retry is given up and no new work starts");
    s.deliver(Msg::Signal);
    assert_eq!(state(&store, b.as_str()), State::Open, "{}", s.at());
    let c = add(&store, "c", 2);
    s.deliver(Msg::StoreChanged);
    assert_eq!(s.running().len(), 1, "c does not start {}", s.at());
    assert_eq!(state(&store, c.as_str()), State::Open, "{}", s.at());
    s.step("a finishes within the grace and is done");
    let key = s.only().key;
    s.exit(key, 0);
    assert_eq!(state(&store, a.as_str()), State::Done, "{}", s.at());
    assert!(s.runner.done(), "{}", s.at());
    let report = s.runner.finish();
    assert!(report.interrupted);
    // b's failed attempt counted: the next claim is its second, and says why.
    let next = store
        .apply(
            "t",
            Command::Claim {
                id: Some(b.clone()),
                assignee: "t".into(),
                lease_ms: 60_000,
            },
        )
        .unwrap();
    assert_eq!(next.task.lease.unwrap().attempt, 2);
    assert!(
        braid_app::prompt::build(&store, &b)
            .unwrap()
            .contains("exit 1"),
        "the next attempt is told what failed"
    );

    // The same start, then two signals.
    let dir = tempfile::tempdir().unwrap();
    let (store, clock, paths) = project(&dir);
    let a = add(&store, "a", 0);
    let cfg = config(
        &dir,
        "[run]\njobs = 1\nshutdown_grace = \"10s\"\n[[agent]]\nname = \"x\"\ncommand = [\"x\"]\n",
    );
    let mut s = Sim::new(&store, clock, paths, cfg, RunOptions::default());
    s.start();
    let key = s.only().key;
    s.step("past the grace of a first signal: SIGTERM");
    s.deliver(Msg::Signal);
    s.advance(Duration::from_secs(10));
    assert_eq!(s.signals(), [(key, false)], "{}", s.at());
    s.step("a second signal: SIGKILL and the claim goes back at once");
    s.deliver(Msg::Signal);
    assert_eq!(s.signals(), [(key, true)], "{}", s.at());
    assert_eq!(state(&store, a.as_str()), State::Open, "{}", s.at());
    assert!(store.task(&a).unwrap().lease.is_none(), "{}", s.at());
    assert!(s.runner.done(), "{}", s.at());
}

#[test]
fn gates_run_after_a_passing_agent_and_a_failing_gate_feeds_the_retry() {
    let dir = tempfile::tempdir().unwrap();
    let (store, clock, paths) = project(&dir);
    let t = add(&store, "t", 2);
    let cfg = config(
        &dir,
        "[run]\njobs = 2\nbackoff = { base = \"1s\", cap = \"1s\" }\n[[agent]]\nname = \"a\"\ncommand = [\"a\"]\n[[gate]]\nname = \"test\"\ncommand = [\"test\"]\n[[gate]]\nname = \"lint\"\ncommand = [\"lint\"]\n",
    );
    let mut s = Sim::new(&store, clock, paths, cfg, RunOptions::default());
    s.start();
    s.step("the agent passes: both gates start");
    let key = s.only().key;
    s.exit(key, 0);
    let mut gates: Vec<String> = s.running().into_iter().map(|r| r.what).collect();
    gates.sort();
    assert_eq!(gates, ["gate:lint", "gate:test"], "{}", s.at());
    s.step("lint fails: after both, the attempt is retried with lint's failure");
    let running = s.running();
    let lint = running
        .iter()
        .find(|r| r.what == "gate:lint")
        .unwrap()
        .clone();
    let spec_log = s
        .runner
        .spawner()
        .spawned
        .iter()
        .find(|(k, _)| *k == lint.key)
        .unwrap()
        .1
        .log
        .clone();
    std::fs::create_dir_all(spec_log.parent().unwrap()).unwrap();
    std::fs::write(&spec_log, "unused variable x\n").unwrap();
    s.exit(lint.key, 1);
    assert!(
        events_of(&store, "retrying").is_empty(),
        "test still runs {}",
        s.at()
    );
    let test = s.only().key;
    s.exit(test, 0);
    let retrying = events_of(&store, "retrying");
    assert_eq!(retrying.len(), 1, "{}", s.at());
    assert!(
        retrying[0]["failed"]
            .as_str()
            .unwrap()
            .contains("gate lint"),
        "{}",
        s.at()
    );
    assert!(
        retrying[0]["tail"]
            .as_str()
            .unwrap()
            .contains("unused variable x"),
        "{}",
        s.at()
    );
    s.step("attempt 2 passes everything: done");
    s.advance(Duration::from_secs(2));
    let r = s.only();
    assert_eq!(r.attempt, "2", "{}", s.at());
    s.exit(r.key, 0);
    for g in s.running() {
        s.exit(g.key, 0);
    }
    assert_eq!(state(&store, t.as_str()), State::Done, "{}", s.at());
}

#[test]
fn an_agent_that_cannot_start_costs_no_attempt_and_stops_dispatching() {
    let dir = tempfile::tempdir().unwrap();
    let (store, clock, paths) = project(&dir);
    let a = add(&store, "a", 0);
    let b = add(&store, "b", 1);
    let cfg = config(
        &dir,
        "[run]\njobs = 1\n[[agent]]\nname = \"typo\"\ncommand = [\"missing\"]\n",
    );
    let mut s = Sim::new(&store, clock, paths, cfg, RunOptions::default());
    s.step("the program is not there");
    s.start();
    assert!(s.running().is_empty(), "{}", s.at());
    s.step("a is given back, its attempt refunded");
    let t = store.task(&a).unwrap();
    assert_eq!(t.state, State::Open, "{}", s.at());
    let released = events_of(&store, "released");
    assert_eq!(released.len(), 1, "{}", s.at());
    assert_eq!(released[0]["refund_attempt"], true, "{}", s.at());
    assert!(
        released[0]["reason"]
            .as_str()
            .unwrap()
            .contains("could not start"),
        "{}",
        s.at()
    );
    s.step("b is not tried: the run stopped dispatching and says why");
    assert_eq!(state(&store, b.as_str()), State::Open, "{}", s.at());
    assert!(s.runner.done(), "{}", s.at());
    let report = s.runner.finish();
    let why = report.halted.unwrap();
    assert!(
        why.contains("agent \"typo\"") && why.contains("no attempt"),
        "{why}"
    );
    assert!(
        events_of(&store, "retrying").is_empty(),
        "no retry was scheduled"
    );
}

#[test]
fn a_gate_that_cannot_start_never_reruns_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    let (store, clock, paths) = project(&dir);
    let t = add(&store, "t", 2);
    let cfg = config(
        &dir,
        "[run]\njobs = 2\n[[agent]]\nname = \"a\"\ncommand = [\"a\"]\n[[gate]]\nname = \"tset\"\ncommand = [\"missing\"]\n[[gate]]\nname = \"lint\"\ncommand = [\"lint\"]\n",
    );
    let mut s = Sim::new(&store, clock, paths, cfg, RunOptions::default());
    s.start();
    s.step("the agent passes; one gate cannot start");
    let key = s.only().key;
    s.exit(key, 0);
    s.step("the task goes back without an attempt, the other gate is stopped");
    assert_eq!(state(&store, t.as_str()), State::Open, "{}", s.at());
    let lint = s.running();
    assert_eq!(lint.len(), 1, "{}", s.at());
    assert_eq!(s.signals(), [(lint[0].key, false)], "{}", s.at());
    s.exit(lint[0].key, 143);
    s.step("and no agent runs again: one agent start in all");
    let agents = s
        .runner
        .spawner()
        .spawned
        .iter()
        .filter(|(_, sp)| !sp.log.to_string_lossy().contains("-gate-"))
        .count();
    assert_eq!(agents, 1, "{}", s.at());
    assert!(s.runner.done(), "{}", s.at());
    assert!(s.runner.finish().halted.unwrap().contains("gate \"tset\""));
}

#[test]
fn a_run_starts_no_more_agents_than_max_dispatches() {
    let dir = tempfile::tempdir().unwrap();
    let (store, clock, paths) = project(&dir);
    for i in 0..5 {
        add(&store, &format!("t{i}"), 2);
    }
    let cfg = config(
        &dir,
        "[run]\njobs = 2\nmax_dispatches = 3\n[[agent]]\nname = \"a\"\ncommand = [\"a\"]\n",
    );
    let mut s = Sim::new(&store, clock, paths, cfg, RunOptions::default());
    s.start();
    s.step("two start, then one more as each ends, then no more");
    for _ in 0..3 {
        let r = s.running();
        assert!(!r.is_empty(), "{}", s.at());
        s.exit(r[0].key, 0);
    }
    for r in s.running() {
        s.exit(r.key, 0);
    }
    let started = s.runner.spawner().spawned.len();
    assert_eq!(started, 3, "{}", s.at());
    assert!(s.runner.done(), "the run ends by itself {}", s.at());
    let report = s.runner.finish();
    assert_eq!(report.done, 3);
    assert!(report.halted.unwrap().contains("max_dispatches"));
}

#[test]
fn an_agent_silent_for_its_stall_limit_is_stopped_and_the_retry_is_told() {
    let dir = tempfile::tempdir().unwrap();
    let (store, clock, paths) = project(&dir);
    let t = add(&store, "t", 2);
    let cfg = config(
        &dir,
        "[run]\njobs = 1\nkill_grace = \"1s\"\nbackoff = { base = \"1s\", cap = \"1s\" }\n[[agent]]\nname = \"a\"\ncommand = [\"a\"]\nstall = \"10s\"\ntimeout = \"1h\"\n",
    );
    let mut s = Sim::new(&store, clock, paths, cfg, RunOptions::default());
    s.start();
    let r = s.only();
    let log = s.runner.spawner().spawned[0].1.log.clone();
    std::fs::create_dir_all(log.parent().unwrap()).unwrap();
    s.step("output within the limit keeps it alive");
    s.advance(Duration::from_secs(5));
    std::fs::write(&log, "working...\n").unwrap();
    s.advance(Duration::from_secs(5));
    assert!(s.signals().is_empty(), "{}", s.at());
    s.step("then ten silent seconds: SIGTERM");
    s.advance(Duration::from_secs(10));
    assert_eq!(s.signals(), [(r.key, false)], "{}", s.at());
    s.step("it dies: the attempt failed as stalled, and the retry is told so");
    s.deliver(Msg::Exited {
        key: r.key,
        exit: Exit::Signal(15),
    });
    let retrying = events_of(&store, "retrying");
    assert_eq!(retrying.len(), 1, "{}", s.at());
    let failed = retrying[0]["failed"].as_str().unwrap();
    assert!(
        failed.contains("stalled") && failed.contains("10s"),
        "{failed}"
    );
    let prompt = braid_app::prompt::build(&store, &t).unwrap();
    assert!(
        prompt.contains("stalled"),
        "the next attempt's prompt: {prompt}"
    );
}
