//! braid-git: git through the git CLI — worktrees for tasks, branch names,
//! and the content identity of a worktree (for cache keys). Knows refs and
//! paths, not tasks.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("git {args}: {message}")]
    Git { args: String, message: String },
    #[error("running git: {0}")]
    Spawn(#[from] std::io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Whether git failed only because another git held a lock (an index, a
/// ref, a config): worth trying again in a moment.
fn lock_busy(stderr: &str) -> bool {
    stderr.contains(".lock': File exists")
        || stderr.contains("cannot lock ref")
        || stderr.contains("Unable to create") && stderr.contains(".lock")
        || stderr.contains("could not lock config file")
}

/// Waits before each retry of a git command that met another's lock.
const LOCK_RETRIES: [std::time::Duration; 4] = [
    std::time::Duration::from_millis(50),
    std::time::Duration::from_millis(100),
    std::time::Duration::from_millis(200),
    std::time::Duration::from_millis(400),
];

fn git(dir: &Path, args: &[&str]) -> Result<Output> {
    let mut waits = LOCK_RETRIES.iter();
    loop {
        match git_once(dir, args) {
            Err(Error::Git { message, .. }) if lock_busy(&message) && waits.len() > 0 => {
                // Said in the error if the last try fails too.
                let wait = waits.next().copied().unwrap_or_default();
                std::thread::sleep(wait);
            }
            other => return other,
        }
    }
}

fn git_once(dir: &Path, args: &[&str]) -> Result<Output> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        // An automatic gc runs before git answers, not as a daemon left
        // behind (braid reaps the daemons attempts leave; git's are not an
        // attempt's).
        .args([
            "-c",
            "gc.autoDetach=false",
            "-c",
            "maintenance.autoDetach=false",
        ])
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()?;
    if !out.status.success() {
        return Err(Error::Git {
            args: args.join(" "),
            message: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(out)
}

fn text(out: Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The top of the git work tree containing `dir`, or `None` outside git.
pub fn repo_root(dir: &Path) -> Option<PathBuf> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["rev-parse", "--show-toplevel"])
        .output()
        .ok()?;
    out.status.success().then(|| PathBuf::from(text(out)))
}

/// True when `repo` has at least one commit (a worktree needs a HEAD).
pub fn has_head(repo: &Path) -> bool {
    git(repo, &["rev-parse", "--verify", "-q", "HEAD"]).is_ok()
}

/// Held while worktrees are added, removed or pruned. `git worktree prune`
/// forgets a worktree whose folder it does not find, and one being added
/// has its metadata before its folder: a prune beside an add breaks the
/// add ("preparing the workspace" failed under load). So these take turns:
/// threads of one process on a mutex, processes on an OS lock of
/// `.git/braid-worktrees.lock` (it dies with its holder).
struct WorktreeLock {
    _thread: std::sync::MutexGuard<'static, ()>,
    _file: Option<std::fs::File>,
}

static WORKTREE_MUTEX: std::sync::Mutex<()> = std::sync::Mutex::new(());
static FETCH_MUTEX: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn worktree_lock(repo: &Path) -> WorktreeLock {
    repo_lock(repo, &WORKTREE_MUTEX, "braid-worktrees.lock")
}

/// Fetches into one repository take turns too: two at once race on the
/// remote-tracking refs ("cannot lock ref … expected …").
fn fetch_lock(repo: &Path) -> WorktreeLock {
    repo_lock(repo, &FETCH_MUTEX, "braid-fetch.lock")
}

fn repo_lock(repo: &Path, mutex: &'static std::sync::Mutex<()>, file: &str) -> WorktreeLock {
    let thread = mutex.lock().unwrap_or_else(|p| p.into_inner());
    // A repository whose `.git` is a folder (not a linked worktree's file).
    let git_dir = repo.join(".git");
    let file = git_dir
        .is_dir()
        .then(|| {
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(git_dir.join(file))
                .ok()
        })
        .flatten()
        .filter(|f| f.lock().is_ok());
    WorktreeLock {
        _thread: thread,
        _file: file,
    }
}

/// How a push ended, when git ran it to the end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pushed {
    /// The remote took it.
    Done,
    /// The remote refused it (not a fast-forward, or the lease's expected
    /// value was stale: someone else moved the ref). Never forced.
    Rejected(String),
}

/// Whether a failed git command failed for the network (worth trying
/// again) rather than for what it asked.
pub fn is_network(e: &Error) -> bool {
    match e {
        Error::Spawn(_) => false,
        Error::Git { message, .. } => {
            let m = message.to_ascii_lowercase();
            [
                "could not read from remote",
                "unable to access",
                "connection",
                "timed out",
                "could not resolve",
                "early eof",
                "the remote end hung up",
                "does not appear to be a git repository",
            ]
            .iter()
            .any(|n| m.contains(n))
        }
    }
}

/// Whether `repo` has a remote named `remote`.
pub fn remote_exists(repo: &Path, remote: &str) -> bool {
    git(repo, &["remote", "get-url", "--", remote]).is_ok()
}

/// Fetches `refspecs` from `remote` (git's own credentials and config).
pub fn fetch(repo: &Path, remote: &str, refspecs: &[&str]) -> Result<()> {
    let _turn = fetch_lock(repo);
    let mut args = vec!["fetch", "--quiet", "--no-tags", remote];
    args.extend_from_slice(refspecs);
    git(repo, &args)?;
    Ok(())
}

/// Pushes `src` to `dst` (a full ref) on `remote`. With `expect`, only if
/// the remote's `dst` is that commit (`--force-with-lease=dst:expect`: a
/// compare-and-swap on the remote; `""` expects it absent); without, only
/// as a fast-forward. Refused pushes answer `Rejected`; others fail.
pub fn push(
    repo: &Path,
    remote: &str,
    src: &str,
    dst: &str,
    expect: Option<&str>,
) -> Result<Pushed> {
    let lease;
    let mut args = vec!["push", "--quiet", "--porcelain"];
    if let Some(old) = expect {
        lease = format!("--force-with-lease={dst}:{old}");
        args.push(&lease);
    }
    let spec = format!("{src}:{dst}");
    args.extend_from_slice(&[remote, &spec]);
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(&args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    // --porcelain: one line per ref, "!" flags a refused one.
    if let Some(line) = stdout.lines().find(|l| l.starts_with('!')) {
        return Ok(Pushed::Rejected(
            line.trim_start_matches('!').trim().to_owned(),
        ));
    }
    if !out.status.success() {
        return Err(Error::Git {
            args: args.join(" "),
            message: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(Pushed::Done)
}

/// Deletes `branch` on `remote` (nothing when it is not there).
pub fn delete_remote_branch(repo: &Path, remote: &str, branch: &str) -> Result<()> {
    match git(repo, &["push", "--quiet", remote, "--delete", branch]) {
        Err(Error::Git { message, .. }) if message.contains("remote ref does not exist") => Ok(()),
        r => r.map(|_| ()),
    }
}

/// The branch checked out in `repo` (`None` on a detached HEAD or outside
/// git).
pub fn current_branch(repo: &Path) -> Option<String> {
    git(repo, &["symbolic-ref", "--short", "-q", "HEAD"])
        .ok()
        .map(text)
        .filter(|b| !b.is_empty())
}

/// Creates the worktree at `path` on `branch` (starting at `start` when the
/// branch is new), or reuses it when it is already there.
pub fn ensure_worktree(repo: &Path, path: &Path, branch: &str, start: &str) -> Result<()> {
    if path.join(".git").exists() {
        return Ok(());
    }
    let p = path.to_string_lossy();
    let exists = git(
        repo,
        &[
            "rev-parse",
            "--verify",
            "-q",
            &format!("refs/heads/{branch}"),
        ],
    )
    .is_ok();
    let _turn = worktree_lock(repo);
    if exists {
        git(repo, &["worktree", "add", &p, branch])?;
    } else {
        git(repo, &["worktree", "add", "-b", branch, &p, start])?;
    }
    Ok(())
}

/// Removes a worktree (its branch stays, for review and merging).
pub fn remove_worktree(repo: &Path, path: &Path) -> Result<()> {
    let _turn = worktree_lock(repo);
    if path.exists() {
        git(
            repo,
            &["worktree", "remove", "--force", &path.to_string_lossy()],
        )?;
    }
    git(repo, &["worktree", "prune"])?;
    Ok(())
}

/// Removes a worktree without pruning others' metadata (safe beside other
/// worktree operations of the same process).
pub fn drop_worktree(repo: &Path, path: &Path) -> Result<()> {
    let _turn = worktree_lock(repo);
    git(
        repo,
        &["worktree", "remove", "--force", &path.to_string_lossy()],
    )?;
    Ok(())
}

/// Forgets worktrees whose directories are gone.
pub fn prune_worktrees(repo: &Path) -> Result<()> {
    let _turn = worktree_lock(repo);
    git(repo, &["worktree", "prune"])?;
    Ok(())
}

/// Worktrees of the repository: (path, branch if any).
pub fn worktrees(repo: &Path) -> Result<Vec<(PathBuf, Option<String>)>> {
    let out = text(git(repo, &["worktree", "list", "--porcelain"])?);
    let mut list = Vec::new();
    let mut cur: Option<(PathBuf, Option<String>)> = None;
    for line in out.lines() {
        if let Some(p) = line.strip_prefix("worktree ") {
            if let Some(c) = cur.take() {
                list.push(c);
            }
            cur = Some((PathBuf::from(p), None));
        } else if let Some(b) = line.strip_prefix("branch refs/heads/")
            && let Some(c) = cur.as_mut()
        {
            c.1 = Some(b.to_owned());
        }
    }
    list.extend(cur);
    Ok(list)
}

/// What a worktree's content is: the tree of HEAD plus, when there are
/// uncommitted changes, the bytes that describe them (the diff against HEAD
/// and every untracked file's path and content). Equal identities mean equal
/// content; callers hash it.
pub fn content_identity(worktree: &Path) -> Result<(String, Vec<u8>)> {
    let tree = text(git(worktree, &["rev-parse", "HEAD^{tree}"])?);
    let status = git(
        worktree,
        &["status", "--porcelain", "-z", "--untracked-files=all"],
    )?;
    if status.stdout.is_empty() {
        return Ok((tree, Vec::new()));
    }
    let mut dirty = git(worktree, &["diff", "HEAD", "--binary"])?.stdout;
    let untracked = git(
        worktree,
        &["ls-files", "--others", "--exclude-standard", "-z"],
    )?
    .stdout;
    for name in untracked.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        dirty.extend_from_slice(b"\0untracked\0");
        dirty.extend_from_slice(name);
        dirty.push(0);
        let path = worktree.join(String::from_utf8_lossy(name).as_ref());
        if let Ok(bytes) = std::fs::read(&path) {
            dirty.extend_from_slice(&bytes);
        }
    }
    Ok((tree, dirty))
}

/// Whether `rev` names a commit in `repo`.
pub fn rev_exists(repo: &Path, rev: &str) -> bool {
    git(
        repo,
        &["rev-parse", "--verify", "-q", &format!("{rev}^{{commit}}")],
    )
    .is_ok()
}

/// The commit `rev` points at.
pub fn rev_parse(repo: &Path, rev: &str) -> Result<String> {
    Ok(text(git(
        repo,
        &["rev-parse", "--verify", &format!("{rev}^{{commit}}")],
    )?))
}

/// The files `branch` changed since its merge-base with `target`.
pub fn changed_files(repo: &Path, target: &str, branch: &str) -> Result<Vec<String>> {
    let out = git(
        repo,
        &[
            "diff",
            "--name-only",
            "--no-renames",
            &format!("{target}...{branch}"),
        ],
    )?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect())
}

/// The files that conflict when `a` and `b` are merged, checked exactly with
/// `git merge-tree --write-tree` (no worktree or index is touched). Empty
/// when they merge cleanly.
pub fn merge_conflicts(repo: &Path, a: &str, b: &str) -> Result<Vec<String>> {
    Ok(merge_tree(repo, a, b)?.err().unwrap_or_default())
}

/// `git merge-tree --write-tree a b`: the merged tree, or the conflicting
/// files.
fn merge_tree(repo: &Path, a: &str, b: &str) -> Result<Result<String, Vec<String>>> {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args([
            "merge-tree",
            "--write-tree",
            "--name-only",
            "--no-messages",
            a,
            b,
        ])
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    match out.status.code() {
        // Clean: the first line is the merged tree.
        Some(0) => Ok(Ok(stdout
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned())),
        // Conflicts: the tree, then one conflicted path per line.
        Some(1) => Ok(Err(stdout
            .lines()
            .skip(1)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect())),
        _ => Err(Error::Git {
            args: format!("merge-tree --write-tree {a} {b}"),
            message: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        }),
    }
}

/// Whether `ancestor` is reachable from `rev` (a branch already merged).
pub fn is_ancestor(repo: &Path, ancestor: &str, rev: &str) -> Result<bool> {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["merge-base", "--is-ancestor", ancestor, rev])
        .output()?;
    match out.status.code() {
        Some(0) => Ok(true),
        Some(1) => Ok(false),
        _ => Err(Error::Git {
            args: format!("merge-base --is-ancestor {ancestor} {rev}"),
            message: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        }),
    }
}

/// The tree of a commit.
pub fn tree_of(repo: &Path, rev: &str) -> Result<String> {
    Ok(text(git(repo, &["rev-parse", &format!("{rev}^{{tree}}")])?))
}

/// Merging one branch onto a commit, done on objects only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Merged {
    /// The merge commit (parents: `onto`, then the branch).
    Commit(String),
    /// The files that conflict.
    Conflict(Vec<String>),
}

/// Merges `branch` onto the commit `onto` without a worktree or index:
/// `git merge-tree --write-tree`, then `git commit-tree`. The commit's
/// author, committer and dates are fixed (`braid`, `date` as git's
/// `@SECONDS +0000`), so the same merge gives the same commit every time.
pub fn merge_onto(
    repo: &Path,
    onto: &str,
    branch: &str,
    message: &str,
    date: &str,
) -> Result<Merged> {
    let tree = match merge_tree(repo, onto, branch)? {
        Ok(tree) => tree,
        Err(files) => return Ok(Merged::Conflict(files)),
    };
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args([
            "commit-tree",
            &tree,
            "-p",
            onto,
            "-p",
            branch,
            "-m",
            message,
        ])
        .env("GIT_AUTHOR_NAME", "braid")
        .env("GIT_AUTHOR_EMAIL", "braid@localhost")
        .env("GIT_COMMITTER_NAME", "braid")
        .env("GIT_COMMITTER_EMAIL", "braid@localhost")
        .env("GIT_AUTHOR_DATE", date)
        .env("GIT_COMMITTER_DATE", date)
        .output()?;
    if !out.status.success() {
        return Err(Error::Git {
            args: format!("commit-tree {tree}"),
            message: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(Merged::Commit(text(out)))
}

/// The committer time of `rev` in git's raw form (`@SECONDS +0000`).
pub fn commit_date(repo: &Path, rev: &str) -> Result<String> {
    let secs = text(git(repo, &["show", "-s", "--format=%ct", rev])?);
    Ok(format!("@{secs} +0000"))
}

/// Moves `refs/heads/<branch>` from `old` to `new` only if it still points
/// at `old` (compare-and-swap). `Ok(false)`: it had moved.
pub fn update_branch(repo: &Path, branch: &str, new: &str, old: &str) -> Result<bool> {
    let r = format!("refs/heads/{branch}");
    match git(repo, &["update-ref", "-m", "braid merge", &r, new, old]) {
        Ok(_) => Ok(true),
        Err(e) => {
            if rev_parse(repo, &r).is_ok_and(|now| now != old) {
                Ok(false)
            } else {
                Err(e)
            }
        }
    }
}

/// Fast-forwards the branch checked out in `worktree` from `old` to `new`,
/// as `git merge --ff-only` does: refused, with nothing changed, when HEAD
/// is no longer `old` (`Ok(false)`) or when local changes would be
/// overwritten (an error naming them).
pub fn fast_forward_checkout(worktree: &Path, new: &str, old: &str) -> Result<bool> {
    if rev_parse(worktree, "HEAD")? != old {
        return Ok(false);
    }
    git(worktree, &["merge", "--ff-only", "-q", new])?;
    Ok(true)
}

/// Adds a detached worktree at `path` on `commit` (for testing a candidate).
pub fn add_detached_worktree(repo: &Path, path: &Path, commit: &str) -> Result<()> {
    let _turn = worktree_lock(repo);
    git(
        repo,
        &[
            "worktree",
            "add",
            "--detach",
            "-f",
            &path.to_string_lossy(),
            commit,
        ],
    )?;
    Ok(())
}

/// Points `refs/braid/<name>` at `commit`: a commit braid must remember
/// (what a resolve branch has to contain), kept from garbage collection.
pub fn pin(repo: &Path, name: &str, commit: &str) -> Result<()> {
    git(repo, &["update-ref", &format!("refs/braid/{name}"), commit])?;
    Ok(())
}

/// The commits pinned under `refs/braid/<prefix>/`, as (the rest of the
/// name, commit), in name order.
pub fn pins(repo: &Path, prefix: &str) -> Result<Vec<(String, String)>> {
    let base = format!("refs/braid/{prefix}/");
    let out = git(
        repo,
        &["for-each-ref", "--format=%(objectname) %(refname)", &base],
    )?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (commit, name) = l.split_once(' ')?;
            Some((name.strip_prefix(&base)?.to_owned(), commit.to_owned()))
        })
        .collect())
}

/// The refs under `prefix` (ending in `/`), as (name after the prefix,
/// commit).
pub fn refs_under(repo: &Path, prefix: &str) -> Result<Vec<(String, String)>> {
    let out = git(
        repo,
        &["for-each-ref", "--format=%(objectname) %(refname)", prefix],
    )?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (commit, name) = l.split_once(' ')?;
            Some((name.strip_prefix(prefix)?.to_owned(), commit.to_owned()))
        })
        .collect())
}

