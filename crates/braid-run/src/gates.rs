//! Running a set of gates once, outside the scheduler (`braid gate run`):
//! in parallel within `jobs`, each supervised with its timeout, answered
//! from the result cache when the same command already passed on the same
//! content.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::cache::{Cache, CachedResult, gate_key, workspace_identity};
use crate::config::Gate;
use crate::supervise::{self, Exit, Spec};

#[derive(Clone, Debug)]
pub struct GateOutcome {
    pub name: String,
    pub passed: bool,
    pub cached: bool,
    pub duration_ms: u64,
    pub exit: String,
    pub log: Option<PathBuf>,
}

/// Runs `gates` in `dir`, writing logs to `log_dir`.
pub fn run_gates(
    gates: &[Gate],
    dir: &Path,
    log_dir: &Path,
    jobs: usize,
    grace: Duration,
    mut cache: Option<&mut Cache>,
) -> Vec<GateOutcome> {
    let content = cache.as_ref().and_then(|_| workspace_identity(dir).ok());
    let mut out = Vec::new();
    let mut queue: VecDeque<&Gate> = VecDeque::new();
    for g in gates {
        let key = content.as_ref().map(|c| gate_key(g, c));
        if let (Some(k), Some(c)) = (&key, cache.as_deref())
            && let Some(hit) = c.lookup(k)
        {
            out.push(GateOutcome {
                name: g.name.clone(),
                passed: true,
                cached: true,
                duration_ms: hit.duration_ms,
                exit: "exit 0 (cached)".into(),
                log: None,
            });
            continue;
        }
        queue.push_back(g);
    }
    let (tx, rx) = mpsc::channel::<(usize, Exit)>();
    // (gate, pgid, started, deadline, killed)
    let mut running: Vec<Option<(&Gate, u32, Instant, Instant, bool)>> = Vec::new();
    let mut active = 0;
    loop {
        while active < jobs.max(1) {
            let Some(g) = queue.pop_front() else { break };
            let log = log_dir.join(format!("gate-{}.log", g.name));
            let spec = Spec {
                argv: g.command.clone(),
                cwd: dir.to_owned(),
                env_allow: Some(g.env.clone()),
                extra_env: vec![],
                log,
            };
            let slot = running.len();
            let now = Instant::now();
            match supervise::spawn(&spec) {
                Ok(mut child) => {
                    running.push(Some((g, child.id(), now, now + g.timeout, false)));
                    let tx = tx.clone();
                    std::thread::spawn(move || {
                        let exit = child
                            .wait()
                            .map(supervise::exit_of)
                            .unwrap_or_else(|e| Exit::SpawnFailed(e.to_string()));
                        let _ = tx.send((slot, exit));
                    });
                }
                Err(e) => {
                    running.push(Some((g, 0, now, now, false)));
                    let _ = tx.send((slot, Exit::SpawnFailed(e.to_string())));
                }
            }
            active += 1;
        }
        if active == 0 {
            break;
        }
        let next = running
            .iter()
            .flatten()
            .map(|r| r.3)
            .min()
            .unwrap_or_else(Instant::now);
        match rx.recv_timeout(next.saturating_duration_since(Instant::now())) {
            Ok((slot, exit)) => {
                let (g, _, started, _, killed) =
                    running[slot].take().expect("each slot reports once");
                active -= 1;
                let duration_ms = started.elapsed().as_millis() as u64;
                let passed = exit.success() && !killed;
                let log = log_dir.join(format!("gate-{}.log", g.name));
                if passed && let (Some(c), Some(content)) = (cache.as_deref_mut(), &content) {
                    let tail = supervise::tail(&log, 1024);
                    let at = braid_core::clock::now_ms();
                    let _ = c.store(
                        &gate_key(g, content),
                        &CachedResult {
                            gate: g.name.clone(),
                            duration_ms,
                            at,
                            tail,
                        },
                    );
                }
                let mut exit = exit.describe();
                if killed {
                    exit = format!("timed out ({exit})");
                }
                out.push(GateOutcome {
                    name: g.name.clone(),
                    passed,
                    cached: false,
                    duration_ms,
                    exit,
                    log: Some(log),
                });
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let now = Instant::now();
                for r in running.iter_mut().flatten() {
                    if r.3 <= now && r.1 != 0 {
                        if r.4 {
                            supervise::kill(r.1);
                        } else {
                            supervise::terminate(r.1);
                            r.4 = true;
                        }
                        r.3 = now + grace;
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    out
}
