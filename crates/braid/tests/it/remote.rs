//! `[git] remote`: work leaves the machine. A bare repository is `origin`;
//! clones of it are nodes. On SQLite one node lands through the remote; on
//! PostgreSQL two nodes share one work graph, build on each other's pushed
//! work, race to land, and lose nothing when one is killed.

use std::path::Path;

use crate::run::agent;
use crate::{Proj, git};

/// A bare `origin` holding `main` with one commit.
fn origin() -> tempfile::TempDir {
    let seed = tempfile::tempdir().unwrap();
    git(seed.path(), &["init", "-q", "-b", "main"]);
    git(seed.path(), &["config", "user.email", "t@example.com"]);
    git(seed.path(), &["config", "user.name", "t"]);
    std::fs::write(seed.path().join("README"), "hi\n").unwrap();
    git(seed.path(), &["add", "."]);
    git(seed.path(), &["commit", "-q", "-m", "init"]);
    let bare = tempfile::tempdir().unwrap();
    git(
        Path::new("/"),
        &[
            "clone",
            "-q",
            "--bare",
            &seed.path().to_string_lossy(),
            &bare.path().to_string_lossy(),
        ],
    );
    bare
}

/// A node: a clone of `origin` as a braid project (`db`: a PostgreSQL URL,
/// or the embedded SQLite), configured with `config` plus the remote.
fn node(origin: &Path, db: Option<&str>, config: &str) -> Proj {
    let p = Proj::empty();
    git(
        Path::new("/"),
        &[
            "clone",
            "-q",
            &origin.to_string_lossy(),
            &p.path().to_string_lossy(),
        ],
    );
    git(p.path(), &["config", "user.email", "node@example.com"]);
    git(p.path(), &["config", "user.name", "node"]);
    let mut init = p.cmd();
    if let Some(url) = db {
        init.args(["--db", url]);
    }
    let out = init.arg("init").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let written = std::fs::read_to_string(p.path().join(".braid/config.toml")).unwrap();
    assert!(written.contains("[merge]\ninto = \"main\""), "{written}");
    std::fs::write(
        p.path().join(".braid/config.toml"),
        format!("{config}\n[merge]\ninto = \"main\"\n[git]\nremote = \"origin\"\n"),
    )
    .unwrap();
    p
}

