//! What `braid run` checks before it claims anything: every agent's and
//! gate's program can be found, the merge target exists, workspaces can be
//! made. A failure is the user's config, not an agent's work: it names the
//! config file's line and the fix, and costs no attempt (nothing was
//! claimed).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::config::{Config, ConfigError};
use braid_app::Paths;

/// Checks `config` (read from `file`) against this machine and project.
pub fn check(config: &Config, file: &str, paths: &Paths) -> Result<(), ConfigError> {
    let err = |line: usize, message: String| ConfigError {
        file: file.to_owned(),
        line,
        message,
    };
    // A relative program path runs in the task's workspace, a checkout of
    // the repository: look for it in the repository itself.
    let base = paths.repo.clone().unwrap_or_else(|| {
        paths
            .braid_dir
            .parent()
            .unwrap_or(Path::new("."))
            .to_owned()
    });
    for a in &config.agents {
        if let Err(why) = program(&a.command[0], &base) {
            return Err(err(a.line, format!("agent {:?}: {why}", a.name)));
        }
    }
    for g in &config.gates {
        if let Err(why) = program(&g.command[0], &base) {
            return Err(err(g.line, format!("gate {:?}: {why}", g.name)));
        }
    }
    if let (Some(into), Some(repo)) = (&config.merge_into, &paths.repo)
        && !braid_git::rev_exists(repo, &format!("refs/heads/{into}"))
    {
        return Err(err(
            config.merge.into_line,
            format!(
                "[merge] into = {into:?}: there is no branch {into:?} in {}; name an existing branch (git branch --list)",
                repo.display()
            ),
        ));
    }
    if let Some(remote) = &config.remote {
        let Some(repo) = &paths.repo else {
            return Err(err(
                0,
                format!("[git] remote = {remote:?}: this project is not in a git repository"),
            ));
        };
        if !braid_git::remote_exists(repo, remote) {
            return Err(err(
                0,
                format!(
                    "[git] remote = {remote:?}: {} has no such remote; add it (git remote add {remote} URL) or remove [git] remote",
                    repo.display()
                ),
            ));
        }
        if config.merge_into.is_none() {
            return Err(err(
                0,
                "[git] remote needs a [merge] into = \"BRANCH\" target: work is shared by landing it there".into(),
            ));
        }
    }
    let workspaces = if paths.repo.is_some() {
        paths.worktrees()
    } else {
        paths.scratch()
    };
    std::fs::create_dir_all(&workspaces).map_err(|e| {
        err(
            0,
            format!(
                "cannot make the workspaces' folder {}: {e}",
                workspaces.display()
            ),
        )
    })?;
    Ok(())
}

/// Why a command's program cannot run.
#[derive(Debug, thiserror::Error)]
pub enum ProgramError {
    #[error(
        "the program {name:?} is not on PATH ({path}); install it, or write its full path in command"
    )]
    NotOnPath { name: String, path: String },
    #[error("the program {name:?} ({}) is not executable; chmod +x it", .full.display())]
    NotExecutable { name: String, full: PathBuf },
    #[error("the program {name:?} ({}) is not a file", .full.display())]
    NotAFile { name: String, full: PathBuf },
    #[error("the program {name:?} does not exist (looked for {}); fix the path in command", .full.display())]
    Missing { name: String, full: PathBuf },
}

/// Where a command's program is, or why it cannot run. A program written
/// with a placeholder (`{worktree}/x`) is known only at dispatch.
fn program(name: &str, base: &Path) -> Result<PathBuf, ProgramError> {
    if name.contains('{') {
        return Ok(PathBuf::from(name));
    }
    if name.contains('/') {
        let p = Path::new(name);
        let full = if p.is_absolute() {
            p.to_owned()
        } else {
            base.join(p)
        };
        let name = name.to_owned();
        return match std::fs::metadata(&full) {
            Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => Ok(full),
            Ok(m) if m.is_file() => Err(ProgramError::NotExecutable { name, full }),
            Ok(_) => Err(ProgramError::NotAFile { name, full }),
            Err(_) => Err(ProgramError::Missing { name, full }),
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .ok_or_else(|| ProgramError::NotOnPath {
            name: name.to_owned(),
            path: path.to_string_lossy().into_owned(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_are_found_on_path_or_by_path_and_a_missing_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        assert!(program("sh", dir.path()).is_ok());
        assert!(program("/bin/true", dir.path()).is_ok());
        let e = program("no-such-program-braid", dir.path())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("not on PATH") && e.contains("no-such-program-braid"),
            "{e}"
        );
        std::fs::write(dir.path().join("x.sh"), "#!/bin/sh\n").unwrap();
        let e = program("./x.sh", dir.path()).unwrap_err().to_string();
        assert!(e.contains("not executable"), "{e}");
        let mut perm = std::fs::metadata(dir.path().join("x.sh"))
            .unwrap()
            .permissions();
        perm.set_mode(0o755);
        std::fs::set_permissions(dir.path().join("x.sh"), perm).unwrap();
        assert!(program("./x.sh", dir.path()).is_ok());
        let e = program("./y.sh", dir.path()).unwrap_err().to_string();
        assert!(e.contains("does not exist"), "{e}");
        assert!(
            program("{worktree}/tool", dir.path()).is_ok(),
            "known at dispatch"
        );
    }
}
