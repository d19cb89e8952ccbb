//! Eight braid processes at once, each adding 500 tasks and claiming 100:
//! every add lands, nobody sees "database is locked", no task is claimed twice.

use std::process::{Command, Stdio};

use crate::Proj;

#[test]
fn eight_processes_add_and_claim_without_losses_or_double_claims() {
    let p = Proj::init();
    let bin = env!("CARGO_BIN_EXE_braid");
    let db = p.db();
    // Each worker is a shell loop of separate braid processes.
    let script = r#"
        set -e
        i=0
        while [ $i -lt 500 ]; do "$BIN" add "w$W task $i" >/dev/null; i=$((i+1)); done
        i=0
        while [ $i -lt 100 ]; do "$BIN" claim --as "w$W" --json | grep '"id"' | head -n1; i=$((i+1)); done
    "#;
    let workers: Vec<_> = (0..8)
        .map(|w| {
            Command::new("sh")
                .arg("-c")
                .arg(script)
                .env("BIN", bin)
                .env("W", w.to_string())
                .env("BRAID_DB", &db)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut claimed = Vec::new();
    for w in workers {
        let out = w.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "worker failed: {stderr}");
        assert!(!stderr.contains("locked"), "{stderr}");
        for line in String::from_utf8(out.stdout).unwrap().lines() {
            claimed.push(line.trim().to_owned());
        }
    }
    assert_eq!(claimed.len(), 800);
    let n = claimed.len();
    claimed.sort();
    claimed.dedup();
    assert_eq!(claimed.len(), n, "a task was claimed twice");
    let h = p.json(&["health"]);
    assert_eq!(h["total"], 4000);
    assert_eq!(h["by_state"]["in_progress"], 800);
    assert_eq!(h["ready"], 3200);
    let events = p.ok(&["events", "--json"]);
    assert_eq!(
        events.lines().count(),
        4800,
        "one event per add and per claim"
    );
}
