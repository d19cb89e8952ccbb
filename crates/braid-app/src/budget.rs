//! Budgets (`[budget] task_usd, run_usd, day_usd`): what each allows, what
//! the cost ledger says was spent against it, and which is spent. The
//! engine asks before every attempt (no attempt starts once a budget it
//! falls under is spent); the board and `braid cost` show the same figures.

use braid_core::TaskId;
use braid_store::{Result, Store, UsageBy, UsageQuery};

use crate::wire::BudgetView;

/// A day, in ms: budgets count UTC days, as `braid cost --by day` does.
const DAY_MS: i64 = 86_400_000;

/// The limits, in USD; `None`: no limit.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Budget {
    /// What one task's attempts may cost in all.
    pub task_usd: Option<f64>,
    /// What one run (`braid run`, `serve --run`) may spend.
    pub run_usd: Option<f64>,
    /// What every run together may spend in a UTC day.
    pub day_usd: Option<f64>,
}

/// A budget that is spent: which, its limit, and what was spent.
#[derive(Clone, Debug, PartialEq)]
pub struct Spent {
    /// `task_usd`, `run_usd` or `day_usd`.
    pub budget: &'static str,
    pub limit_usd: f64,
    pub spent_usd: f64,
}

impl std::fmt::Display for Spent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scope = match self.budget {
            "task_usd" => "by this task",
            "run_usd" => "by this run",
            _ => "today (UTC)",
        };
        write!(
            f,
            "budget {} is spent: ${:.4} {scope} of ${:.2} (raise [budget] {} in .braid/config.toml to go on)",
            self.budget, self.spent_usd, self.limit_usd, self.budget
        )
    }
}

impl Budget {
    pub fn is_empty(&self) -> bool {
        self.task_usd.is_none() && self.run_usd.is_none() && self.day_usd.is_none()
    }

    /// The first budget that is spent, for an attempt at `task` by a run
    /// that has spent `run_spent` (what its own agents reported), at `now`
    /// (epoch ms). Reads the ledger once per budget set: an indexed sum
    /// over the day's rows, or the task's.
    pub fn spent(
        &self,
        store: &dyn Store,
        task: Option<&TaskId>,
        run_spent: f64,
        now: i64,
    ) -> Result<Option<Spent>> {
        let check = |budget, limit: Option<f64>, spent: &dyn Fn() -> Result<f64>| {
            let Some(limit) = limit else {
                return Ok(None);
            };
            let s = spent()?;
            Ok((s >= limit).then_some(Spent {
                budget,
                limit_usd: limit,
                spent_usd: s,
            }))
        };
        if let Some(s) = check("day_usd", self.day_usd, &|| {
            sum(store, Some(day_start(now)), None)
        })? {
            return Ok(Some(s));
        }
        if let Some(s) = check("run_usd", self.run_usd, &|| Ok(run_spent))? {
            return Ok(Some(s));
        }
        if let Some(t) = task {
            return check("task_usd", self.task_usd, &|| sum(store, None, Some(t)));
        }
        Ok(None)
    }

    /// Each budget set, with what was spent against it (the task budget:
    /// the costliest task's spend, and which task; the run budget: what
    /// the run that spent most among those running has spent).
    pub fn views(
        &self,
        store: &dyn Store,
        run_spent: Option<f64>,
        now: i64,
    ) -> Result<Vec<BudgetView>> {
        let mut out = Vec::new();
        if let Some(limit) = self.task_usd {
            let top = store.usage_totals(&UsageQuery {
                by: UsageBy::Task,
                since: None,
                task: None,
                limit: 1,
            })?;
            out.push(BudgetView {
                budget: "task_usd".into(),
                limit_usd: limit,
                spent_usd: top.first().map_or(0.0, |t| t.cost_usd),
                task: top.first().map(|t| t.key.clone()),
            });
        }
        if let Some(limit) = self.run_usd {
            out.push(BudgetView {
                budget: "run_usd".into(),
                limit_usd: limit,
                spent_usd: run_spent.unwrap_or(0.0),
                task: None,
            });
        }
        if let Some(limit) = self.day_usd {
            out.push(BudgetView {
                budget: "day_usd".into(),
                limit_usd: limit,
                spent_usd: sum(store, Some(day_start(now)), None)?,
                task: None,
            });
        }
        Ok(out)
    }
}

/// When the UTC day holding `now` began (epoch ms).
pub fn day_start(now: i64) -> i64 {
    now - now.rem_euclid(DAY_MS)
}

/// The ledger's cost since a time, or for one task.
fn sum(store: &dyn Store, since: Option<i64>, task: Option<&TaskId>) -> Result<f64> {
    Ok(store
        .usage_totals(&UsageQuery {
            by: UsageBy::Day,
            since,
            task: task.cloned(),
            limit: usize::MAX >> 1,
        })?
        .iter()
        .map(|t| t.cost_usd)
        .sum())
}

/// What a running run has spent, as it keeps it in `.braid/runs/PID.json`
/// for the board (written after each attempt while `run_usd` is set,
/// removed when the run ends).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct RunSpend {
    pub pid: u32,
    pub spent_usd: f64,
}

/// The most any live run has spent, from the files in `dir` (a file whose
/// process is gone is a run that died: not counted).
pub fn live_run_spend(dir: &std::path::Path) -> Option<f64> {
    let mut most: Option<f64> = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        let Ok(r) = serde_json::from_str::<RunSpend>(&text) else {
            continue;
        };
        if std::path::Path::new(&format!("/proc/{}", r.pid)).exists() {
            most = Some(most.map_or(r.spent_usd, |m| m.max(r.spent_usd)));
        }
    }
    most
}
