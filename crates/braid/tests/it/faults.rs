//! Faults of the machine, met as a user meets them: a prompt too large
//! for an argument, and what braid does about each — the message, the
//! state of every task, nothing charged that was not the agent's fault.

use crate::run::repo_project;

/// A description of about 300 KB (more than one argument can hold).
fn large() -> String {
    "Make the change below exactly as written.\n".repeat(7_500)
}

#[test]
fn a_prompt_too_large_for_an_argument_is_refused_for_a_command_agent_uncharged() {
    let p = repo_project(
        "[run]\njobs = 1\n[[agent]]\nname = \"echo\"\ncommand = [\"sh\", \"-c\", \"true\", \"agent\", \"{prompt}\"]\n",
    );
    let file = p.path().join("desc.md");
    std::fs::write(&file, large()).unwrap();
    let id = p.add(&["big", "--description-file", file.to_str().unwrap()]);
    let out = p.run(&["run"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("more than one argument can hold") && text.contains("{prompt_file}"),
        "{text}"
    );
    let t = p.json(&["show", &id]);
    assert_eq!(t["state"], "open", "given back: {t}");
    assert!(t["lease"].is_null());
    // Not charged: the next claim is attempt 1 again.
    let claimed = p.json(&["claim", &id]);
    assert_eq!(claimed["lease"]["attempt"], 1, "{claimed}");
}

#[test]
fn a_large_prompt_reaches_a_command_agent_as_a_file() {
    let p = repo_project(
        "[run]\njobs = 1\n[[agent]]\nname = \"reader\"\n\
         command = [\"sh\", \"-c\", \"wc -c < \\\"$1\\\" > size.txt; git add size.txt; git commit -qm size\", \"agent\", \"{prompt_file}\"]\n",
    );
    let file = p.path().join("desc.md");
    std::fs::write(&file, large()).unwrap();
    let id = p.add(&["big", "--description-file", file.to_str().unwrap()]);
    p.ok(&["run"]);
    assert_eq!(p.json(&["show", &id])["state"], "done");
    let size: usize = crate::git(p.path(), &["show", &format!("braid/{id}:size.txt")])
        .trim()
        .parse()
        .unwrap();
    assert!(size > large().len(), "the whole prompt: {size}");
}

#[test]
fn a_comment_comes_from_stdin_or_a_file() {
    use std::io::Write;
    let p = crate::Proj::init();
    let id = p.add(&["one"]);
    let mut child = p
        .cmd()
        .args(["comment", &id, "-", "--json"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"from stdin\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let file = p.path().join("c.md");
    std::fs::write(&file, "from a file\n").unwrap();
    p.ok(&["comment", &id, "--file", file.to_str().unwrap()]);
    let texts: Vec<String> = p.json(&["show", &id])["comments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(texts, ["from stdin", "from a file"]);
}

#[test]
fn gc_removes_what_ended_longer_ago_than_keep_and_dry_run_only_lists_it() {
    let p = crate::Proj::init();
    std::fs::write(
        p.path().join(".braid/config.toml"),
        "[run]\njobs = 1\n[[agent]]\nname = \"talk\"\ncommand = [\"sh\", \"-c\", \"echo working; echo more\"]\n\
         [gc]\nkeep = \"0s\"\n",
    )
    .unwrap();
    let done = p.add(&["done soon"]);
    p.ok(&["run"]);
    assert_eq!(p.json(&["show", &done])["state"], "done");
    let open = p.add(&["still open"]);
    let open_logs = p.path().join(".braid/logs").join(&open);
    std::fs::create_dir_all(&open_logs).unwrap();
    std::fs::write(open_logs.join("1-talk.log"), "kept\n").unwrap();
    let telemetry = p.path().join(".braid/telemetry");
    std::fs::create_dir_all(&telemetry).unwrap();
    let old = telemetry.join("2026-01-01.jsonl");
    std::fs::write(&old, "{}\n").unwrap();
    assert!(
        std::process::Command::new("touch")
            .args(["-d", "30 days ago", old.to_str().unwrap()])
            .status()
            .unwrap()
            .success()
    );
    let done_logs = p.path().join(".braid/logs").join(&done);
    assert!(done_logs.is_dir());

    let dry = p.json(&["gc", "--dry-run"]);
    let items = dry["items"].as_array().unwrap();
    let listed = |what: &str, path: &std::path::Path| {
        items
            .iter()
            .any(|i| i["what"] == what && i["path"] == path.to_str().unwrap())
    };
    assert!(listed("logs", &done_logs), "{dry}");
    assert!(listed("telemetry", &old), "{dry}");
    assert!(
        !listed("logs", &open_logs),
        "open work keeps its logs: {dry}"
    );
    assert!(dry["bytes"].as_u64().unwrap() > 0, "{dry}");
    assert!(
        done_logs.is_dir() && old.exists(),
        "a dry run removes nothing"
    );
    let human = p.ok(&["gc", "--dry-run"]);
    assert!(human.contains("Would remove"), "{human}");

    let out = p.json(&["gc"]);
    assert!(!done_logs.exists() && !old.exists(), "{out}");
    assert!(open_logs.join("1-talk.log").exists());
    // Logs the default keeps: 14 days, so a fresh end is kept.
    std::fs::write(
        p.path().join(".braid/config.toml"),
        "[run]\njobs = 1\n[[agent]]\nname = \"talk\"\ncommand = [\"sh\", \"-c\", \"echo hi\"]\n",
    )
    .unwrap();
    let again = p.add(&["again"]);
    p.ok(&["run"]);
    let dry = p.json(&["gc", "--dry-run"]);
    let again_logs = p.path().join(".braid/logs").join(&again);
    assert!(
        !dry["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["path"] == again_logs.to_str().unwrap()),
        "{dry}"
    );
}

#[test]
fn below_the_disk_floor_no_agent_starts_and_the_run_says_why() {
    use std::io::BufRead;
    let p = crate::Proj::init();
    std::fs::write(
        p.path().join(".braid/config.toml"),
        "[run]\njobs = 1\ndisk_floor = \"100000TiB\"\n[[agent]]\nname = \"a\"\ncommand = [\"true\"]\n",
    )
    .unwrap();
    let id = p.add(&["waits for space"]);
    let mut child = p
        .cmd()
        .arg("run")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let err = std::io::BufReader::new(child.stderr.take().unwrap());
    // Stopped however the test ends.
    let _run = crate::Reap(child);
    let said = err
        .lines()
        .map_while(Result::ok)
        .find(|l| l.contains("no agent starts"))
        .expect("the run says why");
    assert!(
        said.contains("below [run] disk_floor") && said.contains(".braid"),
        "{said}"
    );
    assert_eq!(p.json(&["show", &id])["state"], "open", "nothing claimed");
}

#[test]
fn a_flood_of_output_is_capped_and_the_next_attempt_still_sees_the_real_end() {
    let p = crate::Proj::init();
    std::fs::write(
        p.path().join(".braid/config.toml"),
        "[run]\njobs = 1\nmax_attempts = 2\nlog_max = \"1MiB\"\nbackoff = { base = \"10ms\", cap = \"10ms\" }\n\
         [[agent]]\nname = \"loud\"\n\
         command = [\"sh\", \"-c\", \"head -c 300000000 /dev/zero | tr '\\\\0' x; echo; echo THE-REAL-END; exit 3\"]\n",
    )
    .unwrap();
    let id = p.add(&["loud"]);
    p.run(&["run"]);
    assert_eq!(p.json(&["show", &id])["state"], "failed");
    let log = p.path().join(".braid/logs").join(&id).join("1-loud.log");
    let meta = std::fs::metadata(&log).unwrap();
    assert!(
        meta.len() <= (1 << 20) + 100,
        "capped: {} bytes",
        meta.len()
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("bytes omitted"),
        "the marker; the log is {} bytes: {:?} … {:?}",
        text.len(),
        &text[..text.len().min(120)],
        &text[text.len().saturating_sub(300)..]
    );
    assert!(
        text.trim_end().ends_with("THE-REAL-END"),
        "the real end is kept"
    );
    let events = p.ok(&["events", "--json"]);
    let retrying = events
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|e| e["kind"] == "retrying")
        .expect("a retry");
    assert!(
        retrying["payload"]["tail"]
            .as_str()
            .unwrap()
            .contains("THE-REAL-END"),
        "{retrying}"
    );
}

#[test]
fn nothing_an_attempt_started_outlives_it_even_a_setsid_daemon() {
    let p = crate::Proj::init();
    // Unique durations mark this test's sleeps in `ps`.
    let n = 3000 + std::process::id() % 1000;
    let marker = format!("sleep {n}.");
    std::fs::write(
        p.path().join(".braid/config.toml"),
        format!(
            "[run]\njobs = 1\n[[agent]]\nname = \"daemons\"\n\
             command = [\"sh\", \"-c\", \"sleep {n}.1 & setsid sleep {n}.2 & sleep 0.2; exit 0\"]\n"
        ),
    )
    .unwrap();
    let id = p.add(&["starts daemons"]);
    let out = p.ok(&["run"]);
    assert_eq!(p.json(&["show", &id])["state"], "done");
    // None of them runs on.
    let ps = std::process::Command::new("ps")
        .args(["-eo", "pid,args"])
        .output()
        .unwrap();
    let ps = String::from_utf8_lossy(&ps.stdout);
    let alive: Vec<&str> = ps.lines().filter(|l| l.contains(&marker)).collect();
    assert!(alive.is_empty(), "still running: {alive:?}");
    // The attempt's event and the run's output say what was stopped.
    let finished = p
        .ok(&["events", "--json"])
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|e| e["kind"] == "agent_finished")
        .unwrap();
    let left = finished["payload"]["leftovers"]
        .as_array()
        .expect("leftovers");
    assert_eq!(left.len(), 2, "{finished}");
    assert!(out.contains("stopped 2 leftover processes"), "{out}");
}

#[test]
fn four_runs_side_by_side_never_run_a_task_twice_nor_fail_one_on_the_workspace() {
    // Four runs × 100 tasks × 5 rounds, as the issue of runs side by side
    // describes it.
    let p = repo_project(
        "[run]\njobs = 2\nmax_attempts = 1\n[[agent]]\nname = \"w\"\n\
         command = [\"sh\", \"-c\", \"echo $BRAID_TASK > f.txt; git add f.txt; git commit -qm w\"]\n",
    );
    for round in 0..5 {
        let ids: Vec<String> = (0..100)
            .map(|i| p.add(&[&format!("round {round} task {i}")]))
            .collect();
        let runs: Vec<std::process::Child> = (0..4)
            .map(|_| {
                p.cmd()
                    .arg("run")
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let outputs: Vec<String> = runs
            .into_iter()
            .map(|c| {
                let o = c.wait_with_output().unwrap();
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                )
            })
            .collect();
        for id in &ids {
            let t = p.json(&["show", id]);
            assert_eq!(
                t["state"], "done",
                "{id} in round {round}: {t}\n{outputs:#?}"
            );
        }
        // Each task was dispatched exactly once, by one of the runs.
        let events = p.ok(&["events", "--json"]);
        for id in &ids {
            let dispatched = events
                .lines()
                .filter(|l| l.contains("\"dispatched\"") && l.contains(id.as_str()))
                .count();
            assert_eq!(dispatched, 1, "{id} dispatched {dispatched} times");
        }
        let all = outputs.join("\n");
        assert!(!all.contains("preparing the workspace"), "{all}");
    }
}

/// A small tmpfs mounted for a test, unmounted when dropped; `None`
/// (said loudly) where this user cannot mount one.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("SKIPPED: a full disk (mounting a tmpfs needs root)");
            return None;
        }
        Some(Tmpfs { dir })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazily: a process the test failed to stop must not keep it busy.
        let _ = std::process::Command::new("umount")
            .args(["-l"])
            .arg(self.dir.path())
            .status();
    }
}

/// A project on `fs` whose agents each print 3 MB (more than an 8 MiB
/// disk holds for six of them), with six tasks.
fn loud_project(fs: &Tmpfs) -> (crate::Proj, Vec<String>) {
    let p = crate::Proj {
        dir: tempfile::tempdir_in(fs.dir.path()).unwrap(),
        cache: tempfile::tempdir().unwrap(),
    };
    p.ok(&["init"]);
    std::fs::write(
        p.path().join(".braid/config.toml"),
        "[run]\njobs = 2\nmax_attempts = 2\ndisk_floor = \"0\"\n\
         [[agent]]\nname = \"loud\"\ntimeout = \"30s\"\n\
         command = [\"sh\", \"-c\", \"head -c 3000000 /dev/zero | tr '\\\\0' x; echo done\"]\n",
    )
    .unwrap();
    let ids: Vec<String> = (0..6).map(|i| p.add(&[&format!("t{i}")])).collect();
    (p, ids)
}

#[test]
fn a_full_disk_stops_the_run_says_why_and_charges_nothing() {
    let Some(fs) = Tmpfs::mount("8m") else { return };
    let (p, ids) = loud_project(&fs);
    // Never hangs (the harness gives it 2 minutes), exits 1, says why.
    let out = p.run(&["run"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("disk full writing"), "{text}");
    // Every task is done or back to open; none is left claimed, and none
    // given back was charged its attempt.
    for id in &ids {
        let t = p.json(&["show", id]);
        let state = t["state"].as_str().unwrap();
        assert!(state == "done" || state == "open", "{id}: {t}\n{text}");
        assert!(t["lease"].is_null(), "{id}: {t}");
    }
    // Those that had started were given back ("released").
    let released: Vec<&String> = ids
        .iter()
        .filter(|id| {
            let t = p.json(&["show", id]);
            t["state"] == "open"
                && t["events"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|e| e["kind"] == "released")
        })
        .collect();
    // The disk may fill between two tasks (nothing in flight to give
    // back) or under one; work given back says so in its log, and its
    // next claim is attempt 1 again once space is back (the logs go).
    let noted = released.iter().all(|id| {
        std::fs::read_to_string(
            p.path()
                .join(".braid/logs")
                .join(id.as_str())
                .join("1-loud.log"),
        )
        .is_ok_and(|l| l.contains("[braid] the disk was full"))
    });
    assert!(noted, "a note in each given-back log: {released:?}");
    std::fs::remove_dir_all(p.path().join(".braid/logs")).unwrap();
    for id in &released {
        let claimed = p.json(&["claim", id.as_str()]);
        assert_eq!(claimed["lease"]["attempt"], 1, "{claimed}");
        p.ok(&["reopen", id.as_str()]);
    }
}

#[test]
fn a_following_run_waits_out_a_full_disk_and_finishes_the_work() {
    let Some(fs) = Tmpfs::mount("8m") else { return };
    let (p, ids) = loud_project(&fs);
    let child = p
        .cmd()
        .args(["run", "--follow"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _run = crate::Reap(child);
    // The disk fills again and again (each agent prints 3 MB on 8 MiB);
    // the run frees what it wrote and goes on until every task is done.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
    crate::run::when_changed(&p.path().join(".braid"), "every task done", || {
        let states: Vec<String> = ids
            .iter()
            .map(|id| p.json(&["show", id])["state"].as_str().unwrap().to_owned())
            .collect();
        assert!(
            std::time::Instant::now() < deadline,
            "not all done in 3 minutes: {states:?}"
        );
        assert!(
            !states.iter().any(|s| s == "failed"),
            "a full disk failed a task: {states:?}"
        );
        states.iter().all(|s| s == "done").then_some(())
    });
}
