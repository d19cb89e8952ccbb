//! The contract every [`Store`] backend must honour, written against the
//! trait alone. Each backend's tests call [`run_all`] with a factory that
//! returns a fresh, empty store.

use std::sync::Arc;

use braid_core::{
    Clock, Dep, DepKind, ManualClock, NewTask, SharedClock, State, TaskId, TaskPatch, TaskType,
};

use crate::{Command, Error, ImportBatch, ImportOptions, ListFilter, Store};

/// Every contract check, by name, so a failure says which.
pub const CHECKS: &[(&str, fn(&dyn Store, &ManualClock))] = &[
    ("add_and_show", add_and_show),
    ("ready_order_and_blocking", ready_order_and_blocking),
    ("epic_blocks_subtree", epic_blocks_subtree),
    (
        "invalid_transition_changes_nothing",
        invalid_transition_changes_nothing,
    ),
    (
        "cycle_rejected_and_nothing_changes",
        cycle_rejected_and_nothing_changes,
    ),
    ("claim_next_and_given", claim_next_and_given),
    ("events_have_increasing_seq", events_have_increasing_seq),
    ("health_matches_recount", health_matches_recount),
    ("update_fields_and_reparent", update_fields_and_reparent),
    ("list_filters", list_filters),
    ("import_all_or_nothing", import_all_or_nothing),
    ("export_import_round_trip", export_import_round_trip),
    ("subtree_lists_descendants", subtree_lists_descendants),
    (
        "leases_guard_finish_and_rescue",
        leases_guard_finish_and_rescue,
    ),
    (
        "reopened_work_gets_fresh_attempts",
        reopened_work_gets_fresh_attempts,
    ),
    ("notes_and_deps_of", notes_and_deps_of),
    (
        "an_epic_is_done_when_every_child_is",
        an_epic_is_done_when_every_child_is,
    ),
    ("comments_are_events", comments_are_events),
    (
        "the_cost_ledger_is_the_agents_reports",
        the_cost_ledger_is_the_agents_reports,
    ),
    (
        "every_change_a_reader_can_see_appends_an_event",
        every_change_a_reader_can_see_appends_an_event,
    ),
    ("ids_with_prefix_is_a_range", ids_with_prefix_is_a_range),
    (
        "the_change_feed_pings_after_a_write",
        the_change_feed_pings_after_a_write,
    ),
    (
        "rows_and_events_carry_the_clocks_time",
        rows_and_events_carry_the_clocks_time,
    ),
];

/// Runs every check, each on a fresh store from `fresh`, which must stamp
/// rows and events with the clock it is given (the checks set the time).
pub fn run_all(fresh: &mut dyn FnMut(SharedClock) -> Box<dyn Store>) {
    for (name, check) in CHECKS {
        let clock = ManualClock::at(1_700_000_000_000);
        let store = fresh(Arc::new(clock.clone()));
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            check(store.as_ref(), &clock)
        }));
        if let Err(e) = result {
            let why = e
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| e.downcast_ref::<&str>().copied())
                .unwrap_or("(no message)");
            panic!("contract check `{name}` failed: {why}");
        }
    }
}

fn add(s: &dyn Store, title: &str) -> TaskId {
    add_with(s, NewTask::titled(title))
}

fn add_with(s: &dyn Store, t: NewTask) -> TaskId {
    s.apply("test", Command::Add(t)).unwrap().task.id
}

fn set(s: &dyn Store, id: &TaskId, to: State) -> Result<(), Error> {
    s.apply(
        "test",
        Command::SetState {
            id: id.clone(),
            to,
            reason: None,
        },
    )
    .map(|_| ())
}

fn dep(s: &dyn Store, from: &TaskId, to: &TaskId) -> Result<(), Error> {
    s.apply(
        "test",
        Command::DepAdd {
            from: from.clone(),
            to: to.clone(),
            kind: DepKind::Blocks,
        },
    )
    .map(|_| ())
}

/// Claims `id` for a lease of `lease_ms` and returns the token.
fn claim(s: &dyn Store, id: &TaskId, lease_ms: i64) -> String {
    s.apply(
        "t",
        Command::Claim {
            id: Some(id.clone()),
            assignee: "x".into(),
            lease_ms,
        },
    )
    .unwrap()
    .lease_token
    .unwrap()
}

fn ready_ids(s: &dyn Store) -> Vec<TaskId> {
    s.ready(1000).unwrap().into_iter().map(|t| t.id).collect()
}

fn add_and_show(s: &dyn Store, _clock: &ManualClock) {
    let id = add_with(
        s,
        NewTask {
            labels: vec!["b".into(), "a".into()],
            priority: Some(1),
            description: "why".into(),
            ..NewTask::titled("first")
        },
    );
    let t = s.task(&id).unwrap();
    assert_eq!(t.title, "first");
    assert_eq!(t.priority, 1);
    assert_eq!(t.labels, vec!["a", "b"]);
    assert_eq!(t.state, State::Open);
    assert!(t.ready);
    assert!(id.as_str().starts_with("br-"));
    let missing = TaskId::parse("br-nope").unwrap();
    assert_eq!(
        s.task(&missing).unwrap_err().kind(),
        braid_core::ErrorKind::NotFound
    );
    let err = s
        .apply("test", Command::Add(NewTask::titled("  ")))
        .unwrap_err();
    assert!(err.to_string().contains("title"), "{err}");
}

