//! `braid serve`: the API, event streams, board and file sync on a socket,
//! with token auth off loopback and graceful shutdown on SIGINT/SIGTERM;
//! `braid sync`: one file-sync pass.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use braid_server::config::ServerConfig;
use braid_server::sync::Syncer;
use braid_store::Store;
use clap::Args;

use crate::cmd::Ctx;
use crate::exit::{self, Failure};
use crate::style::Style;

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on (default: [server] bind in .braid/config.toml,
    /// else 127.0.0.1:7777; port 0 picks a free port — the first line
    /// printed says which). Off loopback a token is required.
    #[arg(long)]
    pub bind: Option<SocketAddr>,
    /// A read-write token clients must present (`Authorization: Bearer`).
    /// Repeat for several; at least 16 characters.
    #[arg(
        long,
        env = "BRAID_TOKEN",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub token: Vec<String>,
    /// A read-only token: may read and follow streams, not change anything.
    #[arg(
        long,
        env = "BRAID_READ_TOKEN",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub read_token: Vec<String>,
    /// Do not mirror tasks to .braid/tasks/*.md.
    #[arg(long)]
    pub no_sync: bool,
    /// Also run the engine in this process (as `braid run --follow`): its
    /// runs show on the board and its metrics at /metrics.
    #[arg(long)]
    pub run: bool,
}

fn load_config(ctx: &Ctx) -> Result<(crate::project::Project, ServerConfig)> {
    let project = ctx.project()?;
    let config = ServerConfig::load(&project.dir.join("config.toml"))
        .map_err(|e| Failure::usage(e.to_string()))?;
    Ok((project, config))
}

pub fn run(ctx: &Ctx, a: ServeArgs) -> Result<i32> {
    let (project, config) = load_config(ctx)?;
    let bind = a.bind.unwrap_or(config.bind);
    let auth = braid_server::Auth::with_tokens(&a.token, &a.read_token)
        .map_err(|e| Failure::usage(e.to_string()))?;
    if !bind.ip().is_loopback() && auth.is_open() {
        return Err(Failure::usage(format!(
            "refusing to listen on {bind} without a token: pass --token (or set BRAID_TOKEN) so only clients that know it get in"
        ))
        .into());
    }
    // The board shows spend against `[budget]` (a config that does not
    // read was refused above, by the server's own reading of it).
    let budget = crate::run::load_config(&project)
        .map(|c| c.budget)
        .unwrap_or_default();
    let engine_config = if a.run {
        let c = crate::run::load_run_config(&project)?;
        if c.agents.is_empty() {
            return Err(Failure::usage(
                "--run needs an [[agent]] in .braid/config.toml (see docs/config.md)",
            )
            .into());
        }
        Some(c)
    } else {
        None
    };
    // Queries get their own connections, one per core: reads run in
    // parallel with each other and with writes.
    let readers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(8);
    let store: Arc<dyn Store> = match &project.url {
        Some(url) => Arc::new(braid_store::PgStore::open(url)?),
        None => {
            let store = braid_store::SqliteStore::open(&project.db)?.with_readers(readers)?;
            store.checkpoint_in_background()?;
            Arc::new(store)
        }
    };
    crate::run::sync_settings(&project, store.as_ref())?;
    let keeping = crate::run::load_config(&project).unwrap_or_default();
    let _gc = crate::gc::periodic(project.clone(), keeping.gc_keep)?;
    let _snapshots =
        crate::snapshot::periodic(&project, keeping.snapshot_every, keeping.snapshot_keep)?;
    let metrics = braid_server::metric::install();
    // The engine runs on its own thread with its own connection; it stops
    // on the same SIGINT/SIGTERM, finishing or giving back its work, and
    // flushes its telemetry before the thread ends.
    let engine = match engine_config {
        Some(config) => {
            let (paths, engine_project, actor) =
                (crate::run::paths(&project), project.clone(), ctx.actor());
            Some(
                std::thread::Builder::new()
                    .name("braid-engine".into())
                    .spawn(move || -> Result<()> {
                        let store = engine_project.open()?;
                        let opts = braid_run::RunOptions {
                            follow: true,
                            max_tasks: None,
                            only: Vec::new(),
                            actor,
                            merge: None,
                        };
                        braid_run::Engine::new(&store, config, paths, opts, Box::new(|_| {}))
                            .run()?;
                        Ok(())
                    })?,
            )
        }
        None => None,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let result = rt.block_on(async {
        let hub = braid_server::hub::Hub::start(store.clone(), config.streams.clone())?;
        let mut state =
            braid_server::AppState::new(store.clone(), hub.clone(), ctx.actor(), readers + 1);
        state.paths = Some(crate::run::paths(&project));
        state.metrics = Some(metrics);
        state.budget = budget;
        // Outside git (or before the first commit) there is nothing to review.
        state.review = crate::review::site(&project).ok().map(Arc::new);
        let listener = tokio::net::TcpListener::bind(bind)
            .await
            .with_context(|| format!("binding {bind}"))?;
        let addr = listener.local_addr()?;
        let opts = braid_server::AppOptions {
            auth: auth.clone(),
            limits: config.limits.clone(),
            // The address actually bound (a port of 0 becomes a real one).
            guard: braid_server::Guard::new(
                addr,
                &config.allowed_hosts,
                &config.allowed_origins,
            ),
        };
        let app = braid_server::app(state, &opts);
        let listener = braid_server::limits::CappedListener::new(listener, &config.limits);
        let sync = if config.sync && !a.no_sync {
            let syncer = Syncer::new(project.dir.join("tasks"), store.clone(), "sync".into())
                .context("creating .braid/tasks")?;
            Some(
                braid_server::sync::spawn(syncer, hub.clone(), config.sync_debounce)
                    .map_err(anyhow::Error::msg)?,
            )
        } else {
            None
        };
        let stop = shutdown().context("listening for SIGINT and SIGTERM")?;
        outln!(
            "Serving braid on http://{addr} (board at /, API under /api, OpenAPI at /openapi.json{}{}{}). Ctrl-C stops.",
            if auth.is_open() { "" } else { "; token required" },
            if a.run { "; running agents" } else { "" },
            if sync.is_some() { "; syncing .braid/tasks" } else { "" }
        );
        braid_server::serve(listener, app, hub, stop, config.shutdown_grace)
            .await
            .context("serving")?;
        if let Some((watcher, thread)) = sync {
            // Stop taking file changes, then let the sync thread finish
            // what it holds.
            drop(watcher);
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        anyhow::Ok(())
    });
    // Requests are finished; give blocking store calls a moment, then close.
    rt.shutdown_timeout(config.shutdown_grace);
    if let Some(engine) = engine {
        match engine.join() {
            Ok(Err(e)) => errln!("braid serve: the engine stopped: {e:#}"),
            Err(_) => errln!("braid serve: the engine thread panicked"),
            Ok(Ok(())) => {}
        }
    }
    drop(store);
    result?;
    // To stderr: whoever read the address may have stopped reading stdout.
    errln!("braid serve stopped: streams closed, requests finished.");
    Ok(exit::OK)
}

/// Resolves on the first SIGINT or SIGTERM. The handlers are installed
/// now, before the address is printed: a signal sent as soon as it is read
/// stops the server gracefully instead of killing it.
fn shutdown() -> std::io::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    })
}

