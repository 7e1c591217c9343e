//! The embedded store's users and audit trail: who may do what, and what
//! they did. Users are JSON documents by name; audit entries are numbered by
//! SQLite itself (`AUTOINCREMENT` never reuses a number).

use super::{err, SqliteStore};
use crate::store::StoreResult;
use crate::users::{UserChange, UserRecord};
use drqueue_common::model::JobId;
use drqueue_common::users::{AuditEntry, AuditQuery};
use rusqlite::params;

/// Created with the other tables; new tables only, so older masters ignore them.
pub(super) const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS users (name TEXT PRIMARY KEY, data TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS audit (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, at_ms INTEGER NOT NULL,
        user TEXT NOT NULL, job INTEGER, data TEXT NOT NULL);
    CREATE INDEX IF NOT EXISTS audit_user ON audit(user, seq);
    CREATE INDEX IF NOT EXISTS audit_job ON audit(job, seq);";

impl SqliteStore {
    pub(super) fn load_users(&mut self) -> StoreResult<Vec<UserRecord>> {
        let mut st = self
            .conn
            .prepare_cached("SELECT name, data FROM users ORDER BY name")
            .map_err(err)?;
        let rows = st
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .map_err(err)?;
        let mut out = Vec::new();
        for row in rows {
            let (name, data) = row.map_err(err)?;
            match serde_json::from_str(&data) {
                Ok(u) => out.push(u),
                Err(e) => tracing::error!(
                    user = name,
                    "skipping a stored user that does not decode: {e}"
                ),
            }
        }
        self.round_trips += 1;
        Ok(out)
    }

    pub(super) fn store_user_change(&mut self, change: &UserChange) -> StoreResult<()> {
        match change {
            UserChange::Put(u) => {
                let data = serde_json::to_string(u).map_err(err)?;
                self.conn
                    .execute(
                        "INSERT OR REPLACE INTO users(name, data) VALUES (?1, ?2)",
                        params![u.name, data],
                    )
                    .map_err(err)?;
            }
            UserChange::Remove(name) => {
                self.conn
                    .execute("DELETE FROM users WHERE name = ?1", params![name])
                    .map_err(err)?;
            }
        }
        self.round_trips += 1;
        Ok(())
    }

    pub(super) fn store_audit(&mut self, entries: &[AuditEntry]) -> StoreResult<()> {
        let tx = self.conn.transaction().map_err(err)?;
        {
            let mut st = tx
                .prepare_cached("INSERT INTO audit(at_ms, user, job, data) VALUES (?1, ?2, ?3, ?4)")
                .map_err(err)?;
            for e in entries {
                let data = serde_json::to_string(e).map_err(err)?;
                st.execute(params![
                    e.at_ms as i64,
                    e.user,
                    e.job.map(|j| j.0 as i64),
                    data
                ])
                .map_err(err)?;
            }
        }
        tx.commit().map_err(err)?;
        self.round_trips += 1;
        Ok(())
    }

    pub(super) fn load_audit(
        &mut self,
        q: &AuditQuery,
        limit: usize,
    ) -> StoreResult<Vec<AuditEntry>> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT seq, data FROM audit
                 WHERE (?1 IS NULL OR job = ?1) AND (?2 IS NULL OR user = ?2) AND at_ms >= ?3
                 ORDER BY seq DESC LIMIT ?4",
            )
            .map_err(err)?;
        let rows = st
            .query_map(
                params![
                    q.job.map(|JobId(j)| j as i64),
                    q.user,
                    q.since_ms.unwrap_or(0) as i64,
                    limit as i64
                ],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)),
            )
            .map_err(err)?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, data) = row.map_err(err)?;
            match serde_json::from_str::<AuditEntry>(&data) {
                Ok(e) => out.push(AuditEntry {
                    seq: seq as u64,
                    ..e
                }),
                Err(e) => tracing::error!(
                    seq,
                    "skipping a stored audit entry that does not decode: {e}"
                ),
            }
        }
        self.round_trips += 1;
        Ok(out)
    }
}
