//! The MongoDB store's reads beside the writer ([`StoreReader`]): a log
//! window found by seeking on `{job, index, attempt, offset}`, an attempt
//! history, the audit trail.

use super::{err, AttemptDoc, LogDoc, MongoStore};
use crate::store::log_window::LogWindow;
use crate::store::{AttemptRecord, StoreError, StoreReader, StoreResult};
use drqueue_common::model::{JobId, TaskKey};
use drqueue_common::protocol::AttemptKey;
use drqueue_common::users::{AuditEntry, AuditQuery};
use mongodb::bson::{doc, Document};

impl StoreReader for MongoStore {
    fn read_log(&mut self, a: AttemptKey, offset: u64) -> StoreResult<Vec<u8>> {
        let filter = doc! {"job": a.task.job.0 as i64, "index": a.task.index, "attempt": a.attempt};
        // The chunks that may cover `offset` (the last few starting at or
        // before it: a re-sent chunk may reach further than a later one),
        // then those after it, only as many as fill the window.
        let chunks = |cursor: mongodb::sync::Cursor<Document>| {
            cursor.map(|d| {
                let d: LogDoc = mongodb::bson::from_document(d.map_err(err)?).map_err(err)?;
                Ok::<_, StoreError>((d.offset.max(0) as u64, d.data.bytes))
            })
        };
        let mut before = filter.clone();
        before.insert("offset", doc! {"$lte": offset as i64});
        let covering = self
            .coll("logs")
            .find(before)
            .sort(doc! {"offset": -1})
            .limit(8)
            .run()
            .map_err(err)?;
        let covering = chunks(covering).collect::<StoreResult<Vec<_>>>()?;
        let mut window = LogWindow::new(offset);
        window.start_from(covering);
        let mut after = filter;
        after.insert("offset", doc! {"$gt": offset as i64});
        let cursor = self
            .coll("logs")
            .find(after)
            .sort(doc! {"offset": 1})
            .run()
            .map_err(err)?;
        self.round_trips += 2;
        for chunk in chunks(cursor) {
            if !window.add(chunk?) {
                break;
            }
        }
        Ok(window.into_bytes())
    }

    fn usage(
        &mut self,
        since_ms: drqueue_common::Millis,
        visit: &mut dyn FnMut(crate::store::UsageRecord),
    ) -> StoreResult<()> {
        self.read_usage(since_ms, visit)
    }

    fn attempts(&mut self, task: TaskKey) -> StoreResult<Vec<AttemptRecord>> {
        let filter = doc! {"job": task.job.0 as i64, "index": task.index};
        let docs: Vec<AttemptDoc> = self.load_all("attempts", filter, doc! {"attempt": 1})?;
        Ok(docs
            .into_iter()
            .map(|d| AttemptRecord {
                attempt: AttemptKey {
                    task,
                    attempt: d.attempt,
                },
                engine: d.engine,
                ended_ms: d.ended_ms,
                outcome: d.outcome.into(),
                counted: d.counted,
            })
            .collect())
    }

    fn thumbnail(&mut self, job: JobId, frame: Option<i64>) -> StoreResult<Option<Vec<u8>>> {
        self.read_thumbnail(job, frame)
    }

    fn thumbnail_frames(&mut self, job: JobId, limit: usize) -> StoreResult<Vec<i64>> {
        self.read_thumbnail_frames(job, limit)
    }

    fn collected_blobs(&mut self) -> StoreResult<Vec<drqueue_common::cas::BlobHash>> {
        // Read and filtered here: the test server confuses null with
        // missing, so no query on the hash field is trusted.
        let docs: Vec<AttemptDoc> = self.load_all("attempts", doc! {}, doc! {"_id": 1})?;
        Ok(docs
            .into_iter()
            .flat_map(|d| d.outcome.outputs)
            .filter_map(|f| f.hash)
            .collect())
    }

    fn audit(&mut self, query: &AuditQuery, limit: usize) -> StoreResult<Vec<AuditEntry>> {
        self.load_audit(query, limit)
    }
}