fn ready_order_and_blocking(s: &dyn Store, _clock: &ManualClock) {
    let low = add_with(
        s,
        NewTask {
            priority: Some(3),
            ..NewTask::titled("low")
        },
    );
    let high = add_with(
        s,
        NewTask {
            priority: Some(0),
            ..NewTask::titled("high")
        },
    );
    let blocked = add_with(
        s,
        NewTask {
            priority: Some(0),
            deps: vec![Dep {
                id: low.clone(),
                kind: DepKind::Blocks,
            }],
            ..NewTask::titled("blocked")
        },
    );
    assert_eq!(ready_ids(s), vec![high.clone(), low.clone()]);
    assert!(!s.task(&blocked).unwrap().ready);
    let why = s.why_blocked(&blocked).unwrap();
    assert!(why[0].contains(low.as_str()), "{why:?}");
    set(s, &low, State::Done).unwrap();
    assert_eq!(ready_ids(s), vec![high.clone(), blocked.clone()]);
    set(s, &low, State::Open).unwrap();
    assert_eq!(ready_ids(s), vec![high, low]);
}

fn epic_blocks_subtree(s: &dyn Store, _clock: &ManualClock) {
    let gate = add(s, "gate");
    let epic = add_with(
        s,
        NewTask {
            kind: Some(TaskType::Epic),
            ..NewTask::titled("epic")
        },
    );
    let child = add_with(
        s,
        NewTask {
            parent: Some(epic.clone()),
            ..NewTask::titled("child")
        },
    );
    let grandchild = add_with(
        s,
        NewTask {
            parent: Some(child.clone()),
            ..NewTask::titled("gc")
        },
    );
    assert_eq!(ready_ids(s).len(), 3, "epics are never ready");
    dep(s, &epic, &gate).unwrap();
    assert_eq!(ready_ids(s), vec![gate.clone()]);
    let why = s.why_blocked(&grandchild).unwrap();
    assert!(why.iter().any(|w| w.contains(epic.as_str())), "{why:?}");
    set(s, &gate, State::Done).unwrap();
    assert_eq!(ready_ids(s), vec![child, grandchild]);
}

fn invalid_transition_changes_nothing(s: &dyn Store, _clock: &ManualClock) {
    let id = add(s, "t");
    let seq = s.last_seq().unwrap();
    set(s, &id, State::Done).unwrap();
    let err = set(s, &id, State::Deferred).unwrap_err();
    assert_eq!(err.kind(), braid_core::ErrorKind::Conflict);
    assert!(err.to_string().contains("from done to deferred"), "{err}");
    // Work starts only with a claim, which takes a lease.
    let err = set(s, &id, State::InProgress).unwrap_err();
    assert!(err.to_string().contains("claim"), "{err}");
    assert_eq!(s.last_seq().unwrap(), seq + 1);
    assert_eq!(s.task(&id).unwrap().state, State::Done);
}

fn cycle_rejected_and_nothing_changes(s: &dyn Store, _clock: &ManualClock) {
    let a = add(s, "a");
    let b = add(s, "b");
    let c = add(s, "c");
    dep(s, &a, &b).unwrap();
    dep(s, &b, &c).unwrap();
    let seq = s.last_seq().unwrap();
    let err = dep(s, &c, &a).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(&format!("{c} -> {a} -> {b} -> {c}")), "{msg}");
    assert_eq!(s.last_seq().unwrap(), seq);
    assert!(s.task(&c).unwrap().ready);
    assert_eq!(s.blocks_edges().unwrap().len(), 2);
    let err = dep(s, &a, &a).unwrap_err();
    assert!(err.to_string().contains("itself"), "{err}");
}

fn claim_next_and_given(s: &dyn Store, _clock: &ManualClock) {
    let a = add_with(
        s,
        NewTask {
            priority: Some(1),
            ..NewTask::titled("a")
        },
    );
    let b = add_with(
        s,
        NewTask {
            priority: Some(2),
            ..NewTask::titled("b")
        },
    );
    let c = add_with(
        s,
        NewTask {
            deps: vec![Dep {
                id: b.clone(),
                kind: DepKind::Blocks,
            }],
            ..NewTask::titled("c")
        },
    );
    let claim = |id: Option<&TaskId>| {
        s.apply(
            "test",
            Command::Claim {
                id: id.cloned(),
                assignee: "ag".into(),
                lease_ms: 60_000,
            },
        )
    };
    let got = claim(None).unwrap();
    assert_eq!(got.task.id, a);
    assert_eq!(got.task.state, State::InProgress);
    assert_eq!(got.task.assignee.as_deref(), Some("ag"));
    let lease = got.task.lease.unwrap();
    assert_eq!(Some(lease.token), got.lease_token);
    assert_eq!(lease.attempt, 1);
    let err = claim(Some(&c)).unwrap_err();
    assert_eq!(err.kind(), braid_core::ErrorKind::Conflict);
    assert!(err.to_string().contains(b.as_str()), "{err}");
    assert_eq!(claim(Some(&b)).unwrap().task.id, b);
    assert!(matches!(claim(None).unwrap_err(), Error::NothingReady));
    assert!(
        claim(Some(&a)).is_err(),
        "a claimed task cannot be claimed again"
    );
}

