//! Property test on a real SQLite file: after any random sequence of adds,
//! dependency changes, state changes and re-parenting through the Store
//! trait, the maintained readiness and health equal a brute-force
//! recomputation from the stored rows.

use std::collections::BTreeMap;

use braid_core::{Dep, DepKind, Health, NewTask, State, TaskId, TaskPatch, TaskType, graph};
use braid_store::{Command, ListFilter, SqliteStore, Store};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Add {
        parent: Option<usize>,
        dep: Option<usize>,
        epic: bool,
    },
    Dep {
        from: usize,
        to: usize,
        kind: usize,
    },
    Undep {
        from: usize,
        to: usize,
    },
    State {
        task: usize,
        to: usize,
    },
    Reparent {
        task: usize,
        parent: Option<usize>,
    },
    Claim,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (proptest::option::of(0..30usize), proptest::option::of(0..30usize), any::<bool>())
            .prop_map(|(parent, dep, epic)| Op::Add { parent, dep, epic }),
        2 => (0..30usize, 0..30usize, 0..3usize).prop_map(|(from, to, kind)| Op::Dep { from, to, kind }),
        1 => (0..30usize, 0..30usize).prop_map(|(from, to)| Op::Undep { from, to }),
        2 => (0..30usize, 0..7usize).prop_map(|(task, to)| Op::State { task, to }),
        1 => (0..30usize, proptest::option::of(0..30usize)).prop_map(|(task, parent)| Op::Reparent { task, parent }),
        1 => Just(Op::Claim),
    ]
}

/// Recomputes readiness and health from the rows alone.
fn check(store: &SqliteStore) {
    let tasks = store.list(&ListFilter::default()).unwrap();
    let index: BTreeMap<&TaskId, usize> =
        tasks.iter().enumerate().map(|(i, t)| (&t.id, i)).collect();
    let ks: Vec<_> = tasks.iter().map(|t| (t.kind, t.state)).collect();
    let parent: Vec<Option<usize>> = tasks
        .iter()
        .map(|t| t.parent.as_ref().map(|p| index[p]))
        .collect();
    let blocks: Vec<(usize, usize)> = tasks
        .iter()
        .enumerate()
        .flat_map(|(i, t)| {
            t.deps
                .iter()
                .filter(|d| d.kind == DepKind::Blocks)
                .map(move |d| (i, d.id.clone()))
        })
        .map(|(i, d)| (i, index[&d]))
        .collect();
    let nodes = graph::derive_all(&ks, &parent, &blocks);
    for (t, n) in tasks.iter().zip(&nodes) {
        assert_eq!(
            (t.blockers, t.held_by, t.ready),
            (n.blockers, n.held_by, n.ready()),
            "{}",
            t.id
        );
    }
    let mut want: Vec<TaskId> = tasks
        .iter()
        .zip(&nodes)
        .filter(|(_, n)| n.ready())
        .map(|(t, _)| t.id.clone())
        .collect();
    want.sort();
    let mut got: Vec<TaskId> = store
        .ready(100_000)
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect();
    got.sort();
    assert_eq!(got, want, "ready queue");
    assert_eq!(store.health().unwrap(), Health::recompute(nodes.iter()));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn sqlite_readiness_and_health_equal_recomputation(ops in proptest::collection::vec(op(), 1..70)) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::create(&dir.path().join("braid.db")).unwrap();
        let mut ids: Vec<TaskId> = Vec::new();
        for op in ops {
            let get = |i: usize| ids.get(i).cloned();
            let cmd = match op {
                Op::Add { parent, dep, epic } => Some(Command::Add(NewTask {
                    kind: Some(if epic { TaskType::Epic } else { TaskType::Task }),
                    parent: parent.and_then(get),
                    deps: dep.and_then(get).map(|id| Dep { id, kind: DepKind::Blocks }).into_iter().collect(),
                    ..NewTask::titled("t")
                })),
                Op::Dep { from, to, kind } => match (get(from), get(to)) {
                    (Some(from), Some(to)) => Some(Command::DepAdd { from, to, kind: DepKind::ALL[kind] }),
                    _ => None,
                },
                Op::Undep { from, to } => match (get(from), get(to)) {
                    (Some(from), Some(to)) => Some(Command::DepRm { from, to }),
                    _ => None,
                },
                Op::State { task, to } => get(task).map(|id| Command::SetState { id, to: State::ALL[to], reason: None }),
                Op::Reparent { task, parent } => get(task).map(|id| Command::Update {
                    id,
                    patch: TaskPatch { parent: Some(parent.and_then(get)), ..TaskPatch::default() },
                }),
                Op::Claim => Some(Command::Claim { id: None, assignee: "p".into(), lease_ms: 1000 }),
            };
            let Some(cmd) = cmd else { continue };
            let is_add = matches!(cmd, Command::Add(_));
            let before = store.last_seq().unwrap();
            match store.apply("prop", cmd) {
                Ok(applied) => {
                    if is_add {
                        ids.push(applied.task.id);
                    }
                    prop_assert!(store.last_seq().unwrap() > before);
                }
                Err(_) => prop_assert_eq!(store.last_seq().unwrap(), before, "a refused command changed the log"),
            }
            check(&store);
        }
    }
}
