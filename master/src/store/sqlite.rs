//! The embedded store: SQLite in WAL mode under `./drqueue-data`.
//!
//! Tasks live in typed columns (they are most of the writes); jobs and engines
//! as JSON documents beside indexed status columns. Every batch is one
//! transaction, so a crash leaves either all of a batch or none of it.

use super::log_window::LogWindow;
use super::*;
use drqueue_common::model::{EngineId, JobId, TaskStatus};
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;

mod access;
mod thumbnails;
mod usage;

/// Bumped when the tables change shape.
/// 2: a job's tasks still in their start state may have no rows
/// (`JobRecord::released`), which a master of version 1 would misread.
/// 3: a cancelled job's tasks may keep rows of before the cancel (it
/// writes only the job's record), which a master of version 2 would show as
/// unfinished.
pub const SCHEMA_VERSION: u32 = 3;

pub struct SqliteStore {
    conn: Connection,
    round_trips: u64,
    /// `DIR/master.lock`: held (flock) by the active master of this store.
    lock: std::fs::File,
    dir: std::path::PathBuf,
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// Stores made before tiled jobs have no `tasks.outputs` (the files a done
/// tile hands to its assemble task): add it, empty.
fn add_task_outputs_column(conn: &Connection) -> StoreResult<()> {
    let has: bool = conn
        .query_row(
            "SELECT COUNT(*) FROM pragma_table_info('tasks') WHERE name = 'outputs'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .map_err(err)?
        > 0;
    if !has {
        conn.execute_batch("ALTER TABLE tasks ADD COLUMN outputs TEXT")
            .map_err(err)?;
    }
    Ok(())
}

/// A task's handed-on files as stored: JSON, NULL when none.
fn encode_outputs(outputs: &[drqueue_common::protocol::OutputFile]) -> Option<String> {
    (!outputs.is_empty())
        .then(|| serde_json::to_string(outputs).ok())
        .flatten()
}

/// A stored list that does not decode is logged and read as none: the
/// assemble task then finds its tiles missing and says which.
fn decode_outputs(text: Option<String>) -> Vec<drqueue_common::protocol::OutputFile> {
    let Some(text) = text else {
        return Vec::new();
    };
    serde_json::from_str(&text).unwrap_or_else(|e| {
        tracing::error!("a stored task's output list does not decode: {e}");
        Vec::new()
    })
}

impl SqliteStore {
    /// Opens (creating if needed) the store in directory `dir`.
    pub fn open(dir: &Path) -> StoreResult<SqliteStore> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Backend(format!("cannot create {}: {e}", dir.display())))?;
        let path = dir.join("drqueue.sqlite3");
        let conn = Connection::open(&path)
            .map_err(|e| StoreError::Backend(format!("cannot open {}: {e}", path.display())))?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             PRAGMA busy_timeout = 5000;
             CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS jobs (
                 id INTEGER PRIMARY KEY, status TEXT NOT NULL, data TEXT NOT NULL);
             CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status);
             CREATE TABLE IF NOT EXISTS tasks (
                 job INTEGER NOT NULL, idx INTEGER NOT NULL,
                 first INTEGER NOT NULL, last INTEGER NOT NULL, step INTEGER NOT NULL,
                 status TEXT NOT NULL, attempts INTEGER NOT NULL, failures INTEGER NOT NULL,
                 engine TEXT, started_ms INTEGER, ended_ms INTEGER, exit_code INTEGER,
                 peak_rss_kb INTEGER, cpu_ms INTEGER, outputs TEXT,
                 PRIMARY KEY (job, idx)) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS engines (id TEXT PRIMARY KEY, data TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS pools (name TEXT PRIMARY KEY, data TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS limits (name TEXT PRIMARY KEY, count INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS attempts (
                 job INTEGER NOT NULL, idx INTEGER NOT NULL, attempt INTEGER NOT NULL,
                 engine TEXT NOT NULL, ended_ms INTEGER NOT NULL, counted INTEGER NOT NULL,
                 outcome TEXT NOT NULL,
                 PRIMARY KEY (job, idx, attempt)) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS logs (
                 job INTEGER NOT NULL, idx INTEGER NOT NULL, attempt INTEGER NOT NULL,
                 offset INTEGER NOT NULL, data BLOB NOT NULL,
                 PRIMARY KEY (job, idx, attempt, offset)) WITHOUT ROWID;",
        )
        .map_err(err)?;
        add_task_outputs_column(&conn)?;
        conn.execute_batch(access::SCHEMA).map_err(err)?;
        conn.execute_batch(thumbnails::SCHEMA).map_err(err)?;
        conn.execute_batch(usage::SCHEMA).map_err(err)?;
        let found: Option<String> = conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'schema_version'",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(err)?;
        match found.and_then(|v| v.parse::<u32>().ok()) {
            Some(v) if v > SCHEMA_VERSION => {
                return Err(StoreError::SchemaTooNew {
                    found: v,
                    supported: SCHEMA_VERSION,
                })
            }
            // An older store is read as it is (what 2 and 3 add, tasks
            // without rows, or with rows of before their job's cancel, is
            // new), then marked so that an older master refuses it.
            Some(v) if v == SCHEMA_VERSION => {}
            _ => {
                conn.execute(
                    "INSERT OR REPLACE INTO meta(key, value) VALUES ('schema_version', ?1)",
                    params![SCHEMA_VERSION.to_string()],
                )
                .map_err(err)?;
            }
        }
        let lock_path = dir.join("master.lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| {
                StoreError::Backend(format!("cannot open {}: {e}", lock_path.display()))
            })?;
        Ok(SqliteStore {
            conn,
            round_trips: 0,
            lock,
            dir: dir.to_path_buf(),
        })
    }
}

