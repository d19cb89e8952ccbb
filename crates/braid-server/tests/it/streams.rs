//! Event streams over real sockets: resume, `recovered: false`, rooms, no
//! gaps or duplicates while writes race the replay, slow consumers cut off
//! with a distinct close code, close frames on shutdown.

use std::time::Duration;

use braid_core::NewTask;
use braid_server::hub::StreamConfig;
use braid_store::Command;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use crate::common::{Server, Setup, Sse, WAIT};

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(url: &str) -> Ws {
    tokio_tungstenite::connect_async(url).await.unwrap().0
}

/// The next text message as JSON, or the close frame's (code, reason).
async fn next(ws: &mut Ws) -> Result<Value, (u16, String)> {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a message in time");
        match msg {
            Some(Ok(Message::Text(t))) => return Ok(serde_json::from_str(&t).unwrap()),
            Some(Ok(Message::Close(Some(f)))) => {
                return Err((u16::from(f.code), f.reason.to_string()));
            }
            Some(Ok(Message::Close(None))) | None => return Err((0, String::new())),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err((0, e.to_string())),
        }
    }
}

/// Reads events until one with `seq >= until`, returning every seq seen.
async fn seqs_until(ws: &mut Ws, until: i64) -> Vec<i64> {
    let mut seen = Vec::new();
    loop {
        let v = next(ws).await.expect("still open");
        assert_eq!(v["type"], "event", "{v}");
        let seq = v["seq"].as_i64().unwrap();
        seen.push(seq);
        if seq >= until {
            return seen;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_replays_what_was_missed_then_follows_live() {
    let mut s = Server::start(Setup::default()).await;
    let first = s.add("one");
    s.add("two");
    let mid = s.store.last_seq().unwrap();
    s.add("three");
    let mut ws = connect(&s.ws_url(&format!("?after={mid}"))).await;
    let hello = next(&mut ws).await.unwrap();
    assert_eq!(hello["type"], "hello");
    assert_eq!(hello["recovered"], true);
    let head = s.store.last_seq().unwrap();
    assert_eq!(hello["last_seq"], head);
    // Replayed: everything after `mid`, in order.
    assert_eq!(
        seqs_until(&mut ws, head).await,
        ((mid + 1)..=head).collect::<Vec<_>>()
    );
    // Live: a write by "another process" (straight to the store) arrives,
    // woken by the change marker, with its seq and task.
    let id = s.add("four");
    let v = next(&mut ws).await.unwrap();
    assert_eq!(v["seq"], head + 1);
    assert_eq!(v["kind"], "created");
    assert_eq!(v["task"], id.as_str());
    assert!(first.as_str() != id.as_str());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_gap_and_no_duplicate_while_writes_race_the_replay() {
    let mut s = Server::start(Setup::default()).await;
    for i in 0..50 {
        s.add(&format!("before {i}"));
    }
    let store = s.store.clone();
    let writer = std::thread::spawn(move || {
        for i in 0..300 {
            store
                .apply("w", Command::Add(NewTask::titled(format!("during {i}"))))
                .unwrap();
        }
    });
    let mut ws = connect(&s.ws_url("?after=0")).await;
    assert_eq!(next(&mut ws).await.unwrap()["recovered"], true);
    writer.join().unwrap();
    let head = s.store.last_seq().unwrap();
    let seen = seqs_until(&mut ws, head).await;
    assert_eq!(
        seen,
        (1..=head).collect::<Vec<_>>(),
        "every seq once, in order"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_beyond_the_window_says_recovered_false() {
    let streams = StreamConfig {
        resume_window: 5,
        ..StreamConfig::default()
    };
    let mut s = Server::start(Setup {
        streams: Some(streams),
        ..Setup::default()
    })
    .await;
    for i in 0..10 {
        s.add(&format!("t{i}"));
    }
    let head = s.store.last_seq().unwrap();
    let mut ws = connect(&s.ws_url("?after=1")).await;
    let hello = next(&mut ws).await.unwrap();
    assert_eq!(hello["recovered"], false, "{hello}");
    assert_eq!(hello["last_seq"], head);
    // Nothing is replayed: the next message is the next live event.
    s.add("live");
    assert_eq!(next(&mut ws).await.unwrap()["seq"], head + 1);
    // A seq from the future (another database) cannot be resumed either.
    let mut ws = connect(&s.ws_url(&format!("?after={}", head + 100))).await;
    assert_eq!(next(&mut ws).await.unwrap()["recovered"], false);
    // Within the window it can.
    let mut ws = connect(&s.ws_url(&format!("?after={}", head - 3))).await;
    assert_eq!(next(&mut ws).await.unwrap()["recovered"], true);
    assert_eq!(seqs_until(&mut ws, head).await.len(), 3);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_filter_events_by_epic_and_label() {
    let mut s = Server::start(Setup::default()).await;
    let epic = s
        .store
        .apply(
            "t",
            Command::Add(NewTask {
                kind: Some(braid_core::TaskType::Epic),
                ..NewTask::titled("epic")
            }),
        )
        .unwrap()
        .task
        .id;
    let mut in_epic = connect(&s.ws_url(&format!("?rooms=epic:{epic}"))).await;
    let mut labelled = connect(&s.ws_url("?rooms=label:ui")).await;
    next(&mut in_epic).await.unwrap();
    next(&mut labelled).await.unwrap();
    s.add("elsewhere");
    let child = s
        .store
        .apply(
            "t",
            Command::Add(NewTask {
                parent: Some(epic.clone()),
                ..NewTask::titled("child")
            }),
        )
        .unwrap()
        .task
        .id;
    let ui = s
        .store
        .apply(
            "t",
            Command::Add(NewTask {
                labels: vec!["ui".into()],
                ..NewTask::titled("button")
            }),
        )
        .unwrap()
        .task
        .id;
    assert_eq!(next(&mut in_epic).await.unwrap()["task"], child.as_str());
    assert_eq!(next(&mut labelled).await.unwrap()["task"], ui.as_str());
    // Switching rooms on a live connection.
    in_epic
        .send(Message::Text(
            r#"{"type":"subscribe","rooms":["label:ui"]}"#.into(),
        ))
        .await
        .unwrap();
    // A bad subscribe is answered with an error and the stream goes on.
    in_epic
        .send(Message::Text(
            r#"{"type":"subscribe","rooms":["moon"]}"#.into(),
        ))
        .await
        .unwrap();
    let err = next(&mut in_epic).await.unwrap();
    assert_eq!(err["type"], "error");
    assert!(err["message"].as_str().unwrap().contains("moon"), "{err}");
    let ui2 = s
        .store
        .apply(
            "t",
            Command::Add(NewTask {
                labels: vec!["ui".into()],
                ..NewTask::titled("second button")
            }),
        )
        .unwrap()
        .task
        .id;
    assert_eq!(next(&mut in_epic).await.unwrap()["task"], ui2.as_str());
    // A bad room in the URL is a 400 before any upgrade.
    match tokio_tungstenite::connect_async(s.ws_url("?rooms=moon")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
            assert_eq!(r.status(), 400);
            let body =
                String::from_utf8_lossy(r.body().as_deref().unwrap_or_default()).into_owned();
            assert!(
                body.contains("\"invalid\"") && body.contains("moon"),
                "{body}"
            );
        }
        other => panic!("expected a 400, got {other:?}"),
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_falls_behind_is_closed_with_4008_and_told_to_resync() {
    let streams = StreamConfig {
        send_queue: 16,
        ..StreamConfig::default()
    };
    let mut s = Server::start(Setup {
        streams: Some(streams),
        ..Setup::default()
    })
    .await;
    let mut ws = connect(&s.ws_url("")).await;
    next(&mut ws).await.unwrap();
    // A burst of 500 events in one transaction: far more than the queue
    // of 16 holds for a client.
    let cmds = (0..500)
        .map(|i| Command::Add(NewTask::titled(format!("burst {i}"))))
        .collect();
    s.store.apply_all("t", cmds).unwrap();
    let mut events = 0;
    let closed = loop {
        match next(&mut ws).await {
            Ok(v) => {
                assert_eq!(v["type"], "event");
                events += 1;
            }
            Err(close) => break close,
        }
    };
    assert_eq!(closed.0, 4008, "{closed:?}");
    assert!(closed.1.contains("resync"), "{closed:?}");
    assert!(events < 500, "the client was cut off, not buffered for");
    // The metric counts it.
    let m = crate::common::http(s.addr, "GET", "/metrics", &[], None).await;
    assert!(
        m.body
            .lines()
            .any(|l| l.starts_with("braid_slow_consumer_disconnects_total") && !l.ends_with(" 0")),
        "{}",
        m.body
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_resumes_from_last_event_id_and_from_after() {
    let mut s = Server::start(Setup::default()).await;
    let a = s.add("a");
    let after_a = s.store.last_seq().unwrap();
    s.add("b");
    s.add("c");
    let head = s.store.last_seq().unwrap();
    let id = after_a.to_string();
    let (status, mut sse) = Sse::connect(s.addr, "/events", &[("last-event-id", &id)]).await;
    assert_eq!(status, 200);
    let hello = sse.next().await.unwrap();
    assert_eq!(hello.event, "hello");
    let h: Value = serde_json::from_str(&hello.data).unwrap();
    assert_eq!(h["recovered"], true);
    let mut ids = Vec::new();
    while ids.last() != Some(&head) {
        let m = sse.next().await.unwrap();
        assert_eq!(m.event, "event");
        let v: Value = serde_json::from_str(&m.data).unwrap();
        let seq = v["seq"].as_i64().unwrap();
        assert_eq!(
            m.id.as_deref(),
            Some(seq.to_string().as_str()),
            "id is the seq"
        );
        ids.push(seq);
    }
    assert_eq!(ids, ((after_a + 1)..=head).collect::<Vec<_>>());
    // Live.
    s.add("d");
    let m = sse.next().await.unwrap();
    assert_eq!(m.id, Some((head + 1).to_string()));
    // ?after= works the same; the task of the first event is a.
    let (_, mut sse2) = Sse::connect(s.addr, "/events?after=0", &[]).await;
    sse2.next().await.unwrap();
    let first: Value = serde_json::from_str(&sse2.next().await.unwrap().data).unwrap();
    assert_eq!(first["task"], a.as_str());
    // A bad Last-Event-ID is a clear 400.
    let r = crate::common::http(
        s.addr,
        "GET",
        "/events",
        &[("last-event-id", "yesterday")],
        None,
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Last-Event-ID")
    );
    // Shutdown ends the stream with `closing`.
    let stopping = tokio::spawn(async move {
        s.stop().await;
    });
    let mut last = None;
    while let Some(m) = sse.next().await {
        last = Some(m.event);
    }
    assert_eq!(last.as_deref(), Some("closing"));
    tokio::time::timeout(WAIT, stopping).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_sends_websocket_close_frames() {
    let mut s = Server::start(Setup::default()).await;
    let mut a = connect(&s.ws_url("")).await;
    let mut b = connect(&s.ws_url("?rooms=label:x")).await;
    next(&mut a).await.unwrap();
    next(&mut b).await.unwrap();
    let started = std::time::Instant::now();
    s.stop().await;
    for ws in [&mut a, &mut b] {
        let close = next(ws).await.unwrap_err();
        assert_eq!(close.0, 1001, "{close:?}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "stopped within the grace"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_and_logs_list_tail_and_follow_until_shutdown() {
    // A long grace: if a follow stream held shutdown up, stop() would time out.
    let mut s = Server::start(Setup {
        grace: Some(Duration::from_secs(600)),
        ..Setup::default()
    })
    .await;
    let id = s.add("running");
    s.store
        .apply(
            "engine",
            Command::Claim {
                id: Some(id.clone()),
                assignee: "agent".into(),
                lease_ms: 60_000,
            },
        )
        .unwrap();
    let dir = s.dir.path().join("logs").join(id.as_str());
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("1-agent.log"), "first line\n").unwrap();
    let runs = crate::common::http(s.addr, "GET", "/api/runs", &[], None)
        .await
        .json();
    assert_eq!(runs[0]["task"]["id"], id.as_str());
    assert_eq!(runs[0]["logs"][0]["name"], "1-agent.log");
    let list =
        crate::common::http(s.addr, "GET", &format!("/api/tasks/{id}/logs"), &[], None).await;
    assert_eq!(list.json()[0]["size"], 11);
    let tail = crate::common::http(
        s.addr,
        "GET",
        &format!("/api/tasks/{id}/logs/1-agent.log?bytes=5"),
        &[],
        None,
    )
    .await;
    assert_eq!(tail.body, "line\n");
    // Names that could leave the folder are refused.
    let bad = crate::common::http(
        s.addr,
        "GET",
        &format!("/api/tasks/{id}/logs/..%2F..%2Fbraid.db"),
        &[],
        None,
    )
    .await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    let (status, mut follow) = Sse::connect(
        s.addr,
        &format!("/api/tasks/{id}/logs/1-agent.log/follow"),
        &[],
    )
    .await;
    assert_eq!(status, 200);
    let first = follow.next().await.unwrap();
    assert_eq!(first.event, "chunk");
    assert_eq!(
        serde_json::from_str::<String>(&first.data).unwrap(),
        "first line\n"
    );
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.join("1-agent.log"))
            .unwrap();
        f.write_all(b"second line\n").unwrap();
    }
    let next = follow.next().await.unwrap();
    assert_eq!(
        serde_json::from_str::<String>(&next.data).unwrap(),
        "second line\n"
    );
    s.stop().await;
    assert!(
        follow.next().await.is_none(),
        "shutdown ends the follow stream"
    );
}
