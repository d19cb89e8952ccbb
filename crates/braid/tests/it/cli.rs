//! Everyday commands: shapes of --json, exit codes, errors that name things.

use crate::Proj;

#[test]
fn add_show_ready_done_flow_with_json_shapes() {
    let p = Proj::init();
    let epic = p.add(&["Epic", "--type", "epic"]);
    let a = p.add(&[
        "First",
        "-p",
        "0",
        "--parent",
        &epic,
        "-l",
        "x",
        "--description",
        "why",
    ]);
    let b = p.add(&["Second", "--dep", &a]);
    let t = p.json(&["show", &b]);
    for key in [
        "id", "title", "type", "state", "priority", "parent", "labels", "deps", "ready",
    ] {
        assert!(t.get(key).is_some(), "task JSON lacks {key}: {t}");
    }
    assert_eq!(t["ready"], false);
    assert_eq!(t["deps"][0]["id"], a.as_str());
    assert_eq!(t["deps"][0]["kind"], "blocks");
    assert!(t["blocked_by"][0].as_str().unwrap().contains(&a));
    let ready = p.json(&["ready"]);
    let ids: Vec<&str> = ready
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![a.as_str()], "epics are never ready; b waits on a");
    let done = p.json(&["done", &a]);
    assert_eq!(done["state"], "done");
    assert!(done["closed_at"].is_string());
    assert_eq!(p.json(&["show", &b])["ready"], true);
    let h = p.json(&["health"]);
    assert_eq!(h["total"], 3);
    assert_eq!(h["ready"], 1);
    // The epic's only child is done: the epic is done too.
    assert_eq!(h["by_state"]["done"], 2);
    assert_eq!(p.json(&["show", &epic])["state"], "done");
    let list = p.json(&["list", "--label", "x"]);
    assert_eq!(list.as_array().unwrap().len(), 1);
    let list = p.json(&["list", "--parent", &epic]);
    assert_eq!(list[0]["id"], a.as_str());
    let list = p.json(&["list", "--state", "open", "--type", "task"]);
    assert_eq!(list[0]["id"], b.as_str());
}

