//! Where a project keeps things under `.braid/`, computed in one place: the
//! engine, the merge run, `braid gc`, `braid logs` and the server all ask
//! here rather than joining names themselves.

use std::path::{Path, PathBuf};

use braid_core::TaskId;

/// A project's places.
#[derive(Clone, Debug)]
pub struct Paths {
    /// The `.braid` directory.
    pub braid_dir: PathBuf,
    /// The database file (for a PostgreSQL project, its local stand-in).
    pub db: PathBuf,
    /// The git repository root, when the project is in one with a commit.
    pub repo: Option<PathBuf>,
}

impl Paths {
    /// Every task's logs: `.braid/logs`.
    pub fn logs_root(&self) -> PathBuf {
        self.braid_dir.join("logs")
    }

    /// One task's attempt logs: `.braid/logs/<id>`.
    pub fn logs(&self, id: &TaskId) -> PathBuf {
        self.logs_root().join(id.as_str())
    }

    /// The merge run's logs: `.braid/logs/merge`.
    pub fn merge_logs(&self) -> PathBuf {
        self.logs_root().join("merge")
    }

    /// Git worktrees of tasks: `.braid/worktrees`.
    pub fn worktrees(&self) -> PathBuf {
        self.braid_dir.join("worktrees")
    }

    /// Scratch directories of tasks outside git: `.braid/work`.
    pub fn scratch(&self) -> PathBuf {
        self.braid_dir.join("work")
    }

    /// Where a task's agent works: its git worktree, or a scratch directory
    /// outside git.
    pub fn workspace(&self, id: &TaskId) -> PathBuf {
        workspace_in(&self.braid_dir, self.repo.is_some(), id)
    }

    /// The merge run's journal, lock and candidate worktrees: `.braid/merge`.
    pub fn merge_dir(&self) -> PathBuf {
        self.braid_dir.join("merge")
    }

    /// Where each running run keeps what it has spent (for the board's
    /// `run_usd`): `.braid/runs`.
    pub fn runs(&self) -> PathBuf {
        self.braid_dir.join("runs")
    }

    /// Records of the process groups braid runs: `.braid/procs`.
    pub fn procs(&self) -> PathBuf {
        self.braid_dir.join("procs")
    }

    /// The task files: `.braid/tasks`.
    pub fn task_files(&self) -> PathBuf {
        self.braid_dir.join("tasks")
    }
}

/// A task's workspace under `braid_dir`: `worktrees/<id>` in git,
/// `work/<id>` outside.
pub fn workspace_in(braid_dir: &Path, in_git: bool, id: &TaskId) -> PathBuf {
    let sub = if in_git { "worktrees" } else { "work" };
    braid_dir.join(sub).join(id.as_str())
}