fn events_have_increasing_seq(s: &dyn Store, _clock: &ManualClock) {
    let a = add(s, "a");
    let b = add(s, "b");
    dep(s, &a, &b).unwrap();
    set(s, &b, State::Done).unwrap();
    let events = s.events(0, 100).unwrap();
    assert_eq!(events.len(), 4);
    assert!(events.windows(2).all(|w| w[0].seq < w[1].seq));
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["created", "created", "dep_added", "state_changed"]);
    assert_eq!(events[3].payload["to"], "done");
    assert_eq!(s.events(events[1].seq, 100).unwrap().len(), 2);
    assert_eq!(s.last_seq().unwrap(), events[3].seq);
}

fn health_matches_recount(s: &dyn Store, _clock: &ManualClock) {
    let epic = add_with(
        s,
        NewTask {
            kind: Some(TaskType::Epic),
            ..NewTask::titled("e")
        },
    );
    let mut ids = Vec::new();
    for i in 0..12 {
        let mut t = NewTask::titled(format!("t{i}"));
        if i % 3 == 0 {
            t.parent = Some(epic.clone());
        }
        if let Some(prev) = ids.last().filter(|_| i % 2 == 1) {
            t.deps.push(Dep {
                id: TaskId::clone(prev),
                kind: DepKind::Blocks,
            });
        }
        ids.push(add_with(s, t));
    }
    set(s, &ids[0], State::Done).unwrap();
    set(s, &ids[4], State::Deferred).unwrap();
    dep(s, &epic, &ids[2]).unwrap();
    let h = s.health().unwrap();
    let all = s.list(&ListFilter::default()).unwrap();
    assert_eq!(h.total as usize, all.len());
    assert_eq!(h.epics, 1);
    assert_eq!(h.ready as usize, all.iter().filter(|t| t.ready).count());
    assert_eq!(h.ready as usize, s.ready(1000).unwrap().len());
    let blocked = all
        .iter()
        .filter(|t| t.kind != TaskType::Epic && t.state == State::Open && !t.ready)
        .count();
    assert_eq!(h.blocked as usize, blocked);
    assert_eq!(h.by_state[&State::Done], 1);
    assert_eq!(h.by_state[&State::Deferred], 1);
}

fn update_fields_and_reparent(s: &dyn Store, _clock: &ManualClock) {
    let gate = add(s, "gate");
    let epic = add_with(
        s,
        NewTask {
            kind: Some(TaskType::Epic),
            deps: vec![Dep {
                id: gate.clone(),
                kind: DepKind::Blocks,
            }],
            ..NewTask::titled("e")
        },
    );
    let t = add(s, "t");
    assert!(s.task(&t).unwrap().ready);
    let patch = TaskPatch {
        title: Some("renamed".into()),
        parent: Some(Some(epic.clone())),
        add_labels: vec!["x".into()],
        priority: Some(0),
        ..TaskPatch::default()
    };
    let applied = s
        .apply(
            "test",
            Command::Update {
                id: t.clone(),
                patch,
            },
        )
        .unwrap();
    assert_eq!(applied.task.title, "renamed");
    assert_eq!(applied.task.parent.as_ref(), Some(&epic));
    assert!(!applied.task.ready, "moved under a blocked epic");
    assert_eq!(applied.events[0].payload["title"]["to"], "renamed");
    let err = s
        .apply(
            "test",
            Command::Update {
                id: epic.clone(),
                patch: TaskPatch {
                    parent: Some(Some(t.clone())),
                    ..TaskPatch::default()
                },
            },
        )
        .unwrap_err();
    assert!(err.to_string().contains("inside it"), "{err}");
    s.apply(
        "test",
        Command::Update {
            id: t.clone(),
            patch: TaskPatch {
                parent: Some(None),
                ..TaskPatch::default()
            },
        },
    )
    .unwrap();
    assert!(s.task(&t).unwrap().ready);
    let err = s
        .apply(
            "test",
            Command::Update {
                id: t.clone(),
                patch: TaskPatch::default(),
            },
        )
        .unwrap_err();
    assert!(err.to_string().contains("nothing to update"), "{err}");
}

