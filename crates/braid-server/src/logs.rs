//! Runs and their logs: the tasks being worked on, each attempt's log files
//! (`.braid/logs/<id>/<attempt>-<name>.log`, written by the engine), a
//! file's tail, and a live tail over SSE woken by file notifications.

use std::convert::Infallible;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use braid_core::State as TaskState;
use braid_store::ListFilter;
use futures_util::Stream;
use notify::Watcher;
use serde::Deserialize;

use crate::error::ApiError;
use crate::routes::{AppState, blocking, query};
use braid_app::wire::{ErrorView, LogView, RunView, TaskView};

/// The most bytes one read of a log returns.
const MAX_CHUNK: u64 = 64 * 1024;

/// The log folder of the task `raw` names (an id, or a unique prefix).
fn task_dir(st: &AppState, raw: &str) -> Result<PathBuf, ApiError> {
    let Some(paths) = &st.paths else {
        return Err(ApiError {
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            message: "this server has no log folder".into(),
        });
    };
    let tid = query(st, |s| braid_app::ops::resolve(s, raw))?;
    // A valid id has no path separators, so this stays inside the folder.
    Ok(paths.logs(&tid))
}

/// A log name as the engine writes it: `<attempt>-<name>.log`, nothing that
/// could leave the task's folder.
fn log_name(name: &str) -> Result<&str, ApiError> {
    let ok = name.ends_with(".log")
        && name.len() <= 200
        && name
            .split_once('-')
            .is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && !name.contains("..");
    if ok {
        Ok(name)
    } else {
        Err(ApiError::invalid(format!(
            "{name:?} is not a log name like 1-agent.log"
        )))
    }
}

fn list_dir(dir: &std::path::Path) -> Vec<LogView> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<LogView> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            log_name(&name).ok()?;
            Some(LogView {
                size: e.metadata().ok()?.len(),
                name,
            })
        })
        .collect();
    // Attempt order, then name.
    out.sort_by_key(|l| {
        let n: u64 = l
            .name
            .split('-')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        (n, l.name.clone())
    });
    out
}

/// The tasks being worked on now, with their logs.
#[utoipa::path(get, path = "/api/runs", responses((status = 200, body = [RunView])))]
pub async fn runs(State(st): State<AppState>) -> Result<Json<Vec<RunView>>, ApiError> {
    let filter = ListFilter {
        states: vec![TaskState::InProgress],
        limit: Some(500),
        ..ListFilter::default()
    };
    let paths = st.paths.clone();
    let out = blocking(&st, move |s| {
        Ok(s.list(&filter)?
            .iter()
            .map(|t| RunView {
                task: TaskView::from(t),
                logs: paths
                    .as_ref()
                    .map(|p| list_dir(&p.logs(&t.id)))
                    .unwrap_or_default(),
            })
            .collect())
    })
    .await?;
    Ok(Json(out))
}

/// A task's log files, oldest attempt first.
#[utoipa::path(get, path = "/api/tasks/{id}/logs", params(("id" = String, Path)), responses((status = 200, body = [LogView]), (status = 404, body = ErrorView)))]
pub async fn list(
    State(st): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<Vec<LogView>>, ApiError> {
    let dir = task_dir(&st, &raw)?;
    let logs = tokio::task::spawn_blocking(move || list_dir(&dir))
        .await
        .map_err(|_| ApiError::internal())?;
    Ok(Json(logs))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct TailQuery {
    /// How many bytes from the end (default and most: 65536).
    bytes: Option<u64>,
}

/// The end of one log file, as text.
#[utoipa::path(get, path = "/api/tasks/{id}/logs/{name}", params(("id" = String, Path), ("name" = String, Path), TailQuery), responses((status = 200, content_type = "text/plain", body = String), (status = 404, body = ErrorView)))]
pub async fn tail(
    State(st): State<AppState>,
    Path((raw, name)): Path<(String, String)>,
    Query(q): Query<TailQuery>,
) -> Result<Response, ApiError> {
    let path = task_dir(&st, &raw)?.join(log_name(&name)?);
    let want = q.bytes.unwrap_or(MAX_CHUNK).min(MAX_CHUNK);
    let text = tokio::task::spawn_blocking(move || read_tail(&path, want))
        .await
        .map_err(|_| ApiError::internal())?
        .ok_or_else(|| ApiError {
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            message: format!("task {raw} has no log {name}"),
        })?;
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text.1,
    )
        .into_response())
}