#[test]
fn exit_codes_and_errors_name_the_thing() {
    let p = Proj::init();
    let a = p.add(&["A"]);
    let err = p.fails(&["show", "br-zzzz"], 3);
    assert!(err.contains("br-zzzz"), "{err}");
    let err = p.fails(&["add", "X", "--priority", "9"], 2);
    assert!(err.contains("priority") && err.contains('9'), "{err}");
    let err = p.fails(&["add", "X", "--type", "story"], 2);
    assert!(err.contains("story"), "{err}");
    p.ok(&["done", &a]);
    let err = p.fails(&["claim", &a], 4);
    assert!(err.contains("done"), "{err}");
    let err = p.fails(&["fail", &a, "--reason", "x"], 4);
    assert!(err.contains("from done to failed"), "{err}");
    // --json errors are JSON with a stable code.
    let out = p.run(&["show", "br-zzzz", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stderr).unwrap();
    assert_eq!(v["error"]["code"], "not_found");
    // Outside a project: a usage error that says what to do.
    let empty = Proj::empty();
    let err = empty.fails(&["ready"], 2);
    assert!(err.contains("braid init"), "{err}");
}

#[test]
fn cycles_are_refused_naming_the_cycle_and_nothing_changes() {
    let p = Proj::init();
    let a = p.add(&["A"]);
    let b = p.add(&["B", "--dep", &a]);
    let c = p.add(&["C", "--dep", &b]);
    let seq = p.json(&["health"])["last_seq"].clone();
    let err = p.fails(&["dep", "add", &a, &c], 2);
    assert!(err.contains(&format!("{a} -> {c} -> {b} -> {a}")), "{err}");
    assert_eq!(p.json(&["health"])["last_seq"], seq);
    assert_eq!(p.json(&["dep", "cycles"]), serde_json::json!([]));
    p.ok(&["dep", "add", &a, &c, "--kind", "related"]);
    p.ok(&["dep", "rm", &c, &b]);
    assert_eq!(p.json(&["show", &c])["ready"], true);
    let err = p.fails(&["dep", "rm", &c, &b], 3);
    assert!(err.contains("does not depend"), "{err}");
}

#[test]
fn batch_state_change_is_all_or_nothing() {
    let p = Proj::init();
    let a = p.add(&["A"]);
    let b = p.add(&["B"]);
    p.ok(&["done", &b]);
    p.fails(&["defer", &a, &b], 4);
    assert_eq!(
        p.json(&["show", &a])["state"],
        "open",
        "the first change was rolled back"
    );
    let both = p.json(&["reopen", &b]);
    assert_eq!(both["state"], "open");
    let v = p.json(&["defer", &a, &b]);
    assert_eq!(v.as_array().unwrap().len(), 2);
}

#[test]
fn claim_takes_the_highest_priority_and_returns_a_lease() {
    let p = Proj::init();
    let _low = p.add(&["low", "-p", "3"]);
    let high = p.add(&["high", "-p", "1"]);
    let c = p.json(&["claim", "--as", "agent-7"]);
    assert_eq!(c["id"], high.as_str());
    assert_eq!(c["state"], "in_progress");
    assert_eq!(c["assignee"], "agent-7");
    assert_eq!(c["lease"]["attempt"], 1);
    assert!(c["lease"]["token"].as_str().unwrap().len() >= 16);
    p.ok(&["claim"]);
    let err = p.fails(&["claim"], 3);
    assert!(err.contains("nothing is ready"), "{err}");
}

#[test]
fn update_changes_fields_and_reparents() {
    let p = Proj::init();
    let e = p.add(&["E", "--type", "epic"]);
    let a = p.add(&["A"]);
    let v = p.json(&[
        "update",
        &a,
        "--title",
        "A2",
        "--parent",
        &e,
        "--add-label",
        "ui",
        "-p",
        "1",
    ]);
    assert_eq!(v["title"], "A2");
    assert_eq!(v["parent"], e.as_str());
    assert_eq!(v["labels"], serde_json::json!(["ui"]));
    let v = p.json(&["update", &a, "--parent", "none", "--remove-label", "ui"]);
    assert!(v["parent"].is_null());
    let err = p.fails(&["update", &e, "--parent", &e], 2);
    assert!(err.contains(&e), "{err}");
    let err = p.fails(&["update", &a], 2);
    assert!(err.contains("nothing to update"), "{err}");
}

#[test]
fn tree_of_a_deep_chain_does_not_overflow() {
    // 200,000 levels: far past what recursion on an 8 MiB stack survives.
    let p = Proj::init();
    let n = 200_000;
    let mut jsonl = String::from("{\"record\":\"braid-export\",\"version\":1}\n");
    for i in 0..n {
        let parent = if i == 0 {
            "null".to_owned()
        } else {
            format!("\"c-{}\"", i - 1)
        };
        jsonl.push_str(&format!(
            "{{\"record\":\"task\",\"id\":\"c-{i}\",\"title\":\"t{i}\",\"type\":\"task\",\"priority\":2,\"state\":\"open\",\"parent\":{parent},\"created_at\":\"2026-01-01T00:00:00Z\",\"updated_at\":\"2026-01-01T00:00:00Z\"}}\n"
        ));
    }
    let file = p.path().join("chain.jsonl");
    std::fs::write(&file, jsonl).unwrap();
    p.ok(&["import", file.to_str().unwrap()]);
    let out = p.ok(&["tree", "c-0", "--json"]);
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), n);
    assert_eq!(rows[n - 1]["depth"], n - 1);
    let text = p.ok(&["tree"]);
    assert_eq!(text.lines().count(), n);
    assert!(
        text.lines()
            .last()
            .unwrap()
            .starts_with(&format!("[depth {}]", n - 1))
    );
}

#[test]
fn human_output_is_aligned_and_plain_off_a_terminal() {
    let p = Proj::init();
    p.add(&["A short one"]);
    p.add(&["A much longer title", "--type", "bug", "-p", "0"]);
    let out = p
        .cmd()
        .arg("ready")
        .env_remove("NO_COLOR")
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        !text.contains('\x1b'),
        "no colour when stdout is not a terminal: {text:?}"
    );
    let lines: Vec<&str> = text.lines().collect();
    let col = lines[0].find("TITLE").unwrap();
    assert!(
        lines[1..].iter().all(|l| l.find("A ") == Some(col)),
        "{text}"
    );
}

