//! A damaged database, snapshots braid takes by itself, and `braid
//! doctor`: real SQLite files damaged byte by byte, real git repositories,
//! real processes.

use std::path::Path;

use crate::{Proj, git};

/// Bytes that look random and are the same on every run (xorshift).
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.max(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// How a database file is damaged.
#[derive(Clone, Copy, Debug)]
enum Damage {
    /// Pages 2.. overwritten, the header and first page kept: SQLite opens
    /// it and finds "database disk image is malformed".
    Malformed,
    /// Every byte overwritten, the header too: "file is not a database".
    NotADatabase,
}

fn damage(db: &Path, how: Damage) {
    // Every braid process has ended: the WAL was checkpointed into the
    // file and removed, so the damage is all there is.
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    assert!(!Path::new(&wal).exists(), "a WAL is left beside {db:?}");
    let mut bytes = std::fs::read(db).unwrap();
    let page = u16::from_be_bytes([bytes[16], bytes[17]]) as usize;
    assert!(bytes.len() >= 3 * page, "a database of a few pages");
    let from = match how {
        Damage::Malformed => page,
        Damage::NotADatabase => 0,
    };
    let len = bytes.len() - from;
    bytes[from..].copy_from_slice(&noise(from as u64 + 7, len));
    std::fs::write(db, bytes).unwrap();
}

/// The snapshot and the command a damage message names: `(path, argv
/// after "braid")`.
fn restore_command(message: &str) -> (String, Vec<String>) {
    let at = message
        .find("braid snapshot restore ")
        .unwrap_or_else(|| panic!("no restore command in: {message}"));
    let argv: Vec<String> = message[at..]
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .skip(1)
        .map(str::to_owned)
        .collect();
    assert_eq!(argv.len(), 3, "snapshot restore PATH: {argv:?}");
    (argv[2].clone(), argv)
}

fn ids(list: &serde_json::Value) -> Vec<String> {
    let mut v: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn a_damaged_database_names_the_newest_snapshot_and_the_command_that_brings_the_tasks_back() {
    for (how, words) in [
        (Damage::Malformed, "database disk image is malformed"),
        (Damage::NotADatabase, "file is not a database"),
    ] {
        let p = Proj::init();
        let mut before: Vec<String> = (0..30)
            .map(|i| p.add(&[&format!("task {i} {}", "x".repeat(200))]))
            .collect();
        before.sort();
        let snap = p.json(&["snapshot", "save"])["path"]
            .as_str()
            .unwrap()
            .to_owned();
        let name = Path::new(&snap)
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        damage(&p.db(), how);

        let show: [&str; 2] = ["show", &before[0]];
        for args in [&["list"][..], &show, &["ready"], &["add", "x"]] {
            let err = p.fails(args, 2);
            assert!(
                err.contains("the database .braid/braid.db is damaged") && err.contains(words),
                "{how:?} {args:?}: {err}"
            );
            assert!(
                err.contains(&name),
                "{how:?} {args:?} names the snapshot: {err}"
            );
            assert!(err.contains(" old): braid snapshot restore "), "{err}");
        }
        let err = p.fails(&["list", "--json"], 2);
        let doc: serde_json::Value = serde_json::from_str(err.trim()).unwrap();
        assert_eq!(doc["error"]["code"], "damaged", "{doc}");

        // The command printed, as printed, brings the tasks back.
        let err = p.fails(&["list"], 2);
        let (path, argv) = restore_command(&err);
        assert!(path.ends_with(&name), "{path}");
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let restored = p.json(&argv);
        assert_eq!(restored["previous_damaged"], true, "{restored}");
        let aside = restored["previous_kept_at"].as_str().unwrap();
        assert!(
            Path::new(aside).is_file() && aside.contains("/damaged-"),
            "the damaged file is kept: {restored}"
        );
        assert_eq!(ids(&p.json(&["list"])), before, "{how:?}");
        // Written to again, and the damaged file is no snapshot.
        p.add(&["after the restore"]);
        assert_eq!(p.json(&["list"]).as_array().unwrap().len(), 31);
        let snaps = p.json(&["snapshot", "list"]);
        assert_eq!(snaps.as_array().unwrap().len(), 1, "{snaps}");
        assert_eq!(p.json(&["doctor"])["checks"][0]["status"], "ok");
    }
}

#[test]
fn a_damaged_database_without_a_snapshot_says_what_else_to_do() {
    let p = Proj::init();
    for i in 0..30 {
        p.add(&[&format!("task {i} {}", "y".repeat(200))]);
    }
    damage(&p.db(), Damage::Malformed);
    let err = p.fails(&["list"], 2);
    assert!(err.contains("is damaged"), "{err}");
    assert!(
        err.contains("There is no snapshot in .braid/backups"),
        "{err}"
    );
    assert!(
        err.contains(".recover") && err.contains("braid init"),
        "salvage and a new start: {err}"
    );
}

/// A braid JSONL export of a project with `n` tasks of its own.
fn export_of(n: usize, tag: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let src = Proj::init();
    for i in 0..n {
        src.add(&[&format!("{tag} {i}")]);
    }
    let file = src.path().join("export.jsonl");
    src.ok(&["export", "-o", file.to_str().unwrap()]);
    let holder = tempfile::tempdir().unwrap();
    let kept = holder.path().join(format!("{tag}.jsonl"));
    std::fs::copy(&file, &kept).unwrap();
    (holder, kept)
}

#[test]
fn import_and_restore_take_a_snapshot_first_pruned_to_snapshot_keep() {
    let p = Proj::init();
    std::fs::write(
        p.path().join(".braid/config.toml"),
        "[snapshot]\nkeep = 2\n",
    )
    .unwrap();
    let mut snaps = Vec::new();
    let mut held = Vec::new();
    for (i, tag) in ["one", "two", "three"].iter().enumerate() {
        let (dir, file) = export_of(2, tag);
        held.push(dir);
        let report = p.json(&["import", file.to_str().unwrap()]);
        assert_eq!(report["tasks"], 2);
        let snap = report["snapshot"].as_str().unwrap().to_owned();
        assert!(snap.ends_with("-before-import.db"), "{snap}");
        // The snapshot holds the database as it was before this import.
        let inside = p.json(&["list", "--db", &snap]);
        assert_eq!(inside.as_array().unwrap().len(), 2 * i, "{snap}");
        snaps.push(snap);
    }
    let listed: Vec<String> = p
        .json(&["snapshot", "list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["path"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        listed,
        vec![snaps[2].clone(), snaps[1].clone()],
        "the newest two"
    );
    assert!(!Path::new(&snaps[0]).exists(), "pruned");

    let restored = p.json(&["snapshot", "restore", &snaps[2]]);
    assert_eq!(restored["previous_damaged"], false);
    assert_eq!(p.json(&["list"]).as_array().unwrap().len(), 4);
    let kept = restored["previous_kept_at"].as_str().unwrap().to_owned();
    let listed: Vec<String> = p
        .json(&["snapshot", "list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["path"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        listed,
        vec![kept.clone(), snaps[2].clone()],
        "the replaced database is the newest snapshot; keep = 2 still holds"
    );
    assert!(kept.ends_with("-before-restore.db"), "{kept}");
    assert_eq!(
        p.json(&["list", "--db", &kept]).as_array().unwrap().len(),
        6
    );
}

#[test]
fn migrate_takes_a_snapshot_of_its_source_first() {
    let Some(s) = crate::postgres::Schema::new() else {
        return;
    };
    let p = Proj::init();
    p.add(&["carried over"]);
    let out = p.json(&["migrate", "--to", &s.url]);
    assert_eq!(out["verified"], true, "{out}");
    let snap = out["snapshot"].as_str().unwrap();
    assert!(snap.ends_with("-before-migrate.db"), "{snap}");
    assert_eq!(p.json(&["list", "--db", snap]).as_array().unwrap().len(), 1);
}

/// A project in a git repository whose config has one agent: a script
/// that answers `--version`; floors this machine is above; the server on
/// a port the kernel picks (always free to bind).
fn healthy_project() -> Proj {
    let p = Proj::empty();
    git(p.path(), &["init", "-q", "-b", "main"]);
    git(p.path(), &["config", "user.email", "t@example.com"]);
    git(p.path(), &["config", "user.name", "t"]);
    std::fs::write(p.path().join("README"), "hi\n").unwrap();
    git(p.path(), &["add", "README"]);
    git(p.path(), &["commit", "-q", "-m", "init"]);
    p.ok(&["init"]);
    let bin = p.cache.path().join("fake-agent");
    std::fs::write(&bin, "#!/bin/sh\necho fake-agent 1.2.3\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        p.path().join(".braid/config.toml"),
        format!(
            "[run]\ndisk_floor = \"1KiB\"\nmemory_floor = \"1KiB\"\n\
             [[agent]]\nname = \"fake\"\ncommand = [{:?}, \"{{prompt}}\"]\n\
             [server]\nbind = \"127.0.0.1:0\"\n",
            bin.to_str().unwrap()
        ),
    )
    .unwrap();
    p
}

fn check<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name:?} in {report:#}"))
}

fn doctor(p: &Proj, code: i32) -> serde_json::Value {
    let out = p.run(&["doctor", "--json"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(code),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
fn doctor_on_a_healthy_project_passes_every_check() {
    let p = healthy_project();
    p.add(&["some work"]);
    p.ok(&["snapshot", "save"]);
    let report = doctor(&p, 0);
    assert_eq!(report["ok"], true);
    for name in [
        "database",
        "config",
        "agent fake",
        "git",
        "worktrees",
        "git locks",
        "branches",
        "workspaces",
        "processes",
        "disk",
        "memory",
        "snapshots",
        "server",
    ] {
        let c = check(&report, name);
        assert_eq!(c["status"], "ok", "{c}");
        assert!(c["fix"].is_null(), "{c}");
    }
    assert!(
        check(&report, "agent fake")["detail"]
            .as_str()
            .unwrap()
            .contains("fake-agent 1.2.3"),
        "its --version: {report:#}"
    );
    // The same, for a person: a line per check, and all is well.
    let human = p.ok(&["doctor"]);
    let lines: Vec<&str> = human.lines().collect();
    assert_eq!(lines.len(), 14, "{human}");
    assert!(lines[..13].iter().all(|l| l.starts_with("ok ")), "{human}");
    assert_eq!(lines[13], "All is well.");
}

#[test]
fn doctor_fails_the_integrity_check_of_a_damaged_database_and_names_the_fix() {
    let p = healthy_project();
    for i in 0..30 {
        p.add(&[&format!("task {i} {}", "z".repeat(200))]);
    }
    let snap = p.json(&["snapshot", "save"])["path"]
        .as_str()
        .unwrap()
        .to_owned();
    let name = Path::new(&snap)
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    damage(&p.db(), Damage::Malformed);
    let report = doctor(&p, 1);
    assert_eq!(report["ok"], false);
    let db = check(&report, "database");
    assert_eq!(db["status"], "fail", "{db}");
    assert!(db["detail"].as_str().unwrap().contains("damaged"), "{db}");
    let fix = db["fix"].as_str().unwrap();
    assert!(
        fix.contains("braid snapshot restore ") && fix.contains(&name),
        "{fix}"
    );
    // The other checks still ran.
    assert_eq!(check(&report, "agent fake")["status"], "ok");
    let human = p.fails(&["doctor"], 1);
    assert!(human.is_empty(), "the findings go to stdout: {human}");
}

#[test]
fn doctor_names_an_agent_program_that_is_not_there() {
    let p = healthy_project();
    let config = p.path().join(".braid/config.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("[[agent]]\nname = \"ghost\"\ncommand = [\"no-such-agent-program-3k9\"]\n");
    std::fs::write(&config, text).unwrap();
    let report = doctor(&p, 1);
    let ghost = check(&report, "agent ghost");
    assert_eq!(ghost["status"], "fail", "{ghost}");
    assert!(
        ghost["detail"]
            .as_str()
            .unwrap()
            .contains("\"no-such-agent-program-3k9\" is not on PATH"),
        "{ghost}"
    );
    assert!(
        ghost["fix"].as_str().unwrap().contains("config.toml:"),
        "{ghost}"
    );
    assert_eq!(check(&report, "agent fake")["status"], "ok");
    let out = p.run(&["doctor"]);
    let human = String::from_utf8_lossy(&out.stdout);
    assert!(
        human
            .lines()
            .any(|l| l.starts_with("FAIL") && l.contains("agent ghost") && l.contains("fix:")),
        "{human}"
    );
}

#[test]
fn doctor_reports_a_worktree_whose_folder_was_deleted_as_prunable() {
    let p = healthy_project();
    p.ok(&["snapshot", "save"]);
    let wt = p.cache.path().join("gone-worktree");
    git(
        p.path(),
        &[
            "worktree",
            "add",
            "-q",
            "-b",
            "feature",
            wt.to_str().unwrap(),
        ],
    );
    std::fs::remove_dir_all(&wt).unwrap();
    let report = doctor(&p, 0);
    let w = check(&report, "worktrees");
    assert_eq!(w["status"], "warn", "{w}");
    assert!(
        w["detail"].as_str().unwrap().contains("gone-worktree")
            && w["detail"].as_str().unwrap().contains("prunable"),
        "{w}"
    );
    let fix = w["fix"].as_str().unwrap();
    assert!(fix.ends_with("worktree prune"), "{fix}");
    // The fix, as given, clears it.
    let argv: Vec<&str> = fix.split_whitespace().skip(1).collect();
    let out = std::process::Command::new("git")
        .args(&argv)
        .output()
        .unwrap();
    assert!(out.status.success(), "{fix}: {out:?}");
    assert_eq!(check(&doctor(&p, 0), "worktrees")["status"], "ok");
}
