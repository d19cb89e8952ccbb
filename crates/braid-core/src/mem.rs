//! An in-memory graph implementing [`GraphTx`]: the model the property tests
//! check the incremental algorithms against, and a reference for backends.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::Error;
use crate::graph::{self, GraphTx, Node};
use crate::health::{Health, HealthDelta};
use crate::id::TaskId;
use crate::model::DepKind;

#[derive(Clone, Debug, Default)]
pub struct MemGraph {
    pub nodes: BTreeMap<TaskId, Node>,
    pub parent: BTreeMap<TaskId, TaskId>,
    /// `(from, to) -> kind`: from depends on to.
    pub edges: BTreeMap<(TaskId, TaskId), DepKind>,
    pub health: HealthDelta,
}

impl MemGraph {
    /// Inserts a fresh node and attaches it (what a store's `add` does).
    pub fn add(
        &mut self,
        id: &TaskId,
        kind: crate::TaskType,
        parent: Option<&TaskId>,
        deps: &[(TaskId, DepKind)],
    ) -> Result<(), Error> {
        if let Some(p) = parent
            && !self.nodes.contains_key(p)
        {
            return Err(Error::NotFound(p.clone()));
        }
        let snapshot = self.clone();
        self.nodes
            .insert(id.clone(), Node::new(kind, crate::State::Open));
        if let Some(p) = parent {
            self.parent.insert(id.clone(), p.clone());
        }
        let mut delta = std::mem::take(&mut self.health);
        let r = graph::attach_new(self, id, parent, deps, &mut delta);
        self.health = delta;
        if r.is_err() {
            *self = snapshot;
        }
        r.map(|_| ())
    }

    /// Runs one write-path operation all-or-nothing, as a store transaction.
    pub fn apply<R>(
        &mut self,
        op: impl FnOnce(&mut MemGraph, &mut HealthDelta) -> Result<R, Error>,
    ) -> Result<R, Error> {
        let snapshot = self.clone();
        let mut delta = std::mem::take(&mut self.health);
        let r = op(self, &mut delta);
        self.health = delta;
        if r.is_err() {
            *self = snapshot;
        }
        r
    }

    pub fn ready_set(&self) -> BTreeSet<TaskId> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.ready())
            .map(|(id, _)| id.clone())
            .collect()
    }

    pub fn health(&self) -> Health {
        Health::from_counters(self.health.0.iter().map(|(k, v)| (*k, *v)))
    }

    /// Recomputes every node's counts from scratch.
    pub fn brute_force(&self) -> BTreeMap<TaskId, Node> {
        let ids: Vec<&TaskId> = self.nodes.keys().collect();
        let index: BTreeMap<&TaskId, usize> =
            ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        let ks: Vec<_> = self.nodes.values().map(|n| (n.kind, n.state)).collect();
        let parent: Vec<Option<usize>> = ids
            .iter()
            .map(|id| self.parent.get(*id).map(|p| index[p]))
            .collect();
        let blocks: Vec<(usize, usize)> = self
            .edges
            .iter()
            .filter(|(_, k)| **k == DepKind::Blocks)
            .map(|((a, b), _)| (index[a], index[b]))
            .collect();
        let derived = graph::derive_all(&ks, &parent, &blocks);
        ids.into_iter().cloned().zip(derived).collect()
    }
}

impl GraphTx for MemGraph {
    type Error = Error;

