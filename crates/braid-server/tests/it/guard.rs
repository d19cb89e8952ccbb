//! The server as an attacker meets it: forged `Host` (DNS rebinding) and
//! `Origin` (a page on another site) on every kind of route — reads,
//! writes, WebSocket, SSE, logs — with and without a token, over raw TCP
//! as curl would send them.

use std::net::SocketAddr;

use braid_server::Auth;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::{Server, Setup, WAIT, http};

/// Sends a request and reads only its status line and headers (a stream
/// that was let in stays open; the test does not wait for its end).
async fn head(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    tokio::time::timeout(WAIT, async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let mut req = format!("{method} {path} HTTP/1.1\r\n");
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
            req.push_str(&format!("host: {addr}\r\n"));
        }
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if method == "POST" {
            let body = r#"{"title":"planted"}"#;
            req.push_str(&format!(
                "content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            ));
        } else {
            req.push_str("\r\n");
        }
        s.write_all(req.as_bytes()).await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&got).into_owned();
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        (status, text.to_ascii_lowercase())
    })
    .await
    .expect("an answer in time")
}

const WS: &[(&str, &str)] = &[
    ("upgrade", "websocket"),
    ("connection", "Upgrade"),
    ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ("sec-websocket-version", "13"),
];

/// Every kind of route, as (method, path, extra headers).
fn routes(task: &str) -> Vec<(&'static str, String, Vec<(&'static str, &'static str)>)> {
    vec![
        ("GET", "/api/tasks".into(), vec![]),
        ("GET", "/".into(), vec![]),
        ("POST", "/api/tasks".into(), vec![]),
        (
            "POST",
            format!("/api/tasks/{task}/done"),
            vec![("content-type", "application/json")],
        ),
        ("GET", "/ws".into(), WS.to_vec()),
        (
            "GET",
            "/events".into(),
            vec![("accept", "text/event-stream")],
        ),
        ("GET", format!("/api/tasks/{task}/logs"), vec![]),
        (
            "GET",
            format!("/api/tasks/{task}/logs/1-agent.log/follow"),
            vec![],
        ),
    ]
}

fn with<'a>(base: &[(&'a str, &'a str)], more: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    base.iter().chain(more).copied().collect()
}

#[tokio::test]
async fn a_forged_host_is_refused_on_every_route_before_anything_happens() {
    let mut s = Server::start(Setup::default()).await;
    let task = s.add("mine").to_string();
    let port = s.addr.port();
    let rebound = [
        "evil.example".to_owned(),
        format!("evil.example:{port}"),
        format!("localhost.evil.example:{port}"),
        format!("127.0.0.1.nip.io:{port}"),
        format!("localhost:{}", port + 1),
        String::new(),
    ];
    for host in &rebound {
        for (method, path, extra) in routes(&task) {
            let headers = with(&extra, &[("host", host.as_str())]);
            let (status, text) = head(s.addr, method, &path, &headers).await;
            assert_eq!(status, 403, "{method} {path} with Host {host:?}: {text}");
            assert!(text.contains("content-security-policy"), "{text}");
        }
    }
    // The refusal says how to allow a name, and nothing was written.
    let r = http(
        s.addr,
        "POST",
        "/api/tasks",
        &[("host", "evil.example")],
        Some(r#"{"title":"x"}"#),
    )
    .await;
    assert_eq!(r.json()["error"]["code"], "forbidden_host", "{}", r.body);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("allowed_hosts")
    );
    let list = http(s.addr, "GET", "/api/tasks", &[], None).await;
    assert_eq!(list.status, 200);
    assert_eq!(list.json().as_array().unwrap().len(), 1, "{}", list.body);
    assert_eq!(
        s.store
            .task(&task.parse().unwrap())
            .unwrap()
            .state
            .to_string(),
        "open"
    );
    s.stop().await;
}

