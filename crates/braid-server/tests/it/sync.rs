//! File sync on a real folder with real OS notifications: edit, add,
//! delete, bad YAML, unknown dependency, cycle, path escape, stale copies,
//! and no echo.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use braid_core::{DepKind, EventKind, NewTask, State, TaskId};
use braid_server::sync::Syncer;
use braid_store::{Command, SqliteStore, Store};

use crate::common::{Server, Setup, WAIT};

fn syncer(store: &Arc<dyn Store>, dir: &Path) -> Syncer {
    Syncer::new(dir.join("tasks"), store.clone(), "sync".into()).unwrap()
}

fn fresh() -> (tempfile::TempDir, Arc<dyn Store>) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::create(&dir.path().join("braid.db")).unwrap());
    (dir, store)
}

fn add(store: &Arc<dyn Store>, title: &str) -> TaskId {
    store
        .apply("t", Command::Add(NewTask::titled(title)))
        .unwrap()
        .task
        .id
}

fn file(dir: &Path, id: &TaskId) -> std::path::PathBuf {
    dir.join("tasks").join(format!("{id}.md"))
}

/// Every task as stored (with deps), to compare before and after.
fn snap(store: &Arc<dyn Store>) -> Vec<String> {
    let mut out = Vec::new();
    store
        .export(false, &mut |item| {
            if let braid_store::ExportItem::Task(t) = item {
                out.push(format!("{t:?}"));
            }
            Ok(())
        })
        .unwrap();
    out
}

fn rejections(store: &Arc<dyn Store>) -> Vec<serde_json::Value> {
    store
        .events(0, 10_000)
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == EventKind::SyncRejected)
        .map(|e| e.payload)
        .collect()
}

#[test]
fn a_pass_writes_files_and_applies_edits_through_the_write_path() {
    let (dir, store) = fresh();
    let a = add(&store, "first");
    let b = add(&store, "second");
    let mut s = syncer(&store, dir.path());
    let (report, _) = s.full().unwrap();
    assert_eq!(report.written, 2);
    let text = std::fs::read_to_string(file(dir.path(), &a)).unwrap();
    assert!(
        text.starts_with("---\n") && text.contains("title: first"),
        "{text}"
    );
    // A second pass finds nothing to do.
    let (report, _) = s.full().unwrap();
    assert_eq!((report.written, report.applied), (0, 0));
    // Edit: title, priority, a dependency, a description.
    let edited = text
        .replace("title: first", "title: first, renamed")
        .replace("priority: 2", "priority: 0")
        .replace("state: open", &format!("state: open\ndeps:\n- id: {b}"));
    let edited = format!("{edited}\nNow with a *description*.\n");
    std::fs::write(file(dir.path(), &a), edited).unwrap();
    let o = s.file_changed(&file(dir.path(), &a)).unwrap();
    assert_eq!(o.action, "applied", "{o:?}");
    let t = store.task(&a).unwrap();
    assert_eq!(t.title, "first, renamed");
    assert_eq!(t.priority, 0);
    assert_eq!(t.description, "Now with a *description*.");
    assert_eq!(t.deps.len(), 1);
    assert_eq!(t.deps[0].kind, DepKind::Blocks);
    assert!(!t.ready, "blocked by {b}");
    // The file now shows the new version; applying it again is a no-op.
    let o = s.file_changed(&file(dir.path(), &a)).unwrap();
    assert_eq!(o.action, "unchanged");
    // A state change in the file goes through the state machine.
    let text = std::fs::read_to_string(file(dir.path(), &b)).unwrap();
    std::fs::write(
        file(dir.path(), &b),
        text.replace("state: open", "state: done"),
    )
    .unwrap();
    assert_eq!(
        s.file_changed(&file(dir.path(), &b)).unwrap().action,
        "applied"
    );
    assert_eq!(store.task(&b).unwrap().state, State::Done);
    assert!(store.task(&a).unwrap().ready, "its blocker is done");
}

