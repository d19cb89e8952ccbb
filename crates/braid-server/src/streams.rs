//! The event streams: WebSocket at `/ws` and SSE at `/events`. Both start
//! with a `hello` (`recovered`, `last_seq`), replay what the client missed
//! when it resumes, then follow the hub. A client that falls behind is
//! disconnected (WebSocket close code 4008, SSE `resync` event) and must
//! reload; the server never buffers for it.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use serde::Deserialize;

use crate::error::ApiError;
use crate::hub::{Hub, Next, Rooms, Subscription};
use crate::metric;
use crate::routes::AppState;

/// WebSocket close code: the client fell behind; reload, then resume.
pub const CLOSE_RESYNC: u16 = 4008;
/// WebSocket close code: the server is shutting down (standard "going away").
pub const CLOSE_GOING_AWAY: u16 = 1001;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct StreamQuery {
    /// Resume after this seq (SSE also reads `Last-Event-ID`).
    after: Option<i64>,
    /// Comma-separated rooms: `project` (default), `epic:ID`, `task:ID`,
    /// `label:NAME`.
    rooms: Option<String>,
    /// The token, where a header cannot be sent (checked by the auth layer).
    #[allow(dead_code)]
    token: Option<String>,
}

fn rooms(q: &StreamQuery) -> Result<Rooms, ApiError> {
    Rooms::parse(q.rooms.as_deref().unwrap_or("project"))
        .map_err(|e| ApiError::invalid(e.to_string()))
}

/// Counts a stream while it is open.
struct Open(&'static str);

impl Open {
    fn new(kind: &'static str) -> Open {
        metric::stream_opened(kind);
        Open(kind)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        metric::stream_closed(self.0);
    }
}

/// Messages a WebSocket client may send.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum ClientMsg {
    /// Listen to these rooms from now on.
    Subscribe { rooms: Vec<String> },
}

/// Event stream over WebSocket.
#[utoipa::path(get, path = "/ws", params(StreamQuery), responses((status = 101, description = "Switching to WebSocket: a hello, then one JSON text message per event")))]
pub async fn ws(
    State(st): State<AppState>,
    q: Result<Query<StreamQuery>, axum::extract::rejection::QueryRejection>,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::invalid(e.body_text()))?;
    let rooms = rooms(&q)?;
    let hub = st.hub.clone();
    // Small buffers: an idle connection should cost a few kilobytes.
    Ok(upgrade
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(256 * 1024)
        .max_message_size(64 * 1024)
        .max_frame_size(64 * 1024)
        .on_upgrade(move |socket| run_ws(socket, hub, q.after, rooms))
        .into_response())
}

