//! Connection caps and per-IP request rates. The listener counts open
//! connections per IP and in all, and answers a connection over either cap
//! with `503` and a JSON body saying which cap, before any request is read.
//! Request rates are a keyed token bucket (tower_governor) answering `429`
//! with `Retry-After`.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::http::Request;
use axum::serve::{IncomingStream, Listener};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tower_governor::GovernorError;
use tower_governor::key_extractor::KeyExtractor;

use crate::config::Limits;
use crate::metric;

/// Open connections, per IP and in all. An IP's entry is removed when its
/// last connection closes, so the map holds only IPs with open connections.
#[derive(Debug)]
struct Counts {
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    total: AtomicUsize,
    /// The total, for whoever waits for connections to close (tests, the
    /// shutdown).
    open: tokio::sync::watch::Sender<usize>,
}

impl Default for Counts {
    fn default() -> Self {
        Counts {
            per_ip: Mutex::default(),
            total: AtomicUsize::new(0),
            open: tokio::sync::watch::channel(0).0,
        }
    }
}

/// A listener that refuses connections over the caps.
#[derive(Debug)]
pub struct CappedListener {
    inner: TcpListener,
    per_ip: usize,
    global: usize,
    counts: Arc<Counts>,
    /// Refusals being written; past this many, a refused connection is just
    /// closed (a flood must not make tasks pile up).
    refusing: Arc<tokio::sync::Semaphore>,
}

impl CappedListener {
    pub fn new(inner: TcpListener, limits: &Limits) -> CappedListener {
        CappedListener {
            inner,
            per_ip: limits.max_connections_per_ip,
            global: limits.max_connections,
            counts: Arc::default(),
            refusing: Arc::new(tokio::sync::Semaphore::new(64)),
        }
    }

    /// The number of open connections, as it changes.
    pub fn open_connections(&self) -> tokio::sync::watch::Receiver<usize> {
        self.counts.open.subscribe()
    }

    fn admit(&self, ip: IpAddr) -> Result<Slot, &'static str> {
        let mut per_ip = self.counts.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if self.counts.total.load(Ordering::Relaxed) >= self.global {
            return Err("global");
        }
        let n = per_ip.entry(ip).or_insert(0);
        if *n >= self.per_ip {
            return Err("per_ip");
        }
        *n += 1;
        let total = self.counts.total.fetch_add(1, Ordering::Relaxed) + 1;
        self.counts.open.send_replace(total);
        metric::connections(total);
        Ok(Slot {
            ip,
            counts: self.counts.clone(),
        })
    }
}

/// One admitted connection's place in the counts, given back on drop.
#[derive(Debug)]
struct Slot {
    ip: IpAddr,
    counts: Arc<Counts>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut per_ip = self.counts.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&self.ip);
            }
        }
        let total = self.counts.total.fetch_sub(1, Ordering::Relaxed) - 1;
        self.counts.open.send_replace(total);
        metric::connections(total);
    }
}

/// An admitted connection.
#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    _slot: Slot,
}

impl Listener for CappedListener {
    type Io = Conn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Conn, SocketAddr) {
        loop {
            let (stream, addr) = match self.inner.accept().await {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: wait a moment
                    // rather than spin.
                    tracing::warn!(error = %e, "braid-server: accept");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // Latency only: a socket that refuses it still works.
            let _ = stream.set_nodelay(true);
            match self.admit(addr.ip()) {
                Ok(slot) => {
                    return (
                        Conn {
                            stream,
                            _slot: slot,
                        },
                        addr,
                    );
                }
                Err(which) => {
                    metric::refused(which);
                    if let Ok(permit) = self.refusing.clone().try_acquire_owned() {
                        tokio::spawn(async move {
                            // A client too slow to take its refusal just
                            // loses the connection.
                            let _ =
                                tokio::time::timeout(Duration::from_secs(1), refuse(stream, which))
                                    .await;
                            drop(permit);
                        });
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

async fn refuse(mut stream: TcpStream, which: &str) {
    let message = match which {
        "per_ip" => "too many connections from your address; close some and retry",
        _ => "the server has as many connections as it accepts; retry shortly",
    };
    let body = format!(r#"{{"error":{{"code":"too_many_connections","message":"{message}"}}}}"#);
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    // A refused client that hangs up early needs no answer.
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body.as_bytes()).await;
    let _ = stream.shutdown().await;
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// The peer's address, as handlers and the rate limiter see it.
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub SocketAddr);

impl Connected<IncomingStream<'_, CappedListener>> for ClientAddr {
    fn connect_info(stream: IncomingStream<'_, CappedListener>) -> Self {
        ClientAddr(*stream.remote_addr())
    }
}

impl Connected<IncomingStream<'_, TcpListener>> for ClientAddr {
    fn connect_info(stream: IncomingStream<'_, TcpListener>) -> Self {
        ClientAddr(*stream.remote_addr())
    }
}

/// Rate-limit key: the peer's IP. Requests without connect info (tests
/// through `oneshot`) share one bucket.
#[derive(Clone, Copy, Debug)]
pub struct PeerIp;

impl KeyExtractor for PeerIp {
    type Key = IpAddr;

    fn extract<T>(&self, req: &Request<T>) -> Result<IpAddr, GovernorError> {
        Ok(req
            .extensions()
            .get::<axum::extract::ConnectInfo<ClientAddr>>()
            .map(|c| c.0.0.ip())
            .unwrap_or(IpAddr::from([0, 0, 0, 0])))
    }
}
