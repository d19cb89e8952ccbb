//! The operations' policies, once for every front-end.

use braid_app::ops::{self, Transition};
use braid_app::wire::{ClaimIn, DepIn, NewTaskIn, PatchIn, TaskDoc};
use braid_core::{State, TaskId};
use braid_store::{Error, SqliteStore, Store};

fn store(dir: &tempfile::TempDir) -> SqliteStore {
    SqliteStore::create(&dir.path().join("braid.db")).unwrap()
}

fn add_as(s: &dyn Store, id: &str) -> TaskId {
    let doc = TaskDoc {
        title: format!("task {id}"),
        ..TaskDoc::default()
    };
    ops::create(s, "t", Some(TaskId::parse(id).unwrap()), &doc)
        .unwrap()
        .id
}

#[test]
fn an_id_resolves_from_a_unique_prefix_in_any_case() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    add_as(&s, "br-8nxt");
    add_as(&s, "br-8nab");
    add_as(&s, "br-8n");
    add_as(&s, "bd-Upper1");
    let r = |typed: &str| ops::resolve(&s, typed).map(|id| id.to_string());
    assert_eq!(r("br-8nxt").unwrap(), "br-8nxt", "the exact id");
    assert_eq!(r("8nxt").unwrap(), "br-8nxt", "without br-");
    assert_eq!(r("BR-8NXT").unwrap(), "br-8nxt", "any case");
    assert_eq!(r("8nX").unwrap(), "br-8nxt", "a unique prefix");
    assert_eq!(
        r("br-8n").unwrap(),
        "br-8n",
        "an exact id wins over the longer ids it prefixes"
    );
    assert_eq!(r("bd-Up").unwrap(), "bd-Upper1", "imported ids as stored");
    let Err(Error::Ambiguous {
        prefix, candidates, ..
    }) = r("8na").and(ops::resolve(&s, "br-8").map(|i| i.to_string()))
    else {
        panic!("br-8 names three tasks");
    };
    assert_eq!(prefix, "br-8");
    let names: Vec<&str> = candidates.iter().map(TaskId::as_str).collect();
    assert_eq!(names, ["br-8n", "br-8nab", "br-8nxt"]);
    let e = ops::resolve(&s, "br-8").unwrap_err().to_string();
    assert!(
        e.contains("br-8nab") && e.contains("br-8nxt") && e.contains("give more"),
        "{e}"
    );
    let e = ops::resolve(&s, "zzzz").unwrap_err();
    assert_eq!(e.kind(), braid_core::ErrorKind::NotFound, "{e}");
    let e = ops::resolve(&s, "br-x/../y").unwrap_err();
    assert_eq!(e.kind(), braid_core::ErrorKind::Invalid, "{e}");
}

#[test]
fn every_operation_resolves_the_ids_it_is_given() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    let a = add_as(&s, "br-aaaa");
    add_as(&s, "br-bbbb");
    let t = ops::add(
        &s,
        "t",
        NewTaskIn {
            title: "child".into(),
            parent: Some("AAAA".into()),
            deps: vec![DepIn {
                id: "bbb".into(),
                kind: None,
            }],
            ..NewTaskIn::default()
        },
    )
    .unwrap();
    assert_eq!(t.parent.as_deref(), Some("br-aaaa"));
    assert_eq!(t.deps[0].id, "br-bbbb");
    let u = ops::update(
        &s,
        "t",
        &t.id[3..],
        PatchIn {
            priority: Some(0),
            ..PatchIn::default()
        },
    )
    .unwrap();
    assert_eq!(u.fields, ["priority"]);
    let moved = ops::transition(&s, "t", &["bbbb".into()], Transition::Done, None).unwrap();
    assert_eq!(
        (moved[0].from, moved[0].task.state),
        (State::Open, State::Done)
    );
    assert_eq!(
        ops::show(&s, "aaa", 5).unwrap().children,
        vec![t.id.clone()]
    );
    assert!(s.task(&a).unwrap().state == State::Open);
}

