//! braid-wsload: a load generator for event streams, run as its own
//! process. `fanout` opens N WebSocket clients in one room and publishes
//! events at a fixed rate through the server's HTTP API, measuring each
//! delivery's latency (publish time is carried in the event); it speaks
//! braid's `/ws` and socket.io's engine.io v4 protocol, so both servers are
//! measured by the same client. `idle` holds N idle connections (to read
//! the server's RSS). `edits` edits a task file N times and measures the
//! time until the change arrives on the WebSocket.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn usage() -> ! {
    eprintln!(
        "usage:
  braid-wsload fanout --proto braid|socketio --ws URL --post HOST:PORT --clients N --rate R --seconds S
  braid-wsload idle --ws URL --clients N        (holds until stdin closes)
  braid-wsload edits --ws URL --post HOST:PORT --dir TASKS_DIR --edits N"
    );
    std::process::exit(2)
}

struct Args(Vec<String>);

impl Args {
    fn get(&self, k: &str) -> Option<&str> {
        self.0
            .iter()
            .position(|a| a == k)
            .and_then(|i| self.0.get(i + 1))
            .map(String::as_str)
    }
    fn req(&self, k: &str) -> &str {
        self.get(k).unwrap_or_else(|| {
            eprintln!("missing {k}");
            usage()
        })
    }
    fn num(&self, k: &str, d: u64) -> u64 {
        self.get(k)
            .map_or(d, |v| v.parse().unwrap_or_else(|_| usage()))
    }
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros() as u64
}

#[tokio::main]
async fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let Some(mode) = argv.first().cloned() else {
        usage()
    };
    let a = Args(argv);
    let r = match mode.as_str() {
        "fanout" => fanout(&a).await,
        "idle" => idle(&a).await,
        "edits" => edits(&a).await,
        _ => usage(),
    };
    if let Err(e) = r {
        eprintln!("braid-wsload: {e}");
        std::process::exit(1);
    }
}

/// A keep-alive HTTP/1.1 connection for POSTs.
struct Http {
    r: BufReader<TcpStream>,
    host: String,
}

impl Http {
    async fn connect(host: &str) -> Res<Http> {
        let s = TcpStream::connect(host).await?;
        s.set_nodelay(true)?;
        Ok(Http {
            r: BufReader::new(s),
            host: host.to_owned(),
        })
    }

    async fn post(&mut self, path: &str, body: &str) -> Res<(u16, String)> {
        let req = format!(
            "POST {path} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            self.host,
            body.len()
        );
        self.r.get_mut().write_all(req.as_bytes()).await?;
        let mut status = 0;
        let mut len = 0;
        loop {
            let mut line = String::new();
            if self.r.read_line(&mut line).await? == 0 {
                return Err("connection closed".into());
            }
            if status == 0 {
                status = line
                    .split(' ')
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
            }
            let l = line.to_ascii_lowercase();
            if let Some(v) = l.strip_prefix("content-length:") {
                len = v.trim().parse().unwrap_or(0);
            }
            if line == "\r\n" {
                break;
            }
        }
        let mut body = vec![0; len];
        self.r.read_exact(&mut body).await?;
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}

/// Finds the publish time carried in a message: braid's event has
/// `"title":"wsload <us>"`, socket.io's `42["event",{"t":<us>}]`.
fn stamp(text: &str) -> Option<u64> {
    let rest = if let Some(i) = text.find("wsload ") {
        &text[i + 7..]
    } else if let Some(i) = text.find("\"t\":") {
        &text[i + 4..]
    } else {
        return None;
    };
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

/// Opens a client; for socket.io, completes the engine.io handshake and
/// joins the default namespace.
async fn open(url: &str, socketio: bool) -> Res<Ws> {
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await?;
    // Both protocols greet first: braid's hello, engine.io's open packet.
    let first = ws.next().await.ok_or("closed before greeting")??;
    if socketio {
        if !first.to_text().unwrap_or("").starts_with('0') {
            return Err(format!("unexpected engine.io greeting {first:?}").into());
        }
        ws.send(Message::Text("40".into())).await?;
        loop {
            let m = ws.next().await.ok_or("closed in handshake")??;
            if m.to_text().unwrap_or("").starts_with("40") {
                break;
            }
        }
    }
    Ok(ws)
}

/// Opens `n` clients, at most 200 handshakes at once.
async fn open_many(url: &str, n: usize, socketio: bool) -> Res<Vec<Ws>> {
    let sem = Arc::new(tokio::sync::Semaphore::new(200));
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let (url, sem) = (url.to_owned(), sem.clone());
        tasks.push(tokio::spawn(async move {
            let _p = sem.acquire().await;
            open(&url, socketio).await
        }));
    }
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(t.await??);
    }
    Ok(out)
}

