//! `braid merge plan` in real git repositories: levels by dependency,
//! conflicts found exactly with merge-tree, conflict-free batches, plan
//! files of plain branches, clear errors, nothing touched.

use crate::{Proj, git};

fn repo() -> Proj {
    let p = Proj::empty();
    git(p.path(), &["init", "-q", "-b", "main"]);
    git(p.path(), &["config", "user.email", "t@example.com"]);
    git(p.path(), &["config", "user.name", "t"]);
    std::fs::write(p.path().join("shared.txt"), "one\ntwo\nthree\n").unwrap();
    std::fs::write(p.path().join(".gitignore"), ".braid/\n").unwrap();
    git(p.path(), &["add", "."]);
    git(p.path(), &["commit", "-q", "-m", "init"]);
    p.ok(&["init"]);
    p
}

/// A branch off main that writes `content` to `file`.
fn branch(p: &Proj, name: &str, from: &str, file: &str, content: &str) {
    git(p.path(), &["branch", name, from]);
    let wt = tempfile::tempdir().unwrap();
    let dir = wt.path().join("w");
    git(
        p.path(),
        &["worktree", "add", "-q", dir.to_str().unwrap(), name],
    );
    std::fs::write(dir.join(file), content).unwrap();
    git(&dir, &["add", "."]);
    git(
        &dir,
        &["commit", "-q", "-m", &format!("{name} edits {file}")],
    );
    git(
        p.path(),
        &["worktree", "remove", "--force", dir.to_str().unwrap()],
    );
}

#[test]
fn finished_tasks_are_planned_in_conflict_free_batches() {
    let p = repo();
    std::fs::write(
        p.path().join(".braid/config.toml"),
        "[run]\njobs = 1\n[merge]\ninto = \"main\"\n[[agent]]\nname = \"edit\"\n\
         command = [\"sh\", \"-c\", \"F=$(printf '%s' \\\"$1\\\" | sed -n 's/.*EDIT:\\\\([a-z.]*\\\\).*/\\\\1/p' | head -1); echo $BRAID_TASK > $F; git add $F; git commit -qm work\", \"agent\", \"{prompt}\"]\n",
    )
    .unwrap();
    let a = p.add(&["a", "--description", "EDIT:shared.txt"]);
    let b = p.add(&["b", "--description", "EDIT:shared.txt"]);
    let d = p.add(&["d", "--description", "EDIT:other.txt"]);
    p.ok(&["run"]);
    for id in [&a, &b, &d] {
        assert_eq!(
            p.json(&["show", id])["state"],
            "review",
            "{id} waits in review"
        );
    }
    let head = git(p.path(), &["rev-parse", "main"]);
    let plan = p.json(&["merge", "plan"]);
    let (ba, bb, bd) = (
        format!("braid/{a}"),
        format!("braid/{b}"),
        format!("braid/{d}"),
    );
    assert_eq!(plan["into"], "main");
    assert_eq!(plan["target"], head.trim());
    assert_eq!(plan["conflicts"].as_array().unwrap().len(), 1, "{plan}");
    let c = &plan["conflicts"][0];
    assert_eq!(
        (c["a"].as_str().unwrap(), c["b"].as_str().unwrap()),
        (ba.as_str(), bb.as_str())
    );
    assert_eq!(c["files"], serde_json::json!(["shared.txt"]));
    assert_eq!(
        plan["order"][0]["batches"],
        serde_json::json!([[ba, bd], [bb]])
    );
    let files: Vec<&str> = plan["branches"][2]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert_eq!(files, ["other.txt"]);
    // Nothing was touched: the target, the index, the work tree.
    assert_eq!(git(p.path(), &["rev-parse", "main"]), head);
    assert_eq!(git(p.path(), &["status", "--porcelain"]), "");
    // The text form draws the levels and the matrix.
    let text = p.ok(&["merge", "plan"]);
    assert!(
        text.contains("level 0") && text.contains(&format!("[{ba} {bd}]")),
        "{text}"
    );
    assert!(text.contains(&format!("{ba} x {bb}: shared.txt")), "{text}");
    // Naming tasks plans only those.
    let only = p.json(&["merge", "plan", &a, &d]);
    assert_eq!(only["branches"].as_array().unwrap().len(), 2);
    assert_eq!(only["conflicts"].as_array().unwrap().len(), 0);
}

#[test]
fn a_plan_file_of_plain_branches_gets_levels_and_batches() {
    let p = repo();
    branch(&p, "x", "main", "shared.txt", "one\nX\nthree\n");
    branch(&p, "y", "main", "shared.txt", "one\nY\nthree\n");
    branch(&p, "w", "main", "w.txt", "w\n");
    branch(&p, "z", "x", "z.txt", "z\n");
    let plan_file = p.path().join("plan.json");
    std::fs::write(
        &plan_file,
        r#"{"into": "main", "branches": [
            {"name": "x"}, {"name": "y"}, {"name": "w"}, {"name": "z", "deps": ["x"]}
        ]}"#,
    )
    .unwrap();
    let plan = p.json(&["merge", "plan", "--plan", plan_file.to_str().unwrap()]);
    assert_eq!(
        plan["order"][0]["batches"],
        serde_json::json!([["x", "w"], ["y"]]),
        "{plan}"
    );
    assert_eq!(plan["order"][1]["batches"], serde_json::json!([["z"]]));
    assert_eq!(plan["branches"][3]["level"], 1);
    // z was branched from x, so it carries x's change too: it conflicts
    // with y as x does.
    let pairs: Vec<(String, String)> = plan["conflicts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["a"].as_str().unwrap().to_owned(),
                c["b"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        pairs,
        [
            ("x".to_owned(), "y".to_owned()),
            ("y".to_owned(), "z".to_owned())
        ]
    );
    for (bad, needle) in [
        (r#"{"branches": [{"name": "x", "deps": ["nope"]}]}"#, "nope"),
        (
            r#"{"branches": [{"name": "x", "deps": ["y"]}, {"name": "y", "deps": ["x"]}]}"#,
            "cycle",
        ),
        (r#"{"branches": [{"name": "ghost"}]}"#, "ghost"),
        (
            r#"{"branches": [{"name": "x", "colour": "red"}]}"#,
            "colour",
        ),
        (r#"{"into": "trunk", "branches": []}"#, "trunk"),
    ] {
        std::fs::write(&plan_file, bad).unwrap();
        let err = p.fails(&["merge", "plan", "--plan", plan_file.to_str().unwrap()], 2);
        assert!(err.contains(needle), "{bad}: {err}");
    }
}
