//! docs/json.md documents the wire types field by field; this holds the
//! two together: every field a type has is documented, and the document
//! names no field the type lacks.

use std::collections::BTreeSet;

use braid_app::wire::*;
use schemars::JsonSchema;

fn doc() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/json.md");
    std::fs::read_to_string(path).unwrap()
}

/// The fields of a wire type, from its JSON schema.
fn fields<T: JsonSchema>() -> BTreeSet<String> {
    let schema = serde_json::to_value(schemars::schema_for!(T)).unwrap();
    schema["properties"]
        .as_object()
        .unwrap_or_else(|| panic!("{} has no properties: {schema}", T::schema_name()))
        .keys()
        .cloned()
        .collect()
}

/// The JSON example under `## {heading}` (comments after `//` removed).
fn example(doc: &str, heading: &str) -> serde_json::Value {
    let at = doc
        .find(&format!("## {heading}\n"))
        .unwrap_or_else(|| panic!("docs/json.md has no section {heading}"));
    let block = &doc[at..];
    let start = block.find("```json\n").unwrap() + 8;
    let end = start + block[start..].find("```").unwrap();
    let text: String = block[start..end]
        .lines()
        .map(|l| match l.find("  //") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("the {heading} example is not JSON ({e}):\n{text}"))
}

fn keys(v: &serde_json::Value) -> BTreeSet<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

/// The quoted names in the per-command table's row for `command`.
fn row_names(doc: &str, command: &str) -> BTreeSet<String> {
    let row = doc
        .lines()
        .find(|l| l.starts_with(&format!("| {command} |")))
        .unwrap_or_else(|| panic!("docs/json.md has no row for {command}"));
    let cell = row.splitn(3, '|').nth(2).unwrap();
    let mut names = BTreeSet::new();
    let mut rest = cell;
    while let Some(i) = rest.find('"') {
        let after = &rest[i + 1..];
        let Some(j) = after.find('"') else { break };
        let name = &after[..j];
        if name.chars().all(|c| c.is_ascii_lowercase() || c == '_') && !name.is_empty() {
            names.insert(name.to_owned());
        }
        rest = &after[j + 1..];
    }
    names
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn the_task_and_event_examples_have_exactly_the_wire_fields() {
    let doc = doc();
    assert_eq!(keys(&example(&doc, "Task")), fields::<TaskView>(), "Task");
    assert_eq!(
        keys(&example(&doc, "Event")),
        fields::<EventView>(),
        "Event"
    );
    let lease = &example(&doc, "Task")["lease"];
    let mut documented = keys(lease);
    // `token` is documented with `claim`, the one answer that has it.
    assert!(row_names(&doc, "`claim`").contains("token"));
    documented.insert("token".into());
    assert_eq!(documented, fields::<LeaseView>(), "lease");
}

#[test]
fn the_per_command_shapes_name_the_wire_fields() {
    let doc = doc();
    assert_eq!(
        row_names(&doc, "`health`"),
        fields::<HealthView>(),
        "health"
    );
    assert_eq!(
        row_names(&doc, "`comment ID TEXT`"),
        fields::<CommentView>(),
        "comment"
    );
    assert_eq!(
        row_names(&doc, "`tree [ID]`"),
        fields::<TreeRowView<'_>>(),
        "tree"
    );
    let show_extra: BTreeSet<String> = fields::<ShowView>()
        .difference(&fields::<TaskView>())
        .cloned()
        .collect();
    assert_eq!(
        row_names(&doc, "`show ID`"),
        show_extra,
        "show adds these to the task"
    );
    assert_eq!(row_names(&doc, "GIT"), fields::<GitView>(), "show's git");
    assert_eq!(
        row_names(&doc, "`cost`"),
        fields::<CostView>()
            .union(&fields::<UsageView>())
            .cloned()
            .collect(),
        "cost's rows and show's attempts"
    );
    assert_eq!(
        fields::<ErrorBody>(),
        set(&["code", "message"]),
        "errors: {{\"error\": {{\"code\", \"message\"}}}}"
    );
    assert!(doc.contains(r#"`{"error": {"code": CODE, "message": TEXT}}`"#));
}

#[test]
fn the_review_shapes_name_the_wire_fields() {
    let doc = doc();
    assert_eq!(row_names(&doc, "`diff ID`"), fields::<DiffView>(), "diff");
    assert_eq!(row_names(&doc, "FILE"), fields::<DiffFileView>(), "file");
    assert_eq!(
        row_names(&doc, "`review list`"),
        fields::<ReviewItemView>(),
        "review list"
    );
    assert_eq!(
        row_names(&doc, "`review show ID`"),
        fields::<ReviewView>(),
        "review show"
    );
    assert_eq!(
        row_names(&doc, "DECISION"),
        fields::<DecisionView>(),
        "decision"
    );
    assert_eq!(row_names(&doc, "LINE"), fields::<LineCommentView>(), "line");
    assert_eq!(row_names(&doc, "GATE"), fields::<GateRunView>(), "gate");
    let merge: BTreeSet<String> = fields::<MergeView>()
        .union(&fields::<ConflictView>())
        .cloned()
        .collect();
    assert_eq!(row_names(&doc, "MERGE"), merge, "merge");
}
