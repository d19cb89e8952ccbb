//! Control characters as an attacker sends them: every code point from
//! 0x00 to 0x9f is refused on the way in (command line, MCP, import, task
//! files), naming the field; text stored before the rule, and agent output,
//! is shown and never run on the way out (list, show, tree, ready, events,
//! logs), with colour passing only to a terminal; `--json` stays exact.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::{Proj, Reap};

/// Every control character: C0, DEL and C1.
fn controls() -> impl Iterator<Item = char> {
    (0..=0x9f_u32)
        .filter_map(char::from_u32)
        .filter(|&c| c <= '\u{1f}' || c >= '\u{7f}')
}

/// Fails unless no control character in `bytes` could act on a terminal:
/// no ESC, no C1, no C0 but `\n` and `\t`.
#[track_caller]
fn assert_inert(what: &str, bytes: &[u8]) {
    let text = String::from_utf8(bytes.to_vec()).expect("output is UTF-8");
    let raw: Vec<char> = text
        .chars()
        .filter(|&c| {
            (c <= '\u{1f}' || ('\u{7f}'..='\u{9f}').contains(&c)) && c != '\n' && c != '\t'
        })
        .collect();
    assert!(
        raw.is_empty(),
        "{what}: raw control characters {raw:?} in {text:?}"
    );
}

/// Runs braid expecting exit 2 naming `field`; the message itself is inert.
#[track_caller]
fn refused(p: &Proj, args: &[&str], field: &str) -> String {
    let out = p.run(args);
    assert_eq!(
        out.status.code(),
        Some(2),
        "braid {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_inert("stderr", &out.stderr);
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains(&format!("invalid {field}: ")) && err.contains("control character U+"),
        "{err}"
    );
    err
}

#[test]
fn a_title_holding_any_control_character_is_refused_naming_it() {
    let p = Proj::init();
    // An argument cannot hold NUL; the API, MCP and import tests send it.
    for c in controls().filter(|&c| c != '\0') {
        let err = refused(&p, &["add", &format!("esc{c}x")], "title");
        assert!(
            err.contains(&format!("U+{:04X} at byte 3", c as u32)),
            "{err}"
        );
    }
    assert_eq!(p.json(&["list"]), json!([]));
}

#[test]
fn labels_names_reasons_and_text_are_checked_on_every_command() {
    let p = Proj::init();
    let id = p.add(&["fine"]);
    let osc = "\u{1b}]0;owned\u{7}";
    refused(&p, &["add", "t", "--label", &format!("a{osc}")], "label");
    refused(&p, &["add", "t", "--assignee", osc], "assignee");
    refused(&p, &["add", "t", "--agent", "a\u{9b}2J"], "agent");
    refused(&p, &["add", "t", "--gate", "test\u{7f}"], "gates");
    refused(&p, &["update", &id, "--add-label", "x\u{85}"], "label");
    refused(&p, &["update", &id, "--assignee", "x\ny"], "assignee");
    refused(&p, &["update", &id, "--branch", "\u{1b}[2J"], "branch");
    refused(&p, &["update", &id, "--title", "a\rb"], "title");
    refused(&p, &["--actor", "me\u{1b}[8m", "add", "t"], "actor");
    refused(&p, &["comment", &id, &format!("look {osc}")], "text");
    refused(&p, &["comment", &id, "hi", "--as", "\u{1b}"], "author");
    refused(
        &p,
        &["fail", &id, "--reason", "\u{1b}]52;c;eA==\u{7}"],
        "reason",
    );
    refused(&p, &["claim", &id, "--as", "x\u{9b}"], "assignee");
    // Several lines keep \n and \t, and nothing else.
    refused(
        &p,
        &["add", "t", "--description", &format!("a{osc}")],
        "description",
    );
    refused(
        &p,
        &["add", "t", "--description", "windows\r\nline"],
        "description",
    );
    refused(&p, &["add", "t", "--acceptance", "a\u{8}b"], "acceptance");
    let text = "line one\n\tindented\nline three";
    let ok = p.add(&["t", "--description", text, "--acceptance", "* a\n* b"]);
    p.ok(&["comment", &ok, "first\n\tsecond"]);
    let shown = p.json(&["show", &ok]);
    assert_eq!(shown["description"], text);
    assert_eq!(shown["acceptance"], "* a\n* b");
    assert_eq!(shown["comments"][0]["text"], "first\n\tsecond");
    // Nothing refused changed anything.
    let t = p.json(&["show", &id]);
    assert_eq!(t["title"], "fine");
    assert_eq!(t["labels"], json!([]));
    assert_eq!(t["state"], "open");
    assert_eq!(t["comments"], json!([]));
}

