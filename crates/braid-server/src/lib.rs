//! braid-server: the live server. The JSON API over the work graph (every
//! write through the store's single write path), its OpenAPI document, and
//! health endpoints. Only this crate knows HTTP.

pub mod api;
mod error;
mod routes;

pub use error::ApiError;
pub use routes::{ApiDoc, AppState, app};