impl StoreReader for SqliteStore {
    fn read_log(&mut self, a: AttemptKey, offset: u64) -> StoreResult<Vec<u8>> {
        // From the last chunk starting at or before `offset` (the index
        // finds it), and only as many chunks as fill the window.
        // The chunks that may cover `offset` (the last few starting at or
        // before it: a re-sent chunk may reach further than a later one),
        // then those after it, only as many as fill the window. The primary
        // key's index finds both.
        let key = params![a.task.job.0 as i64, a.task.index, a.attempt, offset as i64];
        let row = |r: &rusqlite::Row| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, Vec<u8>>(1)?));
        let mut before = self
            .conn
            .prepare_cached(
                "SELECT offset, data FROM logs WHERE job = ?1 AND idx = ?2 AND attempt = ?3
                 AND offset <= ?4 ORDER BY offset DESC LIMIT 8",
            )
            .map_err(err)?;
        let covering = before
            .query_map(key, row)
            .map_err(err)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(err)?;
        let mut window = LogWindow::new(offset);
        window.start_from(covering);
        let mut after = self
            .conn
            .prepare_cached(
                "SELECT offset, data FROM logs WHERE job = ?1 AND idx = ?2 AND attempt = ?3
                 AND offset > ?4 ORDER BY offset",
            )
            .map_err(err)?;
        for r in after.query_map(key, row).map_err(err)? {
            if !window.add(r.map_err(err)?) {
                break;
            }
        }
        self.round_trips += 1;
        Ok(window.into_bytes())
    }

    fn attempts(&mut self, task: TaskKey) -> StoreResult<Vec<AttemptRecord>> {
        let mut st = self
            .conn
            .prepare_cached("SELECT attempt, engine, ended_ms, counted, outcome FROM attempts WHERE job = ?1 AND idx = ?2 ORDER BY attempt")
            .map_err(err)?;
        let rows = st
            .query_map(params![task.job.0 as i64, task.index], |r| {
                Ok((
                    r.get::<_, u32>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, bool>(3)?,
                    r.get::<_, String>(4)?,
                ))
            })
            .map_err(err)?;
        let mut out = Vec::new();
        for row in rows {
            let (attempt, engine, ended, counted, outcome) = row.map_err(err)?;
            match serde_json::from_str(&outcome) {
                Ok(outcome) => out.push(AttemptRecord {
                    attempt: AttemptKey { task, attempt },
                    engine: engine.into(),
                    ended_ms: ended as u64,
                    outcome,
                    counted,
                }),
                Err(e) => {
                    tracing::error!(%task, attempt, "skipping stored attempt that does not decode: {e}")
                }
            }
        }
        self.round_trips += 1;
        Ok(out)
    }

    fn thumbnail(&mut self, job: JobId, frame: Option<i64>) -> StoreResult<Option<Vec<u8>>> {
        thumbnails::read(&self.conn, job, frame)
    }

    fn thumbnail_frames(&mut self, job: JobId, limit: usize) -> StoreResult<Vec<i64>> {
        thumbnails::frames(&self.conn, job, limit)
    }

    fn audit(&mut self, query: &AuditQuery, limit: usize) -> StoreResult<Vec<AuditEntry>> {
        self.load_audit(query, limit)
    }

    fn usage(&mut self, since_ms: Millis, visit: &mut dyn FnMut(UsageRecord)) -> StoreResult<()> {
        self.round_trips += 1;
        usage::read(&self.conn, since_ms, visit)
    }

    fn collected_blobs(&mut self) -> StoreResult<Vec<drqueue_common::cas::BlobHash>> {
        // Only outcomes that name a hash are read and parsed.
        let mut q = self
            .conn
            .prepare_cached("SELECT outcome FROM attempts WHERE outcome LIKE '%\"hash\":\"%'")
            .map_err(err)?;
        let rows = q.query_map([], |r| r.get::<_, String>(0)).map_err(err)?;
        let mut out = Vec::new();
        for text in rows {
            let text = text.map_err(err)?;
            if let Ok(o) = serde_json::from_str::<drqueue_common::protocol::Outcome>(&text) {
                out.extend(o.outputs.iter().filter_map(|f| f.hash));
            }
        }
        Ok(out)
    }
}