/// Creates `branch` at `at` unless it exists.
pub fn create_branch(repo: &Path, branch: &str, at: &str) -> Result<()> {
    if !rev_exists(repo, &format!("refs/heads/{branch}")) {
        git(repo, &["branch", branch, at])?;
    }
    Ok(())
}

/// Commits every change in `worktree` (tracked and untracked, as `git add
/// -A` sees them). `Ok(false)` when there was nothing to commit. Without a
/// configured identity, commits as `braid`.
pub fn commit_all(worktree: &Path, message: &str) -> Result<bool> {
    let status = git(worktree, &["status", "--porcelain"])?;
    if status.stdout.is_empty() {
        return Ok(false);
    }
    git(worktree, &["add", "-A"])?;
    let named = git(worktree, &["config", "user.email"]).is_ok();
    let mut args = vec![];
    if !named {
        args.extend(["-c", "user.name=braid", "-c", "user.email=braid@localhost"]);
    }
    args.extend(["commit", "-q", "--no-verify", "-m", message]);
    git(worktree, &args)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worktrees_added_beside_prunes_and_removals_all_succeed() {
        // Threads add worktrees while others prune and remove, as the
        // engine and a merge pass do in one `braid run --merge`.
        let d = repo();
        let repo = d.path().to_owned();
        let wt = tempfile::tempdir().unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let pruner = {
            let (repo, stop) = (repo.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    prune_worktrees(&repo).unwrap();
                    n += 1;
                }
                n
            })
        };
        let adders: Vec<_> = (0..4)
            .map(|t| {
                let (repo, base) = (repo.clone(), wt.path().to_owned());
                std::thread::spawn(move || {
                    for i in 0..6 {
                        let path = base.join(format!("w{t}-{i}"));
                        ensure_worktree(&repo, &path, &format!("braid/t{t}-{i}"), "HEAD")
                            .unwrap_or_else(|e| panic!("adding {}: {e}", path.display()));
                        assert!(path.join(".git").exists());
                        if i % 2 == 0 {
                            remove_worktree(&repo, &path).unwrap();
                        }
                    }
                })
            })
            .collect();
        for a in adders {
            a.join().unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(pruner.join().unwrap() > 0);
        let listed = worktrees(&repo).unwrap();
        assert_eq!(listed.len(), 1 + 4 * 3, "{listed:?}");
    }

    fn repo() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let run = |args: &[&str]| {
            assert!(
                Command::new("git")
                    .arg("-C")
                    .arg(d.path())
                    .args(args)
                    .status()
                    .unwrap()
                    .success()
            )
        };
        run(&["init", "-q", "-b", "main"]);
        run(&["config", "user.email", "t@example.com"]);
        run(&["config", "user.name", "t"]);
        std::fs::write(d.path().join("a.txt"), "a").unwrap();
        run(&["add", "."]);
        run(&["commit", "-q", "-m", "init"]);
        d
    }

    #[test]
    fn worktree_lifecycle_and_content_identity() {
        let r = repo();
        let root = repo_root(r.path()).unwrap();
        assert!(has_head(&root));
        let wt = r.path().join(".braid/worktrees/br-1");
        ensure_worktree(&root, &wt, "braid/br-1", "HEAD").unwrap();
        assert!(wt.join("a.txt").exists());
        ensure_worktree(&root, &wt, "braid/br-1", "HEAD").unwrap(); // reused
        let list = worktrees(&root).unwrap();
        assert!(list.iter().any(|(_, b)| b.as_deref() == Some("braid/br-1")));
        let (tree, dirty) = content_identity(&wt).unwrap();
        assert_eq!(tree.len(), 40);
        assert!(dirty.is_empty());
        std::fs::write(wt.join("new.txt"), "x").unwrap();
        let (_, d1) = content_identity(&wt).unwrap();
        std::fs::write(wt.join("new.txt"), "y").unwrap();
        let (_, d2) = content_identity(&wt).unwrap();
        assert!(
            !d1.is_empty() && d1 != d2,
            "untracked content changes the identity"
        );
        remove_worktree(&root, &wt).unwrap();
        assert!(!wt.exists());
        // The branch survives; re-creating the worktree checks it out again.
        ensure_worktree(&root, &wt, "braid/br-1", "HEAD").unwrap();
        assert!(wt.join("a.txt").exists());
        assert!(repo_root(tempfile::tempdir().unwrap().path()).is_none());
    }
}