/// A task line of braid's JSONL export.
fn task_line(id: &str, title: &str, description: &str) -> String {
    let v = json!({
        "record": "task", "id": id, "title": title, "description": description,
        "type": "task", "priority": 2, "state": "open",
        "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
    });
    format!("{v}\n")
}

#[test]
fn an_import_refuses_every_control_character_naming_the_line() {
    let p = Proj::init();
    let file = p.path().join("evil.jsonl");
    let mut text = String::from("{\"record\":\"braid-export\",\"version\":1}\n");
    let n = controls().count();
    for c in controls() {
        text.push_str(&task_line(
            &format!("c-{:02x}", c as u32),
            &format!("t{c}x"),
            "",
        ));
    }
    std::fs::write(&file, &text).unwrap();
    let out = p.run(&["import", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert_inert("import errors", &out.stderr);
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains(&format!("{n} problem(s)")), "{err}");
    // Line 2 holds U+0000; line 3 U+0001.
    assert!(
        err.contains("evil.jsonl:2 (c-00): invalid title: control character U+0000 at byte 1"),
        "{err}"
    );
    assert!(err.contains("evil.jsonl:3 (c-01)"), "{err}");
    assert_eq!(p.json(&["health"])["total"], 0);

    // Descriptions keep \n and \t; other text is named by its line too,
    // and --skip-invalid imports the rest.
    let mut text = String::from("{\"record\":\"braid-export\",\"version\":1}\n");
    text.push_str(&task_line("ok-1", "fine", "a\n\tb"));
    text.push_str(&task_line("bad-1", "fine too", "x\u{1b}[2Jy"));
    std::fs::write(&file, &text).unwrap();
    let err = p.fails(&["import", file.to_str().unwrap()], 2);
    assert!(
        err.contains("evil.jsonl:3 (bad-1): invalid description: control character U+001B"),
        "{err}"
    );
    let r = p.json(&["import", file.to_str().unwrap(), "--skip-invalid"]);
    assert_eq!(r["tasks"], 1);
    assert!(
        r["skipped"][0].as_str().unwrap().contains("evil.jsonl:3"),
        "{r}"
    );
    assert_eq!(p.json(&["show", "ok-1"])["description"], "a\n\tb");

    // A comment in the event log is a comment: its text is checked.
    let p = Proj::init();
    let mut text = String::from("{\"record\":\"braid-export\",\"version\":1}\n");
    text.push_str(&task_line("t-1", "fine", ""));
    let event = json!({
        "record": "event", "seq": 1, "at": "2026-01-01T00:00:00Z", "actor": "a",
        "kind": "commented", "task": "t-1",
        "payload": {"author": "a", "text": "see \u{1b}]52;c;cm0gLXJm\u{7}"},
    });
    text.push_str(&format!("{event}\n"));
    std::fs::write(&file, &text).unwrap();
    let err = p.fails(&["import", file.to_str().unwrap()], 2);
    assert!(
        err.contains("evil.jsonl:3: invalid text: control character U+001B"),
        "{err}"
    );
}

#[test]
fn a_task_file_with_an_escape_is_refused_and_crlf_line_ends_are_read() {
    let p = Proj::init();
    p.ok(&["sync"]);
    let dir = p.path().join(".braid/tasks");
    // YAML's "\e" is ESC.
    std::fs::write(
        dir.join("evil.md"),
        "---\ntitle: \"esc \\e]0;owned\\a\"\n---\n",
    )
    .unwrap();
    let out = p.run(&["sync"]);
    assert_eq!(out.status.code(), Some(2));
    assert_inert("sync", &out.stderr);
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("evil.md") && err.contains("invalid title: control character U+001B"),
        "{err}"
    );
    std::fs::remove_file(dir.join("evil.md")).unwrap();
    std::fs::write(
        dir.join("windows.md"),
        "---\r\ntitle: from windows\r\n---\r\n\r\nline one\r\nline two\r\n",
    )
    .unwrap();
    assert_eq!(p.json(&["sync"])["created"], 1);
    let tasks = p.json(&["list"]);
    assert_eq!(tasks[0]["title"], "from windows");
    assert_eq!(tasks[0]["description"], "line one\nline two");
}