#[test]
fn bad_files_are_reported_and_change_nothing() {
    let (dir, store) = fresh();
    let a = add(&store, "a");
    let b = add(&store, "b");
    store
        .apply(
            "t",
            Command::DepAdd {
                from: b.clone(),
                to: a.clone(),
                kind: DepKind::Blocks,
            },
        )
        .unwrap();
    let mut s = syncer(&store, dir.path());
    s.full().unwrap();
    let before = snap(&store);
    let path_a = file(dir.path(), &a);
    let good = std::fs::read_to_string(&path_a).unwrap();
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "bad yaml",
            good.replace("title: a", "title: [a"),
            "front matter",
        ),
        (
            "unknown key",
            good.replace("title: a", "title: a\ncolour: red"),
            "colour",
        ),
        (
            "unknown dependency",
            good.replace("state: open", "state: open\ndeps:\n- id: br-zzzzzz"),
            "br-zzzzzz",
        ),
        (
            "cycle",
            good.replace("state: open", &format!("state: open\ndeps:\n- id: {b}")),
            "cycle",
        ),
        (
            "invalid transition",
            good.replace("state: open", "state: review"),
            "review",
        ),
        (
            "id escaping the folder",
            good.replace(&format!("id: {a}"), "id: ../../etc/passwd"),
            "id",
        ),
    ];
    for (what, text, needle) in cases {
        std::fs::write(&path_a, &text).unwrap();
        let o = s.file_changed(&path_a).unwrap();
        assert_eq!(o.action, "rejected", "{what}: {o:?}");
        let err = o.error.unwrap();
        assert!(err.contains(needle), "{what}: {err}");
        assert_eq!(snap(&store), before, "{what} changed the store");
    }
    let logged = rejections(&store);
    assert_eq!(logged.len(), 6, "each rejection is an event");
    assert!(logged.iter().all(|p| p["file"] == format!("{a}.md")));
    // A symlink pointing outside the folder is refused, not followed.
    let outside = dir.path().join("outside.md");
    std::fs::write(&outside, "---\ntitle: sneaky\n---\n").unwrap();
    let link = dir.path().join("tasks").join("sneaky.md");
    std::os::unix::fs::symlink(&outside, &link).unwrap();
    let o = s.file_changed(&link).unwrap();
    assert_eq!(o.action, "rejected");
    assert!(o.error.unwrap().contains("not a regular file"));
    // A file named for one task that claims another id is refused.
    std::fs::write(
        &path_a,
        good.replace(&format!("id: {a}"), &format!("id: {b}")),
    )
    .unwrap();
    assert_eq!(s.file_changed(&path_a).unwrap().action, "rejected");
    assert_eq!(snap(&store), before);
}

#[test]
fn added_files_create_tasks_and_deleted_files_come_back() {
    let (dir, store) = fresh();
    let a = add(&store, "a");
    let mut s = syncer(&store, dir.path());
    s.full().unwrap();
    let new = dir.path().join("tasks").join("my idea.md");
    std::fs::write(
        &new,
        format!("---\ntitle: An idea\ntype: bug\nlabels: [ui]\ndeps:\n- id: {a}\n---\nSteps to reproduce.\n"),
    )
    .unwrap();
    let o = s.file_changed(&new).unwrap();
    assert_eq!(o.action, "created", "{o:?}");
    let id = TaskId::parse(o.task.as_deref().unwrap()).unwrap();
    let t = store.task(&id).unwrap();
    assert_eq!(t.title, "An idea");
    assert_eq!(t.kind.as_str(), "bug");
    assert_eq!(t.labels, vec!["ui"]);
    assert_eq!(t.description, "Steps to reproduce.");
    assert_eq!(t.deps[0].id, a);
    assert!(!new.exists(), "the file took its task's name");
    assert!(file(dir.path(), &id).exists());
    // Deleting a file does not delete the task: the file is written again.
    std::fs::remove_file(file(dir.path(), &a)).unwrap();
    assert_eq!(
        s.file_changed(&file(dir.path(), &a)).unwrap().action,
        "rewritten"
    );
    assert!(file(dir.path(), &a).exists());
    assert_eq!(store.health().unwrap().total, 2);
}

