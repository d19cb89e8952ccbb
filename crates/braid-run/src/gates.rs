//! Running a set of gates once, outside the scheduler (`braid gate run`,
//! and the merge run's candidates): in parallel within `jobs`, each under
//! the one [`Supervisor`] with its timeout, answered from the result cache
//! when the same command already passed on the same content.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use crate::cache::{Cache, CachedResult, gate_key, workspace_identity};
use crate::config::Gate;
use crate::supervise::{self, Exit, Spawner, Spec, Supervisor};

#[derive(Clone, Debug)]
pub struct GateOutcome {
    pub name: String,
    pub passed: bool,
    pub cached: bool,
    pub duration_ms: u64,
    pub exit: String,
    pub log: Option<PathBuf>,
}

/// Runs `gates` in `dir`, writing logs to `log_dir`. With `procs`, each
/// gate's process group is recorded there under `holds` while it runs, so
/// a later braid stops it if this one dies.
#[allow(clippy::too_many_arguments)]
pub fn run_gates(
    gates: &[Gate],
    dir: &Path,
    log_dir: &Path,
    jobs: usize,
    grace: Duration,
    mut cache: Option<&mut Cache>,
    procs: Option<(&supervise::Registry, &str)>,
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
    let (tx, rx) = mpsc::channel::<(u64, Exit)>();
    let mut sup = Supervisor::new(Arc::new(move |key, exit| {
        // The caller stopped waiting: nobody needs to hear of it.
        let _ = tx.send((key, exit));
    }));
    if let Some((registry, _)) = procs {
        sup = sup.with_registry(registry.clone());
    }
    let holds = procs.map(|(_, h)| h.to_owned());
    // Running gates by key: (gate, started, deadline, signalled).
    let mut running: HashMap<u64, (&Gate, Instant, Instant, bool)> = HashMap::new();
    let mut next_key = 0u64;
    loop {
        while running.len() < jobs.max(1) {
            let Some(g) = queue.pop_front() else { break };
            let log = log_dir.join(format!("gate-{}.log", g.name));
            let spec = Spec {
                argv: g.command.clone(),
                cwd: dir.to_owned(),
                env_allow: Some(g.env.clone()),
                extra_env: vec![],
                log: log.clone(),
                holds: holds.clone(),
                stdin: None,
                log_max: None,
            };
            let key = next_key;
            next_key += 1;
            let now = Instant::now();
            match sup.spawn(key, &spec) {
                Ok(()) => {
                    running.insert(key, (g, now, now + g.timeout, false));
                }
                Err(e) => out.push(GateOutcome {
                    name: g.name.clone(),
                    passed: false,
                    cached: false,
                    duration_ms: 0,
                    exit: Exit::SpawnFailed(e.to_string()).describe(),
                    log: Some(log),
                }),
            }
        }
        if running.is_empty() {
            break;
        }
        let next = running
            .values()
            .map(|r| r.2)
            .min()
            .unwrap_or_else(Instant::now);
        match rx.recv_timeout(next.saturating_duration_since(Instant::now())) {
            Ok((key, exit)) => {
                sup.reaped(key);
                let Some((g, started, _, killed)) = running.remove(&key) else {
                    continue;
                };
                let duration_ms = started.elapsed().as_millis() as u64;
                let passed = exit.success() && !killed;
                let log = log_dir.join(format!("gate-{}.log", g.name));
                if passed && let (Some(c), Some(content)) = (cache.as_deref_mut(), &content) {
                    let result = CachedResult {
                        gate: g.name.clone(),
                        duration_ms,
                        at: braid_core::clock::now_ms(),
                        tail: supervise::tail(&log, 1024),
                    };
                    if let Err(e) = c.store(&gate_key(g, content), &result) {
                        tracing::warn!(gate = %g.name, error = %e, "keeping a gate's result in the cache");
                    }
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
                // Past its timeout: SIGTERM, and SIGKILL after the grace.
                let now = Instant::now();
                for (key, r) in running.iter_mut() {
                    if r.2 <= now {
                        sup.signal(*key, r.3);
                        r.3 = true;
                        r.2 = now + grace;
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    out
}
