//! The board page at `/`: static HTML, script and style embedded in the
//! binary (no build step). It reads the JSON API and follows `/ws`.

use axum::http::header;
use axum::response::IntoResponse;

const PAGE: &str = include_str!("../board/index.html");
const SCRIPT: &str = include_str!("../board/board.js");
const STYLE: &str = include_str!("../board/board.css");
/// The review page's diff renderer and highlighter (see board/vendor).
const DIFF_SCRIPT: &str = include_str!("../board/vendor/diff2html-ui-slim.min.js");
const DIFF_STYLE: &str = include_str!("../board/vendor/diff2html.min.css");
const HIGHLIGHT_STYLE: &str = include_str!("../board/vendor/highlight-github.min.css");

pub async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        PAGE,
    )
}

pub async fn script() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        SCRIPT,
    )
}

pub async fn style() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        STYLE,
    )
}

/// A vendored file by name (`/vendor/NAME`), cached for a day: it changes
/// only with braid.
pub async fn vendor(
    axum::extract::Path(name): axum::extract::Path<String>,
) -> axum::response::Response {
    let (kind, body) = match name.as_str() {
        "diff2html.js" => ("text/javascript; charset=utf-8", DIFF_SCRIPT),
        "diff2html.css" => ("text/css; charset=utf-8", DIFF_STYLE),
        "highlight.css" => ("text/css; charset=utf-8", HIGHLIGHT_STYLE),
        _ => return axum::http::StatusCode::NOT_FOUND.into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        body,
    )
        .into_response()
}