/// The last `want` bytes of a file and the file's length.
fn read_tail(path: &std::path::Path, want: u64) -> Option<(u64, String)> {
    let mut f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    let from = len.saturating_sub(want);
    f.seek(SeekFrom::Start(from)).ok()?;
    let mut buf = Vec::with_capacity((len - from) as usize);
    f.take(want).read_to_end(&mut buf).ok()?;
    Some((len, String::from_utf8_lossy(&buf).into_owned()))
}

/// New bytes of a file from `offset`, at most [`MAX_CHUNK`].
fn read_from(path: &std::path::Path, offset: u64) -> Option<(u64, String)> {
    let mut f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    if len <= offset {
        return Some((len.max(offset), String::new()));
    }
    f.seek(SeekFrom::Start(offset)).ok()?;
    let mut buf = Vec::new();
    f.take(MAX_CHUNK).read_to_end(&mut buf).ok()?;
    Some((
        offset + buf.len() as u64,
        String::from_utf8_lossy(&buf).into_owned(),
    ))
}

/// A live tail of one log over SSE: the last 16 KiB, then each append as a
/// `chunk` event, woken by file notifications (no polling).
#[utoipa::path(get, path = "/api/tasks/{id}/logs/{name}/follow", params(("id" = String, Path), ("name" = String, Path)), responses((status = 200, description = "text/event-stream of `chunk` events (JSON strings)")))]
pub async fn follow(
    State(st): State<AppState>,
    Path((raw, name)): Path<(String, String)>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let dir = task_dir(&st, &raw)?;
    let path = dir.join(log_name(&name)?);
    let (tx, rx) = tokio::sync::mpsc::channel::<()>(1);
    // Watch the folder: the file may not exist yet.
    std::fs::create_dir_all(&dir).map_err(|_| ApiError::internal())?;
    let target = path.clone();
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        // Appends and re-creations only: our own reads raise access
        // events, which must not wake us to read again.
        if let Ok(ev) = ev
            && matches!(
                ev.kind,
                notify::EventKind::Create(_) | notify::EventKind::Modify(_)
            )
            && ev.paths.iter().any(|p| p == &target)
        {
            // A full channel already holds a wake-up: coalesce.
            let _ = tx.try_send(());
        }
    })
    .map_err(|_| ApiError::internal())?;
    watcher
        .watch(&dir, notify::RecursiveMode::NonRecursive)
        .map_err(|_| ApiError::internal())?;
    let p = path.clone();
    let (offset, first) = tokio::task::spawn_blocking(move || read_tail(&p, 16 * 1024))
        .await
        .map_err(|_| ApiError::internal())?
        .unwrap_or((0, String::new()));
    struct St {
        path: PathBuf,
        offset: u64,
        pending: Option<String>,
        /// The last read stopped at the chunk size: read again before waiting.
        more: bool,
        rx: tokio::sync::mpsc::Receiver<()>,
        /// Server shutdown ends the stream.
        closing: tokio::sync::watch::Receiver<bool>,
        _watcher: notify::RecommendedWatcher,
    }
    let start = St {
        path,
        offset,
        pending: Some(first),
        more: false,
        rx,
        closing: st.hub.closing(),
        _watcher: watcher,
    };
    let stream = futures_util::stream::unfold(start, |mut st| async move {
        loop {
            if let Some(text) = st.pending.take() {
                let ev = SseEvent::default()
                    .event("chunk")
                    .json_data(&text)
                    .unwrap_or_default();
                return Some((Ok(ev), st));
            }
            if *st.closing.borrow() {
                return None;
            }
            if !st.more {
                tokio::select! {
                    r = st.rx.recv() => r?,
                    _ = st.closing.changed() => return None,
                }
            }
            let (p, off) = (st.path.clone(), st.offset);
            let read = tokio::task::spawn_blocking(move || read_from(&p, off))
                .await
                .ok()
                .flatten();
            st.more = false;
            if let Some((next, text)) = read {
                st.more = next - st.offset == MAX_CHUNK;
                st.offset = next;
                if !text.is_empty() {
                    st.pending = Some(text);
                }
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
