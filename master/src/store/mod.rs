//! Persistence: one [`Store`] trait, with the embedded SQLite backend here and
//! room for others (MongoDB) behind the same seam.
//!
//! The master never writes a row per event. The scheduler marks what changed;
//! the writer thread ([`writer`]) collects those changes for a few
//! milliseconds and commits them as one [`Batch`] (group commit). Results are
//! acknowledged to engines only after the batch holding them is committed.

#[cfg(test)]
mod conformance;
pub mod mongo;
pub mod sqlite;
pub mod writer;

use drqueue_common::model::{
    EngineFacts, EngineId, JobId, JobSpec, JobStatus, Notification, TaskKey, TaskStatus,
};
use drqueue_common::protocol::{AttemptKey, Outcome};
use drqueue_common::Millis;
use serde::{Deserialize, Serialize};

/// A job as stored: its spec and where it stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: JobId,
    pub spec: JobSpec,
    pub status: JobStatus,
    pub submitted_ms: Millis,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_ms: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_ms: Option<Millis>,
    /// Why the job ended as it did, when that is not obvious (e.g. cancelled
    /// because a dependency failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Failed attempts per engine: an engine that failed the job
    /// `blacklist_after` times gets no more of its tasks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub engine_failures: Vec<EngineFailures>,
    /// The job's email notification and where it stands; written in the
    /// same batch as the job's end, so an ended job never lacks it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notification: Option<Notification>,
}

/// How often one engine failed one job. A list, not a map: engine ids are
/// not safe as MongoDB field names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineFailures {
    pub engine: EngineId,
    pub count: u32,
}

/// A task as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    pub job: JobId,
    pub index: u32,
    pub first: i64,
    pub last: i64,
    pub step: i64,
    pub status: TaskStatus,
    /// Attempts started so far; also the number of the latest attempt.
    pub attempts: u32,
    /// Attempts that failed (engine loss does not count).
    pub failures: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<EngineId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_ms: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_ms: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_rss_kb: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_ms: Option<u64>,
}

impl TaskRecord {
    /// The task's attempt history from its stored rows: the completing
    /// attempt is kept in the task itself (halving a healthy farm's writes),
    /// so it is added back here.
    pub fn history(&self, mut stored: Vec<AttemptRecord>) -> Vec<AttemptRecord> {
        let recorded = stored.iter().any(|a| a.attempt.attempt == self.attempts);
        if self.status == TaskStatus::Done && !recorded {
            stored.push(AttemptRecord {
                attempt: AttemptKey {
                    task: TaskKey {
                        job: self.job,
                        index: self.index,
                    },
                    attempt: self.attempts,
                },
                engine: self.engine.clone().unwrap_or_default(),
                ended_ms: self.ended_ms.unwrap_or_default(),
                outcome: Outcome {
                    exit_code: self.exit_code,
                    cpu_ms: self.cpu_ms.unwrap_or_default(),
                    peak_rss_kb: self.peak_rss_kb.unwrap_or_default(),
                    wall_ms: self
                        .ended_ms
                        .zip(self.started_ms)
                        .map(|(e, s)| e.saturating_sub(s))
                        .unwrap_or_default(),
                    ..Default::default()
                },
                counted: true,
            });
        }
        stored
    }

    /// The task as the API shows it.
    pub fn view(self) -> drqueue_common::model::TaskView {
        drqueue_common::model::TaskView {
            index: self.index,
            first: self.first,
            last: self.last,
            step: self.step,
            status: self.status,
            attempts: self.attempts,
            engine: self.engine,
            started_ms: self.started_ms,
            ended_ms: self.ended_ms,
            exit_code: self.exit_code,
            peak_rss_kb: self.peak_rss_kb,
            cpu_ms: self.cpu_ms,
        }
    }

    pub fn key(&self) -> TaskKey {
        TaskKey {
            job: self.job,
            index: self.index,
        }
    }
}

/// An engine ("slave") as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngineRecord {
    pub id: EngineId,
    pub facts: EngineFacts,
    pub slots: u32,
    pub hwm: u32,
    /// Was it online when last written? A restarted master waits for the
    /// engines that were online to come back before it dispatches.
    pub online: bool,
    pub disabled: bool,
    pub last_seen_ms: Millis,
    pub tasks_done: u64,
    pub tasks_failed: u64,
    /// Failed attempts since its last success.
    #[serde(default)]
    pub failures_in_row: u32,
    /// Why it is sick, if it is: it gets no work until enabled or until it
    /// passes a check task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sick: Option<String>,
}

