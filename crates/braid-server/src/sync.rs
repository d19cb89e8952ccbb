//! File sync: `.braid/tasks/<id>.md` mirrors each task (YAML front matter,
//! Markdown body = description). An edited or added file is applied through
//! the store's single write path, all of it in one transaction or nothing;
//! a store change rewrites the file atomically. The front matter carries
//! `rev` (a hash of the version it shows), so an edit is applied only on top of the
//! version it was made from, and a file equal to the store is left alone:
//! the same content never bounces back and forth.
//!
//! One thread owns the folder: it takes file changes (debounced OS
//! notifications) and store changes (from the hub) in order, so applying
//! and rewriting never race.

use std::collections::{HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use braid_app::ops;
use braid_app::wire::{DepIn, TaskDoc};
use braid_core::{Task, TaskId};
use braid_store::Store;
use serde::{Deserialize, Serialize};

use crate::{Error, metric};

/// The front matter of a task file. Unknown keys are errors, so a typo is
/// reported rather than ignored.
#[derive(Serialize, Deserialize, Debug, Default, PartialEq)]
#[serde(deny_unknown_fields)]
struct Front {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    title: String,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    priority: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    parent: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    labels: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    assignee: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    acceptance: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    gates: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    agent: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    deps: Vec<FileDep>,
    /// The version this file shows: a hash of its content as braid wrote
    /// it. Written by braid; leave it as it is when editing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rev: Option<String>,
}

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
#[serde(deny_unknown_fields)]
struct FileDep {
    id: String,
    #[serde(default = "blocks")]
    kind: String,
}

fn blocks() -> String {
    "blocks".into()
}

/// What happened to one file.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Outcome {
    pub file: String,
    /// applied | created | unchanged | rewritten | rejected
    pub action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What a whole pass did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub applied: usize,
    pub created: usize,
    pub written: usize,
    pub rejected: Vec<Outcome>,
}

/// The task folder and the store it mirrors.
pub struct Syncer {
    dir: PathBuf,
    store: Arc<dyn Store>,
    actor: String,
    /// Hashes of what this syncer wrote lately: a stale file that is one of
    /// them is our own earlier write, not someone's edit.
    recent: VecDeque<blake3::Hash>,
    recent_set: HashSet<blake3::Hash>,
    /// When set, a file that does not parse is not reported at once but
    /// handed back (`take_deferred`) to be looked at again after a quiet
    /// moment: an editor writing in place leaves it empty or half written
    /// for an instant, and that is not a mistake to report.
    defer_unreadable: bool,
    deferred: Vec<PathBuf>,
}

impl std::fmt::Debug for Syncer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Syncer").field("dir", &self.dir).finish()
    }
}

const RECENT: usize = 4096;

/// Renders a task as its file, `rev` included.
fn render(t: &Task) -> String {
    rendered(t).0
}

/// A task's file and the version (`rev`) it shows.
fn rendered(t: &Task) -> (String, String) {
    let mut front = Front {
        id: Some(t.id.to_string()),
        title: t.title.clone(),
        kind: Some(t.kind.as_str().to_owned()),
        priority: Some(t.priority),
        state: Some(t.state.as_str().to_owned()),
        parent: t.parent.as_ref().map(|p| p.to_string()),
        labels: t.labels.clone(),
        assignee: t.assignee.clone(),
        acceptance: (!t.acceptance.is_empty()).then(|| t.acceptance.clone()),
        gates: t.gates.clone(),
        agent: t.agent.clone(),
        deps: t
            .deps
            .iter()
            .map(|d| FileDep {
                id: d.id.to_string(),
                kind: d.kind.as_str().to_owned(),
            })
            .collect(),
        rev: None,
    };
    let body = t.description.trim_end();
    let text = |front: &Front| {
        let yaml = serde_saphyr::to_string(front).unwrap_or_default();
        if body.is_empty() {
            format!("---\n{yaml}---\n")
        } else {
            format!("---\n{yaml}---\n\n{body}\n")
        }
    };
    // The version is the content itself, so two changes within one
    // millisecond are still two versions.
    let rev = blake3::hash(text(&front).as_bytes()).to_hex()[..16].to_owned();
    front.rev = Some(rev.clone());
    (text(&front), rev)
}

