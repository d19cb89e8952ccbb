//! `braid merge run`: lands finished branches on the target, batch by batch
//! in the plan's order. A candidate is the target plus a list of branches
//! merged on objects alone (no worktree, no index); its gates run in a
//! temporary worktree, answered from the gate cache when the same tree
//! already passed. A passing batch moves the target by compare-and-swap; a
//! failing one is bisected ([`braid_core::merge::Bisect`]) with candidates
//! tested in parallel. Every result is appended to a journal before it is
//! acted on, so a run killed at any point continues where it was and never
//! lands a candidate whose gates did not pass.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use braid_core::merge::Bisect;
use braid_core::{DepKind, EventKind, NewTask, State, TaskId};
use braid_git::Merged;
use braid_store::{Command, Store};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::cache::{Cache, gate_key, tree_identity};
use crate::config::{CacheConfig, Gate};
use crate::merge::{Plan, PlanInput};

/// Where the commits a resolve task must contain are pinned
/// (`refs/braid/resolves/<id>/{branch,target}`).
pub fn resolves_pin(id: &TaskId) -> String {
    format!("resolves/{id}")
}

/// A rejected branch's task state when the conflict went to a person.
pub const NEEDS_A_PERSON: &str = "review, needs-human";

/// What candidates' gates are recorded as working in.
const MERGE_HOLDS: &str = "merge";

/// How a merge run goes.
#[derive(Clone, Debug)]
pub struct Settings {
    pub into: String,
    /// Candidates tested at once.
    pub jobs: usize,
    /// At most this many branches in one candidate.
    pub max_batch: usize,
    /// Show what would happen; change nothing and run no gate.
    pub dry_run: bool,
    /// The gates every candidate must pass.
    pub gates: Vec<Gate>,
    pub cache: Option<CacheConfig>,
    pub kill_grace: Duration,
    /// `.braid/merge`: the journal, the lock and candidate worktrees.
    pub work_dir: PathBuf,
    /// Where gate logs go.
    pub log_dir: PathBuf,
    /// Where candidates' gates are recorded while they run (`merge`), so a
    /// later merge run stops those a killed one left.
    pub procs: Option<crate::supervise::Registry>,
    pub max_attempts: u32,
    pub failure_tail: usize,
    pub actor: String,
    /// `[git] remote`: fetch the target and the task branches from it
    /// first, and land on it by compare-and-swap.
    pub remote: Option<String>,
}

/// Why a candidate failed.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Failure {
    Gate {
        gate: String,
        exit: String,
        tail: String,
    },
    Conflict {
        files: Vec<String>,
    },
}

impl Failure {
    pub fn describe(&self) -> String {
        match self {
            Failure::Gate { gate, exit, .. } => format!("gate {gate} ({exit})"),
            Failure::Conflict { files } => format!("merge conflict in {}", files.join(", ")),
        }
    }
}

