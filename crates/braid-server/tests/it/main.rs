//! The HTTP API through `app()` and `oneshot`, on a real SQLite file.

mod api;