/// The version a file shows: the value of its front matter's `rev` line,
/// read as the YAML scalar it is, as [`parse`] reads it. A rev that looks
/// like a number (all digits, or digits around one `e`: about one in 770)
/// is written quoted, `rev: "8134502093764135"`. Only this line is read, so
/// that a file whose rest does not parse (an edit on its way, a mistake to
/// be reported) still shows its version; one cut off inside the line (an
/// unclosed quote) shows none.
fn file_rev(text: &str) -> Option<String> {
    text.lines()
        .skip(1)
        .take_while(|l| *l != "---")
        .find_map(|l| l.strip_prefix("rev:"))
        .and_then(|v| serde_saphyr::from_str::<String>(v.trim()).ok())
}

/// Splits a file into front matter and body, and parses the front matter.
fn parse(text: &str) -> Result<(Front, String), Error> {
    let bad = |m: &str| Error::Invalid(m.to_owned());
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let rest = text
        .strip_prefix("---\n")
        .or_else(|| text.strip_prefix("---\r\n"))
        .ok_or_else(|| {
            bad("a task file starts with a `---` line, then YAML front matter, then `---`")
        })?;
    let (yaml, body) = if let Some(b) = rest.strip_prefix("---\n") {
        ("", b)
    } else {
        let end = rest
            .find("\n---\n")
            .map(|i| (i + 1, i + 5))
            .or_else(|| rest.find("\n---\r\n").map(|i| (i + 1, i + 6)))
            .or_else(|| {
                rest.strip_suffix("\n---")
                    .map(|y| (y.len() + 1, rest.len()))
            })
            .ok_or_else(|| bad("the front matter has no closing `---` line"))?;
        (&rest[..end.0], &rest[end.1..])
    };
    let front: Front = serde_saphyr::from_str(yaml).map_err(|e| {
        // Lines in the error count from the front matter; the file has one
        // `---` line before it.
        Error::Invalid(format!("front matter: {e}"))
    })?;
    if front.title.trim().is_empty() {
        return Err(bad("front matter: `title` is empty"));
    }
    // Editors on Windows (and git's autocrlf) end lines with CRLF; a
    // description's line ends are `\n` alone (a carriage return is a
    // control character the store refuses).
    let body = body.replace("\r\n", "\n");
    let body = body
        .strip_prefix('\n')
        .unwrap_or(&body)
        .trim_end()
        .to_owned();
    Ok((front, body))
}

/// What a file says the task is: its front matter and body as a document
/// for [`ops::put`] / [`ops::create`].
fn doc_of(front: &Front, body: String) -> TaskDoc {
    TaskDoc {
        title: front.title.clone(),
        description: body,
        kind: front.kind.clone(),
        priority: front.priority.map(i64::from),
        state: front.state.clone(),
        parent: front.parent.clone(),
        labels: front.labels.clone(),
        assignee: front.assignee.clone(),
        acceptance: front.acceptance.clone(),
        gates: front.gates.clone(),
        agent: front.agent.clone(),
        deps: front
            .deps
            .iter()
            .map(|d| DepIn {
                id: d.id.clone(),
                kind: Some(d.kind.clone()),
            })
            .collect(),
    }
}

fn opt_id(s: &Option<String>, field: &str) -> Result<Option<TaskId>, Error> {
    s.as_deref()
        .map(|p| TaskId::parse(p).map_err(|e| Error::Invalid(format!("{field}: {e}"))))
        .transpose()
}

/// Why a file was not applied: the task it names (if any), a message
/// naming the file and the rule broken, and whether the file did not
/// parse (it may be half written; looked at again after a quiet moment).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
struct Refused {
    task: Option<String>,
    message: String,
    unreadable: bool,
}

