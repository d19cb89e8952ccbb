//! Health counters: counts by state, ready and blocked, maintained by deltas
//! on every change rather than by scanning tasks.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::graph::Node;
use crate::state::State;

/// Names of the maintained counters, as the store keeps them.
pub const TOTAL: &str = "total";
pub const EPICS: &str = "epics";
pub const READY: &str = "ready";
pub const BLOCKED: &str = "blocked";

pub fn state_key(s: State) -> &'static str {
    match s {
        State::Open => "state.open",
        State::InProgress => "state.in_progress",
        State::Review => "state.review",
        State::Done => "state.done",
        State::Failed => "state.failed",
        State::Cancelled => "state.cancelled",
        State::Deferred => "state.deferred",
    }
}

/// Pending counter changes of one transaction.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HealthDelta(pub BTreeMap<&'static str, i64>);

impl HealthDelta {
    pub fn add(&mut self, node: &Node) {
        self.apply(node, 1);
    }

    pub fn sub(&mut self, node: &Node) {
        self.apply(node, -1);
    }

    fn apply(&mut self, node: &Node, sign: i64) {
        for key in node.counter_keys().into_iter().flatten() {
            *self.0.entry(key).or_insert(0) += sign;
        }
    }

    /// The non-zero changes, ready to persist.
    pub fn changes(&self) -> impl Iterator<Item = (&'static str, i64)> + '_ {
        self.0
            .iter()
            .filter(|(_, v)| **v != 0)
            .map(|(k, v)| (*k, *v))
    }

    pub fn is_empty(&self) -> bool {
        self.changes().next().is_none()
    }
}

/// The project's health: what `braid health` reports.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Health {
    pub total: u64,
    pub epics: u64,
    pub ready: u64,
    pub blocked: u64,
    pub by_state: BTreeMap<State, u64>,
}

impl Health {
    /// Builds the report from stored counter values.
    pub fn from_counters<'a>(counters: impl IntoIterator<Item = (&'a str, i64)>) -> Health {
        let mut h = Health::default();
        for s in State::ALL {
            h.by_state.insert(s, 0);
        }
        for (k, v) in counters {
            let v = v.max(0) as u64;
            match k {
                TOTAL => h.total = v,
                EPICS => h.epics = v,
                READY => h.ready = v,
                BLOCKED => h.blocked = v,
                other => {
                    if let Some(s) = State::ALL.into_iter().find(|s| state_key(*s) == other) {
                        h.by_state.insert(s, v);
                    }
                }
            }
        }
        h
    }

    /// Brute-force recomputation, for tests and `--verify`.
    pub fn recompute<'a>(nodes: impl IntoIterator<Item = &'a Node>) -> Health {
        let mut d = HealthDelta::default();
        for n in nodes {
            d.add(n);
        }
        Health::from_counters(d.0.iter().map(|(k, v)| (*k, *v)))
    }
}
