//! The store writer: one thread that owns the [`Store`] and commits in groups.
//!
//! Whatever arrives while a commit is running is merged into the next one, so
//! under load one transaction carries thousands of changes and at rest each
//! change is committed at once. Work that must wait for durability (acks to
//! engines, replies to a submit) rides along and runs after the commit. A
//! failed commit is retried with backoff, never dropped.

use super::{Batch, Store, StoreResult};
use crate::users::UserChange;
use drqueue_common::users::AuditEntry;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Something to do once the batch it came with is committed.
pub type PostCommit = Box<dyn FnOnce() + Send>;

pub enum WriterMsg {
    Commit {
        batch: Batch,
        after: Vec<PostCommit>,
    },
    /// Answered once everything sent before it is committed.
    Flush(oneshot::Sender<()>),
    /// Commit what is queued, then end the thread (the master is stopping;
    /// the API and the mailer may still hold senders).
    Stop,
    /// A change an admin made to the users; answered once stored.
    User {
        change: UserChange,
        reply: oneshot::Sender<StoreResult<()>>,
    },
    /// One entry for the audit trail, stored with the next commit.
    Audit(AuditEntry),
}

/// Figures the benchmark and `GET /metrics` read.
#[derive(Debug)]
pub struct WriterStats {
    pub commits: AtomicU64,
    pub records: AtomicU64,
    pub round_trips: AtomicU64,
    /// Each commit's duration (seconds) and size (records).
    pub commit_seconds: prometheus::Histogram,
    pub commit_records: prometheus::Histogram,
}

impl Default for WriterStats {
    fn default() -> WriterStats {
        let (commit_seconds, commit_records) = crate::metrics::commit_histograms();
        WriterStats {
            commits: AtomicU64::new(0),
            records: AtomicU64::new(0),
            round_trips: AtomicU64::new(0),
            commit_seconds,
            commit_records,
        }
    }
}

/// Merges at most this many queued messages into one commit, to bound latency.
const MAX_MERGE: usize = 4096;

/// When commits come back to back (within BUSY), wait LINGER for more work to merge:
/// each commit is an fsync, and under load fewer, larger ones cost less CPU.
/// An idle master commits at once.
const LINGER: Duration = Duration::from_millis(4);
const BUSY: Duration = Duration::from_millis(20);

pub fn spawn(
    mut store: Box<dyn Store>,
    mut rx: mpsc::UnboundedReceiver<WriterMsg>,
    stats: Arc<WriterStats>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("drqueue-store".into())
        .spawn(move || {
            let mut last_commit = std::time::Instant::now() - BUSY;
            while let Some(first) = rx.blocking_recv() {
                if last_commit.elapsed() < BUSY {
                    std::thread::sleep(LINGER);
                }
                let mut batch = Batch::default();
                let mut after: Vec<PostCommit> = Vec::new();
                let mut reads = Vec::new();
                let mut audit = Vec::new();
                let mut stop = false;
                let mut take = |msg: WriterMsg, batch: &mut Batch| match msg {
                    WriterMsg::Stop => stop = true,
                    WriterMsg::Commit { batch: b, after: a } => {
                        batch.append(b);
                        after.extend(a);
                    }
                    WriterMsg::Audit(entry) => audit.push(entry),
                    other => reads.push(other),
                };
                take(first, &mut batch);
                let mut n = 1;
                while n < MAX_MERGE {
                    match rx.try_recv() {
                        Ok(msg) => take(msg, &mut batch),
                        Err(_) => break,
                    }
                    n += 1;
                }
                if !audit.is_empty() {
                    until_done(&format!("{} audit entries", audit.len()), || {
                        store.append_audit(&audit)
                    });
                }
                if !batch.is_empty() {
                    let what = format!("commit of {} records", batch.len());
                    let started = std::time::Instant::now();
                    until_done(&what, || store.commit(&batch));
                    stats
                        .commit_seconds
                        .observe(started.elapsed().as_secs_f64());
                    stats.commit_records.observe(batch.len() as f64);
                    stats.commits.fetch_add(1, Ordering::Relaxed);
                    stats
                        .records
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    stats
                        .round_trips
                        .store(store.round_trips(), Ordering::Relaxed);
                    last_commit = std::time::Instant::now();
                }
                for f in after {
                    f();
                }
                for r in reads {
                    match r {
                        WriterMsg::Flush(reply) => {
                            let _ = reply.send(());
                        }
                        WriterMsg::User { change, reply } => {
                            let _ = reply.send(store.change_user(&change));
                        }
                        WriterMsg::Commit { .. } | WriterMsg::Audit(_) | WriterMsg::Stop => {
                            unreachable!("commits, audit entries and stops are taken above")
                        }
                    }
                }
                if stop {
                    return;
                }
            }
        })
}

/// Writes (`what`), retrying with backoff while the store is unavailable.
/// The master keeps running meanwhile; acks wait, so engines keep their results.
fn until_done(what: &str, mut write: impl FnMut() -> StoreResult<()>) {
    let mut delay = Duration::from_millis(50);
    let mut failures = 0u32;
    loop {
        match write() {
            Ok(()) => {
                if failures > 0 {
                    tracing::info!(failures, "store is writable again; caught up");
                }
                return;
            }
            Err(e) => {
                failures += 1;
                tracing::error!(
                    attempt = failures,
                    "{what} failed, retrying in {delay:?}: {e}"
                );
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}
