//! Thumbnails of rendered frames: `GET /api/jobs/{id}/thumbnail` (the
//! job's newest), `GET /api/jobs/{id}/frames/{n}/thumbnail`, small PNGs
//! the engines made of each output image, read from the store, and `GET
//! /api/jobs/{id}/thumbnails`, the frames that have one.

use super::{ask_reader, error, json, parse_id, ApiResult, ApiState};
use crate::store::reader::ReadMsg;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::Response;
use drqueue_common::model::JobId;

pub(super) async fn newest(State(s): State<ApiState>, Path(id): Path<String>) -> ApiResult {
    let job = parse_id(&id)?;
    thumbnail(&s, job, None).await
}

pub(super) async fn frames(State(s): State<ApiState>, Path(id): Path<String>) -> ApiResult {
    let job = parse_id(&id)?;
    let limit = crate::store::MAX_THUMBNAILS_PER_JOB;
    json(ask_reader(&s, |reply| ReadMsg::ThumbnailFrames { job, limit, reply }).await?)
}

pub(super) async fn frame(
    State(s): State<ApiState>,
    Path((id, frame)): Path<(String, String)>,
) -> ApiResult {
    let job = parse_id(&id)?;
    let frame: i64 = frame.parse().map_err(|_| {
        error(
            StatusCode::BAD_REQUEST,
            format!("frame: {frame:?} is not a frame number"),
        )
    })?;
    thumbnail(&s, job, Some(frame)).await
}

async fn thumbnail(s: &ApiState, job: JobId, frame: Option<i64>) -> ApiResult {
    let png = ask_reader(s, |reply| ReadMsg::Thumbnail { job, frame, reply }).await?;
    let Some(png) = png else {
        let what = frame.map_or_else(|| "no frame".to_string(), |f| format!("frame {f}"));
        return Err(error(
            StatusCode::NOT_FOUND,
            format!("no thumbnail for {what} of job {job}: thumbnails come from the image outputs of done tasks (`drqueue outputs {job}` lists them)"),
        ));
    };
    Response::builder()
        .header(header::CONTENT_TYPE, "image/png")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from(png))
        .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}
