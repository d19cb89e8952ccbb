//! braid-app's operations on a real SQLite store: the policies every
//! front-end shares (id resolution, lease bounds, required reasons,
//! documents), and docs/json.md held to the wire types.

mod docs;
mod ops;
mod review;