#[test]
fn events_follow_prints_events_appended_by_other_processes() {
    use std::io::BufRead;
    let p = Proj::init();
    p.add(&["before"]);
    let mut child = crate::Reap(
        p.cmd()
            .args(["events", "--follow", "--json"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    let wait = std::time::Duration::from_secs(20);
    let first: serde_json::Value = serde_json::from_str(&rx.recv_timeout(wait).unwrap()).unwrap();
    assert_eq!(first["kind"], "created");
    let id = p.add(&["after"]);
    let next: serde_json::Value = serde_json::from_str(&rx.recv_timeout(wait).unwrap()).unwrap();
    assert_eq!(next["task"], id.as_str());
    assert_eq!(next["seq"], first["seq"].as_i64().unwrap() + 1);
    p.ok(&["done", &id]);
    let third: serde_json::Value = serde_json::from_str(&rx.recv_timeout(wait).unwrap()).unwrap();
    assert_eq!(third["kind"], "state_changed");
}

#[test]
fn demo_builds_a_project_of_thirty_tasks() {
    let p = Proj::empty();
    let dir = p.path().join("demo");
    let out = p.ok(&["demo", dir.to_str().unwrap()]);
    assert!(out.contains("Ready to start"), "{out}");
    assert!(out.contains("└─"), "{out}");
    let db = dir.join(".braid/braid.db");
    let h = p.json(&["health", "--db", db.to_str().unwrap()]);
    assert_eq!(h["total"], 30);
    assert!(h["ready"].as_u64().unwrap() >= 3);
    assert!(h["blocked"].as_u64().unwrap() >= 10);
    assert_eq!(h["by_state"]["in_progress"], 1);
}

#[test]
fn serve_answers_the_api_and_stops_gracefully_on_sigterm() {
    use std::io::{BufRead, Read, Write};
    let p = Proj::init();
    let id = p.add(&["served"]);
    let mut child = crate::Reap(
        p.cmd()
            .args(["serve", "--bind", "127.0.0.1:0"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut first = String::new();
    std::io::BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let addr = first
        .split("http://")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    let mut conn = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        conn,
        "GET /api/tasks/{id} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    conn.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains(&format!("\"id\":\"{id}\"")), "{resp}");
    std::process::Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    let status = child.0.wait().unwrap();
    assert_eq!(status.code(), Some(0), "graceful shutdown exits 0");
    let err = p.fails(&["serve", "--bind", "0.0.0.0:0"], 2);
    assert!(err.contains("without a token"), "{err}");
}

#[test]
fn comments_are_recorded_and_shown() {
    let p = Proj::init();
    let id = p.add(&["needs a word"]);
    let c = p.json(&["comment", &id, "first thought", "--as", "ann"]);
    assert_eq!(c["author"], "ann");
    assert_eq!(c["text"], "first thought");
    p.ok(&["comment", &id, "second\nwith two lines"]);
    let shown = p.json(&["show", &id]);
    let comments = shown["comments"].as_array().unwrap();
    assert_eq!(comments.len(), 2);
    assert_eq!(comments[1]["author"], "tester");
    let human = p.ok(&["show", &id]);
    assert!(
        human.contains("first thought") && human.contains("with two lines"),
        "{human}"
    );
    let err = p.fails(&["comment", &id, "   "], 2);
    assert!(err.contains("text"), "{err}");
    p.fails(&["comment", "br-nope", "hello"], 3);
    assert_eq!(
        p.json(&["show", &id])["comments"].as_array().unwrap().len(),
        2
    );
}

#[test]
fn an_id_typed_short_or_in_capitals_names_the_task_and_an_ambiguous_one_lists_candidates() {
    let p = Proj::init();
    let a = p.add(&["A"]);
    let b = p.add(&["B"]);
    let short = &a["br-".len()..];
    assert_eq!(p.json(&["show", short])["id"], a.as_str());
    assert_eq!(p.json(&["show", &a.to_uppercase()])["id"], a.as_str());
    p.ok(&["dep", "add", &b.to_uppercase(), short]);
    assert_eq!(p.json(&["show", &b])["deps"][0]["id"], a.as_str());
    assert_eq!(p.json(&["done", short])["state"], "done");
    // `br-` prefixes every id: naming it alone is ambiguous.
    let err = p.fails(&["show", "br-"], 2);
    assert!(err.contains(&a) && err.contains(&b), "{err}");
    let err = p.fails(&["show", "zzzzzz"], 3);
    assert!(err.contains("zzzzzz"), "{err}");
}

#[test]
fn a_claim_outside_ten_seconds_to_a_week_is_refused_as_on_every_front_end() {
    let p = Proj::init();
    let a = p.add(&["A"]);
    let err = p.fails(&["claim", &a, "--lease", "1s"], 2);
    assert!(err.contains("10 s to 7 days"), "{err}");
    assert_eq!(p.json(&["show", &a])["state"], "open");
}

#[test]
fn braid_log_shows_the_libraries_debug_lines_and_is_quiet_by_default() {
    let p = Proj::init();
    let quiet = p.cmd().args(["list"]).output().unwrap();
    assert!(quiet.status.success());
    assert!(
        quiet.stderr.is_empty(),
        "nothing on stderr by default: {}",
        String::from_utf8_lossy(&quiet.stderr)
    );
    let loud = p
        .cmd()
        .args(["list"])
        .env("BRAID_LOG", "debug")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&loud.stderr);
    assert!(err.contains("opened the SQLite store"), "{err}");
    assert_eq!(loud.stdout, quiet.stdout, "stdout is the same either way");
}