    fn node(&mut self, id: &TaskId) -> Result<Option<Node>, Error> {
        Ok(self.nodes.get(id).copied())
    }
    fn put_node(&mut self, id: &TaskId, node: &Node) -> Result<(), Error> {
        self.nodes.insert(id.clone(), *node);
        Ok(())
    }
    fn parent(&mut self, id: &TaskId) -> Result<Option<TaskId>, Error> {
        Ok(self.parent.get(id).cloned())
    }
    fn set_parent(&mut self, id: &TaskId, parent: Option<&TaskId>) -> Result<(), Error> {
        match parent {
            Some(p) => self.parent.insert(id.clone(), p.clone()),
            None => self.parent.remove(id),
        };
        Ok(())
    }
    fn children(&mut self, id: &TaskId) -> Result<Vec<TaskId>, Error> {
        Ok(self
            .parent
            .iter()
            .filter(|(_, p)| *p == id)
            .map(|(c, _)| c.clone())
            .collect())
    }
    fn dependents(&mut self, id: &TaskId) -> Result<Vec<TaskId>, Error> {
        Ok(self
            .edges
            .iter()
            .filter(|((_, to), k)| to == id && **k == DepKind::Blocks)
            .map(|((from, _), _)| from.clone())
            .collect())
    }
    fn blockers(&mut self, id: &TaskId) -> Result<Vec<TaskId>, Error> {
        Ok(self
            .edges
            .range((id.clone(), TaskId::derived("", ""))..)
            .take_while(|((from, _), _)| from == id)
            .filter(|(_, k)| **k == DepKind::Blocks)
            .map(|((_, to), _)| to.clone())
            .collect())
    }
    fn edge(&mut self, from: &TaskId, to: &TaskId) -> Result<Option<DepKind>, Error> {
        Ok(self.edges.get(&(from.clone(), to.clone())).copied())
    }
    fn insert_edge(&mut self, from: &TaskId, to: &TaskId, kind: DepKind) -> Result<(), Error> {
        self.edges.insert((from.clone(), to.clone()), kind);
        Ok(())
    }
    fn remove_edge(&mut self, from: &TaskId, to: &TaskId) -> Result<(), Error> {
        self.edges.remove(&(from.clone(), to.clone()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{State, TaskType};
    use proptest::prelude::*;

    fn id(i: usize) -> TaskId {
        TaskId::parse(&format!("t{i}")).unwrap()
    }

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
            kind: u8,
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
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (
                proptest::option::of(0..40usize),
                proptest::option::of(0..40usize),
                any::<bool>()
            )
                .prop_map(|(parent, dep, epic)| Op::Add { parent, dep, epic }),
            (0..40usize, 0..40usize, 0..3u8).prop_map(|(from, to, kind)| Op::Dep {
                from,
                to,
                kind
            }),
            (0..40usize, 0..40usize).prop_map(|(from, to)| Op::Undep { from, to }),
            (0..40usize, 0..7usize).prop_map(|(task, to)| Op::State { task, to }),
            (0..40usize, proptest::option::of(0..40usize))
                .prop_map(|(task, parent)| Op::Reparent { task, parent }),
        ]
    }

    fn check(g: &MemGraph) {
        let brute = g.brute_force();
        assert_eq!(
            &brute, &g.nodes,
            "maintained counts differ from recomputation"
        );
        assert_eq!(g.health(), Health::recompute(brute.values()));
        let ready: BTreeSet<TaskId> = brute
            .iter()
            .filter(|(_, n)| n.ready())
            .map(|(i, _)| i.clone())
            .collect();
        assert_eq!(ready, g.ready_set());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]
        #[test]
        fn incremental_equals_brute_force(ops in proptest::collection::vec(op(), 1..120)) {
            let mut g = MemGraph::default();
            let mut n = 0usize;
            for op in ops {
                let exists = |i: usize| i < n;
                // Refused operations are part of the sequence: the check is that
                // the counts stay right whatever was accepted.
                let _ = match op {
                    Op::Add { parent, dep, epic } => {
                        let kind = if epic { TaskType::Epic } else { TaskType::Task };
                        let parent = parent.filter(|p| exists(*p)).map(id);
                        let deps: Vec<_> = dep.filter(|d| exists(*d)).map(|d| (id(d), DepKind::Blocks)).into_iter().collect();
                        let r = g.add(&id(n), kind, parent.as_ref(), &deps);
                        prop_assert!(r.is_ok(), "{r:?}");
                        n += 1;
                        Ok(())
                    }
                    Op::Dep { from, to, kind } => g.apply(|g, d| graph::add_dep(g, &id(from), &id(to), DepKind::ALL[kind as usize], d)),
                    Op::Undep { from, to } => g.apply(|g, d| graph::remove_dep(g, &id(from), &id(to), d).map(|_| ())),
                    Op::State { task, to } => g.apply(|g, d| graph::set_state(g, &id(task), State::ALL[to], d).map(|_| ())),
                    Op::Reparent { task, parent } => g.apply(|g, d| graph::set_parent(g, &id(task), parent.map(id).as_ref(), d)),
                };
                check(&g);
                // Invariant: blocks edges never form a cycle.
                let ids: Vec<TaskId> = g.nodes.keys().cloned().collect();
                let idx: BTreeMap<&TaskId, usize> = ids.iter().enumerate().map(|(i, t)| (t, i)).collect();
                let e: Vec<_> = g.edges.iter().filter(|(_, k)| **k == DepKind::Blocks).map(|((a, b), _)| (idx[a], idx[b])).collect();
                prop_assert!(graph::find_cycles(ids.len(), &e, 1).is_empty());
            }
        }
    }