fn list_filters(s: &dyn Store, _clock: &ManualClock) {
    let epic = add_with(
        s,
        NewTask {
            kind: Some(TaskType::Epic),
            ..NewTask::titled("e")
        },
    );
    let a = add_with(
        s,
        NewTask {
            labels: vec!["ui".into()],
            parent: Some(epic.clone()),
            ..NewTask::titled("a")
        },
    );
    let b = add_with(
        s,
        NewTask {
            kind: Some(TaskType::Bug),
            assignee: Some("kim".into()),
            ..NewTask::titled("b")
        },
    );
    s.apply(
        "test",
        Command::Claim {
            id: Some(b.clone()),
            assignee: "kim".into(),
            lease_ms: 60_000,
        },
    )
    .unwrap();
    let ids = |f: ListFilter| {
        s.list(&f)
            .unwrap()
            .into_iter()
            .map(|t| t.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ids(ListFilter {
            label: Some("ui".into()),
            ..Default::default()
        }),
        vec![a.clone()]
    );
    assert_eq!(
        ids(ListFilter {
            parent: Some(epic.clone()),
            ..Default::default()
        }),
        vec![a.clone()]
    );
    assert_eq!(
        ids(ListFilter {
            kinds: vec![TaskType::Bug],
            ..Default::default()
        }),
        vec![b.clone()]
    );
    assert_eq!(
        ids(ListFilter {
            states: vec![State::InProgress],
            ..Default::default()
        }),
        vec![b.clone()]
    );
    assert_eq!(
        ids(ListFilter {
            assignee: Some("kim".into()),
            ..Default::default()
        }),
        vec![b]
    );
    assert_eq!(
        ids(ListFilter {
            ready: Some(true),
            ..Default::default()
        }),
        vec![a]
    );
}

fn sample_batch(s: &dyn Store) -> Vec<braid_core::Task> {
    let a = add(s, "a");
    let b = add_with(
        s,
        NewTask {
            deps: vec![Dep {
                id: a.clone(),
                kind: DepKind::Blocks,
            }],
            ..NewTask::titled("b")
        },
    );
    let mut tasks = vec![s.task(&a).unwrap(), s.task(&b).unwrap()];
    for t in &mut tasks {
        t.id = TaskId::parse(&format!("imp-{}", t.id)).unwrap();
        for d in &mut t.deps {
            d.id = TaskId::parse(&format!("imp-{}", d.id)).unwrap();
        }
    }
    tasks
}

fn import_all_or_nothing(s: &dyn Store, _clock: &ManualClock) {
    let mut tasks = sample_batch(s);
    let before = s.health().unwrap();
    let seq = s.last_seq().unwrap();
    let mut bad = tasks[1].clone();
    bad.id = TaskId::parse("imp-bad").unwrap();
    bad.deps = vec![Dep {
        id: TaskId::parse("imp-ghost").unwrap(),
        kind: DepKind::Blocks,
    }];
    tasks.push(bad);
    let batch = ImportBatch {
        tasks: tasks.clone(),
        events: vec![],
        source: "t".into(),
    };
    let err = s
        .import("test", batch.clone(), ImportOptions::default())
        .unwrap_err();
    let Error::Import(problems) = &err else {
        panic!("{err}")
    };
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].index, 2);
    assert!(problems[0].message.contains("imp-ghost"), "{err}");
    assert_eq!(s.health().unwrap(), before);
    assert_eq!(s.last_seq().unwrap(), seq);
    let report = s
        .import("test", batch, ImportOptions { skip_invalid: true })
        .unwrap();
    assert_eq!(report.tasks, 2);
    assert_eq!(report.skipped.len(), 1);
    let imported = s.task(&tasks[1].id).unwrap();
    assert!(!imported.ready, "imported blocker is open");
    // A cycle inside a batch is refused, naming it.
    let mut x = tasks[0].clone();
    x.id = TaskId::parse("cyc-x").unwrap();
    x.deps = vec![Dep {
        id: TaskId::parse("cyc-y").unwrap(),
        kind: DepKind::Blocks,
    }];
    let mut y = x.clone();
    y.id = TaskId::parse("cyc-y").unwrap();
    y.deps = vec![Dep {
        id: x.id.clone(),
        kind: DepKind::Blocks,
    }];
    let err = s
        .import(
            "test",
            ImportBatch {
                tasks: vec![x, y],
                ..Default::default()
            },
            ImportOptions::default(),
        )
        .unwrap_err();
    assert!(err.to_string().contains("cycle"), "{err}");
}

fn export_import_round_trip(s: &dyn Store, _clock: &ManualClock) {
    let tasks = sample_batch(s);
    s.import(
        "test",
        ImportBatch {
            tasks: tasks.clone(),
            events: vec![],
            source: "t".into(),
        },
        ImportOptions::default(),
    )
    .unwrap();
    let mut exported = Vec::new();
    s.export(false, &mut |item| {
        if let crate::ExportItem::Task(t) = item {
            exported.push(t);
        }
        Ok(())
    })
    .unwrap();
    assert_eq!(exported.len(), 4);
    let got: Vec<_> = exported
        .iter()
        .filter(|t| t.id.as_str().starts_with("imp-"))
        .cloned()
        .collect();
    let strip = |mut t: braid_core::Task| {
        t.lease = None;
        t
    };
    assert_eq!(
        got.into_iter().map(strip).collect::<Vec<_>>(),
        tasks.into_iter().map(strip).collect::<Vec<_>>()
    );
}

