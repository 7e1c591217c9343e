//! The embedded store's thumbnails: one row per job and frame (the newest
//! replaces), at most [`MAX_THUMBNAILS_PER_JOB`] per job, the oldest going
//! first; they go with their job.

use super::err;
use crate::store::{StoreResult, ThumbnailRecord, MAX_THUMBNAILS_PER_JOB};
use drqueue_common::model::JobId;
use rusqlite::{params, OptionalExtension, Transaction};

pub const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS thumbnails (
        job INTEGER NOT NULL, frame INTEGER NOT NULL, at_ms INTEGER NOT NULL,
        png BLOB NOT NULL, PRIMARY KEY (job, frame)) WITHOUT ROWID;
    CREATE INDEX IF NOT EXISTS thumbnails_newest ON thumbnails(job, at_ms);";

/// Writes a batch's thumbnails, then trims each job it touched to the cap.
pub fn write(tx: &Transaction<'_>, thumbnails: &[ThumbnailRecord]) -> StoreResult<()> {
    let mut put = tx
        .prepare_cached(
            "INSERT OR REPLACE INTO thumbnails(job, frame, at_ms, png) VALUES (?1, ?2, ?3, ?4)",
        )
        .map_err(err)?;
    let mut jobs: Vec<JobId> = Vec::new();
    for t in thumbnails {
        put.execute(params![t.job.0 as i64, t.frame, t.at_ms as i64, t.png])
            .map_err(err)?;
        if !jobs.contains(&t.job) {
            jobs.push(t.job);
        }
    }
    for job in jobs {
        tx.execute(
            "DELETE FROM thumbnails WHERE job = ?1 AND frame IN (
                 SELECT frame FROM thumbnails WHERE job = ?1
                 ORDER BY at_ms DESC, frame DESC LIMIT -1 OFFSET ?2)",
            params![job.0 as i64, MAX_THUMBNAILS_PER_JOB as i64],
        )
        .map_err(err)?;
    }
    Ok(())
}

pub fn delete_job(tx: &Transaction<'_>, job: JobId) -> StoreResult<()> {
    tx.execute(
        "DELETE FROM thumbnails WHERE job = ?1",
        params![job.0 as i64],
    )
    .map_err(err)?;
    Ok(())
}

pub fn frames(conn: &rusqlite::Connection, job: JobId, limit: usize) -> StoreResult<Vec<i64>> {
    let mut stmt = conn
        .prepare_cached("SELECT frame FROM thumbnails WHERE job = ?1 ORDER BY frame LIMIT ?2")
        .map_err(err)?;
    let rows = stmt
        .query_map(params![job.0 as i64, limit as i64], |r| r.get::<_, i64>(0))
        .map_err(err)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(err)
}

pub fn read(
    conn: &rusqlite::Connection,
    job: JobId,
    frame: Option<i64>,
) -> StoreResult<Option<Vec<u8>>> {
    let row = |r: &rusqlite::Row| r.get::<_, Vec<u8>>(0);
    match frame {
        Some(f) => conn
            .prepare_cached("SELECT png FROM thumbnails WHERE job = ?1 AND frame = ?2")
            .map_err(err)?
            .query_row(params![job.0 as i64, f], row)
            .optional()
            .map_err(err),
        None => conn
            .prepare_cached(
                "SELECT png FROM thumbnails WHERE job = ?1 ORDER BY at_ms DESC, frame DESC LIMIT 1",
            )
            .map_err(err)?
            .query_row(params![job.0 as i64], row)
            .optional()
            .map_err(err),
    }
}
