//! The contract suite on PostgreSQL (the local server in CI): each store gets
//! a schema of its own in the database named by `BRAID_TEST_POSTGRES`
//! (e.g. `postgres://root@127.0.0.1:5432/test`). Without that variable the
//! PostgreSQL half is skipped, and says so.

use std::io::Write as _;

use braid_store::{PgStore, Store, contract};

/// Says once per `cargo test` (not once per test, nor per test binary)
/// that the PostgreSQL tests were skipped: the first test binary that
/// skips, among those cargo runs, makes a marker named by cargo's pid.
fn say_skipped() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let marker = std::env::temp_dir().join(format!(
            "braid-postgres-skipped-{}",
            std::os::unix::process::parent_id()
        ));
        if std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(marker)
            .is_ok()
        {
            // Straight to the terminal: the test harness captures print!.
            let _ = writeln!(
                std::io::stderr(),
                "\nSKIPPED: the PostgreSQL tests (set BRAID_TEST_POSTGRES=postgres://... to run them)"
            );
        }
    });
}

/// The server to test against, or `None` (the test says it skipped).
pub fn server() -> Option<String> {
    match std::env::var("BRAID_TEST_POSTGRES") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            say_skipped();
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
    contract::run_all(&mut |clock| {
        let s = Schema::new(&server);
        let store = PgStore::open(&s.url).unwrap().with_clock(clock);
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
    let (s, a, b, _) = two_nodes_at(server, app);
    (s, a, b)
}

/// Two nodes whose clocks the test sets (one clock: the nodes agree on the
/// time, as NTP keeps real ones close).
fn two_nodes_at(server: &str, app: &str) -> (Schema, PgStore, PgStore, braid_core::ManualClock) {
    let s = Schema::new(server);
    let url = format!("{}&application_name={app}", s.url);
    let clock = braid_core::ManualClock::starting_now();
    let a = PgStore::open(&url)
        .unwrap()
        .with_clock(std::sync::Arc::new(clock.clone()));
    let b = PgStore::open(&url)
        .unwrap()
        .with_clock(std::sync::Arc::new(clock.clone()));
    (s, a, b, clock)
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

/// Claims and completions in batches, from two nodes at once (they run
/// side by side under the shared writers' lock), over a graph where many
/// tasks unblock the same dependents: every task is done exactly once, no
/// dependent is claimed before all its blockers are done, the events are
/// numbered without a gap, and the maintained counts match the tasks.
#[test]
fn batched_claims_and_completions_from_two_nodes_keep_the_graph_exact() {
    use braid_core::{Dep, DepKind, EventKind, NewTask, State, TaskId};
    use braid_store::{Command, ListFilter};
    let Some(server) = server() else { return };
    let (_s, a, b) = two_nodes(&server, "braid_batches");
    // 120 leaves; 12 joins, each waiting on 30 leaves (overlapping); one
    // final task waiting on every join.
    let leaf = |i: usize| TaskId::parse(&format!("br-leaf{i:03}")).unwrap();
    let join = |j: usize| TaskId::parse(&format!("br-join{j:02}")).unwrap();
    let mut adds: Vec<Command> = (0..120)
        .map(|i| {
            let mut t = NewTask::titled(format!("leaf {i}"));
            t.id = Some(leaf(i));
            Command::Add(t)
        })
        .collect();
    for j in 0..12 {
        let mut t = NewTask::titled(format!("join {j}"));
        t.id = Some(join(j));
        t.deps = (0..30)
            .map(|k| Dep {
                id: leaf((j * 10 + k) % 120),
                kind: DepKind::Blocks,
            })
            .collect();
        adds.push(Command::Add(t));
    }
    let mut last = NewTask::titled("last");
    last.id = Some(TaskId::parse("br-last").unwrap());
    last.deps = (0..12)
        .map(|j| Dep {
            id: join(j),
            kind: DepKind::Blocks,
        })
        .collect();
    adds.push(Command::Add(last));
    let total = adds.len();
    a.apply_all("t", adds).unwrap();

    let nodes = [std::sync::Arc::new(a), std::sync::Arc::new(b)];
    let done: usize = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|w| {
                let node = nodes[w % 2].clone();
                scope.spawn(move || {
                    let changes = node.changes().expect("PostgreSQL has a change feed");
                    let mut n = 0;
                    let (mut idle, mut done) = (0, 0);
                    loop {
                        let mut size = 7;
                        let got = loop {
                            let claims = (0..size)
                                .map(|_| Command::Claim {
                                    id: None,
                                    assignee: format!("w{w}"),
                                    lease_ms: 60_000,
                                })
                                .collect();
                            match node.apply_all(&format!("w{w}"), claims) {
                                Ok(got) => break got,
                                Err(braid_store::Error::NothingReady) if size > 1 => size /= 2,
                                Err(braid_store::Error::NothingReady) => break Vec::new(),
                                Err(e) => panic!("{e}"),
                            }
                        };
                        if got.is_empty() {
                            // Others may still be finishing what unblocks
                            // more: wait for their next write.
                            let now_done = node.health().unwrap().by_state[&State::Done] as usize;
                            if now_done == total {
                                return n;
                            }
                            // Wake-ups with no task finished anywhere (the
                            // backstop pings every second).
                            idle = if now_done > done { 0 } else { idle + 1 };
                            done = now_done;
                            assert!(idle < 50, "the work never finished");
                            let _ = changes.recv_timeout(std::time::Duration::from_secs(5));
                            continue;
                        }
                        n += got.len();
                        let finishes = got
                            .into_iter()
                            .map(|a| Command::Finish {
                                id: a.task.id,
                                token: a.lease_token.unwrap(),
                                to: State::Done,
                                reason: None,
                                refund_attempt: false,
                            })
                            .collect();
                        node.apply_all(&format!("w{w}"), finishes).unwrap();
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(done, total, "every task claimed and finished exactly once");

    let events = nodes[0].events(0, 100_000).unwrap();
    for (i, e) in events.iter().enumerate() {
        assert_eq!(
            e.seq,
            events[0].seq + i as i64,
            "event numbers without a gap"
        );
    }
    let seq_of = |kind: EventKind, id: &TaskId| {
        let found: Vec<i64> = events
            .iter()
            .filter(|e| e.kind == kind && e.task.as_ref() == Some(id))
            .map(|e| e.seq)
            .collect();
        assert_eq!(found.len(), 1, "{id}: one {kind:?} event");
        found[0]
    };
    for j in 0..12 {
        let claimed = seq_of(EventKind::Claimed, &join(j));
        for k in 0..30 {
            let blocker = leaf((j * 10 + k) % 120);
            assert!(
                seq_of(EventKind::StateChanged, &blocker) < claimed,
                "{} was claimed before its blocker {blocker} was done",
                join(j)
            );
        }
    }
    let h = nodes[1].health().unwrap();
    let tasks = nodes[1].list(&ListFilter::default()).unwrap();
    assert_eq!(tasks.len(), total);
    assert!(tasks.iter().all(|t| t.state == State::Done && !t.ready));
    assert_eq!(h.by_state[&State::Done] as usize, total);
    assert_eq!(h.ready, 0);
    assert_eq!(h.blocked, 0);
}

/// From async code (a server's handler, say), on either kind of runtime, a
/// store is opened, used and dropped (no runtime is started inside a
/// runtime's worker), and the runtime's other tasks run to their end.
#[test]
fn a_store_works_from_async_code() {
    use braid_core::NewTask;
    use braid_store::Command;
    let Some(server) = server() else { return };
    let schema = Schema::new(&server);
    let single = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    for rt in [single, multi] {
        let (title, ticks) = rt.block_on(async {
            let store = std::sync::Arc::new(PgStore::open(&schema.url).unwrap());
            let s = store.clone();
            let call = tokio::spawn(async move {
                s.apply("t", Command::Add(NewTask::titled("from async")))
                    .unwrap()
            });
            // Another task on the same runtime.
            let ticker = tokio::spawn(async {
                let mut n = 0;
                for _ in 0..3 {
                    tokio::task::yield_now().await;
                    n += 1;
                }
                n
            });
            let id = call.await.unwrap().task.id;
            let title = store.task(&id).unwrap().title;
            let ticks = ticker.await.unwrap();
            drop(store);
            (title, ticks)
        });
        assert_eq!((title.as_str(), ticks), ("from async", 3));
    }
}

#[test]
fn a_rescue_by_another_node_counts_an_attempt_and_fences_the_old_holder() {
    use braid_core::{NewTask, State};
    use braid_store::Command;
    let Some(server) = server() else { return };
    let (_s, a, b, clock) = two_nodes_at(&server, "braid_rescue");
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
                lease_ms: 60_000,
            },
        )
        .unwrap();
    let old = claim.lease_token.unwrap();
    assert!(b.expired_leases(b.now_ms(), 10).unwrap().is_empty());
    // Node a stops renewing; a minute later node b sees the expired lease
    // and takes it back.
    clock.advance(60_001);
    let expired = b.expired_leases(b.now_ms(), 10).unwrap();
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

mod same_as_sqlite {
    //! Batches on PostgreSQL end as on SQLite: PostgreSQL applies a batch to
    //! rows held in memory and writes them back at the end (claims and the
    //! ends of claims under a shared lock), SQLite row by row; the same
    //! commands must leave both in the same state.

    use std::collections::HashMap;

    use braid_core::model::Lease;
    use braid_core::{
        Dep, DepKind, Event, EventKind, NewTask, State, Task, TaskId, TaskPatch, TaskType,
    };
    use braid_store::{Applied, Command, ListFilter, PgStore, SqliteStore, Store};
    use serde_json::{Value, json};

    use super::{Schema, server};

    /// A small deterministic generator (xorshift64*): a seed names a whole run,
    /// so a failure reproduces.
    struct Rng(u64);

    impl Rng {
        fn new(seed: u64) -> Rng {
            Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
        }

        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        /// A number in `0..n`.
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn one_in(&mut self, n: usize) -> bool {
            self.below(n) == 0
        }

        fn pick<T: Clone>(&mut self, xs: &[T]) -> Option<T> {
            (!xs.is_empty()).then(|| xs[self.below(xs.len())].clone())
        }
    }

    /// Stands, in a generated command, for the token of the task's last claim;
    /// each store's own token replaces it (tokens are random per store).
    const HELD: &str = "held";

    /// What the generator knows of the graph while it writes a batch: the
    /// SQLite store's tasks before the batch, and what the batch did so far as
    /// far as the generator can tell (it guesses; a wrong guess is a refused
    /// batch, which both stores must refuse).
    struct Known {
        ids: Vec<TaskId>,
        epics: Vec<TaskId>,
        /// In queue order.
        ready: Vec<TaskId>,
        state: HashMap<TaskId, State>,
        deps: Vec<(TaskId, TaskId)>,
        /// In progress under a claim whose token is known (made by an
        /// earlier batch), and whether its lease has expired.
        held: Vec<(TaskId, bool)>,
        /// Named by the batch so far.
        touched: Vec<TaskId>,
    }

    impl Known {
        fn of(store: &dyn Store, tokens: &HashMap<TaskId, String>) -> Known {
            let now = store.now_ms();
            let tasks = store.list(&ListFilter::default()).unwrap();
            let with = |f: &dyn Fn(&Task) -> bool| -> Vec<TaskId> {
                tasks
                    .iter()
                    .filter(|t| f(t))
                    .map(|t| t.id.clone())
                    .collect()
            };
            Known {
                ids: with(&|_| true),
                epics: with(&|t| t.kind == TaskType::Epic),
                ready: with(&|t| t.ready),
                state: tasks.iter().map(|t| (t.id.clone(), t.state)).collect(),
                deps: tasks
                    .iter()
                    .flat_map(|t| t.deps.iter().map(|d| (t.id.clone(), d.id.clone())))
                    .collect(),
                held: tasks
                    .iter()
                    .filter(|t| t.state == State::InProgress && tokens.contains_key(&t.id))
                    .map(|t| {
                        (
                            t.id.clone(),
                            t.lease.as_ref().is_some_and(|l| l.expires_at < now),
                        )
                    })
                    .collect(),
                touched: Vec::new(),
            }
        }

        fn moved(&mut self, id: &TaskId, to: State) {
            self.state.insert(id.clone(), to);
            self.ready.retain(|r| r != id);
            self.held.retain(|(h, _)| h != id);
        }
    }

    /// Writes random batches of commands.
    struct Gen {
        rng: Rng,
        /// Tasks created so far (ids are never reused).
        created: usize,
        /// Numbers titles and payloads, so updates change something.
        n: usize,
    }

    impl Gen {
        /// A fresh id. Ids are letters only (error messages are compared with
        /// their numbers left out) and not in creation order, so nothing passes
        /// by luck of sorting ids the way tasks were made.
        fn fresh_id(&mut self) -> TaskId {
            let n = (self.created * 7919) % (26 * 26 * 26);
            self.created += 1;
            let letter = |i: usize| (b'a' + (i % 26) as u8) as char;
            TaskId::parse(&format!(
                "t-{}{}{}",
                letter(n / 676),
                letter(n / 26),
                letter(n)
            ))
            .unwrap()
        }

        /// A batch of 1 to 8 commands; some batches hold only what runs under
        /// PostgreSQL's shared lock (claims and the ends of claims).
        fn batch(&mut self, k: &mut Known) -> Vec<Command> {
            let shared = self.rng.one_in(3);
            let len = 1 + self.rng.below(8);
            (0..len).map(|_| self.command(k, shared)).collect()
        }

        /// A task; half the time one the batch already named, so that a
        /// batch's commands meet on the rows PostgreSQL holds in memory.
        fn task(&mut self, k: &Known) -> Option<TaskId> {
            match self.rng.pick(&k.touched) {
                Some(id) if self.rng.one_in(2) => Some(id),
                _ => self.rng.pick(&k.ids),
            }
        }

        fn command(&mut self, k: &mut Known, shared: bool) -> Command {
            let (Some(id), Some(mut other)) = (self.task(k), self.task(k)) else {
                return self.add(k);
            };
            if other == id && !self.rng.one_in(10) {
                other = self.rng.pick(&k.ids).unwrap();
            }
            k.touched.extend([id.clone(), other.clone()]);
            let mut roll = if shared {
                // Runs of claims of the next ready task are taken together.
                if self.rng.one_in(3) {
                    47
                } else {
                    47 + self.rng.below(40)
                }
            } else {
                self.rng.below(100)
            };
            if (64..84).contains(&roll) && k.held.is_empty() {
                // Nothing to end yet: claim something.
                roll = 47;
            }
            if (47..64).contains(&roll) && k.ready.is_empty() && !self.rng.one_in(5) {
                // Nothing to claim: end a claim, note something, or add.
                roll = match (k.held.is_empty(), shared) {
                    (false, _) => 64 + self.rng.below(20),
                    (true, true) => 84,
                    (true, false) => 0,
                };
            }
            let lease_ms = 60_000;
            let assignee = if self.rng.one_in(2) { "ann" } else { "bob" }.to_owned();
            self.n += 1;
            let n = self.n;
            match roll {
                0..22 => self.add(k),
                22..32 => {
                    let mut patch = TaskPatch::default();
                    match self.rng.below(6) {
                        0 => patch.title = Some(format!("task, retitled {n}")),
                        1 => patch.priority = Some(self.rng.below(5) as u8),
                        2 => patch.add_labels = vec![LABELS[self.rng.below(3)].to_owned()],
                        3 => patch.remove_labels = vec![LABELS[self.rng.below(3)].to_owned()],
                        4 => {
                            let epic = self.rng.pick(&k.epics);
                            patch.parent = Some(if self.rng.one_in(4) {
                                None
                            } else {
                                epic.or(Some(other))
                            });
                        }
                        _ => {
                            patch.kind = Some(if self.rng.one_in(2) {
                                TaskType::Epic
                            } else {
                                TaskType::Task
                            });
                        }
                    }
                    Command::Update { id, patch }
                }
                32..47 => {
                    let from = k.state.get(&id).copied().unwrap_or(State::Open);
                    let to = if self.rng.one_in(6) {
                        State::ALL[self.rng.below(State::ALL.len())]
                    } else {
                        let next: Vec<State> = from
                            .allowed_next()
                            .iter()
                            .copied()
                            .filter(|s| *s != State::InProgress)
                            .collect();
                        self.rng.pick(&next).unwrap_or(State::Open)
                    };
                    k.moved(&id, to);
                    Command::SetState {
                        id,
                        to,
                        reason: self.rng.one_in(2).then(|| format!("reason {n}")),
                    }
                }
                47..57 => {
                    if let Some(head) = k.ready.first().cloned() {
                        k.moved(&head, State::InProgress);
                    }
                    Command::Claim {
                        id: None,
                        assignee,
                        lease_ms,
                    }
                }
                57..64 => {
                    let id = match self.rng.pick(&k.ready) {
                        Some(ready) if !self.rng.one_in(5) => ready,
                        _ => id,
                    };
                    k.moved(&id, State::InProgress);
                    Command::Claim {
                        id: Some(id),
                        assignee,
                        lease_ms,
                    }
                }
                64..84 => self.end_of_claim(k, roll, lease_ms, n),
                84..87 => Command::Record {
                    id,
                    kind: if self.rng.one_in(2) {
                        EventKind::Commented
                    } else {
                        EventKind::Dispatched
                    },
                    payload: json!({ "n": n }),
                },
                87..95 => Command::DepAdd {
                    from: id,
                    to: other,
                    kind: match self.rng.below(6) {
                        0 => DepKind::Related,
                        1 => DepKind::DiscoveredFrom,
                        _ => DepKind::Blocks,
                    },
                },
                _ => {
                    let (from, to) = match self.rng.pick(&k.deps) {
                        Some(edge) if !self.rng.one_in(5) => edge,
                        _ => (id, other),
                    };
                    k.deps.retain(|d| *d != (from.clone(), to.clone()));
                    Command::DepRm { from, to }
                }
            }
        }

        /// A Finish (`roll` in 64..76), Renew, NextAttempt or Rescue of a
        /// held claim; some present a forged token.
        fn end_of_claim(&mut self, k: &mut Known, roll: usize, lease_ms: i64, n: usize) -> Command {
            let mut i = self.rng.below(k.held.len());
            let token = if self.rng.one_in(20) { "forged" } else { HELD }.to_owned();
            match roll {
                64..76 => {
                    let id = k.held[i].0.clone();
                    let to = [
                        State::Done,
                        State::Done,
                        State::Open,
                        State::Open,
                        State::Failed,
                        State::Review,
                    ][self.rng.below(6)];
                    k.moved(&id, to);
                    Command::Finish {
                        id,
                        token,
                        to,
                        reason: self.rng.one_in(2).then(|| format!("finished {n}")),
                        refund_attempt: to == State::Open && self.rng.one_in(2),
                    }
                }
                76..80 => {
                    k.held[i].1 = false;
                    let id = k.held[i].0.clone();
                    if roll < 78 {
                        Command::Renew {
                            id,
                            token,
                            lease_ms,
                        }
                    } else {
                        Command::NextAttempt {
                            id,
                            token,
                            lease_ms,
                        }
                    }
                }
                _ => {
                    // Mostly an expired lease, which may be rescued.
                    if let Some(j) = k.held.iter().position(|(_, expired)| *expired)
                        && !self.rng.one_in(8)
                    {
                        i = j;
                    }
                    let id = k.held[i].0.clone();
                    k.moved(&id, State::Open);
                    Command::Rescue { id, token }
                }
            }
        }

        fn add(&mut self, k: &mut Known) -> Command {
            let id = self.fresh_id();
            let kind = match self.rng.below(8) {
                0 => TaskType::Epic,
                1 => TaskType::Bug,
                2 => TaskType::Chore,
                _ => TaskType::Task,
            };
            let parent = if self.rng.one_in(3) {
                let any = self.rng.pick(&k.ids);
                self.rng
                    .pick(&k.epics)
                    .filter(|_| !self.rng.one_in(3))
                    .or(any)
            } else {
                None
            };
            let mut deps: Vec<Dep> = Vec::new();
            for _ in 0..self.rng.below(3) {
                if let Some(to) = self.rng.pick(&k.ids)
                    && !deps.iter().any(|d| d.id == to)
                {
                    let kind = if self.rng.one_in(4) {
                        DepKind::Related
                    } else {
                        DepKind::Blocks
                    };
                    deps.push(Dep { id: to, kind });
                }
            }
            let labels = LABELS
                .iter()
                .filter(|_| self.rng.one_in(3))
                .map(|l| (*l).to_owned())
                .collect();
            k.ids.push(id.clone());
            k.touched.push(id.clone());
            k.state.insert(id.clone(), State::Open);
            if kind == TaskType::Epic {
                k.epics.push(id.clone());
            }
            Command::Add(NewTask {
                id: Some(id),
                kind: Some(kind),
                priority: (!self.rng.one_in(4)).then(|| self.rng.below(5) as u8),
                parent,
                deps,
                labels,
                ..NewTask::titled(format!("task {}", self.created))
            })
        }
    }

    const LABELS: [&str; 3] = ["ops", "ui", "db"];

    /// The command for one store: its own token where the command says [`HELD`].
    fn for_store(cmd: &Command, tokens: &HashMap<TaskId, String>) -> Command {
        let mut cmd = cmd.clone();
        if let Command::Renew { id, token, .. }
        | Command::NextAttempt { id, token, .. }
        | Command::Finish { id, token, .. }
        | Command::Rescue { id, token } = &mut cmd
            && token == HELD
        {
            *token = tokens
                .get(id)
                .cloned()
                .unwrap_or_else(|| "never-claimed".into());
        }
        cmd
    }

    /// A task with what rightly differs between two stores blanked: the
    /// lease's token (a random secret). Times are equal: both stores read
    /// one clock the test sets.
    fn comparable(mut t: Task) -> Task {
        t.lease = t.lease.map(|l| Lease {
            token: String::new(),
            ..l
        });
        t.deps.sort();
        t
    }

    /// An event without its number (each log numbers its own).
    fn comparable_event(e: &Event) -> (EventKind, Option<TaskId>, String, i64, Value) {
        (
            e.kind,
            e.task.clone(),
            e.actor.clone(),
            e.at,
            e.payload.clone(),
        )
    }

    /// An error's variant and its message without numbers (the time a lease
    /// has left). What neither store orders is left out or sorted: a cycle's
    /// path (either may find a different shortest cycle first) and the
    /// reasons a task is not ready ("waits on a; waits on b").
    fn comparable_error(e: &braid_store::Error) -> (String, Vec<String>) {
        let debug = match e {
            braid_store::Error::Domain(d) => format!("{d:?}"),
            other => format!("{other:?}"),
        };
        let variant: String = debug
            .chars()
            .take_while(char::is_ascii_alphabetic)
            .collect();
        if variant == "Cycle" {
            return (variant, Vec::new());
        }
        let message: String = e
            .to_string()
            .chars()
            .filter(|c| !c.is_ascii_digit())
            .collect();
        let mut parts: Vec<String> = message
            .split([':', ';'])
            .map(|p| p.trim().to_owned())
            .collect();
        parts.sort();
        (variant, parts)
    }

    /// Asserts that two stores hold the same graph, queue, counters and log.
    fn assert_same(sqlite: &dyn Store, pg: &dyn Store, context: &dyn Fn() -> String) {
        let all = |s: &dyn Store| -> Vec<Task> {
            let mut tasks: Vec<Task> = s
                .list(&ListFilter::default())
                .unwrap()
                .into_iter()
                .map(comparable)
                .collect();
            tasks.sort_by(|a, b| a.id.cmp(&b.id));
            tasks
        };
        let (want, got) = (all(sqlite), all(pg));
        let ids = |ts: &[Task]| ts.iter().map(|t| t.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&want), ids(&got), "tasks\n{}", context());
        for (w, g) in want.iter().zip(&got) {
            assert_eq!(
                w,
                g,
                "task {} (left SQLite, right PostgreSQL)\n{}",
                w.id,
                context()
            );
        }
        let ready = |s: &dyn Store| -> Vec<TaskId> {
            s.ready(100).unwrap().into_iter().map(|t| t.id).collect()
        };
        assert_eq!(ready(sqlite), ready(pg), "ready queue\n{}", context());
        // The label index and the parent column, as the queries on them see.
        for label in LABELS {
            let labelled = |s: &dyn Store| -> Vec<TaskId> {
                let filter = ListFilter {
                    label: Some(label.to_owned()),
                    ..ListFilter::default()
                };
                s.list(&filter).unwrap().into_iter().map(|t| t.id).collect()
            };
            assert_eq!(
                labelled(sqlite),
                labelled(pg),
                "label {label}\n{}",
                context()
            );
        }
        // Each store lists a subtree parents first, but orders cousins its
        // own way (SQLite by parent, PostgreSQL by depth): compare contents.
        for root in [None].into_iter().chain(want.iter().map(|t| Some(&t.id))) {
            let subtree = |s: &dyn Store| {
                let mut rows = s.subtree(root).unwrap();
                rows.sort_by(|a, b| a.id.cmp(&b.id));
                rows
            };
            assert_eq!(
                subtree(sqlite),
                subtree(pg),
                "subtree of {root:?}\n{}",
                context()
            );
        }
        for t in &want {
            let why = |s: &dyn Store| -> Vec<String> {
                let mut why = s.why_blocked(&t.id).unwrap();
                why.sort();
                why
            };
            assert_eq!(
                why(sqlite),
                why(pg),
                "why {} is blocked\n{}",
                t.id,
                context()
            );
        }
        let expired = |s: &dyn Store| -> Vec<TaskId> {
            let now = s.now_ms();
            let mut ids: Vec<TaskId> = s
                .expired_leases(now, 1000)
                .unwrap()
                .into_iter()
                .map(|(id, _)| id)
                .collect();
            ids.sort();
            ids
        };
        assert_eq!(
            expired(sqlite),
            expired(pg),
            "expired leases\n{}",
            context()
        );
        assert_eq!(
            sqlite.health().unwrap(),
            pg.health().unwrap(),
            "health\n{}",
            context()
        );
        let events = |s: &dyn Store| -> Vec<_> {
            s.events(0, 100_000)
                .unwrap()
                .iter()
                .map(comparable_event)
                .collect()
        };
        let (want, got) = (events(sqlite), events(pg));
        if let Some(i) = (0..want.len().max(got.len())).find(|i| want.get(*i) != got.get(*i)) {
            panic!(
                "event {i}: SQLite {:?}, PostgreSQL {:?}\n{}",
                want.get(i),
                got.get(i),
                context()
            );
        }
    }

    #[test]
    fn batches_on_postgres_end_as_on_sqlite() {
        let Some(server) = server() else { return };
        let dir = tempfile::tempdir().unwrap();
        let (mut batches, mut refused) = (0, 0);
        for seed in 1..=6u64 {
            let schema = Schema::new(&server);
            let clock = braid_core::ManualClock::at(1_700_000_000_000);
            let shared = || -> braid_core::SharedClock { std::sync::Arc::new(clock.clone()) };
            let pg = PgStore::open(&schema.url).unwrap().with_clock(shared());
            let sqlite = SqliteStore::create(&dir.path().join(format!("s{seed}/braid.db")))
                .unwrap()
                .with_clock(shared());
            let mut generator = Gen {
                rng: Rng::new(seed),
                created: 0,
                n: 0,
            };
            let (mut sqlite_tokens, mut pg_tokens) = (HashMap::new(), HashMap::new());
            // The batches so far and how they ended: the reproduction.
            let mut log: Vec<String> = Vec::new();
            let mut commands = 0;
            while commands < 150 {
                // Time passes between batches; now and then a minute, and
                // every lease held expires.
                clock.advance(if generator.rng.one_in(6) {
                    60_001
                } else {
                    1 + generator.rng.below(1_000) as i64
                });
                let mut known = Known::of(&sqlite, &sqlite_tokens);
                let cmds = generator.batch(&mut known);
                commands += cmds.len();
                let on = |tokens: &HashMap<TaskId, String>| -> Vec<Command> {
                    cmds.iter().map(|c| for_store(c, tokens)).collect()
                };
                let want = sqlite.apply_all("fuzz", on(&sqlite_tokens));
                let got = pg.apply_all("fuzz", on(&pg_tokens));
                log.push(format!(
                    "batch {}: {cmds:#?} -> SQLite {}",
                    log.len(),
                    match &want {
                        Ok(_) => "ok".to_owned(),
                        Err(e) => format!("refused: {e}"),
                    }
                ));
                let context = || format!("seed {seed}; the batches so far:\n{}", log.join("\n"));
                match (want, got) {
                    (Ok(want), Ok(got)) => {
                        assert_eq!(want.len(), got.len(), "{}", context());
                        for (w, g) in want.into_iter().zip(got) {
                            // Claims of the next ready task pick the same one.
                            assert_eq!(
                                comparable(w.task.clone()),
                                comparable(g.task.clone()),
                                "a command's result (left SQLite, right PostgreSQL)\n{}",
                                context()
                            );
                            let events = |a: &Applied| {
                                a.events.iter().map(comparable_event).collect::<Vec<_>>()
                            };
                            assert_eq!(events(&w), events(&g), "a command's events\n{}", context());
                            assert_eq!(w.lease_token.is_some(), g.lease_token.is_some());
                            if let (Some(w_token), Some(g_token)) = (w.lease_token, g.lease_token) {
                                sqlite_tokens.insert(w.task.id, w_token);
                                pg_tokens.insert(g.task.id, g_token);
                            }
                        }
                    }
                    (Err(want), Err(got)) => {
                        refused += 1;
                        assert_eq!(
                            comparable_error(&want),
                            comparable_error(&got),
                            "refused differently (SQLite: {want}; PostgreSQL: {got})\n{}",
                            context()
                        );
                    }
                    (want, got) => panic!(
                        "SQLite {:?}, PostgreSQL {:?}\n{}",
                        want.map(|_| "ok").map_err(|e| e.to_string()),
                        got.map(|_| "ok").map_err(|e| e.to_string()),
                        context()
                    ),
                }
                batches += 1;
                // After a refused batch too: PostgreSQL, like SQLite, applies
                // all or nothing.
                assert_same(&sqlite, &pg, &context);
            }
        }
        // Most batches go through; the refused ones check all-or-nothing.
        assert!(
            refused * 4 < batches * 3,
            "{refused} of {batches} batches refused"
        );
        assert!(refused > 0, "no batch was refused");
    }
}
