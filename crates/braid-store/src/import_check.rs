//! Checking an import batch before anything is written, and deriving the
//! batch's readiness in memory: backend-neutral (each backend reads the
//! tasks already stored through its own `GraphTx`).

use std::collections::VecDeque;

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};

use braid_core::graph::{self, Node};
use braid_core::{DepKind, Task, TaskId};

use crate::{ImportProblem, Result};

/// What the batch knows of tasks already in the database: each is read
/// once (through the backend's `GraphTx::node`, the write path's read).
pub(crate) struct Existing<'a> {
    read: &'a mut dyn FnMut(&TaskId) -> Result<Option<Node>>,
    cache: HashMap<TaskId, Option<Node>>,
}

impl<'a> Existing<'a> {
    pub fn new(read: &'a mut dyn FnMut(&TaskId) -> Result<Option<Node>>) -> Self {
        Existing {
            read,
            cache: HashMap::new(),
        }
    }

    pub fn node(&mut self, id: &TaskId) -> Result<Option<Node>> {
        if let Some(e) = self.cache.get(id) {
            return Ok(*e);
        }
        let e = (self.read)(id)?;
        self.cache.insert(id.clone(), e);
        Ok(e)
    }
}

/// Finds every problem of the live entries of the batch.
pub(crate) fn validate(
    tasks: &[Task],
    live: &[bool],
    db_empty: bool,
    existing: &mut Existing<'_>,
) -> Result<Vec<ImportProblem>> {
    let mut problems = Vec::new();
    let problem = |i: usize, t: &Task, m: String| ImportProblem {
        index: i,
        id: Some(t.id.clone()),
        message: m,
    };
    let mut index: HashMap<&TaskId, usize> = HashMap::with_capacity(tasks.len());
    for (i, t) in tasks.iter().enumerate() {
        if !live[i] {
            continue;
        }
        if let Some(prev) = index.insert(&t.id, i) {
            problems.push(problem(
                i,
                t,
                format!("duplicate id (first at entry {})", prev + 1),
            ));
            continue;
        }
        if let Err(e) = braid_core::model::check_title(&t.title) {
            problems.push(problem(i, t, e.to_string()));
        }
        if let Err(e) = braid_core::model::check_priority(t.priority as i64) {
            problems.push(problem(i, t, e.to_string()));
        }
        for l in &t.labels {
            if let Err(e) = braid_core::model::check_label(l) {
                problems.push(problem(i, t, e.to_string()));
            }
        }
        if let Err(e) = t.check_text() {
            problems.push(problem(i, t, e.to_string()));
        }
        if !db_empty && existing.node(&t.id)?.is_some() {
            problems.push(problem(i, t, "id already exists in this project".into()));
        }
    }
    let known = |existing: &mut Existing<'_>, id: &TaskId| -> Result<bool> {
        Ok(index.contains_key(id) || (!db_empty && existing.node(id)?.is_some()))
    };
    for (i, t) in tasks.iter().enumerate() {
        if !live[i] {
            continue;
        }
        if let Some(p) = &t.parent {
            if p == &t.id {
                problems.push(problem(i, t, "is its own parent".into()));
            } else if !known(existing, p)? {
                problems.push(problem(
                    i,
                    t,
                    format!("parent {p} is neither in the file nor in the project"),
                ));
            }
        }
        let mut seen = HashSet::with_capacity(t.deps.len());
        for d in &t.deps {
            if d.id == t.id {
                problems.push(problem(i, t, "depends on itself".into()));
            } else if !seen.insert(&d.id) {
                problems.push(problem(i, t, format!("lists dependency {} twice", d.id)));
            } else if !known(existing, &d.id)? {
                problems.push(problem(
                    i,
                    t,
                    format!(
                        "depends on {}, which is neither in the file nor in the project",
                        d.id
                    ),
                ));
            }
        }
    }
    if !problems.is_empty() {
        return Ok(problems);
    }
    // Hierarchy loops among batch entries (existing tasks cannot point into
    // the batch, so a loop is all-new). Walk each parent chain once.
    let mut state = vec![0u8; tasks.len()]; // 0 unseen, 1 on current walk, 2 done
    for start in 0..tasks.len() {
        if !live[start] || state[start] != 0 {
            continue;
        }
        let mut walk = Vec::new();
        let mut cur = Some(start);
        while let Some(c) = cur {
            match state[c] {
                2 => break,
                1 => {
                    let pos = walk.iter().position(|&w| w == c).unwrap_or(0);
                    let ids: Vec<String> = walk[pos..]
                        .iter()
                        .map(|&w: &usize| tasks[w].id.to_string())
                        .collect();
                    for &w in &walk[pos..] {
                        problems.push(problem(
                            w,
                            &tasks[w],
                            format!("parent links form a loop: {}", ids.join(" -> ")),
                        ));
                    }
                    break;
                }
                _ => {}
            }
            state[c] = 1;
            walk.push(c);
            cur = tasks[c].parent.as_ref().and_then(|p| index.get(p).copied());
        }
        for w in walk {
            state[w] = 2;
        }
    }
    // `blocks` cycles among batch entries, for the same reason.
    let edges: Vec<(usize, usize)> = tasks
        .iter()
        .enumerate()
        .filter(|(i, _)| live[*i])
        .flat_map(|(i, t)| {
            let index = &index;
            t.deps
                .iter()
                .filter(|d| d.kind == DepKind::Blocks)
                .filter_map(move |d| index.get(&d.id).map(|&j| (i, j)))
        })
        .collect();
    let cycles = graph::find_cycles(tasks.len(), &edges, 100);
    for cycle in cycles {
        let ids: Vec<TaskId> = cycle.iter().map(|&c| tasks[c].id.clone()).collect();
        let text = braid_core::error::format_cycle(&ids);
        for &c in &cycle {
            problems.push(problem(
                c,
                &tasks[c],
                format!("blocks dependencies form a cycle: {text}"),
            ));
        }
    }
    Ok(problems)
}

