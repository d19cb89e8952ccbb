//! The contract suite and SQLite-only checks, on real database files.

use braid_core::{NewTask, State};
use braid_store::{Command, SqliteStore, Store, contract};

fn fresh(dir: &tempfile::TempDir, n: &mut usize) -> SqliteStore {
    *n += 1;
    SqliteStore::create(&dir.path().join(format!("db{n}/braid.db"))).unwrap()
}

#[test]
fn contract_suite_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let mut n = 0;
    contract::run_all(&mut |clock| Box::new(fresh(&dir, &mut n).with_clock(clock)));
}

#[test]
fn reopen_keeps_data_and_wal_mode() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("braid.db");
    let id = {
        let s = SqliteStore::create(&path).unwrap();
        s.apply("t", Command::Add(NewTask::titled("kept")))
            .unwrap()
            .task
            .id
    };
    let s = SqliteStore::open(&path).unwrap();
    assert_eq!(s.task(&id).unwrap().title, "kept");
    let conn = rusqlite::Connection::open(&path).unwrap();
    let mode: String = conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let plan: String = conn
        .query_row("EXPLAIN QUERY PLAN SELECT id FROM tasks WHERE ready = 1 ORDER BY priority, created_at, id LIMIT 5", [], |r| r.get(3))
        .unwrap();
    assert!(
        plan.contains("tasks_ready"),
        "ready query must use its index: {plan}"
    );
}

#[test]
fn open_missing_database_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = SqliteStore::open(&dir.path().join("nope.db"))
        .err()
        .unwrap();
    let text = braid_core::error::chain(&err);
    assert!(
        text.contains("nope.db") && text.contains("braid init"),
        "{text}"
    );
}

#[test]
fn concurrent_writers_from_threads_never_fail_or_double_claim() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("braid.db");
    SqliteStore::create(&path).unwrap();
    let claimed = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for w in 0..4 {
            let path = &path;
            let claimed = &claimed;
            s.spawn(move || {
                let store = SqliteStore::open(path).unwrap();
                for i in 0..50 {
                    store
                        .apply("t", Command::Add(NewTask::titled(format!("w{w}-{i}"))))
                        .unwrap();
                }
                for _ in 0..20 {
                    let got = store
                        .apply(
                            "t",
                            Command::Claim {
                                id: None,
                                assignee: format!("w{w}"),
                                lease_ms: 1000,
                            },
                        )
                        .unwrap();
                    claimed.lock().unwrap().push(got.task.id);
                }
            });
        }
    });
    let mut claimed = claimed.into_inner().unwrap();
    let n = claimed.len();
    claimed.sort();
    claimed.dedup();
    assert_eq!(claimed.len(), n, "a task was claimed twice");
    let s = SqliteStore::open(&path).unwrap();
    let h = s.health().unwrap();
    assert_eq!(h.total, 200);
    assert_eq!(h.by_state[&State::InProgress], 80);
}

#[test]
fn backup_and_restore_keep_the_replaced_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("braid.db");
    let s = SqliteStore::create(&path).unwrap();
    let a = s
        .apply("t", Command::Add(NewTask::titled("before")))
        .unwrap()
        .task
        .id;
    let snap = dir.path().join("snap.db");
    s.backup_to(&snap).unwrap();
    assert!(s.backup_to(&snap).is_err(), "never overwrites");
    let b = s
        .apply("t", Command::Add(NewTask::titled("after")))
        .unwrap()
        .task
        .id;
    let kept = dir.path().join("kept.db");
    s.restore_from(&snap, &kept).unwrap();
    assert!(s.task(&a).is_ok());
    assert!(
        s.task(&b).is_err(),
        "restored content replaces the live one"
    );
    let old = SqliteStore::open(&kept).unwrap();
    assert!(old.task(&b).is_ok(), "the replaced database was kept");
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, b"not a database").unwrap();
    let err = s
        .restore_from(&junk, &dir.path().join("k2.db"))
        .unwrap_err();
    assert!(err.to_string().contains("not a braid database"), "{err}");
    assert!(s.task(&a).is_ok(), "a bad restore changes nothing");
}

#[test]
fn the_change_feed_hears_writes_of_another_connection() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("braid.db");
    let reader = SqliteStore::create(&path).unwrap();
    let writer = SqliteStore::open(&path).unwrap();
    let feed = reader.changes().unwrap();
    assert!(feed.try_recv().is_err(), "no write yet, no ping");
    writer
        .apply("t", Command::Add(NewTask::titled("elsewhere")))
        .unwrap();
    feed.recv_timeout(std::time::Duration::from_secs(30))
        .expect("the other store's commit pings this feed");
    assert_eq!(reader.last_seq().unwrap(), 1);
}
