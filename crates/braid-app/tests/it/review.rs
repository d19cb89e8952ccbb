//! Review on a real git repository and a real SQLite store: the diff
//! against where a branch started (paged, large and binary files
//! summarised), approvals bound to a commit, requests for changes whose
//! line comments keep their code, go outdated when the line changes, and
//! reach the next attempt's prompt.

use std::path::Path;
use std::process::Command as Process;

use braid_app::review::{self, Site};
use braid_app::wire::{ApproveIn, DiffIn, LineCommentIn, RejectIn, TaskDoc};
use braid_core::{EventKind, State, TaskId};
use braid_store::{Command, SqliteStore, Store};
use serde_json::json;

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Process::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

struct World {
    dir: tempfile::TempDir,
    store: SqliteStore,
    site: Site,
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        std::fs::create_dir(&repo).unwrap();
        git(&repo, &["init", "-q", "-b", "main"]);
        git(&repo, &["config", "user.email", "t@example.com"]);
        git(&repo, &["config", "user.name", "t"]);
        std::fs::write(repo.join("lib.rs"), "fn a() {}\nfn b() {}\nfn c() {}\n").unwrap();
        git(&repo, &["add", "."]);
        git(&repo, &["commit", "-q", "-m", "init"]);
        let store = SqliteStore::create(&dir.path().join("braid.db")).unwrap();
        World {
            site: Site {
                repo,
                target: "main".into(),
                require_approval: false,
                jobs: 2,
            },
            dir,
            store,
        }
    }

    fn repo(&self) -> &Path {
        &self.site.repo
    }

    fn task(&self, title: &str) -> TaskId {
        let doc = TaskDoc {
            title: title.into(),
            ..TaskDoc::default()
        };
        braid_app::ops::create(&self.store, "t", None, &doc)
            .unwrap()
            .id
    }

    /// Commits `files` on `braid/<id>` (made from main the first time).
    fn commit(&self, id: &TaskId, files: &[(&str, &[u8])]) -> String {
        let branch = format!("braid/{id}");
        let wt = self.dir.path().join(format!("wt-{id}"));
        if !wt.exists() {
            if git(self.repo(), &["branch", "--list", &branch]).is_empty() {
                git(self.repo(), &["branch", &branch, "main"]);
            }
            git(
                self.repo(),
                &["worktree", "add", "-q", wt.to_str().unwrap(), &branch],
            );
        }
        for (name, body) in files {
            let path = wt.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, body).unwrap();
        }
        git(&wt, &["add", "-A"]);
        git(&wt, &["commit", "-q", "-m", "work"]);
        git(&wt, &["rev-parse", "HEAD"])
    }

    /// Claims `id` and finishes it into review, as the engine does.
    fn to_review(&self, id: &TaskId) {
        let claimed = self
            .store
            .apply(
                "engine",
                Command::Claim {
                    id: Some(id.clone()),
                    assignee: "engine".into(),
                    lease_ms: 60_000,
                },
            )
            .unwrap();
        self.store
            .apply(
                "engine",
                Command::Finish {
                    id: id.clone(),
                    token: claimed.lease_token.unwrap(),
                    to: State::Review,
                    reason: Some("gates passed".into()),
                    refund_attempt: false,
                },
            )
            .unwrap();
    }

    fn state(&self, id: &TaskId) -> State {
        self.store.task(id).unwrap().state
    }
}