async fn run_ws(mut socket: WebSocket, hub: Arc<Hub>, after: Option<i64>, rooms: Rooms) {
    let _open = Open::new("ws");
    let send_timeout = hub.config.send_timeout;
    let Ok((hello, mut sub)) = hub.subscribe(after, rooms).await else {
        // The client may be gone already; the stream ends either way.
        let _ = close(&mut socket, 1011, "the event log could not be read").await;
        return;
    };
    let hello = serde_json::to_string(&hello).unwrap_or_default();
    if socket.send(Message::Text(hello.into())).await.is_err() {
        return;
    }
    let delivered = metric::delivered("ws");
    loop {
        // Biased, events first: a wake for an event does not also poll the
        // socket for reading (most of a fan-out's cost per connection).
        tokio::select! {
            biased;
            next = sub.next() => match next {
                Next::Event(f) => {
                    let sent = tokio::time::timeout(send_timeout, socket.send(Message::Text(f.json.clone()))).await;
                    match sent {
                        Ok(Ok(())) => delivered.increment(1),
                        Ok(Err(_)) => return,
                        Err(_) => {
                            metric::slow_consumer("ws");
                            return;
                        }
                    }
                }
                Next::Resync { last_seq } => {
                    metric::slow_consumer("ws");
                    let reason = format!("resync: fell behind after seq {last_seq}; reload, then resume");
                    // A client that cannot take the close frame is dropped.
                    let _ = tokio::time::timeout(send_timeout, close(&mut socket, CLOSE_RESYNC, &reason)).await;
                    return;
                }
                Next::Closing => {
                    // As above: the stream ends either way.
                    let _ = tokio::time::timeout(send_timeout, close(&mut socket, CLOSE_GOING_AWAY, "server shutting down")).await;
                    return;
                }
            },
            msg = socket.recv() => match msg {
                Some(Ok(Message::Text(t))) => {
                    if let Err(e) = client_message(&mut sub, t.as_str()) {
                        let err = serde_json::json!({"type": "error", "message": e.to_string()}).to_string();
                        if socket.send(Message::Text(err.into())).await.is_err() {
                            return;
                        }
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                // Pings are answered by the protocol layer; the rest is ignored.
                Some(Ok(_)) => {}
            },
        }
    }
}

fn client_message(sub: &mut Subscription, text: &str) -> Result<(), crate::Error> {
    let msg: ClientMsg = serde_json::from_str(text).map_err(|e| {
        crate::Error::Invalid(format!(
            "{e}; send {{\"type\":\"subscribe\",\"rooms\":[\"project\"]}}"
        ))
    })?;
    match msg {
        ClientMsg::Subscribe { rooms } => {
            sub.set_rooms(Rooms::parse(&rooms.join(","))?);
            Ok(())
        }
    }
}

async fn close(socket: &mut WebSocket, code: u16, reason: &str) -> Result<(), axum::Error> {
    socket
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: Utf8Bytes::from(reason.to_owned()),
        })))
        .await
}

/// Event stream over SSE: `hello`, then `event` messages with `id: SEQ`.
#[utoipa::path(get, path = "/events", params(StreamQuery), responses((status = 200, description = "text/event-stream: `hello`, then one `event` per event (id = seq); `resync` or `closing` ends it")))]
pub async fn sse(
    State(st): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<StreamQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::invalid(e.body_text()))?;
    let rooms = rooms(&q)?;
    let after = match q.after {
        Some(a) => Some(a),
        None => headers
            .get("last-event-id")
            .map(|v| {
                v.to_str()
                    .ok()
                    .and_then(|s| s.trim().parse::<i64>().ok())
                    .ok_or_else(|| ApiError::invalid("Last-Event-ID must be an event seq"))
            })
            .transpose()?,
    };
    let (hello, sub) = st.hub.subscribe(after, rooms).await?;
    let hello = SseEvent::default()
        .event("hello")
        .json_data(&hello)
        .map_err(|_| ApiError::internal())?;
    enum Phase {
        Hello(SseEvent, Subscription),
        Live(Subscription),
        Done,
    }
    struct St {
        phase: Phase,
        _open: Open,
        delivered: metrics::Counter,
    }
    let start = St {
        phase: Phase::Hello(hello, sub),
        _open: Open::new("sse"),
        delivered: metric::delivered("sse"),
    };
    let stream = futures_util::stream::unfold(start, |mut st| async move {
        match std::mem::replace(&mut st.phase, Phase::Done) {
            Phase::Hello(ev, sub) => {
                st.phase = Phase::Live(sub);
                Some((Ok(ev), st))
            }
            Phase::Live(mut sub) => {
                let ev = match sub.next().await {
                    Next::Event(f) => {
                        st.delivered.increment(1);
                        st.phase = Phase::Live(sub);
                        SseEvent::default()
                            .id(f.seq.to_string())
                            .event("event")
                            .data(f.json.as_str())
                    }
                    Next::Resync { last_seq } => {
                        metric::slow_consumer("sse");
                        SseEvent::default()
                            .event("resync")
                            .data(format!("{{\"last_seq\":{last_seq}}}"))
                    }
                    Next::Closing => SseEvent::default().event("closing").data("{}"),
                };
                Some((Ok(ev), st))
            }
            Phase::Done => None,
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