impl Store for SqliteStore {
    fn reader(&self) -> StoreResult<Box<dyn StoreReader>> {
        // A connection of its own: WAL lets it read while the writer commits.
        let r = SqliteStore::open(&self.dir)?;
        r.conn
            .pragma_update(None, "query_only", true)
            .map_err(err)?;
        Ok(Box::new(r))
    }

    fn load(&mut self) -> StoreResult<Snapshot> {
        let mut snap = Snapshot::default();
        {
            let mut st = self
                .conn
                .prepare("SELECT id, data FROM jobs ORDER BY id")
                .map_err(err)?;
            let rows = st
                .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))
                .map_err(err)?;
            for row in rows {
                let (id, data) = row.map_err(err)?;
                match serde_json::from_str::<JobRecord>(&data) {
                    Ok(j) => snap.jobs.push(j),
                    Err(e) => {
                        tracing::error!(job = id, "skipping stored job that does not decode: {e}")
                    }
                }
            }
        }
        {
            let mut st = self
                .conn
                .prepare(
                    "SELECT job, idx, first, last, step, status, attempts, failures, engine,
                            started_ms, ended_ms, exit_code, peak_rss_kb, cpu_ms, outputs FROM tasks",
                )
                .map_err(err)?;
            let rows = st
                .query_map([], |r| {
                    let status: String = r.get(5)?;
                    Ok((
                        status,
                        TaskRecord {
                            job: JobId(r.get::<_, i64>(0)? as u64),
                            index: r.get(1)?,
                            first: r.get(2)?,
                            last: r.get(3)?,
                            step: r.get(4)?,
                            status: TaskStatus::Waiting,
                            attempts: r.get(6)?,
                            failures: r.get(7)?,
                            engine: r.get::<_, Option<String>>(8)?.map(EngineId::from),
                            started_ms: r.get::<_, Option<i64>>(9)?.map(|v| v as u64),
                            ended_ms: r.get::<_, Option<i64>>(10)?.map(|v| v as u64),
                            exit_code: r.get(11)?,
                            peak_rss_kb: r.get::<_, Option<i64>>(12)?.map(|v| v as u64),
                            cpu_ms: r.get::<_, Option<i64>>(13)?.map(|v| v as u64),
                            outputs: decode_outputs(r.get::<_, Option<String>>(14)?),
                        },
                    ))
                })
                .map_err(err)?;
            for row in rows {
                match row {
                    Ok((status, mut t)) => match status.parse() {
                        Ok(s) => {
                            t.status = s;
                            snap.tasks.push(t)
                        }
                        Err(e) => tracing::error!(task = %t.key(), "skipping stored task: {e}"),
                    },
                    Err(e) => tracing::error!("skipping stored task that does not decode: {e}"),
                }
            }
        }
        {
            let mut st = self
                .conn
                .prepare("SELECT id, data FROM engines")
                .map_err(err)?;
            let rows = st
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
                .map_err(err)?;
            for row in rows {
                let (id, data) = row.map_err(err)?;
                match serde_json::from_str::<EngineRecord>(&data) {
                    Ok(e) => snap.engines.push(e),
                    Err(e) => {
                        tracing::error!(engine = %id, "skipping stored engine that does not decode: {e}")
                    }
                }
            }
        }
        {
            let mut st = self
                .conn
                .prepare("SELECT name, count FROM limits ORDER BY name")
                .map_err(err)?;
            let rows = st
                .query_map([], |r| {
                    Ok(LimitRecord {
                        name: r.get(0)?,
                        count: r.get(1)?,
                    })
                })
                .map_err(err)?;
            for row in rows {
                match row {
                    Ok(l) => snap.limits.push(l),
                    Err(e) => tracing::error!("skipping stored limit that does not decode: {e}"),
                }
            }
        }
        {
            let mut st = self
                .conn
                .prepare("SELECT name, data FROM pools ORDER BY name")
                .map_err(err)?;
            let rows = st
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
                .map_err(err)?;
            for row in rows {
                let (name, data) = row.map_err(err)?;
                match serde_json::from_str::<PoolRecord>(&data) {
                    Ok(p) => snap.pools.push(p),
                    Err(e) => {
                        tracing::error!(pool = %name, "skipping stored pool that does not decode: {e}")
                    }
                }
            }
        }
        let next: Option<String> = self
            .conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'next_job_id'",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(err)?;
        let max_id = snap.jobs.iter().map(|j| j.id).max().unwrap_or_default();
        snap.next_job_id = next
            .and_then(|v| v.parse().ok())
            .unwrap_or(JobId::FIRST)
            .max(max_id.next());
        self.round_trips += 4;
        Ok(snap)
    }

    fn commit(&mut self, b: &Batch) -> StoreResult<()> {
        let tx = self.conn.transaction().map_err(err)?;
        {
            let mut job = tx
                .prepare_cached("INSERT OR REPLACE INTO jobs(id, status, data) VALUES (?1, ?2, ?3)")
                .map_err(err)?;
            for j in &b.jobs {
                let data = serde_json::to_string(j).map_err(err)?;
                job.execute(params![j.id.0 as i64, j.status.as_str(), data])
                    .map_err(err)?;
            }
            let mut task = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO tasks(job, idx, first, last, step, status, attempts, failures,
                        engine, started_ms, ended_ms, exit_code, peak_rss_kb, cpu_ms, outputs)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
                )
                .map_err(err)?;
            for t in &b.tasks {
                task.execute(params![
                    t.job.0 as i64,
                    t.index,
                    t.first,
                    t.last,
                    t.step,
                    t.status.as_str(),
                    t.attempts,
                    t.failures,
                    t.engine.as_deref(),
                    t.started_ms.map(|v| v as i64),
                    t.ended_ms.map(|v| v as i64),
                    t.exit_code,
                    t.peak_rss_kb.map(|v| v as i64),
                    t.cpu_ms.map(|v| v as i64),
                    encode_outputs(&t.outputs),
                ])
                .map_err(err)?;
            }
            // Before the deletes: a job deleted in the same batch loses them.
            thumbnails::write(&tx, &b.thumbnails)?;
            // Usage outlives its job: the deletes below leave it.
            usage::write(&tx, &b.usage)?;
            for id in &b.deleted_jobs {
                for table in [
                    "jobs WHERE id",
                    "tasks WHERE job",
                    "attempts WHERE job",
                    "logs WHERE job",
                ] {
                    tx.execute(&format!("DELETE FROM {table} = ?1"), params![id.0 as i64])
                        .map_err(err)?;
                }
                thumbnails::delete_job(&tx, *id)?;
            }
            let mut engine = tx
                .prepare_cached("INSERT OR REPLACE INTO engines(id, data) VALUES (?1, ?2)")
                .map_err(err)?;
            for e in &b.engines {
                engine
                    .execute(params![
                        e.id.as_str(),
                        serde_json::to_string(e).map_err(err)?
                    ])
                    .map_err(err)?;
            }
            let mut attempt = tx
                .prepare_cached(
                    // An uncounted record (a result delivered again) never
                    // replaces one that is there.
                    "INSERT INTO attempts(job, idx, attempt, engine, ended_ms, counted, outcome)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT(job, idx, attempt) DO UPDATE SET engine = excluded.engine,
                        ended_ms = excluded.ended_ms, counted = excluded.counted,
                        outcome = excluded.outcome
                     WHERE excluded.counted",
                )
                .map_err(err)?;
            for a in &b.attempts {
                attempt
                    .execute(params![
                        a.attempt.task.job.0 as i64,
                        a.attempt.task.index,
                        a.attempt.attempt,
                        a.engine.as_str(),
                        a.ended_ms as i64,
                        a.counted,
                        serde_json::to_string(&a.outcome).map_err(err)?,
                    ])
                    .map_err(err)?;
            }
            let mut log = tx
                .prepare_cached(
                    // A re-sent log may start at a stored offset with more
                    // bytes: keep the longer chunk.
                    "INSERT INTO logs(job, idx, attempt, offset, data) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT(job, idx, attempt, offset) DO UPDATE SET data = excluded.data
                     WHERE length(excluded.data) > length(logs.data)",
                )
                .map_err(err)?;
            for l in &b.logs {
                log.execute(params![
                    l.attempt.task.job.0 as i64,
                    l.attempt.task.index,
                    l.attempt.attempt,
                    l.offset as i64,
                    l.data
                ])
                .map_err(err)?;
            }
            for l in &b.limits {
                tx.execute(
                    "INSERT OR REPLACE INTO limits(name, count) VALUES (?1, ?2)",
                    params![l.name, l.count],
                )
                .map_err(err)?;
            }
            for name in &b.deleted_limits {
                tx.execute("DELETE FROM limits WHERE name = ?1", params![name])
                    .map_err(err)?;
            }
            if let Some(pools) = &b.pools {
                tx.execute("DELETE FROM pools", []).map_err(err)?;
                for p in pools {
                    tx.execute(
                        "INSERT INTO pools(name, data) VALUES (?1, ?2)",
                        params![p.name, serde_json::to_string(p).map_err(err)?],
                    )
                    .map_err(err)?;
                }
            }
            if let Some(n) = b.next_job_id {
                tx.execute(
                    "INSERT OR REPLACE INTO meta(key, value) VALUES ('next_job_id', ?1)",
                    params![n.to_string()],
                )
                .map_err(err)?;
            }
        }
        tx.commit().map_err(err)?;
        self.round_trips += 1;
        Ok(())
    }

    fn round_trips(&self) -> u64 {
        self.round_trips
    }

    /// A lock on `DIR/master.lock`, held for as long as this store is open.
    fn acquire_lease(&mut self, owner: &str, _now: Millis, _ttl_ms: u64) -> StoreResult<Lease> {
        use std::io::{Seek, Write};
        use std::os::fd::AsRawFd;
        // SAFETY: flock on a file descriptor we own.
        let r = unsafe { libc::flock(self.lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if r == 0 {
            let _ = self.lock.set_len(0);
            let _ = self.lock.rewind();
            let _ = self.lock.write_all(owner.as_bytes());
            return Ok(Lease::Held);
        }
        let holder = std::fs::read_to_string(self.dir.join("master.lock")).unwrap_or_default();
        Ok(Lease::Taken {
            owner: holder.trim().to_string(),
            until: 0,
        })
    }

    fn lease_needs_renewal(&self) -> bool {
        false
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