#[test]
fn the_diff_is_against_where_the_branch_started_and_pages_by_lines() {
    let w = World::new();
    let id = w.task("many files");
    // Main moves on after the branch starts: its commit is not the task's.
    let mut files: Vec<(String, Vec<u8>)> = (0..6)
        .map(|i| {
            let body: String = (0..100).map(|n| format!("f{i} line {n}\n")).collect();
            (format!("src/f{i}.txt"), body.into_bytes())
        })
        .collect();
    let big: String = (0..3000).map(|n| format!("big {n}\n")).collect();
    files.push(("big.txt".into(), big.into_bytes()));
    files.push(("logo.bin".into(), vec![0, 1, 2, 0, 255]));
    files.push((
        "lib.rs".into(),
        b"fn a() {}\nfn b2() {}\nfn c() {}\n".to_vec(),
    ));
    let refs: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    let head = w.commit(&id, &refs);
    std::fs::write(w.repo().join("main-only.txt"), "x\n").unwrap();
    git(w.repo(), &["add", "."]);
    git(w.repo(), &["commit", "-q", "-m", "main moves"]);

    let stat = review::diff(
        &w.store,
        &w.site,
        id.as_str(),
        &DiffIn {
            stat: true,
            ..DiffIn::default()
        },
    )
    .unwrap();
    assert_eq!(stat.head, head);
    assert!(stat.patch.is_none());
    let paths: Vec<&str> = stat.files.iter().map(|f| f.path.as_str()).collect();
    assert!(!paths.contains(&"main-only.txt"), "{paths:?}");
    assert_eq!(stat.files.len(), 9, "{paths:?}");
    let f = |p: &str| stat.files.iter().find(|f| f.path == p).unwrap();
    assert!(f("logo.bin").binary && !f("logo.bin").large);
    assert!(f("big.txt").large && f("big.txt").added == 3000);
    assert_eq!((f("lib.rs").added, f("lib.rs").removed), (1, 1));
    assert_eq!(f("lib.rs").status, "modified");
    assert_eq!(f("src/f0.txt").status, "added");
    assert_eq!(stat.added, 3000 + 600 + 1);

    // Pages of at most 250 changed lines: the large file is left out of
    // every page; each page starts where the last one said.
    let mut offset = 0;
    let mut seen = String::new();
    let mut pages = 0;
    loop {
        let page = review::diff(
            &w.store,
            &w.site,
            id.as_str(),
            &DiffIn {
                offset: Some(offset),
                lines: Some(250),
                ..DiffIn::default()
            },
        )
        .unwrap();
        assert_eq!(page.offset, offset);
        seen.push_str(page.patch.as_deref().unwrap());
        pages += 1;
        match page.next {
            Some(n) => {
                assert!(n > offset);
                offset = n;
            }
            None => break,
        }
    }
    assert!(pages >= 3, "{pages} pages");
    for i in 0..6 {
        assert_eq!(
            seen.matches(&format!("+++ b/src/f{i}.txt")).count(),
            1,
            "f{i} once"
        );
    }
    assert!(seen.contains("+fn b2() {}") && seen.contains("-fn b() {}"));
    assert!(seen.contains("Binary files"), "the binary is named");
    assert!(
        !seen.contains("+big 1\n"),
        "the large file waits to be asked"
    );
    let big = review::diff(
        &w.store,
        &w.site,
        id.as_str(),
        &DiffIn {
            file: Some("big.txt".into()),
            ..DiffIn::default()
        },
    )
    .unwrap();
    let patch = big.patch.unwrap();
    assert!(patch.contains("+big 2999"));
    assert!(!patch.contains("src/f0.txt"));

    // A file name is a name, not a pattern: `glob[1].txt` is not `glob1.txt`.
    let g = w.task("globs");
    w.commit(
        &g,
        &[("glob[1].txt", b"bracket\n"), ("glob1.txt", b"plain\n")],
    );
    let one = review::diff(
        &w.store,
        &w.site,
        g.as_str(),
        &DiffIn {
            file: Some("glob[1].txt".into()),
            ..DiffIn::default()
        },
    )
    .unwrap()
    .patch
    .unwrap();
    assert!(one.contains("+bracket") && !one.contains("+plain"), "{one}");

    let err = review::diff(
        &w.store,
        &w.site,
        id.as_str(),
        &DiffIn {
            file: Some("nope.txt".into()),
            ..DiffIn::default()
        },
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("\"nope.txt\" is not among the files")
    );
    let none = w.task("no branch");
    let err = review::diff(&w.store, &w.site, none.as_str(), &DiffIn::default()).unwrap_err();
    assert!(
        matches!(err, review::Error::NoBranch { .. }),
        "{err}: no branch yet"
    );
}

#[test]
fn a_stacked_branch_shows_only_its_own_work() {
    let w = World::new();
    let dep = w.task("dep");
    let dep_head = w.commit(&dep, &[("dep.txt", b"dep work\n")]);
    let id = w.task("stacked");
    // The engine made braid/<id> from the dependency's unlanded work and
    // recorded that base.
    git(w.repo(), &["branch", &format!("braid/{id}"), &dep_head]);
    w.store
        .apply(
            "engine",
            Command::Record {
                id: id.clone(),
                kind: EventKind::Dispatched,
                payload: json!({"agent": "a", "attempt": 1, "base": {"commit": dep_head, "target": "main", "stacked": [dep.to_string()]}}),
            },
        )
        .unwrap();
    w.commit(&id, &[("own.txt", b"own work\n")]);
    let d = review::diff(&w.store, &w.site, id.as_str(), &DiffIn::default()).unwrap();
    assert_eq!(d.base, dep_head);
    let paths: Vec<&str> = d.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, ["own.txt"]);
}

