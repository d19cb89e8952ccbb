//! A real server on a real socket for tests, and small HTTP/SSE clients
//! that speak to it over TCP. Every wait is bounded.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use braid_core::{NewTask, TaskId};
use braid_server::config::Limits;
use braid_server::hub::{Hub, StreamConfig};
use braid_server::{AppOptions, AppState, Auth};
use braid_store::{Command, SqliteStore, Store};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

pub const WAIT: Duration = Duration::from_secs(10);

pub struct Server {
    pub addr: SocketAddr,
    pub store: Arc<dyn Store>,
    pub hub: Arc<Hub>,
    pub dir: tempfile::TempDir,
    /// Open connections, as the listener counts them.
    pub connections: tokio::sync::watch::Receiver<usize>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

#[derive(Default)]
pub struct Setup {
    pub limits: Option<Limits>,
    pub streams: Option<StreamConfig>,
    pub auth: Option<Auth>,
    /// How long shutdown waits for open requests (default 5 s).
    pub grace: Option<Duration>,
    /// `[server] allowed_hosts` and `allowed_origins`.
    pub allowed_hosts: Vec<String>,
    pub allowed_origins: Vec<String>,
}

impl Server {
    pub async fn start(setup: Setup) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("braid.db");
        let store: Arc<dyn Store> = Arc::new(SqliteStore::create(&db).unwrap());
        let hub = Hub::start(store.clone(), setup.streams.unwrap_or_default()).unwrap();
        let limits = setup.limits.unwrap_or_default();
        let mut state = AppState::new(store.clone(), hub.clone(), "test".into(), 3);
        state.paths = Some(braid_app::Paths {
            braid_dir: dir.path().to_owned(),
            db: db.clone(),
            repo: None,
        });
        state.metrics = Some(braid_server::metric::install());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = braid_server::app(
            state,
            &AppOptions {
                auth: setup.auth.unwrap_or_default(),
                limits: limits.clone(),
                guard: braid_server::Guard::new(addr, &setup.allowed_hosts, &setup.allowed_origins),
            },
        );
        let listener = braid_server::limits::CappedListener::new(listener, &limits);
        let connections = listener.open_connections();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(braid_server::serve(
            listener,
            app,
            hub.clone(),
            async {
                let _ = rx.await;
            },
            setup.grace.unwrap_or(Duration::from_secs(5)),
        ));
        Server {
            addr,
            store,
            hub,
            dir,
            connections,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// Adds a task straight through the store, as another process would.
    pub fn add(&self, title: &str) -> TaskId {
        self.store
            .apply("test", Command::Add(NewTask::titled(title)))
            .unwrap()
            .task
            .id
    }

    pub fn ws_url(&self, query: &str) -> String {
        format!("ws://{}/ws{query}", self.addr)
    }

    /// Stops the server and waits for it to return.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            tokio::time::timeout(WAIT, t)
                .await
                .expect("server stops in time")
                .unwrap()
                .unwrap();
        }
    }
}

pub struct Response {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: String,
}

impl Response {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// One HTTP/1.1 request on its own connection (`Connection: close`).
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Response {
    tokio::time::timeout(WAIT, async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let mut req = format!("{method} {path} HTTP/1.1\r\nconnection: close\r\n");
        // The server's own name unless the test forges another.
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
            req.push_str(&format!("host: {addr}\r\n"));
        }
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if let Some(b) = body {
            req.push_str(&format!(
                "content-type: application/json\r\ncontent-length: {}\r\n",
                b.len()
            ));
        }
        req.push_str("\r\n");
        req.push_str(body.unwrap_or(""));
        s.write_all(req.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw).await;
        parse_response(&raw)
    })
    .await
    .expect("answer in time")
}

pub fn parse_response(raw: &[u8]) -> Response {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect::<HashMap<_, _>>();
    let body = if headers
        .get("transfer-encoding")
        .is_some_and(|v| v == "chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Response {
        status,
        headers,
        body,
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].strip_prefix("\r\n").unwrap_or(&rest[n..]);
    }
    out
}

/// One SSE message.
#[derive(Debug, Default, Clone)]
pub struct SseMsg {
    pub event: String,
    pub id: Option<String>,
    pub data: String,
}

/// A streaming SSE client over raw TCP (chunked body decoded by hand).
pub struct Sse {
    r: BufReader<TcpStream>,
    pending: String,
}

impl Sse {
    pub async fn connect(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, Sse) {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let mut req =
            format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\naccept: text/event-stream\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut r = BufReader::new(s);
        let mut status = 0;
        loop {
            let mut line = String::new();
            tokio::time::timeout(WAIT, r.read_line(&mut line))
                .await
                .expect("headers in time")
                .unwrap();
            if status == 0 {
                status = line
                    .split(' ')
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
            }
            if line == "\r\n" || line.is_empty() {
                break;
            }
        }
        (
            status,
            Sse {
                r,
                pending: String::new(),
            },
        )
    }

    /// The next message (comments skipped), or None when the stream ends.
    pub async fn next(&mut self) -> Option<SseMsg> {
        loop {
            if let Some(i) = self.pending.find("\n\n") {
                let block: String = self.pending.drain(..i + 2).collect();
                let mut m = SseMsg::default();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        m.event = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("id:") {
                        m.id = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        m.data.push_str(v.strip_prefix(' ').unwrap_or(v));
                    }
                }
                if m.event.is_empty() && m.data.is_empty() {
                    continue;
                }
                return Some(m);
            }
            // Chunk size line, then that many bytes, then CRLF.
            let mut size = String::new();
            let n = tokio::time::timeout(WAIT, self.r.read_line(&mut size))
                .await
                .expect("stream data in time")
                .ok()?;
            if n == 0 {
                return None;
            }
            let Ok(len) = usize::from_str_radix(size.trim(), 16) else {
                continue;
            };
            if len == 0 {
                return None;
            }
            let mut buf = vec![0; len + 2];
            tokio::time::timeout(WAIT, self.r.read_exact(&mut buf))
                .await
                .expect("chunk in time")
                .ok()?;
            self.pending.push_str(&String::from_utf8_lossy(&buf[..len]));
        }
    }
}
