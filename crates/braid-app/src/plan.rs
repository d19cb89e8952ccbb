//! The merge plan: which finished branches merge into the target, in which
//! order. Levels follow dependencies (a branch after the branches it depends
//! on); a conflict matrix comes from the files each branch changed, with
//! every pair that shares a file checked exactly by `git merge-tree`; inside
//! a level, batches hold branches no two of which conflict.

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use braid_core::{DepKind, State, TaskId, merge};
use braid_store::{ListFilter, Store};
use serde::{Deserialize, Serialize};

/// A branch to plan, with the names of the branches it must follow.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PlanInput {
    /// The branch name (`braid/<id>` for a task).
    pub name: String,
    /// The task whose work the branch holds, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// Branches that must merge before this one.
    #[serde(default)]
    pub deps: Vec<String>,
}

/// A plan file (`braid merge plan --plan FILE`): plain branches and their
/// dependencies. Schema: docs/merge-plan.schema.json.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanFile {
    #[serde(default)]
    pub into: Option<String>,
    pub branches: Vec<PlanInput>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct PlannedBranch {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    pub level: usize,
    pub deps: Vec<String>,
    /// Files changed since the merge-base with the target.
    pub files: Vec<String>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Conflict {
    pub a: String,
    pub b: String,
    /// The files that conflict when the two are merged.
    pub files: Vec<String>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Level {
    pub level: usize,
    /// Groups of mutually conflict-free branches, merged one group at a time.
    pub batches: Vec<Vec<String>>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Plan {
    pub into: String,
    /// The target's commit when the plan was made.
    pub target: String,
    pub branches: Vec<PlannedBranch>,
    pub conflicts: Vec<Conflict>,
    pub order: Vec<Level>,
    /// Pairs that touch a common file (each checked with merge-tree).
    pub pairs_checked: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("{0}")]
    Input(String),
    #[error(transparent)]
    Git(#[from] braid_git::Error),
}

/// Makes the plan. `jobs` merge-tree checks run at once.
pub fn plan(repo: &Path, into: &str, inputs: &[PlanInput], jobs: usize) -> Result<Plan, PlanError> {
    if !braid_git::rev_exists(repo, into) {
        return Err(PlanError::Input(format!(
            "the target branch {into:?} does not exist in {}",
            repo.display()
        )));
    }
    let target = braid_git::rev_parse(repo, into)?;
    let index: std::collections::HashMap<&str, usize> = inputs
        .iter()
        .enumerate()
        .map(|(i, b)| (b.name.as_str(), i))
        .collect();
    if index.len() != inputs.len() {
        return Err(PlanError::Input("a branch is named twice".into()));
    }
    let mut deps = Vec::with_capacity(inputs.len());
    for b in inputs {
        if !braid_git::rev_exists(repo, &b.name) {
            return Err(PlanError::Input(format!(
                "branch {:?} does not exist",
                b.name
            )));
        }
        let mut ds = Vec::new();
        for d in &b.deps {
            match index.get(d.as_str()) {
                Some(&i) => ds.push(i),
                None => {
                    return Err(PlanError::Input(format!(
                        "branch {:?} depends on {d:?}, which is not in the plan",
                        b.name
                    )));
                }
            }
        }
        deps.push(ds);
    }
    let levels = merge::levels(&deps).map_err(|merge::LevelCycle(c)| {
        PlanError::Input(format!(
            "the branches' dependencies form a cycle: {}",
            c.iter()
                .map(|&i| inputs[i].name.as_str())
                .collect::<Vec<_>>()
                .join(" -> ")
        ))
    })?;
    let files = inputs
        .iter()
        .map(|b| braid_git::changed_files(repo, into, &b.name))
        .collect::<Result<Vec<_>, _>>()?;
    let pairs = merge::overlapping_pairs(&files);
    let conflicts = check_pairs(repo, inputs, &pairs, jobs)?;
    let clash: std::collections::HashSet<(usize, usize)> =
        conflicts.iter().map(|(a, b, _)| (*a, *b)).collect();
    let conflicts_with = |a: usize, b: usize| clash.contains(&(a.min(b), a.max(b)));
    let mut level_of = vec![0; inputs.len()];
    let order = levels
        .iter()
        .enumerate()
        .map(|(l, members)| {
            for &m in members {
                level_of[m] = l;
            }
            Level {
                level: l,
                batches: merge::batches(members, conflicts_with)
                    .into_iter()
                    .map(|b| b.into_iter().map(|i| inputs[i].name.clone()).collect())
                    .collect(),
            }
        })
        .collect();
    Ok(Plan {
        into: into.to_owned(),
        target,
        branches: inputs
            .iter()
            .zip(files)
            .enumerate()
            .map(|(i, (b, f))| PlannedBranch {
                name: b.name.clone(),
                task: b.task.clone(),
                level: level_of[i],
                deps: b.deps.clone(),
                files: f,
            })
            .collect(),
        conflicts: conflicts
            .into_iter()
            .map(|(a, b, files)| Conflict {
                a: inputs[a].name.clone(),
                b: inputs[b].name.clone(),
                files,
            })
            .collect(),
        order,
        pairs_checked: pairs.len(),
    })
}

/// Checks each overlapping pair with merge-tree, `jobs` at a time.
fn check_pairs(
    repo: &Path,
    inputs: &[PlanInput],
    pairs: &[(usize, usize, Vec<String>)],
    jobs: usize,
) -> Result<Vec<(usize, usize, Vec<String>)>, PlanError> {
    let next = AtomicUsize::new(0);
    let found = Mutex::new(Vec::new());
    let failed = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..jobs.clamp(1, 16).min(pairs.len().max(1)) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((a, b, _)) = pairs.get(i) else {
                        return;
                    };
                    match braid_git::merge_conflicts(repo, &inputs[*a].name, &inputs[*b].name) {
                        Ok(files) if files.is_empty() => {}
                        Ok(files) => found
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push((*a, *b, files)),
                        Err(e) => {
                            *failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                            return;
                        }
                    }
                }
            });
        }
    });
    if let Some(e) = failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e.into());
    }
    let mut found = found.into_inner().unwrap_or_else(|p| p.into_inner());
    found.sort();
    Ok(found)
}

