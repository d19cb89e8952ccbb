//! Bulk import on SQLite: the whole batch is validated first (ids, fields,
//! references, hierarchy loops, `blocks` cycles), readiness is derived for
//! the batch in memory, and rows, edges, counters and events are written in
//! one transaction with prepared statements. Nothing is written when a
//! problem is found, unless the caller asked to skip invalid entries.

use braid_core::graph::GraphTx;
use braid_core::{EventKind, HealthDelta, TaskId};
use rusqlite::{Connection, TransactionBehavior, params};
use serde_json::json;

use super::write::{SqlGraph, append_event, write_counters};
use crate::import_check::{Existing, derive, settle};
use crate::{ImportBatch, ImportOptions, ImportReport, Result};

pub(crate) fn import(
    conn: &mut Connection,
    actor: &str,
    batch: ImportBatch,
    opts: ImportOptions,
    now: i64,
) -> Result<ImportReport> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let db_empty: bool = !tx
        .prepare_cached("SELECT 1 FROM tasks LIMIT 1")?
        .exists([])?;
    let tasks = batch.tasks;
    let mut read = |id: &TaskId| SqlGraph { tx: &tx }.node(id);
    let mut existing = Existing::new(&mut read);
    let (live, skipped) = settle(&tasks, db_empty, opts.skip_invalid, &mut existing)?;
    let nodes = derive(&tasks, &live, &mut existing)?;
    drop(existing);

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
                crate::json::json_strings(&labels),
                t.assignee,
                t.acceptance,
                crate::json::json_strings(&t.gates),
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
