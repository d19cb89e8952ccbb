//! The contract suite on PostgreSQL (the local server in CI): each store gets
//! a schema of its own in the database named by `BRAID_TEST_POSTGRES`
//! (e.g. `postgres://root@127.0.0.1:5432/test`). Without that variable the
//! PostgreSQL half is skipped, and says so.

use std::io::Write as _;

use braid_store::{PgStore, Store, contract};

/// The server to test against, or `None` (the test says it skipped).
pub fn server() -> Option<String> {
    match std::env::var("BRAID_TEST_POSTGRES") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            // Straight to the terminal: the test harness captures print!.
            let _ = writeln!(
                std::io::stderr(),
                "\nSKIPPED: the PostgreSQL contract suite (set BRAID_TEST_POSTGRES=postgres://... to run it)"
            );
            None
        }
    }
}

/// Runs SQL on the server outside any store (creating and dropping schemas).
fn admin(url: &str, sql: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("BRAID_TEST_POSTGRES={url}: {e}"));
        tokio::spawn(conn);
        client.batch_execute(sql).await.unwrap();
    });
}

/// A fresh schema and the URL of a store living in it.
pub struct Schema {
    server: String,
    pub name: String,
    pub url: String,
}

impl Schema {
    pub fn new(server: &str) -> Schema {
        let name = format!(
            "braid_t{}_{}",
            std::process::id(),
            braid_core::TaskId::random(8).as_str()[3..].to_owned()
        );
        admin(server, &format!("CREATE SCHEMA {name}"));
        let sep = if server.contains('?') { '&' } else { '?' };
        let url = format!("{server}{sep}options=-c%20search_path%3D{name}");
        Schema {
            server: server.to_owned(),
            name,
            url,
        }
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        admin(&self.server, &format!("DROP SCHEMA {} CASCADE", self.name));
    }
}

#[test]
fn contract_suite_on_postgres() {
    let Some(server) = server() else { return };
    let mut schemas = Vec::new();
    contract::run_all(&mut || {
        let s = Schema::new(&server);
        let store = PgStore::open(&s.url).unwrap();
        schemas.push(s);
        Box::new(store) as Box<dyn Store>
    });
}

#[test]
fn a_bad_address_is_named_without_its_password() {
    let Some(_) = server() else { return };
    let Err(e) = PgStore::open("postgres://u:secret@127.0.0.1:1/nope") else {
        panic!("no server listens on port 1");
    };
    let e = e.to_string();
    assert!(e.contains("127.0.0.1") && !e.contains("secret"), "{e}");
}

/// Two stores on one schema: two nodes.
fn two_nodes(server: &str, app: &str) -> (Schema, PgStore, PgStore) {
    let s = Schema::new(server);
    let url = format!("{}&application_name={app}", s.url);
    let a = PgStore::open(&url).unwrap();
    let b = PgStore::open(&url).unwrap();
    (s, a, b)
}

#[test]
fn claims_across_nodes_never_share_a_task() {
    use braid_core::NewTask;
    use braid_store::Command;
    let Some(server) = server() else { return };
    let (_s, a, b) = two_nodes(&server, "braid_claims");
    let n = 200;
    a.apply_all(
        "t",
        (0..n)
            .map(|i| Command::Add(NewTask::titled(format!("t{i}"))))
            .collect(),
    )
    .unwrap();
    let nodes = [std::sync::Arc::new(a), std::sync::Arc::new(b)];
    let claimed: Vec<Vec<String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..6)
            .map(|w| {
                let node = nodes[w % 2].clone();
                scope.spawn(move || {
                    let mut mine = Vec::new();
                    loop {
                        match node.apply(
                            &format!("w{w}"),
                            Command::Claim {
                                id: None,
                                assignee: format!("w{w}"),
                                lease_ms: 60_000,
                            },
                        ) {
                            Ok(x) => mine.push(x.task.id.to_string()),
                            Err(braid_store::Error::NothingReady) => return mine,
                            Err(e) => panic!("{e}"),
                        }
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut all: Vec<String> = claimed.into_iter().flatten().collect();
    assert_eq!(all.len(), n);
    all.sort();
    all.dedup();
    assert_eq!(all.len(), n, "no task claimed twice");
    let h = nodes[1].health().unwrap();
    assert_eq!(h.by_state[&braid_core::State::InProgress], n as u64);
    assert_eq!(h.ready, 0);
}

#[test]
fn a_rescue_by_another_node_counts_an_attempt_and_fences_the_old_holder() {
    use braid_core::{NewTask, State};
    use braid_store::Command;
    let Some(server) = server() else { return };
    let (_s, a, b) = two_nodes(&server, "braid_rescue");
    let id = a
        .apply("t", Command::Add(NewTask::titled("job")))
        .unwrap()
        .task
        .id;
    let claim = a
        .apply(
            "node-a",
            Command::Claim {
                id: Some(id.clone()),
                assignee: "node-a".into(),
                // Already expired: node a stopped renewing long ago.
                lease_ms: -60_000,
            },
        )
        .unwrap();
    let old = claim.lease_token.unwrap();
    // Node b sees the expired lease and takes it back.
    let expired = b.expired_leases(braid_store::sqlite::now_ms(), 10).unwrap();
    assert_eq!(expired, vec![(id.clone(), old.clone())]);
    b.apply(
        "node-b",
        Command::Rescue {
            id: id.clone(),
            token: old.clone(),
        },
    )
    .unwrap();
    // The old holder can no longer finish or renew.
    for cmd in [
        Command::Finish {
            id: id.clone(),
            token: old.clone(),
            to: State::Done,
            reason: None,
            refund_attempt: false,
        },
        Command::Renew {
            id: id.clone(),
            token: old.clone(),
            lease_ms: 1_000,
        },
    ] {
        let e = a.apply("node-a", cmd).unwrap_err();
        assert!(matches!(e, braid_store::Error::Locked(_)), "{e}");
    }
    // Claimed again, it is the second attempt.
    let again = b
        .apply(
            "node-b",
            Command::Claim {
                id: Some(id.clone()),
                assignee: "node-b".into(),
                lease_ms: 60_000,
            },
        )
        .unwrap();
    assert_eq!(again.task.lease.unwrap().attempt, 2);
}

#[test]
fn terminated_backends_are_reconnected_and_no_write_is_lost() {
    use braid_core::NewTask;
    use braid_store::Command;
    let Some(server) = server() else { return };
    let app = format!("braid_term{}", std::process::id());
    let (_s, a, _b) = two_nodes(&server, &app);
    // Every 10 writes the writer says so, and its connections are
    // terminated; the channel closes when the writer ends, however it ends.
    let (tick, ticks) = std::sync::mpsc::channel::<()>();
    let node = &a;
    let (written, kills) = std::thread::scope(|scope| {
        let writer = scope.spawn(move || {
            let mut ok = 0;
            for i in 0..300 {
                node.apply("t", Command::Add(NewTask::titled(format!("w{i}"))))
                    .unwrap_or_else(|e| panic!("write {i}: {e}"));
                ok += 1;
                if i % 10 == 0 {
                    let _ = tick.send(());
                }
            }
            ok
        });
        let mut kills = 0;
        while ticks.recv().is_ok() {
            admin(
                &server,
                &format!(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '{app}'"
                ),
            );
            kills += 1;
        }
        (writer.join().unwrap(), kills)
    });
    assert!(kills > 1, "the backends were terminated while writing");
    assert_eq!(written, 300);
    let h = a.health().unwrap();
    assert_eq!(h.total, 300, "every acknowledged write is there, once");
}