impl Syncer {
    pub fn new(dir: PathBuf, store: Arc<dyn Store>, actor: String) -> std::io::Result<Syncer> {
        std::fs::create_dir_all(&dir)?;
        Ok(Syncer {
            dir,
            store,
            actor,
            recent: VecDeque::new(),
            recent_set: HashSet::new(),
            defer_unreadable: false,
            deferred: Vec::new(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn remember(&mut self, content: &str) {
        let h = blake3::hash(content.as_bytes());
        if self.recent_set.insert(h) {
            self.recent.push_back(h);
            if self.recent.len() > RECENT
                && let Some(old) = self.recent.pop_front()
            {
                self.recent_set.remove(&old);
            }
        }
    }

    /// Whether a task's file is missing or shows another version than `t`'s.
    /// A file without a readable `rev` may be half written: not behind.
    fn file_is_behind(&self, t: &Task) -> bool {
        let Ok(text) = std::fs::read_to_string(self.dir.join(format!("{}.md", t.id))) else {
            return true;
        };
        file_rev(&text).is_some_and(|r| r != rendered(t).1)
    }

    /// Writes a task's file if it differs from the store. Returns whether
    /// it wrote.
    pub fn write_task(&mut self, t: &Task) -> std::io::Result<bool> {
        let name = format!("{}.md", t.id);
        let content = render(t);
        let path = self.dir.join(&name);
        if std::fs::read_to_string(&path).is_ok_and(|old| old == content) {
            return Ok(false);
        }
        self.remember(&content);
        braid_store::fsx::write_atomic(&path, content.as_bytes())?;
        Ok(true)
    }

    /// Rewrites the files of these tasks from the store where the file is
    /// missing or shows an older version. A file at the store's version that
    /// differs is an edit on its way in, and one without a readable `rev`
    /// may be half written by an editor; both have a notification pending,
    /// which applies or reports them, so they are left alone here.
    pub fn tasks_changed(&mut self, ids: &[TaskId]) -> usize {
        let mut written = 0;
        for id in ids {
            match self.store.task(id) {
                Ok(t) if !self.file_is_behind(&t) => {}
                Ok(t) => match self.write_task(&t) {
                    Ok(true) => written += 1,
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(task = %id, error = %e, "braid sync: writing a task's file")
                    }
                },
                Err(e) => {
                    tracing::warn!(task = %id, error = %braid_core::error::chain(&e), "braid sync: reading a task")
                }
            }
        }
        written
    }

    /// Applies one file (added, edited or deleted) and says what happened.
    /// A rejection is also appended to the event log.
    pub fn file_changed(&mut self, path: &Path) -> Option<Outcome> {
        let name = path.file_name()?.to_str()?.to_owned();
        if name.starts_with('.') || !name.ends_with(".md") {
            return None;
        }
        let outcome = match self.apply_file(path, &name) {
            Ok(o) => o,
            Err(r) if r.unreadable && self.defer_unreadable => {
                self.deferred.push(path.to_path_buf());
                Outcome {
                    file: name,
                    action: "deferred",
                    task: r.task,
                    error: Some(r.message),
                }
            }
            Err(r) => {
                metric::sync_rejected();
                if let Err(e) = ops::reject_file(
                    self.store.as_ref(),
                    &self.actor,
                    &name,
                    r.task.as_deref(),
                    &r.message,
                ) {
                    tracing::warn!(file = %name, error = %braid_core::error::chain(&e), "braid sync: recording a rejection");
                }
                Outcome {
                    file: name,
                    action: "rejected",
                    task: r.task,
                    error: Some(r.message),
                }
            }
        };
        if matches!(outcome.action, "applied" | "created") {
            metric::sync_applied();
        }
        Some(outcome)
    }

    /// Files that did not parse and wait to be looked at again.
    pub fn take_deferred(&mut self) -> Vec<PathBuf> {
        std::mem::take(&mut self.deferred)
    }

    /// Looks at a deferred file again, reporting it if it still does not
    /// parse.
    pub fn confirm(&mut self, path: &Path) -> Option<Outcome> {
        let defer = std::mem::replace(&mut self.defer_unreadable, false);
        let o = self.file_changed(path);
        self.defer_unreadable = defer;
        o
    }

    fn apply_file(&mut self, path: &Path, name: &str) -> Result<Outcome, Refused> {
        let out = |action, task: Option<&TaskId>| Outcome {
            file: name.to_owned(),
            action,
            task: task.map(|t| t.to_string()),
            error: None,
        };
        // The id a file's name claims, if it is `<id>.md`.
        let named = TaskId::parse(name.trim_end_matches(".md")).ok();
        let reject = |message: String| Refused {
            task: named.as_ref().map(|t| t.to_string()),
            message,
            unreadable: false,
        };
        if path.parent() != Some(self.dir.as_path()) {
            return Err(reject(format!(
                "{name} is outside {}; task files live directly in it",
                self.dir.display()
            )));
        }
        let meta = match std::fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Deleted. Tasks are never deleted (cancel one instead), so
                // a known task's file is written again.
                return match &named {
                    Some(id) => match self.store.task(id) {
                        Ok(t) => {
                            self.write_task(&t).map_err(|e| reject(e.to_string()))?;
                            Ok(out("rewritten", Some(id)))
                        }
                        Err(_) => Ok(out("unchanged", None)),
                    },
                    None => Ok(out("unchanged", None)),
                };
            }
            Err(e) => return Err(reject(format!("reading {name}: {e}"))),
        };
        if !meta.file_type().is_file() {
            return Err(reject(format!(
                "{name} is not a regular file (a symlink or folder could point outside the tasks folder); refused"
            )));
        }
        if meta.len() > 1 << 20 {
            return Err(reject(format!("{name} is over 1 MiB; refused")));
        }
        let text =
            std::fs::read_to_string(path).map_err(|e| reject(format!("reading {name}: {e}")))?;
        let (front, body) = parse(&text).map_err(|e| Refused {
            task: named.as_ref().map(|t| t.to_string()),
            message: format!("{name}: {e}"),
            unreadable: true,
        })?;
        let front_id = opt_id(&front.id, "id").map_err(|e| reject(format!("{name}: {e}")))?;
        if let (Some(n), Some(f)) = (&named, &front_id)
            && n != f
        {
            return Err(reject(format!(
                "{name}: its front matter says id {f}; a task's file is named <id>.md"
            )));
        }
        let id = front_id.or(named.clone());
        let existing = match &id {
            Some(id) => match self.store.task(id) {
                Ok(t) => Some(t),
                Err(e) if e.kind() == braid_core::ErrorKind::NotFound => None,
                Err(e) => return Err(reject(e.to_string())),
            },
            None => None,
        };
        match existing {
            Some(t) => self.apply_edit(name, &text, front, body, t),
            None => self.create(path, name, front, body, id.clone()),
        }
        .map_err(|e| Refused {
            task: id.as_ref().map(|t| t.to_string()),
            message: e.to_string(),
            unreadable: false,
        })
    }

    fn apply_edit(
        &mut self,
        name: &str,
        text: &str,
        front: Front,
        body: String,
        t: Task,
    ) -> Result<Outcome, Error> {
        let out = |action| Outcome {
            file: name.to_owned(),
            action,
            task: Some(t.id.to_string()),
            error: None,
        };
        let (canonical, current) = rendered(&t);
        if text == canonical {
            return Ok(out("unchanged"));
        }
        if front.rev.as_ref().is_some_and(|r| *r != current) {
            // Made from an older version. Our own earlier write: just bring
            // it up to date. Someone's edit of an old copy: the store wins
            // and the edit is reported, not silently merged.
            let ours = self.recent_set.contains(&blake3::hash(text.as_bytes()));
            self.write_task(&t)
                .map_err(Error::io(format!("writing {name}")))?;
            if ours {
                return Ok(out("rewritten"));
            }
            return Err(Error::Invalid(format!(
                "{name} was edited from an older version (rev {}) but the task changed since (rev {}); the file now shows the current task — make the edit again",
                front.rev.unwrap_or_default(),
                current
            )));
        }
        let changed = ops::put(self.store.as_ref(), &self.actor, &t, &doc_of(&front, body))
            .map_err(|e| Error::Invalid(format!("{name}: {e}; nothing was applied")))?;
        if changed.is_none() {
            // Same fields, other formatting: write the canonical form.
            self.write_task(&t)
                .map_err(Error::io(format!("writing {name}")))?;
            return Ok(out("unchanged"));
        }
        let now = self.store.task(&t.id)?;
        self.write_task(&now)
            .map_err(Error::io(format!("writing {name}")))?;
        Ok(out("applied"))
    }

    fn create(
        &mut self,
        path: &Path,
        name: &str,
        front: Front,
        body: String,
        id: Option<TaskId>,
    ) -> Result<Outcome, Error> {
        let created = ops::create(self.store.as_ref(), &self.actor, id, &doc_of(&front, body))
            .map_err(|e| Error::Invalid(format!("{name}: {e}; nothing was applied")))?
            .id;
        let t = self.store.task(&created)?;
        self.write_task(&t)
            .map_err(Error::io(format!("writing {name}")))?;
        if path.file_name().and_then(|n| n.to_str()) != Some(&format!("{created}.md"))
            && let Err(e) = std::fs::remove_file(path)
        {
            // The task exists with its own file; the old one stays as a
            // copy the next pass reads as an edit of it.
            tracing::warn!(file = %name, error = %e, "braid sync: removing a new task's first file");
        }
        Ok(Outcome {
            file: name.to_owned(),
            action: "created",
            task: Some(created.to_string()),
            error: None,
        })
    }

    /// One whole pass: every file in the folder is applied, then every task
    /// whose file is missing or differs is written. (`braid sync`, and the
    /// server at start.)
    pub fn full(&mut self) -> std::io::Result<(Report, Vec<Outcome>)> {
        let mut report = Report::default();
        let mut outcomes = Vec::new();
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        files.sort();
        for f in files {
            if let Some(o) = self.file_changed(&f) {
                match o.action {
                    "applied" => report.applied += 1,
                    "created" => report.created += 1,
                    "rejected" => report.rejected.push(o.clone()),
                    _ => {}
                }
                outcomes.push(o);
            }
        }
        let mut ids = Vec::new();
        self.store
            .export(false, &mut |item| {
                if let braid_store::ExportItem::Task(t) = item {
                    ids.push(t.id.clone());
                }
                Ok(())
            })
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        for chunk in ids.chunks(1000) {
            report.written += self.tasks_changed(chunk);
        }
        Ok((report, outcomes))
    }
}

/// Whether a file notification says a file's content may have changed.
/// Reads (ours included) raise access events and must not count, or every
/// read would cause another; a writer closing the file is the surest sign
/// that an edit is complete.
fn is_change(kind: &notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode};
    matches!(
        kind,
        notify::EventKind::Create(_)
            | notify::EventKind::Modify(_)
            | notify::EventKind::Remove(_)
            | notify::EventKind::Access(AccessKind::Close(AccessMode::Write))
    )
}

