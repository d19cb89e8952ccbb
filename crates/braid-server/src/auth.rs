//! Token authentication. With no tokens configured (the loopback default)
//! everything is allowed. Otherwise a request presents a token as
//! `Authorization: Bearer TOKEN` (or `?token=` where a browser cannot set
//! headers: EventSource, WebSocket); a read-only token may read, a
//! read-write token may also change things. Tokens are compared as BLAKE3
//! hashes, whose equality is constant-time, and every configured token is
//! checked, so timing says nothing about which one was close.

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    Read,
    Write,
}

#[derive(Clone, Debug, Default)]
pub struct Auth {
    tokens: Vec<(blake3::Hash, Access)>,
}

impl Auth {
    /// No tokens: every request is allowed (loopback only).
    pub fn open() -> Auth {
        Auth::default()
    }

    /// Read-write and read-only tokens. Empty strings are refused.
    pub fn with_tokens(write: &[String], read: &[String]) -> Result<Auth, crate::Error> {
        let mut tokens = Vec::new();
        for (list, access) in [(write, Access::Write), (read, Access::Read)] {
            for t in list {
                if t.trim().len() < 16 {
                    return Err(crate::Error::Invalid(
                        "a token must be at least 16 characters (try: openssl rand -hex 24)".into(),
                    ));
                }
                tokens.push((blake3::hash(t.as_bytes()), access));
            }
        }
        Ok(Auth { tokens })
    }

    pub fn is_open(&self) -> bool {
        self.tokens.is_empty()
    }

    /// What a presented token grants, checking every configured token.
    pub fn access(&self, presented: Option<&str>) -> Option<Access> {
        if self.is_open() {
            return Some(Access::Write);
        }
        let h = blake3::hash(presented?.as_bytes());
        let mut best = None;
        for (t, a) in &self.tokens {
            // blake3::Hash compares in constant time.
            if *t == h {
                best = best.max(Some(*a));
            }
        }
        best
    }
}

/// The token a request presents, from the header or the query string.
fn presented(req: &Request) -> Option<String> {
    if let Some(v) = req.headers().get(header::AUTHORIZATION)
        && let Ok(s) = v.to_str()
        && let Some(t) = s.strip_prefix("Bearer ")
    {
        return Some(t.trim().to_owned());
    }
    let q = req.uri().query()?;
    q.split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == "token")
        .map(|(_, v)| percent_decode(v))
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Middleware: 401 without a valid token, 403 when a read-only token tries
/// to write.
pub async fn require(
    State(auth): State<std::sync::Arc<Auth>>,
    req: Request,
    next: Next,
) -> Response {
    if auth.is_open() {
        return next.run(req).await;
    }
    let needs = match *req.method() {
        Method::GET | Method::HEAD | Method::OPTIONS => Access::Read,
        _ => Access::Write,
    };
    match auth.access(presented(&req).as_deref()) {
        None => {
            let mut r = ApiError {
                status: StatusCode::UNAUTHORIZED,
                code: "unauthorized",
                message: "this server needs a token: send `Authorization: Bearer TOKEN` (or ?token= for streams)".into(),
            }
            .into_response();
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                "Bearer".parse().expect("static header"),
            );
            r
        }
        Some(a) if a < needs => ApiError {
            status: StatusCode::FORBIDDEN,
            code: "forbidden",
            message: "this token is read-only; changing things needs a read-write token".into(),
        }
        .into_response(),
        Some(_) => next.run(req).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_grant_their_access_and_nothing_else() {
        let w = "w".repeat(20);
        let r = "r".repeat(20);
        let auth = Auth::with_tokens(std::slice::from_ref(&w), std::slice::from_ref(&r)).unwrap();
        assert_eq!(auth.access(Some(&w)), Some(Access::Write));
        assert_eq!(auth.access(Some(&r)), Some(Access::Read));
        assert_eq!(auth.access(Some("w")), None);
        assert_eq!(auth.access(None), None);
        assert!(Auth::with_tokens(&["short".into()], &[]).is_err());
        assert_eq!(Auth::open().access(None), Some(Access::Write));
        assert_eq!(percent_decode("a%2Fb+c"), "a/b c");
        assert_eq!(percent_decode("bad%2"), "bad%2");
    }
}
