//! Who may talk to the server at all: one layer in front of every route,
//! before authentication, so it holds with and without a token.
//!
//! - **Host.** A page on another site can rebind its name to 127.0.0.1 and
//!   then talk to braid as if it were that site (DNS rebinding). Its
//!   requests still carry its own name in `Host`, so the `Host` header must
//!   name this server exactly: the address it listens on, `localhost`,
//!   `127.0.0.1` or `[::1]` with its port, or a name in `[server]
//!   allowed_hosts`. Exact, not a suffix: `localhost.evil.example` is not
//!   `localhost`.
//! - **Origin.** Browsers send `Origin` with every cross-site write and every
//!   WebSocket upgrade, and apply no CORS to WebSockets. A request that
//!   carries an `Origin` must come from the board's own origin (scheme,
//!   host, port) or one in `[server] allowed_origins`; `null` and another
//!   port on localhost are refused. No `Origin` at all is a program (the
//!   CLI, a script, an MCP client), which a browser page cannot pretend to
//!   be.
//! - **Headers** on every answer: a Content-Security-Policy without inline
//!   script that forbids framing, `nosniff`, no referrer.
//!
//! Refusals are `403` with a JSON error saying how to allow the name, and
//! are logged once per name (the set of names logged is bounded).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// The board's policy: its own scripts, styles and connections only
/// (`'self'` covers `ws:` to the same host), no plugins, never framed.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// At most this many refused names are remembered for logging once.
const LOGGED_MAX: usize = 256;

/// Who may talk to the server.
#[derive(Clone, Debug)]
pub struct Guard {
    /// `Host` values accepted, lower case, with port.
    hosts: HashSet<String>,
    /// Names in `allowed_hosts` given without a port: accepted on any port.
    any_port: HashSet<String>,
    /// Origins accepted besides the board's own, lower case, without a
    /// trailing slash.
    origins: HashSet<String>,
    logged: Arc<Mutex<HashSet<String>>>,
}

impl Default for Guard {
    /// The default address (127.0.0.1:7777), nothing else allowed.
    fn default() -> Guard {
        Guard::new(SocketAddr::from(([127, 0, 0, 1], 7777)), &[], &[])
    }
}

impl Guard {
    /// For a server listening on `addr`, with `[server] allowed_hosts` and
    /// `allowed_origins`.
    pub fn new(addr: SocketAddr, allowed_hosts: &[String], allowed_origins: &[String]) -> Guard {
        let port = addr.port();
        let mut hosts = HashSet::new();
        for name in ["localhost", "127.0.0.1", "[::1]"] {
            hosts.insert(format!("{name}:{port}"));
        }
        if !addr.ip().is_unspecified() {
            // `SocketAddr` writes an IPv6 address in brackets, as `Host` does.
            hosts.insert(addr.to_string().to_ascii_lowercase());
        }
        let mut any_port = HashSet::new();
        for h in allowed_hosts {
            let h = h.trim().to_ascii_lowercase();
            if has_port(&h) {
                hosts.insert(h);
            } else {
                any_port.insert(h);
            }
        }
        let origins = allowed_origins
            .iter()
            .map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase())
            .collect();
        Guard {
            hosts,
            any_port,
            origins,
            logged: Arc::default(),
        }
    }

    /// Whether `host` (a `Host` header's value) names this server.
    pub fn host_ok(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        if self.hosts.contains(&host) {
            return true;
        }
        let name = if has_port(&host) {
            &host[..host.rfind(':').unwrap_or(host.len())]
        } else {
            host.as_str()
        };
        self.any_port.contains(name)
    }

    /// Whether a request to `host` carrying `origin` may go on.
    pub fn origin_ok(&self, host: &str, origin: &str) -> bool {
        let origin = origin.trim_end_matches('/').to_ascii_lowercase();
        // The board is served over plain HTTP by braid itself.
        origin == format!("http://{}", host.to_ascii_lowercase()) || self.origins.contains(&origin)
    }

    /// Logs a refusal the first time a name is seen.
    fn log_once(&self, what: &str, value: &str) {
        let mut logged = self.logged.lock().unwrap_or_else(|p| p.into_inner());
        if logged.len() < LOGGED_MAX && logged.insert(format!("{what} {value}")) {
            tracing::warn!(%what, value = %value.escape_debug(), "refused a request (logged once per name)");
        }
    }
}