/// What an attacker would have stored (OSC 0 title, OSC 52 clipboard, a
/// screen clear, colour, C1 CSI, BEL, CR), and how each must be shown.
const EVIL: &str = "esc \u{1b}]0;owned\u{7} \u{1b}]52;c;cm0gLXJm\u{7} \u{1b}[2J \u{1b}[31mred c1 \u{9b}6n cr\r end";
const SHOWN: [&str; 5] = [
    "\\e]0;owned\\a",
    "\\e]52;c;cm0gLXJm\\a",
    "\\e[2J",
    "\\u{9b}6n",
    "cr\\r end",
];

/// Writes `EVIL` into a task's title, label, assignee, description and
/// comment straight into the database file, as an older braid (or another
/// program) could have left them.
fn store_evil(p: &Proj, id: &str) {
    let db = rusqlite::Connection::open(p.db()).unwrap();
    let label = format!("l{EVIL}");
    db.execute(
        "UPDATE tasks SET title = ?1, labels = ?2, assignee = ?3, description = ?4 WHERE id = ?5",
        rusqlite::params![EVIL, json!([label]).to_string(), EVIL, EVIL, id],
    )
    .unwrap();
    db.execute(
        "UPDATE events SET payload = ?1 WHERE kind = 'commented' AND task = ?2",
        rusqlite::params![json!({"author": EVIL, "text": EVIL}).to_string(), id],
    )
    .unwrap();
}

#[test]
fn text_stored_before_is_shown_not_run_and_json_stays_exact() {
    let p = Proj::init();
    let epic = p.add(&["epic", "--type", "epic"]);
    let id = p.add(&["placeholder", "--parent", &epic, "--label", "l"]);
    p.ok(&["comment", &id, "placeholder"]);
    store_evil(&p, &id);
    for args in [
        vec!["list"],
        vec!["ready"],
        vec!["tree"],
        vec!["show", &id],
        vec!["events"],
        vec!["list", "--label", "nothing"],
    ] {
        let out = p.run(&args);
        assert!(out.status.success(), "{args:?}");
        assert_inert(&format!("{args:?}"), &out.stdout);
        let text = String::from_utf8(out.stdout).unwrap();
        if args[0] == "events" {
            // The payload is shown as JSON: escaped the JSON way.
            assert!(text.contains("\\u001b]52;c;cm0gLXJm\\u0007"), "{text}");
            continue;
        }
        if args.len() == 3 {
            assert!(!text.contains("owned"), "{text}");
            continue;
        }
        for shown in &SHOWN[..3] {
            assert!(text.contains(shown), "{args:?}: {shown} not in {text}");
        }
        // Off a terminal colour is shown too, not applied.
        assert!(text.contains("\\e[31mred"), "{text}");
    }
    // show: every field and the comment, each visible.
    let shown = p.ok(&["show", &id]);
    assert!(
        shown.matches("\\e]52;c;cm0gLXJm\\a").count() >= 5,
        "{shown}"
    );
    for s in SHOWN {
        assert!(shown.contains(s), "{s} not in {shown}");
    }
    // --json: the exact text, and no raw control character either.
    for args in [vec!["list"], vec!["ready"], vec!["show", &id], vec!["tree"]] {
        let mut a = args.clone();
        a.push("--json");
        let out = p.run(&a);
        assert!(out.status.success());
        assert_inert(&format!("{a:?}"), &out.stdout);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let task = match args[0] {
            "show" => v.clone(),
            _ => v
                .as_array()
                .unwrap()
                .iter()
                .find(|t| t["id"] == id)
                .unwrap()
                .clone(),
        };
        assert_eq!(task["title"], EVIL, "{a:?}");
    }
    let v = p.json(&["show", &id]);
    assert_eq!(v["assignee"], EVIL);
    assert_eq!(v["description"], EVIL);
    assert_eq!(v["labels"][0], format!("l{EVIL}"));
    assert_eq!(v["comments"][0]["text"], EVIL);
    // An export round-trips it exactly (and is inert on a terminal).
    let out = p.run(&["export", "--events"]);
    assert_inert("export", &out.stdout);
    let line = String::from_utf8(out.stdout).unwrap();
    let task: Value = serde_json::from_str(line.lines().nth(2).unwrap()).unwrap();
    assert_eq!(task["title"], EVIL);
}