#[test]
fn an_edit_of_a_stale_copy_does_not_undo_newer_changes() {
    let (dir, store) = fresh();
    let a = add(&store, "a");
    let mut s = syncer(&store, dir.path());
    s.full().unwrap();
    let stale = std::fs::read_to_string(file(dir.path(), &a)).unwrap();
    // The store moves on (another process claims the task)...
    store
        .apply(
            "engine",
            Command::Claim {
                id: Some(a.clone()),
                assignee: "agent".into(),
                lease_ms: 60_000,
            },
        )
        .unwrap();
    // ...while someone edits the old copy.
    std::fs::write(
        file(dir.path(), &a),
        stale.replace("title: a", "title: renamed"),
    )
    .unwrap();
    let o = s.file_changed(&file(dir.path(), &a)).unwrap();
    assert_eq!(o.action, "rejected");
    assert!(o.error.unwrap().contains("older version"));
    let t = store.task(&a).unwrap();
    assert_eq!(t.state, State::InProgress, "the claim stands");
    assert_eq!(t.title, "a");
    let now = std::fs::read_to_string(file(dir.path(), &a)).unwrap();
    assert!(
        now.contains("state: in_progress"),
        "the file shows the current task"
    );
    // Our own earlier write arriving late is not an edit: no report.
    let before = rejections(&store).len();
    std::fs::write(file(dir.path(), &a), &stale).unwrap();
    assert_eq!(
        s.file_changed(&file(dir.path(), &a)).unwrap().action,
        "rewritten"
    );
    assert_eq!(rejections(&store).len(), before);
}

/// Wakes a waiting test on every change in the tasks folder and every
/// event in the store's log: a condition on files or the store is checked
/// again when something happened, not on a timer.
struct Changes {
    rx: tokio::sync::mpsc::UnboundedReceiver<()>,
    _watch: notify::RecommendedWatcher,
}

