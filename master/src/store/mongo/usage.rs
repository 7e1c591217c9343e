//! The MongoDB store's usage records: one document per ended attempt in
//! `usage`, a collection deleting a job never touches.

use super::{err, task_id, to_doc, MongoStore};
use crate::store::{StoreResult, UsageRecord};
use drqueue_common::Millis;
use mongodb::bson::{self, doc};
use serde::{Deserialize, Serialize};

pub const COLLECTION: &str = "usage";

#[derive(Serialize, Deserialize)]
struct UsageDoc {
    #[serde(rename = "_id")]
    id: String,
    /// Beside the record, for the index the report's filter uses.
    ended_ms: i64,
    usage: UsageRecord,
}

impl MongoStore {
    /// Writes a batch's records (a result delivered again replaces its own).
    pub(super) fn write_usage(&mut self, usage: &[UsageRecord]) -> StoreResult<()> {
        let docs = usage
            .iter()
            .map(|u| {
                to_doc(&UsageDoc {
                    id: format!("{}.{}", task_id(u.job, u.task), u.attempt),
                    ended_ms: u.ended_ms as i64,
                    usage: u.clone(),
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        self.upsert(COLLECTION, docs)
    }

    pub(super) fn read_usage(
        &mut self,
        since_ms: Millis,
        visit: &mut dyn FnMut(UsageRecord),
    ) -> StoreResult<()> {
        let cursor = self
            .coll(COLLECTION)
            .find(doc! {"ended_ms": {"$gte": since_ms as i64}})
            .sort(doc! {"ended_ms": 1})
            .run()
            .map_err(err)?;
        self.round_trips += 1;
        for d in cursor {
            match bson::from_document::<UsageDoc>(d.map_err(err)?) {
                Ok(u) => visit(u.usage),
                Err(e) => {
                    tracing::error!("skipping a stored usage record that does not decode: {e}")
                }
            }
        }
        Ok(())
    }
}
