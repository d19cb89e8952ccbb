//! The stored task states and the explicit table of allowed transitions.
//! `ready` and `blocked` are not states: they are derived (see [`crate::graph`]).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::TaskId;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Open,
    InProgress,
    /// Work finished and gates passed; the branch waits to merge.
    Review,
    Done,
    Failed,
    Cancelled,
    Deferred,
}

impl State {
    pub const ALL: [State; 7] = [
        State::Open,
        State::InProgress,
        State::Review,
        State::Done,
        State::Failed,
        State::Cancelled,
        State::Deferred,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Open => "open",
            State::InProgress => "in_progress",
            State::Review => "review",
            State::Done => "done",
            State::Failed => "failed",
            State::Cancelled => "cancelled",
            State::Deferred => "deferred",
        }
    }

    pub fn parse(s: &str) -> Result<State> {
        if let Some(st) = State::ALL.into_iter().find(|st| st.as_str() == s) {
            return Ok(st);
        }
        let norm = s.trim().to_ascii_lowercase().replace('-', "_");
        State::ALL
            .into_iter()
            .find(|st| st.as_str() == norm)
            .ok_or_else(|| {
                Error::invalid(
                    "state",
                    format!(
                        "{s:?} is not a state; states are {}",
                        State::ALL.map(State::as_str).join(", ")
                    ),
                )
            })
    }

    /// A `blocks` dependency on a task in this state no longer blocks.
    pub fn is_finished(self) -> bool {
        matches!(self, State::Done | State::Cancelled)
    }

    /// Closed states record `closed_at`.
    pub fn is_closed(self) -> bool {
        matches!(self, State::Done | State::Cancelled | State::Failed)
    }

    /// The states this one may move to. This table is the state machine.
    pub fn allowed_next(self) -> &'static [State] {
        use State::*;
        match self {
            Open => &[InProgress, Done, Cancelled, Deferred],
            InProgress => &[Open, Review, Done, Failed, Cancelled, Deferred],
            Review => &[InProgress, Open, Done, Failed, Cancelled],
            Done => &[Open],
            Failed => &[Open, Cancelled],
            Cancelled => &[Open],
            Deferred => &[Open, Cancelled],
        }
    }

    pub fn can_move_to(self, to: State) -> bool {
        self.allowed_next().contains(&to)
    }

    /// Checks a transition, naming from and to when it is not allowed.
    pub fn check_transition(self, id: &TaskId, to: State) -> Result<()> {
        if self.can_move_to(to) {
            Ok(())
        } else {
            Err(Error::Transition {
                id: id.clone(),
                from: self,
                to,
                allowed: self
                    .allowed_next()
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_has_no_self_loops_and_every_state_can_reopen_or_is_open() {
        for s in State::ALL {
            assert!(!s.can_move_to(s), "{s} -> {s}");
            assert!(s == State::Open || s.can_move_to(State::Open), "{s}");
        }
    }

    #[test]
    fn invalid_transition_names_from_and_to() {
        let id = TaskId::parse("br-1").unwrap();
        let err = State::Done
            .check_transition(&id, State::InProgress)
            .unwrap_err()
            .to_string();
        assert!(err.contains("from done to in_progress"), "{err}");
        assert!(err.contains("allowed from done: open"), "{err}");
    }

    #[test]
    fn parse_accepts_dashes_and_case() {
        assert_eq!(State::parse("In-Progress").unwrap(), State::InProgress);
        assert!(
            State::parse("blocked")
                .unwrap_err()
                .to_string()
                .contains("states are")
        );
    }
}
