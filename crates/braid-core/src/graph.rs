//! The work graph's write-path algorithms: readiness and health maintained
//! incrementally, cycle rejection, hierarchy moves. They run against any
//! storage through [`GraphTx`]; the store supplies the rows, this module
//! decides what changes. Every walk uses an explicit queue or stack, never
//! recursion, so a 1,000,000-deep chain works.
//!
//! Readiness: a task is *ready* when it is not an epic, its state is `open`,
//! it has no unfinished `blocks` dependency (`blockers == 0`) and no ancestor
//! *holds* it (`held_by == 0`). A task holds its subtree while it has an
//! unfinished blocker or is deferred. `blockers` and `held_by` are maintained
//! counts, so readiness is an indexed column, never a query over the graph.

use std::collections::{HashMap, HashSet, VecDeque};

use crate::error::{Error, Result};
use crate::health::{self, HealthDelta};
use crate::id::TaskId;
use crate::model::{DepKind, TaskType};
use crate::state::State;

/// What the readiness algorithm knows of one task.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Node {
    pub kind: TaskType,
    pub state: State,
    /// Unfinished `blocks` dependencies.
    pub blockers: u32,
    /// Strict ancestors that hold their subtree.
    pub held_by: u32,
}

impl Node {
    pub fn new(kind: TaskType, state: State) -> Node {
        Node {
            kind,
            state,
            blockers: 0,
            held_by: 0,
        }
    }

    /// While true, every task under this one is not ready.
    pub fn holds(&self) -> bool {
        self.blockers > 0 || self.state == State::Deferred
    }

    pub fn ready(&self) -> bool {
        self.kind != TaskType::Epic
            && self.state == State::Open
            && self.blockers == 0
            && self.held_by == 0
    }

    /// Open work that cannot start because of a dependency or an ancestor.
    pub fn blocked(&self) -> bool {
        self.kind != TaskType::Epic
            && self.state == State::Open
            && (self.blockers > 0 || self.held_by > 0)
    }

    /// The health counters this node contributes to.
    pub fn counter_keys(&self) -> [Option<&'static str>; 5] {
        [
            Some(health::TOTAL),
            Some(health::state_key(self.state)),
            (self.kind == TaskType::Epic).then_some(health::EPICS),
            self.ready().then_some(health::READY),
            self.blocked().then_some(health::BLOCKED),
        ]
    }
}

/// Storage access the algorithms need, inside one transaction. Implemented by
/// each store backend and by [`crate::mem::MemGraph`] for tests.
pub trait GraphTx {
    type Error: From<Error>;

    fn node(&mut self, id: &TaskId) -> Result<Option<Node>, Self::Error>;
    /// Persists a node's state and maintained counts (and its readiness).
    fn put_node(&mut self, id: &TaskId, node: &Node) -> Result<(), Self::Error>;
    fn parent(&mut self, id: &TaskId) -> Result<Option<TaskId>, Self::Error>;
    fn set_parent(&mut self, id: &TaskId, parent: Option<&TaskId>) -> Result<(), Self::Error>;
    fn children(&mut self, id: &TaskId) -> Result<Vec<TaskId>, Self::Error>;
    /// Tasks that depend on `id` through a `blocks` edge.
    fn dependents(&mut self, id: &TaskId) -> Result<Vec<TaskId>, Self::Error>;
    /// Tasks `id` depends on through a `blocks` edge.
    fn blockers(&mut self, id: &TaskId) -> Result<Vec<TaskId>, Self::Error>;
    fn edge(&mut self, from: &TaskId, to: &TaskId) -> Result<Option<DepKind>, Self::Error>;
    fn insert_edge(&mut self, from: &TaskId, to: &TaskId, kind: DepKind)
    -> Result<(), Self::Error>;
    fn remove_edge(&mut self, from: &TaskId, to: &TaskId) -> Result<(), Self::Error>;
}

fn must<T: GraphTx>(tx: &mut T, id: &TaskId) -> Result<Node, T::Error> {
    tx.node(id)?
        .ok_or_else(|| Error::NotFound(id.clone()).into())
}

