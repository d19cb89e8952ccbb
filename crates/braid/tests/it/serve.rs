//! `braid serve` and `braid sync` as real processes: refusing a public
//! address without a token, no accepted write lost across SIGTERM, the
//! engine in the server with its metrics, one-shot file sync.

use std::io::{BufRead, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::{Proj, Reap};

/// Starts `braid serve` and returns it with the address it printed.
pub(crate) fn serve(p: &Proj, extra: &[&str]) -> (Reap, SocketAddr) {
    let mut child = p
        .cmd()
        .args(["serve", "--bind", "127.0.0.1:0"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(out).lines() {
            let Ok(l) = l else { break };
            let _ = tx.send(l);
        }
    });
    let first = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("braid serve prints its address");
    let addr = first
        .split("http://")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {first:?}"));
    (Reap(child), addr)
}

/// One request on its own connection; `None` when the server is gone.
fn http(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    let body = body.unwrap_or("");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let status = raw.split(' ').nth(1)?.parse().ok()?;
    let body = raw
        .split_once("\r\n\r\n")
        .map(|x| x.1)
        .unwrap_or("")
        .to_owned();
    Some((status, body))
}

fn term(child: &std::process::Child) {
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
}

fn wait_exit(r: &mut Reap) -> std::process::ExitStatus {
    use wait_timeout::ChildExt;
    r.0.wait_timeout(Duration::from_secs(30))
        .unwrap()
        .expect("braid serve stops within 30 s")
}

/// Follows `/events` (SSE) from the start of the log until a line
/// containing every one of `needles` arrives.
pub(crate) fn wait_for_event(addr: SocketAddr, rooms: &str, needles: &[&str]) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "GET /events?after=0&rooms={rooms} HTTP/1.1\r\nhost: {addr}\r\n\r\n"
    )
    .unwrap();
    for line in std::io::BufReader::new(s).lines() {
        let line = line.expect("an event within 60 s");
        if needles.iter().all(|n| line.contains(n)) {
            return;
        }
    }
    panic!("the event stream ended before {needles:?}");
}

#[test]
fn a_public_address_needs_a_token() {
    let p = Proj::init();
    let err = p.fails(&["serve", "--bind", "0.0.0.0:0"], 2);
    assert!(err.contains("token"), "{err}");
    let err = p.fails(&["serve", "--bind", "0.0.0.0:0", "--token", "short"], 2);
    assert!(err.contains("16 characters"), "{err}");
}

#[test]
fn sigterm_loses_no_accepted_write() {
    let p = Proj::init();
    let (mut server, addr) = serve(&p, &["--no-sync"]);
    let accepted = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    // Each accepted write is announced, so the main thread waits on them.
    let (tick_tx, tick_rx) = std::sync::mpsc::channel::<()>();
    let writers: Vec<_> = (0..6)
        .map(|w| {
            let (accepted, stop, tick) = (accepted.clone(), stop.clone(), tick_tx.clone());
            std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let body = format!(r#"{{"title":"w{w} #{i}"}}"#);
                    match http(addr, "POST", "/api/tasks", Some(&body)) {
                        Some((201, b)) => {
                            let v: serde_json::Value = serde_json::from_str(&b).unwrap();
                            accepted
                                .lock()
                                .unwrap()
                                .push(v["id"].as_str().unwrap().to_owned());
                            let _ = tick.send(());
                        }
                        // Refused while stopping, or the server is gone.
                        Some(_) | None => {
                            if stop.load(Ordering::Relaxed) {
                                break;
                            }
                        }
                    }
                }
            })
        })
        .collect();
    // Let writes flow, then stop the server in the middle of them.
    for _ in 0..60 {
        tick_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("writes are accepted");
    }
    term(&server.0);
    let status = wait_exit(&mut server);
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    assert!(status.success(), "clean exit: {status:?}");
    let mut err = String::new();
    server
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(!err.contains("panicked"), "{err}");
    let ids = accepted.lock().unwrap().clone();
    let listed = p.json(&["list", "--limit", "100000"]);
    let stored: std::collections::HashSet<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    for id in &ids {
        assert!(stored.contains(id.as_str()), "accepted {id} was lost");
    }
}

#[test]
fn the_engine_runs_inside_the_server_and_its_metrics_are_exported() {
    let p = Proj::init();
    std::fs::write(
        p.path().join(".braid/config.toml"),
        "[run]\njobs = 1\n\n[[agent]]\nname = \"ok\"\ncommand = [\"true\"]\n",
    )
    .unwrap();
    let id = p.add(&["work for the engine"]);
    let (mut server, addr) = serve(&p, &["--run", "--no-sync"]);
    wait_for_event(
        addr,
        &format!("task:{id}"),
        &["state_changed", "\"to\":\"done\""],
    );
    let (status, metrics) = http(addr, "GET", "/metrics", None).unwrap();
    assert_eq!(status, 200);
    assert!(metrics.contains("braid_dispatched_total 1"), "{metrics}");
    assert!(
        metrics.contains("braid_http_request_duration_seconds_bucket"),
        "{metrics}"
    );
    term(&server.0);
    assert!(wait_exit(&mut server).success());
    // The engine flushed its telemetry on the way out.
    let telemetry = std::fs::read_dir(p.path().join(".braid/telemetry"))
        .unwrap()
        .count();
    assert!(telemetry > 0, "telemetry written on shutdown");
}

#[test]
fn sync_once_writes_files_applies_edits_and_reports_bad_ones() {
    let p = Proj::init();
    let id = p.add(&["to mirror", "--priority", "3"]);
    let out = p.json(&["sync"]);
    assert_eq!(out["written"], 1, "{out}");
    let file = p.path().join(format!(".braid/tasks/{id}.md"));
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("priority: 3"), "{text}");
    std::fs::write(&file, text.replace("priority: 3", "priority: 0")).unwrap();
    let out = p.json(&["sync"]);
    assert_eq!(out["applied"], 1, "{out}");
    assert_eq!(p.json(&["show", &id])["priority"], 0);
    std::fs::write(p.path().join(".braid/tasks/broken.md"), "no front matter\n").unwrap();
    let err = p.fails(&["sync"], 2);
    assert!(err.contains("broken.md") && err.contains("---"), "{err}");
    let events = p.ok(&["events", "--json"]);
    assert!(
        events.contains("sync_rejected"),
        "the rejection is in the event log"
    );
}