/// One finished attempt, kept as history (including results that arrive for
/// attempts the master had already given up on).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptRecord {
    pub attempt: AttemptKey,
    pub engine: EngineId,
    pub ended_ms: Millis,
    pub outcome: Outcome,
    /// False when the result was for an attempt the master had replaced.
    pub counted: bool,
}

/// A pool and the engines in it (written whenever an engine's pools change).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolRecord {
    pub name: String,
    pub engines: Vec<EngineId>,
}

/// A limit: a named count of tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitRecord {
    pub name: String,
    pub count: u32,
}

/// A chunk of an attempt's log at a byte offset. Chunks are idempotent: a
/// chunk that starts before the stored end is trimmed, so an engine may
/// re-send a whole log after a reconnect.
#[derive(Debug, Clone, PartialEq)]
pub struct LogChunk {
    pub attempt: AttemptKey,
    pub offset: u64,
    pub data: Vec<u8>,
}

/// Everything to commit at once.
#[derive(Debug, Default)]
pub struct Batch {
    pub jobs: Vec<JobRecord>,
    /// Tasks to insert or replace.
    pub tasks: Vec<TaskRecord>,
    pub deleted_jobs: Vec<JobId>,
    pub engines: Vec<EngineRecord>,
    pub attempts: Vec<AttemptRecord>,
    pub logs: Vec<LogChunk>,
    pub next_job_id: Option<JobId>,
    /// Every pool with its engines, replacing what is stored.
    pub pools: Option<Vec<PoolRecord>>,
    /// Limits to insert or replace.
    pub limits: Vec<LimitRecord>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
            && self.tasks.is_empty()
            && self.deleted_jobs.is_empty()
            && self.engines.is_empty()
            && self.attempts.is_empty()
            && self.logs.is_empty()
            && self.next_job_id.is_none()
            && self.pools.is_none()
            && self.limits.is_empty()
    }

    /// How many records it writes.
    pub fn len(&self) -> usize {
        self.jobs.len()
            + self.tasks.len()
            + self.deleted_jobs.len()
            + self.engines.len()
            + self.attempts.len()
            + self.logs.len()
    }
}

/// What a master loads at start.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub jobs: Vec<JobRecord>,
    pub tasks: Vec<TaskRecord>,
    pub engines: Vec<EngineRecord>,
    pub pools: Vec<PoolRecord>,
    pub limits: Vec<LimitRecord>,
    pub next_job_id: JobId,
}

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

/// The seam between the master and its database. Calls come from one writer
/// thread (and a reader for logs), so implementations are plain blocking code.
pub trait Store: Send {
    /// Loads everything the scheduler needs. Records that do not decode are
    /// reported (with their ids) and skipped, never fatal.
    fn load(&mut self) -> StoreResult<Snapshot>;
    /// Commits a batch atomically.
    fn commit(&mut self, batch: &Batch) -> StoreResult<()>;
    /// The log of one attempt from `offset`.
    fn read_log(&mut self, attempt: AttemptKey, offset: u64) -> StoreResult<Vec<u8>>;
    /// The attempts recorded for one task, oldest first.
    fn attempts(&mut self, task: TaskKey) -> StoreResult<Vec<AttemptRecord>>;
    /// Store round trips made so far (for the benchmark's per-task figure).
    fn round_trips(&self) -> u64;
    /// Takes or renews the right to dispatch from this store until
    /// `now + ttl_ms`, so that two masters never run the same farm.
    fn acquire_lease(&mut self, owner: &str, now: Millis, ttl_ms: u64) -> StoreResult<Lease>;
    /// Whether a held lease must be renewed (a shared database), or lasts as
    /// long as the store is open (a local lock).
    fn lease_needs_renewal(&self) -> bool;
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(
            std::env::var_os("CI").is_none(),
            "DRQUEUE_TEST_MONGO_URI is not set: scripts/test starts a MongoDB test server and sets it"
        );
        eprintln!("skipped: no MongoDB (set DRQUEUE_TEST_MONGO_URI; scripts/test starts one)");
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
                    task: TaskKey { job: 1, index: 0 },
                    attempt: 1,
                },
                engine: "e".into(),
                ended_ms: 1,
                outcome: Outcome::default(),
                counted: false,
            }],
            logs: vec![LogChunk {
                attempt: AttemptKey {
                    task: TaskKey { job: 1, index: 0 },
                    attempt: 1,
                },
                offset: 0,
                data: vec![1],
            }],
            next_job_id: Some(2),
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
