//! The engine end to end: `braid run` in real git repositories, with fake
//! agents (scripts in tests/fixtures/agents) and real gate processes.

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::{Proj, git};

pub(crate) fn agent(name: &str) -> String {
    format!(
        "{}/tests/fixtures/agents/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// A braid project inside a git repository with one commit, with `config`
/// as its config.toml.
pub(crate) fn repo_project(config: &str) -> Proj {
    let p = Proj::empty();
    git(p.path(), &["init", "-q", "-b", "main"]);
    git(p.path(), &["config", "user.email", "t@example.com"]);
    git(p.path(), &["config", "user.name", "t"]);
    std::fs::write(p.path().join("README"), "hi\n").unwrap();
    git(p.path(), &["add", "."]);
    git(p.path(), &["commit", "-q", "-m", "init"]);
    p.ok(&["init"]);
    std::fs::write(p.path().join(".braid/config.toml"), config).unwrap();
    p
}

fn events(p: &Proj) -> Vec<serde_json::Value> {
    p.ok(&["events", "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn kinds_for(p: &Proj, id: &str) -> Vec<String> {
    events(p)
        .into_iter()
        .filter(|e| e["task"] == id)
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect()
}

fn quick_run() -> &'static str {
    "\n[run]\n"
}

#[test]
fn runs_ready_work_in_worktrees_in_dependency_order() {
    let p = repo_project(&format!(
        r#"
[[agent]]
name = "fake"
command = ["{}", "{{task}}"]

[[gate]]
name = "file-exists"
command = ["sh", "-c", "ls *.txt"]
"#,
        agent("commit.sh")
    ));
    let a = p.add(&["first"]);
    let b = p.add(&["second", "--dep", &a]);
    let out = p.ok(&["run"]);
    assert!(out.contains("2 dispatched, 2 done"), "{out}");
    for id in [&a, &b] {
        assert_eq!(p.json(&["show", id])["state"], "done");
        // The work is on the task's branch; the worktree is gone once done.
        let files = git(
            p.path(),
            &["ls-tree", "--name-only", &format!("braid/{id}")],
        );
        assert!(files.contains(&format!("{id}.txt")), "{files}");
        assert!(!p.path().join(".braid/worktrees").join(id).exists());
    }
    // The user's own worktree was never touched.
    assert_eq!(
        git(p.path(), &["status", "--porcelain", "--untracked-files=no"]).trim(),
        ""
    );
    assert!(!p.path().join(format!("{a}.txt")).exists());
    // b started only after a was done.
    let evs = events(&p);
    let a_done = evs
        .iter()
        .position(|e| e["task"] == a.as_str() && e["payload"]["to"] == "done")
        .unwrap();
    let b_start = evs
        .iter()
        .position(|e| e["task"] == b.as_str() && e["kind"] == "dispatched")
        .unwrap();
    assert!(a_done < b_start);
    let gate = evs.iter().find(|e| e["kind"] == "gate_finished").unwrap();
    assert_eq!(gate["payload"]["passed"], true);
    // Telemetry was written in a batch at exit.
    let tel = std::fs::read_dir(p.path().join(".braid/telemetry"))
        .unwrap()
        .count();
    assert_eq!(tel, 1);
    let log = p.ok(&["logs", &a]);
    assert!(log.contains("agent for"), "{log}");
    let chunks: Vec<serde_json::Value> = p
        .ok(&["logs", &a, "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(chunks.len(), 2, "the agent's log and the gate's");
    assert!(chunks[0]["path"].as_str().unwrap().ends_with("1-fake.log"));
}

#[test]
fn with_a_merge_target_passing_work_waits_in_review() {
    let p = repo_project(&format!(
        "\n[[agent]]\nname = \"fake\"\ncommand = [\"{}\"]\n\n[merge]\ninto = \"main\"\n",
        agent("commit.sh")
    ));
    let a = p.add(&["a"]);
    p.ok(&["run"]);
    assert_eq!(p.json(&["show", &a])["state"], "review");
    assert!(
        p.path().join(".braid/worktrees").join(&a).exists(),
        "kept for the merge"
    );
}

#[test]
fn a_failure_is_retried_with_its_output_fed_back() {
    let p = repo_project(&format!(
        "{}max_attempts = 3\nbackoff = {{ base = \"10ms\", cap = \"50ms\" }}\n\n[[agent]]\nname = \"flaky\"\ncommand = [\"{}\", \"{{prompt_file}}\"]\n",
        quick_run(),
        agent("flaky.sh")
    ));
    let a = p.add(&["fix the types", "--acceptance", "it compiles"]);
    p.ok(&["run"]);
    let t = p.json(&["show", &a]);
    assert_eq!(t["state"], "done");
    let kinds = kinds_for(&p, &a);
    assert!(kinds.contains(&"retrying".to_owned()), "{kinds:?}");
    let second =
        std::fs::read_to_string(p.path().join(format!(".braid/logs/{a}/2-flaky.log"))).unwrap();
    assert!(second.contains("The previous attempt failed"), "{second}");
    assert!(
        second.contains("error[E0308]: mismatched types"),
        "{second}"
    );
    assert!(
        second.contains("it compiles"),
        "acceptance criteria are in the prompt: {second}"
    );
    // `braid context` prints what the agent got.
    let ctx = p.ok(&["context", &a]);
    assert!(
        ctx.contains("fix the types") && ctx.contains("error[E0308]"),
        "{ctx}"
    );
}

#[test]
fn attempts_exhausted_fail_the_task_and_the_run() {
    let p = repo_project(&format!(
        "{}max_attempts = 2\nbackoff = {{ base = \"10ms\", cap = \"20ms\" }}\n\n[[agent]]\nname = \"bad\"\ncommand = [\"{}\"]\n",
        quick_run(),
        agent("fail.sh")
    ));
    let a = p.add(&["doomed"]);
    let out = p.run(&["run"]);
    assert_eq!(out.status.code(), Some(1));
    let t = p.json(&["show", &a]);
    assert_eq!(t["state"], "failed");
    assert!(
        t["close_reason"].as_str().unwrap().contains("exit 3"),
        "{t}"
    );
    assert!(
        t["close_reason"]
            .as_str()
            .unwrap()
            .contains("attempt 2 of 2"),
        "{t}"
    );
}

/// Tells when every process of an agent's group has ended: the agent
/// (tests/fixtures/agents/hang.sh) holds a FIFO open for writing, and a
/// thread reading it gets end-of-file when the last holder is gone. No
/// polling of /proc.
struct GroupGone {
    fifo: std::path::PathBuf,
    gone: std::sync::mpsc::Receiver<()>,
}

impl GroupGone {
    fn new(p: &Proj) -> GroupGone {
        let fifo = p.path().join("group.fifo");
        assert!(
            Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success(),
            "mkfifo"
        );
        let (tx, gone) = std::sync::mpsc::channel();
        let path = fifo.clone();
        std::thread::spawn(move || {
            use std::io::Read;
            // Opens when the agent opens its end; reads until all of the
            // group's copies are closed.
            let mut f = std::fs::File::open(&path).unwrap();
            let mut sink = Vec::new();
            let _ = f.read_to_end(&mut sink);
            let _ = tx.send(());
        });
        GroupGone { fifo, gone }
    }

    /// Waits (with a generous bound that only a failure reaches) for the
    /// whole group to be gone.
    fn wait(&self, what: &str) {
        self.gone
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("{what}: the agent's process group is still alive"));
    }
}

#[test]
fn a_hanging_agent_is_killed_with_its_process_group() {
    let p = repo_project(&format!(
        "{}max_attempts = 1\nkill_grace = \"200ms\"\n\n[[agent]]\nname = \"stuck\"\ncommand = [\"{}\", \"981\"]\ntimeout = \"300ms\"\n",
        quick_run(),
        agent("hang.sh")
    ));
    let a = p.add(&["hangs"]);
    let group = GroupGone::new(&p);
    let out = p
        .cmd()
        .arg("run")
        .env("BRAID_TEST_FIFO", &group.fifo)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let t = p.json(&["show", &a]);
    assert_eq!(t["state"], "failed");
    assert!(
        t["close_reason"].as_str().unwrap().contains("timed out"),
        "{t}"
    );
    group.wait("the agent's child must die with the group");
}

#[test]
fn a_rate_limited_agent_cools_down_and_the_failover_takes_the_task() {
    let p = repo_project(&format!(
        "\n[[agent]]\nname = \"limited\"\ncommand = [\"{}\"]\nrate_limit = ['(?i)retry after (?P<retry_after>\\d+) seconds']\nfailover = [\"backup\"]\n\n[[agent]]\nname = \"backup\"\ncommand = [\"{}\"]\n",
        agent("ratelimit.sh"),
        agent("commit.sh")
    ));
    let a = p.add(&["x"]);
    p.ok(&["run"]);
    let t = p.json(&["show", &a]);
    assert_eq!(t["state"], "done");
    assert_eq!(t["assignee"], "backup");
    let evs = events(&p);
    let cd = evs
        .iter()
        .find(|e| e["kind"] == "cooldown")
        .expect("a cooldown event");
    assert_eq!(cd["payload"]["agent"], "limited");
    let secs = cd["payload"]["seconds"].as_f64().unwrap();
    assert!(
        (29.0..=30.0).contains(&secs),
        "cooldown follows the retry-after: {secs}"
    );
    // The rate-limited try was not an attempt.
    let claims: Vec<_> = evs
        .iter()
        .filter(|e| e["kind"] == "claimed")
        .map(|e| e["payload"]["attempt"].as_i64().unwrap())
        .collect();
    assert_eq!(claims, vec![1, 1]);
}

#[test]
fn a_flaky_gate_is_retried_then_passes() {
    let p = repo_project(&format!(
        "{}backoff = {{ base = \"10ms\", cap = \"20ms\" }}\n\n[[agent]]\nname = \"fake\"\ncommand = [\"{}\"]\n\n[[gate]]\nname = \"flaky\"\ncommand = [\"sh\", \"-c\", \"test -f ../../gate-marker || {{ touch ../../gate-marker; echo flake; exit 1; }}\"]\n",
        quick_run(),
        agent("commit.sh")
    ));
    let a = p.add(&["x"]);
    p.ok(&["run"]);
    assert_eq!(p.json(&["show", &a])["state"], "done");
    let gates: Vec<bool> = events(&p)
        .into_iter()
        .filter(|e| e["kind"] == "gate_finished")
        .map(|e| e["payload"]["passed"].as_bool().unwrap())
        .collect();
    assert_eq!(gates, vec![false, true]);
}

#[test]
fn cancel_stops_the_running_agent() {
    let p = repo_project(&format!(
        "\n[[agent]]\nname = \"stuck\"\ncommand = [\"{}\", \"982\"]\n",
        agent("hang.sh")
    ));
    let a = p.add(&["long"]);
    let group = GroupGone::new(&p);
    let mut run = crate::Reap(
        p.cmd()
            .args(["run", "--json"])
            .env("BRAID_TEST_FIFO", &group.fifo)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut lines = lines_of(&mut run.0);
    wait_for(&mut lines, "\"dispatched\"");
    p.ok(&["cancel", &a]);
    let status = run.0.wait().unwrap();
    assert!(
        status.code().is_some(),
        "run exits by itself after the cancel"
    );
    assert_eq!(p.json(&["show", &a])["state"], "cancelled");
    group.wait("the cancelled task's agent");
}

#[test]
fn two_runs_on_one_project_never_share_a_task() {
    let p = repo_project(&format!(
        "{}jobs = 2\n\n[[agent]]\nname = \"fake\"\ncommand = [\"{}\"]\n",
        quick_run(),
        agent("commit.sh")
    ));
    for i in 0..16 {
        p.add(&[&format!("t{i}")]);
    }
    let ledger = p.path().join("ledger.txt");
    let spawn = || {
        p.cmd()
            .arg("run")
            .env("BRAID_TEST_LEDGER", &ledger)
            .env("BRAID_TEST_DELAY", "0.05")
            .stdout(Stdio::null())
            .spawn()
            .unwrap()
    };
    let (mut r1, mut r2) = (spawn(), spawn());
    assert!(r1.wait().unwrap().success());
    assert!(r2.wait().unwrap().success());
    let mut ran: Vec<String> = std::fs::read_to_string(&ledger)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(ran.len(), 16);
    ran.sort();
    ran.dedup();
    assert_eq!(ran.len(), 16, "a task ran twice");
    assert_eq!(p.json(&["health"])["by_state"]["done"], 16);
}

#[test]
fn an_invalid_config_fails_fast_naming_file_line_and_key() {
    let p = repo_project("\n[[agent]]\nname = \"x\"\ncommand = [\"true\"]\nmax_concurent = 2\n");
    p.add(&["a"]);
    let err = p.fails(&["run"], 2);
    assert!(
        err.contains("config.toml:") && err.contains("max_concurent"),
        "{err}"
    );
    assert_eq!(
        p.json(&["health"])["by_state"]["in_progress"],
        0,
        "nothing was claimed"
    );
}

/// kill -9 of `braid run` at random moments, then `braid run` again: no task
/// is lost, none is completed twice.
#[test]
fn crash_test_kill_9_at_random_points() {
    let p = repo_project(&format!(
        "{}jobs = 3\nlease = \"400ms\"\n\n[[agent]]\nname = \"fake\"\ncommand = [\"{}\"]\n\n[[gate]]\nname = \"ok\"\ncommand = [\"true\"]\n",
        quick_run(),
        agent("commit.sh")
    ));
    let ids: Vec<String> = (0..40).map(|i| p.add(&[&format!("t{i}")])).collect();
    let mut seed: u64 = 0x9e3779b97f4a7c15;
    for _ in 0..20 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let mut child = p
            .cmd()
            .args(["run", "--json"])
            .env("BRAID_TEST_DELAY", "0.05")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // The kill lands at a random point of the run, counted in the
        // events it has printed: that is the test.
        let lines = lines_of(&mut child);
        for _ in 0..seed % 16 {
            if lines.recv_timeout(Duration::from_secs(60)).is_err() {
                break; // the run ended first
            }
        }
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
    }
    let out = p.run(&["run"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let evs = events(&p);
    for id in &ids {
        assert_eq!(p.json(&["show", id])["state"], "done", "{id} lost");
        let completions = evs
            .iter()
            .filter(|e| {
                e["task"] == id.as_str()
                    && e["kind"] == "state_changed"
                    && e["payload"]["to"] == "done"
            })
            .count();
        assert_eq!(completions, 1, "{id} completed {completions} times");
    }
    for id in &ids {
        // A gate whose passing result was recorded never runs again.
        let ran = evs
            .iter()
            .filter(|e| {
                e["task"] == id.as_str()
                    && e["kind"] == "gate_finished"
                    && e["payload"]["cached"] == false
                    && e["payload"]["passed"] == true
            })
            .count();
        assert!(ran <= 1, "{id}: a recorded gate ran {ran} times");
    }
    let rescued = evs.iter().filter(|e| e["kind"] == "rescued").count();
    assert!(rescued > 0, "the kills must have hit work in flight");
    // seq strictly increases through all the crashes.
    assert!(
        evs.windows(2)
            .all(|w| w[0]["seq"].as_i64() < w[1]["seq"].as_i64())
    );
}

#[test]
fn a_gate_that_passed_on_the_same_content_is_not_run_again() {
    let p = repo_project(&format!(
        "\n[[agent]]\nname = \"fake\"\ncommand = [\"{}\"]\n\n[[gate]]\nname = \"count\"\ncommand = [\"sh\", \"-c\", \"echo ran >> ../../gate-runs\"]\n",
        agent("commit.sh")
    ));
    let a = p.add(&["x"]);
    p.ok(&["run"]);
    p.ok(&["reopen", &a]);
    p.ok(&["run"]);
    let cached: Vec<bool> = events(&p)
        .into_iter()
        .filter(|e| e["kind"] == "gate_finished")
        .map(|e| e["payload"]["cached"].as_bool().unwrap())
        .collect();
    assert_eq!(cached, vec![false, true]);
    let runs = std::fs::read_to_string(p.path().join(".braid/gate-runs")).unwrap();
    assert_eq!(runs.lines().count(), 1);
    let stats = p.json(&["cache", "stats"]);
    assert_eq!(stats["entries"], 1, "{stats}");
}

#[test]
fn gate_run_by_hand_uses_the_same_cache() {
    let p = repo_project(&format!(
        "\n[[agent]]\nname = \"fake\"\ncommand = [\"{}\"]\n\n[[gate]]\nname = \"ok\"\ncommand = [\"true\"]\n\n[merge]\ninto = \"main\"\n",
        agent("commit.sh")
    ));
    let a = p.add(&["x"]);
    p.ok(&["run"]);
    // In review, the worktree stays: the same content already passed.
    let again = p.json(&["gate", "run", &a]);
    assert_eq!(again[0]["cached"], true, "{again}");
    let forced = p.json(&["gate", "run", &a, "--no-cache"]);
    assert_eq!(forced[0]["cached"], false);
    assert_eq!(forced[0]["passed"], true);
}

fn sigint(child: &std::process::Child) {
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
}

/// Reads the run's JSON lines until one contains `needle`.
fn wait_for(lines: &mut std::sync::mpsc::Receiver<String>, needle: &str) {
    loop {
        // A generous bound: a run that goes quiet fails the test (and the
        // Reap guard kills it) instead of hanging the suite.
        let l = lines
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("waiting for {needle}: {e}"));
        if l.contains(needle) {
            return;
        }
    }
}

/// The child's stdout as a channel of lines, read on a thread.
fn lines_of(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(out).lines() {
            let Ok(l) = l else { break };
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    rx
}

#[test]
fn first_signal_lets_running_work_finish_and_dispatches_nothing_new() {
    let p = repo_project(&format!(
        "{}jobs = 1\n\n[[agent]]\nname = \"slow\"\ncommand = [\"{}\"]\n",
        quick_run(),
        agent("commit.sh")
    ));
    let a = p.add(&["first", "-p", "0"]);
    let b = p.add(&["second", "-p", "1"]);
    let mut run = crate::Reap(
        p.cmd()
            .args(["run", "--json"])
            .env("BRAID_TEST_DELAY", "0.5")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut lines = lines_of(&mut run.0);
    wait_for(&mut lines, "\"dispatched\"");
    sigint(&run.0);
    let status = run.0.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(1),
        "an interrupted run is not a clean success"
    );
    assert_eq!(
        p.json(&["show", &a])["state"],
        "done",
        "running work finished"
    );
    assert_eq!(
        p.json(&["show", &b])["state"],
        "open",
        "nothing new was started"
    );
    assert_eq!(p.json(&["show", &b])["ready"], true);
}

#[test]
fn second_signal_stops_at_once_and_gives_claims_back() {
    // Two tasks: one agent hangs, the other fails and waits a minute for
    // its retry. The first signal gives the waiting one back (a `released`
    // event says the run heard it); the second stops the hanging one.
    let p = repo_project(&format!(
        "\n[run]\njobs = 2\nbackoff = {{ base = \"1m\", cap = \"1m\" }}\n\n[[agent]]\nname = \"stuck\"\ncommand = [\"{}\", \"983\"]\n\n[[agent]]\nname = \"fails\"\ncommand = [\"{}\"]\n",
        agent("hang.sh"),
        agent("fail.sh")
    ));
    let a = p.add(&["long", "--agent", "stuck"]);
    let b = p.add(&["fails", "--agent", "fails"]);
    let group = GroupGone::new(&p);
    let mut run = crate::Reap(
        p.cmd()
            .args(["run", "--json"])
            .env("BRAID_TEST_FIFO", &group.fifo)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut lines = lines_of(&mut run.0);
    wait_for(&mut lines, "\"retrying\"");
    sigint(&run.0);
    wait_for(&mut lines, "\"released\"");
    assert_eq!(
        p.json(&["show", &b])["state"],
        "open",
        "the retry was given up"
    );
    assert_eq!(
        p.json(&["show", &a])["state"],
        "in_progress",
        "a still runs"
    );
    sigint(&run.0);
    run.0.wait().unwrap();
    let t = p.json(&["show", &a]);
    assert_eq!(t["state"], "open", "{t}");
    assert!(t["lease"].is_null());
    group.wait("the second signal kills the agent");
}

#[test]
fn follow_mode_picks_up_work_added_later() {
    let p = repo_project(&format!(
        "\n[[agent]]\nname = \"fake\"\ncommand = [\"{}\"]\n",
        agent("commit.sh")
    ));
    let mut run = crate::Reap(
        p.cmd()
            .args(["run", "--follow", "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut lines = lines_of(&mut run.0);
    let a = p.add(&["added while running"]);
    wait_for(&mut lines, "\"to\":\"done\"");
    assert_eq!(p.json(&["show", &a])["state"], "done");
    sigint(&run.0);
    run.0.wait().unwrap();
}

#[test]
fn with_every_agent_cooling_down_the_run_waits_for_the_cooldown() {
    let p = repo_project(&format!(
        "\n[[agent]]\nname = \"busy\"\ncommand = [\"{}\"]\ncooldown = \"300ms\"\nrate_limit = ['(?i)usage limit reached']\n",
        agent("ratelimit-once.sh")
    ));
    let a = p.add(&["x"]);
    p.ok(&["run"]);
    assert_eq!(p.json(&["show", &a])["state"], "done");
    let kinds = kinds_for(&p, &a);
    let cd = kinds
        .iter()
        .position(|k| k == "cooldown")
        .expect("cooled down");
    let reclaimed = kinds.iter().rposition(|k| k == "claimed").unwrap();
    assert!(
        cd < reclaimed,
        "claimed again after the cooldown: {kinds:?}"
    );
    let cooldown = events(&p)
        .into_iter()
        .find(|e| e["kind"] == "cooldown")
        .unwrap();
    assert_eq!(
        cooldown["payload"]["seconds"], 0.3,
        "no time in the message: the default cooldown"
    );
}

#[test]
fn max_tasks_and_only_bound_a_run() {
    let p = repo_project(&format!(
        "\n[[agent]]\nname = \"fake\"\ncommand = [\"{}\"]\n",
        agent("commit.sh")
    ));
    let ids: Vec<String> = (0..4)
        .map(|i| p.add(&[&format!("t{i}"), "-p", &i.to_string()]))
        .collect();
    p.ok(&["run", "--max-tasks", "1"]);
    assert_eq!(
        p.json(&["show", &ids[0]])["state"],
        "done",
        "the highest priority went first"
    );
    assert_eq!(p.json(&["health"])["by_state"]["done"], 1);
    // A claim someone holds elsewhere (30 min) does not keep a run that
    // is limited to other tasks waiting for it.
    p.ok(&["--actor", "elsewhere", "claim", &ids[2]]);
    p.ok(&["run", "--only", &ids[3]]);
    assert_eq!(p.json(&["show", &ids[3]])["state"], "done");
    assert_eq!(p.json(&["show", &ids[1]])["state"], "open");
    assert_eq!(p.json(&["show", &ids[2]])["state"], "in_progress");
    // Telemetry: every event of both runs, one JSON line each.
    let day = std::fs::read_dir(p.path().join(".braid/telemetry"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let lines = std::fs::read_to_string(day).unwrap().lines().count();
    let engine_events = events(&p)
        .into_iter()
        .filter(|e| e["actor"] == "tester" && e["kind"] != "created")
        .count();
    assert_eq!(lines, engine_events);
}

#[test]
fn a_cancelled_task_loses_its_worktree_but_keeps_its_branch() {
    let p = repo_project(&format!(
        "\n[[agent]]\nname = \"stuck\"\ncommand = [\"{}\", \"984\"]\n",
        agent("hang.sh")
    ));
    let a = p.add(&["long"]);
    let mut run = crate::Reap(
        p.cmd()
            .args(["run", "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut lines = lines_of(&mut run.0);
    wait_for(&mut lines, "\"dispatched\"");
    assert!(p.path().join(".braid/worktrees").join(&a).exists());
    p.ok(&["cancel", &a]);
    run.0.wait().unwrap();
    assert!(!p.path().join(".braid/worktrees").join(&a).exists());
    git(p.path(), &["rev-parse", "--verify", &format!("braid/{a}")]);
}

#[test]
fn a_terminal_shows_live_progress_counts_and_running_agents() {
    // script(1) gives braid a pseudo-terminal, as a person's shell would.
    let p = Proj::init();
    std::fs::write(
        p.path().join(".braid/config.toml"),
        "[run]\njobs = 2\n\n[[agent]]\nname = \"slow\"\ncommand = [\"sh\", \"-c\", \"sleep 0.6\"]\n",
    )
    .unwrap();
    let a = p.add(&["first"]);
    let b = p.add(&["second", "--dep", &a]);
    let out = Command::new("script")
        .current_dir(p.path())
        .env("TERM", "xterm")
        .env("BRAID_ACTOR", "tester")
        .env("BRAID_CACHE_DIR", p.cache.path())
        .env_remove("BRAID_DB")
        .args([
            "-qfec",
            &format!("{} run", env!("CARGO_BIN_EXE_braid")),
            "/dev/null",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("script(1) runs");
    assert!(out.status.success(), "{out:?}");
    let screen = String::from_utf8_lossy(&out.stdout);
    // The status line with the counts, and a line per running agent.
    assert!(
        screen.contains("ready ") && screen.contains(" · running "),
        "{screen}"
    );
    assert!(
        screen.contains(&format!("{a}  slow (attempt 1)")),
        "{screen}"
    );
    assert!(
        screen.contains(&format!("{b}  slow (attempt 1)")),
        "{screen}"
    );
    assert!(screen.contains("done 2"), "{screen}");
    // Redrawn in place: cursor movement, not a new line per tick.
    assert!(
        screen.contains("\u{1b}["),
        "no terminal control sequences: {screen}"
    );
    // Off a terminal the same run prints plain lines only.
    p.ok(&["reopen", &a, &b]);
    let plain = p.ok(&["run"]);
    assert!(
        !plain.contains('\u{1b}') && !plain.contains(" · running "),
        "{plain}"
    );
}

#[test]
fn bad_commands_and_a_missing_merge_target_fail_before_anything_is_claimed() {
    let cases = [
        (
            "\n[[agent]]\nname = \"claude\"\ncommand = [\"claud-typo-braid\", \"-p\", \"{prompt}\"]\n",
            vec![
                "config.toml:3",
                "agent \"claude\"",
                "claud-typo-braid",
                "not on PATH",
            ],
        ),
        (
            "\n[[agent]]\nname = \"ok\"\ncommand = [\"true\"]\n\n[[gate]]\nname = \"test\"\ncommand = [\"cargo-tset-braid\"]\n",
            vec!["config.toml:7", "gate \"test\"", "cargo-tset-braid"],
        ),
        (
            "\n[[agent]]\nname = \"ok\"\ncommand = [\"./scripts/agent.sh\"]\n",
            vec!["config.toml:3", "does not exist", "scripts/agent.sh"],
        ),
        (
            "\n[merge]\ninto = \"mian\"\n\n[[agent]]\nname = \"ok\"\ncommand = [\"true\"]\n",
            vec!["config.toml:3", "\"mian\"", "no branch"],
        ),
    ];
    for (config, needles) in cases {
        let p = repo_project(config);
        let a = p.add(&["x"]);
        let err = p.fails(&["run"], 2);
        for n in &needles {
            assert!(err.contains(n), "{config}: missing {n:?} in {err}");
        }
        assert!(err.contains("nothing was claimed"), "{err}");
        let kinds = kinds_for(&p, &a);
        assert_eq!(
            kinds,
            vec!["created"],
            "{config}: nothing happened to the task"
        );
    }
}

#[test]
fn an_agent_that_cannot_start_during_a_run_costs_no_attempt_and_the_run_says_why() {
    // Known only at dispatch (a placeholder in the program), so preflight
    // lets it through; starting it fails.
    let p = repo_project(
        "\n[run]\njobs = 1\n\n[[agent]]\nname = \"late\"\ncommand = [\"{worktree}/no-such-agent.sh\"]\n",
    );
    let a = p.add(&["x"]);
    let b = p.add(&["y"]);
    let out = p.run(&["run"]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("Stopped dispatching") && stdout.contains("could not start"),
        "{stdout}"
    );
    let t = p.json(&["show", &a]);
    assert_eq!(t["state"], "open", "{t}");
    let again = p.json(&["claim", &a]);
    assert_eq!(
        again["lease"]["attempt"], 1,
        "the failed start was not an attempt"
    );
    assert_eq!(
        kinds_for(&p, &b),
        vec!["created"],
        "the other task was not tried"
    );
}

#[test]
fn an_agent_that_changes_nothing_has_failed_unless_its_config_allows_it() {
    let cases = [
        ("", "failed"),
        ("\n[merge]\ninto = \"main\"\n", "failed"),
        ("allow_empty = true\n", "done"),
    ];
    for (extra, want) in cases {
        let (agent_extra, merge) = if extra.starts_with('\n') {
            ("", extra)
        } else {
            (extra, "")
        };
        let p = repo_project(&format!(
            "\n[run]\nmax_attempts = 1\n\n[[agent]]\nname = \"idle\"\ncommand = [\"true\"]\n{agent_extra}{merge}"
        ));
        let a = p.add(&["nothing to see"]);
        p.run(&["run"]);
        let t = p.json(&["show", &a]);
        assert_eq!(t["state"], want, "{extra:?}: {t}");
        if want == "failed" {
            assert!(
                t["close_reason"]
                    .as_str()
                    .unwrap()
                    .contains("made no changes"),
                "{t}"
            );
            assert!(
                !kinds_for(&p, &a).iter().any(|k| k == "gate_finished"),
                "no gate runs on empty work"
            );
        }
    }
}

#[test]
fn a_silent_agent_is_stopped_at_its_stall_limit() {
    let p = repo_project(&format!(
        "\n[run]\nmax_attempts = 1\nkill_grace = \"200ms\"\n\n[[agent]]\nname = \"quiet\"\ncommand = [\"{}\", \"984\"]\nstall = \"500ms\"\n",
        agent("hang.sh")
    ));
    let a = p.add(&["never says a word"]);
    let group = GroupGone::new(&p);
    let out = p
        .cmd()
        .arg("run")
        .env("BRAID_TEST_FIFO", &group.fifo)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let t = p.json(&["show", &a]);
    assert_eq!(t["state"], "failed", "{t}");
    assert!(
        t["close_reason"].as_str().unwrap().contains("stalled"),
        "{t}"
    );
    group.wait("the stalled agent's group");
}

/// Waits until `ready` answers something, looking again each time the
/// folder `dir` changes (bounded: what never comes fails the test).
pub(crate) fn when_changed<T>(
    dir: &std::path::Path,
    what: &str,
    mut ready: impl FnMut() -> Option<T>,
) -> T {
    use notify::Watcher;
    let (tx, rx) = std::sync::mpsc::channel();
    let mut watcher = notify::recommended_watcher(move |_| {
        // The test may have what it waited for already.
        let _ = tx.send(());
    })
    .unwrap();
    std::fs::create_dir_all(dir).unwrap();
    watcher
        .watch(dir, notify::RecursiveMode::NonRecursive)
        .unwrap();
    loop {
        if let Some(v) = ready() {
            return v;
        }
        rx.recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("waited 60 s for {what}"));
    }
}

/// The spans agents wrote (`start|end TASK ATTEMPT PID`), once `want` start
/// lines are there.
fn spans_with(path: &std::path::Path, want: usize) -> Vec<Vec<String>> {
    when_changed(path.parent().unwrap(), "agents to start", || {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<Vec<String>> = text
            .lines()
            .map(|l| l.split(' ').map(str::to_owned).collect())
            .collect();
        (lines.iter().filter(|l| l[0] == "start").count() >= want).then_some(lines)
    })
}

fn alive(pid: &str) -> bool {
    // A zombie still answers kill -0, but has stopped working.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

/// No task ever has two agents at once: for each task, its spans open and
/// close in turn, and every one that opened closed.
fn assert_no_overlap(spans: &[Vec<String>]) {
    let mut open: std::collections::HashMap<&str, &str> = Default::default();
    for s in spans {
        let (what, task, pid) = (s[0].as_str(), s[1].as_str(), s[3].as_str());
        match what {
            "start" => {
                if let Some(other) = open.insert(task, pid) {
                    panic!("{task}: agent {pid} started while {other} still worked: {spans:?}");
                }
            }
            _ => assert_eq!(open.remove(task), Some(pid), "{spans:?}"),
        }
    }
    assert!(open.is_empty(), "agents that never ended: {open:?}");
}

/// A `braid run` of the spans project, once both its agents have started.
fn start_spans_run(p: &Proj, spans: &std::path::Path) -> (std::process::Child, Vec<Vec<String>>) {
    let run = p
        .cmd()
        .args(["run"])
        .env("BRAID_SPANS", spans)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = spans_with(spans, 2);
    for s in &started {
        recorded(p, &s[3]);
    }
    (run, started)
}

/// Waits until braid has recorded the process group led by `pid` (it
/// writes the record right after the spawn returns, a moment after the
/// process may have begun: a kill in that moment would leave it
/// unrecorded, which the tests do not aim at).
fn recorded(p: &Proj, pid: &str) -> serde_json::Value {
    let procs = p.path().join(".braid/procs");
    when_changed(&procs, "the process record", || {
        braid_run::procs::recorded(&procs)
            .into_iter()
            .find(|r| r.leader.pid.to_string() == pid)
            .map(|r| serde_json::to_value(r).unwrap())
    })
}

fn spans_project() -> (Proj, std::path::PathBuf, Vec<String>) {
    let p = repo_project(&format!(
        "\n[run]\njobs = 2\nlease = \"2s\"\n\n[[agent]]\nname = \"spans\"\ncommand = [\"{}\"]\n",
        agent("spans.sh")
    ));
    let spans = p.path().join("spans");
    let ids = vec![p.add(&["one"]), p.add(&["two"])];
    (p, spans, ids)
}

#[test]
fn agents_of_a_run_killed_with_sigkill_stop_before_the_next_run_starts_any() {
    let (p, spans, ids) = spans_project();
    let (mut first, started) = start_spans_run(&p, &spans);
    first.kill().unwrap(); // SIGKILL: nothing of it runs on
    first.wait().unwrap();
    let orphans: Vec<String> = started.iter().map(|s| s[3].clone()).collect();
    assert!(
        orphans.iter().all(|pid| alive(pid)),
        "the agents outlived their run: the case to handle"
    );
    // Each was recorded as it started (its group, its leader's start time,
    // its owner), before anything else could be lost.
    let records = braid_run::procs::recorded(&p.path().join(".braid/procs"));
    for s in &started {
        let rec = records
            .iter()
            .find(|r| r.holds == s[1] && r.leader.pid.to_string() == s[3])
            .map(|r| serde_json::to_value(r).unwrap())
            .unwrap_or_else(|| panic!("no record of {s:?} in {records:?}"));
        assert_eq!(rec["leader"]["pid"].to_string(), s[3], "{rec}");
        assert!(rec["leader"]["start"].as_u64().is_some(), "{rec}");
        assert_eq!(rec["holds"], s[1].as_str());
    }

    let out = p
        .cmd()
        .args(["run"])
        .env("BRAID_SPANS", &spans)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("2 done"), "{stdout}");
    assert!(
        stdout.contains("Stopped 2 process group(s) another braid left working"),
        "{stdout}"
    );
    for pid in &orphans {
        assert!(!alive(pid), "agent {pid} of the killed run still runs");
    }
    let all = spans_with(&spans, 4);
    assert_no_overlap(&all);
    // The old agents ended before any new one began.
    let first_new = all
        .iter()
        .position(|s| s[0] == "start" && s[2] == "2")
        .unwrap();
    let old_ends = all
        .iter()
        .rposition(|s| s[0] == "end" && s[2] == "1")
        .unwrap();
    assert!(old_ends < first_new, "{all:?}");
    // Each attempt recorded its process group and its start time.
    let evs = events(&p);
    for id in &ids {
        // (The killed run's own events may not have been written yet.)
        let dispatched: Vec<_> = evs
            .iter()
            .filter(|e| e["task"] == id.as_str() && e["kind"] == "dispatched")
            .filter(|e| e["payload"]["attempt"] == 2)
            .collect();
        assert_eq!(dispatched.len(), 1, "{dispatched:?}");
        for d in dispatched {
            assert!(d["payload"]["pgid"].as_u64().unwrap() > 1, "{d}");
            assert!(d["payload"]["started"].as_u64().is_some(), "{d}");
        }
    }
    assert_eq!(
        braid_run::procs::recorded(&p.path().join(".braid/procs")),
        Vec::new(),
        "no record of a process that ended is kept"
    );
    assert_eq!(
        std::fs::read_dir(p.path().join(".braid/procs")).map_or(0, |d| d.count()),
        0,
        "nor a journal of a braid that ended"
    );
}

#[test]
fn a_run_that_takes_over_an_expired_claim_stops_the_live_holders_agent_first() {
    let (p, spans, ids) = spans_project();
    let (mut first, started) = start_spans_run(&p, &spans);
    // Frozen, not dead: its leases run out while it and its agents live.
    Command::new("kill")
        .args(["-STOP", &first.id().to_string()])
        .status()
        .unwrap();
    let out = p
        .cmd()
        .args(["run"])
        .env("BRAID_SPANS", &spans)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    Command::new("kill")
        .args(["-CONT", &first.id().to_string()])
        .status()
        .unwrap();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("2 done"), "{stdout}");
    for s in &started {
        assert!(!alive(&s[3]), "the frozen run's agent {} still runs", s[3]);
    }
    // The frozen run wakes to find its claims gone, and ends.
    let status = first.wait().unwrap();
    assert!(status.code().is_some(), "{status:?}");
    assert_no_overlap(&spans_with(&spans, 4));
    for id in &ids {
        assert_eq!(p.json(&["show", id])["state"], "done");
    }
}

#[test]
fn gates_left_by_a_killed_run_or_merge_run_are_stopped_by_the_next_one() {
    let p = Proj::empty();
    git(p.path(), &["init", "-q", "-b", "main"]);
    git(p.path(), &["config", "user.email", "t@example.com"]);
    git(p.path(), &["config", "user.name", "t"]);
    std::fs::write(p.path().join(".gitignore"), ".braid/\n").unwrap();
    git(p.path(), &["add", "."]);
    git(p.path(), &["commit", "-q", "-m", "init"]);
    p.ok(&["init"]);
    let spans = p.path().join("gate-spans");
    let once = p.path().join("gate-once");
    // The gate hangs the first time it runs, and passes after.
    let gate = format!(
        "echo start x 1 $$ >> {s}; trap 'echo end x 1 $$ >> {s}; exit 143' TERM; \
         if [ -e {o} ]; then echo end x 1 $$ >> {s}; exit 0; fi; touch {o}; sleep 120 & wait",
        s = spans.display(),
        o = once.display()
    );
    std::fs::write(
        p.path().join(".braid/config.toml"),
        format!(
            "[cache]\nenabled = false\n[run]\nlease = \"2s\"\n[merge]\ninto = \"main\"\n[[agent]]\nname = \"fake\"\ncommand = [\"{}\"]\n\
             [[gate]]\nname = \"hang\"\ncommand = [\"sh\", \"-c\", {}]\n",
            agent("commit.sh"),
            serde_json::to_string(&gate).unwrap()
        ),
    )
    .unwrap();
    let id = p.add(&["x"]);

    // The engine's gate.
    let mut run = p.cmd().args(["run"]).stdout(Stdio::null()).spawn().unwrap();
    let first = spans_with(&spans, 1);
    recorded(&p, &first[0][3]);
    run.kill().unwrap();
    run.wait().unwrap();
    assert!(alive(&first[0][3]), "the gate outlived its run");
    let out = p.ok(&["run"]);
    assert!(out.contains("Stopped 1 process group(s)"), "{out}");
    assert!(!alive(&first[0][3]));
    assert_eq!(p.json(&["show", &id])["state"], "review");
    assert_no_overlap(&spans_with(&spans, 2));

    // A merge candidate's gate.
    std::fs::remove_file(&once).unwrap();
    let mut merge = p
        .cmd()
        .args(["merge", "run"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let second = spans_with(&spans, 3);
    let orphan = second.iter().rev().find(|s| s[0] == "start").unwrap()[3].clone();
    recorded(&p, &orphan);
    merge.kill().unwrap();
    merge.wait().unwrap();
    assert!(
        alive(&orphan),
        "the candidate's gate outlived its merge run"
    );
    p.ok(&["merge", "run"]);
    assert!(!alive(&orphan));
    assert_eq!(p.json(&["show", &id])["state"], "done");
    assert_no_overlap(&spans_with(&spans, 4));
}
