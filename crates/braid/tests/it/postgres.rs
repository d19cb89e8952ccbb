//! The command line on a PostgreSQL work graph (`--db postgres://…` via
//! `BRAID_DB`), against the server named by `BRAID_TEST_POSTGRES`; skipped,
//! and saying so, without it. Each test gets a schema of its own.

use std::io::Write as _;
use std::process::Command;

use crate::Proj;

/// A schema on the test server, dropped at the end, and the URL of it.
struct Schema {
    server: String,
    name: String,
    url: String,
}

impl Schema {
    fn new() -> Option<Schema> {
        let Ok(server) = std::env::var("BRAID_TEST_POSTGRES") else {
            let _ = writeln!(
                std::io::stderr(),
                "\nSKIPPED: the command line on PostgreSQL (set BRAID_TEST_POSTGRES=postgres://... to run it)"
            );
            return None;
        };
        let name = format!("braid_cli{}_{}", std::process::id(), rand_suffix());
        psql(&server, &format!("CREATE SCHEMA {name}"));
        let sep = if server.contains('?') { '&' } else { '?' };
        let url = format!("{server}{sep}options=-c%20search_path%3D{name}");
        Some(Schema { server, name, url })
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        psql(&self.server, &format!("DROP SCHEMA {} CASCADE", self.name));
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
    let out = follow.0.stdout.take().unwrap();
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for l in std::io::BufReader::new(out).lines() {
            let Ok(l) = l else { break };
            let _ = tx.send(l);
        }
    });
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