/// Writes `new` over `old` for `id`, records the health change and, when the
/// task starts or stops holding its subtree, updates every descendant.
fn replace<T: GraphTx>(
    tx: &mut T,
    id: &TaskId,
    old: Node,
    new: Node,
    delta: &mut HealthDelta,
) -> Result<(), T::Error> {
    if old == new {
        return Ok(());
    }
    tx.put_node(id, &new)?;
    delta.sub(&old);
    delta.add(&new);
    if old.holds() != new.holds() {
        let step: i64 = if new.holds() { 1 } else { -1 };
        shift_held_by(tx, id, step, false, delta)?;
    }
    Ok(())
}

/// Adds `step` to `held_by` of every strict descendant of `root` (and of
/// `root` itself when `include_root`). Breadth-first with a queue.
fn shift_held_by<T: GraphTx>(
    tx: &mut T,
    root: &TaskId,
    step: i64,
    include_root: bool,
    delta: &mut HealthDelta,
) -> Result<(), T::Error> {
    if step == 0 {
        return Ok(());
    }
    let mut queue: VecDeque<TaskId> = VecDeque::new();
    if include_root {
        queue.push_back(root.clone());
    } else {
        queue.extend(tx.children(root)?);
    }
    while let Some(id) = queue.pop_front() {
        let old = must(tx, &id)?;
        let mut new = old;
        new.held_by = (old.held_by as i64 + step).max(0) as u32;
        tx.put_node(&id, &new)?;
        delta.sub(&old);
        delta.add(&new);
        queue.extend(tx.children(&id)?);
    }
    Ok(())
}

/// How many holders a task placed under `parent` has above it.
fn chain_holds<T: GraphTx>(tx: &mut T, parent: Option<&TaskId>) -> Result<u32, T::Error> {
    match parent {
        None => Ok(0),
        Some(p) => {
            let n = must(tx, p)?;
            Ok(n.held_by + n.holds() as u32)
        }
    }
}

/// Completes the creation of a task whose row the store has just inserted
/// with `blockers = held_by = 0` (not yet counted in health): checks the
/// parent and dependencies, inserts the edges and computes its readiness.
pub fn attach_new<T: GraphTx>(
    tx: &mut T,
    id: &TaskId,
    parent: Option<&TaskId>,
    deps: &[(TaskId, DepKind)],
    delta: &mut HealthDelta,
) -> Result<Node, T::Error> {
    let mut node = must(tx, id)?;
    if let Some(p) = parent {
        if p == id {
            return Err(Error::ParentCycle {
                id: id.clone(),
                parent: p.clone(),
            }
            .into());
        }
        node.held_by = chain_holds(tx, Some(p))?;
    }
    let mut seen = HashSet::new();
    for (to, kind) in deps {
        if to == id {
            return Err(Error::SelfDependency { id: id.clone() }.into());
        }
        let target = must(tx, to)?;
        if !seen.insert(to.clone()) {
            return Err(Error::DuplicateDependency {
                from: id.clone(),
                to: to.clone(),
                kind: *kind,
            }
            .into());
        }
        // A new task has no dependents, so no edge of it can close a cycle.
        tx.insert_edge(id, to, *kind)?;
        if *kind == DepKind::Blocks && !target.state.is_finished() {
            node.blockers += 1;
        }
    }
    tx.put_node(id, &node)?;
    delta.add(&node);
    Ok(node)
}

/// Moves a task to another state, checking the state machine, and updates
/// the readiness of its dependents and descendants.
pub fn set_state<T: GraphTx>(
    tx: &mut T,
    id: &TaskId,
    to: State,
    delta: &mut HealthDelta,
) -> Result<State, T::Error> {
    let old = must(tx, id)?;
    old.state.check_transition(id, to)?;
    let mut new = old;
    new.state = to;
    replace(tx, id, old, new, delta)?;
    if old.state.is_finished() != to.is_finished() {
        let step: i64 = if to.is_finished() { -1 } else { 1 };
        for dep in tx.dependents(id)? {
            let d_old = must(tx, &dep)?;
            let mut d_new = d_old;
            d_new.blockers = (d_old.blockers as i64 + step).max(0) as u32;
            replace(tx, &dep, d_old, d_new, delta)?;
        }
    }
    Ok(old.state)
}

