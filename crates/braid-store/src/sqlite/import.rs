//! Bulk import on SQLite: the whole batch is validated first (ids, fields,
//! references, hierarchy loops, `blocks` cycles), readiness is derived for
//! the batch in memory, and rows, edges, counters and events are written in
//! one transaction with prepared statements. Nothing is written when a
//! problem is found, unless the caller asked to skip invalid entries.

use std::collections::VecDeque;

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};

use braid_core::graph::{self, GraphTx, Node};
use braid_core::{DepKind, EventKind, HealthDelta, Task, TaskId};
use rusqlite::{Connection, Transaction, TransactionBehavior, params};
use serde_json::json;

use super::now_ms;
use super::write::{SqlGraph, append_event, write_counters};
use crate::{Error, ImportBatch, ImportOptions, ImportProblem, ImportReport, Result};

/// What the batch needs to know of a task already in the database.
#[derive(Clone, Copy)]
struct Existing {
    node: Node,
}

fn lookup(
    tx: &Transaction<'_>,
    cache: &mut HashMap<TaskId, Option<Existing>>,
    id: &TaskId,
) -> Result<Option<Existing>> {
    if let Some(e) = cache.get(id) {
        return Ok(*e);
    }
    // The same read the write path uses.
    let e = SqlGraph { tx }.node(id)?.map(|node| Existing { node });
    cache.insert(id.clone(), e);
    Ok(e)
}

/// Finds every problem of the live entries of the batch.
fn validate(
    tx: &Transaction<'_>,
    tasks: &[Task],
    live: &[bool],
    db_empty: bool,
    cache: &mut HashMap<TaskId, Option<Existing>>,
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
        if !db_empty && lookup(tx, cache, &t.id)?.is_some() {
            problems.push(problem(i, t, "id already exists in this project".into()));
        }
    }
    let known = |tx: &Transaction<'_>,
                 cache: &mut HashMap<TaskId, Option<Existing>>,
                 id: &TaskId|
     -> Result<bool> {
        Ok(index.contains_key(id) || (!db_empty && lookup(tx, cache, id)?.is_some()))
    };
    for (i, t) in tasks.iter().enumerate() {
        if !live[i] {
            continue;
        }
        if let Some(p) = &t.parent {
            if p == &t.id {
                problems.push(problem(i, t, "is its own parent".into()));
            } else if !known(tx, cache, p)? {
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
            } else if !known(tx, cache, &d.id)? {
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

pub(crate) fn import(
    conn: &mut Connection,
    actor: &str,
    batch: ImportBatch,
    opts: ImportOptions,
) -> Result<ImportReport> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let db_empty: bool = !tx
        .prepare_cached("SELECT 1 FROM tasks LIMIT 1")?
        .exists([])?;
    let tasks = batch.tasks;
    let mut live = vec![true; tasks.len()];
    let mut cache = HashMap::new();
    let mut skipped = Vec::new();
    loop {
        let problems = validate(&tx, &tasks, &live, db_empty, &mut cache)?;
        if problems.is_empty() {
            break;
        }
        if !opts.skip_invalid {
            return Err(Error::Import(problems));
        }
        for p in problems {
            if live[p.index] {
                live[p.index] = false;
                skipped.push(p);
            }
        }
    }
    skipped.sort_by_key(|p| p.index);

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
                None => lookup(&tx, &mut cache, &d.id)?
                    .map(|e| e.node.state.is_finished())
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
                let e = lookup(&tx, &mut cache, p)?.expect("validated above");
                nodes[i].held_by = e.node.held_by + e.node.holds() as u32;
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

    let now = now_ms();
    let mut delta = HealthDelta::default();
    let mut n_tasks = 0;
    let mut n_deps = 0;
    // Into an empty project, building secondary indexes once at the end
    // (a sort) is far cheaper than updating them row by row.
    let deferred_indexes: Vec<(String, String)> = if db_empty {
        let mut stmt = tx.prepare(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL \
             AND tbl_name IN ('tasks', 'deps', 'labels')",
        )?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        for (name, _) in &rows {
            tx.execute_batch(&format!("DROP INDEX \"{name}\""))?;
        }
        rows
    } else {
        Vec::new()
    };
    {
        let mut ins_task = tx.prepare_cached(
            "INSERT INTO tasks (id, title, description, type, priority, state, parent, labels, assignee, \
             acceptance, gates, agent, branch, created_at, updated_at, closed_at, close_reason, \
             blockers, held_by, ready, attempt) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, 0)",
        )?;
        let mut ins_dep =
            tx.prepare_cached("INSERT INTO deps (from_id, to_id, kind) VALUES (?1, ?2, ?3)")?;
        let mut ins_label =
            tx.prepare_cached("INSERT OR IGNORE INTO labels (label, task) VALUES (?1, ?2)")?;
        for (i, t) in tasks.iter().enumerate() {
            if !live[i] {
                continue;
            }
            let n = &nodes[i];
            let mut labels = t.labels.clone();
            labels.sort();
            labels.dedup();
            ins_task.execute(params![
                t.id.as_str(),
                t.title,
                t.description,
                t.kind.as_str(),
                t.priority,
                t.state.as_str(),
                t.parent.as_ref().map(|p| p.as_str()),
                serde_json::to_string(&labels).expect("strings serialize"),
                t.assignee,
                t.acceptance,
                serde_json::to_string(&t.gates).expect("strings serialize"),
                t.agent,
                t.branch,
                t.created_at,
                t.updated_at,
                t.closed_at,
                t.close_reason,
                n.blockers,
                n.held_by,
                n.ready() as i64,
            ])?;
            for l in &labels {
                ins_label.execute([l.as_str(), t.id.as_str()])?;
            }
            for d in &t.deps {
                ins_dep.execute([t.id.as_str(), d.id.as_str(), d.kind.as_str()])?;
                n_deps += 1;
            }
            delta.add(n);
            n_tasks += 1;
        }
    }
    for (_, sql) in &deferred_indexes {
        tx.execute_batch(sql)?;
    }
    write_counters(&tx, &delta)?;
    let mut n_events = 0;
    if !batch.events.is_empty() {
        // Keep the original numbering when the log is empty, so an export
        // round-trips exactly; otherwise append after what is there.
        let log_empty = !tx
            .prepare_cached("SELECT 1 FROM events LIMIT 1")?
            .exists([])?;
        let mut ins = tx.prepare_cached(
            "INSERT INTO events (seq, at, actor, kind, task, payload) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        for e in &batch.events {
            let seq = if log_empty { Some(e.seq) } else { None };
            ins.execute(params![
                seq,
                e.at,
                e.actor,
                e.kind.as_str(),
                e.task.as_ref().map(|t| t.as_str()),
                e.payload.to_string()
            ])?;
            n_events += 1;
        }
    }
    append_event(
        &tx,
        now,
        actor,
        EventKind::Imported,
        None,
        json!({"source": batch.source, "tasks": n_tasks, "deps": n_deps, "events": n_events, "skipped": skipped.len()}),
    )?;
    tx.commit()?;
    Ok(ImportReport {
        tasks: n_tasks,
        deps: n_deps,
        events: n_events,
        skipped,
    })
}