/// One file `git diff` changed between two commits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileChange {
    pub path: String,
    /// Where a renamed or copied file came from.
    pub old_path: Option<String>,
    /// git's status letter: A added, M modified, D deleted, R renamed, C
    /// copied, T type changed.
    pub status: char,
    /// Lines added and removed; both `None` for a binary file.
    pub added: Option<u64>,
    pub removed: Option<u64>,
}

/// The merge base of `a` and `b`, if they share history.
pub fn merge_base(repo: &Path, a: &str, b: &str) -> Result<Option<String>> {
    match git(repo, &["merge-base", a, b]) {
        Ok(out) => Ok(Some(text(out))),
        // Exit 1 with no output: no common ancestor.
        Err(Error::Git { message, .. }) if message.is_empty() => Ok(None),
        Err(e) => Err(e),
    }
}

/// The files changed from `base` to `head` with their line counts, in
/// git's order (renames found).
pub fn diff_files(repo: &Path, base: &str, head: &str) -> Result<Vec<FileChange>> {
    let range = [base, head];
    let status = git(
        repo,
        &[
            &["diff", "--no-color", "--name-status", "-z", "-M"][..],
            &range,
        ]
        .concat(),
    )?;
    let counts = git(
        repo,
        &[&["diff", "--no-color", "--numstat", "-z", "-M"][..], &range].concat(),
    )?;
    let mut files = Vec::new();
    let mut fields = status.stdout.split(|&b| b == 0).filter(|f| !f.is_empty());
    let lossy = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    while let Some(code) = fields.next() {
        let letter = code.first().copied().unwrap_or(b'M') as char;
        let first = fields.next().map(lossy).unwrap_or_default();
        let (old_path, path) = if matches!(letter, 'R' | 'C') {
            (Some(first), fields.next().map(lossy).unwrap_or_default())
        } else {
            (None, first)
        };
        files.push(FileChange {
            path,
            old_path,
            status: letter,
            added: None,
            removed: None,
        });
    }
    // numstat -z: "added\tremoved\tpath\0", or for a rename
    // "added\tremoved\t\0old\0new\0"; "-\t-" for a binary file.
    let mut at = 0;
    let mut rest = counts.stdout.split(|&b| b == 0);
    while let Some(rec) = rest.next() {
        if rec.is_empty() {
            continue;
        }
        let mut parts = rec.splitn(3, |&b| b == b'\t');
        let (a, r, p) = (parts.next(), parts.next(), parts.next().unwrap_or(b""));
        let path = if p.is_empty() {
            rest.next();
            rest.next().map(lossy).unwrap_or_default()
        } else {
            lossy(p)
        };
        let num = |v: Option<&[u8]>| {
            v.and_then(|v| std::str::from_utf8(v).ok())
                .and_then(|v| v.parse().ok())
        };
        // The two listings come in the same order; match by path to be sure.
        let i = if files.get(at).is_some_and(|f| f.path == path) {
            at
        } else if let Some(i) = files.iter().position(|f| f.path == path) {
            i
        } else {
            continue;
        };
        files[i].added = num(a);
        files[i].removed = num(r);
        at = i + 1;
    }
    Ok(files)
}

