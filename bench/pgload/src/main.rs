//! braid-pgload: one "node" of the PostgreSQL benchmark (bench/postgres.sh).
//!
//!   braid-pgload seed URL N          add N trivial tasks (one bulk import)
//!   braid-pgload drain URL WORKERS [BATCH]
//!                                    claim+complete until nothing is ready, BATCH claims
//!                                    (then BATCH completions) per transaction; prints tasks/s
//!   braid-pgload insert URL N GAP_MS add N tasks one at a time, GAP_MS apart, stamping each
//!   braid-pgload claim URL N         claim N tasks as they appear (woken by LISTEN/NOTIFY);
//!                                    prints insert -> claim latency percentiles

use std::sync::Arc;
use std::time::{Duration, Instant};

use braid_core::{NewTask, State, Task, TaskId, TaskType};
use braid_store::{Command, Error, ImportBatch, ImportOptions, PgStore, Store};

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

fn task(i: usize, now: i64) -> Task {
    Task {
        id: TaskId::parse(&format!("br-b{i:07}")).expect("valid id"),
        title: format!("job {i}"),
        description: String::new(),
        kind: TaskType::Task,
        priority: 2,
        state: State::Open,
        parent: None,
        labels: Vec::new(),
        assignee: None,
        acceptance: String::new(),
        gates: Vec::new(),
        agent: None,
        branch: None,
        created_at: now,
        updated_at: now,
        closed_at: None,
        close_reason: None,
        deps: Vec::new(),
        ready: true,
        blockers: 0,
        held_by: 0,
        lease: None,
    }
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
    let store = Arc::new(PgStore::open(&arg(2)).unwrap_or_else(|e| panic!("{e}")));
    match arg(1).as_str() {
        "seed" => {
            let n: usize = arg(3).parse().expect("N");
            let now = braid_core::clock::now_ms();
            let batch = ImportBatch {
                tasks: (0..n).map(|i| task(i, now)).collect(),
                events: Vec::new(),
                source: "pgload".into(),
            };
            let t = Instant::now();
            store
                .import("pgload", batch, ImportOptions::default())
                .unwrap();
            println!("seeded {n} tasks in {:.2} s", t.elapsed().as_secs_f64());
        }
        "drain" => {
            let workers: usize = arg(3).parse().expect("WORKERS");
            let batch: usize = arg(4).parse().unwrap_or(1).max(1);
            let t = Instant::now();
            let done: usize = std::thread::scope(|s| {
                let hs: Vec<_> = (0..workers)
                    .map(|w| {
                        let store = store.clone();
                        s.spawn(move || {
                            let mut n = 0;
                            let mut size = batch;
                            loop {
                                // One transaction claims `size` tasks (all or
                                // nothing: near the end, fewer).
                                let claims = (0..size)
                                    .map(|_| Command::Claim {
                                        id: None,
                                        assignee: format!("w{w}"),
                                        lease_ms: 60_000,
                                    })
                                    .collect();
                                let got = match store.apply_all("pgload", claims) {
                                    Ok(a) => a,
                                    Err(Error::NothingReady) if size > 1 => {
                                        size /= 2;
                                        continue;
                                    }
                                    Err(Error::NothingReady) => return n,
                                    Err(e) => panic!("{e}"),
                                };
                                let finishes = got
                                    .into_iter()
                                    .map(|a| Command::Finish {
                                        id: a.task.id,
                                        token: a.lease_token.unwrap_or_default(),
                                        to: State::Done,
                                        reason: None,
                                        refund_attempt: false,
                                    })
                                    .collect::<Vec<_>>();
                                n += finishes.len();
                                store.apply_all("pgload", finishes).unwrap();
                            }
                        })
                    })
                    .collect();
                hs.into_iter().map(|h| h.join().unwrap()).sum()
            });
            let secs = t.elapsed().as_secs_f64();
            println!(
                "drained {done} tasks with {workers} workers, {batch} per transaction, in {secs:.2} s: {:.0} tasks/s",
                done as f64 / secs
            );
        }
        "insert" => {
            let n: usize = arg(3).parse().expect("N");
            let gap = Duration::from_millis(arg(4).parse().unwrap_or(20));
            let mut took = Vec::with_capacity(n);
            for i in 0..n {
                let mut t = NewTask::titled(format!("{}", now_us()));
                t.description = format!("latency probe {i}");
                let start = Instant::now();
                store.apply("pgload", Command::Add(t)).unwrap();
                took.push(start.elapsed().as_secs_f64() * 1000.0);
                std::thread::sleep(gap);
            }
            println!(
                "an add (one transaction) took p50 {:.2} ms, p95 {:.2} ms",
                percentile(&mut took, 0.5),
                percentile(&mut took, 0.95)
            );
        }
        "claim" => {
            let n: usize = arg(3).parse().expect("N");
            // Woken when work becomes ready, not by every claim and event.
            let changes = store.ready_changes();
            let mut lat = Vec::with_capacity(n);
            // From the wake-up to the claim's answer (the claim's own cost).
            let mut own = Vec::with_capacity(n);
            let mut woken = Instant::now();
            while lat.len() < n {
                match store.apply(
                    "pgload",
                    Command::Claim {
                        id: None,
                        assignee: "claimer".into(),
                        lease_ms: 60_000,
                    },
                ) {
                    Ok(a) => {
                        let inserted: i64 = a.task.title.parse().unwrap_or(0);
                        lat.push((now_us() - inserted) as f64 / 1000.0);
                        own.push(woken.elapsed().as_secs_f64() * 1000.0);
                    }
                    Err(Error::NothingReady) => {
                        let _ = changes.recv_timeout(Duration::from_secs(5));
                        woken = Instant::now();
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            let (p50, p95, p99) = (
                percentile(&mut lat, 0.5),
                percentile(&mut lat, 0.95),
                percentile(&mut lat, 0.99),
            );
            println!(
                "insert -> claim on another node over {n} tasks: p50 {p50:.2} ms, p95 {p95:.2} ms, p99 {p99:.2} ms \
                 (of which woken -> claimed p50 {:.2} ms, p95 {:.2} ms)",
                percentile(&mut own, 0.5),
                percentile(&mut own, 0.95)
            );
        }
        other => {
            eprintln!("unknown mode {other:?}; see the top of bench/pgload/src/main.rs");
            std::process::exit(2);
        }
    }
}
