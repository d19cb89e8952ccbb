//! `.braid/config.toml`: agents, gates and run settings. Parsed strictly
//! (unknown keys are errors) and checked before anything runs; every error
//! names the file, the line and the key at fault.

use std::path::{Path, PathBuf};
use std::time::Duration;

use regex::Regex;
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub message: String,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub run: RunConfig,
    pub agents: Vec<Agent>,
    pub gates: Vec<Gate>,
    /// The branch passing work merges into; `None`: passing work is done.
    pub merge_into: Option<String>,
    pub merge: MergeConfig,
    pub cache: CacheConfig,
    /// `[budget]`: no attempt starts once a budget it falls under is spent.
    pub budget: braid_app::budget::Budget,
    /// `[prices."MODEL"]`: what a model's tokens cost, for agents whose CLI
    /// reports tokens but no cost (Codex).
    pub prices: Vec<(String, Price)>,
    /// `[notify] command`: run with each attention event as JSON on stdin.
    pub notify: Option<Vec<String>>,
    /// `[git] remote`: task branches are pushed there, worktrees start
    /// from its target, and the merge run lands on it (compare-and-swap).
    pub remote: Option<String>,
    /// `[gc] keep`: the logs, worktrees and telemetry of tasks that ended
    /// longer ago than this are removed by `braid gc`.
    pub gc_keep: Duration,
    /// `[snapshot]`: how often `run` and `serve` save a snapshot of the
    /// database, and how many are kept.
    pub snapshot_every: Duration,
    pub snapshot_keep: usize,
}

/// USD per million tokens of each sort.
#[derive(Clone, Copy, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub input: f64,
    pub output: f64,
    #[serde(default)]
    pub cache_read: f64,
    #[serde(default)]
    pub cache_write: f64,
}

/// `[merge]`: how finished branches are integrated (`braid merge run`).
#[derive(Clone, Debug)]
pub struct MergeConfig {
    /// Where `into = ...` is written (0: not written), for errors found
    /// later (the branch does not exist).
    pub into_line: usize,
    /// At most this many branches are tested together as one candidate.
    pub max_batch: usize,
    /// The gates a merge candidate must pass (empty: every gate).
    pub gates: Vec<String>,
    /// `require_approval = true`: nothing lands without a person's
    /// approval of the branch as it stands (`braid review approve`).
    pub require_approval: bool,
}

impl Default for MergeConfig {
    fn default() -> Self {
        MergeConfig {
            into_line: 0,
            max_batch: 8,
            gates: Vec::new(),
            require_approval: false,
        }
    }
}

#[derive(Clone, Debug)]
pub struct CacheConfig {
    /// Where entries live (default `$BRAID_CACHE_DIR`, else
    /// `$XDG_CACHE_HOME/braid`, else `~/.cache/braid`).
    pub dir: PathBuf,
    /// Entries of different namespaces never answer for each other
    /// (default: the user's name).
    pub namespace: String,
    pub max_size: u64,
    pub ttl: Duration,
    pub enabled: bool,
}

impl Default for CacheConfig {
    fn default() -> Self {
        let dir = std::env::var_os("BRAID_CACHE_DIR")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("braid")))
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/braid")))
            .unwrap_or_else(|| PathBuf::from(".braid/cache"));
        CacheConfig {
            dir,
            namespace: std::env::var("USER")
                .ok()
                .filter(|u| !u.is_empty())
                .unwrap_or_else(|| "default".into()),
            max_size: 10 << 30,
            ttl: Duration::from_secs(30 * 86_400),
            enabled: true,
        }
    }
}

