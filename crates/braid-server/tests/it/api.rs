//! Every route: shapes, statuses and stable error codes.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use braid_server::{AppOptions, AppState, app};
use braid_store::SqliteStore;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

struct T {
    _dir: tempfile::TempDir,
    state: AppState,
}

impl T {
    fn new() -> T {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn braid_store::Store> =
            Arc::new(SqliteStore::create(&dir.path().join("braid.db")).unwrap());
        let hub = braid_server::hub::Hub::start(store.clone(), Default::default()).unwrap();
        T {
            _dir: dir,
            state: AppState::new(store, hub, "api-test".into(), 2),
        }
    }

    async fn call(&self, method: Method, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
        // The name the default guard answers to (127.0.0.1:7777).
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header("host", "127.0.0.1:7777");
        let body = match body {
            Some(v) => {
                req = req.header("content-type", "application/json");
                Body::from(v.to_string())
            }
            None => Body::empty(),
        };
        let res = app(self.state.clone(), &AppOptions::default())
            .oneshot(req.body(body).unwrap())
            .await
            .unwrap();
        let status = res.status();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let v = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (status, v)
    }

    async fn add(&self, body: Value) -> String {
        let (s, v) = self.call(Method::POST, "/api/tasks", Some(body)).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v["id"].as_str().unwrap().to_owned()
    }
}

#[tokio::test]
async fn create_read_update_and_filter_tasks() {
    let t = T::new();
    let epic = t.add(json!({"title": "Epic", "type": "epic"})).await;
    let a = t
        .add(json!({"title": "A", "parent": epic, "labels": ["ui"], "priority": 1}))
        .await;
    let b = t.add(json!({"title": "B", "deps": [{"id": a}]})).await;
    let (s, v) = t.call(Method::GET, &format!("/api/tasks/{b}"), None).await;
    assert_eq!(s, StatusCode::OK);
    for key in [
        "id", "title", "type", "state", "priority", "parent", "labels", "deps", "ready",
    ] {
        assert!(v.get(key).is_some(), "{key} missing: {v}");
    }
    assert_eq!(v["ready"], false);
    assert_eq!(v["deps"], json!([{"id": a, "kind": "blocks"}]));
    let (_, list) = t.call(Method::GET, "/api/tasks?label=ui", None).await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    let (_, list) = t
        .call(
            Method::GET,
            &format!("/api/tasks?parent={epic}&state=open"),
            None,
        )
        .await;
    assert_eq!(list[0]["id"], a.as_str());
    let (s, v) = t
        .call(
            Method::PATCH,
            &format!("/api/tasks/{a}"),
            Some(json!({"title": "A2", "parent": null})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["title"], "A2");
    assert!(v["parent"].is_null());
    let (_, ready) = t.call(Method::GET, "/api/ready", None).await;
    assert_eq!(
        ready
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].clone())
            .collect::<Vec<_>>(),
        vec![json!(a)]
    );
}