/// Records that `from` depends on `to`. A `blocks` edge that would close a
/// cycle is rejected with the cycle spelled out.
pub fn add_dep<T: GraphTx>(
    tx: &mut T,
    from: &TaskId,
    to: &TaskId,
    kind: DepKind,
    delta: &mut HealthDelta,
) -> Result<(), T::Error> {
    if from == to {
        return Err(Error::SelfDependency { id: from.clone() }.into());
    }
    let f_old = must(tx, from)?;
    let target = must(tx, to)?;
    if let Some(existing) = tx.edge(from, to)? {
        return Err(Error::DuplicateDependency {
            from: from.clone(),
            to: to.clone(),
            kind: existing,
        }
        .into());
    }
    if kind == DepKind::Blocks
        && let Some(path) = blocks_path(tx, to, from)?
    {
        // path runs to -> ... -> from; the new edge closes it.
        let mut cycle = vec![from.clone()];
        cycle.extend(path.into_iter().take_while(|id| id != from));
        return Err(Error::Cycle {
            from: from.clone(),
            to: to.clone(),
            cycle,
        }
        .into());
    }
    tx.insert_edge(from, to, kind)?;
    if kind == DepKind::Blocks && !target.state.is_finished() {
        let mut f_new = f_old;
        f_new.blockers += 1;
        replace(tx, from, f_old, f_new, delta)?;
    }
    Ok(())
}

/// Removes the dependency of `from` on `to`, whatever its kind.
pub fn remove_dep<T: GraphTx>(
    tx: &mut T,
    from: &TaskId,
    to: &TaskId,
    delta: &mut HealthDelta,
) -> Result<DepKind, T::Error> {
    let f_old = must(tx, from)?;
    let target = must(tx, to)?;
    let Some(kind) = tx.edge(from, to)? else {
        return Err(Error::NoSuchDependency {
            from: from.clone(),
            to: to.clone(),
        }
        .into());
    };
    tx.remove_edge(from, to)?;
    if kind == DepKind::Blocks && !target.state.is_finished() {
        let mut f_new = f_old;
        f_new.blockers = f_new.blockers.saturating_sub(1);
        replace(tx, from, f_old, f_new, delta)?;
    }
    Ok(kind)
}

/// Moves `id` (and its subtree) under `parent`, or to the top level.
pub fn set_parent<T: GraphTx>(
    tx: &mut T,
    id: &TaskId,
    parent: Option<&TaskId>,
    delta: &mut HealthDelta,
) -> Result<(), T::Error> {
    must(tx, id)?;
    let old_parent = tx.parent(id)?;
    if old_parent.as_ref() == parent {
        return Ok(());
    }
    if let Some(p) = parent {
        must(tx, p)?;
        // Walk up from the new parent: meeting `id` means a loop.
        let mut cur = Some(p.clone());
        while let Some(c) = cur {
            if &c == id {
                return Err(Error::ParentCycle {
                    id: id.clone(),
                    parent: p.clone(),
                }
                .into());
            }
            cur = tx.parent(&c)?;
        }
    }
    let before = chain_holds(tx, old_parent.as_ref())? as i64;
    let after = chain_holds(tx, parent)? as i64;
    tx.set_parent(id, parent)?;
    shift_held_by(tx, id, after - before, true, delta)
}

/// A path of `blocks` edges from `start` to `goal` (both included), if any.
/// Breadth-first, so the reported cycle is a shortest one.
pub fn blocks_path<T: GraphTx>(
    tx: &mut T,
    start: &TaskId,
    goal: &TaskId,
) -> Result<Option<Vec<TaskId>>, T::Error> {
    let mut came_from: HashMap<TaskId, TaskId> = HashMap::new();
    let mut queue = VecDeque::from([start.clone()]);
    let mut seen: HashSet<TaskId> = HashSet::from([start.clone()]);
    while let Some(cur) = queue.pop_front() {
        if &cur == goal {
            let mut path = vec![cur.clone()];
            let mut at = cur;
            while let Some(prev) = came_from.get(&at) {
                path.push(prev.clone());
                at = prev.clone();
            }
            path.reverse();
            return Ok(Some(path));
        }
        for next in tx.blockers(&cur)? {
            if seen.insert(next.clone()) {
                came_from.insert(next.clone(), cur.clone());
                queue.push_back(next);
            }
        }
    }
    Ok(None)
}

