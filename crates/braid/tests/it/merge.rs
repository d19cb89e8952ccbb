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

/// Runs `braid ARGS --json` expecting exit `code`; parses stdout.
fn json_exit(p: &Proj, args: &[&str], code: i32) -> serde_json::Value {
    let mut a = args.to_vec();
    a.push("--json");
    let out = p.run(&a);
    assert_eq!(
        out.status.code(),
        Some(code),
        "braid {a:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("braid {a:?}: {e}: {}", String::from_utf8_lossy(&out.stderr)))
}

fn names(v: &serde_json::Value, key: &str) -> Vec<String> {
    v[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["branch"].as_str().unwrap().to_owned())
        .collect()
}

/// The files in a commit's tree.
fn files_at(p: &Proj, rev: &str) -> Vec<String> {
    git(p.path(), &["ls-tree", "--name-only", rev])
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write_config(p: &Proj, extra: &str) {
    std::fs::write(
        p.path().join(".braid/config.toml"),
        format!("[run]\njobs = 3\n[merge]\ninto = \"main\"\n{extra}"),
    )
    .unwrap();
}

fn plan_file(p: &Proj, into: &str, branches: &[(&str, &[&str])]) -> String {
    let list: Vec<serde_json::Value> = branches
        .iter()
        .map(|(n, d)| serde_json::json!({"name": n, "deps": d}))
        .collect();
    let path = p.path().join(".braid/plan.json");
    std::fs::write(
        &path,
        serde_json::json!({"into": into, "branches": list}).to_string(),
    )
    .unwrap();
    path.to_string_lossy().into_owned()
}

const NO_BAD: &str = "[[gate]]\nname = \"nobad\"\ncommand = [\"sh\", \"-c\", \"if grep -rq BAD --exclude-dir=.git .; then echo found BAD; exit 1; fi\"]\n";

#[test]
fn branches_with_dependencies_land_in_order_and_the_checkout_is_kept() {
    let p = repo();
    write_config(&p, NO_BAD);
    branch(&p, "x", "main", "x.txt", "x\n");
    branch(&p, "y", "x", "y.txt", "y\n");
    branch(&p, "z", "y", "z.txt", "z\n");
    branch(&p, "w", "main", "w.txt", "w\n");
    // A local edit in the user's checkout, in a file no branch touches,
    // survives the landing; the index is not used.
    std::fs::write(p.path().join("shared.txt"), "one\ntwo\nthree\nlocal\n").unwrap();
    let plan = plan_file(
        &p,
        "main",
        &[("z", &["y"]), ("y", &["x"]), ("x", &[]), ("w", &[])],
    );
    let dry = json_exit(&p, &["merge", "run", "--plan", &plan, "--dry-run"], 0);
    assert_eq!(dry["landed"].as_array().unwrap().len(), 0);
    assert_eq!(dry["would"].as_array().unwrap().len(), 3, "{dry}");
    assert_eq!(dry["gate_runs"], 0);
    let before = git(p.path(), &["rev-parse", "main"]);
    assert_eq!(
        dry["to"].as_str().unwrap(),
        before.trim(),
        "dry run moves nothing"
    );
    let out = json_exit(&p, &["merge", "run", "--plan", &plan], 0);
    assert_eq!(names(&out, "landed"), ["x", "w", "y", "z"], "{out}");
    let after = git(p.path(), &["rev-parse", "main"]);
    assert_eq!(out["to"].as_str().unwrap(), after.trim());
    // First-parent history: one merge per level, dependencies first.
    let log = git(p.path(), &["log", "--first-parent", "--format=%s", "main"]);
    let subjects: Vec<&str> = log.lines().collect();
    assert_eq!(
        subjects,
        ["Merge z", "Merge y", "Merge w", "Merge x", "init"],
        "{log}"
    );
    for f in ["x.txt", "y.txt", "z.txt", "w.txt"] {
        assert!(p.path().join(f).exists(), "{f} is in the checkout");
    }
    assert_eq!(
        std::fs::read_to_string(p.path().join("shared.txt")).unwrap(),
        "one\ntwo\nthree\nlocal\n"
    );
    assert_eq!(git(p.path(), &["status", "--porcelain"]), " M shared.txt\n");
    // Run again: everything is in already; nothing is tested.
    let again = json_exit(&p, &["merge", "run", "--plan", &plan], 0);
    assert_eq!(again["gate_runs"], 0);
    assert_eq!(again["landed"].as_array().unwrap().len(), 4);
    assert_eq!(git(p.path(), &["rev-parse", "main"]), after);
}

#[test]
fn one_failing_branch_in_a_batch_of_eight_is_isolated_and_the_rest_land() {
    let p = repo();
    write_config(&p, NO_BAD);
    let mut list = Vec::new();
    for i in 1..=8 {
        let content = if i == 6 { "BAD\n" } else { "ok\n" };
        branch(&p, &format!("b{i}"), "main", &format!("f{i}.txt"), content);
        list.push(format!("b{i}"));
    }
    let entries: Vec<(&str, &[&str])> = list.iter().map(|n| (n.as_str(), &[][..])).collect();
    let plan = plan_file(&p, "main", &entries);
    let out = json_exit(&p, &["merge", "run", "--plan", &plan], 1);
    assert_eq!(
        names(&out, "landed"),
        ["b1", "b2", "b3", "b4", "b5", "b7", "b8"],
        "{out}"
    );
    assert_eq!(names(&out, "rejected"), ["b6"]);
    let r = &out["rejected"][0]["failure"];
    assert_eq!(r["gate"], "nobad");
    assert!(r["tail"].as_str().unwrap().contains("found BAD"), "{r}");
    assert!(out["rounds"].as_u64().unwrap() <= 3, "{out}");
    let files = files_at(&p, "main");
    assert!(files.contains(&"f8.txt".to_owned()) && !files.contains(&"f6.txt".to_owned()));
    // The gates of what landed passed: run them on the target.
    assert!(
        !std::process::Command::new("sh")
            .args([
                "-c",
                "grep -rq BAD --exclude-dir=.git --exclude-dir=.braid ."
            ])
            .current_dir(p.path())
            .status()
            .unwrap()
            .success()
    );
    assert_eq!(git(p.path(), &["status", "--porcelain"]), "");
    assert_eq!(
        git(p.path(), &["worktree", "list", "--porcelain"])
            .matches("worktree ")
            .count(),
        1,
        "candidate worktrees are removed"
    );
}

#[test]
fn the_target_moving_during_a_run_is_rebuilt_on() {
    let p = repo();
    git(p.path(), &["branch", "trunk", "main"]);
    // The gate moves trunk the first time it runs, as a push from someone
    // else would; the landing must notice and rebuild on the new trunk.
    let repo_dir = p.path().to_string_lossy().into_owned();
    write_config(
        &p,
        &format!(
            "[[gate]]\nname = \"mover\"\nenv = [\"PATH\", \"HOME\"]\ncommand = [\"sh\", \"-c\", \"R={repo_dir}; if [ ! -e $R/.braid/moved ]; then touch $R/.braid/moved; \
             t=$(printf 'outside\\\\n' | git -C $R hash-object -w --stdin); \
             tree=$( (git -C $R ls-tree trunk; printf '100644 blob %s\\\\toutside.txt\\\\n' $t) | git -C $R mktree); \
             c=$(git -C $R commit-tree $tree -p trunk -m outside); git -C $R update-ref refs/heads/trunk $c; fi; true\"]\n"
        ),
    );
    branch(&p, "a", "main", "a.txt", "a\n");
    branch(&p, "b", "main", "b.txt", "b\n");
    let plan = plan_file(&p, "trunk", &[("a", &[]), ("b", &[])]);
    let out = json_exit(&p, &["merge", "run", "--plan", &plan], 0);
    assert_eq!(names(&out, "landed"), ["a", "b"], "{out}");
    assert_eq!(out["retargeted"], 1, "{out}");
    let log = git(p.path(), &["log", "--first-parent", "--format=%s", "trunk"]);
    assert!(log.starts_with("Merge b\nMerge a\noutside\n"), "{log}");
    assert_eq!(
        files_at(&p, "trunk").len(),
        5,
        "a, b, outside, shared, .gitignore"
    );
    // main (checked out) was never touched.
    assert_eq!(files_at(&p, "main").len(), 2);
}

#[test]
fn a_kill_mid_run_resumes_without_repeating_a_recorded_result() {
    let p = repo();
    let gate_log = p.path().join(".braid/gate.log");
    let hang = p.path().join(".braid/hang");
    std::fs::write(&hang, "").unwrap();
    // The hanging gate announces itself through this pipe.
    let fifo = p.path().join(".braid/gate.fifo");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    // Each gate run logs its tree and pid; while `hang` exists the second
    // run says so on the pipe and blocks (the test kills braid then).
    std::fs::write(
        p.path().join(".braid/config.toml"),
        format!(
            "[run]\njobs = 1\n[merge]\ninto = \"main\"\n[[gate]]\nname = \"g\"\ncommand = [\"sh\", \"-c\", \"echo $(git rev-parse HEAD^{{tree}}) $$ >> {log}; n=$(wc -l < {log}); if [ -e {hang} ] && [ $n -ge 2 ]; then echo $$ > {fifo}; sleep 600; fi; if grep -rq BAD --exclude-dir=.git .; then exit 1; fi\"]\n",
            log = gate_log.display(),
            hang = hang.display(),
            fifo = fifo.display()
        ),
    )
    .unwrap();
    for (i, c) in [(1, "ok"), (2, "ok"), (3, "BAD"), (4, "ok")] {
        branch(&p, &format!("b{i}"), "main", &format!("f{i}.txt"), c);
    }
    let plan = plan_file(
        &p,
        "main",
        &[("b1", &[]), ("b2", &[]), ("b3", &[]), ("b4", &[])],
    );
    let before = git(p.path(), &["rev-parse", "main"]);
    let mut child = crate::Reap(
        p.cmd()
            .args(["merge", "run", "--plan", &plan])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Opening the pipe waits for the second gate run to write to it.
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = fifo.clone();
    std::thread::spawn(move || {
        let _ = tx.send(std::fs::read_to_string(reader));
    });
    let hung_pid = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("the second gate run starts")
        .unwrap();
    let hung_pid = hung_pid.trim().to_owned();
    // A second merge run meanwhile is refused.
    let err = p.fails(&["merge", "run", "--plan", &plan], 4);
    assert!(err.contains("another merge run"), "{err}");
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    let _ = std::process::Command::new("kill")
        .args(["-9", &hung_pid])
        .status();
    assert_eq!(
        git(p.path(), &["rev-parse", "main"]),
        before,
        "nothing landed before the gates passed"
    );
    std::fs::remove_file(&hang).unwrap();
    let out = json_exit(&p, &["merge", "run", "--plan", &plan], 1);
    assert_eq!(names(&out, "landed"), ["b1", "b2", "b4"], "{out}");
    assert_eq!(names(&out, "rejected"), ["b3"]);
    assert!(out["from_journal"].as_u64().unwrap() >= 1, "{out}");
    // The first result (the whole batch, failed) was recorded before the
    // kill and not run again; the interrupted one was.
    let text = std::fs::read_to_string(&gate_log).unwrap();
    let trees: Vec<&str> = text.lines().map(|l| l.split(' ').next().unwrap()).collect();
    let first = trees[0];
    assert_eq!(trees.iter().filter(|t| **t == first).count(), 1, "{text}");
    assert_eq!(
        trees.iter().filter(|t| **t == trees[1]).count(),
        2,
        "{text}"
    );
    assert_eq!(git(p.path(), &["status", "--porcelain"]), "");
}

/// An agent that writes its task id to the file named `EDIT:<file>` in its
/// prompt and leaves it uncommitted (the engine commits work that passes);
/// given a conflict to resolve, it merges the target and settles the
/// conflict by writing "resolved".
fn agent_config(p: &Proj, jobs: usize, max_attempts: u32, gate: &str) {
    agent_config_resolving(p, jobs, max_attempts, gate, RESOLVES);
}

/// A resolver that merges the target and settles the conflict.
const RESOLVES: &str = "git merge -q main >/dev/null 2>&1 || { echo resolved > shared.txt; git add shared.txt; git commit -qm resolved; }";
/// A careless resolver: it commits over the conflict without merging.
const CARELESS: &str =
    "echo careless > shared.txt; git add shared.txt; git commit -qm 'resolved (not really)'";

/// [`agent_config`] with `resolver` as what the agent does when asked to
/// resolve a conflict.
fn agent_config_resolving(p: &Proj, jobs: usize, max_attempts: u32, gate: &str, resolver: &str) {
    let script = p.path().join(".braid/agent.sh");
    std::fs::write(
        &script,
        format!(
            r#"case "$1" in
  *"Resolve conflict"*)
    {resolver}
    exit 0;;
esac
F=$(printf '%s' "$1" | sed -n 's/.*EDIT:\([a-z.]*\).*/\1/p' | head -1)
echo "$BRAID_TASK" > "$F"
"#
        ),
    )
    .unwrap();
    std::fs::write(
        p.path().join(".braid/config.toml"),
        format!(
            "[run]\njobs = {jobs}\nmax_attempts = {max_attempts}\nbackoff = {{ base = \"10ms\", cap = \"10ms\" }}\n[merge]\ninto = \"main\"\n\
             [[agent]]\nname = \"edit\"\ncommand = [\"sh\", \"{}\", \"{{prompt}}\"]\n\
             [[gate]]\nname = \"check\"\ncommand = [\"sh\", \"-c\", {gate:?}]\n",
            script.display()
        ),
    )
    .unwrap();
}

#[test]
fn a_conflicting_branch_gets_a_resolve_task_that_an_agent_can_finish() {
    let p = repo();
    agent_config(&p, 2, 3, "true");
    let a = p.add(&["a", "--description", "EDIT:shared.txt"]);
    let b = p.add(&["b", "--description", "EDIT:shared.txt"]);
    p.ok(&["run"]);
    let out = json_exit(&p, &["merge", "run"], 1);
    assert_eq!(names(&out, "landed"), [format!("braid/{a}")], "{out}");
    let r = &out["rejected"][0];
    assert_eq!(r["branch"], format!("braid/{b}"));
    assert_eq!(r["with"], format!("braid/{a}"));
    assert_eq!(r["failure"]["files"], serde_json::json!(["shared.txt"]));
    let rid = r["resolve_task"].as_str().unwrap().to_owned();
    let resolve = p.json(&["show", &rid]);
    assert_eq!(resolve["state"], "open");
    assert_eq!(resolve["ready"], true);
    assert!(
        resolve["title"]
            .as_str()
            .unwrap()
            .starts_with("Resolve conflict between"),
        "{resolve}"
    );
    assert_eq!(resolve["labels"], serde_json::json!(["merge-conflict"]));
    let shown_b = p.json(&["show", &b]);
    assert_eq!(shown_b["state"], "review");
    assert!(
        shown_b["deps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["id"] == rid.as_str() && d["kind"] == "blocks"),
        "{shown_b}"
    );
    // The resolver's branch starts from the conflicting branch.
    assert_eq!(
        git(p.path(), &["rev-parse", &format!("braid/{rid}")]),
        git(p.path(), &["rev-parse", &format!("braid/{b}")])
    );
    // An agent resolves it; the next merge lands the resolution, and b
    // with it.
    p.ok(&["run"]);
    assert_eq!(p.json(&["show", &rid])["state"], "review");
    let out = json_exit(&p, &["merge", "run"], 0);
    let landed = names(&out, "landed");
    assert!(
        landed.contains(&format!("braid/{rid}")) && landed.contains(&format!("braid/{b}")),
        "{out}"
    );
    for id in [&a, &b, &rid] {
        assert_eq!(p.json(&["show", id])["state"], "done", "{id}");
    }
    assert_eq!(git(p.path(), &["show", "main:shared.txt"]), "resolved\n");
}

#[test]
fn a_branch_that_fails_only_with_another_goes_back_with_the_gate_output() {
    let p = repo();
    agent_config(
        &p,
        3,
        2,
        "if [ -e pa.txt ] && [ -e pb.txt ]; then echo pa and pb clash; exit 1; fi",
    );
    let pa = p.add(&["pa", "--description", "EDIT:pa.txt"]);
    let pb = p.add(&["pb", "--description", "EDIT:pb.txt"]);
    p.ok(&["run"]);
    // Each passed its gates alone.
    assert_eq!(p.json(&["show", &pb])["state"], "review");
    let out = json_exit(&p, &["merge", "run"], 1);
    assert_eq!(names(&out, "landed"), [format!("braid/{pa}")], "{out}");
    let r = &out["rejected"][0];
    assert_eq!(r["branch"], format!("braid/{pb}"));
    assert_eq!(r["task_state"], "open");
    assert_eq!(p.json(&["show", &pa])["state"], "done");
    assert_eq!(p.json(&["show", &pb])["state"], "open");
    // The next attempt's prompt carries the gate's output.
    let context = p.ok(&["context", &pb]);
    assert!(
        context.contains("pa and pb clash") && context.contains("when merged into main"),
        "{context}"
    );
    // Attempt 2 of 2 fails the same way: the task fails.
    p.ok(&["run"]);
    let out = json_exit(&p, &["merge", "run"], 1);
    assert_eq!(out["rejected"][0]["task_state"], "failed", "{out}");
    let shown = p.json(&["show", &pb]);
    assert_eq!(shown["state"], "failed");
    assert!(
        shown["close_reason"]
            .as_str()
            .unwrap()
            .contains("attempt 2 of 2"),
        "{shown}"
    );
    assert!(!files_at(&p, "main").contains(&"pb.txt".to_owned()));
}

#[test]
fn run_with_merge_takes_an_epic_from_ready_to_merged() {
    let p = repo();
    agent_config(&p, 2, 3, "true");
    let epic = p.add(&["epic", "--type", "epic"]);
    let a = p.add(&["a", "--parent", &epic, "--description", "EDIT:shared.txt"]);
    let b = p.add(&["b", "--parent", &epic, "--description", "EDIT:shared.txt"]);
    let c = p.add(&[
        "c",
        "--parent",
        &epic,
        "--dep",
        &a,
        "--description",
        "EDIT:c.txt",
    ]);
    let d = p.add(&[
        "d",
        "--parent",
        &epic,
        "--dep",
        &c,
        "--description",
        "EDIT:d.txt",
    ]);
    p.ok(&["run", "--merge"]);
    // a and b conflicted; the resolution was dispatched, resolved, merged.
    let all = p.json(&["list", "--parent", &epic]);
    let tasks = all.as_array().unwrap();
    assert!(tasks.len() >= 5, "{all}");
    for t in tasks {
        assert_eq!(t["state"], "done", "{t}");
    }
    for id in [&a, &b, &c, &d] {
        assert_eq!(p.json(&["show", id])["state"], "done", "{id}");
    }
    let files = files_at(&p, "main");
    for f in ["c.txt", "d.txt", "shared.txt"] {
        assert!(files.contains(&f.to_owned()), "{f}: {files:?}");
    }
    assert_eq!(git(p.path(), &["show", "main:shared.txt"]), "resolved\n");
    // c merged onto a target that held a (a's branch may have landed by
    // itself or through the resolution, whichever reached review first),
    // and d after c.
    let log = git(
        p.path(),
        &["log", "--first-parent", "--format=%H %s", "main"],
    );
    let merge_of = |t: &str| {
        log.lines()
            .position(|l| l.ends_with(&format!(": {t}")))
            .unwrap_or_else(|| panic!("no merge of {t}: {log}"))
    };
    assert!(merge_of("d") < merge_of("c"), "{log}");
    let c_merge = log
        .lines()
        .nth(merge_of("c"))
        .unwrap()
        .split(' ')
        .next()
        .unwrap();
    git(
        p.path(),
        &[
            "merge-base",
            "--is-ancestor",
            &format!("braid/{a}"),
            &format!("{c_merge}^1"),
        ],
    );
    // --merge without a target is refused before anything runs.
    std::fs::write(
        p.path().join(".braid/config.toml"),
        "[[agent]]\nname = \"x\"\ncommand = [\"true\"]\n",
    )
    .unwrap();
    let err = p.fails(&["run", "--merge"], 2);
    assert!(err.contains("[merge]"), "{err}");
}

fn with_label(p: &Proj, label: &str) -> Vec<serde_json::Value> {
    p.json(&[
        "list",
        "--label",
        label,
        "--state",
        "open,in_progress,review,done,failed,cancelled,deferred",
    ])
    .as_array()
    .unwrap()
    .clone()
}

#[test]
fn a_careless_resolver_cannot_start_a_chain_the_run_ends_with_the_pair_waiting_for_a_person() {
    let p = repo();
    agent_config_resolving(&p, 2, 2, "true", CARELESS);
    let a = p.add(&["a", "--description", "EDIT:shared.txt"]);
    let b = p.add(&["b", "--description", "EDIT:shared.txt"]);
    // The run must end by itself: a bound on the wait turns a runaway
    // into a failure instead of a hung suite.
    let mut child = p
        .cmd()
        .args(["run", "--merge"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Read both pipes while it runs, so a full pipe never holds it up.
    let (stdout, stderr) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let drain = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut out = Vec::new();
            pipe.read_to_end(&mut out).unwrap();
            out
        })
    };
    let reader = drain(Box::new(stdout));
    let errors = drain(Box::new(stderr));
    use wait_timeout::ChildExt;
    if child
        .wait_timeout(std::time::Duration::from_secs(120))
        .unwrap()
        .is_none()
    {
        child.kill().unwrap();
        panic!("braid run --merge did not end by itself");
    }
    let out = std::process::Output {
        status: child.wait().unwrap(),
        stdout: reader.join().unwrap(),
        stderr: errors.join().unwrap(),
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(p.json(&["show", &a])["state"], "done", "{stdout}");
    // One resolve task, ever.
    let resolvers = with_label(&p, "merge-conflict");
    assert_eq!(resolvers.len(), 1, "{resolvers:?}\n{stdout}");
    let rid = resolvers[0]["id"].as_str().unwrap().to_owned();
    let r = p.json(&["show", &rid]);
    // Its attempts were refused: the branch does not hold the target.
    assert_eq!(r["state"], "failed", "{r}");
    assert!(
        r["close_reason"]
            .as_str()
            .unwrap()
            .contains("did not resolve the conflict: its branch does not contain main"),
        "{r}"
    );
    assert!(
        r["labels"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l == "needs-human"),
        "{r}"
    );
    // b waits behind it, untouched, for a person.
    let shown_b = p.json(&["show", &b]);
    assert_eq!(shown_b["state"], "review", "{shown_b}");
    assert!(
        stdout.contains("agent edit (did not resolve the conflict"),
        "{stdout}"
    );
    // Output linear in the branches: no note said twice.
    let notes: Vec<&str> = stdout.lines().filter(|l| l.contains("note:")).collect();
    let unique: std::collections::HashSet<&&str> = notes.iter().collect();
    assert_eq!(notes.len(), unique.len(), "{stdout}");
    assert!(stdout.lines().count() < 60, "{stdout}");
}

#[test]
fn a_resolve_branch_that_conflicts_or_a_second_conflict_goes_to_a_person_and_dry_run_says_so() {
    let p = repo();
    agent_config(&p, 2, 3, "true");
    let a = p.add(&["a", "--description", "EDIT:shared.txt"]);
    let b = p.add(&["b", "--description", "EDIT:shared.txt"]);
    p.ok(&["run"]);
    // The dry run checks b against main as the real run will find it
    // (with a landed), not against main as it is now.
    let dry = json_exit(&p, &["merge", "run", "--dry-run"], 0);
    let would = dry["would"].to_string();
    assert!(
        would.contains(&format!(
            "braid/{b} conflicts (shared.txt): would get a resolve task"
        )),
        "{dry}"
    );
    let out = json_exit(&p, &["merge", "run"], 1);
    assert_eq!(names(&out, "landed"), [format!("braid/{a}")], "{out}");
    let rid = out["rejected"][0]["resolve_task"]
        .as_str()
        .unwrap()
        .to_owned();
    // The resolver merges main properly; then main moves under it.
    p.ok(&["run"]);
    assert_eq!(p.json(&["show", &rid])["state"], "review");
    std::fs::write(p.path().join("shared.txt"), "hotfix\n").unwrap();
    git(p.path(), &["commit", "-qam", "hotfix on main"]);

    let dry = json_exit(&p, &["merge", "run", "--dry-run"], 0);
    assert!(
        dry["would"].to_string().contains(&format!(
            "braid/{rid} conflicts (shared.txt): would need a person"
        )),
        "{dry}"
    );
    let out = json_exit(&p, &["merge", "run"], 1);
    let r = &out["rejected"][0];
    assert_eq!(r["branch"], format!("braid/{rid}"), "{out}");
    assert!(r["resolve_task"].is_null(), "{out}");
    assert!(
        r["needs_human"]
            .as_str()
            .unwrap()
            .contains("resolves a merge conflict"),
        "{out}"
    );
    let shown = p.json(&["show", &rid]);
    assert!(
        shown["labels"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l == "needs-human"),
        "{shown}"
    );
    assert!(
        shown["comments"].to_string().contains("Needs a person"),
        "{shown}"
    );
    assert_eq!(
        with_label(&p, "merge-conflict").len(),
        1,
        "no resolve task for a resolve task"
    );
    // Left alone while a person has it: no new task, nothing said twice.
    let out = json_exit(&p, &["merge", "run"], 0);
    assert!(out["rejected"].as_array().unwrap().is_empty(), "{out}");
    assert_eq!(with_label(&p, "merge-conflict").len(), 1);

    // A person cancels the resolution: b is free, conflicts again, and this
    // second conflict of the same pair goes to a person too.
    p.ok(&["cancel", &rid, "--reason", "doing it by hand"]);
    let out = json_exit(&p, &["merge", "run"], 1);
    let r = &out["rejected"][0];
    assert_eq!(r["branch"], format!("braid/{b}"), "{out}");
    assert!(
        r["needs_human"].as_str().unwrap().contains("again"),
        "{out}"
    );
    assert_eq!(
        with_label(&p, "merge-conflict").len(),
        1,
        "at most one per pair"
    );
    assert!(
        p.json(&["show", &b])["labels"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l == "needs-human")
    );
}
