//! Bulk import on PostgreSQL: the batch is checked and its readiness derived
//! as on SQLite (`import_check`), then rows, edges, labels and events are
//! written in one transaction, 5,000 rows per statement through `UNNEST` of
//! array parameters (no round trip per row).

use braid_core::graph::GraphTx;
use braid_core::{EventKind, HealthDelta, TaskId};
use serde_json::json;

use super::conn::Conn;
use super::write::{PgGraph, append_event, write_counters};
use crate::import_check::{Existing, derive, settle};
use crate::{ImportBatch, ImportOptions, ImportReport, Result};

const ROWS_PER_STATEMENT: usize = 5_000;

pub(crate) fn import(
    c: &Conn<'_>,
    actor: &str,
    batch: &ImportBatch,
    opts: ImportOptions,
    now: i64,
    write_id: &str,
) -> Result<ImportReport> {
    // A previous try of this call committed; its answer was lost.
    if let Some((record, _)) = c.recorded(write_id)? {
        let v: serde_json::Value = serde_json::from_str(&record)
            .map_err(|e| crate::Error::backend_from("an import's record does not parse", e))?;
        let n = |k: &str| v[k].as_u64().unwrap_or(0) as usize;
        return Ok(ImportReport {
            tasks: n("tasks"),
            deps: n("deps"),
            events: n("events"),
            skipped: v["skipped"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|p| crate::ImportProblem {
                            index: p["index"].as_u64().unwrap_or(0) as usize,
                            id: p["id"].as_str().and_then(|i| TaskId::parse(i).ok()),
                            message: p["message"].as_str().unwrap_or_default().to_owned(),
                        })
                        .collect()
                })
                .unwrap_or_default(),
        });
    }
    c.write_once(write_id, super::conn::Writers::Exclusive, |tx| {
        let db_empty = tx.query_opt("SELECT 1 FROM tasks LIMIT 1", &[])?.is_none();
        let tasks = &batch.tasks;
        let mut read = |id: &TaskId| PgGraph::new(tx).node(id);
        let mut existing = Existing::new(&mut read);
        let (live, skipped) = settle(tasks, db_empty, opts.skip_invalid, &mut existing)?;
        let nodes = derive(tasks, &live, &mut existing)?;
        drop(existing);

        let mut delta = HealthDelta::default();
        let live_idx: Vec<usize> = (0..tasks.len()).filter(|&i| live[i]).collect();
        let mut n_deps = 0;
        for chunk in live_idx.chunks(ROWS_PER_STATEMENT) {
            let mut cols: [Vec<Option<String>>; 13] = Default::default();
            let mut ints: [Vec<Option<i64>>; 8] = Default::default();
            let (mut dep_from, mut dep_to, mut dep_kind) = (Vec::new(), Vec::new(), Vec::new());
            let (mut label, mut label_task) = (Vec::new(), Vec::new());
            for &i in chunk {
                let t = &tasks[i];
                let n = &nodes[i];
                let mut labels = t.labels.clone();
                labels.sort();
                labels.dedup();
                let texts = [
                    Some(t.id.to_string()),
                    Some(t.title.clone()),
                    Some(t.description.clone()),
                    Some(t.kind.as_str().to_owned()),
                    Some(t.state.as_str().to_owned()),
                    t.parent.as_ref().map(|p| p.to_string()),
                    Some(crate::json::json_strings(&labels)),
                    t.assignee.clone(),
                    Some(t.acceptance.clone()),
                    Some(crate::json::json_strings(&t.gates)),
                    t.agent.clone(),
                    t.branch.clone(),
                    t.close_reason.clone(),
                ];
                for (col, v) in cols.iter_mut().zip(texts) {
                    col.push(v);
                }
                let numbers = [
                    Some(t.priority as i64),
                    Some(t.created_at),
                    Some(t.updated_at),
                    t.closed_at,
                    Some(n.blockers as i64),
                    Some(n.held_by as i64),
                    Some(n.ready() as i64),
                    Some(0),
                ];
                for (col, v) in ints.iter_mut().zip(numbers) {
                    col.push(v);
                }
                for l in labels {
                    label.push(l);
                    label_task.push(t.id.to_string());
                }
                for d in &t.deps {
                    dep_from.push(t.id.to_string());
                    dep_to.push(d.id.to_string());
                    dep_kind.push(d.kind.as_str().to_owned());
                    n_deps += 1;
                }
                delta.add(n);
            }
            tx.execute(
                "INSERT INTO tasks (id, title, description, type, state, parent, labels, assignee, \
                 acceptance, gates, agent, branch, close_reason, \
                 priority, created_at, updated_at, closed_at, blockers, held_by, ready, attempt) \
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
                 $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], \
                 $13::text[], $14::bigint[], $15::bigint[], $16::bigint[], $17::bigint[], $18::bigint[], \
                 $19::bigint[], $20::bigint[], $21::bigint[])",
                &[
                    &cols[0], &cols[1], &cols[2], &cols[3], &cols[4], &cols[5], &cols[6],
                    &cols[7], &cols[8], &cols[9], &cols[10], &cols[11], &cols[12], &ints[0],
                    &ints[1], &ints[2], &ints[3], &ints[4], &ints[5], &ints[6], &ints[7],
                ],
            )?;
            if !dep_from.is_empty() {
                tx.execute(
                    "INSERT INTO deps (from_id, to_id, kind) \
                     SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[])",
                    &[&dep_from, &dep_to, &dep_kind],
                )?;
            }
            if !label.is_empty() {
                tx.execute(
                    "INSERT INTO labels (label, task) SELECT * FROM UNNEST($1::text[], $2::text[]) \
                     ON CONFLICT DO NOTHING",
                    &[&label, &label_task],
                )?;
            }
        }
        write_counters(tx, &delta)?;
        let mut n_events = 0;
        if !batch.events.is_empty() {
            // Keep the original numbering when the log is empty, so an
            // export round-trips exactly; otherwise append after what is there.
            let log_empty = tx.query_opt("SELECT 1 FROM events LIMIT 1", &[])?.is_none();
            for chunk in batch.events.chunks(ROWS_PER_STATEMENT) {
                let seq: Vec<i64> = chunk.iter().map(|e| e.seq).collect();
                let at: Vec<i64> = chunk.iter().map(|e| e.at).collect();
                let actor: Vec<&str> = chunk.iter().map(|e| e.actor.as_str()).collect();
                let kind: Vec<&str> = chunk.iter().map(|e| e.kind.as_str()).collect();
                let task: Vec<Option<&str>> =
                    chunk.iter().map(|e| e.task.as_ref().map(|t| t.as_str())).collect();
                let payload: Vec<String> = chunk.iter().map(|e| e.payload.to_string()).collect();
                if log_empty {
                    tx.execute(
                        "INSERT INTO events (seq, at, actor, kind, task, payload) OVERRIDING SYSTEM VALUE \
                         SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[])",
                        &[&seq, &at, &actor, &kind, &task, &payload],
                    )?;
                } else {
                    tx.execute(
                        "INSERT INTO events (at, actor, kind, task, payload) \
                         SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[])",
                        &[&at, &actor, &kind, &task, &payload],
                    )?;
                }
                n_events += chunk.len();
            }
            if log_empty {
                // The identity continues after the imported numbers.
                tx.batch(
                    "SELECT setval(pg_get_serial_sequence('events', 'seq'), \
                     (SELECT COALESCE(max(seq), 0) + 1 FROM events), false)",
                )?;
            }
        }
        append_event(
            tx,
            now,
            actor,
            EventKind::Imported,
            None,
            json!({"source": batch.source, "tasks": live_idx.len(), "deps": n_deps, "events": n_events, "skipped": skipped.len()}),
        )?;
        let record = json!({
            "tasks": live_idx.len(), "deps": n_deps, "events": n_events,
            "skipped": skipped.iter().map(|p| json!({"index": p.index, "id": p.id, "message": p.message})).collect::<Vec<_>>(),
        });
        Ok((
            ImportReport {
                tasks: live_idx.len(),
                deps: n_deps,
                events: n_events,
                skipped,
            },
            record.to_string(),
        ))
    })
}