impl Changes {
    async fn new(tasks: &Path, hub: &Arc<braid_server::hub::Hub>) -> Changes {
        use braid_server::hub::{Next, Rooms};
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let files = tx.clone();
        // Reads (the test's own checks among them) are not changes.
        let mut watch = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
            if ev.is_ok_and(|e| !matches!(e.kind, notify::EventKind::Access(_))) {
                let _ = files.send(());
            }
        })
        .unwrap();
        notify::Watcher::watch(&mut watch, tasks, notify::RecursiveMode::NonRecursive).unwrap();
        let (_, mut sub) = hub
            .subscribe(None, Rooms::parse("project").unwrap())
            .await
            .unwrap();
        tokio::spawn(async move {
            while let Next::Event(_) = sub.next().await {
                if tx.send(()).is_err() {
                    return;
                }
            }
        });
        Changes { rx, _watch: watch }
    }

    /// Waits until `f` holds, checking it again after each change.
    async fn until(&mut self, what: &str, mut f: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !f() {
            tokio::time::timeout_at(deadline, self.rx.recv())
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_applies_edits_within_the_debounce_and_never_echoes() {
    let mut srv = Server::start(Setup::default()).await;
    let dir = srv.dir.path().to_path_buf();
    let a = srv.add("watched");
    let syncer = syncer(&srv.store, &dir);
    let mut changes = Changes::new(syncer.dir(), &srv.hub).await;
    let (watcher, thread) =
        braid_server::sync::spawn(syncer, srv.hub.clone(), Duration::from_millis(50)).unwrap();
    let path = file(&dir, &a);
    changes.until("the first pass", || path.exists()).await;
    // A store change rewrites the file.
    srv.store
        .apply(
            "t",
            Command::Update {
                id: a.clone(),
                patch: braid_core::TaskPatch {
                    priority: Some(1),
                    ..Default::default()
                },
            },
        )
        .unwrap();
    changes
        .until("the rewrite", || {
            std::fs::read_to_string(&path).is_ok_and(|t| t.contains("priority: 1"))
        })
        .await;
    // An edit of the file reaches the store.
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace("title: watched", "title: edited on disk"),
    )
    .unwrap();
    changes
        .until("the edit", || {
            srv.store.task(&a).unwrap().title == "edited on disk"
        })
        .await;
    // A new task made elsewhere afterwards gets its file: by then the sync
    // thread has handled everything before it. No echo: one `updated`
    // event for the file edit, no more.
    let b = srv.add("later");
    changes
        .until("the later file", || file(&dir, &b).exists())
        .await;
    let b2 = srv.add("later still");
    changes
        .until("another file", || file(&dir, &b2).exists())
        .await;
    let updates = srv
        .store
        .task_events(&a, 100)
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == EventKind::Updated)
        .count();
    assert_eq!(
        updates, 2,
        "priority from the store, title from the file; nothing bounced"
    );
    // Edits made in place right after braid rewrote the file (as an editor
    // saving quickly does) all arrive; none is overwritten by a rewrite.
    let rev = |t: &str| {
        t.lines()
            .find(|l| l.starts_with("rev: "))
            .map(str::to_owned)
    };
    for i in 0..20 {
        let text = std::fs::read_to_string(&path).unwrap();
        let title = format!("quick edit {i}");
        let edited: String = text
            .lines()
            .map(|l| {
                if l.starts_with("title: ") {
                    format!("title: {title}")
                } else {
                    l.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(&path, edited + "\n").unwrap();
        changes
            .until("the quick edit", || {
                srv.store.task(&a).unwrap().title == title
            })
            .await;
        changes
            .until("the rewrite with the new rev", || {
                std::fs::read_to_string(&path)
                    .is_ok_and(|t| rev(&t) != rev(&text) && t.contains(&title))
            })
            .await;
    }
    // A bad file is reported once, not again each time it is read.
    std::fs::write(dir.join("tasks").join("bad.md"), "no front matter").unwrap();
    changes
        .until("the rejection", || !rejections(&srv.store).is_empty())
        .await;
    // Three files added one after another, each through the debounce: by
    // the last, a re-read loop would have reported the bad file again.
    for n in 0..3 {
        let title = format!("barrier {n}");
        std::fs::write(
            dir.join("tasks").join(format!("barrier-{n}.md")),
            format!("---\ntitle: {title}\n---\n"),
        )
        .unwrap();
        changes
            .until("a barrier task", || {
                srv.store
                    .list(&braid_store::ListFilter::default())
                    .unwrap()
                    .iter()
                    .any(|t| t.title == title)
            })
            .await;
    }
    assert_eq!(
        rejections(&srv.store).len(),
        1,
        "{:?}",
        rejections(&srv.store)
    );
    srv.stop().await;
    drop(watcher);
    thread.join().unwrap();
}

/// The version a task file shows (its `rev:` line as written, quotes and
/// all: the test only asks whether it changed), if it has one yet.
fn rev_of(text: &str) -> Option<&str> {
    text.lines().find_map(|l| l.strip_prefix("rev: "))
}

/// One task's part in the stress test below: what the test did last and
/// what braid's rewrite of the file shows once that has been taken in.
struct Lane {
    id: TaskId,
    path: std::path::PathBuf,
    /// The version the file showed when the test last changed the task (by
    /// editing the file or through the store); braid's rewrite shows
    /// another.
    acted_on: Option<String>,
    /// A line the rewrite shows once it has the test's last change.
    want: String,
    title: String,
    acceptance: String,
    steps: usize,
    done: bool,
}

/// 1,000 quick edits made in place (truncate and write, as `echo >` and
/// many editors save) to the files of several tasks at once, while the
/// sync thread runs. Each edit is made from the version braid has just
/// written, at once, as an editor that reloads a changed file and saves
/// again does: so it lands right after braid's own rename, whether braid
/// rewrote the file for the previous edit or for a change made through the
/// store (every fourth step). None may be lost: every edit is applied, the
/// store ends with the last content written to each file, and nothing is
/// reported as an edit of an older version.
///
/// The test waits on file events only (its own watch of the folder, as an
/// editor's), with one overall deadline as a guard against a lost edit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_quick_in_place_edits_are_all_applied() {
    const TASKS: usize = 8;
    const EDITS: usize = 1000;
    let mut srv = Server::start(Setup::default()).await;
    let dir = srv.dir.path().to_path_buf();
    let tasks = dir.join("tasks");
    std::fs::create_dir_all(&tasks).unwrap();
    let mut lanes: Vec<Lane> = (0..TASKS)
        .map(|i| {
            let title = format!("lane {i}");
            let id = srv.add(&title);
            Lane {
                path: file(&dir, &id),
                id,
                acted_on: None,
                want: format!("title: {title}"),
                title,
                acceptance: String::new(),
                steps: 0,
                done: false,
            }
        })
        .collect();
    // The test's own watch, started before the sync thread's first pass.
    let (tx, rx) = std::sync::mpsc::channel::<std::path::PathBuf>();
    let mut watch = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        use notify::event::{AccessKind, AccessMode};
        if let Ok(ev) = ev
            && matches!(
                ev.kind,
                notify::EventKind::Create(_)
                    | notify::EventKind::Modify(_)
                    | notify::EventKind::Access(AccessKind::Close(AccessMode::Write))
            )
        {
            for p in ev.paths {
                let _ = tx.send(p);
            }
        }
    })
    .unwrap();
    notify::Watcher::watch(&mut watch, &tasks, notify::RecursiveMode::NonRecursive).unwrap();
    let (watcher, thread) = braid_server::sync::spawn(
        syncer(&srv.store, &dir),
        srv.hub.clone(),
        Duration::from_millis(20),
    )
    .unwrap();
    let store = srv.store.clone();
    let lanes = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut edits = 0;
        // Takes the next step on a lane if its file shows braid's rewrite
        // of the test's last change.
        let step = |lane: &mut Lane, edits: &mut usize| {
            if lane.done {
                return;
            }
            let Ok(text) = std::fs::read_to_string(&lane.path) else {
                return;
            };
            let Some(rev) = rev_of(&text).map(str::to_owned) else {
                return;
            };
            if Some(&rev) == lane.acted_on.as_ref() || !text.lines().any(|l| l == lane.want) {
                return;
            }
            lane.acted_on = Some(rev);
            let n = lane.steps;
            lane.steps += 1;
            if *edits == EDITS {
                lane.done = true;
            } else if n % 4 == 3 {
                // A change through the store: braid rewrites the file.
                lane.acceptance = format!("through the store {n}");
                lane.want = format!("acceptance: {}", lane.acceptance);
                store
                    .apply(
                        "elsewhere",
                        Command::Update {
                            id: lane.id.clone(),
                            patch: braid_core::TaskPatch {
                                acceptance: Some(lane.acceptance.clone()),
                                ..Default::default()
                            },
                        },
                    )
                    .unwrap();
            } else {
                // An edit in place: truncate and write the file.
                lane.title = format!("in place {n}");
                lane.want = format!("title: {}", lane.title);
                let edited: String = text
                    .lines()
                    .map(|l| {
                        if l.starts_with("title: ") {
                            format!("{}\n", lane.want)
                        } else {
                            format!("{l}\n")
                        }
                    })
                    .collect();
                std::fs::write(&lane.path, edited).unwrap();
                *edits += 1;
            }
        };
        for lane in lanes.iter_mut() {
            step(lane, &mut edits);
        }
        while !lanes.iter().all(|l| l.done) {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(p) = rx.recv_timeout(left) else {
                let stuck: Vec<String> = lanes
                    .iter()
                    .filter(|l| !l.done)
                    .map(|l| {
                        format!(
                            "{} waits for `{}`; the store has title {:?}, acceptance {:?}; the file:\n{}",
                            l.id,
                            l.want,
                            store.task(&l.id).map(|t| t.title).unwrap_or_default(),
                            store.task(&l.id).map(|t| t.acceptance).unwrap_or_default(),
                            std::fs::read_to_string(&l.path).unwrap_or_default()
                        )
                    })
                    .collect();
                panic!(
                    "after {edits} edits, a change never came back:\n{}",
                    stuck.join("\n")
                );
            };
            if let Some(lane) = lanes.iter_mut().find(|l| l.path == p) {
                step(lane, &mut edits);
            }
        }
        assert_eq!(edits, EDITS);
        lanes
    })
    .await
    .unwrap();
    drop(watch);
    for lane in &lanes {
        let t = srv.store.task(&lane.id).unwrap();
        assert_eq!(t.title, lane.title, "{}", lane.id);
        assert_eq!(t.acceptance, lane.acceptance, "{}", lane.id);
    }
    let events = srv.store.events(0, 100_000).unwrap();
    let applied = events
        .iter()
        .filter(|e| e.kind == EventKind::Updated && e.actor == "sync")
        .count();
    assert_eq!(applied, EDITS, "each edit applied once");
    assert_eq!(rejections(&srv.store), Vec::<serde_json::Value>::new());
    srv.stop().await;
    drop(watcher);
    thread.join().unwrap();
}
