//! The command line on a PostgreSQL work graph (`--db postgres://…` via
//! `BRAID_DB`), against the server named by `BRAID_TEST_POSTGRES`; skipped,
//! and saying so, without it. Each test gets a schema of its own.

use std::io::Write as _;
use std::process::Command;

use crate::Proj;

/// Says once per `cargo test` (not once per test, nor per test binary)
/// that the PostgreSQL tests were skipped: the first test binary that
/// skips, among those cargo runs, makes a marker named by cargo's pid.
fn say_skipped() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let marker = std::env::temp_dir().join(format!(
            "braid-postgres-skipped-{}",
            std::os::unix::process::parent_id()
        ));
        if std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(marker)
            .is_ok()
        {
            // Straight to the terminal: the test harness captures print!.
            let _ = writeln!(
                std::io::stderr(),
                "\nSKIPPED: the PostgreSQL tests (set BRAID_TEST_POSTGRES=postgres://... to run them)"
            );
        }
    });
}

/// A schema on the test server, dropped at the end, and the URL of it.
pub(crate) struct Schema {
    server: String,
    name: String,
    pub(crate) url: String,
    /// Drops the schema when done (a view of another schema does not).
    owned: bool,
}

impl Schema {
    pub(crate) fn new() -> Option<Schema> {
        let Ok(server) = std::env::var("BRAID_TEST_POSTGRES") else {
            say_skipped();
            return None;
        };
        let name = format!("braid_cli{}_{}", std::process::id(), rand_suffix());
        psql(&server, &format!("CREATE SCHEMA {name}"));
        let sep = if server.contains('?') { '&' } else { '?' };
        let url = format!("{server}{sep}options=-c%20search_path%3D{name}");
        Some(Schema {
            server,
            name,
            url,
            owned: true,
        })
    }

    /// The same schema, connecting with `application_name` set (so a test
    /// can find and terminate these connections).
    fn as_app(&self, app: &str) -> Schema {
        Schema {
            server: self.server.clone(),
            name: self.name.clone(),
            url: format!("{}&application_name={app}", self.url),
            owned: false,
        }
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        if self.owned {
            psql(&self.server, &format!("DROP SCHEMA {} CASCADE", self.name));
        }
    }
}

fn rand_suffix() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{t:x}")
}

