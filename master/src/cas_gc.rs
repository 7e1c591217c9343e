//! The content store's garbage collection: a blob that no live job names
//! (its uploaded folder's manifest and files, or an attempt's collected
//! outputs) and that nobody used for `--cas-keep-days` is removed. Runs
//! every hour, and on `POST /api/cas/gc`.

use crate::cas::{BlobDir, GcReport};
use crate::events::{Event, Request};
use crate::store::reader::ReadMsg;
use drqueue_common::cas::{BlobHash, Manifest, MAX_MANIFEST_BYTES};
use std::collections::HashSet;
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, oneshot};

/// How often the collection runs on its own.
const EVERY: Duration = Duration::from_secs(3600);

/// One collection: what live jobs name is kept, the rest goes once unused
/// for `unused_for` before `now`.
pub async fn run_once(
    events: &mpsc::UnboundedSender<Event>,
    reader: &mpsc::UnboundedSender<ReadMsg>,
    cas: &BlobDir,
    now: SystemTime,
    unused_for: Duration,
) -> Result<GcReport, String> {
    let stopping = || "the master is stopping".to_string();
    let (tx, rx) = oneshot::channel();
    events
        .send(Event::Request(Request::InputManifests {
            owner: None,
            reply: tx,
        }))
        .map_err(|_| stopping())?;
    let manifests = rx.await.map_err(|_| stopping())?;
    let (tx, rx) = oneshot::channel();
    reader
        .send(ReadMsg::CollectedBlobs { reply: tx })
        .map_err(|_| stopping())?;
    let collected = rx
        .await
        .map_err(|_| stopping())?
        .map_err(|e| format!("cannot read the collected outputs: {e}"))?;
    let mut keep: HashSet<BlobHash> = collected.into_iter().collect();
    for m in manifests {
        keep.insert(m);
        // A manifest that cannot be read keeps only itself: its files are
        // no use without it, and its job fails with a clear error anyway.
        match cas.read_small(&m, MAX_MANIFEST_BYTES).await {
            Ok(bytes) => match Manifest::parse(&bytes) {
                Ok(parsed) => keep.extend(parsed.files.iter().map(|f| f.hash)),
                Err(e) => tracing::warn!(manifest = %m, "garbage collection: {e}"),
            },
            Err(e) => tracing::warn!(manifest = %m, "garbage collection: cannot read it: {e}"),
        }
    }
    let cas = cas.clone();
    let report = tokio::task::spawn_blocking(move || cas.collect_garbage(&keep, now, unused_for))
        .await
        .map_err(|e| e.to_string())?;
    if report.removed_blobs > 0 {
        tracing::info!(
            removed = report.removed_blobs,
            bytes = report.removed_bytes,
            kept = report.kept_blobs,
            "content store: removed blobs no live job names"
        );
    }
    Ok(report)
}

/// Collects every hour while the master runs.
pub fn spawn(
    events: mpsc::UnboundedSender<Event>,
    reader: mpsc::UnboundedSender<ReadMsg>,
    cas: BlobDir,
    unused_for: Duration,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + EVERY, EVERY);
        loop {
            tick.tick().await;
            if let Err(e) = run_once(&events, &reader, &cas, SystemTime::now(), unused_for).await {
                tracing::warn!("content store garbage collection: {e}");
                if events.is_closed() {
                    return;
                }
            }
        }
    });
}
