//! The `[server]` table of `.braid/config.toml`: address, limits, stream
//! bounds and file sync. Parsed strictly (an unknown key is an error naming
//! its line); every value has a default.

use crate::Error;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use crate::hub::StreamConfig;

#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub bind: SocketAddr,
    pub limits: Limits,
    pub streams: StreamConfig,
    /// Mirror tasks to `.braid/tasks/<id>.md` and apply edits back.
    pub sync: bool,
    pub sync_debounce: Duration,
    /// How long shutdown waits for requests and streams before it stops.
    pub shutdown_grace: Duration,
    /// Names besides the listening address, `localhost`, `127.0.0.1` and
    /// `[::1]` that the `Host` header may carry (`name` on any port, or
    /// `name:port`).
    pub allowed_hosts: Vec<String>,
    /// Origins besides the board's own whose pages may write and stream
    /// (`scheme://host[:port]`).
    pub allowed_origins: Vec<String>,
}

/// Request and connection limits.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Requests per second allowed per client IP (sustained)...
    pub rate_per_second: u32,
    /// ...and the burst above it.
    pub rate_burst: u32,
    /// Open connections allowed from one IP.
    pub max_connections_per_ip: usize,
    /// Open connections allowed in all.
    pub max_connections: usize,
    /// The largest request body accepted, in bytes.
    pub max_body: usize,
    /// A request (not a stream) that takes longer is answered 408.
    pub request_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            rate_per_second: 200,
            rate_burst: 400,
            max_connections_per_ip: 1024,
            max_connections: 16_384,
            max_body: 1 << 20,
            request_timeout: Duration::from_secs(30),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 7777)),
            limits: Limits::default(),
            streams: StreamConfig::default(),
            sync: true,
            sync_debounce: Duration::from_millis(50),
            shutdown_grace: Duration::from_secs(10),
            allowed_hosts: Vec::new(),
            allowed_origins: Vec::new(),
        }
    }
}

#[derive(Deserialize)]
struct RawTop {
    #[serde(default)]
    server: Option<RawServer>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    bind: Option<String>,
    rate_per_second: Option<u32>,
    rate_burst: Option<u32>,
    max_connections_per_ip: Option<usize>,
    max_connections: Option<usize>,
    max_body: Option<String>,
    request_timeout: Option<String>,
    send_queue: Option<usize>,
    resume_window: Option<i64>,
    send_timeout: Option<String>,
    sync: Option<bool>,
    sync_debounce: Option<String>,
    shutdown_grace: Option<String>,
    allowed_hosts: Option<Vec<String>>,
    allowed_origins: Option<Vec<String>>,
}

impl ServerConfig {
    /// Reads `[server]` from a config file; a missing file or table gives
    /// the defaults.
    pub fn load(path: &std::path::Path) -> Result<ServerConfig, Error> {
        match std::fs::read_to_string(path) {
            Ok(text) => ServerConfig::parse(&path.display().to_string(), &text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ServerConfig::default()),
            Err(e) => Err(Error::io(path.display().to_string())(e)),
        }
    }

