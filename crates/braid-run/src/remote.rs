//! `[git] remote`: how braid shares work through a git remote. Task
//! branches are pushed after their gates pass; worktrees start from the
//! remote's target; the merge run fetches every `braid/*` branch and lands
//! by compare-and-swap on the remote (`--force-with-lease`). Credentials
//! are git's own. A command that fails for the network is tried again with
//! backoff; a push the remote refuses is never forced.

use std::path::Path;
use std::time::Duration;

use braid_git::{Pushed, Result};

/// Tries for the network, at most.
const TRIES: u32 = 4;
/// The first wait after a network failure (then doubled).
const FIRST_WAIT: Duration = Duration::from_millis(500);

/// Runs `f`, again after a network failure (0.5 s, 1 s, 2 s later).
pub fn retry<T>(what: &str, mut f: impl FnMut() -> Result<T>) -> Result<T> {
    let mut wait = FIRST_WAIT;
    let mut tries = 1;
    loop {
        match f() {
            Err(e) if braid_git::is_network(&e) && tries < TRIES => {
                tracing::warn!(what, tries, error = %e, "a git remote is out of reach; trying again");
                std::thread::sleep(wait);
                wait *= 2;
                tries += 1;
            }
            r => return r,
        }
    }
}

/// The remote-tracking ref of `branch`.
pub fn tracking(remote: &str, branch: &str) -> String {
    format!("refs/remotes/{remote}/{branch}")
}

/// Fetches the target and every task branch from `remote`.
pub fn fetch_work(repo: &Path, remote: &str, into: &str) -> Result<()> {
    let target = format!("+refs/heads/{into}:{}", tracking(remote, into));
    let tasks = format!("+refs/heads/braid/*:{}", tracking(remote, "braid/*"));
    retry("fetch", || {
        braid_git::fetch(repo, remote, &[&target, &tasks])
    })
}

/// Pushes a task's branch (a fast-forward only).
pub fn push_branch(repo: &Path, remote: &str, branch: &str) -> Result<Pushed> {
    let src = format!("refs/heads/{branch}");
    retry("push", || braid_git::push(repo, remote, &src, &src, None))
}

/// Brings the local `branch` up to its remote-tracking ref when that is
/// ahead (or the local one is missing); local work ahead of the remote is
/// kept. Answers whether it moved.
pub fn follow(repo: &Path, remote: &str, branch: &str) -> Result<bool> {
    let theirs = tracking(remote, branch);
    if !braid_git::rev_exists(repo, &theirs) {
        return Ok(false);
    }
    let theirs = braid_git::rev_parse(repo, &theirs)?;
    let local = format!("refs/heads/{branch}");
    if !braid_git::rev_exists(repo, &local) {
        braid_git::create_branch(repo, branch, &theirs)?;
        return Ok(true);
    }
    let ours = braid_git::rev_parse(repo, &local)?;
    if ours == theirs || !braid_git::is_ancestor(repo, &ours, &theirs)? {
        return Ok(false);
    }
    // A checked-out branch moves in its worktree (keeping local changes).
    let checkout = braid_git::worktrees(repo)?
        .into_iter()
        .find(|(_, b)| b.as_deref() == Some(branch));
    match checkout {
        Some((wt, _)) => braid_git::fast_forward_checkout(&wt, &theirs, &ours),
        None => braid_git::update_branch(repo, branch, &theirs, &ours),
    }
}