#[test]
fn a_claim_holds_between_ten_seconds_and_a_week_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    let a = add_as(&s, "br-aaaa");
    for bad in [0, 9, 7 * 86_400 + 1] {
        let e = ops::claim(
            &s,
            "t",
            Some(a.as_str()),
            ClaimIn {
                assignee: None,
                lease_seconds: Some(bad),
            },
        )
        .unwrap_err();
        assert_eq!(e.kind(), braid_core::ErrorKind::Invalid, "{bad}: {e}");
        assert!(e.to_string().contains("10 s to 7 days"), "{e}");
    }
    assert_eq!(s.task(&a).unwrap().state, State::Open, "nothing claimed");
    let t = ops::claim(&s, "ann", Some("aaaa"), ClaimIn::default()).unwrap();
    let lease = t.lease.unwrap();
    assert!(
        lease.token.is_some(),
        "the claim's answer carries its token"
    );
    assert_eq!(t.assignee.as_deref(), Some("ann"), "the actor by default");
    let l = s.task(&a).unwrap().lease.unwrap();
    assert_eq!(
        l.expires_at - s.task(&a).unwrap().updated_at,
        30 * 60 * 1000,
        "30 minutes by default"
    );
}

#[test]
fn a_failure_needs_a_reason_and_a_batch_moves_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    add_as(&s, "br-aaaa");
    add_as(&s, "br-bbbb");
    for reason in [None, Some("  ".to_owned())] {
        let e = ops::transition(&s, "t", &["aaaa".into()], Transition::Fail, reason).unwrap_err();
        assert!(e.to_string().contains("reason"), "{e}");
    }
    // The second id does not exist: neither moves.
    let e = ops::transition(
        &s,
        "t",
        &["aaaa".into(), "nope".into()],
        Transition::Cancel,
        None,
    )
    .unwrap_err();
    assert_eq!(e.kind(), braid_core::ErrorKind::NotFound);
    assert_eq!(ops::get(&s, "aaaa").unwrap().state, State::Open);
}

#[test]
fn a_document_is_applied_as_one_change_and_only_what_differs() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    let dep = add_as(&s, "br-dddd");
    let doc = TaskDoc {
        title: "from a file".into(),
        description: "body\n".into(),
        state: Some("deferred".into()),
        labels: vec!["x".into()],
        deps: vec![DepIn {
            id: "dddd".into(),
            kind: None,
        }],
        ..TaskDoc::default()
    };
    let t = ops::create(&s, "sync", None, &doc).unwrap();
    assert_eq!(t.state, State::Deferred, "created in its state");
    assert_eq!(t.description, "body");
    assert_eq!(t.deps[0].id, dep);
    let created: Vec<_> = s.task_events(&t.id, 10).unwrap();
    assert_eq!(created.len(), 2, "added and moved: {created:?}");
    assert_eq!(
        ops::put(&s, "sync", &t, &doc).unwrap(),
        None,
        "nothing differs"
    );
    let mut edited = doc.clone();
    edited.title = "retitled".into();
    edited.deps.clear();
    edited.state = Some("open".into());
    let after = ops::put(&s, "sync", &t, &edited).unwrap().unwrap();
    assert_eq!(after.state, State::Open);
    let now = s.task(&t.id).unwrap();
    assert_eq!(now.title, "retitled");
    assert!(now.deps.is_empty());
    // A bad document changes nothing: the title would change, the
    // dependency does not exist.
    let mut bad = edited.clone();
    bad.title = "never".into();
    bad.deps = vec![DepIn {
        id: "br-none".into(),
        kind: None,
    }];
    assert!(ops::put(&s, "sync", &now, &bad).is_err());
    assert_eq!(s.task(&t.id).unwrap().title, "retitled");
}

#[test]
fn a_task_handed_to_a_person_is_labelled_once_and_told_each_new_thing_once() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    let id = add_as(&s, "br-hand");
    let first = ops::escalate(&s, "merge", &id, "Needs a person: a conflicts with b").unwrap();
    assert_eq!(
        first.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(),
        ["updated", "attention", "commented"],
        "the label, the attention and the comment, together"
    );
    assert_eq!(first[1].payload["reason"], "escalation");
    let t = s.task(&id).unwrap();
    assert_eq!(t.labels, vec![ops::NEEDS_HUMAN.to_owned()]);
    // The same finding again adds nothing; a new one adds only a comment.
    assert!(
        ops::escalate(&s, "merge", &id, "Needs a person: a conflicts with b")
            .unwrap()
            .is_empty()
    );
    let again = ops::escalate(&s, "merge", &id, "Needs a person: a conflicts with c").unwrap();
    assert_eq!(again.len(), 2, "an attention and a comment");
    let comments = s.comments(&id, 10).unwrap();
    assert_eq!(comments.len(), 2);
    assert_eq!(s.task(&id).unwrap().labels.len(), 1);
    // An empty reason is refused and changes nothing.
    assert!(ops::escalate(&s, "merge", &id, "  ").is_err());
    let other = add_as(&s, "br-other");
    assert!(ops::escalate(&s, "merge", &other, "").is_err());
    assert!(s.task(&other).unwrap().labels.is_empty());
}

