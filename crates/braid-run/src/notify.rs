//! `[notify] command`: run once for each `attention` event (an agent asks,
//! a budget stops work, braid hands a task to a person) and each task that
//! becomes ready for review (`state_changed` to `review`), with the event as
//! one line of JSON on stdin — `notify-send`, a webhook through curl, a
//! chat bot. The command is the user's own; braid never waits for it in
//! its loop: a thread feeds it, waits at most [`NOTIFY_TIMEOUT`] and then
//! kills it, and at most [`MAX_IN_FLIGHT`] run at once (more are dropped,
//! and said so in the log).

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use wait_timeout::ChildExt;

use braid_core::Event;

/// How long a notify command may run.
pub const NOTIFY_TIMEOUT: Duration = Duration::from_secs(30);
/// Notify commands running at once, at most.
pub const MAX_IN_FLIGHT: usize = 8;

static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// The event as the notify command reads it (the `events --json` shape).
pub fn line(e: &Event) -> String {
    serde_json::json!({
        "seq": e.seq, "at": braid_app::wire::ts(e.at), "actor": e.actor,
        "kind": e.kind.as_str(), "task": e.task, "payload": e.payload,
    })
    .to_string()
}

/// The events a person is told about: an attention, and work that is
/// ready for review.
pub fn wanted(e: &Event) -> bool {
    match e.kind {
        braid_core::EventKind::Attention => true,
        braid_core::EventKind::StateChanged => e.payload["to"] == "review",
        _ => false,
    }
}

/// Runs `argv` with `e` on stdin, in the background. Does nothing for an
/// event nobody is told about ([`wanted`]).
pub fn send(argv: &[String], e: &Event) {
    if !wanted(e) || argv.is_empty() {
        return;
    }
    if IN_FLIGHT.fetch_add(1, Ordering::SeqCst) >= MAX_IN_FLIGHT {
        IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
        tracing::warn!(
            seq = e.seq,
            "{MAX_IN_FLIGHT} notify commands still run; this event is not sent"
        );
        return;
    }
    let argv = argv.to_vec();
    let input = line(e) + "\n";
    let spawned = std::thread::Builder::new()
        .name("braid-notify".into())
        .spawn(move || {
            run(&argv, &input);
            IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
        });
    if let Err(err) = spawned {
        IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
        tracing::warn!(error = %err, "starting a notify thread");
    }
}

fn run(argv: &[String], input: &str) {
    let mut child = match Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(command = %argv[0], error = %e, "[notify] command could not start");
            return;
        }
    };
    if let Some(mut stdin) = child.stdin.take()
        && let Err(e) = stdin.write_all(input.as_bytes())
    {
        // A command that does not read its input (notify-send) closes it.
        tracing::debug!(error = %e, "writing to the notify command");
    }
    match child.wait_timeout(NOTIFY_TIMEOUT) {
        Ok(Some(status)) if !status.success() => {
            tracing::warn!(command = %argv[0], %status, "[notify] command failed");
        }
        Ok(Some(_)) => {}
        Ok(None) | Err(_) => {
            tracing::warn!(command = %argv[0], "[notify] command ran past 30 s; stopped");
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
