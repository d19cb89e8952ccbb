//! Import and export: exact round trips, all-or-nothing imports that name
//! file:line, and the beads and task-master formats.

use crate::Proj;

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn export_import_round_trips_exactly() {
    let p = Proj::init();
    let e = p.add(&["Epic", "--type", "epic", "-l", "big"]);
    let a = p.add(&[
        "A",
        "--parent",
        &e,
        "--gate",
        "test",
        "--acceptance",
        "it works",
    ]);
    let b = p.add(&["B", "--dep", &a, "--dep", &format!("related:{e}")]);
    p.ok(&["claim", &a, "--as", "ag"]);
    p.ok(&["fail", &a, "--reason", "tests broke"]);
    p.ok(&["update", &b, "--description", "line one\nline \"two\""]);
    let out1 = p.path().join("one.jsonl");
    p.ok(&["export", "--events", "-o", out1.to_str().unwrap()]);

    let q = Proj::init();
    let report = q.json(&["import", out1.to_str().unwrap()]);
    assert_eq!(report["tasks"], 3);
    assert_eq!(report["deps"], 2);
    let out2 = q.path().join("two.jsonl");
    q.ok(&["export", "--events", "-o", out2.to_str().unwrap()]);
    let one = std::fs::read_to_string(&out1).unwrap();
    let two = std::fs::read_to_string(&out2).unwrap();
    // Same tasks and same history; the second log also records the import.
    assert!(
        two.starts_with(&one),
        "round trip differs:\n{one}\n---\n{two}"
    );
    let extra: Vec<&str> = two[one.len()..].lines().collect();
    assert_eq!(extra.len(), 1);
    assert!(extra[0].contains("\"imported\""));
    assert_eq!(q.json(&["show", &b])["ready"], false);
    assert_eq!(q.json(&["health"]), {
        let mut h = p.json(&["health"]);
        h["last_seq"] = q.json(&["health"])["last_seq"].clone();
        h
    });
}

#[test]
fn a_bad_line_imports_nothing_and_names_file_and_line() {
    let p = Proj::init();
    let src = Proj::init();
    src.add(&["one"]);
    src.add(&["two"]);
    let file = p.path().join("in.jsonl");
    let mut text = src.ok(&["export"]);
    text.push_str("{\"record\":\"task\",\"id\":\"x-1\",\"title\":\"\",\"type\":\"task\"}\n");
    text.push_str("not json\n");
    std::fs::write(&file, &text).unwrap();
    let err = p.fails(&["import", file.to_str().unwrap()], 2);
    assert!(err.contains("in.jsonl:4"), "{err}");
    assert!(err.contains("in.jsonl:5"), "{err}");
    assert!(err.contains("nothing imported"), "{err}");
    assert_eq!(p.json(&["health"])["total"], 0);
    // A reference to an unknown task is caught by the store, still by line.
    let mut text = src.ok(&["export"]);
    text.push_str("{\"record\":\"task\",\"id\":\"x-2\",\"title\":\"t\",\"type\":\"task\",\"priority\":1,\"state\":\"open\",\"created_at\":\"2026-01-01T00:00:00Z\",\"updated_at\":\"2026-01-01T00:00:00Z\",\"deps\":[{\"id\":\"ghost\",\"kind\":\"blocks\"}]}\n");
    std::fs::write(&file, &text).unwrap();
    let err = p.fails(&["import", file.to_str().unwrap()], 2);
    assert!(
        err.contains("in.jsonl:4 (x-2)") && err.contains("ghost"),
        "{err}"
    );
    assert_eq!(p.json(&["health"])["total"], 0);
    let r = p.json(&["import", file.to_str().unwrap(), "--skip-invalid"]);
    assert_eq!(r["tasks"], 2);
    assert!(
        r["skipped"][0].as_str().unwrap().contains("in.jsonl:4"),
        "{r}"
    );
}

#[test]
fn imports_beads_issues_mapping_states_kinds_and_parents() {
    let p = Proj::init();
    let r = p.json(&["import", &fixture("beads-issues.jsonl")]);
    assert_eq!(r["format"], "beads");
    assert_eq!(r["tasks"], 5);
    let notes = r["not_mapped"].as_object().unwrap();
    assert!(notes.keys().any(|k| k.contains("waits-for")), "{r}");
    assert!(notes.keys().any(|k| k.contains("feature")), "{r}");
    assert!(notes.keys().any(|k| k.contains("comments")), "{r}");
    let t3 = p.json(&["show", "bd-3"]);
    assert_eq!(t3["parent"], "bd-2");
    assert_eq!(t3["state"], "open");
    assert_eq!(t3["assignee"], "kim");
    assert_eq!(t3["acceptance"], "User can log in");
    assert!(
        t3["description"]
            .as_str()
            .unwrap()
            .contains("design system")
    );
    assert_eq!(t3["ready"], false, "bd-4 is in progress");
    let kinds: Vec<(String, String)> = t3["deps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["id"].as_str().unwrap().to_owned(),
                d["kind"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(kinds.contains(&("bd-4".into(), "blocks".into())));
    assert!(kinds.contains(&("bd-1".into(), "related".into())));
    assert_eq!(p.json(&["show", "bd-1"])["state"], "done");
    assert_eq!(
        p.json(&["show", "bd-1"])["created_at"],
        "2025-10-14T23:39:22.123Z"
    );
    assert_eq!(
        p.json(&["show", "bd-5"])["deps"][0]["kind"],
        "discovered-from"
    );
}

#[test]
fn imports_taskmaster_tasks_with_subtasks_and_dependencies() {
    let p = Proj::init();
    let r = p.json(&["import", &fixture("taskmaster-tasks.json")]);
    assert_eq!(r["format"], "taskmaster");
    assert_eq!(r["tasks"], 6);
    let api = p.json(&["show", "tm-2"]);
    assert_eq!(api["type"], "epic");
    assert_eq!(api["deps"][0]["id"], "tm-1");
    let docs = p.json(&["show", "tm-2.3"]);
    assert_eq!(docs["parent"], "tm-2");
    let deps: Vec<&str> = docs["deps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(deps, vec!["tm-1", "tm-2.2"]);
    assert_eq!(p.json(&["show", "tm-2.2"])["deps"][0]["id"], "tm-2.1");
    assert_eq!(p.json(&["show", "tm-1"])["acceptance"], "repo exists");
    assert_eq!(p.json(&["show", "tm-1"])["priority"], 1);
    let ready: Vec<String> = p
        .json(&["ready"])
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ready, vec!["tm-2.1"]);
    assert!(
        r["not_mapped"]
            .as_object()
            .unwrap()
            .keys()
            .any(|k| k.contains("blocked"))
    );
}

#[test]
fn taskmaster_syntax_error_names_the_line() {
    let p = Proj::init();
    let file = p.path().join("tasks.json");
    std::fs::write(&file, "{\n  \"tasks\": [\n    {\"id\": 1,, }\n  ]\n}\n").unwrap();
    let err = p.fails(&["import", file.to_str().unwrap()], 2);
    assert!(err.contains("tasks.json:3"), "{err}");
}