/// Whether a host value ends in `:port` (an IPv6 literal's colons are inside
/// its brackets).
fn has_port(h: &str) -> bool {
    match h.rfind(':') {
        Some(i) => {
            !h[..i].is_empty() && h[i + 1..].bytes().all(|b| b.is_ascii_digit()) && {
                let head = &h[..i];
                !head.starts_with('[') || head.ends_with(']')
            }
        }
        None => false,
    }
}

fn forbidden(code: &'static str, message: String) -> Response {
    ApiError {
        status: StatusCode::FORBIDDEN,
        code,
        message,
    }
    .into_response()
}

/// The layer: checks `Host` and `Origin`, then sets the security headers on
/// whatever answers.
pub async fn check(State(guard): State<Arc<Guard>>, req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.to_string()));
    let Some(host) = host.clone().filter(|h| guard.host_ok(h)) else {
        let shown = host.unwrap_or_default();
        guard.log_once("host", &shown);
        return secured(forbidden(
            "forbidden_host",
            format!(
                "this server does not answer to the name {shown:?} (a page that rebinds its name to this machine \
                 sends exactly that); to reach braid under that name, add it to [server] allowed_hosts \
                 in .braid/config.toml"
            ),
        ));
    };
    if let Some(origin) = req.headers().get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        if !guard.origin_ok(&host, origin) {
            guard.log_once("origin", origin);
            return secured(forbidden(
                "forbidden_origin",
                format!(
                    "requests from the page at {origin:?} are refused: only the board itself \
                     (http://{host}) and programs that send no Origin may talk to braid; to allow \
                     that site, add it to [server] allowed_origins in .braid/config.toml"
                ),
            ));
        }
    }
    secured(next.run(req).await)
}

/// The security headers, on every answer.
fn secured(mut res: Response) -> Response {
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_match_exactly_with_their_port() {
        let g = Guard::new(
            "127.0.0.1:7777".parse().unwrap(),
            &["braid.lan".into(), "ci.example:9000".into()],
            &[],
        );
        for ok in [
            "127.0.0.1:7777",
            "localhost:7777",
            "LOCALHOST:7777",
            "[::1]:7777",
            "braid.lan:7777",
            "braid.lan",
            "ci.example:9000",
        ] {
            assert!(g.host_ok(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "localhost",
            "localhost:7778",
            "localhost.evil.example:7777",
            "127.0.0.1.nip.io:7777",
            "127.0.0.1:77770",
            "ci.example:9001",
            "ci.example",
            "",
            "[::1]",
            "0.0.0.0:7777",
        ] {
            assert!(!g.host_ok(bad), "{bad}");
        }
    }

    #[test]
    fn origins_are_the_boards_own_or_listed() {
        let g = Guard::new(
            "127.0.0.1:7777".parse().unwrap(),
            &[],
            &["https://dash.example/".into()],
        );
        assert!(g.origin_ok("127.0.0.1:7777", "http://127.0.0.1:7777"));
        assert!(g.origin_ok("localhost:7777", "http://localhost:7777/"));
        assert!(g.origin_ok("localhost:7777", "https://dash.example"));
        for bad in [
            "null",
            "http://localhost:7778",
            "http://127.0.0.1:7777.evil.example",
            "https://127.0.0.1:7777",
            "http://evil.example",
            "",
        ] {
            assert!(!g.origin_ok("127.0.0.1:7777", bad), "{bad}");
        }
        // The board's origin is the one it was reached by.
        assert!(!g.origin_ok("localhost:7777", "http://127.0.0.1:7777"));
    }
}
