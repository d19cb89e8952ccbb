//! Review from the command line, with the engine and a real git
//! repository: work reaches review (and `[notify]` hears of it), a person
//! sends it back with a line comment, the next attempt is told the comment
//! with its code and changes the line, and with `require_approval` nothing
//! lands until a person approves the branch as it stands.

use crate::{Proj, git};

/// A repository whose agent appends what it was told to `.braid/told.txt` (so
/// the test can read the prompt) and rewrites `lib.rs` each attempt.
fn project(extra: &str) -> Proj {
    let p = Proj::empty();
    git(p.path(), &["init", "-q", "-b", "main"]);
    git(p.path(), &["config", "user.email", "t@example.com"]);
    git(p.path(), &["config", "user.name", "t"]);
    std::fs::write(p.path().join("lib.rs"), "fn a() {}\n").unwrap();
    std::fs::write(p.path().join(".gitignore"), ".braid/\n").unwrap();
    git(p.path(), &["add", "."]);
    git(p.path(), &["commit", "-q", "-m", "init"]);
    p.ok(&["init"]);
    let agent = p.path().join(".braid/agent.sh");
    // What it was told goes outside the worktree (braid commits what an
    // agent leaves there).
    std::fs::write(
        &agent,
        "told=\"$(dirname \"$0\")/told.txt\"\n\
         printf '%s\\n' \"$1\" >> \"$told\"\n\
         n=$(grep -c '^# Task' \"$told\")\n\
         printf 'fn a() {}\\nfn b() { attempt %s }\\n' \"$n\" > lib.rs\n\
         git add lib.rs && git commit -qm \"attempt $n\"\n",
    )
    .unwrap();
    std::fs::write(
        p.path().join(".braid/config.toml"),
        format!(
            "[merge]\ninto = \"main\"\n{extra}[run]\njobs = 1\n[[agent]]\nname = \"edit\"\n\
             command = [\"sh\", {:?}, \"{{prompt}}\"]\n\
             [notify]\ncommand = [\"sh\", \"-c\", \"cat >> {}\"]\n",
            agent.display().to_string(),
            p.path().join("notified.jsonl").display()
        ),
    )
    .unwrap();
    p
}

#[test]
fn a_line_comment_goes_back_to_the_agent_with_its_code_and_is_outdated_once_changed() {
    let p = project("");
    let id = p.add(&["add fn b"]);
    p.ok(&["run"]);
    assert_eq!(p.json(&["show", &id])["state"], "review");
    // [notify] heard that it is ready for review.
    let notified = crate::run::when_changed(p.path(), "the notify command", || {
        std::fs::read_to_string(p.path().join("notified.jsonl"))
            .ok()
            .filter(|s| s.contains("\"review\""))
    });
    let ev: serde_json::Value = serde_json::from_str(notified.lines().next().unwrap()).unwrap();
    assert_eq!(ev["kind"], "state_changed");
    assert_eq!(ev["payload"]["to"], "review");
    assert_eq!(ev["task"], id.as_str());

    let listed = p.json(&["review", "list"]);
    assert_eq!(listed[0]["id"], id.as_str());
    assert_eq!(listed[0]["files"], 1, "{listed}");
    let stat = p.json(&["diff", &id, "--stat"]);
    assert_eq!(stat["files"][0]["path"], "lib.rs");
    assert_eq!(stat["files"][0]["added"], 1, "{stat}");
    assert!(stat["patch"].is_null());
    let diff = p.ok(&["diff", &id]);
    assert!(diff.contains("+fn b() { attempt 1 }"), "{diff}");

    // A comment on a line the branch does not have: refused, nothing changes.
    let err = p.fails(
        &[
            "review",
            "reject",
            &id,
            "-m",
            "x",
            "--comment",
            "lib.rs:7:no",
        ],
        2,
    );
    assert!(err.contains("lib.rs has 2 line(s)"), "{err}");
    assert_eq!(p.json(&["show", &id])["state"], "review");

    let t = p.json(&[
        "review",
        "reject",
        &id,
        "-m",
        "b must say what it does",
        "--comment",
        "lib.rs:2:name the attempt in words",
    ]);
    assert_eq!(t["state"], "open");
    let context = p.ok(&["context", &id]);
    assert!(context.contains("b must say what it does"), "{context}");
    assert!(
        context.contains("- lib.rs:2: name the attempt in words"),
        "{context}"
    );
    assert!(
        context.contains(">    2 | fn b() { attempt 1 }"),
        "{context}"
    );

    // The next attempt is told, and changes the line.
    p.ok(&["run"]);
    assert_eq!(p.json(&["show", &id])["state"], "review");
    let told = std::fs::read_to_string(p.path().join(".braid/told.txt")).unwrap();
    let second = &told[told.rfind("# Task").unwrap()..];
    assert!(
        second.contains("lib.rs:2: name the attempt in words"),
        "{second}"
    );
    let v = p.json(&["review", "show", &id]);
    assert_eq!(v["comments"][0]["code"], "fn b() { attempt 1 }");
    assert_eq!(v["comments"][0]["outdated"], true, "{v}");
    assert_eq!(v["decisions"][0]["kind"], "changes_requested");
    assert_eq!(
        v["gates"].as_array().unwrap().len(),
        0,
        "no gates configured"
    );
    assert_eq!(v["merge"]["planned"], true, "{v}");
    let human = p.ok(&["review", "show", &id]);
    assert!(human.contains("lib.rs:2 (outdated)"), "{human}");
}

