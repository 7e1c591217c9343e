//! The content store over HTTP: which blobs the master lacks, uploads
//! (streamed, verified against their hash, written atomically), downloads
//! with `Range` so a broken transfer resumes, and what the store holds.

use super::{error, json, json_body, need, ApiResult, ApiState};
use crate::cas::PutError;
use crate::users::Caller;
use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use drqueue_common::cas::{BlobHash, Manifest, MAX_MANIFEST_BYTES, MAX_MANIFEST_FILES};
use drqueue_common::model::JobSpec;
use drqueue_common::users::Role;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// `POST /api/cas/missing`: the hashes a client is about to upload.
#[derive(serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct MissingQuery {
    hashes: Vec<BlobHash>,
}

/// The answer: those the store lacks, in the order asked.
#[derive(serde::Serialize, schemars::JsonSchema)]
pub(super) struct Missing {
    missing: Vec<BlobHash>,
}

/// The answer to an upload.
#[derive(serde::Serialize, schemars::JsonSchema)]
pub(super) struct Stored {
    hash: BlobHash,
    /// False when the store had it already.
    new: bool,
}

fn parse_hash(text: &str) -> Result<BlobHash, Response> {
    text.parse()
        .map_err(|e: String| error(StatusCode::BAD_REQUEST, format!("path: {e}")))
}

pub(super) async fn missing(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<MissingQuery>, JsonRejection>,
) -> ApiResult {
    need(&caller, Role::Artist, "uploading")?;
    let q = json_body(body, "hash list (send {\"hashes\": [\"…\"]})")?;
    if q.hashes.len() > MAX_MANIFEST_FILES + 1 {
        return Err(error(
            StatusCode::BAD_REQUEST,
            format!(
                "field `hashes`: {} hashes; ask about at most {} at once",
                q.hashes.len(),
                MAX_MANIFEST_FILES + 1
            ),
        ));
    }
    let cas = s.cas.clone();
    let missing = tokio::task::spawn_blocking(move || cas.missing(&q.hashes))
        .await
        .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    json(Missing { missing })
}

/// `PUT /api/cas/{hash}`: the body is the blob, streamed to disk.
pub(super) async fn put(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(hash): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    need(&caller, Role::Artist, "uploading")?;
    let hash = parse_hash(&hash)?;
    if s.cas.quota_bytes > 0 && !s.cas.has(&hash) {
        // A blob that would not fit beside what the caller's jobs keep is
        // refused before a byte of it is read.
        let len = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        let (now, _) = usage(&s, &caller.name, None).await?;
        if now.saturating_add(len) > s.cas.quota_bytes {
            return Err(over_quota(&s, &caller.name, now.saturating_add(len)));
        }
    }
    let stream = body.into_data_stream();
    let timeout = s.body_timeout.max(std::time::Duration::from_secs(1));
    // The whole upload may take long; what it may not do is stall.
    let stalls = stall_guard(stream, timeout);
    match s.cas.put(hash, Box::pin(stalls)).await {
        Ok(new) => {
            let status = if new {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok((status, Json(Stored { hash, new })).into_response())
        }
        Err(e) => {
            let status = match e {
                PutError::Mismatch { .. } => StatusCode::UNPROCESSABLE_ENTITY,
                PutError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
                PutError::DiskFull { .. } => StatusCode::INSUFFICIENT_STORAGE,
                PutError::Body(_) => StatusCode::BAD_REQUEST,
                PutError::Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
            };
            Err(error(status, e.to_string()))
        }
    }
}

/// `GET /api/cas/{hash}`, whole or from `Range: bytes=N-`.
pub(super) async fn get(
    State(s): State<ApiState>,
    Path(hash): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    let hash = parse_hash(&hash)?;
    let mut file = tokio::fs::File::open(s.cas.path_of(&hash))
        .await
        .map_err(|_| error(StatusCode::NOT_FOUND, format!("no blob {hash}")))?;
    let len = file
        .metadata()
        .await
        .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .len();
    let from = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        None => None,
        Some(range) => Some(parse_range(range, len)?),
    };
    let start = from.unwrap_or(0);
    if start == 0 {
        s.cas.touch(&hash);
    }
    file.seek(std::io::SeekFrom::Start(start))
        .await
        .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let body = Body::from_stream(tokio_util::io::ReaderStream::with_capacity(
        file.take(len - start),
        256 << 10,
    ));
    let mut resp = Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, len - start)
        .header(header::ACCEPT_RANGES, "bytes")
        .header("x-drqueue-blob", hash.hex());
    if from.is_some() {
        resp = resp.status(StatusCode::PARTIAL_CONTENT).header(
            header::CONTENT_RANGE,
            format!("bytes {start}-{}/{len}", len.saturating_sub(1)),
        );
    }
    resp.body(body)
        .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// `bytes=N-` → N (the only form a resuming client sends).
fn parse_range(range: &str, len: u64) -> Result<u64, Response> {
    let bad = || {
        error(
            StatusCode::RANGE_NOT_SATISFIABLE,
            format!("Range {range:?}: send bytes=N- with N at most {len}"),
        )
    };
    let from = range
        .strip_prefix("bytes=")
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse::<u64>().ok())
        .ok_or_else(bad)?;
    if from > len {
        return Err(bad());
    }
    Ok(from)
}

