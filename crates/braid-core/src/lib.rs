//! braid-core: the work graph's domain — ids, tasks, states and transitions,
//! dependency kinds, readiness, hierarchy, cycles and health. No I/O, no SQL,
//! no async: everything here is plain data and functions, so it can be tested
//! exhaustively. Storage backends drive [`graph`]'s algorithms through the
//! [`graph::GraphTx`] trait.

pub mod clock;
pub mod error;
pub mod event;
pub mod graph;
pub mod health;
pub mod id;
pub mod mem;
pub mod merge;
pub mod model;
pub mod state;
pub mod text;

pub use clock::{Clock, ManualClock, SharedClock, SystemClock};
pub use error::{Error, ErrorKind, Result};
pub use event::{Event, EventKind};
pub use graph::{GraphTx, Node};
pub use health::{Health, HealthDelta};
pub use id::TaskId;
pub use model::{Dep, DepKind, NewTask, Task, TaskPatch, TaskType};
pub use state::State;
