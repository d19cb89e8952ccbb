//! Control characters sent to the API as an attacker would: every code
//! point from 0x00 to 0x9f in a title, and escapes in labels, names and
//! text, answer 400 naming the field and change nothing; descriptions and
//! comments keep `\n` and `\t`.

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
        // The name the default guard answers to.
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

    /// Expects 400 `invalid` naming `field` and a control character.
    #[track_caller]
    fn refused(&self, (status, v): (StatusCode, Value), field: &str) -> String {
        assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
        assert_eq!(v["error"]["code"], "invalid", "{v}");
        let m = v["error"]["message"].as_str().unwrap().to_owned();
        assert!(
            m.contains(&format!("invalid {field}: ")) && m.contains("control character U+"),
            "{m}"
        );
        m
    }
}

#[tokio::test]
async fn every_control_character_in_a_title_is_a_400_naming_it() {
    let t = T::new();
    for c in (0..=0x9f_u32)
        .filter_map(char::from_u32)
        .filter(|&c| braid_core::text::is_control(c))
    {
        let r = t
            .call(
                Method::POST,
                "/api/tasks",
                Some(json!({"title": format!("esc{c}x")})),
            )
            .await;
        let m = t.refused(r, "title");
        assert!(m.contains(&format!("U+{:04X} at byte 3", c as u32)), "{m}");
    }
    let (s, v) = t.call(Method::GET, "/api/tasks", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v, json!([]));
}

#[tokio::test]
async fn labels_names_text_and_comments_are_checked_and_newlines_kept() {
    let t = T::new();
    let osc = "\u{1b}]52;c;cm0gLXJm\u{7}";
    let post = |body: Value| t.call(Method::POST, "/api/tasks", Some(body));
    t.refused(post(json!({"title": "t", "labels": [osc]})).await, "label");
    t.refused(
        post(json!({"title": "t", "assignee": osc})).await,
        "assignee",
    );
    t.refused(
        post(json!({"title": "t", "agent": "\u{9b}6n"})).await,
        "agent",
    );
    t.refused(
        post(json!({"title": "t", "gates": ["a\nb"]})).await,
        "gates",
    );
    t.refused(
        post(json!({"title": "t", "description": osc})).await,
        "description",
    );
    t.refused(
        post(json!({"title": "t", "acceptance": "a\rb"})).await,
        "acceptance",
    );

    let (s, v) = post(json!({"title": "t", "description": "one\n\ttwo"})).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["description"], "one\n\ttwo");
    let id = v["id"].as_str().unwrap().to_owned();
    let task = format!("/api/tasks/{id}");
    let patch = |body: Value| t.call(Method::PATCH, &task, Some(body));
    t.refused(patch(json!({"title": "a\u{0}b"})).await, "title");
    t.refused(patch(json!({"branch": "\u{1b}[2J"})).await, "branch");
    t.refused(patch(json!({"add_labels": ["x\u{7f}"]})).await, "label");
    let comments = format!("/api/tasks/{id}/comments");
    let comment = |body: Value| t.call(Method::POST, &comments, Some(body));
    t.refused(comment(json!({"text": osc})).await, "text");
    t.refused(
        comment(json!({"text": "hi", "author": "\u{1b}"})).await,
        "author",
    );
    let (s, v) = comment(json!({"text": "line\n\tindented"})).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let fail = format!("/api/tasks/{id}/fail");
    t.refused(
        t.call(Method::POST, &fail, Some(json!({"reason": osc})))
            .await,
        "reason",
    );
    let claim = format!("/api/tasks/{id}/claim");
    t.refused(
        t.call(Method::POST, &claim, Some(json!({"assignee": osc})))
            .await,
        "assignee",
    );

    // Nothing refused was written.
    let (_, v) = t.call(Method::GET, &task, None).await;
    assert_eq!(v["title"], "t");
    assert_eq!(v["state"], "open");
    assert_eq!(v["branch"], Value::Null);
    assert_eq!(v["labels"], json!([]));
    let (_, v) = t.call(Method::GET, &comments, None).await;
    let texts: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["line\n\tindented"]);
}
