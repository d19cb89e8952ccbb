//! A newcomer's first hour: help that explains, the conventions of `gh`,
//! `cargo` and `bd` (completions, a man page, `-d`, stdin, `$EDITOR`,
//! `status`, suggestions), and output that does not mislead.

use std::io::{BufRead, Write};
use std::process::Stdio;

use crate::Proj;

fn stderr_of(p: &Proj, args: &[&str]) -> String {
    String::from_utf8(p.run(args).stderr).unwrap()
}

#[test]
fn help_describes_every_argument_and_keeps_global_options_apart() {
    let p = Proj::init();
    let dep = p.ok(&["dep", "add", "--help"]);
    assert!(dep.contains("The task that waits (the dependent)"), "{dep}");
    assert!(
        dep.contains("The task it waits for (the dependency)"),
        "{dep}"
    );
    let done = p.ok(&["done", "--help"]);
    assert!(done.contains("Why, recorded as the close reason"), "{done}");
    let (options, global) = done.split_once("Global options:").expect("a heading");
    assert!(
        options.contains("--reason") && !options.contains("--db"),
        "{done}"
    );
    assert!(
        global.contains("--db") && global.contains("--json"),
        "{done}"
    );
    let merge = p.ok(&["--help"]);
    assert!(merge.contains("and land them"), "{merge}");
    // A user reaching for --dep on update is told where dependencies change.
    let id = p.add(&["one"]);
    let e = p.fails(&["update", &id, "--dep", "br-zz"], 2);
    assert!(e.contains(&format!("braid dep add {id} br-zz")), "{e}");
    // A typo gets a suggestion.
    let e = p.fails(&["stauts"], 2);
    assert!(e.contains("similar subcommand exists: 'status'"), "{e}");
}

#[test]
fn completions_and_a_man_page_are_printed_for_installing() {
    let p = Proj::init();
    for (shell, mark) in [
        ("bash", "_braid()"),
        ("zsh", "#compdef braid"),
        ("fish", "complete -c braid"),
        ("powershell", "Register-ArgumentCompleter"),
    ] {
        let out = p.ok(&["completions", shell]);
        assert!(
            out.contains(mark),
            "{shell}: {}",
            &out[..200.min(out.len())]
        );
        assert!(out.contains("review"), "{shell} completes subcommands");
    }
    let man = p.ok(&["man"]);
    assert!(man.contains(".TH braid 1"), "{}", &man[..200]);
    assert!(man.contains("status"), "the man page lists the commands");
}

