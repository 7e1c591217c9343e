//! The farm's numbers: `GET /metrics` (Prometheus text, read from the core)
//! and `GET /api/usage` (CPU and wall time by owner, pool, job or day,
//! summed by the store reader from records that outlive their jobs). Both
//! follow the API's read rules: any signed-in caller may read them.

use super::{ask, ask_reader, error, json, ApiResult, ApiState};
use crate::events::Request;
use crate::store::reader::ReadMsg;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::Response;
use drqueue_common::usage::UsageQuery;

/// The media type of Prometheus' text exposition format.
pub(super) const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

pub(super) async fn metrics(State(s): State<ApiState>) -> ApiResult {
    let text = ask(&s, |reply| Request::Metrics { reply }).await?;
    Response::builder()
        .header(header::CONTENT_TYPE, PROMETHEUS_TEXT)
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from(text))
        .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

pub(super) async fn usage(State(s): State<ApiState>, Query(query): Query<UsageQuery>) -> ApiResult {
    json(ask_reader(&s, |reply| ReadMsg::Usage { query, reply }).await?)
}