#[test]
fn a_request_for_changes_keeps_each_comments_code_and_reaches_the_next_prompt() {
    let w = World::new();
    let id = w.task("change lib");
    w.commit(
        &id,
        &[(
            "lib.rs",
            b"fn a() {}\nfn b() { slow() }\nfn c() {}\nfn d() {}\n",
        )],
    );
    w.to_review(&id);

    // Bad input names what is wrong and records nothing.
    let before = w.store.last_seq().unwrap();
    let bad = |comments: Vec<LineCommentIn>, message: &str| {
        review::reject(
            &w.store,
            &w.site,
            "kim",
            id.as_str(),
            &RejectIn {
                message: message.into(),
                comments,
            },
        )
        .unwrap_err()
        .to_string()
    };
    let c = |file: &str, line: u64, text: &str| LineCommentIn {
        file: file.into(),
        line,
        text: text.into(),
    };
    assert!(bad(vec![], "  ").contains("say what to change"));
    let e = bad(vec![c("lib.rs", 9, "x")], "m");
    assert!(e.contains("lib.rs has 4 line(s)"), "{e}");
    let e = bad(vec![c("gone.rs", 1, "x")], "m");
    assert!(e.contains("has no file \"gone.rs\""), "{e}");
    let e = bad(vec![c("lib.rs", 2, "a\u{1b}[2Jb")], "m");
    assert!(e.contains("comment 1"), "{e}");
    assert_eq!(w.store.last_seq().unwrap(), before, "nothing recorded");
    assert_eq!(w.state(&id), State::Review);

    let t = review::reject(
        &w.store,
        &w.site,
        "kim",
        id.as_str(),
        &RejectIn {
            message: "make b fast".into(),
            comments: vec![c("lib.rs", 2, "use the cache here")],
        },
    )
    .unwrap();
    assert_eq!(t.state, State::Open);

    let prompt = braid_app::prompt::build(&w.store, &id).unwrap();
    assert!(prompt.contains("kim asked for changes"), "{prompt}");
    assert!(prompt.contains("make b fast"), "{prompt}");
    assert!(
        prompt.contains("- lib.rs:2: use the cache here"),
        "{prompt}"
    );
    assert!(prompt.contains(">    2 | fn b() { slow() }"), "{prompt}");
    assert!(prompt.contains("     4 | fn d() {}"), "{prompt}");

    // The session that made the work is resumed with the same request.
    let mut events = w.store.task_events(&id, 100).unwrap();
    let at = events
        .iter()
        .position(|e| e.kind == EventKind::ChangesRequested)
        .unwrap();
    let mut finished = events[at].clone();
    finished.kind = EventKind::AgentFinished;
    events.insert(at, finished);
    let resumed = braid_app::prompt::resume_message(&events).unwrap();
    assert!(resumed.contains("sent it back"), "{resumed}");
    assert!(resumed.contains("use the cache here"), "{resumed}");

    // The next attempt changes line 2: the comment is outdated there, and
    // stays on the page.
    w.commit(
        &id,
        &[(
            "lib.rs",
            b"fn a() {}\nfn b() { cached() }\nfn c() {}\nfn d() {}\n",
        )],
    );
    w.to_review(&id);
    let v = review::show(&w.store, &w.site, id.as_str()).unwrap();
    assert_eq!(v.comments.len(), 1);
    let lc = &v.comments[0];
    assert_eq!(
        (lc.file.as_str(), lc.line, lc.code.as_str()),
        ("lib.rs", 2, "fn b() { slow() }")
    );
    assert!(lc.outdated, "its line changed");
    assert_eq!(v.decisions.len(), 1);
    assert_eq!(v.decisions[0].kind, "changes_requested");
    assert_eq!(v.decisions[0].comments, 1);
}

#[test]
fn an_approval_holds_for_the_commit_it_saw_and_the_plan_waits_for_one() {
    let mut w = World::new();
    w.site.require_approval = true;
    let id = w.task("approve me");
    w.commit(&id, &[("a.txt", b"a\n")]);
    let err =
        review::approve(&w.store, &w.site, "kim", id.as_str(), &ApproveIn::default()).unwrap_err();
    assert!(
        matches!(err, review::Error::NotInReview { .. }),
        "{err}: open work is not approved"
    );
    w.to_review(&id);
    let branch = format!("braid/{id}");
    let take = braid_app::plan::Take {
        only: &[],
        require_approval: true,
    };
    let plan = |w: &World| {
        braid_app::plan::task_inputs(&w.store, w.repo(), take, |_| Ok::<(), review::Error>(()))
            .unwrap()
    };
    let (inputs, notes) = plan(&w);
    assert!(inputs.is_empty());
    assert!(
        notes
            .iter()
            .any(|n| n.starts_with(&branch) && n.contains("waits for an approval")),
        "{notes:?}"
    );
    let v = review::show(&w.store, &w.site, id.as_str()).unwrap();
    assert!(!v.approved && !v.merge.planned);
    assert!(v.merge.waits[0].contains("approval"), "{:?}", v.merge);

    let d = review::approve(
        &w.store,
        &w.site,
        "kim",
        id.as_str(),
        &ApproveIn {
            message: Some("looks right".into()),
        },
    )
    .unwrap();
    assert_eq!(d.head, git(w.repo(), &["rev-parse", &branch]));
    let (inputs, _) = plan(&w);
    assert_eq!(inputs.len(), 1, "approved work is planned");
    let v = review::show(&w.store, &w.site, id.as_str()).unwrap();
    assert!(v.approved && v.merge.planned && v.merge.level == Some(0));
    assert_eq!(v.merge.batch, std::slice::from_ref(&branch));
    let listed = review::list(&w.store, &w.site, 10).unwrap();
    assert!(listed[0].approved && listed[0].files == 1);

    // The branch moves after the approval: it needs a new one.
    w.commit(&id, &[("a.txt", b"a changed\n")]);
    let (inputs, notes) = plan(&w);
    assert!(inputs.is_empty());
    assert!(
        notes
            .iter()
            .any(|n| n.contains("changed since it was approved")),
        "{notes:?}"
    );
}