#[derive(Clone, Debug)]
pub struct RunConfig {
    /// Agents and gates running at once.
    pub jobs: usize,
    pub max_attempts: u32,
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    /// Start no agent while available memory is below this many bytes.
    pub memory_floor: u64,
    /// How long a claim lasts without a heartbeat.
    pub lease: Duration,
    /// SIGTERM, then SIGKILL after this long.
    pub kill_grace: Duration,
    /// Bytes of a failing gate's output fed back to the next attempt.
    pub failure_tail: usize,
    /// After SIGINT/SIGTERM, how long running work may go on before it is
    /// stopped (a second signal stops it at once).
    pub shutdown_grace: Duration,
    /// The most agents a run may start, retries included (`None`: ten
    /// times the unfinished tasks when the run starts, at least 100).
    pub max_dispatches: Option<usize>,
    /// An epic whose children are all done is done too (`false` keeps
    /// epics open until closed by hand).
    pub close_epics: bool,
    /// Bytes an attempt's log keeps at most: its head and its tail, with
    /// a marker of what was left out between.
    pub log_max: u64,
    /// Start no agent while the filesystem of `.braid` or of the
    /// worktrees has less free space than this many bytes.
    pub disk_floor: u64,
}

#[derive(Clone, Debug)]
pub struct RateLimit {
    pub pattern: Regex,
}

#[derive(Clone, Debug)]
pub struct Agent {
    pub name: String,
    /// Where it is defined (`name = ...`), for errors found later.
    pub line: usize,
    /// argv template: `{prompt}`, `{prompt_file}`, `{task}`, `{worktree}`.
    pub command: Vec<String>,
    pub max_concurrent: usize,
    pub timeout: Duration,
    pub cooldown: Duration,
    pub rate_limit: Vec<RateLimit>,
    pub failover: Vec<String>,
    pub env: Option<Vec<String>>,
    /// An exit 0 that changed nothing in the worktree counts as done
    /// (default: it is a failed attempt, "made no changes").
    pub allow_empty: bool,
    /// No output and no worktree change for this long: the agent is
    /// stopped and the attempt fails as stalled (default: never).
    pub stall: Option<Duration>,
    /// Which CLI it is: how its structured output is read (usage, cost,
    /// session, rate limits).
    pub kind: crate::adapter::Kind,
    /// A retry (or an answer) resumes the agent's session instead of
    /// starting cold (default: true; only claude and codex have sessions).
    pub resume: bool,
    /// The model it runs, when its CLI does not say (Codex): the ledger's
    /// model and the key into `[prices]`.
    pub model: Option<String>,
}

