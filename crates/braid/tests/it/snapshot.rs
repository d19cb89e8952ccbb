//! Snapshots: save while others write, restore under an exclusive lock,
//! prune with bounded open files.

use crate::Proj;

#[test]
fn save_list_restore_and_keep_the_replaced_database() {
    let p = Proj::init();
    let a = p.add(&["kept"]);
    let saved = p.json(&["snapshot", "save"]);
    let path = saved["path"].as_str().unwrap().to_owned();
    assert!(path.contains(".braid/backups/braid-"), "{path}");
    let b = p.add(&["after the snapshot"]);
    let list = p.json(&["snapshot", "list"]);
    assert_eq!(list.as_array().unwrap().len(), 1);
    let r = p.json(&["snapshot", "restore", &path]);
    p.ok(&["show", &a]);
    p.fails(&["show", &b], 3);
    let kept = r["previous_kept_at"].as_str().unwrap();
    let h = p.json(&["health", "--db", kept]);
    assert_eq!(
        h["total"], 2,
        "the replaced database was kept as a snapshot"
    );
    let err = p.fails(&["snapshot", "restore", "nope.db"], 2);
    assert!(err.contains("nope.db"), "{err}");
}

#[test]
fn save_is_consistent_while_another_process_writes() {
    let p = Proj::init();
    let db = p.db();
    let bin = env!("CARGO_BIN_EXE_braid");
    let writer = std::process::Command::new("sh")
        .arg("-c")
        .arg(r#"i=0; while [ $i -lt 60 ]; do "$BIN" add "t$i" >/dev/null || exit 1; i=$((i+1)); done"#)
        .env("BIN", bin)
        .env("BRAID_DB", &db)
        .spawn()
        .unwrap();
    let mut snaps = Vec::new();
    for _ in 0..3 {
        snaps.push(
            p.json(&["snapshot", "save"])["path"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert!(writer.wait_with_output().unwrap().status.success());
    for s in snaps {
        // Counters match the rows in every snapshot: nothing torn.
        let h = p.json(&["health", "--db", &s]);
        let list = p.json(&["list", "--db", &s]);
        assert_eq!(
            h["total"].as_u64().unwrap() as usize,
            list.as_array().unwrap().len()
        );
    }
}

#[test]
fn restore_refuses_while_another_process_holds_the_database() {
    let p = Proj::init();
    p.add(&["x"]);
    let snap = p.json(&["snapshot", "save"])["path"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut holder = crate::Reap(
        p.cmd()
            .args(["events", "--follow"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // Wait until the follower has opened the store: it prints the log.
    let mut line = String::new();
    let mut reader = std::io::BufReader::new(holder.0.stdout.take().unwrap());
    std::io::BufRead::read_line(&mut reader, &mut line).unwrap();
    let out = p
        .cmd()
        .args(["snapshot", "restore", &snap])
        .env("BRAID_LOCK_WAIT", "300ms")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("locked"), "{err}");
    drop(holder);
    p.ok(&["snapshot", "restore", &snap]);
}

#[test]
fn prune_ten_thousand_backups_with_64_open_files() {
    let p = Proj::init();
    let dir = p.path().join(".braid/backups");
    std::fs::create_dir_all(&dir).unwrap();
    for i in 0..10_000 {
        std::fs::write(dir.join(format!("braid-20260101T000000{i:05}Z.db")), b"x").unwrap();
    }
    std::fs::write(dir.join("unrelated.txt"), b"keep me").unwrap();
    // Through sh, so the limit applies to braid itself.
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg("ulimit -n 64 && exec \"$BIN\" snapshot prune --keep 5 --json")
        .env("BIN", env!("CARGO_BIN_EXE_braid"))
        .env("NO_COLOR", "1")
        .current_dir(p.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["deleted"], 9995);
    assert_eq!(v["failed"], serde_json::json!([]));
    let left: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left.len(), 6);
    assert!(
        left.contains(&"braid-20260101T00000009999Z.db".to_owned()),
        "the newest are kept: {left:?}"
    );
    assert!(left.contains(&"unrelated.txt".to_owned()));
}

#[test]
fn prune_reports_every_failure_and_exits_non_zero() {
    let p = Proj::init();
    let dir = p.path().join(".braid/backups");
    std::fs::create_dir_all(&dir).unwrap();
    for i in 0..4 {
        std::fs::write(dir.join(format!("braid-2026010100000{i}Z.db")), b"x").unwrap();
    }
    // A directory under a snapshot's name cannot be removed as a file.
    std::fs::create_dir(dir.join("braid-20250101000000Z.db")).unwrap();
    let out = p.run(&["snapshot", "prune", "--keep", "2", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["deleted"], 2);
    assert!(
        v["failed"][0]["path"]
            .as_str()
            .unwrap()
            .ends_with("braid-20250101000000Z.db")
    );
}
