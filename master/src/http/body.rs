//! Request bodies are read whole before any handler sees them, within a
//! size cap (413 past it) and a time limit (408 past it), so a client can
//! neither make the master buffer without end nor hold a handler open by
//! trickling bytes. Uploads to the content store are the one exception:
//! they stream to disk under their own bounds (`cas.rs`).

use super::{error, ApiState};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use http_body_util::BodyExt;
use http_body_util::Limited;

/// The largest request body: a graph of many jobs fits with room to spare
/// (each spec is itself capped at 64 KiB of strings).
pub const MAX_BODY: usize = 8 << 20;

pub(super) async fn bounded(State(s): State<ApiState>, req: Request, next: Next) -> Response {
    if super::cas::is_upload(req.method(), req.uri().path()) {
        // A blob streams to disk under its own bounds (size, stalls, disk floor).
        return next.run(req).await;
    }
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return too_large();
    }
    let (parts, body) = req.into_parts();
    let read = Limited::new(body, MAX_BODY).collect();
    let bytes = match tokio::time::timeout(s.body_timeout, read).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => return too_large(),
        Ok(Err(e)) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("could not read the request body: {e}"),
            )
        }
        Err(_) => {
            return error(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body did not arrive within {:?}",
                    s.body_timeout
                ),
            )
        }
    };
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

fn too_large() -> Response {
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "the request body is larger than {} MiB: split the submission",
            MAX_BODY >> 20
        ),
    )
}