/// The unified diff from `base` to `head`, limited to `paths` when any are
/// given (renames found, 3 lines of context, binary files named only).
pub fn diff_patch(repo: &Path, base: &str, head: &str, paths: &[&str]) -> Result<String> {
    // Paths are names, never patterns (a file may be called `*.rs`).
    let mut args = vec![
        "--literal-pathspecs",
        "diff",
        "--no-color",
        "--no-ext-diff",
        "-M",
        base,
        head,
    ];
    if !paths.is_empty() {
        args.push("--");
        args.extend(paths.iter().copied());
    }
    let out = git(repo, &args)?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The text of `path` at `rev`, or `None` when the file is not there.
pub fn file_at(repo: &Path, rev: &str, path: &str) -> Result<Option<Vec<u8>>> {
    match git(repo, &["cat-file", "blob", &format!("{rev}:{path}")]) {
        Ok(out) => Ok(Some(out.stdout)),
        Err(Error::Git { .. }) if rev_exists(repo, rev) => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod lock_tests {
    use super::*;

    #[test]
    fn a_command_that_meets_another_gits_lock_is_tried_again() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path();
        git(repo, &["init", "-q", "-b", "main"]).unwrap();
        git(repo, &["config", "user.email", "t@example.com"]).unwrap();
        git(repo, &["config", "user.name", "t"]).unwrap();
        std::fs::write(repo.join("a"), "a\n").unwrap();
        // Another git holds the index for a moment.
        let lock = repo.join(".git/index.lock");
        std::fs::write(&lock, "").unwrap();
        let release = {
            let lock = lock.clone();
            std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(120));
                std::fs::remove_file(lock).unwrap();
            })
        };
        git(repo, &["add", "a"]).expect("tried again after the lock went");
        release.join().unwrap();
        // A lock that stays is reported with git's own words.
        std::fs::write(&lock, "").unwrap();
        std::fs::write(repo.join("b"), "b\n").unwrap();
        let err = git(repo, &["add", "b"]).unwrap_err().to_string();
        assert!(err.contains("index.lock"), "{err}");
    }
}
