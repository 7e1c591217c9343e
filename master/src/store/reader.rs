//! The store reader: a thread with its own handle on the store
//! ([`Store::reader`]) that answers the API's reads (logs, attempt
//! histories, the audit trail, thumbnails, usage), so a reader never waits behind a commit and
//! a commit never waits behind a reader.

use super::{AttemptRecord, StoreReader, StoreResult, TaskRecord};
use drqueue_common::model::{JobId, TaskKey};
use drqueue_common::protocol::AttemptKey;
use drqueue_common::usage::{UsageQuery, UsageReport, UsageTally};
use drqueue_common::users::{AuditEntry, AuditQuery};
use tokio::sync::{mpsc, oneshot};

pub enum ReadMsg {
    /// Every blob a recorded attempt collected (for the content store's
    /// garbage collection).
    CollectedBlobs {
        reply: oneshot::Sender<StoreResult<Vec<drqueue_common::cas::BlobHash>>>,
    },
    /// A window of an attempt's log from `offset`.
    Log {
        attempt: AttemptKey,
        offset: u64,
        reply: oneshot::Sender<StoreResult<Vec<u8>>>,
    },
    /// A task's whole attempt history: the stored rows plus the completing
    /// attempt, which lives in the task's own record.
    Attempts {
        task: TaskRecord,
        reply: oneshot::Sender<StoreResult<Vec<AttemptRecord>>>,
    },
    Audit {
        query: AuditQuery,
        limit: usize,
        reply: oneshot::Sender<StoreResult<Vec<AuditEntry>>>,
    },
    /// The frames of a job with a thumbnail.
    ThumbnailFrames {
        job: JobId,
        limit: usize,
        reply: oneshot::Sender<StoreResult<Vec<i64>>>,
    },
    /// Usage from a time on, summed by owner, pool, job or day.
    Usage {
        query: UsageQuery,
        reply: oneshot::Sender<StoreResult<UsageReport>>,
    },
    /// A frame's thumbnail, or the job's newest.
    Thumbnail {
        job: JobId,
        frame: Option<i64>,
        reply: oneshot::Sender<StoreResult<Option<Vec<u8>>>>,
    },
}

/// Starts the reader thread; it ends when every sender is gone.
pub fn spawn(
    mut store: Box<dyn StoreReader>,
    mut rx: mpsc::UnboundedReceiver<ReadMsg>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("drqueue-store-reader".into())
        .spawn(move || {
            while let Some(msg) = rx.blocking_recv() {
                match msg {
                    ReadMsg::Log {
                        attempt,
                        offset,
                        reply,
                    } => {
                        let _ = reply.send(store.read_log(attempt, offset));
                    }
                    ReadMsg::Attempts { task, reply } => {
                        let stored = store.attempts(TaskKey {
                            job: task.job,
                            index: task.index,
                        });
                        let _ = reply.send(stored.map(|rows| task.history(rows)));
                    }
                    ReadMsg::Audit {
                        query,
                        limit,
                        reply,
                    } => {
                        let _ = reply.send(store.audit(&query, limit));
                    }
                    ReadMsg::ThumbnailFrames { job, limit, reply } => {
                        let _ = reply.send(store.thumbnail_frames(job, limit));
                    }
                    ReadMsg::Thumbnail { job, frame, reply } => {
                        let _ = reply.send(store.thumbnail(job, frame));
                    }
                    ReadMsg::Usage { query, reply } => {
                        let mut tally = UsageTally::new(query.by, query.since_ms);
                        let read = store.usage(query.since_ms.unwrap_or(0), &mut |u| tally.add(&u));
                        let _ = reply.send(read.map(|()| tally.report()));
                    }
                    ReadMsg::CollectedBlobs { reply } => {
                        let _ = reply.send(store.collected_blobs());
                    }
                }
            }
        })
}