#[derive(Args, Debug)]
pub struct SyncArgs {}

/// One pass of file sync: apply edited and added files, then write every
/// task whose file is missing or out of date.
pub fn sync_once(ctx: &Ctx, _a: SyncArgs) -> Result<i32> {
    let (project, store) = ctx.open()?;
    let store: Arc<dyn Store> = Arc::new(store);
    let mut syncer = Syncer::new(project.dir.join("tasks"), store, ctx.actor())
        .context("creating .braid/tasks")?;
    let (report, outcomes) = syncer.full().context("syncing .braid/tasks")?;
    if ctx.global.json {
        ctx.print_json(&serde_json::json!({
            "applied": report.applied,
            "created": report.created,
            "written": report.written,
            "rejected": report.rejected,
            "files": outcomes.iter().filter(|o| o.action != "unchanged").collect::<Vec<_>>(),
        }))?;
    } else {
        for o in outcomes.iter().filter(|o| o.action != "unchanged") {
            match &o.error {
                Some(e) => errln!(
                    "{} {}: {e}",
                    Style::for_stderr().paint("31", "rejected"),
                    o.file
                ),
                None => outln!(
                    "{:<9} {} {}",
                    o.action,
                    o.file,
                    o.task.as_deref().unwrap_or("")
                ),
            }
        }
        outln!(
            "{} applied, {} created, {} written, {} rejected ({})",
            report.applied,
            report.created,
            report.written,
            report.rejected.len(),
            project.dir.join("tasks").display()
        );
    }
    Ok(if report.rejected.is_empty() {
        exit::OK
    } else {
        exit::USAGE
    })
}

#[derive(Args, Debug)]
pub struct McpArgs {
    /// The most tokens (counted as characters / 4) one answer may take;
    /// lists page and long text is cut with a marker to stay under it.
    #[arg(long, default_value_t = braid_server::mcp::DEFAULT_BUDGET, value_parser = clap::value_parser!(u64).range(500..=1_000_000))]
    pub budget: u64,
}

/// `braid mcp`: the MCP server on stdin/stdout (stdout carries only the
/// protocol; messages go to stderr).
pub fn mcp(ctx: &Ctx, a: McpArgs) -> Result<i32> {
    let (project, store) = ctx.open()?;
    let store: Arc<dyn Store> = Arc::new(store);
    let review = crate::review::site(&project).ok();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(braid_server::mcp::serve_stdio(
        store,
        ctx.actor(),
        a.budget as usize,
        review,
    ))
    .map_err(anyhow::Error::msg)?;
    Ok(exit::OK)
}