/// `stream`, failing when no chunk comes for `timeout`: an upload may take
/// as long as it needs, but a stalled one must not hold a handler for ever.
fn stall_guard<S>(
    stream: S,
    timeout: std::time::Duration,
) -> impl futures_util::Stream<Item = Result<bytes::Bytes, String>>
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, axum::Error>> + Unpin,
{
    use futures_util::StreamExt;
    futures_util::stream::unfold(Some(stream), move |state| async move {
        let mut stream = state?;
        match tokio::time::timeout(timeout, stream.next()).await {
            Ok(Some(Ok(chunk))) => Some((Ok(chunk), Some(stream))),
            Ok(Some(Err(e))) => Some((Err(e.to_string()), None)),
            Ok(None) => None,
            Err(_) => Some((Err(format!("no data for {timeout:?}")), None)),
        }
    })
}

/// `POST /api/cas/gc` (admins): a garbage collection now.
pub(super) async fn gc(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
) -> ApiResult {
    need(
        &caller,
        Role::Admin,
        "collecting the content store's garbage",
    )?;
    let report = crate::cas_gc::run_once(
        &s.events,
        &s.reader,
        &s.cas,
        std::time::SystemTime::now(),
        s.cas.keep_unused,
    )
    .await
    .map_err(|e| error(StatusCode::SERVICE_UNAVAILABLE, e))?;
    json(report)
}

/// `GET /api/cas`: what the store holds and its disk floor.
pub(super) async fn stats(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
) -> ApiResult {
    let cas = s.cas.clone();
    let mut stats = tokio::task::spawn_blocking(move || cas.stats())
        .await
        .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    stats.your_bytes = usage(&s, &caller.name, None).await?.0;
    json(stats)
}

/// Whether a request is an upload, whose body streams past the size cap
/// that every other request body has.
pub(super) fn is_upload(method: &axum::http::Method, path: &str) -> bool {
    method == axum::http::Method::PUT && path.starts_with("/api/cas/")
}

/// What `owner`'s jobs keep in the store: each distinct file of their
/// uploaded folders once, and the manifests; with the files of `extra` (a
/// manifest about to be submitted) when given. Returns (before, with extra).
async fn usage(
    s: &ApiState,
    owner: &str,
    extra: Option<&Manifest>,
) -> Result<(u64, u64), Response> {
    let manifests = super::ask(s, |reply| crate::events::Request::InputManifests {
        owner: Some(owner.to_string()),
        reply,
    })
    .await?;
    let mut seen = std::collections::HashSet::new();
    let mut bytes = 0u64;
    for m in manifests {
        let Ok(raw) = s.cas.read_small(&m, MAX_MANIFEST_BYTES).await else {
            continue;
        };
        bytes += raw.len() as u64;
        if let Ok(parsed) = Manifest::parse(&raw) {
            for f in parsed.files {
                if seen.insert(f.hash) {
                    bytes += f.size;
                }
            }
        }
    }
    let mut with = bytes;
    for f in extra.map(|m| m.files.as_slice()).unwrap_or_default() {
        if seen.insert(f.hash) {
            with += f.size;
        }
    }
    Ok((bytes, with))
}

fn over_quota(s: &ApiState, owner: &str, would: u64) -> Response {
    error(
        StatusCode::INSUFFICIENT_STORAGE,
        format!(
            "{owner}'s jobs would keep {would} bytes in the content store, over the upload quota of {} bytes: delete finished jobs (drqueue clean), or ask an admin for a larger --cas-quota-mb",
            s.cas.quota_bytes
        ),
    )
}

/// A job naming an uploaded folder is taken only when its manifest is in
/// the store, safe, and every file it lists is there too: an engine must
/// never start a task whose inputs cannot be fetched.
pub(super) async fn check_inputs(s: &ApiState, spec: &JobSpec) -> Result<(), Response> {
    check_manifest(s, spec).await
}

async fn check_manifest(s: &ApiState, spec: &JobSpec) -> Result<(), Response> {
    let Some(manifest) = spec.inputs else {
        return Ok(());
    };
    let refuse = |msg: String| error(StatusCode::BAD_REQUEST, format!("field `inputs`: {msg}"));
    let bytes = s
        .cas
        .read_small(&manifest, MAX_MANIFEST_BYTES)
        .await
        .map_err(|e| {
            refuse(format!(
                "manifest {manifest}: {e}; upload the folder first (drqueue submit --upload DIR)"
            ))
        })?;
    let parsed = Manifest::parse(&bytes).map_err(refuse)?;
    let cas = s.cas.clone();
    let hashes: Vec<BlobHash> = parsed.files.iter().map(|f| f.hash).collect();
    let missing = tokio::task::spawn_blocking(move || cas.missing(&hashes))
        .await
        .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    if let Some(first) = missing.first() {
        let path = parsed
            .files
            .iter()
            .find(|f| f.hash == *first)
            .map_or("?", |f| f.path.as_str());
        return Err(refuse(format!(
            "{} of the manifest's files are not uploaded (the first: {path}, blob {first}); upload the folder again",
            missing.len()
        )));
    }
    if s.cas.quota_bytes > 0 {
        let (_, with) = usage(s, &spec.owner, Some(&parsed)).await?;
        if with > s.cas.quota_bytes {
            return Err(over_quota(s, &spec.owner, with));
        }
    }
    Ok(())
}
