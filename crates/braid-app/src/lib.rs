//! braid-app: the application layer between the store and git below and
//! everything that acts on the work graph above (the command line, the HTTP
//! API, the MCP server, task files, the engine). It holds the wire types
//! ([`wire`]), budgets ([`budget`]), the operations with every policy written once ([`ops`]),
//! what an agent is told ([`prompt`]), where a project keeps things
//! ([`paths`]), how sizes and durations read ([`units`]), the merge plan
//! ([`plan`]) and review of a branch before it lands ([`review`]). A front-end
//! translates its input to an operation and the answer to its output; it
//! never builds a store command itself.

pub mod budget;
pub mod ops;
pub mod paths;
pub mod plan;
pub mod prompt;
pub mod review;
pub mod units;
pub mod wire;

pub use braid_store::{Error, Result};
pub use paths::Paths;