/// Finds cycles among `blocks` edges given as `(from, to)` index pairs over
/// `n` nodes (`from` depends on `to`). Returns up to `max` cycles, each as a
/// list of node indices. Iterative: peels off every node that cannot be on a
/// cycle (Kahn), then walks what remains.
pub fn find_cycles(n: usize, edges: &[(usize, usize)], max: usize) -> Vec<Vec<usize>> {
    let mut out_deg = vec![0u32; n];
    let mut rev: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut fwd: Vec<Vec<usize>> = vec![Vec::new(); n];
    for &(a, b) in edges {
        out_deg[a] += 1;
        rev[b].push(a);
        fwd[a].push(b);
    }
    // Remove nodes with no remaining outgoing edge, repeatedly.
    let mut alive = vec![true; n];
    let mut stack: Vec<usize> = (0..n).filter(|&i| out_deg[i] == 0).collect();
    while let Some(v) = stack.pop() {
        alive[v] = false;
        for &u in &rev[v] {
            out_deg[u] -= 1;
            if out_deg[u] == 0 {
                stack.push(u);
            }
        }
    }
    // Every live node has a live successor: walking forward must loop.
    let mut cycles = Vec::new();
    let mut visited = vec![false; n];
    for start in 0..n {
        if cycles.len() >= max {
            break;
        }
        if !alive[start] || visited[start] {
            continue;
        }
        let mut pos: HashMap<usize, usize> = HashMap::new();
        let mut walk = Vec::new();
        let mut cur = start;
        loop {
            if let Some(&i) = pos.get(&cur) {
                cycles.push(walk[i..].to_vec());
                break;
            }
            if visited[cur] {
                break; // joins a walk already reported
            }
            visited[cur] = true;
            pos.insert(cur, walk.len());
            walk.push(cur);
            cur = *fwd[cur]
                .iter()
                .find(|&&nx| alive[nx])
                .expect("a live node keeps a live successor");
        }
    }
    cycles
}

/// Brute-force derivation of every node's maintained counts from scratch:
/// the reference the incremental algorithms are tested against, and the bulk
/// path for imports. `parent[i]` and `blocks` use node indices.
pub fn derive_all(
    kinds_states: &[(TaskType, State)],
    parent: &[Option<usize>],
    blocks: &[(usize, usize)],
) -> Vec<Node> {
    let n = kinds_states.len();
    let mut nodes: Vec<Node> = kinds_states.iter().map(|&(k, s)| Node::new(k, s)).collect();
    for &(a, b) in blocks {
        if !kinds_states[b].1.is_finished() {
            nodes[a].blockers += 1;
        }
    }
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut roots = Vec::new();
    for (i, p) in parent.iter().enumerate() {
        match p {
            Some(p) => children[*p].push(i),
            None => roots.push(i),
        }
    }
    let mut queue: VecDeque<usize> = roots.into();
    while let Some(v) = queue.pop_front() {
        let pass = nodes[v].held_by + nodes[v].holds() as u32;
        for &c in &children[v] {
            nodes[c].held_by = pass;
            queue.push_back(c);
        }
    }
    nodes
}

/// Lists the blockers that keep a task from being ready, for `show` and the
/// board: unfinished `blocks` dependencies and the nearest holding ancestor.
pub fn why_blocked<T: GraphTx>(tx: &mut T, id: &TaskId) -> Result<Vec<String>, T::Error> {
    let node = must(tx, id)?;
    let mut why = Vec::new();
    if node.blockers > 0 {
        for b in tx.blockers(id)? {
            let bn = must(tx, &b)?;
            if !bn.state.is_finished() {
                why.push(format!("waits on {b} ({})", bn.state));
            }
        }
    }
    if node.held_by > 0 {
        let mut cur = tx.parent(id)?;
        while let Some(p) = cur {
            let pn = must(tx, &p)?;
            if pn.holds() {
                let reason = if pn.state == State::Deferred {
                    "is deferred"
                } else {
                    "is blocked"
                };
                why.push(format!("ancestor {p} {reason}"));
                break;
            }
            cur = tx.parent(&p)?;
        }
    }
    Ok(why)
}
