//! Persistence: one [`Store`] trait, with the embedded SQLite backend here and
//! room for others (MongoDB) behind the same seam.
//!
//! The master never writes a row per event. The scheduler marks what changed;
//! the writer thread ([`writer`]) collects those changes for a few
//! milliseconds and commits them as one [`Batch`] (group commit). Results are
//! acknowledged to engines only after the batch holding them is committed.

#[cfg(test)]
mod conformance;
mod log_window;
pub mod mongo;
pub mod reader;
pub mod sqlite;
pub mod writer;

use crate::users::{UserChange, UserRecord};
use drqueue_common::model::{JobId, TaskKey};
use drqueue_common::protocol::AttemptKey;
use drqueue_common::users::{AuditEntry, AuditQuery};
use drqueue_common::Millis;

// What is stored is the scheduler's vocabulary: its records live beside it.
pub use drqueue_scheduler::records::{
    AttemptRecord, Batch, EngineFailures, EngineRecord, JobRecord, LimitRecord, LogChunk,
    PoolRecord, Snapshot, TaskRecord, ThumbnailRecord, UsageRecord, MAX_THUMBNAILS_PER_JOB,
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store: {0}")]
    Backend(String),
    #[error("store schema version {found} is newer than this master understands ({supported}): upgrade drqueue-master")]
    SchemaTooNew { found: u32, supported: u32 },
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Who may be the active master of a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lease {
    /// The caller holds it (until the time it asked for).
    Held,
    /// Another master holds it until `until` (0: for as long as it runs).
    Taken { owner: String, until: Millis },
}

/// Reads that run beside commits, on a handle of their own
/// ([`Store::reader`]): a log being followed never delays a commit.
pub trait StoreReader: Send {
    /// The log of one attempt from `offset`: at most [`LOG_WINDOW`] bytes,
    /// found by seeking to the chunk that holds `offset`.
    fn read_log(&mut self, attempt: AttemptKey, offset: u64) -> StoreResult<Vec<u8>>;
    /// The attempts recorded for one task, oldest first.
    fn attempts(&mut self, task: TaskKey) -> StoreResult<Vec<AttemptRecord>>;
    /// Audit entries matching `query`, newest first, at most `limit`.
    fn audit(&mut self, query: &AuditQuery, limit: usize) -> StoreResult<Vec<AuditEntry>>;
    /// A frame's thumbnail (PNG), or the job's newest when `frame` is None.
    fn thumbnail(&mut self, job: JobId, frame: Option<i64>) -> StoreResult<Option<Vec<u8>>>;
    /// The frames of a job that have a thumbnail, by frame, at most `limit`.
    fn thumbnail_frames(&mut self, job: JobId, limit: usize) -> StoreResult<Vec<i64>>;
    /// Every blob a recorded attempt collected (`--collect`): what the
    /// content store's garbage collection must keep. Attempts go with their
    /// job, so these are all live jobs'.
    fn collected_blobs(&mut self) -> StoreResult<Vec<drqueue_common::cas::BlobHash>>;
    /// Every usage record of an attempt that ended at or after `since_ms`,
    /// oldest first, handed to `visit` one at a time (a farm's history is
    /// never held at once). Deleted jobs' records are among them.
    fn usage(&mut self, since_ms: Millis, visit: &mut dyn FnMut(UsageRecord)) -> StoreResult<()>;
}

/// The most log bytes one read returns; a reader asks again from where it
/// stopped.
pub const LOG_WINDOW: usize = 1 << 20;

/// The seam between the master and its database. Calls come from one writer
/// thread (and a reader thread, through [`Store::reader`]), so
/// implementations are plain blocking code.
pub trait Store: StoreReader {
    /// Another handle on the same store, for reads beside the writer.
    fn reader(&self) -> StoreResult<Box<dyn StoreReader>>;
    /// Loads everything the scheduler needs. Records that do not decode are
    /// reported (with their ids) and skipped, never fatal.
    fn load(&mut self) -> StoreResult<Snapshot>;
    /// Commits a batch atomically.
    fn commit(&mut self, batch: &Batch) -> StoreResult<()>;
    /// Store round trips made so far (for the benchmark's per-task figure).
    fn round_trips(&self) -> u64;
    /// Takes or renews the right to dispatch from this store until
    /// `now + ttl_ms`, so that two masters never run the same farm.
    fn acquire_lease(&mut self, owner: &str, now: Millis, ttl_ms: u64) -> StoreResult<Lease>;
    /// Whether a held lease must be renewed (a shared database), or lasts as
    /// long as the store is open (a local lock).
    fn lease_needs_renewal(&self) -> bool;
    /// The farm's users (never the `--token-file` admin, who is not stored).
    fn users(&mut self) -> StoreResult<Vec<UserRecord>>;
    /// Stores one change an admin made to the users.
    fn change_user(&mut self, change: &UserChange) -> StoreResult<()>;
    /// Appends to the audit trail, numbering the entries after the last.
    /// Entries are never changed or removed through the store's callers.
    fn append_audit(&mut self, entries: &[AuditEntry]) -> StoreResult<()>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use drqueue_common::model::JobId;
    use drqueue_common::protocol::Outcome;

    fn scratch(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("drqueue-store-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    /// The test MongoDB's URI with its database replaced by `db`.
    fn mongo_uri(db: &str) -> Option<String> {
        let uri = std::env::var("DRQUEUE_TEST_MONGO_URI")
            .ok()
            .filter(|u| !u.is_empty())?;
        let (base, query) = uri.split_once('?').unwrap_or((&uri, ""));
        let hosts = base
            .trim_start_matches("mongodb://")
            .split('/')
            .next()
            .unwrap_or("");
        Some(format!("mongodb://{hosts}/{db}?{query}"))
    }

    fn skipped() {
        drqueue_common::test_skip::skip(
            "no MongoDB (set DRQUEUE_TEST_MONGO_URI; scripts/test starts one)",
        );
    }

    #[test]
    fn sqlite_store_conforms() {
        let base = scratch("conformance");
        conformance::run_all(&|name| {
            Box::new(sqlite::SqliteStore::open(&base.join(name)).expect("open"))
        });
    }

    #[test]
    fn mongo_store_conforms() {
        let run = format!("t{}x{}", std::process::id(), drqueue_common::now_millis());
        if mongo_uri("x").is_none() {
            return skipped();
        }
        conformance::run_all(&|name| {
            let uri = mongo_uri(&format!("{run}-{name}")).expect("uri");
            Box::new(mongo::MongoStore::open(&uri).expect("open"))
        });
    }

    #[test]
    fn sqlite_skips_records_that_do_not_decode() {
        let dir = scratch("bad");
        let mut s = sqlite::SqliteStore::open(&dir).expect("open");
        s.commit(&Batch::default()).expect("commit");
        let conn = rusqlite::Connection::open(dir.join("drqueue.sqlite3")).expect("open");
        conn.execute(
            "INSERT INTO jobs(id, status, data) VALUES (7, 'queued', '{not json')",
            [],
        )
        .expect("insert");
        conn.execute(
            "INSERT INTO tasks(job, idx, first, last, step, status, attempts, failures) VALUES (7, 0, 1, 1, 1, 'exploded', 0, 0)",
            [],
        )
        .expect("insert");
        let snap = s.load().expect("load survives bad rows");
        assert!(snap.jobs.is_empty() && snap.tasks.is_empty());
    }

    #[test]
    fn mongo_stores_no_nulls() {
        use mongodb::bson::{doc, Bson, Document};
        fn has_null(b: &Bson) -> bool {
            match b {
                Bson::Null => true,
                Bson::Document(d) => d.values().any(has_null),
                Bson::Array(a) => a.iter().any(has_null),
                _ => false,
            }
        }
        let db = format!(
            "nulls{}x{}",
            std::process::id(),
            drqueue_common::now_millis()
        );
        let Some(uri) = mongo_uri(&db) else {
            return skipped();
        };
        let mut s = mongo::MongoStore::open(&uri).expect("open");
        // Records full of absent optional values.
        s.commit(&Batch {
            jobs: vec![conformance::job(1)],
            tasks: vec![conformance::task(1, 0)],
            engines: vec![conformance::engine("e")],
            attempts: vec![AttemptRecord {
                attempt: AttemptKey {
                    task: TaskKey {
                        job: JobId(1),
                        index: 0,
                    },
                    attempt: 1,
                },
                engine: "e".into(),
                ended_ms: 1,
                outcome: Outcome::default(),
                counted: false,
            }],
            logs: vec![LogChunk {
                attempt: AttemptKey {
                    task: TaskKey {
                        job: JobId(1),
                        index: 0,
                    },
                    attempt: 1,
                },
                offset: 0,
                data: vec![1],
            }],
            next_job_id: Some(JobId(2)),
            pools: Some(vec![PoolRecord {
                name: "default".into(),
                engines: vec!["e".into()],
            }]),
            ..Batch::default()
        })
        .expect("commit");
        let raw = mongodb::sync::Client::with_uri_str(&uri)
            .expect("client")
            .database(&db);
        let mut seen = 0;
        for coll in [
            "jobs", "tasks", "engines", "attempts", "logs", "pools", "meta",
        ] {
            for d in raw
                .collection::<Document>(coll)
                .find(doc! {})
                .run()
                .expect("find")
            {
                let d = d.expect("doc");
                assert!(
                    !has_null(&Bson::Document(d.clone())),
                    "{coll} stores a null: {d}"
                );
                seen += 1;
            }
        }
        assert!(seen >= 7, "every collection was written");
    }

    #[test]
    fn mongo_skips_documents_that_do_not_decode() {
        let db = format!("bad{}x{}", std::process::id(), drqueue_common::now_millis());
        let Some(uri) = mongo_uri(&db) else {
            return skipped();
        };
        let mut s = mongo::MongoStore::open(&uri).expect("open");
        let client = mongodb::sync::Client::with_uri_str(&uri).expect("client");
        let raw = client.database(&db);
        use mongodb::bson::doc;
        raw.collection::<mongodb::bson::Document>("jobs")
            .insert_one(doc! {"_id": 9i64, "status": "queued", "job": {"id": "nine"}})
            .run()
            .expect("insert");
        raw.collection::<mongodb::bson::Document>("tasks")
            .insert_one(doc! {"_id": "9.0", "job": 9i64, "index": "zero"})
            .run()
            .expect("insert");
        let snap = s.load().expect("load survives bad documents");
        assert!(snap.jobs.is_empty() && snap.tasks.is_empty());
    }
}