/// braid on a node (with `db` as BRAID_DB when given); must succeed.
fn on(p: &Proj, db: Option<&str>, args: &[&str]) -> String {
    let mut c = p.cmd();
    if let Some(url) = db {
        c.env("BRAID_DB", url);
    }
    let out = c.args(args).output().unwrap();
    assert!(
        out.status.success(),
        "braid {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn id_of(added: &str) -> String {
    serde_json::from_str::<serde_json::Value>(added).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The files on `origin`'s main.
fn origin_files(origin: &Path) -> String {
    git(origin, &["ls-tree", "--name-only", "main"])
}

/// The task branches `origin` holds.
fn origin_branches(origin: &Path) -> Vec<String> {
    git(
        origin,
        &[
            "for-each-ref",
            "--format=%(refname:short)",
            "refs/heads/braid/",
        ],
    )
    .lines()
    .map(str::to_owned)
    .collect()
}

const AGENT: &str = "[[agent]]\nname = \"a\"\ncommand = [\"AGENT\"]\n";

fn agent_config() -> String {
    AGENT.replace("AGENT", &agent("commit.sh"))
}

#[test]
fn one_node_lands_through_its_remote_and_gc_deletes_landed_branches() {
    let origin = origin();
    let p = node(origin.path(), None, &agent_config());
    let a = id_of(&on(&p, None, &["add", "a", "--json"]));
    let b = id_of(&on(&p, None, &["add", "b", "--dep", &a, "--json"]));
    let out = on(&p, None, &["run", "--merge"]);
    assert!(out.contains("landed on main"), "{out}");
    // Both landed on origin's main, a before b (b started from a's work).
    let files = origin_files(origin.path());
    assert!(
        files.contains(&format!("{a}.txt")) && files.contains(&format!("{b}.txt")),
        "{files}"
    );
    let log = git(origin.path(), &["log", "--format=%s", "main"]);
    let (ia, ib) = (
        log.find(&format!("work on {a}")).unwrap(),
        log.find(&format!("work on {b}")).unwrap(),
    );
    assert!(ib < ia, "b's work is newer than a's:\n{log}");
    // Each branch was pushed after its gates; gc deletes the landed ones.
    let pushed = origin_branches(origin.path());
    assert_eq!(pushed.len(), 2, "{pushed:?}");
    let gc = on(&p, None, &["gc", "--json"]);
    let gc: serde_json::Value = serde_json::from_str(&gc).unwrap();
    assert_eq!(
        gc["remote_branches_deleted"].as_array().unwrap().len(),
        2,
        "{gc}"
    );
    assert!(origin_branches(origin.path()).is_empty());
    // The clone's own main followed.
    assert_eq!(
        git(p.path(), &["rev-parse", "main"]),
        git(origin.path(), &["rev-parse", "main"])
    );
}

#[test]
fn a_remote_that_is_not_there_is_refused_before_anything_is_claimed() {
    let origin = origin();
    let p = node(origin.path(), None, &agent_config());
    let config = std::fs::read_to_string(p.path().join(".braid/config.toml")).unwrap();
    std::fs::write(
        p.path().join(".braid/config.toml"),
        config.replace("remote = \"origin\"", "remote = \"upstream\""),
    )
    .unwrap();
    let id = id_of(&on(&p, None, &["add", "a", "--json"]));
    let err = p.fails(&["run"], 2);
    assert!(
        err.contains("no such remote") && err.contains("git remote add upstream"),
        "{err}"
    );
    assert_eq!(p.json(&["show", &id])["state"], "open");
}

/// Starts braid on a node without waiting.
fn spawn(p: &Proj, db: &str, args: &[&str]) -> std::process::Child {
    p.cmd()
        .env("BRAID_DB", db)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

fn finish(c: std::process::Child) -> std::process::Output {
    use wait_timeout::ChildExt;
    let mut c = c;
    if c.wait_timeout(std::time::Duration::from_secs(120))
        .unwrap()
        .is_none()
    {
        let _ = c.kill();
        panic!("a node did not finish within 2 minutes");
    }
    c.wait_with_output().unwrap()
}

#[test]
fn two_nodes_on_postgres_share_work_through_the_remote() {
    let Some(schema) = crate::postgres::Schema::new() else {
        return;
    };
    let db = Some(schema.url.as_str());
    let origin = origin();
    // Merge candidates run a gate that takes a moment, so two merge runs
    // overlap.
    let slow_gate = "[[gate]]\nname = \"settle\"\ncommand = [\"sleep\", \"1\"]\n";
    let a_node = node(origin.path(), db, &format!("{}{slow_gate}", agent_config()));
    let b_node = node(origin.path(), db, &format!("{}{slow_gate}", agent_config()));

    // Node A does `a`; node B lands it, then does `b` (which depends on
    // it) from a's work on origin, and node A lands that.
    let a = id_of(&on(&a_node, db, &["add", "a", "--json"]));
    let b = id_of(&on(&a_node, db, &["add", "b", "--dep", &a, "--json"]));
    on(&a_node, db, &["run", "--only", &a]);
    assert!(origin_branches(origin.path()).contains(&format!("braid/{a}")));
    on(&b_node, db, &["merge", "run"]);
    assert!(origin_files(origin.path()).contains(&format!("{a}.txt")));
    on(&b_node, db, &["run"]);
    let b_files = git(
        origin.path(),
        &["ls-tree", "--name-only", &format!("braid/{b}")],
    );
    assert!(
        b_files.contains(&format!("{a}.txt")),
        "b started from a's work: {b_files}"
    );
    on(&a_node, db, &["merge", "run"]);
    let files = origin_files(origin.path());
    assert!(files.contains(&format!("{b}.txt")), "{files}");
    assert_eq!(json_state(&a_node, db, &b), "done");

    // Two mergers race. B's candidate gate holds until A has landed, so
    // B's compare-and-swap finds the target moved: B rebuilds on A's
    // landing and lands the rest; no commit is lost.
    let c = id_of(&on(&a_node, db, &["add", "c", "--json"]));
    let d = id_of(&on(&a_node, db, &["add", "d", "--json"]));
    on(&a_node, db, &["run", "--only", &c, "--only", &d]);
    let before = git(origin.path(), &["rev-parse", "main"]);
    let gate = |cmd: &str| {
        format!(
            "{}[[gate]]\nname = \"settle\"\ncommand = {cmd}\n[merge]\ninto = \"main\"\n[git]\nremote = \"origin\"\n",
            agent_config()
        )
    };
    let held = format!(
        "[\"timeout\", \"60\", \"sh\", \"-c\", \"until git -C {} cat-file -e main:{c}.txt 2>/dev/null; do sleep 0.05; done\"]",
        origin.path().display()
    );
    std::fs::write(b_node.path().join(".braid/config.toml"), gate(&held)).unwrap();
    std::fs::write(a_node.path().join(".braid/config.toml"), gate("[\"true\"]")).unwrap();
    // A lands c alone; B builds c and d together. (Two nodes building the
    // same candidate make the same commit, so that race is no race: the
    // second push finds it there.)
    let y = spawn(&b_node, &schema.url, &["merge", "run"]);
    let x = spawn(&a_node, &schema.url, &["merge", "run", &c]);
    let (x, y) = (finish(x), finish(y));
    for o in [&x, &y] {
        assert!(
            o.status.success(),
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let b_said = String::from_utf8_lossy(&y.stdout);
    assert!(
        b_said.contains("the target moved") && b_said.contains("rebuilding"),
        "B lost the race and rebuilt: {b_said}\n--- A ---\n{}{}\n--- B stderr ---\n{}",
        String::from_utf8_lossy(&x.stdout),
        String::from_utf8_lossy(&x.stderr),
        String::from_utf8_lossy(&y.stderr)
    );
    let files = origin_files(origin.path());
    for t in [&a, &b, &c, &d] {
        assert!(files.contains(&format!("{t}.txt")), "{t} lost: {files}");
    }
    git(
        origin.path(),
        &["merge-base", "--is-ancestor", before.trim(), "main"],
    );
    for t in [&c, &d] {
        assert_eq!(json_state(&b_node, db, t), "done");
    }

    // A node killed between pushing its work and landing it loses
    // nothing: another node lands what it pushed.
    std::fs::write(
        a_node.path().join(".braid/config.toml"),
        format!(
            "{}[[gate]]\nname = \"quick\"\ncommand = [\"true\"]\n\
             [[gate]]\nname = \"hang\"\ncommand = [\"sleep\", \"60\"]\n\
             [merge]\ninto = \"main\"\ngates = [\"hang\"]\n[git]\nremote = \"origin\"\n",
            agent_config()
        ),
    )
    .unwrap();
    let e = id_of(&on(&a_node, db, &["add", "e", "--gate", "quick", "--json"]));
    let mut killed = spawn(&a_node, &schema.url, &["run", "--merge", "--only", &e]);
    // Pushed, and its merge candidate's gate running (recorded in the
    // node's process records): then SIGKILL.
    let procs = a_node.path().join(".braid/procs");
    crate::run::when_changed(&procs, "node A's merge gate", || {
        braid_run::procs::recorded(&procs)
            .iter()
            .any(|r| r.holds == "merge")
            .then_some(())
    });
    assert!(
        origin_branches(origin.path()).contains(&format!("braid/{e}")),
        "pushed before its merge began"
    );
    killed.kill().unwrap();
    let _ = killed.wait();
    assert!(
        !origin_files(origin.path()).contains(&format!("{e}.txt")),
        "not landed yet"
    );
    let landed = on(&b_node, db, &["merge", "run"]);
    assert!(
        origin_files(origin.path()).contains(&format!("{e}.txt")),
        "B landed A's pushed work: {landed}\n{}",
        on(&b_node, db, &["show", &e])
    );
    assert_eq!(json_state(&b_node, db, &e), "done");
    // Node A's next merge run stops the gate its dead run left, and finds
    // nothing left to do.
    std::fs::write(
        a_node.path().join(".braid/config.toml"),
        format!(
            "{}{slow_gate}[merge]\ninto = \"main\"\n[git]\nremote = \"origin\"\n",
            agent_config()
        ),
    )
    .unwrap();
    on(&a_node, db, &["merge", "run"]);
}

fn json_state(p: &Proj, db: Option<&str>, id: &str) -> String {
    let shown: serde_json::Value =
        serde_json::from_str(&on(p, db, &["show", id, "--json"])).unwrap();
    shown["state"].as_str().unwrap().to_owned()
}

#[test]
fn a_push_that_fails_for_the_network_is_retried_and_a_refused_one_is_never_forced() {
    let origin = origin();
    let p = node(origin.path(), None, &agent_config());
    // Fetches work; pushes go to a path that is not there (the network,
    // as git sees it).
    git(
        p.path(),
        &[
            "remote",
            "set-url",
            "--push",
            "origin",
            "/nonexistent/origin.git",
        ],
    );
    let a = id_of(&on(&p, None, &["add", "a", "--json"]));
    let out = p.run(&["run"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        stderr
            .matches("a git remote is out of reach; trying again")
            .count(),
        3,
        "four tries: {stderr}"
    );
    let t = p.json(&["show", &a]);
    assert_eq!(
        t["state"], "review",
        "the work is kept, in review on this clone"
    );
    let moved = t["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "state_changed")
        .unwrap()
        .to_string();
    assert!(moved.contains("not pushed to origin"), "{moved}");

    // The remote refuses task branches (a hook): reported, not forced.
    git(
        p.path(),
        &[
            "remote",
            "set-url",
            "--push",
            "origin",
            &origin.path().to_string_lossy(),
        ],
    );
    let hook = origin.path().join("hooks/pre-receive");
    std::fs::write(
        &hook,
        "#!/bin/sh\necho 'no task branches here' >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let b = id_of(&on(&p, None, &["add", "b", "--json"]));
    let out = p.run(&["run", "--only", &b]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t = p.json(&["show", &b]);
    assert_eq!(t["state"], "review");
    let moved = t["events"].to_string();
    assert!(
        moved.contains("origin refused its branch") && moved.contains("not forced"),
        "{moved}"
    );
    assert!(
        origin_branches(origin.path()).is_empty(),
        "nothing was forced onto origin"
    );
}

#[test]
fn a_target_ahead_of_the_remote_is_named_instead_of_landing_blindly() {
    let origin = origin();
    let p = node(origin.path(), None, &agent_config());
    let a = id_of(&on(&p, None, &["add", "a", "--json"]));
    on(&p, None, &["run"]);
    assert_eq!(p.json(&["show", &a])["state"], "review");
    // Someone committed on this clone's main and did not push.
    std::fs::write(p.path().join("local.txt"), "mine\n").unwrap();
    git(p.path(), &["add", "local.txt"]);
    git(p.path(), &["commit", "-q", "-m", "local only"]);
    let before = git(origin.path(), &["rev-parse", "main"]);
    let err = p.fails(&["merge", "run"], 2);
    assert!(
        err.contains("main in this clone holds commits origin/main does not have")
            && err.contains("git push origin main"),
        "{err}"
    );
    assert_eq!(
        git(origin.path(), &["rev-parse", "main"]),
        before,
        "origin unchanged"
    );
    assert_eq!(p.json(&["show", &a])["state"], "review");
    // Pushed: it lands.
    git(p.path(), &["push", "-q", "origin", "main"]);
    on(&p, None, &["merge", "run"]);
    assert_eq!(p.json(&["show", &a])["state"], "done");
}