/// Watches `dir` and sends the paths that changed, gathered for `window`
/// after the first change of a burst (so a change is applied at most
/// `window` after it happened, and an editor's several writes once).
///
/// Written on `notify` directly rather than with notify-debouncer-full: that
/// debouncer stitches renames to later events by file id, and braid writes
/// files by renaming a temporary over them; an edit made in place right
/// after such a rename was folded away and never reported (seen in
/// `bench/server.sh`, about one edit in five).
///
/// When the OS says notifications were lost (the inotify queue overflowed),
/// a full pass looks at every file instead.
fn debounce_files(
    dir: &Path,
    window: Duration,
    out: std::sync::mpsc::SyncSender<SyncMsg>,
) -> Result<notify::RecommendedWatcher, Error> {
    use notify::Watcher;
    // `None`: notifications were lost.
    let (raw_tx, raw_rx) = std::sync::mpsc::channel::<Option<PathBuf>>();
    let watch_err = |source| Error::Watch {
        dir: dir.to_owned(),
        source,
    };
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        // The debounce thread is gone (server stopping): nothing to tell.
        match ev {
            Ok(ev) if ev.need_rescan() => {
                let _ = raw_tx.send(None);
            }
            Ok(ev) if is_change(&ev.kind) => {
                for p in ev.paths {
                    let _ = raw_tx.send(Some(p));
                }
            }
            Ok(_) => {}
            Err(_) => {
                let _ = raw_tx.send(None);
            }
        }
    })
    .map_err(watch_err)?;
    watcher
        .watch(dir, notify::RecursiveMode::NonRecursive)
        .map_err(watch_err)?;
    std::thread::Builder::new()
        .name("braid-sync-watch".into())
        .spawn(move || {
            let mut pending = std::collections::BTreeSet::new();
            let mut due: Option<std::time::Instant> = None;
            loop {
                let next = match due {
                    None => raw_rx.recv().map_err(|_| ()),
                    Some(at) => {
                        match raw_rx
                            .recv_timeout(at.saturating_duration_since(std::time::Instant::now()))
                        {
                            Ok(p) => Ok(p),
                            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                                let paths: Vec<PathBuf> =
                                    std::mem::take(&mut pending).into_iter().collect();
                                due = None;
                                if out.send(SyncMsg::Files(paths)).is_err() {
                                    return;
                                }
                                continue;
                            }
                            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Err(()),
                        }
                    }
                };
                // The watcher is gone (server stopping): stop too.
                let Ok(p) = next else { return };
                match p {
                    Some(p) => {
                        pending.insert(p);
                        due.get_or_insert_with(|| std::time::Instant::now() + window);
                    }
                    None => {
                        if out.send(SyncMsg::Full).is_err() {
                            return;
                        }
                    }
                }
            }
        })
        .map_err(Error::io("starting the task files' watch thread"))?;
    Ok(watcher)
}

