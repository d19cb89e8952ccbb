//! braid-server: the live server. The JSON API over the work graph (every
//! write through the store's single write path) with its OpenAPI document,
//! event streams (WebSocket, SSE) fed by one hub, limits, token auth,
//! `/metrics`, the board page and file sync. Only this crate knows HTTP.

mod auth;
mod board;
pub mod config;
mod error;
pub mod guard;
pub mod hub;
pub mod limits;
mod logs;
pub mod mcp;
pub mod metric;
mod routes;
pub mod streams;
pub mod sync;

pub use auth::{Access, Auth};
pub use error::{ApiError, Error};
pub use guard::Guard;
pub use routes::{ApiDoc, AppOptions, AppState, app};

use std::future::Future;

/// Serves `app` on `listener` until `shutdown` resolves; then stops
/// accepting, closes every stream (WebSocket close frames), lets requests
/// in flight finish, and returns — or gives up waiting after `grace`.
pub async fn serve(
    listener: limits::CappedListener,
    app: axum::Router,
    hub: std::sync::Arc<hub::Hub>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: std::time::Duration,
) -> std::io::Result<()> {
    let (stopped_tx, stopped_rx) = tokio::sync::oneshot::channel::<()>();
    let hub2 = hub.clone();
    let signal = async move {
        shutdown.await;
        // Streams end first, so the server's graceful wait is only for
        // requests.
        hub2.close();
        // The server may already have returned: nobody to tell.
        let _ = stopped_tx.send(());
    };
    let server = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<limits::ClientAddr>(),
    )
    .with_graceful_shutdown(signal);
    let mut server = std::pin::pin!(server.into_future());
    tokio::select! {
        r = &mut server => return r,
        _ = stopped_rx => {}
    }
    match tokio::time::timeout(grace, server).await {
        Ok(r) => r,
        Err(_) => {
            tracing::warn!(
                grace_s = grace.as_secs(),
                "braid-server: requests still open after the grace; stopping anyway"
            );
            Ok(())
        }
    }
}