#[test]
fn with_require_approval_nothing_lands_until_approved_as_it_stands() {
    let p = project("require_approval = true\n");
    let id = p.add(&["add fn b"]);
    p.ok(&["run"]);
    let main = git(p.path(), &["rev-parse", "main"]);
    let out = p.ok(&["merge", "run"]);
    assert!(out.contains("waits for an approval"), "{out}");
    assert_eq!(
        git(p.path(), &["rev-parse", "main"]),
        main,
        "nothing landed"
    );
    assert_eq!(p.json(&["show", &id])["state"], "review");

    let d = p.json(&["review", "approve", &id, "-m", "good"]);
    assert_eq!(d["kind"], "approved");
    assert_eq!(
        d["head"].as_str().unwrap(),
        git(p.path(), &["rev-parse", &format!("braid/{id}")]).trim()
    );
    p.ok(&["merge", "run"]);
    assert_eq!(p.json(&["show", &id])["state"], "done");
    let landed = git(p.path(), &["show", "main:lib.rs"]);
    assert!(landed.contains("attempt 1"), "{landed}");
    // Approving what is no longer in review is refused (exit 4).
    let err = p.fails(&["review", "approve", &id], 4);
    assert!(err.contains("not in review"), "{err}");
}

#[test]
fn a_reviewing_agent_does_the_same_over_mcp() {
    use serde_json::json;
    let p = project("");
    let id = p.add(&["add fn b"]);
    p.ok(&["run"]);
    let mut mcp = crate::control::Mcp::start(&p);
    let text = |r: &serde_json::Value| -> serde_json::Value {
        assert_ne!(r["result"]["isError"], true, "{r}");
        serde_json::from_str(r["result"]["content"][0]["text"].as_str().unwrap()).unwrap()
    };
    let tool = |mcp: &mut crate::control::Mcp, name: &str, args: serde_json::Value| {
        mcp.call("tools/call", json!({"name": name, "arguments": args}))
    };
    let listed = text(&tool(&mut mcp, "review_list", json!({})));
    assert_eq!(listed[0]["id"], id.as_str());
    let diff = text(&tool(&mut mcp, "diff", json!({"id": id})));
    assert!(
        diff["patch"]
            .as_str()
            .unwrap()
            .contains("+fn b() { attempt 1 }"),
        "{diff}"
    );
    let shown = text(&tool(&mut mcp, "review_show", json!({"id": id})));
    assert_eq!(shown["merge"]["planned"], true, "{shown}");
    let m = mcp.tool_error(
        "reject",
        json!({"id": id, "message": "no", "comments": [{"file": "lib.rs", "line": 40, "text": "x"}]}),
    );
    assert!(m.contains("lib.rs has 2 line(s)"), "{m}");
    let t = text(&tool(
        &mut mcp,
        "reject",
        json!({"id": id, "message": "say more", "comments": [{"file": "lib.rs", "line": 2, "text": "which attempt?"}]}),
    ));
    assert_eq!(t["state"], "open", "{t}");
    let m = mcp.tool_error("approve", json!({"id": id}));
    assert!(m.contains("is open, not in review"), "{m}");
    p.ok(&["run"]);
    let d = text(&tool(
        &mut mcp,
        "approve",
        json!({"id": id, "message": "fine now"}),
    ));
    assert_eq!(d["kind"], "approved");
    let v = p.json(&["review", "show", &id]);
    assert_eq!(v["approved"], true);
    assert_eq!(v["decisions"].as_array().unwrap().len(), 2, "{v}");
}