/// A message to the sync thread.
#[derive(Debug)]
pub enum SyncMsg {
    Files(Vec<PathBuf>),
    Tasks(Vec<TaskId>),
    Full,
}

/// Runs file sync for a server: a full pass, then files and store changes
/// as they come, until the hub closes. Returns the watcher's guard (keep
/// it alive) and the thread's handle.
pub fn spawn(
    mut syncer: Syncer,
    hub: Arc<crate::hub::Hub>,
    debounce: Duration,
) -> Result<(impl Drop, std::thread::JoinHandle<()>), Error> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<SyncMsg>(1024);
    let files_tx = tx.clone();
    let dir = syncer.dir().to_path_buf();
    let debouncer = debounce_files(&dir, debounce, files_tx)?;
    // Store changes: follow the hub, and on falling behind, a full pass.
    let tasks_tx = tx;
    let follower = hub.clone();
    tokio::spawn(async move {
        let mut after = None;
        loop {
            let Ok((_, mut sub)) = follower
                .subscribe(
                    after,
                    crate::hub::Rooms::parse("project").expect("valid room"),
                )
                .await
            else {
                return;
            };
            loop {
                match sub.next().await {
                    crate::hub::Next::Event(f) => {
                        let ids: Vec<TaskId> = f
                            .rooms
                            .iter()
                            .filter_map(|r| r.strip_prefix("task:"))
                            .filter_map(|id| TaskId::parse(id).ok())
                            .collect();
                        if !ids.is_empty() && tasks_tx.send(SyncMsg::Tasks(ids)).is_err() {
                            return;
                        }
                    }
                    crate::hub::Next::Resync { last_seq } => {
                        after = Some(last_seq);
                        if tasks_tx.send(SyncMsg::Full).is_err() {
                            return;
                        }
                        break;
                    }
                    crate::hub::Next::Closing => return,
                }
            }
        }
    });
    let handle = std::thread::Builder::new()
        .name("braid-sync".into())
        .spawn(move || {
            syncer.defer_unreadable = true;
            if let Err(e) = syncer.full() {
                tracing::warn!(error = %e, "braid sync: a full pass");
            }
            // Unparseable files to look at again, and when.
            let mut confirm: std::collections::BTreeMap<PathBuf, std::time::Instant> =
                Default::default();
            loop {
                for p in syncer.take_deferred() {
                    confirm
                        .entry(p)
                        .or_insert_with(|| std::time::Instant::now() + debounce * 2);
                }
                let msg = match confirm.values().min() {
                    None => rx.recv().map_err(|_| false),
                    Some(due) => rx
                        .recv_timeout(due.saturating_duration_since(std::time::Instant::now()))
                        .map_err(|e| matches!(e, std::sync::mpsc::RecvTimeoutError::Timeout)),
                };
                let msg = match msg {
                    Ok(m) => m,
                    Err(true) => {
                        let now = std::time::Instant::now();
                        let due: Vec<PathBuf> = confirm
                            .iter()
                            .filter(|(_, at)| **at <= now)
                            .map(|(p, _)| p.clone())
                            .collect();
                        for p in due {
                            confirm.remove(&p);
                            syncer.confirm(&p);
                        }
                        continue;
                    }
                    Err(false) => return,
                };
                match msg {
                    SyncMsg::Files(paths) => {
                        for p in paths {
                            syncer.file_changed(&p);
                        }
                    }
                    SyncMsg::Tasks(ids) => {
                        syncer.tasks_changed(&ids);
                    }
                    SyncMsg::Full => {
                        if let Err(e) = syncer.full() {
                            tracing::warn!(error = %e, "braid sync: a full pass");
                        }
                    }
                }
            }
        })
        .map_err(Error::io("starting the file sync thread"))?;
    Ok((debouncer, handle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_reads_front_matter_and_body() {
        let (f, body) = parse(
            "---\ntitle: Fix it\npriority: 1\ndeps:\n  - id: br-abc\n---\n\nSome *text*.\n\n",
        )
        .unwrap();
        assert_eq!(f.title, "Fix it");
        assert_eq!(f.priority, Some(1));
        assert_eq!(f.deps[0].kind, "blocks");
        assert_eq!(body, "Some *text*.");
        let err = |text: &str| parse(text).unwrap_err().to_string();
        assert!(err("title: x\n").contains("starts with"));
        assert!(err("---\ntitle: x\n").contains("closing"));
        assert!(err("---\ntitle: x\ncolour: red\n---\n").contains("colour"));
        assert!(parse("---\ntitle: [unclosed\n---\n").is_err());
    }

    #[test]
    fn a_files_rev_is_read_as_yaml() {
        let file = |rev: &str| format!("---\ntitle: x\nrev: {rev}\n---\n\nBody.\n");
        // As written (quoted when it looks like a number), or unquoted by
        // hand: the same version, as `parse` reads it.
        for rev in [
            "2e4a0f1c9b7d3e55",
            "\"8134502093764135\"",
            "'8134502093764135'",
            "8134502093764135",
        ] {
            let want = rev.trim_matches(['"', '\'']);
            assert_eq!(file_rev(&file(rev)).as_deref(), Some(want), "{rev}");
        }
        // Cut off inside the line, or no rev line yet: no version.
        assert_eq!(file_rev("---\ntitle: x\nrev: \"81345"), None);
        assert_eq!(file_rev("---\ntitle: x\n"), None);
        assert_eq!(file_rev(""), None);
        // A rev in the body is not the file's.
        assert_eq!(file_rev("---\ntitle: x\n---\nrev: abc\n"), None);
    }

    /// A version whose rev YAML writes quoted (it looks like a number) is
    /// the store's version all the same: an edit made from it, not yet
    /// applied, is not written over when the task's change comes back
    /// from the hub, and is then applied.
    #[test]
    fn an_edit_of_a_version_with_a_quoted_rev_is_not_written_over() {
        use braid_core::{NewTask, TaskPatch};
        use braid_store::{Command, SqliteStore};
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::create(&dir.path().join("braid.db")).unwrap());
        let id = store
            .apply("t", Command::Add(NewTask::titled("t")))
            .unwrap()
            .task
            .id;
        // A title that gives the task such a rev (about one in 770 do).
        let mut t = store.task(&id).unwrap();
        let title = (0..100_000)
            .map(|n| format!("quoted {n}"))
            .find(|title| {
                t.title = title.clone();
                rendered(&t).0.contains("\nrev: \"")
            })
            .unwrap();
        store
            .apply(
                "t",
                Command::Update {
                    id: id.clone(),
                    patch: TaskPatch {
                        title: Some(title.clone()),
                        ..Default::default()
                    },
                },
            )
            .unwrap();
        let mut s = Syncer::new(dir.path().join("tasks"), store.clone(), "sync".into()).unwrap();
        s.full().unwrap();
        let path = s.dir().join(format!("{id}.md"));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\nrev: \""), "{text}");
        let edited = text.replace(&format!("title: {title}"), "title: edited");
        std::fs::write(&path, &edited).unwrap();
        assert_eq!(s.tasks_changed(std::slice::from_ref(&id)), 0);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), edited);
        assert_eq!(s.file_changed(&path).unwrap().action, "applied");
        assert_eq!(store.task(&id).unwrap().title, "edited");
    }
}
