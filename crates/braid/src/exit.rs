//! Exit codes (DESIGN.md): 0 ok, 1 failure of the work, 2 usage or bad
//! input, 3 not found, 4 conflict. Errors are classified here, once; a
//! damaged database is recognised here too, for every command, and said in
//! words with the way back ([`explain`]).

use std::path::Path;

use braid_core::ErrorKind;

pub const OK: i32 = 0;
pub const FAILED: i32 = 1;
pub const USAGE: i32 = 2;
pub const NOT_FOUND: i32 = 3;
pub const CONFLICT: i32 = 4;

/// An error the command line raises itself, with its exit code.
#[derive(Debug)]
pub struct Failure {
    pub code: i32,
    pub message: String,
}

impl Failure {
    pub fn usage(message: impl Into<String>) -> Self {
        Failure {
            code: USAGE,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

fn kind_code(k: ErrorKind) -> i32 {
    match k {
        ErrorKind::Invalid => USAGE,
        ErrorKind::NotFound => NOT_FOUND,
        ErrorKind::Conflict => CONFLICT,
    }
}

/// SQLite's words for a damaged file, as they reach an error's text when
/// the error itself did not survive (a cause turned into a message).
const DAMAGE_WORDS: [&str; 2] = ["database disk image is malformed", "file is not a database"];

/// A damaged database, said in words: which file, and the way back.
#[derive(Debug)]
pub struct Damaged(pub String);

impl std::fmt::Display for Damaged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Damaged {}

/// When `err` says a SQLite file is damaged (`SQLITE_CORRUPT`,
/// `SQLITE_NOTADB`): SQLite's words for the damage. A damaged file gives
/// partial answers, so this is checked before anything else: no command
/// that met the damage ends as if it were a passing failure.
pub fn damage(err: &anyhow::Error) -> Option<String> {
    let words = |text: &str| {
        DAMAGE_WORDS
            .iter()
            .find(|w| text.contains(*w))
            .map(|w| (*w).to_owned())
    };
    for cause in err.chain() {
        // A file braid was handed and refused (a snapshot to restore that
        // is no database) is bad input, not damage braid met.
        if let Some(braid_store::Error::Invalid(_)) = cause.downcast_ref::<braid_store::Error>() {
            return None;
        }
        if braid_store::sqlite::is_damage(cause) {
            let under: Vec<String> = std::iter::successors(Some(cause), |e| e.source())
                .map(|e| e.to_string())
                .collect();
            return words(&under.join(": ")).or_else(|| under.last().cloned());
        }
    }
    words(&format!("{err:#}"))
}

/// An error that says the database is damaged becomes one that names the
/// database, the newest snapshot (its age) and the command that restores
/// it, or what to do without one. Any other error passes through. `db`:
/// the database as the command line named it (`--db`, `BRAID_DB`).
pub fn explain(err: anyhow::Error, db: Option<&Path>) -> anyhow::Error {
    if err.chain().any(|c| c.is::<Damaged>()) {
        return err;
    }
    let Some(cause) = damage(&err) else {
        return err;
    };
    match crate::project::locate(db) {
        Ok(project) if project.url.is_none() => anyhow::Error::new(Damaged(
            crate::snapshot::damage_advice(&project, db.is_some(), &cause),
        )),
        _ => err,
    }
}

/// The exit code and a stable error code name for an error.
pub fn classify(err: &anyhow::Error) -> (i32, &'static str) {
    if err.chain().any(|c| c.is::<Damaged>()) || damage(err).is_some() {
        return (USAGE, "damaged");
    }
    for cause in err.chain() {
        if let Some(f) = cause.downcast_ref::<Failure>() {
            return (f.code, code_name(f.code));
        }
        if let Some(e) = cause.downcast_ref::<braid_store::Error>() {
            if e.is_internal() {
                return (FAILED, "internal");
            }
            let c = kind_code(e.kind());
            return (c, code_name(c));
        }
        if let Some(e) = cause.downcast_ref::<braid_core::Error>() {
            let c = kind_code(e.kind());
            return (c, code_name(c));
        }
    }
    (FAILED, "failed")
}

pub fn code_name(code: i32) -> &'static str {
    match code {
        OK => "ok",
        USAGE => "invalid",
        NOT_FOUND => "not_found",
        CONFLICT => "conflict",
        _ => "failed",
    }
}