#[tokio::test]
async fn transitions_claims_deps_health_and_events() {
    let t = T::new();
    let a = t.add(json!({"title": "A"})).await;
    let b = t.add(json!({"title": "B"})).await;
    let (s, v) = t
        .call(
            Method::POST,
            &format!("/api/tasks/{b}/deps"),
            Some(json!({"id": a})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["ready"], false);
    let (s, v) = t
        .call(
            Method::POST,
            &format!("/api/tasks/{a}/claim"),
            Some(json!({"assignee": "bot"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["state"], "in_progress");
    assert!(v["lease"]["token"].as_str().unwrap().len() >= 16);
    let (s, _) = t
        .call(Method::POST, &format!("/api/tasks/{a}/done"), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    let (_, v) = t.call(Method::GET, &format!("/api/tasks/{b}"), None).await;
    assert_eq!(v["ready"], true);
    let (s, v) = t
        .call(Method::DELETE, &format!("/api/tasks/{b}/deps?on={a}"), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["deps"], json!([]));
    let (_, h) = t.call(Method::GET, "/api/health", None).await;
    assert_eq!(h["total"], 2);
    assert_eq!(h["by_state"]["done"], 1);
    let (_, evs) = t.call(Method::GET, "/api/events?after=2", None).await;
    let kinds: Vec<&str> = evs
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["dep_added", "claimed", "state_changed", "dep_removed"]
    );
    assert!(
        evs.as_array()
            .unwrap()
            .iter()
            .all(|e| e["actor"] == "api-test")
    );
}

#[tokio::test]
async fn errors_have_stable_codes_and_name_the_thing() {
    let t = T::new();
    let a = t.add(json!({"title": "A"})).await;
    let b = t.add(json!({"title": "B", "deps": [{"id": a}]})).await;
    let cases = [
        (
            Method::GET,
            "/api/tasks/br-none".to_owned(),
            None,
            StatusCode::NOT_FOUND,
            "not_found",
            "br-none",
        ),
        (
            Method::POST,
            "/api/tasks".to_owned(),
            Some(json!({"title": ""})),
            StatusCode::BAD_REQUEST,
            "invalid",
            "title",
        ),
        (
            Method::POST,
            "/api/tasks".to_owned(),
            Some(json!({"title": "x", "priority": 7})),
            StatusCode::BAD_REQUEST,
            "invalid",
            "priority",
        ),
        (
            Method::POST,
            "/api/tasks".to_owned(),
            Some(json!({"title": "x", "colour": "red"})),
            StatusCode::BAD_REQUEST,
            "invalid",
            "colour",
        ),
        (
            Method::POST,
            format!("/api/tasks/{a}/deps"),
            Some(json!({"id": b})),
            StatusCode::BAD_REQUEST,
            "invalid",
            "cycle",
        ),
        (
            Method::POST,
            format!("/api/tasks/{a}/fail"),
            Some(json!({})),
            StatusCode::BAD_REQUEST,
            "invalid",
            "reason",
        ),
        (
            Method::POST,
            format!("/api/tasks/{b}/claim"),
            None,
            StatusCode::CONFLICT,
            "conflict",
            a.as_str(),
        ),
        (
            Method::POST,
            format!("/api/tasks/{a}/explode"),
            None,
            StatusCode::NOT_FOUND,
            "not_found",
            "explode",
        ),
        (
            Method::GET,
            "/api/tasks?state=sideways".to_owned(),
            None,
            StatusCode::BAD_REQUEST,
            "invalid",
            "sideways",
        ),
    ];
    for (method, uri, body, status, code, mention) in cases {
        let (s, v) = t.call(method.clone(), &uri, body).await;
        assert_eq!(s, status, "{method} {uri}: {v}");
        assert_eq!(v["error"]["code"], code, "{method} {uri}: {v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(mention), "{method} {uri}: {msg}");
    }
    // Refused writes changed nothing.
    let (_, h) = t.call(Method::GET, "/api/health", None).await;
    assert_eq!(h["total"], 2);
    assert_eq!(h["last_seq"], 2);
    let (s, v) = t
        .call(Method::POST, &format!("/api/tasks/{a}/done"), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = t
        .call(Method::POST, &format!("/api/tasks/{a}/defer"), None)
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("conflict")),
        "{v}"
    );
}

#[tokio::test]
async fn openapi_document_and_health_endpoints() {
    let t = T::new();
    let (s, doc) = t.call(Method::GET, "/openapi.json", None).await;
    assert_eq!(s, StatusCode::OK);
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/api/tasks",
        "/api/tasks/{id}",
        "/api/tasks/{id}/claim",
        "/api/tasks/{id}/deps",
        "/api/ready",
        "/api/health",
        "/api/events",
        "/api/review",
        "/api/tasks/{id}/review",
        "/api/tasks/{id}/diff",
        "/api/tasks/{id}/approve",
        "/api/tasks/{id}/reject",
    ] {
        assert!(
            paths.contains_key(p),
            "{p} missing from the OpenAPI document"
        );
    }
    assert!(doc["components"]["schemas"]["TaskView"].is_object());
    assert_eq!(
        t.call(Method::GET, "/healthz", None).await.0,
        StatusCode::OK
    );
    assert_eq!(t.call(Method::GET, "/readyz", None).await.0, StatusCode::OK);
}

#[tokio::test]
async fn the_ready_answer_follows_every_write() {
    let t = T::new();
    let a = t.add(json!({"title": "a"})).await;
    let (_, v) = t.call(Method::GET, "/api/ready?limit=1", None).await;
    assert_eq!(v[0]["id"], a.as_str());
    // Asked again with nothing changed: the same answer (from memory).
    let (_, again) = t.call(Method::GET, "/api/ready?limit=1", None).await;
    assert_eq!(again, v);
    // A more urgent task: the next answer has it first.
    let b = t.add(json!({"title": "b", "priority": 0})).await;
    let (_, v) = t.call(Method::GET, "/api/ready?limit=1", None).await;
    assert_eq!(v[0]["id"], b.as_str());
    // A write straight to the store (another process) shows too.
    t.state
        .store
        .apply(
            "other",
            braid_store::Command::SetState {
                id: braid_core::TaskId::parse(&b).unwrap(),
                to: braid_core::State::Deferred,
                reason: None,
            },
        )
        .unwrap();
    let (_, v) = t.call(Method::GET, "/api/ready?limit=1", None).await;
    assert_eq!(v[0]["id"], a.as_str());
    let (_, v) = t.call(Method::GET, "/api/ready?limit=5", None).await;
    assert_eq!(v.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn comments_are_added_and_listed() {
    let t = T::new();
    let id = t.add(json!({"title": "discuss"})).await;
    let (s, c) = t
        .call(
            Method::POST,
            &format!("/api/tasks/{id}/comments"),
            Some(json!({"text": "  looks right  ", "author": "ann"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{c}");
    assert_eq!(c["author"], "ann");
    assert_eq!(c["text"], "looks right");
    t.call(
        Method::POST,
        &format!("/api/tasks/{id}/comments"),
        Some(json!({"text": "second"})),
    )
    .await;
    let (s, list) = t
        .call(Method::GET, &format!("/api/tasks/{id}/comments"), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    let texts: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["looks right", "second"]);
    assert_eq!(list[1]["author"], "api-test");
    // Empty text, unknown task: clear errors, nothing recorded.
    let (s, e) = t
        .call(
            Method::POST,
            &format!("/api/tasks/{id}/comments"),
            Some(json!({"text": "  "})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        e["error"]["message"].as_str().unwrap().contains("text"),
        "{e}"
    );
    let (s, _) = t
        .call(
            Method::POST,
            "/api/tasks/br-nope/comments",
            Some(json!({"text": "hi"})),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (_, list) = t
        .call(Method::GET, &format!("/api/tasks/{id}/comments"), None)
        .await;
    assert_eq!(list.as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn ids_resolve_from_a_unique_prefix_and_claims_keep_the_shared_bounds() {
    let t = T::new();
    let a = t.add(json!({"title": "a"})).await;
    let short = a["br-".len()..].to_uppercase();
    let (s, v) = t
        .call(Method::GET, &format!("/api/tasks/{short}"), None)
        .await;
    assert_eq!((s, v["id"].as_str()), (StatusCode::OK, Some(a.as_str())));
    let (s, v) = t
        .call(
            Method::POST,
            "/api/tasks",
            Some(json!({"title": "b", "deps": [short]})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(
        v["deps"][0]["id"],
        a.as_str(),
        "a dependency as a bare prefix"
    );
    let (s, v) = t.call(Method::GET, "/api/tasks/br-", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains(&a), "{v}");
    for lease in [0, 5, 700_000] {
        let (s, v) = t
            .call(
                Method::POST,
                &format!("/api/tasks/{a}/claim"),
                Some(json!({"lease_seconds": lease})),
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{lease}: {v}");
    }
    let (s, v) = t
        .call(
            Method::POST,
            &format!("/api/tasks/{a}/fail"),
            Some(json!({})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("reason"),
        "{v}"
    );
}

fn git(dir: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[tokio::test]
async fn review_routes_show_the_diff_and_take_decisions_with_clear_errors() {
    let mut t = T::new();
    let repo = t._dir.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    git(&repo, &["config", "user.email", "t@example.com"]);
    git(&repo, &["config", "user.name", "t"]);
    std::fs::write(repo.join("a.txt"), "one\n").unwrap();
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "init"]);
    let id = t.add(json!({"title": "edit a"})).await;
    git(&repo, &["checkout", "-q", "-b", &format!("braid/{id}")]);
    std::fs::write(repo.join("a.txt"), "one\ntwo\n").unwrap();
    git(&repo, &["commit", "-q", "-am", "two"]);
    git(&repo, &["checkout", "-q", "main"]);

    // Outside git the routes say why there is nothing to review.
    let (s, v) = t.call(Method::GET, "/api/review", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not in a git repository")
    );
    t.state.review = Some(Arc::new(braid_app::review::Site {
        repo,
        target: "main".into(),
        require_approval: false,
        jobs: 1,
    }));

    let (s, d) = t
        .call(Method::GET, &format!("/api/tasks/{id}/diff"), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{d}");
    assert_eq!(d["files"][0]["path"], "a.txt");
    assert!(d["patch"].as_str().unwrap().contains("+two"), "{d}");
    let (s, d) = t
        .call(
            Method::GET,
            &format!("/api/tasks/{id}/diff?stat=true"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(d["patch"].is_null());
    let (s, e) = t
        .call(Method::GET, &format!("/api/tasks/{id}/diff?offset=9"), None)
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("past the last file")
    );

    // Open work: a decision is a conflict, and nothing is recorded.
    let (s, e) = t
        .call(
            Method::POST,
            &format!("/api/tasks/{id}/approve"),
            Some(json!({})),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    let (s, e) = t
        .call(
            Method::POST,
            &format!("/api/tasks/{id}/reject"),
            Some(json!({"message": "x", "extra": 1})),
        )
        .await;
    assert_eq!(
        s,
        StatusCode::BAD_REQUEST,
        "{e}: unknown fields are refused"
    );

    // In review (claimed and finished as the engine does).
    let store = t.state.store.clone();
    let tid = braid_core::TaskId::parse(&id).unwrap();
    let claimed = store
        .apply(
            "engine",
            braid_store::Command::Claim {
                id: Some(tid.clone()),
                assignee: "engine".into(),
                lease_ms: 60_000,
            },
        )
        .unwrap();
    store
        .apply(
            "engine",
            braid_store::Command::Finish {
                id: tid,
                token: claimed.lease_token.unwrap(),
                to: braid_core::State::Review,
                reason: None,
                refund_attempt: false,
            },
        )
        .unwrap();
    let (s, list) = t.call(Method::GET, "/api/review", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list[0]["id"], id.as_str());
    let (s, e) = t
        .call(
            Method::POST,
            &format!("/api/tasks/{id}/reject"),
            Some(
                json!({"message": "more", "comments": [{"file": "a.txt", "line": 3, "text": "x"}]}),
            ),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("a.txt has 2 line(s)")
    );
    let (s, task) = t
        .call(
            Method::POST,
            &format!("/api/tasks/{id}/reject"),
            Some(json!({"message": "more", "comments": [{"file": "a.txt", "line": 2, "text": "say three"}]})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{task}");
    assert_eq!(task["state"], "open");
    let (s, v) = t
        .call(Method::GET, &format!("/api/tasks/{id}/review"), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["comments"][0]["code"], "two");
    assert_eq!(v["comments"][0]["outdated"], false);
    assert_eq!(v["decisions"][0]["kind"], "changes_requested");
}