/// What happened to one candidate.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Tested {
    pub branches: Vec<String>,
    pub passed: bool,
    /// Answered by the journal of an earlier, interrupted run.
    pub from_journal: bool,
    /// Gates answered by the gate cache / gates run.
    pub cached: usize,
    pub gate_runs: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Landed {
    pub branch: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// The target's commit once it landed.
    pub commit: String,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Rejected {
    pub branch: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    pub failure: Failure,
    /// For a conflict: what the branch conflicts with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub with: Option<String>,
    /// What became of the task: `open` (another attempt), `failed`
    /// (attempts spent), or `blocked` by a new conflict-resolution task.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolve_task: Option<String>,
    /// The conflict went to a person (label `needs-human`) instead of a
    /// resolve task: the branch resolves a conflict itself, or its task
    /// already had a resolve task. Says why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub needs_human: Option<String>,
    /// The bisection round of its batch that isolated it (0: found while
    /// the candidate was built).
    pub isolated_in_round: usize,
}

/// A step, as it happens (for progress output).
#[derive(Clone, Debug)]
pub enum Step<'a> {
    Batch {
        level: usize,
        branches: &'a [String],
    },
    Round {
        round: usize,
        candidates: usize,
    },
    Tested(&'a Tested),
    Landed {
        branches: &'a [String],
        from: &'a str,
        to: &'a str,
    },
    Rejected(&'a Rejected),
    TargetMoved {
        from: &'a str,
        to: &'a str,
    },
    Note(&'a str),
}

/// How a merge run ended.
#[derive(Clone, Debug, Serialize, Default)]
pub struct Outcome {
    pub into: String,
    /// The target before and after.
    pub from: String,
    pub to: String,
    pub dry_run: bool,
    pub landed: Vec<Landed>,
    pub rejected: Vec<Rejected>,
    /// Branches not attempted, and why.
    pub waiting: Vec<String>,
    pub batches: usize,
    pub rounds: usize,
    pub candidates: usize,
    pub gate_runs: usize,
    pub cached: usize,
    pub from_journal: usize,
    /// Times the target moved while a candidate was tested (each time the
    /// batch was rebuilt on the new target).
    pub retargeted: usize,
    /// For `--dry-run`: what each batch would do.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub would: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    #[error("{0}")]
    Input(String),
    /// Another merge run holds the lock, or the target cannot be moved.
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Git(#[from] braid_git::Error),
    #[error(transparent)]
    Store(#[from] braid_store::Error),
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// Something that cannot happen did (a candidate's test panicked, a
    /// tested candidate no longer builds).
    #[error("{0}")]
    Broken(String),
}

/// An I/O error on `path`.
fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> RunError + '_ {
    move |source| RunError::Io {
        context: path.display().to_string(),
        source,
    }
}

/// The journal: every candidate's result, keyed by what the candidate is
/// (the target's commit, each branch's tip, the gates), appended and synced
/// before the result is acted on.
struct Journal {
    path: PathBuf,
    results: HashMap<String, Tested>,
}

#[derive(Serialize, Deserialize)]
struct JournalLine {
    key: String,
    result: Tested,
}

/// Entries kept when the journal is compacted.
const JOURNAL_KEEP: usize = 2_000;

impl Journal {
    fn open(dir: &Path) -> Result<Journal, RunError> {
        let path = dir.join("journal.jsonl");
        let mut results = HashMap::new();
        let mut lines = 0;
        if let Ok(text) = std::fs::read_to_string(&path) {
            // A torn last line (a kill mid-write) does not parse: skipped.
            for line in text.lines() {
                if let Ok(l) = serde_json::from_str::<JournalLine>(line) {
                    results.insert(l.key, l.result);
                    lines += 1;
                }
            }
            if lines > JOURNAL_KEEP * 2 {
                let keep: Vec<&str> = text.lines().rev().take(JOURNAL_KEEP).collect();
                let body: String = keep.iter().rev().map(|l| format!("{l}\n")).collect();
                braid_store::fsx::write_atomic(&path, body.as_bytes()).map_err(io_at(&path))?;
            }
        }
        Ok(Journal { path, results })
    }

    fn append(&mut self, key: &str, result: &Tested) -> Result<(), RunError> {
        let line = serde_json::to_string(&JournalLine {
            key: key.to_owned(),
            result: result.clone(),
        })
        .map_err(|e| RunError::Broken(format!("encoding a journal line: {e}")))?;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(io_at(&self.path))?;
        f.write_all(format!("{line}\n").as_bytes())
            .and_then(|()| f.sync_data())
            .map_err(io_at(&self.path))?;
        self.results.insert(key.to_owned(), result.clone());
        Ok(())
    }
}

/// One merge run: lands what it can of `inputs` (tasks in review, or plain
/// branches), in the plan's order.
pub struct Run<'a> {
    repo: &'a Path,
    store: &'a dyn Store,
    settings: Settings,
    on_step: &'a mut dyn FnMut(Step),
    journal: Journal,
    outcome: Outcome,
    /// Tip of each branch, by name.
    tips: HashMap<String, String>,
    titles: HashMap<String, String>,
    /// Built merge commits by (target, branch names in order).
    built: HashMap<(String, Vec<String>), Result<String, (String, Vec<String>)>>,
    gates_id: String,
    /// A dry run's target: the merge commit of what it says would land so
    /// far (made from objects, on no branch), so later batches are checked
    /// against it exactly as the real run would check them.
    dry_target: Option<String>,
}

impl<'a> Run<'a> {
    pub fn new(
        repo: &'a Path,
        store: &'a dyn Store,
        settings: Settings,
        on_step: &'a mut dyn FnMut(Step),
    ) -> Result<Run<'a>, RunError> {
        std::fs::create_dir_all(&settings.work_dir).map_err(io_at(&settings.work_dir))?;
        let journal = Journal::open(&settings.work_dir)?;
        let mut h = blake3::Hasher::new();
        for g in &settings.gates {
            h.update(g.name.as_bytes());
            h.update(b"\0");
            h.update(gate_key(g, "").as_bytes());
        }
        Ok(Run {
            repo,
            store,
            outcome: Outcome {
                into: settings.into.clone(),
                dry_run: settings.dry_run,
                ..Outcome::default()
            },
            settings,
            on_step,
            journal,
            tips: HashMap::new(),
            titles: HashMap::new(),
            built: HashMap::new(),
            gates_id: h.finalize().to_hex().to_string(),
            dry_target: None,
        })
    }

    /// Runs the merge of `inputs`. Holds `.braid/merge/lock` throughout:
    /// a second run at the same time is refused.
    pub fn run(mut self, inputs: &[PlanInput]) -> Result<Outcome, RunError> {
        let lock_path = self.settings.work_dir.join("lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_at(&lock_path))?;
        if !self.settings.dry_run {
            match lock.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(RunError::Conflict(
                        "another merge run is in progress on this project (lock .braid/merge/lock)"
                            .into(),
                    ));
                }
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(io_at(&lock_path)(e));
                }
            }
        }
        if !self.settings.dry_run
            && let Some(registry) = &self.settings.procs
        {
            // Holding the lock, no other merge run is live: gates still
            // working for one are left by a run that died.
            for s in registry.evict(MERGE_HOLDS) {
                tracing::warn!(what = %s.describe(), "a killed merge run's gate");
            }
        }
        if !self.settings.dry_run {
            // Candidate worktrees left by a run that was killed.
            let work = self.settings.work_dir.join("work");
            if work.exists() {
                if let Err(e) = std::fs::remove_dir_all(&work) {
                    tracing::warn!(dir = %work.display(), error = %e, "removing old candidate worktrees");
                }
                braid_git::prune_worktrees(self.repo)?;
            }
        }
        let into = self.settings.into.clone();
        if let Some(remote) = self.settings.remote.clone() {
            // Every node's work, and the target as the remote has it: this
            // clone's branches follow where the remote is ahead.
            crate::remote::fetch_work(self.repo, &remote, &into)?;
            crate::remote::follow(self.repo, &remote, &into)?;
            // Landing compares against the remote's tip: a target holding
            // commits the remote lacks could never land (nor should braid
            // publish them for you).
            let theirs = crate::remote::tracking(&remote, &into);
            if braid_git::rev_exists(self.repo, &theirs)
                && braid_git::rev_exists(self.repo, &format!("refs/heads/{into}"))
                && !braid_git::is_ancestor(self.repo, &into, &theirs)?
            {
                return Err(RunError::Input(format!(
                    "{into} in this clone holds commits {remote}/{into} does not have; push them (git push {remote} {into}) or drop them, then merge again"
                )));
            }
            for i in inputs {
                crate::remote::follow(self.repo, &remote, &i.name)?;
            }
        }
        if !braid_git::rev_exists(self.repo, &format!("refs/heads/{into}")) {
            return Err(RunError::Input(format!(
                "the target branch {into:?} does not exist in {}",
                self.repo.display()
            )));
        }
        self.outcome.from = braid_git::rev_parse(self.repo, &into)?;
        for i in inputs {
            if let Some(t) = &i.task
                && let Ok(id) = TaskId::parse(t)
                && let Ok(task) = self.store.task(&id)
            {
                self.titles.insert(i.name.clone(), task.title);
            }
        }
        // Branches already in the target (landed before a crash, or merged
        // by hand) are done without a candidate.
        let mut todo = Vec::new();
        let target = self.outcome.from.clone();
        for i in inputs {
            let tip = braid_git::rev_parse(self.repo, &i.name)?;
            if braid_git::is_ancestor(self.repo, &tip, &target)? {
                self.land_tasks(std::slice::from_ref(&i.name), inputs, &target)?;
            } else {
                self.tips.insert(i.name.clone(), tip);
                todo.push(i.clone());
            }
        }
        let plan = crate::merge::plan(self.repo, &into, &todo, self.settings.jobs).map_err(
            |e| match e {
                crate::merge::PlanError::Input(m) => RunError::Input(m),
                crate::merge::PlanError::Git(g) => RunError::Git(g),
            },
        )?;
        self.run_plan(&plan, &todo)?;
        self.outcome.to = braid_git::rev_parse(self.repo, &into)?;
        Ok(self.outcome)
    }

    fn step(&mut self, s: Step) {
        (self.on_step)(s);
    }

    fn run_plan(&mut self, plan: &Plan, inputs: &[PlanInput]) -> Result<(), RunError> {
        let deps_of: HashMap<&str, &[String]> = inputs
            .iter()
            .map(|i| (i.name.as_str(), i.deps.as_slice()))
            .collect();
        let mut landed: std::collections::HashSet<String> = Default::default();
        for level in &plan.order {
            for batch in &level.batches {
                // A branch whose dependency did not land waits.
                let mut ready = Vec::new();
                for b in batch {
                    let missing: Vec<&String> = deps_of
                        .get(b.as_str())
                        .copied()
                        .unwrap_or_default()
                        .iter()
                        .filter(|d| !landed.contains(*d))
                        .collect();
                    if missing.is_empty() {
                        ready.push(b.clone());
                    } else {
                        let note = format!(
                            "{b} waits for {}, which did not land",
                            missing
                                .iter()
                                .map(|s| s.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        );
                        self.step(Step::Note(&note));
                        self.outcome.waiting.push(note);
                    }
                }
                for chunk in ready.chunks(self.settings.max_batch.max(1)) {
                    self.outcome.batches += 1;
                    self.step(Step::Batch {
                        level: level.level,
                        branches: chunk,
                    });
                    let done = self.run_batch(chunk, plan, inputs)?;
                    landed.extend(done);
                }
            }
        }
        Ok(())
    }

    /// The candidate key: the target's commit, each branch and its tip, the gates.
    fn key(&self, target: &str, branches: &[String]) -> String {
        let mut h = blake3::Hasher::new();
        h.update(target.as_bytes());
        for b in branches {
            h.update(b"\0");
            h.update(b.as_bytes());
            h.update(b"@");
            h.update(self.tips.get(b).map_or("", String::as_str).as_bytes());
        }
        h.update(b"\0gates\0");
        h.update(self.gates_id.as_bytes());
        h.finalize().to_hex().to_string()
    }

    /// Builds target + branches (merged in order) as a commit, reusing
    /// built prefixes. `Err((branch, files))`: that branch conflicts.
    fn build(
        &mut self,
        target: &str,
        branches: &[String],
    ) -> Result<Result<String, (String, Vec<String>)>, RunError> {
        let date = braid_git::commit_date(self.repo, target)?;
        let mut at = target.to_owned();
        for n in 1..=branches.len() {
            let k = (target.to_owned(), branches[..n].to_vec());
            if let Some(r) = self.built.get(&k) {
                match r {
                    Ok(c) => {
                        at = c.clone();
                        continue;
                    }
                    Err(e) => return Ok(Err(e.clone())),
                }
            }
            let b = &branches[n - 1];
            let tip = self.tips.get(b).cloned().unwrap_or_else(|| b.clone());
            let title = self
                .titles
                .get(b)
                .map(|t| format!(": {t}"))
                .unwrap_or_default();
            let msg = format!(
                "Merge {b}{title}\n\nMerged by braid merge run into {}.",
                self.settings.into
            );
            let r = match braid_git::merge_onto(self.repo, &at, &tip, &msg, &date)? {
                Merged::Commit(c) => Ok(c),
                Merged::Conflict(files) => Err((b.clone(), files)),
            };
            self.built.insert(k, r.clone());
            match r {
                Ok(c) => at = c,
                Err(e) => return Ok(Err(e)),
            }
        }
        Ok(Ok(at))
    }

    /// Tests candidates (lists of branch names on `target`) in parallel,
    /// `jobs` at a time, answering from the journal and the gate cache
    /// where it can. Results are journaled before they are returned.
    fn test(&mut self, target: &str, candidates: &[Vec<String>]) -> Result<Vec<Tested>, RunError> {
        let mut out: Vec<Option<Tested>> = vec![None; candidates.len()];
        let mut to_run: Vec<(usize, String, String)> = Vec::new(); // (index, key, commit)
        for (i, c) in candidates.iter().enumerate() {
            let key = self.key(target, c);
            if let Some(r) = self.journal.results.get(&key) {
                let mut r = r.clone();
                r.from_journal = true;
                r.gate_runs = 0;
                r.cached = 0;
                out[i] = Some(r);
                continue;
            }
            match self.build(target, c)? {
                Err((_, files)) => {
                    out[i] = Some(Tested {
                        branches: c.clone(),
                        passed: false,
                        from_journal: false,
                        cached: 0,
                        gate_runs: 0,
                        failure: Some(Failure::Conflict { files }),
                    })
                }
                Ok(commit) => to_run.push((i, key, commit)),
            }
        }
        let results: Vec<Result<Tested, RunError>> = std::thread::scope(|s| {
            let handles: Vec<_> = to_run
                .iter()
                .map(|(i, key, commit)| {
                    let branches = candidates[*i].clone();
                    let settings = &self.settings;
                    let repo = self.repo;
                    s.spawn(move || run_candidate(repo, settings, key, commit, branches))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(RunError::Broken("a candidate's test panicked".into()))
                    })
                })
                .collect()
        });
        for ((i, key, _), r) in to_run.iter().zip(results) {
            let r = r?;
            self.journal.append(key, &r)?;
            out[*i] = Some(r);
        }
        Ok(out.into_iter().flatten().collect())
    }

    /// Lands what it can of one batch; returns the branches that landed.
    fn run_batch(
        &mut self,
        batch: &[String],
        plan: &Plan,
        inputs: &[PlanInput],
    ) -> Result<Vec<String>, RunError> {
        let into = self.settings.into.clone();
        let mut tries = 0;
        'target: loop {
            tries += 1;
            let target = match &self.dry_target {
                Some(t) => t.clone(),
                None => braid_git::rev_parse(self.repo, &into)?,
            };
            // Branches the target already holds are done; the rest are
            // merged in order, and one that conflicts with what is before
            // it is set aside.
            let mut members = Vec::new();
            let mut conflicts = Vec::new();
            let mut landed_now = Vec::new();
            for b in batch {
                let tip = self.tips.get(b).cloned().unwrap_or_default();
                if braid_git::is_ancestor(self.repo, &tip, &target)? {
                    landed_now.push(b.clone());
                    continue;
                }
                let mut trial = members.clone();
                trial.push(b.clone());
                match self.build(&target, &trial)? {
                    Ok(_) => members.push(b.clone()),
                    Err((_, files)) => conflicts.push((b.clone(), files)),
                }
            }
            if !landed_now.is_empty() {
                self.land_tasks(&landed_now, inputs, &target)?;
            }
            if self.settings.dry_run {
                let w = self.would(&target, batch, &members, &conflicts, inputs)?;
                self.outcome.would.push(w);
                if !members.is_empty()
                    && let Ok(commit) = self.build(&target, &members)?
                {
                    self.dry_target = Some(commit);
                }
                // Later levels are shown as if these landed.
                return Ok(members);
            }
            let mut bisect = Bisect::new((0..members.len()).collect());
            let mut isolated: HashMap<usize, usize> = HashMap::new();
            while !bisect.done() {
                let round = bisect.round(self.settings.jobs);
                let lists: Vec<Vec<String>> = round
                    .iter()
                    .map(|c| c.iter().map(|&i| members[i].clone()).collect())
                    .collect();
                self.outcome.rounds += 1;
                self.outcome.candidates += lists.len();
                self.step(Step::Round {
                    round: bisect.rounds() + 1,
                    candidates: lists.len(),
                });
                let results = self.test(&target, &lists)?;
                for r in &results {
                    self.outcome.gate_runs += r.gate_runs;
                    self.outcome.cached += r.cached;
                    self.outcome.from_journal += usize::from(r.from_journal);
                    self.step(Step::Tested(r));
                }
                bisect.record(round.into_iter().zip(results.iter().map(|r| r.passed)));
                for &b in bisect.bad() {
                    isolated.entry(b).or_insert(bisect.rounds());
                }
            }
            let accepted: Vec<String> = bisect
                .accepted()
                .iter()
                .map(|&i| members[i].clone())
                .collect();
            let mut landed = landed_now;
            if !accepted.is_empty() {
                let Ok(commit) = self.build(&target, &accepted)? else {
                    return Err(RunError::Broken(
                        "a tested candidate no longer builds".into(),
                    ));
                };
                if !self.move_target(&target, &commit)? {
                    let now = braid_git::rev_parse(self.repo, &into)?;
                    self.outcome.retargeted += 1;
                    self.step(Step::TargetMoved {
                        from: &target,
                        to: &now,
                    });
                    if tries >= 5 {
                        return Err(RunError::Conflict(format!(
                            "{into} kept moving while its candidate was tested ({tries} tries); run again"
                        )));
                    }
                    continue 'target;
                }
                self.step(Step::Landed {
                    branches: &accepted,
                    from: &target,
                    to: &commit,
                });
                self.land_tasks(&accepted, inputs, &commit)?;
                landed.extend(accepted);
            }
            // Failures: each bad branch with the result that proved it.
            let failures: Vec<(String, Failure, usize)> = bisect
                .bad()
                .iter()
                .map(|&i| {
                    let b = &members[i];
                    let why = self.journal_failure(&target, b).unwrap_or(Failure::Gate {
                        gate: "?".into(),
                        exit: "failed".into(),
                        tail: String::new(),
                    });
                    (b.clone(), why, isolated.get(&i).copied().unwrap_or(0))
                })
                .collect();
            for (b, why, round) in failures {
                match why {
                    Failure::Conflict { files } => {
                        self.reject_conflict(&b, files, round, &landed, plan, inputs)?
                    }
                    f => self.reject_failure(&b, f, round, inputs)?,
                }
            }
            for (b, files) in conflicts {
                self.reject_conflict(&b, files, 0, &landed, plan, inputs)?;
            }
            return Ok(landed);
        }
    }

    /// What a batch would do (`--dry-run`): whether its candidate is
    /// already known to pass or fail (journal, gate cache), and conflicts.
    fn would(
        &mut self,
        target: &str,
        batch: &[String],
        members: &[String],
        conflicts: &[(String, Vec<String>)],
        inputs: &[PlanInput],
    ) -> Result<String, RunError> {
        let mut w = format!(
            "[{}] on {}:",
            batch.join(" "),
            &target[..10.min(target.len())]
        );
        if !members.is_empty() {
            let key = self.key(target, members);
            let known = match self.journal.results.get(&key) {
                Some(r) if r.passed => "known to pass (recorded): would land",
                Some(_) => "known to fail (recorded): would bisect",
                None => {
                    let Ok(commit) = self.build(target, members)? else {
                        return Err(RunError::Broken(
                            "a conflict-free candidate no longer builds".into(),
                        ));
                    };
                    let identity = tree_identity(&braid_git::tree_of(self.repo, &commit)?);
                    let cache = self
                        .settings
                        .cache
                        .as_ref()
                        .and_then(|c| Cache::open(c).ok());
                    let cached = cache.is_some_and(|c| {
                        self.settings
                            .gates
                            .iter()
                            .all(|g| c.lookup(&gate_key(g, &identity)).is_some())
                    });
                    if cached || self.settings.gates.is_empty() {
                        "gates cached as passing: would land"
                    } else {
                        "would test"
                    }
                }
            };
            w.push_str(&format!(" {} {known}", members.join(" ")));
        }
        for (b, files) in conflicts {
            let task = Self::task_of(inputs, b);
            let fate = match self.escalation(task.as_ref(), b, &self.settings.into, files)? {
                Some(_) => "would need a person (needs-human)",
                None => "would get a resolve task",
            };
            w.push_str(&format!("; {b} conflicts ({}): {fate}", files.join(", ")));
        }
        Ok(w)
    }

    /// The failure of the shortest failing candidate on `target` ending in `b`.
    fn journal_failure(&mut self, target: &str, b: &str) -> Option<Failure> {
        let mut best: Option<(usize, Failure)> = None;
        let keys: Vec<(Vec<String>, String)> = self
            .built
            .keys()
            .filter(|(t, l)| t == target && l.last().map(String::as_str) == Some(b))
            .map(|(_, l)| (l.clone(), self.key(target, l)))
            .collect();
        for (list, key) in keys {
            let failure = match self.built.get(&(target.to_owned(), list.clone())) {
                Some(Err((_, files))) => Some(Failure::Conflict {
                    files: files.clone(),
                }),
                _ => self
                    .journal
                    .results
                    .get(&key)
                    .and_then(|r| r.failure.clone()),
            };
            if let Some(f) = failure
                && best.as_ref().is_none_or(|(n, _)| list.len() < *n)
            {
                best = Some((list.len(), f));
            }
        }
        best.map(|(_, f)| f)
    }

    /// Moves the target from `old` to `new` by compare-and-swap; a target
    /// checked out in a worktree is fast-forwarded there (its local
    /// changes are kept, or the landing is refused naming them). `false`:
    /// the target had moved.
    fn move_target(&mut self, old: &str, new: &str) -> Result<bool, RunError> {
        let into = &self.settings.into.clone();
        if let Some(remote) = self.settings.remote.clone() {
            // Compare-and-swap on the remote; this clone follows.
            let dst = format!("refs/heads/{into}");
            let pushed = crate::remote::retry("push", || {
                braid_git::push(self.repo, &remote, new, &dst, Some(old))
            })?;
            crate::remote::fetch_work(self.repo, &remote, into)?;
            if let Err(e) = crate::remote::follow(self.repo, &remote, into) {
                // Landed on the remote all the same; the local copy
                // catches up at the next run.
                tracing::warn!(%into, error = %e, "the local target could not follow the remote's");
            }
            return Ok(pushed == braid_git::Pushed::Done);
        }
        let checkout = braid_git::worktrees(self.repo)?
            .into_iter()
            .find(|(_, b)| b.as_deref() == Some(into.as_str()));
        match checkout {
            None => Ok(braid_git::update_branch(self.repo, into, new, old)?),
            Some((wt, _)) => braid_git::fast_forward_checkout(&wt, new, old).map_err(|e| {
                RunError::Conflict(format!(
                    "{into} is checked out at {} and could not be fast-forwarded (its gates passed; nothing was moved): {e}",
                    wt.display()
                ))
            }),
        }
    }

    fn task_of(inputs: &[PlanInput], branch: &str) -> Option<TaskId> {
        inputs
            .iter()
            .find(|i| i.name == branch)
            .and_then(|i| i.task.as_deref())
            .and_then(|t| TaskId::parse(t).ok())
    }

    /// Landed branches: their tasks are done, their worktrees go.
    fn land_tasks(
        &mut self,
        branches: &[String],
        inputs: &[PlanInput],
        commit: &str,
    ) -> Result<(), RunError> {
        for b in branches {
            let task = Self::task_of(inputs, b);
            self.outcome.landed.push(Landed {
                branch: b.clone(),
                task: task.as_ref().map(|t| t.to_string()),
                commit: commit.to_owned(),
            });
            let Some(id) = task else { continue };
            if self.settings.dry_run {
                // (Landed on the target as the dry run imagines it.)
                continue;
            }
            let t = self.store.task(&id)?;
            if t.state == State::Done {
                continue;
            }
            self.store.apply(
                &self.settings.actor,
                Command::SetState {
                    id: id.clone(),
                    to: State::Done,
                    reason: Some(format!(
                        "merged into {} at {}",
                        self.settings.into,
                        &commit[..12.min(commit.len())]
                    )),
                },
            )?;
            let wt = self
                .settings
                .work_dir
                .parent()
                .map(|d| braid_app::paths::workspace_in(d, true, &id));
            if let Some(wt) = wt
                && wt.exists()
                && let Err(e) = braid_git::drop_worktree(self.repo, &wt)
            {
                // The task has landed; a worktree left over is only clutter
                // that `braid gc` removes.
                tracing::debug!(worktree = %wt.display(), error = %e, "dropping a landed task's worktree");
            }
        }
        Ok(())
    }

    /// A branch whose gates failed on top of the good ones before it: its
    /// task goes back for another attempt with the output, or fails when
    /// its attempts are spent.
    fn reject_failure(
        &mut self,
        branch: &str,
        failure: Failure,
        round: usize,
        inputs: &[PlanInput],
    ) -> Result<(), RunError> {
        let mut r = Rejected {
            branch: branch.to_owned(),
            task: None,
            failure: failure.clone(),
            with: None,
            task_state: None,
            resolve_task: None,
            needs_human: None,
            isolated_in_round: round,
        };
        if let Some(id) = Self::task_of(inputs, branch) {
            r.task = Some(id.to_string());
            let attempt = self
                .store
                .task_events(&id, 200)?
                .iter()
                .filter_map(|e| e.payload["attempt"].as_u64())
                .max()
                .unwrap_or(1) as u32;
            let what = format!(
                "{} when merged into {}",
                failure.describe(),
                self.settings.into
            );
            let tail = match &failure {
                Failure::Gate { tail, .. } => tail.clone(),
                Failure::Conflict { files } => files.join("\n"),
            };
            let actor = self.settings.actor.clone();
            if attempt < self.settings.max_attempts {
                self.store.apply_all(
                    &actor,
                    vec![
                        Command::Record {
                            id: id.clone(),
                            kind: EventKind::Retrying,
                            payload: json!({"failed": what, "tail": tail, "attempt": attempt, "backoff_ms": 0, "merge": true}),
                        },
                        Command::SetState {
                            id: id.clone(),
                            to: State::Open,
                            reason: Some(what),
                        },
                    ],
                )?;
                r.task_state = Some("open".into());
            } else {
                self.store.apply(
                    &actor,
                    Command::SetState {
                        id: id.clone(),
                        to: State::Failed,
                        reason: Some(format!(
                            "{what}; attempt {attempt} of {}",
                            self.settings.max_attempts
                        )),
                    },
                )?;
                r.task_state = Some("failed".into());
            }
        }
        self.step(Step::Rejected(&r));
        self.outcome.rejected.push(r);
        Ok(())
    }

    /// Whether a conflict of `branch` (of `task`) goes to a person instead
    /// of a new resolve task, and why: braid never makes a resolve task for
    /// a resolve task, nor a second one for the same task (so at most one
    /// per pair, and a careless resolver cannot start a chain).
    fn escalation(
        &self,
        task: Option<&TaskId>,
        branch: &str,
        with: &str,
        files: &[String],
    ) -> Result<Option<(TaskId, String)>, RunError> {
        let Some(id) = task else {
            return Ok(None);
        };
        let t = self.store.task(id)?;
        let files = files.join(", ");
        if t.labels.iter().any(|l| l == braid_app::ops::MERGE_CONFLICT) {
            return Ok(Some((
                id.clone(),
                format!(
                    "{branch} resolves a merge conflict and conflicts itself with {with} in {files}; \
                     braid makes no resolve task for a resolve task. Merge {with} into {branch}, settle \
                     the conflict and commit, then remove the needs-human label."
                ),
            )));
        }
        let blockers: Vec<TaskId> = t
            .deps
            .iter()
            .filter(|d| d.kind == DepKind::Blocks)
            .map(|d| d.id.clone())
            .collect();
        for b in blockers {
            let Ok(bt) = self.store.task(&b) else {
                continue;
            };
            if bt
                .labels
                .iter()
                .any(|l| l == braid_app::ops::MERGE_CONFLICT)
            {
                return Ok(Some((
                    id.clone(),
                    format!(
                        "{branch} conflicts with {with} in {files} again; {b} ({}) already tried to \
                         resolve a conflict of it. Merge {with} into {branch}, settle the conflict and \
                         commit, then remove the needs-human label.",
                        bt.state
                    ),
                )));
            }
        }
        Ok(None)
    }

    /// A branch that conflicts: a task "resolve conflict between X and Y"
    /// blocks its task, on a branch that starts from X's tip.
    fn reject_conflict(
        &mut self,
        branch: &str,
        files: Vec<String>,
        round: usize,
        landed: &[String],
        plan: &Plan,
        inputs: &[PlanInput],
    ) -> Result<(), RunError> {
        let into = self.settings.into.clone();
        // What it conflicts with: a landed branch the plan saw clash with
        // it on these files, else the target.
        let with = plan
            .conflicts
            .iter()
            .filter_map(|c| {
                let other = if c.a == branch {
                    &c.b
                } else if c.b == branch {
                    &c.a
                } else {
                    return None;
                };
                (landed.contains(other) || self.outcome.landed.iter().any(|l| &l.branch == other))
                    .then(|| other.clone())
            })
            .next()
            .unwrap_or_else(|| into.clone());
        let mut r = Rejected {
            branch: branch.to_owned(),
            task: None,
            failure: Failure::Conflict {
                files: files.clone(),
            },
            with: Some(with.clone()),
            task_state: None,
            resolve_task: None,
            needs_human: None,
            isolated_in_round: round,
        };
        let task = Self::task_of(inputs, branch);
        if let Some((id, why)) = self.escalation(task.as_ref(), branch, &with, &files)? {
            let text = format!("Needs a person: {why}");
            braid_app::ops::escalate(self.store, &self.settings.actor, &id, &text)?;
            r.task = Some(id.to_string());
            r.task_state = Some(NEEDS_A_PERSON.into());
            r.needs_human = Some(why);
            self.step(Step::Rejected(&r));
            self.outcome.rejected.push(r);
            return Ok(());
        }
        let (priority, parent) = match &task {
            Some(id) => {
                let t = self.store.task(id)?;
                (Some(t.priority), t.parent)
            }
            None => (None, None),
        };
        let description = format!(
            "Branch `{branch}` no longer merges cleanly into `{into}`: it conflicts with `{with}` in:\n\n{}\n\n\
             Work on this task's branch: merge `{branch}` into it (`git merge {branch}`), then merge `{into}` \
             (`git merge {into}`), resolve the conflicts keeping the intent of both sides, and commit. \
             When this task's branch lands, `{branch}` lands with it.",
            files
                .iter()
                .map(|f| format!("- {f}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        // The id is chosen here so the task and the dependency that makes
        // it block are written in one transaction.
        let rid = TaskId::random(6);
        let mut cmds = vec![Command::Add(NewTask {
            id: Some(rid.clone()),
            title: format!("Resolve conflict between {branch} and {with}"),
            description,
            priority,
            parent,
            labels: vec!["merge-conflict".into()],
            ..NewTask::default()
        })];
        if let Some(id) = &task {
            cmds.push(Command::DepAdd {
                from: id.clone(),
                to: rid.clone(),
                kind: DepKind::Blocks,
            });
        }
        // The resolver starts from the conflicting branch's tip.
        let tip = self
            .tips
            .get(branch)
            .cloned()
            .unwrap_or_else(|| branch.to_owned());
        braid_git::create_branch(self.repo, &format!("braid/{rid}"), &tip)?;
        // What the resolution must contain, checked with git when its agent
        // says it is done: both sides, as they are now.
        let pins = resolves_pin(&rid);
        braid_git::pin(self.repo, &format!("{pins}/branch"), &tip)?;
        let target_now = braid_git::rev_parse(self.repo, &into)?;
        braid_git::pin(self.repo, &format!("{pins}/target"), &target_now)?;
        self.store.apply_all(&self.settings.actor, cmds)?;
        if let Some(id) = &task {
            r.task = Some(id.to_string());
            r.task_state = Some("blocked".into());
            // The task's worktree holds its branch; it is not needed now.
            if let Some(wt) = self
                .settings
                .work_dir
                .parent()
                .map(|d| braid_app::paths::workspace_in(d, true, id))
                && wt.exists()
                && let Err(e) = braid_git::drop_worktree(self.repo, &wt)
            {
                // Only clutter if it stays: `braid gc` removes it.
                tracing::debug!(worktree = %wt.display(), error = %e, "dropping a blocked task's worktree");
            }
        }
        r.resolve_task = Some(rid.to_string());
        self.step(Step::Rejected(&r));
        self.outcome.rejected.push(r);
        Ok(())
    }
}

static WORKTREES: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Tests one candidate commit: every gate answered by the cache, or run in
/// a temporary worktree that is removed afterwards.
fn run_candidate(
    repo: &Path,
    settings: &Settings,
    key: &str,
    commit: &str,
    branches: Vec<String>,
) -> Result<Tested, RunError> {
    let tree = braid_git::tree_of(repo, commit)?;
    let identity = tree_identity(&tree);
    let mut cache = settings.cache.as_ref().and_then(|c| Cache::open(c).ok());
    let all_cached = cache.as_ref().is_some_and(|c| {
        settings
            .gates
            .iter()
            .all(|g| c.lookup(&gate_key(g, &identity)).is_some())
    });
    if all_cached || settings.gates.is_empty() {
        return Ok(Tested {
            branches,
            passed: true,
            from_journal: false,
            cached: settings.gates.len(),
            gate_runs: 0,
            failure: None,
        });
    }
    let short = &key[..16];
    let wt = settings.work_dir.join("work").join(short);
    {
        // git's worktree bookkeeping is shared: one change at a time.
        let _g = WORKTREES.lock().unwrap_or_else(|p| p.into_inner());
        if wt.exists() {
            // Left by a run that was killed; adding it again below reports
            // anything that is really wrong.
            if let Err(e) = braid_git::drop_worktree(repo, &wt) {
                tracing::debug!(worktree = %wt.display(), error = %e, "dropping a leftover candidate worktree");
            }
            if let Err(e) = std::fs::remove_dir_all(&wt)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::debug!(worktree = %wt.display(), error = %e, "removing a leftover candidate worktree");
            }
        }
        braid_git::add_detached_worktree(repo, &wt, commit)?;
    }
    let log_dir = settings.log_dir.join(short);
    std::fs::create_dir_all(&log_dir).map_err(io_at(&log_dir))?;
    let outcomes = crate::gates::run_gates(
        &settings.gates,
        &wt,
        &log_dir,
        1,
        settings.kill_grace,
        cache.as_mut(),
        settings.procs.as_ref().map(|r| (r, MERGE_HOLDS)),
    );
    {
        let _g = WORKTREES.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = braid_git::drop_worktree(repo, &wt) {
            // The next candidate in this place drops it first.
            tracing::debug!(worktree = %wt.display(), error = %e, "dropping a candidate worktree");
        }
    }
    let failed = outcomes.iter().find(|o| !o.passed);
    Ok(Tested {
        branches,
        passed: failed.is_none(),
        from_journal: false,
        cached: outcomes.iter().filter(|o| o.cached).count(),
        gate_runs: outcomes.iter().filter(|o| !o.cached).count(),
        failure: failed.map(|o| Failure::Gate {
            gate: o.name.clone(),
            exit: o.exit.clone(),
            tail: o
                .log
                .as_deref()
                .map(|l| crate::supervise::tail(l, settings.failure_tail))
                .unwrap_or_default(),
        }),
    })
}
