//! braid-store integration tests: the contract suite on real SQLite files,
//! plus SQLite-specific behaviour (migrations, concurrency, snapshots).

mod cache_index;
mod postgres;
mod props;
mod sqlite;