fn subtree_lists_descendants(s: &dyn Store, _clock: &ManualClock) {
    let top = add_with(
        s,
        NewTask {
            kind: Some(TaskType::Epic),
            ..NewTask::titled("top")
        },
    );
    let mid = add_with(
        s,
        NewTask {
            parent: Some(top.clone()),
            ..NewTask::titled("mid")
        },
    );
    let leaf = add_with(
        s,
        NewTask {
            parent: Some(mid.clone()),
            ..NewTask::titled("leaf")
        },
    );
    let other = add(s, "other");
    let ids = |root: Option<&TaskId>| {
        let mut v: Vec<TaskId> = s.subtree(root).unwrap().into_iter().map(|r| r.id).collect();
        v.sort();
        v
    };
    let mut want = vec![mid.clone(), leaf.clone()];
    want.sort();
    assert_eq!(ids(Some(&mid)), want);
    assert_eq!(ids(None).len(), 4);
    assert!(ids(Some(&other)) == vec![other.clone()]);
    let rows = s.subtree(Some(&top)).unwrap();
    assert_eq!(rows[0].id, top, "the root comes first");
    assert!(s.subtree(Some(&TaskId::parse("br-none").unwrap())).is_err());
}

fn leases_guard_finish_and_rescue(s: &dyn Store, clock: &ManualClock) {
    let a = add(s, "a");
    let got = s
        .apply(
            "t",
            Command::Claim {
                id: Some(a.clone()),
                assignee: "one".into(),
                lease_ms: 30_000,
            },
        )
        .unwrap();
    let token = got.lease_token.unwrap();
    assert!(
        s.expired_leases(s.now_ms(), 10).unwrap().is_empty(),
        "a lease holds until it expires"
    );
    clock.advance(30_001);
    let finish = |token: &str, to: State| {
        s.apply(
            "t",
            Command::Finish {
                id: a.clone(),
                token: token.into(),
                to,
                reason: None,
                refund_attempt: false,
            },
        )
    };
    assert!(matches!(
        finish("wrong", State::Done),
        Err(Error::Locked(_))
    ));
    assert_eq!(
        s.expired_leases(s.now_ms(), 10).unwrap(),
        vec![(a.clone(), token.clone())]
    );
    // Rescue with a wrong token is refused; with the right one it reopens.
    assert!(
        s.apply(
            "t",
            Command::Rescue {
                id: a.clone(),
                token: "wrong".into()
            }
        )
        .is_err()
    );
    let r = s
        .apply(
            "t",
            Command::Rescue {
                id: a.clone(),
                token: token.clone(),
            },
        )
        .unwrap();
    assert_eq!(r.task.state, State::Open);
    assert_eq!(r.events[0].kind.as_str(), "rescued");
    // The stale holder can no longer finish: nothing is completed twice.
    assert!(matches!(finish(&token, State::Done), Err(Error::Locked(_))));
    let again = s
        .apply(
            "t",
            Command::Claim {
                id: None,
                assignee: "two".into(),
                lease_ms: 60_000,
            },
        )
        .unwrap();
    assert_eq!(
        again.task.lease.as_ref().unwrap().attempt,
        2,
        "a rescue counts as an attempt"
    );
    let t2 = again.lease_token.unwrap();
    assert!(
        s.apply(
            "t",
            Command::Rescue {
                id: a.clone(),
                token: t2.clone()
            }
        )
        .is_err(),
        "lease still valid"
    );
    s.apply(
        "t",
        Command::Renew {
            id: a.clone(),
            token: t2.clone(),
            lease_ms: 60_000,
        },
    )
    .unwrap();
    let released = s
        .apply(
            "t",
            Command::Finish {
                id: a.clone(),
                token: t2,
                to: State::Open,
                reason: Some("rate limit".into()),
                refund_attempt: true,
            },
        )
        .unwrap();
    assert_eq!(released.task.state, State::Open);
    assert!(released.task.ready);
    let third = s
        .apply(
            "t",
            Command::Claim {
                id: None,
                assignee: "x".into(),
                lease_ms: 60_000,
            },
        )
        .unwrap();
    assert_eq!(
        third.task.lease.unwrap().attempt,
        2,
        "a refunded attempt is not counted"
    );
    let done = s
        .apply(
            "t",
            Command::Finish {
                id: a.clone(),
                token: third.lease_token.unwrap(),
                to: State::Review,
                reason: None,
                refund_attempt: false,
            },
        )
        .unwrap();
    assert_eq!(done.task.state, State::Review);
    assert!(done.task.lease.is_none());
}