/// Which tasks a merge plan takes: every task in review (or those named),
/// and whether each must carry an approval of its branch as it stands.
#[derive(Clone, Copy, Debug, Default)]
pub struct Take<'a> {
    /// Only these tasks (empty: every task in review).
    pub only: &'a [TaskId],
    /// `[merge] require_approval`: a branch no person approved (as it
    /// stands now) is left out.
    pub require_approval: bool,
}

/// The branches of tasks in review, their dependencies among themselves,
/// and notes on those left out: waiting for a person, for an approval, for
/// unfinished work outside the plan, or without a branch. `follow` is
/// called with each branch before it is looked at (a remote's newer copy
/// replaces this clone's).
pub fn task_inputs<E>(
    store: &dyn Store,
    repo: &Path,
    take: Take<'_>,
    mut follow: impl FnMut(&str) -> Result<(), E>,
) -> Result<(Vec<PlanInput>, Vec<String>), E>
where
    E: From<braid_store::Error> + From<braid_git::Error>,
{
    let only = take.only;
    let tasks = if only.is_empty() {
        store.list(&ListFilter {
            states: vec![State::Review],
            limit: Some(100_000),
            ..ListFilter::default()
        })?
    } else {
        only.iter()
            .map(|id| store.task(id))
            .collect::<Result<Vec<_>, _>>()?
    };
    let mut notes = Vec::new();
    let mut candidates = Vec::new();
    for t in &tasks {
        let b = crate::review::branch_of(t);
        if only.is_empty() && t.labels.iter().any(|l| l == crate::ops::NEEDS_HUMAN) {
            // Handed to a person: left alone until the label goes.
            notes.push(format!(
                "{b} waits for a person (label needs-human); left out"
            ));
            continue;
        }
        if !only.is_empty() && t.state != State::Review {
            notes.push(format!(
                "{} is {}, not in review; planned anyway",
                t.id, t.state
            ));
        }
        follow(&b)?;
        if !braid_git::rev_exists(repo, &b) {
            notes.push(format!("{} has no branch {b}; left out", t.id));
            continue;
        }
        if take.require_approval {
            let head = braid_git::rev_parse(repo, &b)?;
            if let Some(why) = crate::review::unapproved(store, &t.id, &head)? {
                notes.push(format!("{b} {why}; left out"));
                continue;
            }
        }
        candidates.push((t, b));
    }
    let names: std::collections::HashMap<&TaskId, &str> = candidates
        .iter()
        .map(|(t, b)| (&t.id, b.as_str()))
        .collect();
    let mut inputs = Vec::new();
    for (t, b) in &candidates {
        let mut deps = Vec::new();
        let mut waits = Vec::new();
        for d in t.deps.iter().filter(|d| d.kind == DepKind::Blocks) {
            match names.get(&d.id) {
                Some(name) => deps.push((*name).to_owned()),
                None => {
                    let dep = store.task(&d.id)?;
                    if !dep.state.is_finished() {
                        waits.push(format!("{} ({})", d.id, dep.state));
                    }
                }
            }
        }
        if waits.is_empty() {
            inputs.push(PlanInput {
                name: b.clone(),
                task: Some(t.id.to_string()),
                deps,
            });
        } else {
            notes.push(format!("{b} waits for {}; left out", waits.join(", ")));
        }
    }
    // A branch whose dependency was left out waits too (repeat until stable).
    loop {
        let present: std::collections::HashSet<String> =
            inputs.iter().map(|i| i.name.clone()).collect();
        let before = inputs.len();
        inputs.retain(|i| {
            let ok = i.deps.iter().all(|d| present.contains(d));
            if !ok {
                notes.push(format!("{} waits for a branch that is left out", i.name));
            }
            ok
        });
        if inputs.len() == before {
            break;
        }
    }
    Ok((inputs, notes))
}
