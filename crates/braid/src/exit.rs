//! Exit codes (DESIGN.md): 0 ok, 1 failure of the work, 2 usage or bad
//! input, 3 not found, 4 conflict. Errors are classified here, once.

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

/// The exit code and a stable error code name for an error.
pub fn classify(err: &anyhow::Error) -> (i32, &'static str) {
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
