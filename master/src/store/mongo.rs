//! The MongoDB store, for real farms: `--db mongodb://HOST:PORT/DBNAME`.
//!
//! Collections: `jobs`, `tasks`, `engines` (the slave info), `attempts`,
//! `logs`, `thumbnails`, `usage` (kept when jobs go), `users`, `audit` and `meta` (schema version, next job id, audit counter). Documents are typed serde
//! structs written whole (replacements and inserts, never `$set`), statuses are
//! strings, and nulls are never stored. A batch is a handful of commands, not a
//! round trip per record: upserts go through one `update` command with many
//! statements (which every server version has), inserts through `insert_many`.
//! Every write is idempotent, so a batch that failed half-way is simply sent
//! again; no transactions are needed (a standalone mongod has none).

use super::*;
use drqueue_common::model::{EngineId, JobId};
use drqueue_common::protocol::Outcome;
use mongodb::bson::{self, doc, Binary, Bson, Document};
use mongodb::sync::{Client, Collection, Database};
use mongodb::IndexModel;
use serde::{Deserialize, Serialize};

mod access;
mod reads;
mod thumbnails;
mod usage;

/// Bumped when documents change shape.
/// 2: a job's tasks still in their start state may have no documents
/// (`JobRecord::released`), which a master of version 1 would misread; the
/// version is written with the next job id, so before any such job.
/// 3: a cancelled job's tasks may keep rows of before the cancel (it
/// writes only the job's record), which a master of version 2 would show as
/// unfinished.
pub const SCHEMA_VERSION: u32 = 3;

/// Statements per `update` command: well under the server's 100,000 and 48 MB.
const CHUNK: usize = 5_000;