#[test]
fn long_text_comes_from_d_stdin_a_file_or_the_editor() {
    let p = Proj::init();
    let a = p.add(&["short", "-d", "from -d"]);
    assert_eq!(p.json(&["show", &a])["description"], "from -d");

    let mut child = p
        .cmd()
        .args(["add", "piped", "--description", "-", "--json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let long = "line one\n".repeat(40_000);
    let mut stdin = child.stdin.take().unwrap();
    let writer = {
        let long = long.clone();
        std::thread::spawn(move || stdin.write_all(long.as_bytes()).unwrap())
    };
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["description"].as_str().unwrap().len(),
        long.trim_end().len()
    );

    let file = p.path().join("desc.md");
    std::fs::write(&file, "from a file\n").unwrap();
    let b = p.add(&["filed", "--description-file", file.to_str().unwrap()]);
    assert_eq!(p.json(&["show", &b])["description"], "from a file");
    let e = p.fails(&["add", "x", "--description-file", "/no/such/file"], 2);
    assert!(
        e.contains("reading the description from /no/such/file"),
        "{e}"
    );

    // -e: the editor is the user's command; it gets the current text.
    let editor = p.path().join("editor.sh");
    std::fs::write(
        &editor,
        "#!/bin/sh\ngrep -q 'from a file' \"$1\" && echo 'edited' > \"$1\"\n",
    )
    .unwrap();
    let out = p
        .cmd()
        .args(["update", &b, "-e"])
        .env("VISUAL", format!("sh {}", editor.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(p.json(&["show", &b])["description"], "edited");
}

#[test]
fn output_says_what_was_cut_and_words_its_counts() {
    let p = Proj::init();
    for i in 0..25 {
        p.add(&[&format!("task {i}")]);
    }
    let ready = p.ok(&["ready"]);
    assert!(ready.contains("… 5 more (--limit N)"), "{ready}");
    assert!(!p.ok(&["ready", "-n", "30"]).contains("more"));

    let epic = p.ok(&["add", "An epic", "--type", "epic"]);
    assert!(
        epic.contains("(open)") && !epic.contains("blocked"),
        "{epic}"
    );
    let health = p.ok(&["health"]);
    assert!(health.starts_with("26 tasks (1 epic)"), "{health}");

    // ready and blocked are filters, not states.
    let first = p.add(&["first"]);
    let second = p.add(&["second", "--dep", &first]);
    let blocked = p.json(&["list", "--blocked"]);
    let ids: Vec<&str> = blocked
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [second.as_str()], "only the task that waits");
    assert_eq!(p.json(&["list", "--state", "blocked"]), blocked);
    let ready = p.json(&["list", "--ready", "-n", "1000"]);
    assert_eq!(ready.as_array().unwrap().len(), 26, "25 tasks and first");
    let e = p.fails(&["list", "--state", "waiting"], 2);
    assert!(e.contains("or ready, blocked"), "{e}");

    // show names what a task unblocks, and says what each event did.
    let shown = p.ok(&["show", &first]);
    assert!(
        shown.contains(&format!("unblocks    {second} (blocks)")),
        "{shown}"
    );
    p.ok(&["claim", &first, "--as", "kim"]);
    p.ok(&["fail", &first, "-r", "the disk is full"]);
    let shown = p.ok(&["show", &first]);
    assert!(
        shown.contains("in_progress -> failed (the disk is full)"),
        "{shown}"
    );
    assert_eq!(
        p.json(&["show", &first])["dependents"],
        serde_json::json!([{"id": second, "kind": "blocks"}])
    );
}

#[test]
fn events_align_and_every_time_is_rfc_3339() {
    let p = Proj::init();
    let id = p.add(&["one"]);
    p.ok(&["claim", &id, "--as", "kim"]);
    let events = p.ok(&["events"]);
    let lines: Vec<&str> = events.lines().collect();
    let col = |l: &str, word: &str| l.find(word).unwrap();
    assert_eq!(
        col(lines[0], "created"),
        col(lines[1], "claimed"),
        "{events}"
    );
    assert_eq!(col(lines[0], &id), col(lines[1], &id), "{events}");
    let shown = p.json(&["show", &id]);
    let claimed = &shown["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "claimed")
        .unwrap()["payload"]["lease_expires"];
    let t = claimed.as_str().unwrap_or_else(|| panic!("{claimed}"));
    assert!(t.parse::<jiff::Timestamp>().is_ok(), "{t}");
}

#[test]
fn errors_are_in_words_and_json_when_asked() {
    let p = Proj::init();
    std::fs::write(
        p.path().join(".braid/config.toml"),
        "[run]\njobs = \"four\"\n",
    )
    .unwrap();
    let e = p.fails(&["run"], 2);
    assert!(
        e.contains("found the text \"four\", expected a whole number, 0 or more"),
        "{e}"
    );
    let e = stderr_of(&p, &["add", "--json"]);
    let v: serde_json::Value =
        serde_json::from_str(e.trim()).unwrap_or_else(|x| panic!("{x}: {e}"));
    assert_eq!(v["error"]["code"], "invalid");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("<TITLE>"),
        "{v}"
    );
}

#[test]
fn status_shows_what_is_worked_on_what_needs_you_and_what_awaits_review() {
    let p = Proj::init();
    let a = p.add(&["by hand"]);
    p.add(&["waiting"]);
    p.ok(&["claim", &a, "--as", "kim"]);
    let out = p.ok(&["status"]);
    assert!(out.contains("2 tasks: 1 ready"), "{out}");
    assert!(
        out.contains(&format!(
            "{a}  by hand  [claimed by kim (no agent), attempt 1]"
        )),
        "{out}"
    );
    assert!(out.contains("Nothing waits for you."), "{out}");
    let v = p.json(&["status"]);
    assert_eq!(v["working"][0]["task"]["id"], a.as_str());
    assert!(v["working"][0]["agent"].is_null());
}

#[test]
fn serve_says_when_it_stops() {
    let p = Proj::init();
    let mut child = p
        .cmd()
        .args(["serve", "--bind", "127.0.0.1:0", "--no-sync"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let err = std::io::BufReader::new(child.stderr.take().unwrap());
    let first = lines.next().unwrap().unwrap();
    assert!(first.starts_with("Serving braid on"), "{first}");
    let pid = child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let rest: Vec<String> = err.lines().map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}: {rest:?}");
    assert!(
        rest.iter().any(|l| l.starts_with("braid serve stopped")),
        "{rest:?}"
    );
}

#[test]
fn init_and_the_demo_say_what_to_do_next() {
    let p = Proj::empty();
    crate::git(p.path(), &["init", "-q", "-b", "main"]);
    crate::git(p.path(), &["config", "user.email", "t@example.com"]);
    crate::git(p.path(), &["config", "user.name", "t"]);
    crate::git(p.path(), &["commit", "-q", "--allow-empty", "-m", "init"]);
    let out = p.ok(&["init"]);
    assert!(
        out.contains("Commit .braid/config.toml and .braid/.gitignore"),
        "{out}"
    );
    let ignore = std::fs::read_to_string(p.path().join(".braid/.gitignore")).unwrap();
    for kept_out in ["*.db", "logs/", "worktrees/"] {
        assert!(ignore.contains(kept_out), "{ignore}");
    }
    let config = std::fs::read_to_string(p.path().join(".braid/config.toml")).unwrap();
    assert!(config.contains("`braid config`"), "{config}");
    assert!(!config.contains("docs/config.md"), "no path the user lacks");
    assert!(config.contains("--permission-mode acceptEdits"), "{config}");
    assert!(config.contains("[merge]\ninto = \"main\""), "{config}");
    let reference = p.ok(&["config"]);
    assert!(
        reference.starts_with("# `.braid/config.toml`"),
        "{reference}"
    );
    assert!(p.ok(&["help", "config"]).contains("require_approval"));

    // The demo names the binary that ran when `braid` on the PATH is not it.
    let demo = p.ok(&["demo"]);
    let line = demo.lines().find(|l| l.starts_with("Try it:")).unwrap();
    let bin = env!("CARGO_BIN_EXE_braid");
    assert!(line.contains(&format!("&& {bin} claim")), "{line}");
    assert!(demo.contains("cargo install --path crates/braid"), "{demo}");
}

#[test]
fn logs_list_every_attempt_with_its_outcome_even_empty_or_never_started() {
    let p = Proj::init();
    std::fs::write(
        p.path().join(".braid/config.toml"),
        "[run]\njobs = 1\nmax_attempts = 1\n[[agent]]\nname = \"quiet\"\ncommand = [\"true\"]\n\
         [[gate]]\nname = \"lint\"\ncommand = [\"./lint.sh\"]\n",
    )
    .unwrap();
    // There for the preflight, in the project; not in the task's scratch
    // workspace (outside git), where the gate then cannot start.
    std::fs::write(p.path().join("lint.sh"), "#!/bin/sh\nexit 0\n").unwrap();
    std::process::Command::new("chmod")
        .args(["+x", p.path().join("lint.sh").to_str().unwrap()])
        .status()
        .unwrap();
    let id = p.add(&["one"]);
    assert_eq!(
        p.ok(&["logs", &id]).trim(),
        format!("No logs for {id} yet: no attempt has started.")
    );
    p.run(&["run"]);
    let out = p.ok(&["logs", &id]);
    assert!(
        out.contains("==> attempt 1 · agent quiet · exit 0 · ") && out.contains("(empty)"),
        "{out}"
    );
    assert!(
        out.contains("attempt 1 · gate lint · FAILED: could not start: ./lint.sh"),
        "{out}"
    );
    let lines: Vec<serde_json::Value> = p
        .ok(&["logs", &id, "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0]["name"], "agent quiet");
    assert_eq!(lines[0]["text"], "");
    assert!(
        lines[1]["outcome"]
            .as_str()
            .unwrap()
            .starts_with("FAILED: could not start"),
        "{lines:?}"
    );
}

#[test]
fn an_epic_finishes_with_its_children_unless_configured_not_to() {
    let p = Proj::init();
    let epic = p.add(&["Storage", "--type", "epic"]);
    let a = p.add(&["schema", "--parent", &epic]);
    let b = p.add(&["migrations", "--parent", &epic]);
    p.ok(&["done", &a]);
    let status = p.json(&["epic", "status"]);
    assert_eq!(status[0]["done"], 1);
    assert_eq!(status[0]["total"], 2);
    let human = p.ok(&["epic", "status"]);
    assert!(human.contains("1 of 2 tasks done (50%)"), "{human}");
    p.ok(&["done", &b]);
    assert_eq!(p.json(&["show", &epic])["state"], "done");
    let events = p.ok(&["events"]);
    assert!(events.contains("epic_completed"), "{events}");
    assert!(p.ok(&["epic", "status"]).contains("No open epics"));
    assert_eq!(p.json(&["epic", "status", "--all"])[0]["done"], 2);

    // Opted out: the epic stays open.
    let config = std::fs::read_to_string(p.path().join(".braid/config.toml")).unwrap();
    std::fs::write(
        p.path().join(".braid/config.toml"),
        config.replace("[run]\n", "[run]\nclose_epics = false\n"),
    )
    .unwrap();
    let kept = p.add(&["Kept", "--type", "epic"]);
    let c = p.add(&["only", "--parent", &kept]);
    p.ok(&["done", &c]);
    assert_eq!(p.json(&["show", &kept])["state"], "open");
}