/// Readiness of the live entries: blockers from dependency states, then
/// held_by top-down along parent links.
pub(crate) fn derive(
    tasks: &[Task],
    live: &[bool],
    existing: &mut Existing<'_>,
) -> Result<Vec<Node>> {
    // Derive readiness for the batch: blockers from dependency states, then
    // held_by top-down along parent links (a queue, not recursion).
    let index: HashMap<&TaskId, usize> = tasks
        .iter()
        .enumerate()
        .filter(|(i, _)| live[*i])
        .map(|(i, t)| (&t.id, i))
        .collect();
    let mut nodes: Vec<Node> = tasks.iter().map(|t| Node::new(t.kind, t.state)).collect();
    for (i, t) in tasks.iter().enumerate() {
        if !live[i] {
            continue;
        }
        for d in t.deps.iter().filter(|d| d.kind == DepKind::Blocks) {
            let finished = match index.get(&d.id) {
                Some(&j) => tasks[j].state.is_finished(),
                None => existing
                    .node(&d.id)?
                    .map(|e| e.state.is_finished())
                    .unwrap_or(true),
            };
            if !finished {
                nodes[i].blockers += 1;
            }
        }
    }
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); tasks.len()];
    let mut queue = VecDeque::new();
    for (i, t) in tasks.iter().enumerate() {
        if !live[i] {
            continue;
        }
        match t.parent.as_ref().map(|p| (p, index.get(p))) {
            Some((_, Some(&j))) => children[j].push(i),
            Some((p, None)) => {
                let e = existing.node(p)?.expect("validated above");
                nodes[i].held_by = e.held_by + e.holds() as u32;
                queue.push_back(i);
            }
            None => queue.push_back(i),
        }
    }
    while let Some(v) = queue.pop_front() {
        let pass = nodes[v].held_by + nodes[v].holds() as u32;
        for &c in &children[v] {
            nodes[c].held_by = pass;
            queue.push_back(c);
        }
    }

    Ok(nodes)
}

/// Validates until the live set has no problem: with `skip_invalid`, drops
/// each entry with a problem and checks again; without, fails on the first
/// round of problems. Returns the live flags and the skipped entries.
pub(crate) fn settle(
    tasks: &[Task],
    db_empty: bool,
    skip_invalid: bool,
    existing: &mut Existing<'_>,
) -> Result<(Vec<bool>, Vec<ImportProblem>)> {
    let mut live = vec![true; tasks.len()];
    let mut skipped = Vec::new();
    loop {
        let problems = validate(tasks, &live, db_empty, existing)?;
        if problems.is_empty() {
            break;
        }
        if !skip_invalid {
            return Err(crate::Error::Import(problems));
        }
        for p in problems {
            if live[p.index] {
                live[p.index] = false;
                skipped.push(p);
            }
        }
    }
    skipped.sort_by_key(|p| p.index);
    Ok((live, skipped))
}
