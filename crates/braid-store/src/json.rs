//! How list columns (labels, gates) are kept in a row: a JSON array of
//! strings. Both backends store them this way.

/// A list column's text as a list; an unreadable value is an empty list.
pub(crate) fn json_list(s: &str) -> Vec<String> {
    serde_json::from_str(s).unwrap_or_default()
}

/// A list as a list column's text.
pub(crate) fn json_strings(v: &[String]) -> String {
    serde_json::to_string(v).expect("strings serialize")
}
