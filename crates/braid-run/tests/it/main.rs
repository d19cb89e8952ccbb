//! The engine driven directly (not through the CLI): its decisions step by
//! step with a fake clock and spawner (`sched`), and what a real run
//! records for the server's /metrics.

mod sched;

use braid_core::NewTask;
use braid_run::{Config, Engine, Paths, RunOptions};
use braid_store::{Command, SqliteStore, Store};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};

#[test]
fn a_run_records_dispatches_gate_durations_and_active_agents() {
    let dir = tempfile::tempdir().unwrap();
    let braid_dir = dir.path().join(".braid");
    let db = braid_dir.join("braid.db");
    let store = SqliteStore::create(&db).unwrap();
    for i in 0..3 {
        store
            .apply("t", Command::Add(NewTask::titled(format!("t{i}"))))
            .unwrap();
    }
    let text = format!(
        "[cache]\ndir = \"{}\"\n[[agent]]\nname = \"a\"\ncommand = [\"true\"]\n[[gate]]\nname = \"g\"\ncommand = [\"true\"]\n",
        dir.path().join("cache").display()
    );
    let config = Config::parse("config.toml", &text).unwrap();
    let paths = Paths {
        braid_dir: braid_dir.clone(),
        db,
        repo: None,
    };
    let opts = RunOptions {
        actor: "t".into(),
        ..RunOptions::default()
    };
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let report = metrics::with_local_recorder(&recorder, || {
        Engine::new(&store, config, paths, opts, Box::new(|_| {}))
            .run()
            .unwrap()
    });
    assert_eq!(report.done, 3);
    let snap = snapshotter.snapshot().into_vec();
    let find = |name: &str| -> Vec<&DebugValue> {
        snap.iter()
            .filter(|(k, ..)| k.key().name() == name)
            .map(|(.., v)| v)
            .collect()
    };
    let dispatched = find(braid_run::metrics::DISPATCHED);
    assert!(
        matches!(dispatched[..], [DebugValue::Counter(3)]),
        "{dispatched:?}"
    );
    let gates: usize = find(braid_run::metrics::GATE_DURATION)
        .into_iter()
        .map(|v| match v {
            DebugValue::Histogram(h) => h.len(),
            _ => 0,
        })
        .sum();
    assert_eq!(gates, 3, "one gate duration per task (run or cached)");
    let active = find(braid_run::metrics::ACTIVE_AGENTS);
    assert!(
        matches!(active[..], [DebugValue::Gauge(g)] if g.into_inner() == 0.0),
        "none left running: {active:?}"
    );
}
