//! Where a task's branch starts: a dependent starts from its finished
//! dependencies' work when that has not landed, waits when that work
//! conflicts, and still merges cleanly once its dependency lands; and
//! where the work went, as `braid init`, `show` and `run` say it.

use crate::git;
use crate::run::{agent, repo_project};

fn events_of(p: &crate::Proj, id: &str, kind: &str) -> Vec<serde_json::Value> {
    p.ok(&["events", "--json"])
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["task"] == id && e["kind"] == kind)
        .collect()
}

#[test]
fn a_dependent_starts_from_its_dependencys_unlanded_work_and_merges_cleanly_once_it_lands() {
    // No [merge]: finished work stays on its branch.
    let p = repo_project(&format!(
        "[[agent]]\nname = \"a\"\ncommand = [\"{}\"]\n",
        agent("commit.sh")
    ));
    let a = p.add(&["Make a"]);
    let b = p.add(&["Make b", "--dep", &a]);
    let out = p.ok(&["run"]);
    assert!(
        out.contains("2 done on branches braid/<id>: nothing lands without a [merge] target"),
        "{out}"
    );
    assert_eq!(
        git(p.path(), &["ls-tree", "--name-only", "main"]),
        "README\n",
        "main unchanged"
    );
    // b's branch holds a's work, and its first attempt recorded that.
    let a_tip = git(p.path(), &["rev-parse", &format!("braid/{a}")]);
    git(
        p.path(),
        &[
            "merge-base",
            "--is-ancestor",
            a_tip.trim(),
            &format!("braid/{b}"),
        ],
    );
    let files = git(p.path(), &["ls-tree", "--name-only", &format!("braid/{b}")]);
    assert!(
        files.contains(&format!("{a}.txt")) && files.contains(&format!("{b}.txt")),
        "{files}"
    );
    let started = &events_of(&p, &b, "dispatched")[0]["payload"]["base"];
    assert_eq!(started["stacked"], serde_json::json!([a]));
    assert_eq!(started["target"], "HEAD");
    let ctx = p.ok(&["context", &b]);
    assert!(
        ctx.contains("## Where your branch starts")
            && ctx.contains(&format!("finished work of {a}")),
        "{ctx}"
    );
    // a itself started from the target, with nothing stacked.
    let a_base = &events_of(&p, &a, "dispatched")[0]["payload"]["base"];
    assert_eq!(a_base["stacked"], serde_json::json!([]));
    let shown = p.json(&["show", &b]);
    assert_eq!(shown["git"]["stacked"], serde_json::json!([a]));
    assert_eq!(shown["git"]["landed"], false);
    let text = p.ok(&["show", &b]);
    assert!(
        text.contains(&format!("with {a}'s work")) && text.contains("not on HEAD yet"),
        "{text}"
    );

    // a lands on main (as a merge would); b still merges cleanly onto it.
    git(
        p.path(),
        &[
            "merge",
            "-q",
            "--no-ff",
            "-m",
            "land a",
            &format!("braid/{a}"),
        ],
    );
    assert_eq!(p.json(&["show", &a])["git"]["landed"], true);
    let tree = std::process::Command::new("git")
        .current_dir(p.path())
        .args(["merge-tree", "--write-tree", "main", &format!("braid/{b}")])
        .output()
        .unwrap();
    assert!(
        tree.status.success(),
        "b conflicts after a landed: {}",
        String::from_utf8_lossy(&tree.stdout)
    );
    git(
        p.path(),
        &[
            "merge",
            "-q",
            "--no-ff",
            "-m",
            "land b",
            &format!("braid/{b}"),
        ],
    );
    let on_main = git(p.path(), &["ls-tree", "--name-only", "main"]);
    assert!(on_main.contains(&format!("{a}.txt")) && on_main.contains(&format!("{b}.txt")));
}

#[test]
fn a_dependent_whose_dependencies_conflict_waits_instead_of_starting_on_a_wrong_base() {
    let p = repo_project(&format!(
        "[[agent]]\nname = \"s\"\ncommand = [\"{}\"]\n",
        agent("shared.sh")
    ));
    let a = p.add(&["a", "-p", "0"]);
    let c = p.add(&["c", "-p", "0"]);
    let b = p.add(&["b", "--dep", &a, "--dep", &c]);
    let out = p.run(&["run"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(p.json(&["show", &a])["state"], "done", "{stdout}");
    assert_eq!(p.json(&["show", &c])["state"], "done");
    // b was not started on one of them alone: it is open, with no branch,
    // and says why.
    assert_eq!(p.json(&["show", &b])["state"], "open", "{stdout}");
    assert!(!crate::git_ok(
        p.path(),
        &[
            "rev-parse",
            "--verify",
            "-q",
            &format!("refs/heads/braid/{b}")
        ]
    ));
    let released = events_of(&p, &b, "released");
    let why = released[0]["payload"]["reason"].as_str().unwrap();
    assert!(
        why.contains("waits: its dependencies' work conflicts") && why.contains("shared.txt"),
        "{why}"
    );
    assert!(stdout.contains("conflicts"), "{stdout}");
    assert!(
        events_of(&p, &b, "dispatched").is_empty(),
        "no agent started"
    );
}

#[test]
fn init_in_git_writes_the_current_branch_as_the_merge_target_and_says_so() {
    let p = crate::Proj::empty();
    git(p.path(), &["init", "-q", "-b", "trunk"]);
    git(p.path(), &["config", "user.email", "t@example.com"]);
    git(p.path(), &["config", "user.name", "t"]);
    std::fs::write(p.path().join("README"), "hi\n").unwrap();
    git(p.path(), &["add", "."]);
    git(p.path(), &["commit", "-q", "-m", "init"]);
    let out = p.ok(&["init"]);
    assert!(out.contains("Finished work lands on trunk"), "{out}");
    let config = std::fs::read_to_string(p.path().join(".braid/config.toml")).unwrap();
    assert!(config.contains("[merge]\ninto = \"trunk\""), "{config}");
    assert!(config.contains("Remove this table"), "{config}");
    // Outside git: no [merge], nothing said.
    let q = crate::Proj::empty();
    let out = q.ok(&["init"]);
    assert!(!out.contains("lands on"), "{out}");
    let config = std::fs::read_to_string(q.path().join(".braid/config.toml")).unwrap();
    assert!(!config.contains("[merge]"), "{config}");
}

#[test]
fn an_agent_that_adds_nothing_to_its_stacked_base_made_no_changes() {
    // The base holds a's work; b's agent does nothing: that is not work.
    let p = repo_project(&format!(
        "[run]\nmax_attempts = 1\n[[agent]]\nname = \"a\"\ncommand = [\"{}\"]\n\
         [[agent]]\nname = \"idle\"\ncommand = [\"true\"]\n",
        agent("commit.sh")
    ));
    let a = p.add(&["Make a"]);
    let b = p.add(&["Make b", "--dep", &a, "--agent", "idle"]);
    let out = p.run(&["run"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(p.json(&["show", &a])["state"], "done");
    let t = p.json(&["show", &b]);
    assert_eq!(t["state"], "failed");
    let finished = events_of(&p, &b, "agent_finished");
    assert!(
        finished[0]["payload"]["exit"]
            .as_str()
            .unwrap()
            .contains("made no changes"),
        "{finished:?}"
    );
}