    pub fn parse(file: &str, text: &str) -> Result<ServerConfig, Error> {
        let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
        let line_with = |key: &str| {
            text.lines()
                .position(|l| l.trim_start().starts_with(key))
                .map_or(0, |i| i + 1)
        };
        let raw: RawTop = toml::from_str(text).map_err(|e| Error::Config {
            file: file.to_owned(),
            line: e.span().map(|s| line_of(s.start)).unwrap_or(0),
            message: braid_app::units::in_words(e.message().trim()),
        })?;
        let mut c = ServerConfig::default();
        let Some(r) = raw.server else { return Ok(c) };
        let bad = |key: &str, msg: String| Error::Config {
            file: file.to_owned(),
            line: line_with(key),
            message: format!("[server] {key}: {msg}"),
        };
        let dur = |key: &str, v: &Option<String>, d: Duration| match v {
            None => Ok(d),
            Some(s) => humantime::parse_duration(s)
                .map_err(|e| bad(key, format!("{s:?}: {e} (use 50ms, 30s, 5m)"))),
        };
        if let Some(b) = &r.bind {
            c.bind = b.parse().map_err(|_| {
                bad(
                    "bind",
                    format!("{b:?} is not an address like 127.0.0.1:7777"),
                )
            })?;
        }
        let l = &mut c.limits;
        l.rate_per_second = r.rate_per_second.unwrap_or(l.rate_per_second);
        l.rate_burst = r.rate_burst.unwrap_or(l.rate_burst);
        l.max_connections_per_ip = r.max_connections_per_ip.unwrap_or(l.max_connections_per_ip);
        l.max_connections = r.max_connections.unwrap_or(l.max_connections);
        if let Some(s) = &r.max_body {
            l.max_body = braid_app::units::parse_size(s)
                .map_err(|e| bad("max_body", e.to_string()))? as usize;
        }
        l.request_timeout = dur("request_timeout", &r.request_timeout, l.request_timeout)?;
        for (key, v) in [
            ("rate_per_second", l.rate_per_second as usize),
            ("rate_burst", l.rate_burst as usize),
            ("max_connections_per_ip", l.max_connections_per_ip),
            ("max_connections", l.max_connections),
            ("max_body", l.max_body),
        ] {
            if v == 0 {
                return Err(bad(key, "must be at least 1".into()));
            }
        }
        let s = &mut c.streams;
        s.send_queue = r.send_queue.unwrap_or(s.send_queue);
        s.resume_window = r.resume_window.unwrap_or(s.resume_window);
        s.send_timeout = dur("send_timeout", &r.send_timeout, s.send_timeout)?;
        if s.send_queue == 0 || s.send_queue > 1 << 20 {
            return Err(bad("send_queue", "must be between 1 and 1048576".into()));
        }
        if s.resume_window < 0 {
            return Err(bad("resume_window", "must not be negative".into()));
        }
        c.sync = r.sync.unwrap_or(c.sync);
        c.sync_debounce = dur("sync_debounce", &r.sync_debounce, c.sync_debounce)?;
        c.shutdown_grace = dur("shutdown_grace", &r.shutdown_grace, c.shutdown_grace)?;
        for h in r.allowed_hosts.unwrap_or_default() {
            // A name, with a port or not: nothing that widens it.
            let ok = !h.is_empty()
                && h.len() <= 255
                && h.chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || "-.:[]".contains(ch));
            if !ok {
                return Err(bad(
                    "allowed_hosts",
                    format!(
                        "{h:?} is not a host name (write braid.lan or braid.lan:7777; no scheme, path or wildcard)"
                    ),
                ));
            }
            c.allowed_hosts.push(h);
        }
        for o in r.allowed_origins.unwrap_or_default() {
            let (scheme, rest) = o.split_once("://").unwrap_or(("", ""));
            let ok = matches!(scheme, "http" | "https")
                && !rest.is_empty()
                && !rest.trim_end_matches('/').contains('/')
                && rest
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || "-.:[]/".contains(ch));
            if !ok {
                return Err(bad(
                    "allowed_origins",
                    format!(
                        "{o:?} is not an origin (write https://dash.example or http://host:port; no path, no wildcard, not null)"
                    ),
                ));
            }
            c.allowed_origins.push(o);
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_server_table_and_ignores_the_others() {
        let c = ServerConfig::parse(
            "c.toml",
            "[run]\njobs = 2\n[server]\nbind = \"0.0.0.0:9000\"\nmax_body = \"64KiB\"\nsend_timeout = \"2s\"\n",
        )
        .unwrap();
        assert_eq!(c.bind.port(), 9000);
        assert_eq!(c.limits.max_body, 64 * 1024);
        assert_eq!(c.streams.send_timeout, Duration::from_secs(2));
    }

    #[test]
    fn allowed_hosts_and_origins_are_names_not_patterns() {
        let c = ServerConfig::parse(
            "c.toml",
            "[server]\nallowed_hosts = [\"braid.lan\", \"ci:9000\"]\nallowed_origins = [\"https://dash.example\"]\n",
        )
        .unwrap();
        assert_eq!(c.allowed_hosts, ["braid.lan", "ci:9000"]);
        assert_eq!(c.allowed_origins, ["https://dash.example"]);
        for (bad, key) in [
            ("allowed_hosts = [\"*\"]", "allowed_hosts"),
            ("allowed_hosts = [\"http://braid.lan\"]", "allowed_hosts"),
            ("allowed_origins = [\"*\"]", "allowed_origins"),
            ("allowed_origins = [\"null\"]", "allowed_origins"),
            (
                "allowed_origins = [\"https://a.example/path\"]",
                "allowed_origins",
            ),
        ] {
            let e = ServerConfig::parse("c.toml", &format!("[server]\n{bad}\n"))
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("c.toml:2:") && e.contains(key), "{bad}: {e}");
        }
    }

    #[test]
    fn an_unknown_or_bad_key_names_its_line() {
        let e = ServerConfig::parse("c.toml", "[server]\nbind = \"127.0.0.1:1\"\nport = 3\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("c.toml:3:") && e.contains("port"), "{e}");
        let e = ServerConfig::parse("c.toml", "[server]\n\nsend_timeout = \"soon\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("c.toml:3:") && e.contains("send_timeout"),
            "{e}"
        );
        let e = ServerConfig::parse("c.toml", "[server]\nmax_connections = 0\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("max_connections") && e.contains("at least 1"),
            "{e}"
        );
    }
}
