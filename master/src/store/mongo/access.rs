//! The MongoDB store's users and audit trail. `users` holds one document per
//! user by name; `audit` is numbered from a counter in `meta`, taken for a
//! whole batch of entries in one atomic `$inc`.

use super::{bson_u64, err, to_doc, MongoStore};
use crate::store::{StoreError, StoreResult};
use crate::users::{UserChange, UserRecord};
use drqueue_common::users::{AuditEntry, AuditQuery};
use mongodb::bson::{doc, Document};
use mongodb::options::ReturnDocument;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct UserDoc {
    #[serde(rename = "_id")]
    name: String,
    user: UserRecord,
}

#[derive(Serialize, Deserialize)]
struct AuditDoc {
    #[serde(rename = "_id")]
    id: i64,
    /// The same number again: some servers cannot index `_id` in a compound key.
    seq: i64,
    at_ms: i64,
    user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    job: Option<i64>,
    entry: AuditEntry,
}

impl MongoStore {
    pub(super) fn load_users(&mut self) -> StoreResult<Vec<UserRecord>> {
        let docs: Vec<UserDoc> = self.load_all("users", doc! {}, doc! {"_id": 1})?;
        Ok(docs.into_iter().map(|d| d.user).collect())
    }

    pub(super) fn store_user_change(&mut self, change: &UserChange) -> StoreResult<()> {
        match change {
            UserChange::Put(u) => self.upsert(
                "users",
                vec![to_doc(&UserDoc {
                    name: u.name.clone(),
                    user: u.clone(),
                })?],
            ),
            UserChange::Remove(name) => {
                self.coll("users")
                    .delete_one(doc! {"_id": name})
                    .run()
                    .map_err(err)?;
                self.round_trips += 1;
                Ok(())
            }
        }
    }

    pub(super) fn store_audit(&mut self, entries: &[AuditEntry]) -> StoreResult<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let counter = self
            .coll("meta")
            .find_one_and_update(
                doc! {"_id": "audit"},
                doc! {"$inc": {"last_seq": entries.len() as i64}},
            )
            .upsert(true)
            .return_document(ReturnDocument::After)
            .run()
            .map_err(err)?;
        self.round_trips += 1;
        let last = counter
            .as_ref()
            .and_then(|d| d.get("last_seq"))
            .and_then(bson_u64)
            .ok_or_else(|| StoreError::Backend("audit counter missing after $inc".into()))?;
        let first = last + 1 - entries.len() as u64;
        let docs = entries
            .iter()
            .zip(first..)
            .map(|(e, seq)| {
                to_doc(&AuditDoc {
                    id: seq as i64,
                    seq: seq as i64,
                    at_ms: e.at_ms as i64,
                    user: e.user.clone(),
                    job: e.job.map(|j| j.0 as i64),
                    entry: AuditEntry { seq, ..e.clone() },
                })
            })
            .collect::<StoreResult<Vec<Document>>>()?;
        self.insert_new("audit", docs)
    }

    pub(super) fn load_audit(
        &mut self,
        q: &AuditQuery,
        limit: usize,
    ) -> StoreResult<Vec<AuditEntry>> {
        let mut filter = doc! {"at_ms": {"$gte": q.since_ms.unwrap_or(0) as i64}};
        if let Some(job) = q.job {
            filter.insert("job", job.0 as i64);
        }
        if let Some(user) = &q.user {
            filter.insert("user", user.as_str());
        }
        let cursor = self
            .coll("audit")
            .find(filter)
            .sort(doc! {"seq": -1})
            .limit(limit as i64)
            .run()
            .map_err(err)?;
        self.round_trips += 1;
        let mut out = Vec::new();
        for d in cursor {
            match mongodb::bson::from_document::<AuditDoc>(d.map_err(err)?) {
                Ok(a) => out.push(a.entry),
                Err(e) => {
                    tracing::error!("skipping a stored audit entry that does not decode: {e}")
                }
            }
        }
        Ok(out)
    }
}
