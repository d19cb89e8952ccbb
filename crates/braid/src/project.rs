//! Finding the project: `--db PATH|URL`, else `BRAID_DB`, else the nearest
//! `.braid/` directory upward from the current one. A `postgres://` URL puts
//! the work graph on a PostgreSQL server; the local `.braid/` (config, logs,
//! worktrees) is still the nearest one upward.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::exit::Failure;

pub const DIR: &str = ".braid";
pub const DB_FILE: &str = "braid.db";

const CONFIG_TEMPLATE: &str = r#"# braid project configuration. Every key, with examples: `braid config`
# (or `braid help config`).

[run]
jobs = 4
max_attempts = 3

# An agent: Claude Code in print mode. kind = "claude" runs
#   claude -p --output-format stream-json --verbose --permission-mode acceptEdits -- {prompt}
# (acceptEdits lets it write files in its worktree without asking; a
# permission it is refused parks the task for you: `braid needs`).
# [[agent]]
# name = "claude"
# kind = "claude"
# max_concurrent = 2
# timeout = "30m"

# A gate every task must pass before its work can land.
# [[gate]]
# name = "test"
# command = ["cargo", "test"]
"#;

/// The `[merge]` table `braid init` writes in a git repository: finished
/// work lands on the branch that was checked out.
fn merge_table(branch: &str) -> String {
    format!(
        "\n# Work that passes its gates waits in review on its branch braid/<id>;\n\
         # `braid run --merge` (or `braid merge run`) lands it here, in dependency\n\
         # order. Remove this table to leave finished work on its branches.\n\
         [merge]\ninto = {}\n",
        // A JSON string is a TOML basic string for any name git allows
        // (git refuses control characters in ref names).
        serde_json::Value::from(branch)
    )
}

const GITIGNORE: &str = "# braid's local state: the database and its backups stay out of git.\n*.db\n*.db-*\n*.lock\nbackups/\nlogs/\ntelemetry/\nworktrees/\nwork/\nprocs/\nruns/\nreserve\n";

/// Where a project's files live.
#[derive(Clone, Debug)]
pub struct Project {
    /// The database file.
    pub db: PathBuf,
    /// The `.braid` directory (backups live under it).
    pub dir: PathBuf,
    /// The PostgreSQL server holding the work graph, instead of `db`.
    pub url: Option<String>,
}

impl Project {
    pub fn backups(&self) -> PathBuf {
        self.dir.join("backups")
    }
}

fn from_db_path(db: PathBuf) -> Project {
    let dir = db
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    Project { db, dir, url: None }
}

/// The project whose work graph lives on a PostgreSQL server: the local
/// `.braid/` is the nearest one upward, else one in the current directory.
fn on_server(url: &str) -> Result<Project> {
    let cwd = std::env::current_dir().context("reading the current directory")?;
    let dir = cwd
        .ancestors()
        .map(|d| d.join(DIR))
        .find(|d| d.is_dir())
        .unwrap_or_else(|| cwd.join(DIR));
    Ok(Project {
        db: dir.join(DB_FILE),
        dir,
        url: Some(url.to_owned()),
    })
}

impl Project {
    /// Opens the project's store.
    pub fn open(&self) -> Result<braid_store::AnyStore> {
        Ok(match &self.url {
            Some(url) => braid_store::AnyStore::Postgres(braid_store::PgStore::open(url)?),
            None => braid_store::AnyStore::Sqlite(braid_store::SqliteStore::open(&self.db)?),
        })
    }
}

/// Resolves the project for a command that needs an existing one.
pub fn locate(db: Option<&Path>) -> Result<Project> {
    if let Some(url) = db
        .and_then(|d| d.to_str())
        .filter(|d| braid_store::postgres::is_url(d))
    {
        return on_server(url);
    }
    if let Some(db) = db {
        let p = if db.is_dir() {
            db.join(DB_FILE)
        } else {
            db.to_owned()
        };
        if !p.exists() {
            return Err(Failure::usage(format!(
                "no braid database at {} (create one with `braid init`)",
                p.display()
            ))
            .into());
        }
        return Ok(from_db_path(p));
    }
    let cwd = std::env::current_dir().context("reading the current directory")?;
    let mut cur: Option<&Path> = Some(&cwd);
    while let Some(dir) = cur {
        let candidate = dir.join(DIR).join(DB_FILE);
        if candidate.exists() {
            return Ok(from_db_path(candidate));
        }
        cur = dir.parent();
    }
    Err(Failure::usage(format!(
        "no braid project in {} or above it: run `braid init` here, or pass --db PATH (or set BRAID_DB)",
        cwd.display()
    ))
    .into())
}

/// What `braid init` did.
pub struct Initialized {
    pub project: Project,
    pub created: bool,
    /// The branch finished work lands on, when a config was written with
    /// `[merge]` (a git repository with a branch checked out).
    pub merge_into: Option<String>,
}

/// Creates `.braid/` in `root` (or the database at `db`).
pub fn init(root: &Path, db: Option<&Path>) -> Result<Initialized> {
    let config = root.join(DIR).join("config.toml");
    let merge_into = (!config.exists())
        .then(|| braid_git::repo_root(root).and_then(|r| braid_git::current_branch(&r)))
        .flatten();
    let template = match &merge_into {
        Some(b) => format!("{CONFIG_TEMPLATE}{}", merge_table(b)),
        None => CONFIG_TEMPLATE.to_owned(),
    };
    if let Some(url) = db
        .and_then(|d| d.to_str())
        .filter(|d| braid_store::postgres::is_url(d))
    {
        // The server's schema is brought up to date on open; the local
        // folder holds the config, logs and worktrees.
        let dir = root.join(DIR);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        braid_store::PgStore::open(url)?;
        write_if_missing(&dir.join("config.toml"), &template)?;
        write_if_missing(&dir.join(".gitignore"), GITIGNORE)?;
        let project = Project {
            db: dir.join(DB_FILE),
            dir,
            url: Some(url.to_owned()),
        };
        return Ok(Initialized {
            project,
            created: true,
            merge_into,
        });
    }
    let project = match db {
        Some(db) => from_db_path(db.to_owned()),
        None => from_db_path(root.join(DIR).join(DB_FILE)),
    };
    let existed = project.db.exists();
    std::fs::create_dir_all(&project.dir)
        .with_context(|| format!("creating {}", project.dir.display()))?;
    braid_store::SqliteStore::create(&project.db)?;
    let wrote_config = db.is_none() && !project.dir.join("config.toml").exists();
    if db.is_none() {
        write_if_missing(&project.dir.join("config.toml"), &template)?;
        write_if_missing(&project.dir.join(".gitignore"), GITIGNORE)?;
    }
    Ok(Initialized {
        project,
        created: !existed,
        merge_into: merge_into.filter(|_| wrote_config),
    })
}

fn write_if_missing(path: &Path, content: &str) -> Result<()> {
    if !path.exists() {
        braid_store::fsx::write_atomic(path, content.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
