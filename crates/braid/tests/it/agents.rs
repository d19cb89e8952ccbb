//! braid with the real Claude Code CLI (pinned, installed from npm into
//! target/ by tests/agents/install.sh) against the scripted model server
//! (tests/agents/model_server.mjs) on loopback. Where npm cannot be
//! reached, a loud `SKIPPED: real agent CLIs` line, as for PostgreSQL.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::git;
use crate::run::repo_project;

fn agents_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/agents")
}

/// The installed CLIs: `claude` (native) and `codex` (npm's launcher).
struct Clis {
    claude: PathBuf,
    codex: PathBuf,
}

/// The pinned CLIs, installed once, or `None` (said loudly) when npm is
/// out of reach.
fn clis() -> Option<Clis> {
    let out = Command::new("bash")
        .arg(agents_dir().join("install.sh"))
        .output()
        .expect("running tests/agents/install.sh");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.code() == Some(3) {
        eprintln!("{text}");
        eprintln!("SKIPPED: real agent CLIs (npm unreachable)");
        return None;
    }
    assert!(
        out.status.success(),
        "install.sh: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bin = |key: &str| {
        PathBuf::from(
            text.lines()
                .find_map(|l| l.strip_prefix(key))
                .unwrap_or_else(|| panic!("install.sh names {key}")),
        )
    };
    Some(Clis {
        claude: bin("CLAUDE_BIN="),
        codex: bin("CODEX_BIN="),
    })
}

/// The model server, and the environment that points both CLIs at it
/// (offline: nothing else is contacted).
struct Models {
    server: ModelServer,
    home: tempfile::TempDir,
    codex_home: tempfile::TempDir,
    path: String,
    requests: PathBuf,
}

impl Models {
    fn start(p: &crate::Proj, clis: &Clis, script: serde_json::Value) -> Models {
        let file = p.path().join("script.json");
        std::fs::write(&file, script.to_string()).unwrap();
        let requests = p.path().join("requests.jsonl");
        let server = ModelServer::start(&file, &requests);
        let codex_home = tempfile::tempdir().unwrap();
        std::fs::write(
            codex_home.path().join("config.toml"),
            format!(
                "model = \"gpt-5.5\"\nmodel_provider = \"braidtest\"\ncheck_for_update_on_startup = false\n\
                 [model_providers.braidtest]\nname = \"braid test server\"\n\
                 base_url = \"http://127.0.0.1:{}/v1\"\nenv_key = \"BRAID_TEST_API_KEY\"\n\
                 wire_api = \"responses\"\nrequest_max_retries = 0\nstream_max_retries = 0\n\
                 [analytics]\nenabled = false\n[feedback]\nenabled = false\n\
                 [features]\nplugins = false\nunbounded_connection_retries = false\n",
                server.1
            ),
        )
        .unwrap();
        // Both CLIs' folders first; node for Codex's launcher.
        let path = format!(
            "{}:{}:/usr/local/bin:/usr/bin:/bin",
            clis.claude.parent().unwrap().display(),
            clis.codex.parent().unwrap().display()
        );
        Models {
            server,
            home: tempfile::tempdir().unwrap(),
            codex_home,
            path,
            requests,
        }
    }

    /// braid with both CLIs pointed at the server; at most two minutes.
    fn braid(&self, p: &crate::Proj, args: &[&str]) -> std::process::Output {
        use wait_timeout::ChildExt;
        let port = self.server.1;
        let mut child = p
            .cmd()
            .args(args)
            .env("PATH", &self.path)
            .env("HOME", self.home.path())
            .env("ANTHROPIC_BASE_URL", format!("http://127.0.0.1:{port}"))
            .env("ANTHROPIC_API_KEY", "sk-braid-test")
            .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
            .env("DISABLE_TELEMETRY", "1")
            .env("DISABLE_AUTOUPDATER", "1")
            .env("CLAUDE_CODE_MAX_RETRIES", "0")
            .env("CODEX_HOME", self.codex_home.path())
            .env("BRAID_TEST_API_KEY", "sk-braid-test")
            .env("HTTPS_PROXY", format!("http://127.0.0.1:{port}"))
            .env("HTTP_PROXY", format!("http://127.0.0.1:{port}"))
            .env("NO_PROXY", "127.0.0.1,localhost")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        let read = |mut r: Box<dyn std::io::Read + Send>| {
            std::thread::spawn(move || {
                let mut v = Vec::new();
                r.read_to_end(&mut v).unwrap();
                v
            })
        };
        let (o, e) = (read(Box::new(out)), read(Box::new(err)));
        let Some(status) = child
            .wait_timeout(std::time::Duration::from_secs(120))
            .unwrap()
        else {
            let _ = child.kill();
            panic!("braid {args:?} did not finish within 2 minutes");
        };
        std::process::Output {
            status,
            stdout: o.join().unwrap(),
            stderr: e.join().unwrap(),
        }
    }