/// The payload of the first whole (unmasked) frame in `b`, and the bytes it
/// takes.
fn frame(b: &[u8]) -> Option<(&[u8], usize)> {
    if b.len() < 2 {
        return None;
    }
    let (len, head) = match b[1] & 0x7f {
        126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
        127 if b.len() >= 10 => (u64::from_be_bytes(b[2..10].try_into().ok()?) as usize, 10),
        126 | 127 => return None,
        n => (n as usize, 2),
    };
    let end = head + len;
    (b.len() >= end).then(|| (&b[head..end], end))
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

async fn fanout(a: &Args) -> Res<()> {
    let socketio = a.req("--proto") == "socketio";
    let (url, post) = (a.req("--ws").to_owned(), a.req("--post").to_owned());
    let clients = a.num("--clients", 1000) as usize;
    let rate = a.num("--rate", 100);
    let seconds = a.num("--seconds", 10);
    let conns = open_many(&url, clients, socketio).await?;
    let received = Arc::new(AtomicUsize::new(0));
    let (done_tx, _) = tokio::sync::broadcast::channel::<()>(1);
    let mut readers = Vec::new();
    // After the handshake, each client reads its socket directly and picks
    // whole frames out of the bytes: server frames are unmasked, so this is
    // a few comparisons per message. A load generator should cost little
    // next to the server it measures (it shares this machine's two cores);
    // both servers are read the same way.
    for mut ws in conns {
        let received = received.clone();
        let mut done = done_tx.subscribe();
        readers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let tokio_tungstenite::MaybeTlsStream::Plain(sock) = ws.get_mut() else {
                return lat;
            };
            let mut buf: Vec<u8> = Vec::with_capacity(4096);
            let mut chunk = [0u8; 4096];
            loop {
                tokio::select! {
                    n = sock.read(&mut chunk) => {
                        let n = match n { Ok(0) | Err(_) => break, Ok(n) => n };
                        let t = now_us();
                        buf.extend_from_slice(&chunk[..n]);
                        while let Some((payload, used)) = frame(&buf) {
                            if let Some(s) = std::str::from_utf8(payload).ok().and_then(stamp) {
                                lat.push((s, t.saturating_sub(s)));
                                received.fetch_add(1, Ordering::Relaxed);
                            }
                            buf.drain(..used);
                        }
                    }
                    _ = done.recv() => break,
                }
            }
            lat
        }));
    }
    // Publishers: four connections, each at a quarter of the rate.
    let publishers = 4.min(rate.max(1)) as usize;
    let total = rate * seconds;
    let path = if socketio { "/publish" } else { "/api/tasks" };
    let start = Instant::now();
    let mut pubs = Vec::new();
    for p in 0..publishers {
        let post = post.clone();
        let n = total / publishers as u64 + u64::from((p as u64) < total % publishers as u64);
        let every = Duration::from_secs_f64(publishers as f64 / rate as f64);
        pubs.push(tokio::spawn(async move {
            let mut http = Http::connect(&post).await?;
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            for _ in 0..n {
                tick.tick().await;
                let body = if socketio {
                    format!(r#"{{"t":{}}}"#, now_us())
                } else {
                    format!(r#"{{"title":"wsload {}"}}"#, now_us())
                };
                let (status, b) = http.post(path, &body).await?;
                if !(200..300).contains(&status) {
                    return Err(format!("publish answered {status}: {b}").into());
                }
            }
            Res::Ok(())
        }));
    }
    for p in pubs {
        p.await??;
    }
    let published_in = start.elapsed();
    let expected = total as usize * clients;
    // Let deliveries drain (at most 10 s more).
    let drain = Instant::now();
    while received.load(Ordering::Relaxed) < expected && drain.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = done_tx.send(());
    let mut pairs = Vec::with_capacity(expected);
    for r in readers {
        pairs.extend(r.await?);
    }
    // Per event: when its first and last copies arrived, to tell the
    // publish path (first) from the fan-out itself (last - first).
    let mut per_event: std::collections::HashMap<u64, (u64, u64)> =
        std::collections::HashMap::new();
    for &(s, l) in &pairs {
        let e = per_event.entry(s).or_insert((u64::MAX, 0));
        e.0 = e.0.min(l);
        e.1 = e.1.max(l);
    }
    let mut first: Vec<u64> = per_event.values().map(|v| v.0).collect();
    let mut spread: Vec<u64> = per_event.values().map(|v| v.1 - v.0).collect();
    first.sort_unstable();
    spread.sort_unstable();
    let mut all: Vec<u64> = pairs.into_iter().map(|(_, l)| l).collect();
    all.sort_unstable();
    println!(
        "{}",
        serde_json::json!({
            "mode": "fanout",
            "proto": if socketio { "socketio" } else { "braid" },
            "clients": clients,
            "rate": rate,
            "seconds": seconds,
            "published": total,
            "publish_wall_s": published_in.as_secs_f64(),
            "expected": expected,
            "delivered": all.len(),
            "p50_ms": percentile(&all, 0.50),
            "p99_ms": percentile(&all, 0.99),
            "max_ms": all.last().map(|v| *v as f64 / 1000.0),
            "first_copy_p50_ms": percentile(&first, 0.50),
            "fanout_spread_p50_ms": percentile(&spread, 0.50),
        })
    );
    Ok(())
}

async fn idle(a: &Args) -> Res<()> {
    let url = a.req("--ws").to_owned();
    let clients = a.num("--clients", 10_000) as usize;
    let start = Instant::now();
    let conns = open_many(&url, clients, false).await?;
    println!(
        "{}",
        serde_json::json!({"mode": "idle", "open": conns.len(), "open_s": start.elapsed().as_secs_f64()})
    );
    // Hold them until told to stop (stdin closes).
    let mut buf = String::new();
    let _ = BufReader::new(tokio::io::stdin()).read_line(&mut buf).await;
    drop(conns);
    Ok(())
}

async fn edits(a: &Args) -> Res<()> {
    let url = a.req("--ws").to_owned();
    let dir = std::path::PathBuf::from(a.req("--dir"));
    let n = a.num("--edits", 200);
    let mut http = Http::connect(a.req("--post")).await?;
    let (status, body) = http
        .post("/api/tasks", r#"{"title":"edited by wsload"}"#)
        .await?;
    if status != 201 {
        return Err(format!("creating the task: {status} {body}").into());
    }
    let v: serde_json::Value = serde_json::from_str(&body)?;
    let id = v["id"].as_str().ok_or("no id")?.to_owned();
    let file = dir.join(format!("{id}.md"));
    let mut ws = open(&format!("{url}?rooms=task:{id}"), false).await?;
    let rev_of = |text: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix("rev: "))
            .map(str::to_owned)
    };
    let mut lat = Vec::new();
    let mut rejected = 0;
    for i in 0..n {
        // Wait for the file to show the store's current version (the
        // server rewrites it after each applied edit).
        let deadline = Instant::now() + Duration::from_secs(5);
        let text = loop {
            if let Ok(t) = std::fs::read_to_string(&file)
                && rev_of(&t).is_some()
            {
                break t;
            }
            if Instant::now() > deadline {
                return Err(format!("{} never appeared", file.display()).into());
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        let marker = format!("edit {i} ");
        let new_title = format!("title: {marker}{}", now_us());
        let edited: String = text
            .lines()
            .map(|l| {
                if l.starts_with("title: ") {
                    new_title.clone()
                } else {
                    l.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
            + "\n";
        let old_rev = rev_of(&text);
        let t0 = Instant::now();
        std::fs::write(&file, edited)?;
        loop {
            let m = tokio::time::timeout(Duration::from_secs(5), ws.next())
                .await
                .map_err(|_| format!("edit {i}: no event within 5 s"))?
                .ok_or("closed")??;
            let Message::Text(t) = m else { continue };
            if t.as_str().contains(&marker) {
                lat.push(t0.elapsed().as_micros() as u64);
                break;
            }
            if t.as_str().contains("sync_rejected") {
                rejected += 1;
                break;
            }
        }
        // Wait for the rewrite with the new rev before the next edit.
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::read_to_string(&file).ok().and_then(|t| rev_of(&t)) == old_rev {
            if Instant::now() > deadline {
                return Err("the file was not rewritten after an edit".into());
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    lat.sort_unstable();
    println!(
        "{}",
        serde_json::json!({
            "mode": "edits",
            "edits": n,
            "delivered": lat.len(),
            "rejected": rejected,
            "p50_ms": percentile(&lat, 0.50),
            "p99_ms": percentile(&lat, 0.99),
            "max_ms": lat.last().map(|v| *v as f64 / 1000.0),
        })
    );
    Ok(())
}
