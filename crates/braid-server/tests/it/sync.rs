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

/// Waits until `f` holds, checking whenever the deadline allows.
async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < WAIT, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_applies_edits_within_the_debounce_and_never_echoes() {
    let mut srv = Server::start(Setup::default()).await;
    let dir = srv.dir.path().to_path_buf();
    let a = srv.add("watched");
    let syncer = syncer(&srv.store, &dir);
    let (watcher, thread) =
        braid_server::sync::spawn(syncer, srv.hub.clone(), Duration::from_millis(50)).unwrap();
    let path = file(&dir, &a);
    until("the first pass", || path.exists()).await;
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
    until("the rewrite", || {
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
    until("the edit", || {
        srv.store.task(&a).unwrap().title == "edited on disk"
    })
    .await;
    // A new task made elsewhere afterwards gets its file: by then the sync
    // thread has handled everything before it. No echo: one `updated`
    // event for the file edit, no more.
    let b = srv.add("later");
    until("the later file", || file(&dir, &b).exists()).await;
    let b2 = srv.add("later still");
    until("another file", || file(&dir, &b2).exists()).await;
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
        until("the quick edit", || {
            srv.store.task(&a).unwrap().title == title
        })
        .await;
        until("the rewrite with the new rev", || {
            std::fs::read_to_string(&path)
                .is_ok_and(|t| rev(&t) != rev(&text) && t.contains(&title))
        })
        .await;
    }
    // A bad file is reported once, not again each time it is read.
    std::fs::write(dir.join("tasks").join("bad.md"), "no front matter").unwrap();
    until("the rejection", || !rejections(&srv.store).is_empty()).await;
    // Three files added one after another, each through the debounce: by
    // the last, a re-read loop would have reported the bad file again.
    for n in 0..3 {
        let title = format!("barrier {n}");
        std::fs::write(
            dir.join("tasks").join(format!("barrier-{n}.md")),
            format!("---\ntitle: {title}\n---\n"),
        )
        .unwrap();
        until("a barrier task", || {
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