fn psql(server: &str, sql: &str) {
    let out = Command::new("psql")
        .args([server, "-qAtc", sql])
        .output()
        .expect("psql runs");
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A project whose work graph is in `schema`.
fn project(schema: &Schema) -> Proj {
    let p = Proj::empty();
    let out = p
        .cmd()
        .args(["--db", &schema.url, "init"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    p
}

fn run(p: &Proj, schema: &Schema, args: &[&str]) -> std::process::Output {
    p.cmd()
        .env("BRAID_DB", &schema.url)
        .args(args)
        .output()
        .unwrap()
}

fn json(p: &Proj, schema: &Schema, args: &[&str]) -> serde_json::Value {
    let mut a = args.to_vec();
    a.push("--json");
    let out = run(p, schema, &a);
    assert!(
        out.status.success(),
        "braid {a:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_work_graph_commands_run_on_postgres() {
    let Some(s) = Schema::new() else { return };
    let p = project(&s);
    assert!(p.path().join(".braid/config.toml").exists());
    let a = json(&p, &s, &["add", "first", "-p", "1"])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let b = json(&p, &s, &["add", "second", "--dep", &a])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let ready = json(&p, &s, &["ready"]);
    assert_eq!(ready.as_array().unwrap().len(), 1);
    assert_eq!(ready[0]["id"], a.as_str());
    let claimed = json(&p, &s, &["claim", "--as", "node-1"]);
    assert_eq!(claimed["id"], a.as_str());
    // A second claim of the same task is a conflict (exit 4).
    assert_eq!(run(&p, &s, &["claim", &a]).status.code(), Some(4));
    json(&p, &s, &["done", &a]);
    let shown = json(&p, &s, &["show", &b]);
    assert_eq!(shown["ready"], true);
    assert_eq!(shown["deps"][0]["id"], a.as_str());
    // A cycle is refused, naming it, and changes nothing.
    let out = run(&p, &s, &["dep", "add", &a, &b]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cycle"));
    let health = json(&p, &s, &["health"]);
    assert_eq!(health["total"], 2, "{health}");
    // Export, then import into a second schema: the same graph.
    let out = run(&p, &s, &["export"]);
    assert!(out.status.success());
    let file = p.path().join("export.jsonl");
    std::fs::write(&file, &out.stdout).unwrap();
    let Some(s2) = Schema::new() else { return };
    let p2 = project(&s2);
    json(&p2, &s2, &["import", file.to_str().unwrap()]);
    let list = json(&p2, &s2, &["list"]);
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert_eq!(json(&p2, &s2, &["show", &b])["ready"], true);
    // What only a SQLite file can do says so.
    let out = run(&p, &s, &["snapshot", "save"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("pg_dump"));
}

#[test]
fn the_engine_runs_tasks_from_postgres() {
    let Some(s) = Schema::new() else { return };
    let p = project(&s);
    std::fs::write(
        p.path().join(".braid/config.toml"),
        "[run]\njobs = 2\n[[agent]]\nname = \"ok\"\ncommand = [\"sh\", \"-c\", \"echo done by $BRAID_TASK\"]\n",
    )
    .unwrap();
    let a = json(&p, &s, &["add", "a"])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let b = json(&p, &s, &["add", "b", "--dep", &a])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let c = json(&p, &s, &["add", "c"])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let out = run(&p, &s, &["run"]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for id in [&a, &b, &c] {
        assert_eq!(json(&p, &s, &["show", id])["state"], "done", "{id}");
    }
}

#[test]
fn followers_and_the_server_see_writes_from_other_nodes() {
    let Some(s) = Schema::new() else { return };
    let p = project(&s);
    let mut follow = crate::Reap(
        p.cmd()
            .env("BRAID_DB", &s.url)
            .args(["events", "--follow", "--json"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let lines = node_lines(&mut follow.0);
    let (_server, addr) = crate::serve::serve(&p, &["--db", &s.url, "--no-sync"]);
    // Another node (another process) writes.
    json(&p, &s, &["add", "written elsewhere"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = lines
            .recv_timeout(left)
            .expect("events --follow shows the other node's write");
        if line.contains("written elsewhere") {
            break;
        }
    }
    crate::serve::wait_for_event(addr, "project", &["written elsewhere"]);
}

#[test]
fn migrate_copies_a_sqlite_project_and_verifies_it() {
    let Some(s) = Schema::new() else { return };
    let p = Proj::init();
    let epic = p.add(&["epic", "--type", "epic", "--label", "core"]);
    let a = p.add(&["a", "--parent", &epic, "-p", "0"]);
    let b = p.add(&["b", "--dep", &a, "--description", "multi\nline"]);
    p.ok(&["claim", &a, "--as", "me"]);
    p.ok(&["done", &a]);
    p.ok(&["comment", &b, "a note"]);
    let out = p.json(&["migrate", "--to", &s.url]);
    assert_eq!(out["tasks"], 3, "{out}");
    assert_eq!(out["deps"], 1);
    assert_eq!(out["verified"], true);
    assert_eq!(out["source"], out["target"]);
    // The copy answers like the original.
    let on_pg = |args: &[&str]| json(&p, &s, args);
    assert_eq!(on_pg(&["show", &b])["ready"], true);
    assert_eq!(on_pg(&["show", &a])["state"], "done");
    assert_eq!(
        on_pg(&["list", "--label", "core"])
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // Events are JSON lines.
    let sqlite_events = p.ok(&["events", "--json"]);
    let out = run(&p, &s, &["events", "--json"]);
    let pg_events = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        pg_events.lines().count(),
        sqlite_events.lines().count() + 1,
        "every event, plus the record of the copy"
    );
    assert_eq!(
        pg_events.lines().next(),
        sqlite_events.lines().next(),
        "numbering and content kept"
    );
    // A second copy onto a non-empty target is refused and changes nothing.
    let out = p.run(&["migrate", "--to", &s.url]);
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
    assert_eq!(on_pg(&["list"]).as_array().unwrap().len(), 3);
    // --force replaces it.
    p.add(&["c"]);
    let out = p.json(&["migrate", "--to", &s.url, "--force"]);
    assert_eq!(
        (out["tasks"].as_u64(), out["verified"].as_bool()),
        (Some(4), Some(true))
    );
    // Bad input: not a URL.
    let out = p.run(&["migrate", "--to", "/tmp/x.db"]);
    assert_eq!(out.status.code(), Some(2));
}

/// The gate cache is this machine's: its index lives beside its entries, not
/// in the project's database, and its keys are the gate and the content. So
/// `braid migrate` leaves it in place, and on PostgreSQL a gate that passed
/// on the same content before the move is still not run again.
#[test]
fn after_migrate_this_machines_gate_cache_still_answers() {
    let Some(s) = Schema::new() else { return };
    let p = crate::run::repo_project(&format!(
        "\n[[agent]]\nname = \"fake\"\ncommand = [\"{}\"]\n\n[[gate]]\nname = \"count\"\ncommand = [\"sh\", \"-c\", \"echo ran >> ../../gate-runs\"]\n",
        crate::run::agent("commit.sh")
    ));
    let a = p.add(&["x"]);
    p.ok(&["run"]);
    let out = p.json(&["migrate", "--to", &s.url]);
    assert_eq!(out["verified"], true, "{out}");
    assert_eq!(out["gate_cache"], "kept on this machine");
    for args in [&["reopen", a.as_str()][..], &["run"]] {
        let out = run(&p, &s, args);
        assert!(
            out.status.success(),
            "braid {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = run(&p, &s, &["events", "--json", "--limit", "1000"]);
    let cached: Vec<bool> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["kind"] == "gate_finished")
        .map(|e| e["payload"]["cached"].as_bool().unwrap())
        .collect();
    assert_eq!(
        cached,
        vec![false, true],
        "run on SQLite, then a hit on PostgreSQL"
    );
    let runs = std::fs::read_to_string(p.path().join(".braid/gate-runs")).unwrap();
    assert_eq!(runs.lines().count(), 1);
    assert_eq!(json(&p, &s, &["show", &a])["state"], "done");
}

/// The lines a running node prints, as they come.
fn node_lines(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let out = child.stdout.take().expect("stdout is piped");
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

/// Every task's `done` transitions, counted from the event log.
fn done_counts(p: &Proj, s: &Schema) -> std::collections::HashMap<String, usize> {
    let out = run(p, s, &["events", "--json", "--limit", "100000"]);
    let mut n = std::collections::HashMap::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let e: serde_json::Value = serde_json::from_str(line).unwrap();
        if e["kind"] == "state_changed" && e["payload"]["to"] == "done" {
            *n.entry(e["task"].as_str().unwrap().to_owned()).or_insert(0) += 1;
        }
    }
    n
}

fn resilience_project(s: &Schema, tasks: usize) -> (Proj, Vec<String>) {
    let p = project(s);
    std::fs::write(
        p.path().join(".braid/config.toml"),
        "[run]\njobs = 2\nlease = \"2s\"\n[[agent]]\nname = \"slow\"\ncommand = [\"sh\", \"-c\", \"sleep 0.3\"]\n",
    )
    .unwrap();
    let ids = (0..tasks)
        .map(|i| {
            json(&p, s, &["add", &format!("t{i}")])["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    (p, ids)
}

#[test]
fn a_node_killed_with_sigkill_loses_no_task() {
    let Some(s) = Schema::new() else { return };
    let (p, ids) = resilience_project(&s, 8);
    // Node A takes work, and is killed with its claims held.
    let mut a = crate::Reap(
        p.cmd()
            .env("BRAID_DB", &s.url)
            .args(["run", "--follow"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // Its event lines say when it holds a claim.
    let lines = node_lines(&mut a.0);
    loop {
        let line = lines
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("node a claims work");
        if line.contains("claimed by") {
            break;
        }
    }
    a.0.kill().unwrap();
    a.0.wait().unwrap();
    // Node B finishes everything, rescuing what A held once its lease expires.
    let out = run(&p, &s, &["run"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let done = done_counts(&p, &s);
    for id in &ids {
        assert_eq!(json(&p, &s, &["show", id])["state"], "done", "{id}");
        assert_eq!(done.get(id), Some(&1), "{id} completed exactly once");
    }
    let events =
        String::from_utf8(run(&p, &s, &["events", "--json", "--limit", "100000"]).stdout).unwrap();
    assert!(
        events.contains("\"rescued\""),
        "a claim of the killed node was rescued"
    );
}

#[test]
fn terminated_backends_mid_run_lose_and_repeat_nothing() {
    let Some(s) = Schema::new() else { return };
    let app = format!("braid_run{}", std::process::id());
    let s2 = s.as_app(&app);
    let (p, ids) = resilience_project(&s2, 10);
    let mut node = crate::Reap(
        p.cmd()
            .env("BRAID_DB", &s2.url)
            .args(["run"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // Each event the node prints (claims, starts, finishes) is a moment
    // to terminate its connections; the run ends when its output does.
    let lines = node_lines(&mut node.0);
    let mut kills = 0;
    while let Ok(line) = lines.recv_timeout(std::time::Duration::from_secs(60)) {
        if line.starts_with("Run finished") {
            break;
        }
        psql(
            &s.server,
            &format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '{app}'"
            ),
        );
        kills += 1;
    }
    let status = node.0.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(node.0.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(status.success(), "{err}");
    assert!(kills > 2);
    let done = done_counts(&p, &s2);
    for id in &ids {
        assert_eq!(done.get(id), Some(&1), "{id} completed exactly once");
    }
}
