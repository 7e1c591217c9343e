//! The web monitor's pages: one HTML shell for every page URL (the script
//! draws the page the path names, so each has a stable address to paste),
//! and its script and style, all built into the binary. They hold no data:
//! they are served without sign-in, and everything they show comes from the
//! API under its usual rules.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// Each asset: its path under `/monitor/`, content type and bytes.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "app.js",
        "text/javascript",
        include_str!("../monitor/app.js"),
    ),
    (
        "api.js",
        "text/javascript",
        include_str!("../monitor/api.js"),
    ),
    (
        "pages.js",
        "text/javascript",
        include_str!("../monitor/pages.js"),
    ),
    (
        "job.js",
        "text/javascript",
        include_str!("../monitor/job.js"),
    ),
    (
        "task.js",
        "text/javascript",
        include_str!("../monitor/task.js"),
    ),
    (
        "style.css",
        "text/css",
        include_str!("../monitor/style.css"),
    ),
];

const SHELL: &str = include_str!("../monitor/index.html");

/// The page paths (the shell) and the assets.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let mut r = Router::new();
    for path in [
        "/",
        "/jobs",
        "/jobs/{id}",
        "/jobs/{id}/tasks/{index}",
        "/engines",
        "/limits",
        "/users",
        "/signin",
    ] {
        r = r.route(path, get(shell));
    }
    r.route("/monitor/{file}", get(asset))
}

/// The pages' rules: only this origin's own script, style and images run;
/// no page may frame them.
fn secured(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    resp
}

async fn shell() -> Response {
    secured(
        (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            SHELL,
        )
            .into_response(),
    )
}

async fn asset(axum::extract::Path(file): axum::extract::Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, kind, body)) => secured(
            (
                [
                    (header::CONTENT_TYPE, *kind),
                    (header::CACHE_CONTROL, "no-cache"),
                ],
                *body,
            )
                .into_response(),
        ),
        None => (StatusCode::NOT_FOUND, "no such monitor file").into_response(),
    }
}