#[derive(Clone, Debug)]
pub struct Gate {
    pub name: String,
    /// Where it is defined (`name = ...`), for errors found later.
    pub line: usize,
    pub command: Vec<String>,
    pub timeout: Duration,
    /// Only these variables reach the gate (and its cache key).
    pub env: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    run: RawRun,
    #[serde(default)]
    agent: Vec<RawAgent>,
    #[serde(default)]
    gate: Vec<RawGate>,
    #[serde(default)]
    merge: Option<RawMerge>,
    #[serde(default)]
    server: Option<toml::Table>,
    #[serde(default)]
    cache: Option<RawCache>,
    #[serde(default)]
    budget: Option<RawBudget>,
    #[serde(default)]
    prices: std::collections::BTreeMap<String, Price>,
    #[serde(default)]
    notify: Option<RawNotify>,
    #[serde(default)]
    git: Option<RawGit>,
    #[serde(default)]
    gc: Option<RawGc>,
    #[serde(default)]
    snapshot: Option<RawSnapshot>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGc {
    keep: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSnapshot {
    every: Option<String>,
    keep: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGit {
    remote: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBudget {
    task_usd: Option<f64>,
    run_usd: Option<f64>,
    day_usd: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNotify {
    command: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCache {
    dir: Option<String>,
    namespace: Option<String>,
    max_size: Option<String>,
    ttl: Option<String>,
    enabled: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRun {
    jobs: Option<usize>,
    max_attempts: Option<u32>,
    backoff: Option<RawBackoff>,
    memory_floor: Option<String>,
    lease: Option<String>,
    kill_grace: Option<String>,
    failure_tail: Option<String>,
    shutdown_grace: Option<String>,
    max_dispatches: Option<usize>,
    close_epics: Option<bool>,
    log_max: Option<String>,
    disk_floor: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackoff {
    base: Option<String>,
    cap: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    name: String,
    #[serde(default)]
    command: Vec<String>,
    kind: Option<String>,
    max_concurrent: Option<usize>,
    timeout: Option<String>,
    cooldown: Option<String>,
    #[serde(default)]
    rate_limit: Vec<String>,
    #[serde(default)]
    failover: Vec<String>,
    env: Option<Vec<String>>,
    allow_empty: Option<bool>,
    stall: Option<String>,
    resume: Option<bool>,
    model: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGate {
    name: String,
    command: Vec<String>,
    timeout: Option<String>,
    #[serde(default = "default_gate_env")]
    env: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMerge {
    into: String,
    max_batch: Option<usize>,
    #[serde(default)]
    gates: Vec<String>,
    #[serde(default)]
    require_approval: bool,
}

fn default_gate_env() -> Vec<String> {
    vec!["PATH".into(), "HOME".into()]
}

impl Default for Config {
    fn default() -> Self {
        Config {
            run: RunConfig {
                jobs: 4,
                max_attempts: 3,
                backoff_base: Duration::from_secs(2),
                backoff_cap: Duration::from_secs(300),
                memory_floor: 512 << 20,
                lease: Duration::from_secs(60),
                kill_grace: Duration::from_secs(5),
                failure_tail: 4096,
                shutdown_grace: Duration::from_secs(30),
                max_dispatches: None,
                close_epics: true,
                log_max: 32 << 20,
                disk_floor: 1 << 30,
            },
            agents: Vec::new(),
            gates: Vec::new(),
            merge_into: None,
            merge: MergeConfig::default(),
            cache: CacheConfig::default(),
            budget: braid_app::budget::Budget::default(),
            prices: Vec::new(),
            notify: None,
            remote: None,
            gc_keep: Duration::from_secs(14 * 86_400),
            snapshot_every: Duration::from_secs(6 * 3600),
            snapshot_keep: 10,
        }
    }
}

use braid_app::units::parse_size;

impl Config {
    /// Reads a config file; a missing file gives the defaults.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Config::parse(&path.display().to_string(), &text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
            Err(e) => Err(ConfigError {
                file: path.display().to_string(),
                line: 0,
                message: e.to_string(),
            }),
        }
    }

    pub fn parse(file: &str, text: &str) -> Result<Config, ConfigError> {
        let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
        let err = |line: usize, message: String| ConfigError {
            file: file.to_owned(),
            line,
            message,
        };
        // The line where `key = ...` appears (after `after`), for errors
        // found after parsing.
        let find = |key: &str, value: Option<&str>| -> usize {
            let mut best = 0;
            for (i, l) in text.lines().enumerate() {
                let l = l.trim_start();
                if l.starts_with(key) && value.is_none_or(|v| l.contains(v)) {
                    best = i + 1;
                    if value.is_some() {
                        break;
                    }
                }
            }
            best
        };
        let raw: RawFile = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(s.start)).unwrap_or(0);
            let src = text
                .lines()
                .nth(line.saturating_sub(1))
                .unwrap_or("")
                .trim();
            err(
                line,
                format!(
                    "{} (at `{src}`)",
                    braid_app::units::in_words(e.message().trim())
                ),
            )
        })?;
        let dur =
            |key: &str, v: &Option<String>, default: Duration| -> Result<Duration, ConfigError> {
                match v {
                    None => Ok(default),
                    Some(s) => humantime::parse_duration(s).map_err(|e| {
                        err(
                            find(key, Some(s)),
                            format!("{key} = {s:?}: {e} (use 30s, 5m, 2h)"),
                        )
                    }),
                }
            };
        let d = Config::default().run;
        let backoff = raw.run.backoff.as_ref();
        let run = RunConfig {
            jobs: raw.run.jobs.unwrap_or(d.jobs),
            max_attempts: raw.run.max_attempts.unwrap_or(d.max_attempts),
            backoff_base: dur(
                "backoff",
                &backoff.and_then(|b| b.base.clone()),
                d.backoff_base,
            )?,
            backoff_cap: dur(
                "backoff",
                &backoff.and_then(|b| b.cap.clone()),
                d.backoff_cap,
            )?,
            memory_floor: match &raw.run.memory_floor {
                None => d.memory_floor,
                Some(s) => parse_size(s)
                    .map_err(|e| err(find("memory_floor", None), format!("memory_floor: {e}")))?,
            },
            lease: dur("lease", &raw.run.lease, d.lease)?,
            kill_grace: dur("kill_grace", &raw.run.kill_grace, d.kill_grace)?,
            shutdown_grace: dur("shutdown_grace", &raw.run.shutdown_grace, d.shutdown_grace)?,
            failure_tail: match &raw.run.failure_tail {
                None => d.failure_tail,
                Some(s) => parse_size(s)
                    .map_err(|e| err(find("failure_tail", None), format!("failure_tail: {e}")))?
                    as usize,
            },
            max_dispatches: raw.run.max_dispatches,
            close_epics: raw.run.close_epics.unwrap_or(true),
            log_max: match &raw.run.log_max {
                None => d.log_max,
                Some(s) => parse_size(s)
                    .map_err(|e| err(find("log_max", None), format!("log_max: {e}")))?,
            },
            disk_floor: match &raw.run.disk_floor {
                None => d.disk_floor,
                Some(s) => parse_size(s)
                    .map_err(|e| err(find("disk_floor", None), format!("disk_floor: {e}")))?,
            },
        };
        if run.log_max < 64 << 10 {
            return Err(err(
                find("log_max", None),
                "log_max must be at least 64KiB (its head and tail are kept)".into(),
            ));
        }
        if run.max_dispatches == Some(0) {
            return Err(err(
                find("max_dispatches", None),
                "max_dispatches must be at least 1".into(),
            ));
        }
        if run.jobs == 0 {
            return Err(err(find("jobs", None), "jobs must be at least 1".into()));
        }
        if run.max_attempts == 0 {
            return Err(err(
                find("max_attempts", None),
                "max_attempts must be at least 1".into(),
            ));
        }
        let mut agents = Vec::new();
        for a in raw.agent {
            let line = find("name", Some(&format!("\"{}\"", a.name)));
            let kind = match a.kind.as_deref() {
                None => crate::adapter::Kind::Command,
                Some(k) => crate::adapter::Kind::parse(k).ok_or_else(|| {
                    err(
                        find("kind", Some(k)),
                        format!(
                            "agent {:?}: kind {k:?} is not one of claude, codex, command",
                            a.name
                        ),
                    )
                })?,
            };
            let mut a = a;
            if a.command.is_empty() {
                a.command = kind.default_command();
                if let (Some(m), true) = (&a.model, kind != crate::adapter::Kind::Command) {
                    // `claude -p --model M …`, `codex exec --model M …`
                    a.command.splice(2..2, ["--model".to_owned(), m.clone()]);
                }
            }
            if a.command.is_empty() {
                return Err(err(
                    line,
                    format!("agent {:?}: command must not be empty", a.name),
                ));
            }
            if agents.iter().any(|x: &Agent| x.name == a.name) {
                return Err(err(line, format!("agent {:?} is defined twice", a.name)));
            }
            let mut rate_limit = Vec::new();
            for p in &a.rate_limit {
                let pattern = Regex::new(p).map_err(|e| {
                    err(
                        find("rate_limit", None),
                        format!("agent {:?}: rate_limit pattern {p:?}: {e}", a.name),
                    )
                })?;
                rate_limit.push(RateLimit { pattern });
            }
            agents.push(Agent {
                timeout: dur("timeout", &a.timeout, Duration::from_secs(30 * 60))?,
                cooldown: dur("cooldown", &a.cooldown, Duration::from_secs(5 * 60))?,
                max_concurrent: a.max_concurrent.unwrap_or(usize::MAX).max(1),
                line,
                name: a.name,
                command: a.command,
                rate_limit,
                failover: a.failover,
                env: a.env,
                allow_empty: a.allow_empty.unwrap_or(false),
                stall: match &a.stall {
                    None => None,
                    Some(s) => Some(dur("stall", &Some(s.clone()), Duration::ZERO)?)
                        .filter(|d| !d.is_zero()),
                },
                kind,
                resume: a.resume.unwrap_or(true),
                model: a.model,
            });
        }
        for a in &agents {
            for f in &a.failover {
                if !agents.iter().any(|x| &x.name == f) {
                    return Err(err(
                        find("failover", Some(f)),
                        format!(
                            "agent {:?}: failover names {f:?}, which is not an agent here",
                            a.name
                        ),
                    ));
                }
            }
        }
        let mut gates: Vec<Gate> = Vec::new();
        for g in raw.gate {
            let line = find("name", Some(&format!("\"{}\"", g.name)));
            if g.command.is_empty() {
                return Err(err(
                    line,
                    format!("gate {:?}: command must not be empty", g.name),
                ));
            }
            if gates.iter().any(|x| x.name == g.name) {
                return Err(err(line, format!("gate {:?} is defined twice", g.name)));
            }
            gates.push(Gate {
                timeout: dur("timeout", &g.timeout, Duration::from_secs(10 * 60))?,
                line,
                name: g.name,
                command: g.command,
                env: g.env,
            });
        }
        // `[server]` is read by braid-server; here it is only allowed.
        let _ = raw.server;
        let mut cache = CacheConfig::default();
        if let Some(c) = raw.cache {
            if let Some(d) = c.dir {
                cache.dir = PathBuf::from(d);
            }
            if let Some(n) = c.namespace {
                if n.is_empty() || n.contains(['/', '\\', '.']) {
                    return Err(err(
                        find("namespace", None),
                        format!("cache namespace {n:?} must be a plain name"),
                    ));
                }
                cache.namespace = n;
            }
            if let Some(m) = c.max_size {
                cache.max_size = parse_size(&m)
                    .map_err(|e| err(find("max_size", None), format!("max_size: {e}")))?;
            }
            cache.ttl = dur("ttl", &c.ttl, cache.ttl)?;
            cache.enabled = c.enabled.unwrap_or(true);
        }
        let mut merge = MergeConfig::default();
        if let Some(m) = &raw.merge {
            merge.require_approval = m.require_approval;
            if let Some(n) = m.max_batch {
                if n == 0 {
                    return Err(err(
                        find("max_batch", None),
                        "max_batch must be at least 1".into(),
                    ));
                }
                merge.max_batch = n;
            }
            for g in &m.gates {
                if !gates.iter().any(|x| &x.name == g) {
                    return Err(err(
                        find("gates", Some(g)),
                        format!("[merge] gates names {g:?}, which is not a [[gate]]"),
                    ));
                }
            }
            merge.gates = m.gates.clone();
            merge.into_line = find("into", Some(&m.into));
        }
        let mut budget = braid_app::budget::Budget::default();
        if let Some(b) = raw.budget {
            for (key, v) in [
                ("task_usd", b.task_usd),
                ("run_usd", b.run_usd),
                ("day_usd", b.day_usd),
            ] {
                if let Some(v) = v
                    && !(v.is_finite() && v >= 0.0)
                {
                    return Err(err(
                        find(key, None),
                        format!("[budget] {key} = {v}: give a number of US dollars, 0 or more"),
                    ));
                }
            }
            budget = braid_app::budget::Budget {
                task_usd: b.task_usd,
                run_usd: b.run_usd,
                day_usd: b.day_usd,
            };
        }
        for (model, p) in &raw.prices {
            if [p.input, p.output, p.cache_read, p.cache_write]
                .iter()
                .any(|v| !(v.is_finite() && *v >= 0.0))
            {
                return Err(err(
                    find(&format!("[prices.\"{model}\"]"), None).max(find("[prices", None)),
                    format!(
                        "[prices] {model:?}: prices are US dollars per million tokens, 0 or more"
                    ),
                ));
            }
        }
        let remote = raw.git.and_then(|g| g.remote);
        if let Some(r) = &remote
            && (r.is_empty()
                || r.starts_with('-')
                || r.chars().any(|c| c.is_whitespace() || c.is_control()))
        {
            return Err(err(
                find("remote", None),
                format!("[git] remote = {r:?}: name a git remote (`git remote -v` lists them)"),
            ));
        }
        let notify = match raw.notify {
            Some(n) if n.command.is_empty() => {
                return Err(err(
                    find("command", None),
                    "[notify] command must not be empty (leave [notify] out to notify nobody)"
                        .into(),
                ));
            }
            Some(n) => Some(n.command),
            None => None,
        };
        let d = Config::default();
        let gc_keep = dur(
            "keep",
            &raw.gc.as_ref().and_then(|g| g.keep.clone()),
            d.gc_keep,
        )?;
        let snapshot_every = dur(
            "every",
            &raw.snapshot.as_ref().and_then(|s| s.every.clone()),
            d.snapshot_every,
        )?;
        let snapshot_keep = raw
            .snapshot
            .as_ref()
            .and_then(|s| s.keep)
            .unwrap_or(d.snapshot_keep);
        if snapshot_keep == 0 {
            return Err(err(
                find("keep", None),
                "[snapshot] keep must be at least 1 (the newest snapshot is what a restore needs)"
                    .into(),
            ));
        }
        if snapshot_every < Duration::from_secs(60) {
            return Err(err(
                find("every", None),
                "[snapshot] every must be at least 1m".into(),
            ));
        }
        Ok(Config {
            gc_keep,
            snapshot_every,
            snapshot_keep,
            run,
            agents,
            gates,
            merge_into: raw.merge.map(|m| m.into),
            merge,
            cache,
            budget,
            prices: raw.prices.into_iter().collect(),
            notify,
            remote,
        })
    }

    pub fn agent(&self, name: &str) -> Option<&Agent> {
        self.agents.iter().find(|a| a.name == name)
    }

    /// The price of a model's tokens: its own entry, else the longest
    /// entry ending in `*` that it starts with (`"gpt-5*"`).
    pub fn price(&self, model: &str) -> Option<Price> {
        if let Some((_, p)) = self.prices.iter().find(|(m, _)| m == model) {
            return Some(*p);
        }
        self.prices
            .iter()
            .filter_map(|(m, p)| Some((m.strip_suffix('*')?, p)))
            .filter(|(prefix, _)| model.starts_with(prefix))
            .max_by_key(|(prefix, _)| prefix.len())
            .map(|(_, p)| *p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[run]
jobs = 2
max_attempts = 2
backoff = { base = "10ms", cap = "1s" }
memory_floor = "64MiB"

[[agent]]
name = "claude"
command = ["claude", "-p", "{prompt}"]
max_concurrent = 2
timeout = "30m"
cooldown = "5m"
rate_limit = ['(?i)usage limit.*reset at (?P<reset>[0-9:apm ]+)', '(?i)retry after (?P<retry_after>\d+)']
failover = ["codex"]

[[agent]]
name = "codex"
command = ["codex", "exec", "{prompt}"]

[[gate]]
name = "test"
command = ["cargo", "test"]
timeout = "10m"
env = ["PATH", "HOME"]

[merge]
into = "main"
"#;

    #[test]
    fn parses_the_documented_example() {
        let c = Config::parse("c.toml", GOOD).unwrap();
        assert_eq!(c.run.jobs, 2);
        assert_eq!(c.run.backoff_base, Duration::from_millis(10));
        assert_eq!(c.run.memory_floor, 64 << 20);
        assert_eq!(c.agents.len(), 2);
        assert_eq!(c.agents[0].rate_limit.len(), 2);
        assert_eq!(c.agents[0].failover, vec!["codex"]);
        assert_eq!(c.gates[0].env, vec!["PATH", "HOME"]);
        assert_eq!(c.merge_into.as_deref(), Some("main"));
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let bad = GOOD.replace("max_concurrent = 2", "max_concurent = 2");
        let e = Config::parse("c.toml", &bad).unwrap_err().to_string();
        assert!(e.starts_with("c.toml:11:"), "{e}");
        assert!(e.contains("max_concurent"), "{e}");
        let bad = GOOD.replace("timeout = \"30m\"", "timeout = \"thirty\"");
        let e = Config::parse("c.toml", &bad).unwrap_err().to_string();
        assert!(e.starts_with("c.toml:12:") && e.contains("timeout"), "{e}");
        let bad = GOOD.replace("failover = [\"codex\"]", "failover = [\"gemini\"]");
        let e = Config::parse("c.toml", &bad).unwrap_err().to_string();
        assert!(e.starts_with("c.toml:15:") && e.contains("gemini"), "{e}");
        let bad = GOOD.replace("(?P<retry_after>", "(?P<retry_after");
        let e = Config::parse("c.toml", &bad).unwrap_err().to_string();
        assert!(e.contains("c.toml:14:") && e.contains("rate_limit"), "{e}");
        let bad = GOOD.replace("jobs = 2", "jobs = \"two\"");
        let e = Config::parse("c.toml", &bad).unwrap_err().to_string();
        assert!(e.starts_with("c.toml:3:") && e.contains("jobs"), "{e}");
    }

    #[test]
    fn merge_settings_are_checked() {
        let c = Config::parse("c.toml", GOOD).unwrap();
        assert_eq!((c.merge.max_batch, c.merge.gates.len()), (8, 0));
        let with =
            |extra: &str| GOOD.replace("into = \"main\"", &format!("into = \"main\"\n{extra}"));
        let c = Config::parse("c.toml", &with("max_batch = 3\ngates = [\"test\"]")).unwrap();
        assert_eq!(
            (c.merge.max_batch, c.merge.gates.clone()),
            (3, vec!["test".to_owned()])
        );
        let e = Config::parse("c.toml", &with("max_batch = 0"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_batch") && e.contains("at least 1"), "{e}");
        let e = Config::parse("c.toml", &with("gates = [\"lint\"]"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("\"lint\"") && e.contains("not a [[gate]]"),
            "{e}"
        );
    }

    #[test]
    fn every_example_in_docs_config_md_parses() {
        let doc = include_str!("../../../docs/config.md");
        let mut blocks = 0;
        for block in doc.split("```toml\n").skip(1) {
            let block = block.split("```").next().unwrap();
            // A fragment may name the gate the page defines elsewhere.
            let text = if block.contains("name = \"test\"") {
                block.to_owned()
            } else {
                format!("[[gate]]\nname = \"test\"\ncommand = [\"true\"]\n{block}")
            };
            Config::parse("docs/config.md", &text)
                .unwrap_or_else(|e| panic!("{e}\nin this example:\n{text}"));
            blocks += 1;
        }
        assert!(blocks >= 3, "{blocks} examples");
    }

    #[test]
    fn budgets_prices_and_notify_are_read_and_checked() {
        let c = Config::parse(
            "c",
            "[[agent]]\nname = \"codex\"\nkind = \"codex\"\nmodel = \"gpt-5.5\"\nresume = false\n\
             [budget]\ntask_usd = 1.5\nday_usd = 10\n\
             [prices.\"gpt-5.5\"]\ninput = 1.25\noutput = 10.0\n\
             [prices.\"gpt-5*\"]\ninput = 2.0\noutput = 20.0\n\
             [notify]\ncommand = [\"notify-send\", \"braid\"]\n",
        )
        .unwrap();
        assert_eq!(c.budget.task_usd, Some(1.5));
        assert_eq!(c.budget.day_usd, Some(10.0));
        assert_eq!(c.budget.run_usd, None);
        assert_eq!(
            c.price("gpt-5.5").unwrap().input,
            1.25,
            "an exact name wins"
        );
        assert_eq!(
            c.price("gpt-5.6-sol").unwrap().input,
            2.0,
            "a prefix covers the rest"
        );
        assert!(c.price("claude-opus").is_none());
        let a = c.agent("codex").unwrap();
        assert!(!a.resume);
        assert_eq!(a.command[..4], ["codex", "exec", "--model", "gpt-5.5"]);
        assert_eq!(c.notify.as_deref().unwrap(), ["notify-send", "braid"]);
        for (bad, says) in [
            ("[budget]\nrun_usd = -1\n", "run_usd"),
            ("[budget]\nweek_usd = 1\n", "week_usd"),
            ("[prices.m]\ninput = -2\noutput = 1\n", "per million tokens"),
            ("[prices.m]\ninput = 1\n", "output"),
            ("[notify]\ncommand = []\n", "must not be empty"),
        ] {
            let e = Config::parse("c", bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