#[tokio::test]
async fn a_foreign_origin_is_refused_and_the_boards_own_and_programs_are_let_in() {
    let mut s = Server::start(Setup::default()).await;
    let task = s.add("mine").to_string();
    let port = s.addr.port();
    let other_port = format!("http://127.0.0.1:{}", port + 1);
    let secure_self = format!("https://127.0.0.1:{port}");
    for origin in [
        "http://evil.example",
        "null",
        other_port.as_str(),
        secure_self.as_str(),
    ] {
        for (method, path, extra) in routes(&task) {
            let headers = with(&extra, &[("origin", origin)]);
            let (status, text) = head(s.addr, method, &path, &headers).await;
            assert_eq!(status, 403, "{method} {path} from {origin}: {text}");
        }
    }
    let r = http(
        s.addr,
        "POST",
        "/api/tasks",
        &[("origin", "http://evil.example")],
        Some(r#"{"title":"x"}"#),
    )
    .await;
    assert_eq!(r.json()["error"]["code"], "forbidden_origin", "{}", r.body);
    assert_eq!(
        http(s.addr, "GET", "/api/tasks", &[], None)
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        1,
        "nothing planted"
    );
    // The board's own origin, and a program sending none, get in.
    let own = format!("http://{}", s.addr);
    for origin in [Some(own.as_str()), None] {
        let o: Vec<(&str, &str)> = origin.map(|o| ("origin", o)).into_iter().collect();
        let (status, text) = head(s.addr, "GET", "/ws", &with(WS, &o)).await;
        assert_eq!(status, 101, "{origin:?}: {text}");
        let (status, _) = head(
            s.addr,
            "GET",
            "/events",
            &with(&[("accept", "text/event-stream")], &o),
        )
        .await;
        assert_eq!(status, 200, "{origin:?}");
        let (status, _) = head(s.addr, "POST", "/api/tasks", &o).await;
        assert_eq!(status, 201, "{origin:?}");
    }
    // Reached as localhost, the board's origin is http://localhost:PORT.
    let local = format!("localhost:{port}");
    let local_origin = format!("http://localhost:{port}");
    let (status, _) = head(
        s.addr,
        "GET",
        "/ws",
        &with(WS, &[("host", &local), ("origin", &local_origin)]),
    )
    .await;
    assert_eq!(status, 101);
    let (status, _) = head(
        s.addr,
        "GET",
        "/ws",
        &with(WS, &[("host", &local), ("origin", &own)]),
    )
    .await;
    assert_eq!(
        status, 403,
        "another name of the same server is another origin"
    );
    s.stop().await;
}

#[tokio::test]
async fn the_checks_hold_with_a_token_and_listed_names_are_let_in() {
    let token = "a-token-of-enough-length";
    let mut s = Server::start(Setup {
        auth: Some(Auth::with_tokens(&[token.into()], &[]).unwrap()),
        allowed_hosts: vec!["braid.lan".into()],
        allowed_origins: vec!["https://dash.example".into()],
        ..Setup::default()
    })
    .await;
    let bearer = format!("Bearer {token}");
    let auth = [("authorization", bearer.as_str())];
    // A valid token does not make a forged Host or Origin acceptable.
    let (status, _) = head(
        s.addr,
        "POST",
        "/api/tasks",
        &with(&auth, &[("host", "evil.example")]),
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = head(
        s.addr,
        "POST",
        "/api/tasks",
        &with(&auth, &[("origin", "http://evil.example")]),
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = head(
        s.addr,
        "GET",
        "/ws?token=a-token-of-enough-length",
        &with(WS, &[("origin", "http://evil.example")]),
    )
    .await;
    assert_eq!(status, 403);
    // Listed names pass the guard (and then need the token like anyone).
    let (status, _) = head(
        s.addr,
        "POST",
        "/api/tasks",
        &with(&auth, &[("host", "braid.lan")]),
    )
    .await;
    assert_eq!(status, 201);
    let (status, _) = head(s.addr, "POST", "/api/tasks", &[("host", "braid.lan")]).await;
    assert_eq!(
        status, 401,
        "the guard comes before the token, not instead of it"
    );
    let (status, _) = head(
        s.addr,
        "POST",
        "/api/tasks",
        &with(&auth, &[("origin", "https://dash.example")]),
    )
    .await;
    assert_eq!(status, 201);
    s.stop().await;
}

#[tokio::test]
async fn the_board_and_the_api_carry_the_security_headers() {
    let mut s = Server::start(Setup::default()).await;
    for path in [
        "/",
        "/board.js",
        "/api/tasks",
        "/api/health",
        "/no-such-route",
    ] {
        let r = http(s.addr, "GET", path, &[], None).await;
        let csp = r
            .headers
            .get("content-security-policy")
            .unwrap_or_else(|| panic!("{path}: no CSP"));
        assert!(
            csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"),
            "{csp}"
        );
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        assert_eq!(
            r.headers.get("x-content-type-options").map(String::as_str),
            Some("nosniff"),
            "{path}"
        );
        assert_eq!(
            r.headers.get("referrer-policy").map(String::as_str),
            Some("no-referrer"),
            "{path}"
        );
        assert_eq!(
            r.headers.get("x-frame-options").map(String::as_str),
            Some("DENY"),
            "{path}"
        );
    }
    s.stop().await;
}