/// Runs braid under script(1): a pseudo-terminal, as a person's shell
/// gives it, with colour allowed.
fn on_a_terminal(p: &Proj, args: &str) -> String {
    let out = Command::new("script")
        .current_dir(p.path())
        .env("TERM", "xterm")
        .env("BRAID_ACTOR", "tester")
        .env("BRAID_CACHE_DIR", p.cache.path())
        .env_remove("BRAID_DB")
        .env_remove("NO_COLOR")
        .args([
            "-qfec",
            &format!("{} {args}", env!("CARGO_BIN_EXE_braid")),
            "/dev/null",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("script(1) runs");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn on_a_terminal_colour_passes_and_every_other_escape_is_shown() {
    let p = Proj::init();
    let id = p.add(&["placeholder"]);
    store_evil(&p, &id);
    let logs = p.path().join(".braid/logs").join(&id);
    std::fs::create_dir_all(&logs).unwrap();
    std::fs::write(
        logs.join("1-agent.log"),
        "compiling \u{1b}[1;32mok\u{1b}[0m\n\u{1b}]52;c;cm0gLXJm\u{7}\u{1b}[1A\u{1b}[2K\u{9b}6n done\n",
    )
    .unwrap();
    for args in ["list", &format!("show {id}"), &format!("logs {id}")] {
        let screen = on_a_terminal(&p, args);
        // Colour is applied: braid's own, and the data's.
        assert!(
            screen.contains("\u{1b}[1m") || screen.contains("\u{1b}[1;32m"),
            "{args}: {screen:?}"
        );
        // Nothing else: the terminal is sent no OSC, cursor movement or C1.
        for raw in [
            "\u{1b}]",
            "\u{1b}[2J",
            "\u{1b}[1A",
            "\u{1b}[2K",
            "\u{9b}",
            "\u{7}",
        ] {
            assert!(
                !screen.contains(raw),
                "{args}: {raw:?} reached the terminal: {screen:?}"
            );
        }
        assert!(
            screen.contains("\\e]52;c;cm0gLXJm\\a"),
            "{args}: {screen:?}"
        );
    }
    let screen = on_a_terminal(&p, &format!("logs {id}"));
    assert!(screen.contains("\u{1b}[1;32mok\u{1b}[0m"), "{screen:?}");
    assert!(screen.contains("\\e[1A\\e[2K\\u{9b}6n done"), "{screen:?}");
}

#[test]
fn agent_output_in_logs_is_shown_not_run_and_json_keeps_it() {
    let p = Proj::init();
    let id = p.add(&["work"]);
    let logs = p.path().join(".braid/logs").join(&id);
    std::fs::create_dir_all(&logs).unwrap();
    let agent = "\u{1b}[31mred\u{1b}[0m \u{1b}]52;c;cm0gLXJm\u{1b}\\ \u{1b}P1$r\u{1b}\\ \u{1b}[10;1H\u{9b}2J\u{0}\r\n";
    let gate = "gate says \u{1b}]0;owned\u{7}\n";
    std::fs::write(logs.join("1-agent.log"), agent).unwrap();
    std::fs::write(logs.join("1-gate-test.log"), gate).unwrap();
    let out = p.run(&["logs", &id]);
    assert!(out.status.success());
    assert_inert("logs", &out.stdout);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains(
            "\\e[31mred\\e[0m \\e]52;c;cm0gLXJm\\e\\ \\eP1$r\\e\\ \\e[10;1H\\u{9b}2J\\0\\r\n"
        ),
        "{text}"
    );
    assert!(text.contains("gate says \\e]0;owned\\a"), "{text}");
    let out = p.run(&["logs", &id, "--json"]);
    assert_inert("logs --json", &out.stdout);
    let texts: String = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["text"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert!(texts.contains(agent) && texts.contains(gate), "{texts:?}");
}

/// `braid mcp` as a coding agent's client drives it: JSON-RPC lines on
/// stdin and stdout.
pub(crate) struct Mcp {
    _child: Reap,
    stdin: std::process::ChildStdin,
    stdout: BufReader<std::process::ChildStdout>,
    next: u64,
}

impl Mcp {
    pub(crate) fn start(p: &Proj) -> Mcp {
        let mut child = p
            .cmd()
            .arg("mcp")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut m = Mcp {
            _child: Reap(child),
            stdin,
            stdout,
            next: 1,
        };
        m.call(
            "initialize",
            json!({"protocolVersion": "2024-11-05", "capabilities": {}, "clientInfo": {"name": "attacker", "version": "1"}}),
        );
        m.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        m
    }

    fn send(&mut self, v: &Value) {
        writeln!(self.stdin, "{v}").unwrap();
        self.stdin.flush().unwrap();
    }

    pub(crate) fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next;
        self.next += 1;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        loop {
            let mut line = String::new();
            assert!(
                self.stdout.read_line(&mut line).unwrap() > 0,
                "braid mcp ended"
            );
            let v: Value = serde_json::from_str(&line).unwrap();
            if v["id"] == id {
                return v;
            }
        }
    }

    /// A tool's error message (a JSON-RPC error or an error result).
    pub(crate) fn tool_error(&mut self, tool: &str, args: Value) -> String {
        let r = self.call("tools/call", json!({"name": tool, "arguments": args}));
        if let Some(m) = r["error"]["message"].as_str() {
            return m.to_owned();
        }
        assert_eq!(r["result"]["isError"], true, "{tool} {args}: {r}");
        r["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .to_owned()
    }
}

#[test]
fn mcp_tools_refuse_every_control_character_naming_the_field() {
    let p = Proj::init();
    let id = p.add(&["fine"]);
    let mut mcp = Mcp::start(&p);
    for c in controls() {
        let m = mcp.tool_error("add", json!({"title": format!("t{c}x")}));
        assert!(
            m.contains(&format!(
                "invalid title: control character U+{:04X} at byte 1",
                c as u32
            )),
            "{m}"
        );
    }
    let m = mcp.tool_error("add", json!({"title": "t", "labels": ["a\u{1b}b"]}));
    assert!(m.contains("invalid label"), "{m}");
    let m = mcp.tool_error("add", json!({"title": "t", "description": "a\u{9b}b"}));
    assert!(m.contains("invalid description"), "{m}");
    let m = mcp.tool_error("update", json!({"id": id, "assignee": "\u{1b}]0;x\u{7}"}));
    assert!(m.contains("invalid assignee"), "{m}");
    let m = mcp.tool_error(
        "comment",
        json!({"id": id, "text": "\u{1b}]52;c;eA==\u{7}"}),
    );
    assert!(m.contains("invalid text"), "{m}");
    // The server still serves, and nothing was written.
    let r = mcp.call(
        "tools/call",
        json!({"name": "add", "arguments": {"title": "ok there"}}),
    );
    assert_eq!(r["error"], Value::Null, "{r}");
    assert_ne!(r["result"]["isError"], true, "{r}");
    let titles: Vec<String> = p
        .json(&["list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["title"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(titles.len(), 2, "{titles:?}");
    assert!(titles.contains(&"fine".to_owned()) && titles.contains(&"ok there".to_owned()));
}
