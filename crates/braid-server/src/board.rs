//! The board page at `/`: static HTML, script and style embedded in the
//! binary (no build step). It reads the JSON API and follows `/ws`.

use axum::http::header;
use axum::response::IntoResponse;

const PAGE: &str = include_str!("../board/index.html");
const SCRIPT: &str = include_str!("../board/board.js");
const STYLE: &str = include_str!("../board/board.css");

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
