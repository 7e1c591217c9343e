//! The embedded store's usage records: one row per ended attempt, in a table
//! of its own that deleting a job never touches.

use super::err;
use crate::store::{StoreResult, UsageRecord};
use drqueue_common::Millis;
use rusqlite::{params, Transaction};

pub const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS usage (
        job INTEGER NOT NULL, idx INTEGER NOT NULL, attempt INTEGER NOT NULL,
        ended_ms INTEGER NOT NULL, data TEXT NOT NULL,
        PRIMARY KEY (job, idx, attempt)) WITHOUT ROWID;
    CREATE INDEX IF NOT EXISTS usage_ended ON usage(ended_ms);";

/// Writes a batch's records (a result delivered again replaces its own).
pub fn write(tx: &Transaction<'_>, usage: &[UsageRecord]) -> StoreResult<()> {
    let mut put = tx
        .prepare_cached(
            "INSERT OR REPLACE INTO usage(job, idx, attempt, ended_ms, data) VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .map_err(err)?;
    for u in usage {
        let data = serde_json::to_string(u).map_err(err)?;
        put.execute(params![
            u.job.0 as i64,
            u.task,
            u.attempt,
            u.ended_ms as i64,
            data
        ])
        .map_err(err)?;
    }
    Ok(())
}

/// Every record that ended at or after `since_ms`, oldest first, one at a
/// time. A row that does not decode is logged and skipped.
pub fn read(
    conn: &rusqlite::Connection,
    since_ms: Millis,
    visit: &mut dyn FnMut(UsageRecord),
) -> StoreResult<()> {
    let mut q = conn
        .prepare_cached("SELECT data FROM usage WHERE ended_ms >= ?1 ORDER BY ended_ms")
        .map_err(err)?;
    let rows = q
        .query_map(params![since_ms as i64], |r| r.get::<_, String>(0))
        .map_err(err)?;
    for text in rows {
        let text = text.map_err(err)?;
        match serde_json::from_str::<UsageRecord>(&text) {
            Ok(u) => visit(u),
            Err(e) => tracing::error!("skipping a stored usage record that does not decode: {e}"),
        }
    }
    Ok(())
}