    /// What the server was asked, in order.
    fn requests(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.requests)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The main-loop model calls (not side calls, probes or token counts).
    fn main_calls(&self) -> Vec<serde_json::Value> {
        self.requests()
            .into_iter()
            .filter(|r| r["kind"] == "main")
            .collect()
    }
}

fn said(o: &std::process::Output) -> String {
    format!(
        "exit {:?}\n--- stdout ---\n{}--- stderr ---\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Every agent log of a task, concatenated (for failure messages).
fn agent_logs(p: &crate::Proj, id: &str) -> String {
    let dir = p.path().join(".braid/logs").join(id);
    let mut out = String::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        out.push_str(&format!("--- {} ---\n", e.path().display()));
        out.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
    }
    out
}

/// The model server on `script`, logging requests to `log`; its port.
struct ModelServer(Child, u16);

impl ModelServer {
    fn start(script: &Path, log: &Path) -> ModelServer {
        let mut child = Command::new("node")
            .arg(agents_dir().join("model_server.mjs"))
            .arg("--script")
            .arg(script)
            .arg("--log")
            .arg(log)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("node runs the model server");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().parse().expect("the server prints its port");
        ModelServer(child, port)
    }
}

impl Drop for ModelServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The JSON lines of an agent's log.
fn log_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

const CLAUDE: &str = "[[agent]]\nname = \"claude\"\nkind = \"claude\"\n";
const WRITTEN: &str =
    "[[gate]]\nname = \"written\"\ncommand = [\"grep\", \"-q\", \"hello from\", \"hello.txt\"]\n";

/// Where Claude's Write tool must write a task's file (it takes absolute
/// paths): the task's worktree.
fn in_worktree(p: &crate::Proj, id: &str, file: &str) -> PathBuf {
    p.path().join(".braid/worktrees").join(id).join(file)
}

#[test]
fn claude_code_does_a_task_end_to_end_and_the_ledger_holds_exactly_what_it_reported() {
    let Some(clis) = clis() else { return };
    let p = repo_project(&format!(
        "[run]\njobs = 1\nmax_attempts = 1\n[merge]\ninto = \"main\"\n{CLAUDE}{WRITTEN}"
    ));
    let id = p.add(&["Write hello.txt", "--description", "Say hello."]);
    let file = in_worktree(&p, &id, "hello.txt");
    let m = Models::start(
        &p,
        &clis,
        serde_json::json!({"anthropic": [
            {"tool_use": [{"id": "toolu_w", "name": "Write",
                           "input": {"file_path": file, "content": "hello from claude\n"}}],
             "usage": {"input_tokens": 1200, "output_tokens": 80,
                       "cache_read_input_tokens": 300, "cache_creation_input_tokens": 40}},
            {"text": "I wrote hello.txt.",
             "usage": {"input_tokens": 1500, "output_tokens": 12,
                       "cache_read_input_tokens": 600, "cache_creation_input_tokens": 0}}
        ]}),
    );
    let out = m.braid(&p, &["run", "--merge"]);
    let agent_log = p.path().join(".braid/logs").join(&id).join("1-claude.log");
    assert!(
        out.status.success(),
        "{}{}",
        said(&out),
        agent_logs(&p, &id)
    );
    // Done end to end: the CLI's Write tool in the worktree, the gate, the
    // merge onto main.
    assert_eq!(p.json(&["show", &id])["state"], "done");
    assert_eq!(
        git(p.path(), &["show", "main:hello.txt"]),
        "hello from claude\n"
    );

    // The ledger holds exactly what the CLI reported on its stream.
    let lines = log_lines(&agent_log);
    let init = lines.iter().find(|l| l["type"] == "system").unwrap();
    let result = lines.iter().find(|l| l["type"] == "result").unwrap();
    let shown = p.json(&["show", &id]);
    let a = &shown["attempts"][0];
    assert_eq!(shown["attempts"].as_array().unwrap().len(), 1, "{shown}");
    assert_eq!(a["agent"], "claude");
    assert_eq!(a["attempt"], 1);
    assert_eq!(a["session"], init["session_id"]);
    assert_eq!(a["model"], init["model"]);
    assert_eq!(a["input_tokens"], result["usage"]["input_tokens"]);
    assert_eq!(a["output_tokens"], result["usage"]["output_tokens"]);
    assert_eq!(
        a["cache_read_tokens"],
        result["usage"]["cache_read_input_tokens"]
    );
    assert_eq!(
        a["cache_write_tokens"],
        result["usage"]["cache_creation_input_tokens"]
    );
    assert_eq!(a["turns"], result["num_turns"]);
    assert_eq!(
        a["cost_usd"], result["total_cost_usd"],
        "the cost to the last bit"
    );
    // ... which is what the server sent, summed over the two calls.
    assert_eq!(a["input_tokens"], 2700);
    assert_eq!(a["output_tokens"], 92);
    assert_eq!(a["cache_read_tokens"], 900);
    assert_eq!(a["cache_write_tokens"], 40);
    assert!(a["cost_usd"].as_f64().unwrap() > 0.0);
    assert_eq!(shown["cost_usd"], result["total_cost_usd"]);
    let by_model = p.json(&["cost", "--by", "model"]);
    assert_eq!(by_model[0]["key"], init["model"], "{by_model}");
    assert_eq!(by_model[0]["cost_usd"], result["total_cost_usd"]);
    assert_eq!(by_model[0]["attempts"], 1);
    let text = p.ok(&["cost"]);
    assert!(text.contains(&id) && text.contains("total $"), "{text}");
    // The run's progress showed what the agent was doing, from its stream.
    let activity: Vec<String> = p
        .ok(&["events", "--json"])
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["kind"] == "activity")
        .map(|e| e["payload"]["action"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        activity
            .iter()
            .all(|a| a.starts_with("Write ") || a == "I wrote hello.txt."),
        "{activity:?}"
    );
    // The CLI reached nothing but the server.
    let reqs = m.requests();
    assert!(reqs.iter().all(|r| r["kind"] != "proxy"), "{reqs:?}");
    assert_eq!(m.main_calls().len(), 2);
}

#[test]
fn codex_does_a_task_end_to_end_priced_from_the_prices_table() {
    let Some(clis) = clis() else { return };
    let p = repo_project(&format!(
        "[run]\njobs = 1\nmax_attempts = 1\n[merge]\ninto = \"main\"\n\
         [[agent]]\nname = \"codex\"\nkind = \"codex\"\nmodel = \"gpt-5.5\"\n\
         [prices.\"gpt-5.5\"]\ninput = 1.25\noutput = 10.0\ncache_read = 0.125\ncache_write = 0.5\n{WRITTEN}"
    ));
    let id = p.add(&["Write hello.txt"]);
    let m = Models::start(
        &p,
        &clis,
        serde_json::json!({"openai": [
            {"custom_tool_call": [{"call_id": "call_patch1", "name": "apply_patch",
              "input": "*** Begin Patch\n*** Add File: hello.txt\n+hello from codex\n*** End Patch\n"}],
             "usage": {"input_tokens": 1000, "output_tokens": 50, "cached_tokens": 200, "cache_write_tokens": 300}},
            {"text": "I created hello.txt.",
             "usage": {"input_tokens": 1200, "output_tokens": 10, "cached_tokens": 1000}}
        ]}),
    );
    let out = m.braid(&p, &["run", "--merge"]);
    assert!(
        out.status.success(),
        "{}{}",
        said(&out),
        agent_logs(&p, &id)
    );
    assert_eq!(p.json(&["show", &id])["state"], "done");
    assert_eq!(
        git(p.path(), &["show", "main:hello.txt"]),
        "hello from codex\n"
    );
    // The ledger: the thread id, the model of the config, the tokens of
    // turn.completed (input apart from cache reads), priced by [prices].
    let log = p.path().join(".braid/logs").join(&id).join("1-codex.log");
    let lines = log_lines(&log);
    let thread = lines
        .iter()
        .find(|l| l["type"] == "thread.started")
        .unwrap();
    let done = lines
        .iter()
        .find(|l| l["type"] == "turn.completed")
        .unwrap();
    let u = &done["usage"];
    let a = &p.json(&["show", &id])["attempts"][0];
    assert_eq!(a["session"], thread["thread_id"]);
    assert_eq!(a["model"], "gpt-5.5");
    let n = |v: &serde_json::Value| v.as_i64().unwrap();
    assert_eq!(
        n(&a["input_tokens"]),
        n(&u["input_tokens"]) - n(&u["cached_input_tokens"])
    );
    assert_eq!(a["cache_read_tokens"], u["cached_input_tokens"]);
    assert_eq!(a["cache_write_tokens"], u["cache_write_input_tokens"]);
    assert_eq!(a["output_tokens"], u["output_tokens"]);
    let priced = (n(&a["input_tokens"]) as f64 * 1.25
        + n(&a["output_tokens"]) as f64 * 10.0
        + n(&a["cache_read_tokens"]) as f64 * 0.125
        + n(&a["cache_write_tokens"]) as f64 * 0.5)
        / 1e6;
    assert!(
        (a["cost_usd"].as_f64().unwrap() - priced).abs() < 1e-12,
        "{a} vs {priced}"
    );
    assert_eq!(n(&a["input_tokens"]), 1000, "2200 in, 1200 of them cached");
    assert!(m.requests().iter().all(|r| r["kind"] != "proxy"));
}

#[test]
fn a_claude_429_cools_it_down_and_the_task_fails_over_to_codex() {
    let Some(clis) = clis() else { return };
    let p = repo_project(&format!(
        "[run]\njobs = 1\nmax_attempts = 2\n\
         [[agent]]\nname = \"claude\"\nkind = \"claude\"\ncooldown = \"10m\"\nfailover = [\"codex\"]\n\
         [[agent]]\nname = \"codex\"\nkind = \"codex\"\n{WRITTEN}"
    ));
    let id = p.add(&["Write hello.txt"]);
    let m = Models::start(
        &p,
        &clis,
        serde_json::json!({
            "anthropic": [{"error": {"status": 429, "headers": {"retry-after": "1"},
                           "body": {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}},
                           "repeat": 100}],
            "openai": [
                {"custom_tool_call": [{"call_id": "c1", "name": "apply_patch",
                  "input": "*** Begin Patch\n*** Add File: hello.txt\n+hello from codex\n*** End Patch\n"}]},
                {"text": "Done."}
            ]
        }),
    );
    let out = m.braid(&p, &["run"]);
    assert!(
        out.status.success(),
        "{}{}",
        said(&out),
        agent_logs(&p, &id)
    );
    let events: Vec<serde_json::Value> = p
        .ok(&["events", "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|e: &serde_json::Value| e["task"] == id.as_str())
        .collect();
    let cooldown = events
        .iter()
        .find(|e| e["kind"] == "cooldown")
        .expect("a cooldown");
    assert_eq!(cooldown["payload"]["agent"], "claude");
    assert_eq!(
        cooldown["payload"]["seconds"], 600.0,
        "the agent's cooldown"
    );
    let agents: Vec<&str> = events
        .iter()
        .filter(|e| e["kind"] == "dispatched")
        .map(|e| e["payload"]["agent"].as_str().unwrap())
        .collect();
    assert_eq!(agents, ["claude", "codex"]);
    let t = p.json(&["show", &id]);
    assert_eq!(t["state"], "done");
    // The rate-limited attempt is in the ledger, free, and was refunded.
    let attempts = t["attempts"].as_array().unwrap();
    assert_eq!(attempts[0]["agent"], "claude");
    assert_eq!(attempts[1]["agent"], "codex");
    assert_eq!(
        m.requests()
            .iter()
            .filter(|r| r["api"] == "anthropic" && r["kind"] == "main")
            .count(),
        1,
        "claude was not asked again while cooling down"
    );
}

#[test]
fn a_claude_permission_denial_waits_for_a_person_and_the_answer_resumes_its_session() {
    let Some(clis) = clis() else { return };
    let p = repo_project(&format!(
        "[run]\njobs = 1\nmax_attempts = 1\n{CLAUDE}{WRITTEN}\n[notify]\ncommand = [\"sh\", \"-c\", \"cat >> notified.jsonl\"]\n"
    ));
    let id = p.add(&["Write hello.txt"]);
    let file = in_worktree(&p, &id, "hello.txt");
    let m = Models::start(
        &p,
        &clis,
        serde_json::json!({"anthropic": [
            {"tool_use": [{"id": "toolu_bash1", "name": "Bash",
                           "input": {"command": "git push origin main", "description": "publish the branch"}}]},
            {"text": "I was not allowed to run git push. May I write the file with the Write tool instead?"},
            {"tool_use": [{"id": "toolu_w2", "name": "Write",
                           "input": {"file_path": file, "content": "hello from claude\n"}}]},
            {"text": "Written."}
        ]}),
    );
    let out = m.braid(&p, &["run"]);
    assert!(
        out.status.success(),
        "{}{}",
        said(&out),
        agent_logs(&p, &id)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("NEEDS YOU (denied)"), "{stdout}");
    assert!(stdout.contains("1 waiting for you"), "{stdout}");
    // Parked for a person: deferred, labelled, the question recorded.
    let t = p.json(&["show", &id]);
    assert_eq!(t["state"], "deferred");
    assert!(
        t["labels"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l == "needs-human")
    );
    let needs = p.json(&["needs"]);
    assert_eq!(needs[0]["id"], id.as_str());
    assert_eq!(needs[0]["reason"], "denied");
    let q = needs[0]["question"].as_str().unwrap();
    assert!(
        q.contains("Bash") && q.contains("May I write the file"),
        "{q}"
    );
    let session = t["attempts"][0]["session"].as_str().unwrap().to_owned();
    assert_eq!(needs[0]["session"], session.as_str());
    // [notify] was run with the attention event on stdin (beside the
    // loop: wait for its file to change).
    let notified = p.path().join("notified.jsonl");
    let seen = crate::run::when_changed(p.path(), "the notify command", || {
        std::fs::read_to_string(&notified)
            .ok()
            .filter(|s| s.ends_with('\n'))
    });
    let event: serde_json::Value = serde_json::from_str(seen.lines().next().unwrap()).unwrap();
    assert_eq!(event["kind"], "attention");
    assert_eq!(event["task"], id.as_str());
    assert_eq!(event["payload"]["reason"], "denied");

    // An empty answer, or one to a task that asked nothing, changes nothing.
    p.fails(&["answer", &id, "  "], 2);
    let other = p.add(&["Unrelated"]);
    let e = p.fails(&["answer", &other, "yes"], 2);
    assert!(e.contains("not waiting for an answer"), "{e}");

    // A person may take the session over instead, in the task's worktree.
    let attach = p.ok(&["attach", &id, "--print"]);
    assert_eq!(
        attach.trim(),
        format!(
            "cd {} && claude --resume {session}",
            p.path().join(".braid/worktrees").join(&id).display()
        )
    );
    let e = p.fails(&["attach", &other], 2);
    assert!(e.contains("no agent session"), "{e}");

    p.ok(&["answer", &id, "Yes, use the Write tool."]);
    let t = p.json(&["show", &id]);
    assert_eq!(t["state"], "open");
    assert!(
        !t["labels"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l == "needs-human")
    );
    p.ok(&["defer", &other]);
    let out = m.braid(&p, &["run"]);
    assert!(
        out.status.success(),
        "{}{}",
        said(&out),
        agent_logs(&p, &id)
    );
    let t = p.json(&["show", &id]);
    assert_eq!(t["state"], "done", "{}", said(&out));
    // The second run resumed the same session with the answer: the model
    // server saw the earlier turns and the answer in one request.
    let attempts = t["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[1]["session"], session.as_str());
    let calls = m.main_calls();
    let resumed = serde_json::to_string(&calls[2]["body"]["messages"]).unwrap();
    assert!(
        resumed.contains("toolu_bash1"),
        "the earlier turns: {resumed}"
    );
    assert!(resumed.contains("Yes, use the Write tool."), "{resumed}");
    // ... and only the answer, not the whole task again.
    assert_eq!(resumed.matches("## How to finish").count(), 1, "{resumed}");
}

#[test]
fn a_failed_gate_resumes_the_same_claude_session_with_the_failure() {
    let Some(clis) = clis() else { return };
    let p = repo_project(&format!(
        "[run]\njobs = 1\nmax_attempts = 2\nbackoff = {{ base = \"10ms\", cap = \"20ms\" }}\n{CLAUDE}\
         [[gate]]\nname = \"right\"\ncommand = [\"grep\", \"-q\", \"right\", \"hello.txt\"]\n"
    ));
    let id = p.add(&["Write hello.txt saying right"]);
    let file = in_worktree(&p, &id, "hello.txt");
    let m = Models::start(
        &p,
        &clis,
        serde_json::json!({"anthropic": [
            {"tool_use": [{"id": "toolu_w1", "name": "Write",
                           "input": {"file_path": file, "content": "wrong\n"}}]},
            {"text": "Done."},
            {"tool_use": [{"id": "toolu_w2", "name": "Write",
                           "input": {"file_path": file, "content": "right\n"}}]},
            {"text": "Fixed."}
        ]}),
    );
    let out = m.braid(&p, &["run"]);
    assert!(
        out.status.success(),
        "{}{}",
        said(&out),
        agent_logs(&p, &id)
    );
    let t = p.json(&["show", &id]);
    assert_eq!(t["state"], "done");
    let attempts = t["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0]["session"], attempts[1]["session"]);
    let calls = m.main_calls();
    assert_eq!(calls.len(), 4);
    let resumed = serde_json::to_string(&calls[2]["body"]["messages"]).unwrap();
    assert!(
        resumed.contains("toolu_w1"),
        "the first attempt's turns: {resumed}"
    );
    assert!(resumed.contains("gate right"), "the failure: {resumed}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("resuming session"), "{stdout}");
}

#[test]
fn run_usd_stops_the_run_before_the_next_attempt() {
    let Some(clis) = clis() else { return };
    let p = repo_project(&format!(
        "[run]\njobs = 1\nmax_attempts = 1\n[budget]\nrun_usd = 0.000001\n{CLAUDE}{WRITTEN}"
    ));
    let a = p.add(&["First", "-p", "0"]);
    let b = p.add(&["Second", "-p", "1"]);
    let file = in_worktree(&p, &a, "hello.txt");
    let m = Models::start(
        &p,
        &clis,
        serde_json::json!({"anthropic": [
            {"tool_use": [{"id": "toolu_w", "name": "Write",
                           "input": {"file_path": file, "content": "hello from claude\n"}}],
             "usage": {"input_tokens": 1000, "output_tokens": 10}},
            {"text": "Done.", "usage": {"input_tokens": 1000, "output_tokens": 10}}
        ]}),
    );
    let out = m.braid(&p, &["run"]);
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("budget run_usd is spent") && stdout.contains("of $0.00"),
        "{stdout}"
    );
    assert_eq!(p.json(&["show", &a])["state"], "done");
    let second = p.json(&["show", &b]);
    assert_eq!(second["state"], "open", "never started");
    assert!(second["attempts"].as_array().unwrap().is_empty());
    assert_eq!(m.main_calls().len(), 2, "no call for the second task");
}

#[test]
fn a_claude_killed_mid_stream_fails_cleanly_and_the_ledger_keeps_what_it_said() {
    let Some(clis) = clis() else { return };
    let p = repo_project(&format!(
        "[run]\njobs = 1\nmax_attempts = 1\nkill_grace = \"2s\"\n\
         [[agent]]\nname = \"claude\"\nkind = \"claude\"\ntimeout = \"5s\"\n{WRITTEN}"
    ));
    let id = p.add(&["Write hello.txt"]);
    let m = Models::start(
        &p,
        &clis,
        serde_json::json!({"anthropic": [{"text": "Let me think about this for a long while", "hang_after": 3}]}),
    );
    let out = m.braid(&p, &["run"]);
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    let t = p.json(&["show", &id]);
    assert_eq!(t["state"], "failed");
    let log = p.path().join(".braid/logs").join(&id).join("1-claude.log");
    let lines = log_lines(&log);
    let init = lines
        .iter()
        .find(|l| l["type"] == "system")
        .expect("init line");
    assert!(
        lines.iter().all(|l| l["type"] != "result"),
        "cut before its result"
    );
    let a = &t["attempts"][0];
    assert_eq!(a["session"], init["session_id"], "the session it reported");
    assert_eq!(a["model"], init["model"]);
    assert!(a["cost_usd"].is_null(), "no cost was reported: {a}");
    assert!(a["outcome"].as_str().unwrap().contains("timed out"), "{a}");
    let cost = p.json(&["cost"]);
    assert_eq!(cost[0]["unpriced"], 1);
    // The whole group is gone: nothing of the CLI runs on.
    let left = braid_run::procs::recorded(&p.path().join(".braid/procs"));
    assert!(left.is_empty(), "process records left: {left:?}");
}

#[test]
fn task_usd_parks_the_task_for_a_person_instead_of_retrying() {
    let Some(clis) = clis() else { return };
    let p = repo_project(&format!(
        "[run]\njobs = 1\nmax_attempts = 3\nbackoff = {{ base = \"10ms\", cap = \"20ms\" }}\n\
         [budget]\ntask_usd = 0.000001\n{CLAUDE}\
         [[gate]]\nname = \"right\"\ncommand = [\"grep\", \"-q\", \"right\", \"hello.txt\"]\n"
    ));
    let id = p.add(&["Write hello.txt saying right"]);
    let file = in_worktree(&p, &id, "hello.txt");
    let m = Models::start(
        &p,
        &clis,
        serde_json::json!({"anthropic": [
            {"tool_use": [{"id": "toolu_w1", "name": "Write",
                           "input": {"file_path": file, "content": "wrong\n"}}]},
            {"text": "Done."}
        ]}),
    );
    let out = m.braid(&p, &["run"]);
    assert!(out.status.success(), "{}", said(&out));
    let t = p.json(&["show", &id]);
    assert_eq!(t["state"], "deferred", "{}", said(&out));
    assert_eq!(
        t["attempts"].as_array().unwrap().len(),
        1,
        "no second attempt"
    );
    let needs = p.json(&["needs"]);
    assert_eq!(needs[0]["reason"], "budget");
    let q = needs[0]["question"].as_str().unwrap();
    assert!(q.contains("budget task_usd is spent"), "{q}");
    assert_eq!(m.main_calls().len(), 2);
    let cost = p.ok(&["cost"]);
    assert!(cost.contains("budget task_usd: $"), "{cost}");
}

#[test]
fn a_failed_gate_resumes_the_same_codex_thread_and_the_ledger_counts_each_run_once() {
    let Some(clis) = clis() else { return };
    let p = repo_project(
        "[run]\njobs = 1\nmax_attempts = 2\nbackoff = { base = \"10ms\", cap = \"20ms\" }\n\
         [[agent]]\nname = \"codex\"\nkind = \"codex\"\n\
         [[gate]]\nname = \"right\"\ncommand = [\"grep\", \"-q\", \"right\", \"hello.txt\"]\n",
    );
    let id = p.add(&["Write hello.txt saying right"]);
    let m = Models::start(
        &p,
        &clis,
        serde_json::json!({"openai": [
            {"custom_tool_call": [{"call_id": "call_first", "name": "apply_patch",
              "input": "*** Begin Patch\n*** Add File: hello.txt\n+wrong\n*** End Patch\n"}],
             "usage": {"input_tokens": 1000, "output_tokens": 50, "cached_tokens": 200}},
            {"text": "Done.", "usage": {"input_tokens": 1100, "output_tokens": 10, "cached_tokens": 900}},
            {"custom_tool_call": [{"call_id": "call_second", "name": "apply_patch",
              "input": "*** Begin Patch\n*** Update File: hello.txt\n@@\n-wrong\n+right\n*** End Patch\n"}],
             "usage": {"input_tokens": 1500, "output_tokens": 20, "cached_tokens": 1000}},
            {"text": "Fixed.", "usage": {"input_tokens": 1600, "output_tokens": 5, "cached_tokens": 1400}}
        ]}),
    );
    let out = m.braid(&p, &["run"]);
    assert!(
        out.status.success(),
        "{}{}",
        said(&out),
        agent_logs(&p, &id)
    );
    let t = p.json(&["show", &id]);
    assert_eq!(t["state"], "done", "{}{}", said(&out), agent_logs(&p, &id));
    let attempts = t["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0]["session"], attempts[1]["session"], "one thread");
    // The resumed call carried the first run's turns and the failure.
    let calls: Vec<serde_json::Value> = m
        .requests()
        .into_iter()
        .filter(|r| r["api"] == "openai" && r["path"] == "/v1/responses")
        .collect();
    assert_eq!(calls.len(), 4);
    let resumed = serde_json::to_string(&calls[2]["body"]["input"]).unwrap();
    assert!(resumed.contains("call_first"), "{resumed}");
    assert!(resumed.contains("gate right"), "{resumed}");
    // Codex reports the thread's running total; each ledger row is its
    // own run's: input apart from cache reads.
    let n = |a: &serde_json::Value, k: &str| a[k].as_i64().unwrap();
    assert_eq!(
        (
            n(&attempts[0], "input_tokens"),
            n(&attempts[0], "cache_read_tokens"),
            n(&attempts[0], "output_tokens")
        ),
        (2100 - 1100, 1100, 60)
    );
    assert_eq!(
        (
            n(&attempts[1], "input_tokens"),
            n(&attempts[1], "cache_read_tokens"),
            n(&attempts[1], "output_tokens")
        ),
        (3100 - 2400, 2400, 25)
    );
}

#[test]
fn a_prompt_too_large_for_an_argument_reaches_claude_and_codex_on_stdin() {
    let Some(clis) = clis() else { return };
    let p = repo_project(&format!(
        "[run]\njobs = 1\nmax_attempts = 1\n{CLAUDE}allow_empty = true\n[[agent]]\nname = \"codex\"\nkind = \"codex\"\nallow_empty = true\n"
    ));
    // About 300 KB, with a mark at its very end.
    let description = format!(
        "{}THE-END-OF-THE-DESCRIPTION\n",
        "Read all of this before you start.\n".repeat(8_500)
    );
    let file = p.path().join("desc.md");
    std::fs::write(&file, &description).unwrap();
    let a = p.add(&[
        "Large for claude",
        "--description-file",
        file.to_str().unwrap(),
        "--agent",
        "claude",
    ]);
    let b = p.add(&[
        "Large for codex",
        "--description-file",
        file.to_str().unwrap(),
        "--agent",
        "codex",
    ]);
    let m = Models::start(
        &p,
        &clis,
        serde_json::json!({
            "anthropic": [{"text": "Read it all.", "usage": {"input_tokens": 90000, "output_tokens": 4}}],
            "openai": [{"text": "Read it all.", "usage": {"input_tokens": 90000, "output_tokens": 4}}]
        }),
    );
    let out = m.braid(&p, &["run"]);
    assert!(
        out.status.success(),
        "{}{}{}",
        said(&out),
        agent_logs(&p, &a),
        agent_logs(&p, &b)
    );
    for id in [&a, &b] {
        assert_eq!(p.json(&["show", id])["state"], "done", "{id}");
    }
    // Each CLI sent the whole prompt, its last line included.
    let calls = m.main_calls();
    for api in ["anthropic", "openai"] {
        let call = calls
            .iter()
            .find(|c| c["api"] == api)
            .unwrap_or_else(|| panic!("no {api} call: {calls:?}"));
        let body = call["body"].to_string();
        assert!(body.contains("THE-END-OF-THE-DESCRIPTION"), "{api}");
        assert!(body.len() > 290_000, "{api}: {} bytes", body.len());
    }
}
