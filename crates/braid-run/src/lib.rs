//! braid-run: the engine. Reads the project's configuration, claims ready
//! work under leases, runs agents and gates in supervised process groups,
//! retries with the failure fed back, and records everything as events.

pub mod adapter;
pub mod base;
pub mod cache;
pub mod config;
pub mod engine;
pub mod gates;
pub mod integrate;
/// The merge plan lives in the application layer (the board shows it too).
pub use braid_app::plan as merge;
pub mod metrics;
pub mod notify;
pub mod preflight;
pub mod procs;
pub mod remote;
pub mod sched;
pub mod supervise;
pub mod telemetry;

pub use config::Config;
pub use engine::{Engine, MergeHook, Paths, Report, RunOptions, Waker};