fn reopened_work_gets_fresh_attempts(s: &dyn Store, _clock: &ManualClock) {
    let a = add(s, "a");
    let claim = |s: &dyn Store| {
        s.apply(
            "t",
            Command::Claim {
                id: Some(a.clone()),
                assignee: "x".into(),
                lease_ms: 60_000,
            },
        )
        .unwrap()
    };
    let c = claim(s);
    let token = c.lease_token.unwrap();
    let fail = Command::Finish {
        id: a.clone(),
        token,
        to: State::Failed,
        reason: Some("x".into()),
        refund_attempt: false,
    };
    s.apply("t", fail).unwrap();
    set(s, &a, State::Open).unwrap();
    assert_eq!(claim(s).task.lease.unwrap().attempt, 1);
}

fn an_epic_is_done_when_every_child_is(s: &dyn Store, _clock: &ManualClock) {
    let epic = |title: &str, parent: Option<&TaskId>| {
        add_with(
            s,
            NewTask {
                kind: Some(TaskType::Epic),
                parent: parent.cloned(),
                ..NewTask::titled(title)
            },
        )
    };
    let child = |title: &str, parent: &TaskId| {
        add_with(
            s,
            NewTask {
                parent: Some(parent.clone()),
                ..NewTask::titled(title)
            },
        )
    };
    let outer = epic("outer", None);
    let inner = epic("inner", Some(&outer));
    let a = child("a", &inner);
    let b = child("b", &inner);
    let c = child("c", &outer);
    set(s, &a, State::Done).unwrap();
    assert_eq!(s.task(&inner).unwrap().state, State::Open, "b is not done");
    // Cancelled work does not hold an epic open; the last done child
    // closes it, and its parent when that was the last open child.
    set(s, &c, State::Cancelled).unwrap();
    assert_eq!(s.task(&outer).unwrap().state, State::Open);
    let token = claim(s, &b, 60_000);
    let applied = s
        .apply(
            "engine",
            Command::Finish {
                id: b.clone(),
                token,
                to: State::Done,
                reason: None,
                refund_attempt: false,
            },
        )
        .unwrap();
    assert_eq!(s.task(&inner).unwrap().state, State::Done);
    assert_eq!(s.task(&outer).unwrap().state, State::Done);
    let completed: Vec<&TaskId> = applied
        .events
        .iter()
        .filter(|e| e.kind == braid_core::EventKind::EpicCompleted)
        .filter_map(|e| e.task.as_ref())
        .collect();
    assert_eq!(completed, [&inner, &outer], "inner first, then outer");
    let h = s.health().unwrap();
    assert_eq!(h.by_state.get(&State::Done).copied(), Some(4), "{h:?}");

    // Reopened work reopens nothing by itself; with the setting off, an
    // epic stays open.
    s.set_setting(crate::CLOSE_EPICS, "false").unwrap();
    let e = epic("kept open", None);
    let d = child("d", &e);
    set(s, &d, State::Done).unwrap();
    assert_eq!(s.task(&e).unwrap().state, State::Open);
    s.set_setting(crate::CLOSE_EPICS, "true").unwrap();
    let only_cancelled = epic("nothing done", None);
    let x = child("x", &only_cancelled);
    set(s, &x, State::Cancelled).unwrap();
    assert_eq!(
        s.task(&only_cancelled).unwrap().state,
        State::Open,
        "an epic of cancelled work is not done"
    );
}

fn notes_and_deps_of(s: &dyn Store, _clock: &ManualClock) {
    let a = add(s, "a");
    let b = add(s, "b");
    let c = add(s, "c");
    dep(s, &a, &b).unwrap();
    s.apply(
        "test",
        Command::DepAdd {
            from: a.clone(),
            to: c.clone(),
            kind: DepKind::Related,
        },
    )
    .unwrap();
    dep(s, &b, &c).unwrap();
    let mut got = s.deps_of(&[a.clone(), c.clone()]).unwrap();
    got.sort_by(|x, y| x.1.cmp(&y.1));
    let mut want = vec![
        (a.clone(), b.clone(), DepKind::Blocks),
        (a.clone(), c.clone(), DepKind::Related),
    ];
    want.sort_by(|x, y| x.1.cmp(&y.1));
    assert_eq!(got, want, "only the deps of the ids asked for");
    let mut want = vec![(a.clone(), DepKind::Related), (b.clone(), DepKind::Blocks)];
    want.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(
        s.dependents_of(&c, 10).unwrap(),
        want,
        "what depends on c, any kind, in id order"
    );
    assert_eq!(
        s.dependents_of(&c, 1).unwrap(),
        want[..1],
        "at most the limit"
    );
    assert!(s.dependents_of(&a, 10).unwrap().is_empty());

    let before = s.last_seq().unwrap();
    let health = s.health().unwrap();
    let e = s
        .note(
            "sync",
            braid_core::EventKind::SyncRejected,
            serde_json::json!({"file": "x.md"}),
        )
        .unwrap();
    assert_eq!(e.seq, before + 1);
    assert_eq!(e.task, None);
    assert_eq!(s.events(before, 10).unwrap(), vec![e]);
    assert_eq!(s.health().unwrap(), health, "a note changes no task");
}

