//! `braid serve`: the JSON API (and, later, streams and the board) on a
//! socket, with graceful shutdown on SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;

use crate::cmd::Ctx;
use crate::exit::{self, Failure};

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port; the first line printed
    /// says which).
    #[arg(long, default_value = "127.0.0.1:7777")]
    pub bind: SocketAddr,
}

pub fn run(ctx: &Ctx, a: ServeArgs) -> Result<i32> {
    if !a.bind.ip().is_loopback() {
        return Err(Failure::usage(format!(
            "refusing to listen on {}: only loopback addresses are served until token authentication exists",
            a.bind
        ))
        .into());
    }
    let (_, store) = ctx.open()?;
    let state = braid_server::AppState {
        store: Arc::new(store),
        actor: ctx.actor(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(a.bind).await.with_context(|| format!("binding {}", a.bind))?;
        let addr = listener.local_addr()?;
        println!("Serving braid on http://{addr} (API under /api, OpenAPI at /openapi.json). Ctrl-C stops.");
        use std::io::Write;
        std::io::stdout().flush()?;
        axum::serve(listener, braid_server::app(state))
            .with_graceful_shutdown(shutdown())
            .await
            .context("serving")?;
        anyhow::Ok(())
    })?;
    Ok(exit::OK)
}

/// Resolves on the first SIGINT or SIGTERM: stop accepting, finish what is in flight.
async fn shutdown() {
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
