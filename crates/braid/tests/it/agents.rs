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

/// The installed `claude` binary, or `None` (said loudly) when npm is out
/// of reach.
fn claude() -> Option<PathBuf> {
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
    let bin = text
        .lines()
        .find_map(|l| l.strip_prefix("CLAUDE_BIN="))
        .expect("install.sh names CLAUDE_BIN");
    Some(PathBuf::from(bin))
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

#[test]
fn claude_code_does_a_task_end_to_end_and_the_ledger_holds_exactly_what_it_reported() {
    let Some(claude) = claude() else { return };
    let p = repo_project(
        "[run]\njobs = 1\nmax_attempts = 1\n[merge]\ninto = \"main\"\n\
         [[agent]]\nname = \"claude\"\nkind = \"claude\"\n\
         [[gate]]\nname = \"written\"\ncommand = [\"grep\", \"-q\", \"hello from claude\", \"hello.txt\"]\n",
    );
    let id = p.add(&["Write hello.txt", "--description", "Say hello."]);
    // Claude's Write tool takes an absolute path: the task's worktree.
    let file = p
        .path()
        .join(".braid/worktrees")
        .join(&id)
        .join("hello.txt");
    let script = p.path().join("script.json");
    std::fs::write(
        &script,
        serde_json::json!({"anthropic": [
            {"tool_use": [{"id": "toolu_w", "name": "Write",
                           "input": {"file_path": file, "content": "hello from claude\n"}}],
             "usage": {"input_tokens": 1200, "output_tokens": 80,
                       "cache_read_input_tokens": 300, "cache_creation_input_tokens": 40}},
            {"text": "I wrote hello.txt.",
             "usage": {"input_tokens": 1500, "output_tokens": 12,
                       "cache_read_input_tokens": 600, "cache_creation_input_tokens": 0}}
        ]})
        .to_string(),
    )
    .unwrap();
    let requests = p.path().join("requests.jsonl");
    let server = ModelServer::start(&script, &requests);
    let home = tempfile::tempdir().unwrap();
    let path = format!(
        "{}:/usr/local/bin:/usr/bin:/bin",
        claude.parent().unwrap().display()
    );
    let out = p
        .cmd()
        .args(["run", "--merge"])
        .env("PATH", &path)
        .env("HOME", home.path())
        .env(
            "ANTHROPIC_BASE_URL",
            format!("http://127.0.0.1:{}", server.1),
        )
        .env("ANTHROPIC_API_KEY", "sk-braid-test")
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
        .env("DISABLE_TELEMETRY", "1")
        .env("DISABLE_AUTOUPDATER", "1")
        .env("CLAUDE_CODE_MAX_RETRIES", "0")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let agent_log = p.path().join(".braid/logs").join(&id).join("1-claude.log");
    assert!(
        out.status.success(),
        "{stdout}{}\n--- agent log ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(&agent_log).unwrap_or_default()
    );
    // Done end to end: the CLI's Write tool in the worktree, the gate, the
    // merge onto main.
    assert_eq!(p.json(&["show", &id])["state"], "done", "{stdout}");
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
    // The CLI reached nothing but the server.
    let reqs: Vec<serde_json::Value> = std::fs::read_to_string(&requests)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(reqs.iter().all(|r| r["kind"] != "proxy"), "{reqs:?}");
    assert_eq!(reqs.iter().filter(|r| r["kind"] == "main").count(), 2);
}
