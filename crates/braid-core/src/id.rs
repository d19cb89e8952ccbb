//! Task ids: `br-` plus a few base36 characters, random so that several
//! machines and branches can create tasks without coordinating, and
//! lengthened by the store when a candidate collides.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub const PREFIX: &str = "br-";
/// Length of the random part of a fresh id; the store lengthens on collision.
pub const MIN_RANDOM_LEN: usize = 4;
const ALPHABET: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
const MAX_LEN: usize = 64;

#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TaskId(String);

impl TaskId {
    /// Accepts any id of 1–64 characters from `[A-Za-z0-9._-]`: braid's own
    /// ids look like `br-x3k9`, imported ones keep their source's ids.
    pub fn parse(s: &str) -> Result<Self> {
        if s.is_empty() || s.len() > MAX_LEN {
            return Err(Error::invalid(
                "id",
                format!("{s:?} must be 1 to {MAX_LEN} characters"),
            ));
        }
        if let Some(bad) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        {
            return Err(Error::invalid(
                "id",
                format!("{s:?} contains {bad:?}; ids use letters, digits, '-', '_' and '.'"),
            ));
        }
        Ok(TaskId(s.to_owned()))
    }

    /// Wraps a string already known to be a valid id (read back from a store
    /// that only ever stored parsed ids), skipping the character check.
    pub fn trusted(s: String) -> Self {
        debug_assert!(TaskId::parse(&s).is_ok(), "{s:?}");
        TaskId(s)
    }

    /// A fresh random id whose random part has `len` characters.
    pub fn random(len: usize) -> Self {
        let mut bytes = [0u8; MAX_LEN];
        let len = len.clamp(1, MAX_LEN - PREFIX.len());
        getrandom::fill(&mut bytes[..len]).expect("the OS random source is available");
        let mut s = String::with_capacity(PREFIX.len() + len);
        s.push_str(PREFIX);
        for b in &bytes[..len] {
            // 252 = 7 * 36: reject-free mapping would be biased; the bias of
            // a plain modulo over 256 values is irrelevant for ids.
            s.push(ALPHABET[(*b as usize) % 36] as char);
        }
        TaskId(s)
    }

    /// A deterministic id derived from a key (used for imports whose source
    /// has ids that are not valid braid ids, like task-master's numbers).
    pub fn derived(prefix: &str, key: &str) -> Self {
        TaskId(format!("{prefix}{key}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for TaskId {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        TaskId::parse(&s)
    }
}

impl From<TaskId> for String {
    fn from(id: TaskId) -> String {
        id.0
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl std::str::FromStr for TaskId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        TaskId::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_ids_have_prefix_and_length() {
        let id = TaskId::random(5);
        assert!(id.as_str().starts_with("br-"));
        assert_eq!(id.as_str().len(), 8);
        assert!(TaskId::parse(id.as_str()).is_ok());
    }

    #[test]
    fn parse_rejects_bad_characters_and_names_them() {
        let err = TaskId::parse("br-a b").unwrap_err().to_string();
        assert!(err.contains("' '"), "{err}");
        assert!(TaskId::parse("").is_err());
        assert!(TaskId::parse(&"a".repeat(65)).is_err());
        assert!(TaskId::parse("bd-12.3").is_ok());
    }
}