    #[test]
    fn cycle_error_lists_the_cycle() {
        let mut g = MemGraph::default();
        for i in 0..3 {
            g.add(&id(i), TaskType::Task, None, &[]).unwrap();
        }
        g.apply(|g, d| graph::add_dep(g, &id(0), &id(1), DepKind::Blocks, d))
            .unwrap();
        g.apply(|g, d| graph::add_dep(g, &id(1), &id(2), DepKind::Blocks, d))
            .unwrap();
        let err = g
            .apply(|g, d| graph::add_dep(g, &id(2), &id(0), DepKind::Blocks, d))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "dependency t2 -> t0 would create a cycle: t2 -> t0 -> t1 -> t2"
        );
        // related edges may loop: they do not gate readiness.
        g.apply(|g, d| graph::add_dep(g, &id(2), &id(0), DepKind::Related, d))
            .unwrap();
    }

    #[test]
    fn blocked_epic_blocks_its_subtree_and_deferring_holds_it() {
        let mut g = MemGraph::default();
        g.add(&id(0), TaskType::Epic, None, &[]).unwrap();
        g.add(&id(1), TaskType::Task, Some(&id(0)), &[]).unwrap();
        g.add(&id(2), TaskType::Task, Some(&id(1)), &[]).unwrap();
        g.add(&id(3), TaskType::Task, None, &[]).unwrap();
        assert_eq!(g.ready_set(), [id(1), id(2), id(3)].into());
        g.apply(|g, d| graph::add_dep(g, &id(0), &id(3), DepKind::Blocks, d))
            .unwrap();
        assert_eq!(g.ready_set(), [id(3)].into());
        g.apply(|g, d| graph::set_state(g, &id(3), State::Done, d))
            .unwrap();
        assert_eq!(g.ready_set(), [id(1), id(2)].into());
        g.apply(|g, d| graph::set_state(g, &id(1), State::Deferred, d))
            .unwrap();
        assert_eq!(g.ready_set(), BTreeSet::new());
        assert_eq!(g.health().blocked, 1);
    }

    #[test]
    fn million_deep_chain_reparent_and_derive_without_recursion() {
        let n = 1_000_000;
        let kinds = vec![(TaskType::Task, State::Open); n];
        let mut parent: Vec<Option<usize>> = (0..n).map(|i| i.checked_sub(1)).collect();
        parent[0] = None;
        let mut blocks: Vec<(usize, usize)> = (1..n).map(|i| (i, i - 1)).collect();
        let nodes = graph::derive_all(&kinds, &parent, &blocks);
        // Task 0 has no blocker; every later task holds the ones under it.
        assert_eq!(nodes[n - 1].held_by as usize, n - 2);
        assert!(graph::find_cycles(n, &blocks, 1).is_empty());
        blocks.push((0, n - 1));
        let cycles = graph::find_cycles(n, &blocks, 1);
        assert_eq!(cycles[0].len(), n);
    }

    #[test]
    fn reparent_into_own_subtree_is_rejected() {
        let mut g = MemGraph::default();
        g.add(&id(0), TaskType::Epic, None, &[]).unwrap();
        g.add(&id(1), TaskType::Task, Some(&id(0)), &[]).unwrap();
        let err = g
            .apply(|g, d| graph::set_parent(g, &id(0), Some(&id(1)), d))
            .unwrap_err();
        assert!(matches!(err, Error::ParentCycle { .. }), "{err}");
    }
}