fn comments_are_events(s: &dyn Store, _clock: &ManualClock) {
    let a = add(s, "a");
    let b = add(s, "b");
    let comment = |id: &TaskId, text: &str| {
        s.apply(
            "test",
            Command::Record {
                id: id.clone(),
                kind: braid_core::EventKind::Commented,
                payload: serde_json::json!({"author": "ann", "text": text}),
            },
        )
        .unwrap();
    };
    comment(&a, "first");
    set(s, &a, State::Deferred).unwrap();
    comment(&a, "second");
    comment(&b, "elsewhere");
    comment(&a, "third");
    let texts = |v: Vec<braid_core::Event>| -> Vec<String> {
        v.iter()
            .map(|e| e.payload["text"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        texts(s.comments(&a, 10).unwrap()),
        ["first", "second", "third"]
    );
    assert_eq!(
        texts(s.comments(&a, 2).unwrap()),
        ["second", "third"],
        "the latest, oldest first"
    );
    assert_eq!(texts(s.comments(&b, 10).unwrap()), ["elsewhere"]);
}

/// Readers cache answers by the log's position (the server's `/api/ready`),
/// so every command that changes what a task looks like must move `seq`.
fn every_change_a_reader_can_see_appends_an_event(s: &dyn Store, _clock: &ManualClock) {
    let a = add(s, "a");
    let b = add(s, "b");
    let mut last = s.last_seq().unwrap();
    let mut moved = |what: &str| {
        let now = s.last_seq().unwrap();
        assert!(
            now > last,
            "{what} changed a task without appending an event"
        );
        last = now;
    };
    s.apply(
        "t",
        Command::Update {
            id: a.clone(),
            patch: TaskPatch {
                priority: Some(0),
                ..TaskPatch::default()
            },
        },
    )
    .unwrap();
    moved("update");
    dep(s, &a, &b).unwrap();
    moved("dep add");
    s.apply(
        "t",
        Command::DepRm {
            from: a.clone(),
            to: b.clone(),
        },
    )
    .unwrap();
    moved("dep rm");
    set(s, &b, State::Deferred).unwrap();
    moved("set state");
    let token = claim(s, &a, -1);
    moved("claim");
    s.apply(
        "t",
        Command::Rescue {
            id: a.clone(),
            token,
        },
    )
    .unwrap();
    moved("rescue");
    let token = claim(s, &a, 60_000);
    moved("claim again");
    s.apply(
        "t",
        Command::Finish {
            id: a.clone(),
            token,
            to: State::Done,
            reason: None,
            refund_attempt: false,
        },
    )
    .unwrap();
    moved("finish");
}

fn ids_with_prefix_is_a_range(s: &dyn Store, _clock: &ManualClock) {
    for id in ["br-ab1", "br-ab", "br-b", "br-ab2", "br-a", "x-ab1"] {
        add_with(
            s,
            NewTask {
                id: Some(TaskId::parse(id).unwrap()),
                ..NewTask::titled(id)
            },
        );
    }
    let ids = |p: &str, n: usize| -> Vec<String> {
        s.ids_with_prefix(p, n)
            .unwrap()
            .into_iter()
            .map(|i| i.to_string())
            .collect()
    };
    assert_eq!(ids("br-ab", 10), ["br-ab", "br-ab1", "br-ab2"]);
    assert_eq!(ids("br-ab", 2), ["br-ab", "br-ab1"]);
    assert_eq!(ids("br-a", 10), ["br-a", "br-ab", "br-ab1", "br-ab2"]);
    assert_eq!(ids("br-b", 10), ["br-b"]);
    assert!(ids("br-c", 10).is_empty());
    assert!(ids("BR-AB", 10).is_empty(), "ids are matched as stored");
}

fn the_change_feed_pings_after_a_write(s: &dyn Store, _clock: &ManualClock) {
    let feed = s.changes().unwrap();
    add(s, "wakes the feed");
    assert!(
        feed.recv_timeout(std::time::Duration::from_secs(30))
            .is_ok(),
        "a write pings the feed"
    );
}

fn rows_and_events_carry_the_clocks_time(s: &dyn Store, clock: &ManualClock) {
    let t0 = clock.now_ms();
    let a = add(s, "a");
    clock.advance(5_000);
    set(s, &a, State::Done).unwrap();
    let t = s.task(&a).unwrap();
    assert_eq!(
        (t.created_at, t.updated_at, t.closed_at),
        (t0, t0 + 5_000, Some(t0 + 5_000))
    );
    let at: Vec<i64> = s.events(0, 10).unwrap().iter().map(|e| e.at).collect();
    assert_eq!(at, [t0, t0 + 5_000]);
    assert_eq!(s.now_ms(), t0 + 5_000);
}

/// Every `agent_finished` event that carries a `usage` report is one row of
/// the ledger, with exactly the figures reported; sums by each key.
fn the_cost_ledger_is_the_agents_reports(s: &dyn Store, clock: &ManualClock) {
    use crate::{UsageBy, UsageQuery};
    let a = add(s, "a");
    let b = add(s, "b");
    let finished = |id: &TaskId, payload: serde_json::Value| {
        s.apply(
            "engine",
            Command::Record {
                id: id.clone(),
                kind: braid_core::EventKind::AgentFinished,
                payload,
            },
        )
        .unwrap()
        .events[0]
            .seq
    };
    // Day one (2023-11-14 UTC).
    let first = finished(
        &a,
        serde_json::json!({"agent": "claude", "attempt": 1, "exit": "exit 1", "duration_ms": 1500,
            "usage": {"model": "claude-sonnet-4-5", "session": "s-1", "input_tokens": 1200,
                "output_tokens": 340, "cache_read_tokens": 5000, "cache_write_tokens": 800,
                "cost_usd": 0.012_345_678_9, "turns": 3}}),
    );
    // Without usage (a plain command agent): not in the ledger.
    finished(
        &a,
        serde_json::json!({"agent": "sh", "exit": "exit 0", "duration_ms": 5}),
    );
    clock.advance(86_400_000);
    finished(
        &a,
        serde_json::json!({"agent": "claude", "attempt": 2, "exit": "exit 0", "duration_ms": 900,
            "usage": {"model": "claude-sonnet-4-5", "session": "s-1", "input_tokens": 100,
                "output_tokens": 60, "cost_usd": 0.5, "turns": 1}}),
    );
    finished(
        &b,
        serde_json::json!({"agent": "codex", "attempt": 1, "exit": "exit 0", "duration_ms": 700,
            "usage": {"model": "gpt-5-codex", "input_tokens": 10, "output_tokens": 20}}),
    );
    let rows = s.task_usage(&a).unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    let r = &rows[0];
    assert_eq!(r.seq, first);
    assert_eq!((r.agent.as_str(), r.attempt), ("claude", Some(1)));
    assert_eq!(r.model.as_deref(), Some("claude-sonnet-4-5"));
    assert_eq!(r.session.as_deref(), Some("s-1"));
    assert_eq!(
        (
            r.input_tokens,
            r.output_tokens,
            r.cache_read_tokens,
            r.cache_write_tokens
        ),
        (1200, 340, 5000, 800)
    );
    assert_eq!(
        r.cost_usd,
        Some(0.012_345_678_9),
        "the cost exactly as reported"
    );
    assert_eq!((r.turns, r.duration_ms), (Some(3), 1500));
    assert_eq!(r.outcome, "exit 1");
    assert_eq!(rows[1].attempt, Some(2));

    let q = |by, since, task: Option<&TaskId>| {
        s.usage_totals(&UsageQuery {
            by,
            since,
            task: task.cloned(),
            limit: 100,
        })
        .unwrap()
    };
    let by_task = q(UsageBy::Task, None, None);
    assert_eq!(by_task.len(), 2);
    assert_eq!(by_task[0].key, a.as_str(), "costliest first");
    assert_eq!(by_task[0].attempts, 2);
    assert!(
        (by_task[0].cost_usd - 0.512_345_678_9).abs() < 1e-12,
        "{by_task:?}"
    );
    assert_eq!(by_task[0].input_tokens, 1300);
    assert_eq!(by_task[0].cache_read_tokens, 5000);
    assert_eq!(by_task[0].duration_ms, 2400);
    assert_eq!(
        (
            by_task[1].key.as_str(),
            by_task[1].unpriced,
            by_task[1].cost_usd
        ),
        (b.as_str(), 1, 0.0)
    );
    let by_agent = q(UsageBy::Agent, None, None);
    assert_eq!(
        by_agent
            .iter()
            .map(|t| (t.key.as_str(), t.attempts))
            .collect::<Vec<_>>(),
        [("claude", 2), ("codex", 1)]
    );
    let by_model = q(UsageBy::Model, None, None);
    assert_eq!(by_model[1].key, "gpt-5-codex");
    let by_day = q(UsageBy::Day, None, None);
    let mut days: Vec<&str> = by_day.iter().map(|t| t.key.as_str()).collect();
    days.sort();
    assert_eq!(days, ["2023-11-14", "2023-11-15"]);
    // Since the second day, and for one task.
    let since = q(UsageBy::Task, Some(1_700_000_000_000 + 86_400_000), None);
    assert_eq!(since.iter().map(|t| t.attempts).sum::<i64>(), 2);
    let only_b = q(UsageBy::Agent, None, Some(&b));
    assert_eq!(only_b.len(), 1);
    assert_eq!(only_b[0].key, "codex");
    assert!(s.task_usage(&add(s, "c")).unwrap().is_empty());
}