#[test]
fn escalate_shows_a_control_character_in_a_name_from_git_instead_of_failing() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    let id = add_as(&s, "br-hand");
    // A file name can hold any byte but NUL; a person must still be told.
    let why = "Needs a person: conflict in evil\u{1b}]0;x\u{7}.rs";
    assert_eq!(ops::escalate(&s, "merge", &id, why).unwrap().len(), 3);
    let comments = s.comments(&id, 10).unwrap();
    assert_eq!(
        comments[0].payload["text"],
        "Needs a person: conflict in evil\\e]0;x\\a.rs"
    );
    // The same finding is still said once.
    assert!(ops::escalate(&s, "merge", &id, why).unwrap().is_empty());
    // A person's own comment is refused instead, naming the field.
    let e = ops::comment(
        &s,
        "ann",
        "br-hand",
        braid_app::wire::CommentIn {
            text: why.into(),
            author: None,
        },
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("invalid text: control character U+001B"),
        "{e}"
    );
}

/// An attempt in the ledger: what the engine records when an agent ends.
fn spend(s: &dyn Store, id: &TaskId, usd: f64) {
    s.apply(
        "engine",
        braid_store::Command::Record {
            id: id.clone(),
            kind: braid_core::EventKind::AgentFinished,
            payload: serde_json::json!({"agent": "claude", "exit": "exit 0", "duration_ms": 5,
                "usage": {"model": "m", "session": "s", "input_tokens": 1, "output_tokens": 1,
                          "cache_read_tokens": 0, "cache_write_tokens": 0, "cost_usd": usd}}),
        },
    )
    .unwrap();
}

#[test]
fn budgets_say_which_is_spent_from_the_ledger() {
    use braid_app::budget::Budget;
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    let (a, b) = (add_as(&s, "br-a"), add_as(&s, "br-b"));
    let now = s.now_ms();
    let budget = Budget {
        task_usd: Some(1.0),
        run_usd: Some(5.0),
        day_usd: Some(2.0),
    };
    assert_eq!(budget.spent(&s, Some(&a), 0.0, now).unwrap(), None);
    spend(&s, &a, 0.6);
    spend(&s, &a, 0.4);
    // a has spent its own budget; b has not, and the day has room.
    let spent = budget.spent(&s, Some(&a), 1.0, now).unwrap().unwrap();
    assert_eq!(spent.budget, "task_usd");
    assert!((spent.spent_usd - 1.0).abs() < 1e-9);
    assert!(
        spent.to_string().contains("by this task of $1.00"),
        "{spent}"
    );
    assert_eq!(budget.spent(&s, Some(&b), 1.0, now).unwrap(), None);
    // The run's own spend, then the day's (all runs), stop everything.
    let run = budget.spent(&s, Some(&b), 5.0, now).unwrap().unwrap();
    assert_eq!(run.budget, "run_usd");
    spend(&s, &b, 0.9);
    assert_eq!(budget.spent(&s, Some(&b), 1.9, now).unwrap(), None);
    spend(&s, &b, 0.1);
    let day = budget.spent(&s, Some(&b), 2.0, now).unwrap().unwrap();
    assert_eq!(day.budget, "day_usd");
    // Tomorrow the day budget is fresh (the task's is not).
    let tomorrow = braid_app::budget::day_start(now) + 86_400_000;
    assert_eq!(
        budget
            .spent(&s, Some(&a), 0.0, tomorrow)
            .unwrap()
            .unwrap()
            .budget,
        "task_usd"
    );
    let c = add_as(&s, "br-c");
    assert_eq!(
        budget
            .spent(&s, Some(&c), 0.0, now)
            .unwrap()
            .unwrap()
            .budget,
        "day_usd"
    );
    assert_eq!(budget.spent(&s, Some(&c), 0.0, tomorrow).unwrap(), None);
    // What the board shows: each budget against its spend.
    let views = budget.views(&s, Some(3.0), now).unwrap();
    let by = |k: &str| views.iter().find(|v| v.budget == k).unwrap().clone();
    assert!((by("day_usd").spent_usd - 2.0).abs() < 1e-9);
    assert_eq!(by("run_usd").spent_usd, 3.0);
    assert_eq!(by("task_usd").task.as_deref(), Some("br-a"));
    let summary = ops::cost_summary(&s, &budget, None).unwrap();
    assert!((summary.total_usd - 2.0).abs() < 1e-9);
    assert_eq!(summary.attempts, 4);
}
