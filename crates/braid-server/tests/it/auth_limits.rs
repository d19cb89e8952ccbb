//! Limits and auth over real sockets: per-IP rate (429 + Retry-After),
//! connection caps (503 naming the cap), body size (413), request timeout
//! (408); tokens (none, wrong, read-only writing, read-write, ?token= on
//! streams); /metrics; no internals in errors.

use std::time::Duration;

use braid_server::Auth;
use braid_server::config::Limits;
use tokio::io::AsyncWriteExt;

use crate::common::{Server, Setup, Sse, http};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_over_the_rate_get_429_with_retry_after() {
    let limits = Limits {
        rate_per_second: 1,
        rate_burst: 3,
        ..Limits::default()
    };
    let mut s = Server::start(Setup {
        limits: Some(limits),
        ..Setup::default()
    })
    .await;
    let mut statuses = Vec::new();
    let mut limited = None;
    for _ in 0..6 {
        let r = http(s.addr, "GET", "/api/health", &[], None).await;
        statuses.push(r.status);
        if r.status == 429 {
            limited = Some(r);
        }
    }
    assert_eq!(&statuses[..3], &[200, 200, 200], "the burst passes");
    let r = limited.expect("past the burst, requests are limited");
    let retry: u64 = r.headers["retry-after"].parse().unwrap();
    assert!((1..=2).contains(&retry), "retry-after {retry}");
    assert_eq!(r.json()["error"]["code"], "rate_limited");
    // Health checks are not rate limited.
    assert_eq!(http(s.addr, "GET", "/healthz", &[], None).await.status, 200);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_caps_are_refused_with_503() {
    let limits = Limits {
        max_connections_per_ip: 2,
        max_connections: 3,
        ..Limits::default()
    };
    let mut s = Server::start(Setup {
        limits: Some(limits),
        ..Setup::default()
    })
    .await;
    // Two streams from 127.0.0.1 hold two connections.
    let (_, mut a) = Sse::connect(s.addr, "/events", &[]).await;
    let (_, mut b) = Sse::connect(s.addr, "/events", &[]).await;
    a.next().await.unwrap();
    b.next().await.unwrap();
    let r = http(s.addr, "GET", "/api/health", &[], None).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], "too_many_connections");
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("your address")
    );
    // From another loopback address the per-IP cap is fresh, but the
    // global cap (3) is reached with one more.
    let other = std::net::SocketAddr::from(([127, 0, 0, 2], 0));
    let conn = |from: std::net::SocketAddr| async move {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind(from).unwrap();
        sock.connect(s.addr).await.unwrap()
    };
    let mut held = conn(other).await;
    held.write_all(b"GET /api/health HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut c = conn(other).await;
    c.write_all(b"GET /api/health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut raw = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut c, &mut raw)
        .await
        .unwrap();
    let r = crate::common::parse_response(&raw);
    assert_eq!(r.status, 503);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("as many connections")
    );
    // Closing a stream frees its place: once the server has seen both go
    // (only `b` is left open), the next connection is served.
    drop(a);
    drop(held);
    tokio::time::timeout(crate::common::WAIT, s.connections.wait_for(|n| *n <= 1))
        .await
        .expect("the server sees the connections close")
        .unwrap();
    let r = http(s.addr, "GET", "/api/health", &[], None).await;
    assert_eq!(
        r.status, 200,
        "a freed place is given to the next connection"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_get_413_and_slow_requests_408() {
    let limits = Limits {
        max_body: 1024,
        request_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let mut s = Server::start(Setup {
        limits: Some(limits),
        ..Setup::default()
    })
    .await;
    let big = format!(r#"{{"title":"{}"}}"#, "x".repeat(4000));
    let r = http(s.addr, "POST", "/api/tasks", &[], Some(&big)).await;
    assert_eq!(r.status, 413, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], "too_large");
    assert_eq!(s.store.health().unwrap().total, 0, "nothing was created");
    // A body that never finishes arriving: the request times out.
    let mut c = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let head = format!(
        "POST /api/tasks HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"title\":",
        s.addr
    );
    c.write_all(head.as_bytes()).await.unwrap();
    let mut raw = vec![0; 4096];
    let n = tokio::time::timeout(
        crate::common::WAIT,
        tokio::io::AsyncReadExt::read(&mut c, &mut raw),
    )
    .await
    .unwrap()
    .unwrap();
    let r = crate::common::parse_response(&raw[..n]);
    assert_eq!(r.status, 408);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_gate_reads_and_writes() {
    let write = "w".repeat(24);
    let read = "r".repeat(24);
    let auth =
        Auth::with_tokens(std::slice::from_ref(&write), std::slice::from_ref(&read)).unwrap();
    let mut s = Server::start(Setup {
        auth: Some(auth),
        ..Setup::default()
    })
    .await;
    let bearer = |t: &str| format!("Bearer {t}");
    let body = r#"{"title":"guarded"}"#;
    let none = http(s.addr, "GET", "/api/tasks", &[], None).await;
    assert_eq!(none.status, 401);
    assert_eq!(none.json()["error"]["code"], "unauthorized");
    assert_eq!(none.headers["www-authenticate"], "Bearer");
    let wrong = http(
        s.addr,
        "GET",
        "/api/tasks",
        &[("authorization", &bearer("nope-nope-nope-nope"))],
        None,
    )
    .await;
    assert_eq!(wrong.status, 401);
    let r = http(
        s.addr,
        "GET",
        "/api/tasks",
        &[("authorization", &bearer(&read))],
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    let r = http(
        s.addr,
        "POST",
        "/api/tasks",
        &[("authorization", &bearer(&read))],
        Some(body),
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"]["code"], "forbidden");
    assert_eq!(
        s.store.health().unwrap().total,
        0,
        "a refused write changes nothing"
    );
    let r = http(
        s.addr,
        "POST",
        "/api/tasks",
        &[("authorization", &bearer(&write))],
        Some(body),
    )
    .await;
    assert_eq!(r.status, 201);
    // Streams take ?token= (browsers cannot set headers on EventSource).
    let (st, _) = Sse::connect(s.addr, "/events", &[]).await;
    assert_eq!(st, 401);
    let (st, mut sse) = Sse::connect(s.addr, &format!("/events?token={read}"), &[]).await;
    assert_eq!(st, 200);
    assert_eq!(sse.next().await.unwrap().event, "hello");
    let ws = tokio_tungstenite::connect_async(s.ws_url("")).await;
    assert!(ws.is_err(), "a WebSocket without a token is refused");
    assert!(
        tokio_tungstenite::connect_async(s.ws_url(&format!("?token={read}")))
            .await
            .is_ok()
    );
    // The board page and health checks need no token; metrics do.
    assert_eq!(http(s.addr, "GET", "/", &[], None).await.status, 200);
    assert_eq!(http(s.addr, "GET", "/healthz", &[], None).await.status, 200);
    assert_eq!(http(s.addr, "GET", "/metrics", &[], None).await.status, 401);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_cover_requests_connections_and_events() {
    let mut s = Server::start(Setup::default()).await;
    let (_, mut sse) = Sse::connect(s.addr, "/events", &[]).await;
    sse.next().await.unwrap();
    let id = s.add("x");
    let m = sse.next().await.unwrap();
    assert!(m.data.contains(id.as_str()));
    http(s.addr, "GET", &format!("/api/tasks/{id}"), &[], None).await;
    let r = http(s.addr, "GET", "/metrics", &[], None).await;
    assert_eq!(r.status, 200);
    assert!(r.headers["content-type"].starts_with("text/plain"));
    for want in [
        "braid_http_request_duration_seconds_bucket{route=\"/api/tasks/{id}\",method=\"GET\",status=\"200\"",
        "braid_open_connections",
        "braid_open_streams{kind=\"sse\"}",
        "braid_events_published_total",
        "braid_events_delivered_total{kind=\"sse\"}",
    ] {
        assert!(r.body.contains(want), "missing {want} in\n{}", r.body);
    }
    // Errors never leak internals.
    let r = http(s.addr, "GET", "/api/tasks/br-%2e%2e%2fetc", &[], None).await;
    assert!(r.status == 400 || r.status == 404, "{}", r.status);
    for leak in ["sqlite", "SELECT", "/tmp", "panicked", ".rs:"] {
        assert!(!r.body.contains(leak), "{leak} in {}", r.body);
    }
    s.stop().await;
}
