//! Where a task's branch starts. From the target when every dependency's
//! work is on it; otherwise from the target with the branches of its
//! finished dependencies that have not landed merged in — made from
//! objects alone, like a merge candidate, so nothing is checked out — so a
//! dependent sees the work it depends on. Two such branches that conflict
//! leave the task waiting (it would start on a wrong base).

use std::path::Path;

use braid_core::{DepKind, TaskId};
use braid_store::Store;

/// A task's starting point.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Base {
    /// The commit its branch starts at.
    pub commit: String,
    /// The target it was made from (`main`, or `HEAD` without `[merge]`).
    pub target: String,
    /// The dependencies whose unlanded branches were merged in, in order.
    pub stacked: Vec<TaskId>,
}

/// Why no base could be made.
#[derive(Debug, thiserror::Error)]
pub enum BaseError {
    /// A dependency's branch conflicts with the target or with the branches
    /// merged before it: the task waits until they land.
    #[error(
        "its dependencies' work conflicts: {dep}'s branch braid/{dep} does not merge onto {onto} ({}); it waits until they land",
        files.join(", ")
    )]
    Conflict {
        dep: TaskId,
        onto: String,
        files: Vec<String>,
    },
    #[error(transparent)]
    Git(#[from] braid_git::Error),
    #[error(transparent)]
    Store(#[from] braid_store::Error),
}

/// The base for `id`'s new branch in `repo`, on `target`. With a
/// `remote`, a dependency's branch this clone does not have is taken from
/// the remote (fetched before).
pub fn base_for(
    store: &dyn Store,
    repo: &Path,
    target: &str,
    remote: Option<&str>,
    id: &TaskId,
) -> Result<Base, BaseError> {
    let task = store.task(id)?;
    let tip = braid_git::rev_parse(repo, target)?;
    let mut base = Base {
        commit: tip.clone(),
        target: target.to_owned(),
        stacked: Vec::new(),
    };
    let mut deps: Vec<TaskId> = task
        .deps
        .iter()
        .filter(|d| d.kind == DepKind::Blocks)
        .map(|d| d.id.clone())
        .collect();
    deps.sort();
    // Fixed, so the same merge gives the same commit (read only if one is
    // made).
    let mut date = None;
    for dep in deps {
        let Ok(t) = store.task(&dep) else { continue };
        if t.state != braid_core::State::Done {
            // Cancelled work is not built on; unfinished work blocks
            // dispatch before this is asked.
            continue;
        }
        let local = format!("refs/heads/braid/{dep}");
        let branch = match remote {
            Some(r) if !braid_git::rev_exists(repo, &local) => {
                crate::remote::tracking(r, &format!("braid/{dep}"))
            }
            _ => local,
        };
        if !braid_git::rev_exists(repo, &branch)
            || braid_git::is_ancestor(repo, &branch, &base.commit)?
        {
            // No branch of its own (done by hand), or its work is there.
            continue;
        }
        if braid_git::is_ancestor(repo, &base.commit, &branch)? {
            // Its branch already holds everything so far (it started from
            // the same target): start at its tip, no merge needed.
            base.commit = braid_git::rev_parse(repo, &branch)?;
            base.stacked.push(dep);
            continue;
        }
        let date = match &date {
            Some(d) => d,
            None => date.insert(braid_git::commit_date(repo, &tip)?),
        };
        let message = format!("braid: {id} starts from {dep}'s work");
        match braid_git::merge_onto(repo, &base.commit, &branch, &message, date)? {
            braid_git::Merged::Commit(c) => {
                base.commit = c;
                base.stacked.push(dep);
            }
            braid_git::Merged::Conflict(files) => {
                let onto = match base.stacked.last() {
                    None => target.to_owned(),
                    Some(last) => format!("{target} with {last}'s work"),
                };
                return Err(BaseError::Conflict { dep, onto, files });
            }
        }
    }
    Ok(base)
}

pub use braid_app::review::recorded;

/// `id`'s branch as `braid show` tells it: whether it is there, where it
/// started (from its attempts' `dispatched` events) and whether it landed
/// on `target`.
pub fn git_view(
    store: &dyn Store,
    repo: &Path,
    target: &str,
    id: &TaskId,
) -> Result<braid_app::wire::GitView, BaseError> {
    let branch = format!("braid/{id}");
    let exists = braid_git::rev_exists(repo, &format!("refs/heads/{branch}"));
    let landed = exists
        && braid_git::rev_exists(repo, target)
        && braid_git::is_ancestor(repo, &format!("refs/heads/{branch}"), target)?;
    let started = recorded(store, id)?;
    Ok(braid_app::wire::GitView {
        branch,
        exists,
        target: target.to_owned(),
        base: started
            .as_ref()
            .and_then(|b| b["commit"].as_str().map(str::to_owned)),
        stacked: started
            .as_ref()
            .and_then(|b| b["stacked"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|d| d.as_str().map(str::to_owned))
            .collect(),
        landed,
    })
}