pub struct MongoStore {
    db: Database,
    round_trips: u64,
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn task_id(job: JobId, index: u32) -> String {
    format!("{job}.{index}")
}

fn attempt_doc(a: &AttemptRecord) -> AttemptDoc {
    let k = a.attempt;
    AttemptDoc {
        id: format!("{}.{}", task_id(k.task.job, k.task.index), k.attempt),
        job: k.task.job.0 as i64,
        index: k.task.index,
        attempt: k.attempt,
        engine: a.engine.clone(),
        ended_ms: a.ended_ms,
        counted: a.counted,
        outcome: OutcomeDoc::from(&a.outcome),
    }
}

#[derive(Serialize, Deserialize)]
struct JobDoc {
    #[serde(rename = "_id")]
    id: i64,
    status: String,
    job: JobRecord,
}

#[derive(Serialize, Deserialize)]
struct TaskDoc {
    #[serde(rename = "_id")]
    id: String,
    #[serde(flatten)]
    task: TaskRecord,
}

#[derive(Serialize, Deserialize)]
struct EngineDoc {
    #[serde(rename = "_id")]
    id: EngineId,
    engine: EngineRecord,
}

#[derive(Serialize, Deserialize)]
struct AttemptDoc {
    #[serde(rename = "_id")]
    id: String,
    job: i64,
    index: u32,
    attempt: u32,
    engine: EngineId,
    ended_ms: u64,
    counted: bool,
    outcome: OutcomeDoc,
}

/// [`Outcome`] as a document: absent values are left out, not stored as null.
/// (The protocol type cannot skip fields: its wire format is not self-describing.)
#[derive(Serialize, Deserialize)]
struct OutcomeDoc {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    signal: Option<i32>,
    wall_ms: u64,
    cpu_ms: u64,
    peak_rss_kb: u64,
    timed_out: bool,
    cancelled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    log_bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    signature: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fatal: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    outputs: Vec<drqueue_common::protocol::OutputFile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    progress: Option<f32>,
}

impl From<&Outcome> for OutcomeDoc {
    fn from(o: &Outcome) -> Self {
        OutcomeDoc {
            exit_code: o.exit_code,
            signal: o.signal,
            wall_ms: o.wall_ms,
            cpu_ms: o.cpu_ms,
            peak_rss_kb: o.peak_rss_kb,
            timed_out: o.timed_out,
            cancelled: o.cancelled,
            error: o.error.clone(),
            log_bytes: o.log_bytes,
            signature: o.signature.clone(),
            fatal: o.fatal.clone(),
            outputs: o.outputs.clone(),
            progress: o.progress,
        }
    }
}

impl From<OutcomeDoc> for Outcome {
    fn from(o: OutcomeDoc) -> Self {
        Outcome {
            exit_code: o.exit_code,
            signal: o.signal,
            wall_ms: o.wall_ms,
            cpu_ms: o.cpu_ms,
            peak_rss_kb: o.peak_rss_kb,
            timed_out: o.timed_out,
            cancelled: o.cancelled,
            error: o.error,
            log_bytes: o.log_bytes,
            signature: o.signature,
            fatal: o.fatal,
            outputs: o.outputs,
            progress: o.progress,
            // Kept apart from the record (see the thumbnails collection).
            thumbnails: Vec::new(),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct LimitDoc {
    #[serde(rename = "_id")]
    name: String,
    count: u32,
}

#[derive(Serialize, Deserialize)]
struct PoolDoc {
    #[serde(rename = "_id")]
    name: String,
    engines: Vec<EngineId>,
}

#[derive(Serialize, Deserialize)]
struct LogDoc {
    #[serde(rename = "_id")]
    id: String,
    job: i64,
    index: u32,
    attempt: u32,
    offset: i64,
    data: Binary,
}

#[derive(Serialize, Deserialize)]
struct MetaDoc {
    #[serde(rename = "_id")]
    id: String,
    schema_version: u32,
    next_job_id: i64,
}

impl MongoStore {
    /// Connects to `uri` and uses its database (default `drqueue`).
    pub fn open(uri: &str) -> StoreResult<MongoStore> {
        let client = Client::with_uri_str(uri)
            .map_err(|e| StoreError::Backend(format!("cannot use MongoDB URI: {e}")))?;
        let name = client
            .default_database()
            .map(|d| d.name().to_string())
            .unwrap_or_else(|| "drqueue".to_string());
        let db = client.database(&name);
        let mut store = MongoStore { db, round_trips: 0 };
        store.prepare()?;
        Ok(store)
    }

    fn coll(&self, name: &str) -> Collection<Document> {
        self.db.collection(name)
    }

    /// Checks the schema version and creates the indexes the master's queries use.
    fn prepare(&mut self) -> StoreResult<()> {
        let meta = self
            .coll("meta")
            .find_one(doc! {"_id": "meta"})
            .run()
            .map_err(|e| {
                StoreError::Backend(format!(
                    "cannot reach MongoDB: {e} (is the server up and the URI right?)"
                ))
            })?;
        if let Some(v) = meta
            .as_ref()
            .and_then(|m| m.get("schema_version"))
            .and_then(bson_u64)
        {
            if v > SCHEMA_VERSION as u64 {
                return Err(StoreError::SchemaTooNew {
                    found: v as u32,
                    supported: SCHEMA_VERSION,
                });
            }
        }
        let indexes: [(&str, Document); 7] = [
            ("jobs", doc! {"status": 1}),
            (usage::COLLECTION, doc! {"ended_ms": 1}),
            ("audit", doc! {"user": 1, "seq": -1}),
            ("audit", doc! {"job": 1, "seq": -1}),
            ("tasks", doc! {"job": 1, "index": 1}),
            ("attempts", doc! {"job": 1, "index": 1, "attempt": 1}),
            (
                "logs",
                doc! {"job": 1, "index": 1, "attempt": 1, "offset": 1},
            ),
        ];
        for (coll, keys) in indexes {
            self.coll(coll)
                .create_index(IndexModel::builder().keys(keys).build())
                .run()
                .map_err(err)?;
            self.round_trips += 1;
        }
        Ok(())
    }

    /// Upserts whole documents by `_id` with as few commands as possible.
    fn upsert(&mut self, coll: &str, docs: Vec<Document>) -> StoreResult<()> {
        for chunk in docs.chunks(CHUNK) {
            let updates: Vec<Bson> = chunk
                .iter()
                .map(|d| {
                    let id = d.get("_id").cloned().unwrap_or(Bson::Null);
                    Bson::Document(doc! {"q": {"_id": id}, "u": d.clone(), "upsert": true})
                })
                .collect();
            let reply = self
                .db
                .run_command(doc! {"update": coll, "updates": updates, "ordered": false})
                .run()
                .map_err(err)?;
            self.round_trips += 1;
            if let Ok(errors) = reply.get_array("writeErrors") {
                if !errors.is_empty() {
                    return Err(StoreError::Backend(format!(
                        "{coll}: {} write errors, first: {:?}",
                        errors.len(),
                        errors[0]
                    )));
                }
            }
        }
        Ok(())
    }

    /// Inserts documents, ignoring ones already there (a re-sent chunk).
    fn insert_new(&mut self, coll: &str, docs: Vec<Document>) -> StoreResult<()> {
        for chunk in docs.chunks(CHUNK) {
            let reply = self
                .db
                .run_command(doc! {"insert": coll, "documents": chunk.to_vec(), "ordered": false})
                .run()
                .map_err(err)?;
            self.round_trips += 1;
            if let Ok(errors) = reply.get_array("writeErrors") {
                let real: Vec<&Bson> = errors
                    .iter()
                    .filter(|e| {
                        e.as_document()
                            .and_then(|d| d.get("code"))
                            .and_then(bson_u64)
                            != Some(11000)
                    })
                    .collect();
                if let Some(first) = real.first() {
                    return Err(StoreError::Backend(format!(
                        "{coll}: {} write errors, first: {first:?}",
                        real.len()
                    )));
                }
            }
        }
        Ok(())
    }

    /// Every document of a collection matching `filter`, decoded one by one:
    /// one that does not decode is reported with its id and skipped.
    fn load_all<T: serde::de::DeserializeOwned>(
        &mut self,
        coll: &str,
        filter: Document,
        sort: Document,
    ) -> StoreResult<Vec<T>> {
        let cursor = self.coll(coll).find(filter).sort(sort).run().map_err(err)?;
        self.round_trips += 1;
        let mut out = Vec::new();
        for d in cursor {
            let d = d.map_err(err)?;
            let id = d
                .get("_id")
                .map(|v| v.to_string())
                .unwrap_or_else(|| "?".into());
            match bson::from_document::<T>(d) {
                Ok(v) => out.push(v),
                Err(e) => tracing::error!(
                    collection = coll,
                    id,
                    "skipping a stored document that does not decode: {e}"
                ),
            }
        }
        Ok(out)
    }
}

/// A number as u64, whatever integer or double type the server returned.
fn bson_u64(b: &Bson) -> Option<u64> {
    match b {
        Bson::Int32(v) => u64::try_from(*v).ok(),
        Bson::Int64(v) => u64::try_from(*v).ok(),
        Bson::Double(v) if *v >= 0.0 => Some(*v as u64),
        _ => None,
    }
}

fn to_doc<T: Serialize>(v: &T) -> StoreResult<Document> {
    bson::to_document(v).map_err(err)
}

/// Each item as the document `f` makes of it.
fn docs<T, D: Serialize>(items: &[T], f: impl Fn(&T) -> D) -> StoreResult<Vec<Document>> {
    items.iter().map(|i| to_doc(&f(i))).collect()
}

impl Store for MongoStore {
    fn reader(&self) -> StoreResult<Box<dyn StoreReader>> {
        // The driver pools connections: a clone reads beside the writer.
        Ok(Box::new(MongoStore {
            db: self.db.clone(),
            round_trips: 0,
        }))
    }

    fn load(&mut self) -> StoreResult<Snapshot> {
        let jobs: Vec<JobDoc> = self.load_all("jobs", doc! {}, doc! {"_id": 1})?;
        let tasks: Vec<TaskDoc> = self.load_all("tasks", doc! {}, doc! {})?;
        let engines: Vec<EngineDoc> = self.load_all("engines", doc! {}, doc! {})?;
        let pools: Vec<PoolDoc> = self.load_all("pools", doc! {}, doc! {"_id": 1})?;
        let limits: Vec<LimitDoc> = self.load_all("limits", doc! {}, doc! {"_id": 1})?;
        let meta = self
            .coll("meta")
            .find_one(doc! {"_id": "meta"})
            .run()
            .map_err(err)?;
        self.round_trips += 1;
        let next = meta
            .as_ref()
            .and_then(|m| m.get("next_job_id"))
            .and_then(bson_u64)
            .map_or(JobId::FIRST, JobId);
        let jobs: Vec<JobRecord> = jobs.into_iter().map(|j| j.job).collect();
        let max_id = jobs.iter().map(|j| j.id).max().unwrap_or_default();
        Ok(Snapshot {
            jobs,
            tasks: tasks.into_iter().map(|t| t.task).collect(),
            engines: engines.into_iter().map(|e| e.engine).collect(),
            pools: pools
                .into_iter()
                .map(|p| PoolRecord {
                    name: p.name,
                    engines: p.engines,
                })
                .collect(),
            limits: limits
                .into_iter()
                .map(|l| LimitRecord {
                    name: l.name,
                    count: l.count,
                })
                .collect(),
            next_job_id: next.max(max_id.next()),
        })
    }

    fn commit(&mut self, b: &Batch) -> StoreResult<()> {
        // MongoDB takes a batch as several commands, not atomically: what a
        // task's state points at (its attempts, logs and thumbnails) goes
        // first, then the engines, tasks and jobs. A master that dies in
        // between leaves a task not yet done beside its result, never a
        // done task without its result (whose outputs would be lost: the
        // engine, unacknowledged, sends the result again, but for a task
        // already done it would not count).
        // An uncounted record (a result delivered again) never replaces one
        // that is there: those are inserted only where none is.
        let (counted, uncounted): (Vec<AttemptRecord>, Vec<AttemptRecord>) =
            b.attempts.iter().cloned().partition(|a| a.counted);
        self.upsert("attempts", docs(&counted, attempt_doc)?)?;
        self.insert_new("attempts", docs(&uncounted, attempt_doc)?)?;
        self.insert_new(
            "logs",
            docs(&b.logs, |l| {
                let k = l.attempt;
                LogDoc {
                    // The length is part of the id: a re-sent log may start at
                    // a stored offset with more bytes, and both are kept
                    // (reading stitches overlaps).
                    id: format!(
                        "{}.{}.{}+{}",
                        task_id(k.task.job, k.task.index),
                        k.attempt,
                        l.offset,
                        l.data.len()
                    ),
                    job: k.task.job.0 as i64,
                    index: k.task.index,
                    attempt: k.attempt,
                    offset: l.offset as i64,
                    data: Binary {
                        subtype: bson::spec::BinarySubtype::Generic,
                        bytes: l.data.clone(),
                    },
                }
            })?,
        )?;
        self.write_thumbnails(&b.thumbnails)?;
        self.write_usage(&b.usage)?;
        self.upsert(
            "engines",
            docs(&b.engines, |e| EngineDoc {
                id: e.id.clone(),
                engine: e.clone(),
            })?,
        )?;
        self.upsert(
            "tasks",
            docs(&b.tasks, |t| TaskDoc {
                id: task_id(t.job, t.index),
                task: t.clone(),
            })?,
        )?;
        self.upsert(
            "jobs",
            docs(&b.jobs, |j| JobDoc {
                id: j.id.0 as i64,
                status: j.status.as_str().into(),
                job: j.clone(),
            })?,
        )?;
        for id in &b.deleted_jobs {
            let job = id.0 as i64;
            self.coll("jobs")
                .delete_many(doc! {"_id": job})
                .run()
                .map_err(err)?;
            for coll in ["tasks", "attempts", "logs", thumbnails::COLLECTION] {
                self.coll(coll)
                    .delete_many(doc! {"job": job})
                    .run()
                    .map_err(err)?;
            }
            self.round_trips += 5;
        }
        self.upsert(
            "limits",
            docs(&b.limits, |l| LimitDoc {
                name: l.name.clone(),
                count: l.count,
            })?,
        )?;
        if !b.deleted_limits.is_empty() {
            self.coll("limits")
                .delete_many(doc! {"_id": {"$in": &b.deleted_limits}})
                .run()
                .map_err(err)?;
            self.round_trips += 1;
        }
        if let Some(pools) = &b.pools {
            // Small and rare (an engine joined or changed pools): rewrite all.
            self.coll("pools").delete_many(doc! {}).run().map_err(err)?;
            self.round_trips += 1;
            let pools = docs(pools, |p| PoolDoc {
                name: p.name.clone(),
                engines: p.engines.clone(),
            })?;
            self.insert_new("pools", pools)?;
        }
        if let Some(n) = b.next_job_id {
            let meta = to_doc(&MetaDoc {
                id: "meta".into(),
                schema_version: SCHEMA_VERSION,
                next_job_id: n.0 as i64,
            })?;
            self.upsert("meta", vec![meta])?;
        }
        Ok(())
    }

    fn round_trips(&self) -> u64 {
        self.round_trips
    }

    /// Compare-and-swap on the `lease` document of `meta`, keyed by a random
    /// token (strings compare exactly on every server).
    fn acquire_lease(&mut self, owner: &str, now: Millis, ttl_ms: u64) -> StoreResult<Lease> {
        let meta = self.coll("meta");
        let fresh = doc! {
            "_id": "lease",
            "owner": owner,
            "expires_ms": (now + ttl_ms) as i64,
            "token": format!("{:016x}", rand::random::<u64>()),
        };
        let current = meta.find_one(doc! {"_id": "lease"}).run().map_err(err)?;
        self.round_trips += 2;
        let Some(current) = current else {
            return match meta.insert_one(fresh).run() {
                Ok(_) => Ok(Lease::Held),
                // Another master inserted it first.
                Err(e) if e.to_string().contains("11000") || e.to_string().contains("uplicate") => {
                    Ok(Lease::Taken {
                        owner: "another master".into(),
                        until: now + ttl_ms,
                    })
                }
                Err(e) => Err(err(e)),
            };
        };
        let holder = current.get_str("owner").unwrap_or("").to_string();
        let expires = current.get("expires_ms").and_then(bson_u64).unwrap_or(0);
        let token = current.get_str("token").unwrap_or("").to_string();
        if holder != owner && expires > now {
            return Ok(Lease::Taken {
                owner: holder,
                until: expires,
            });
        }
        let swapped = meta
            .replace_one(doc! {"_id": "lease", "token": token}, fresh)
            .run()
            .map_err(err)?;
        if swapped.matched_count == 1 {
            Ok(Lease::Held)
        } else {
            Ok(Lease::Taken {
                owner: "another master".into(),
                until: now + ttl_ms,
            })
        }
    }

    fn lease_needs_renewal(&self) -> bool {
        true
    }

    fn users(&mut self) -> StoreResult<Vec<UserRecord>> {
        self.load_users()
    }

    fn change_user(&mut self, change: &UserChange) -> StoreResult<()> {
        self.store_user_change(change)
    }

    fn append_audit(&mut self, entries: &[AuditEntry]) -> StoreResult<()> {
        self.store_audit(entries)
    }
}
