//! braid-server's integration tests: the API through `app()` and
//! `oneshot`; streams, limits, auth and file sync through a real server on
//! a real socket; all on real SQLite files.

mod api;
mod auth_limits;
mod common;
mod control;
mod guard;
mod streams;
mod sync;
