//! The MongoDB store's thumbnails: one document per job and frame in
//! `thumbnails` (the newest replaces), at most [`MAX_THUMBNAILS_PER_JOB`]
//! per job, the oldest going first; they go with their job.

use super::{err, MongoStore};
use crate::store::{StoreResult, ThumbnailRecord, MAX_THUMBNAILS_PER_JOB};
use drqueue_common::model::JobId;
use mongodb::bson::{doc, spec::BinarySubtype, Binary, Bson, Document};

pub const COLLECTION: &str = "thumbnails";

fn id(job: JobId, frame: i64) -> String {
    format!("{}:{frame}", job.0)
}

impl MongoStore {
    /// Writes a batch's thumbnails, then trims each job it touched to the cap.
    pub(super) fn write_thumbnails(&mut self, thumbnails: &[ThumbnailRecord]) -> StoreResult<()> {
        if thumbnails.is_empty() {
            return Ok(());
        }
        let docs: Vec<Document> = thumbnails
            .iter()
            .map(|t| {
                doc! {
                    "_id": id(t.job, t.frame),
                    "job": t.job.0 as i64,
                    "frame": t.frame,
                    "at_ms": t.at_ms as i64,
                    "png": Binary { subtype: BinarySubtype::Generic, bytes: t.png.clone() },
                }
            })
            .collect();
        // Replaced by delete and insert: some MongoDB-wire servers cannot
        // update a document holding binary data in place.
        let ids: Vec<String> = thumbnails.iter().map(|t| id(t.job, t.frame)).collect();
        self.coll(COLLECTION)
            .delete_many(doc! {"_id": {"$in": ids}})
            .run()
            .map_err(err)?;
        self.round_trips += 1;
        self.insert_new(COLLECTION, docs)?;
        let mut jobs: Vec<JobId> = thumbnails.iter().map(|t| t.job).collect();
        jobs.sort_unstable();
        jobs.dedup();
        for job in jobs {
            let coll = self.coll(COLLECTION);
            let count = coll
                .count_documents(doc! {"job": job.0 as i64})
                .run()
                .map_err(err)?;
            self.round_trips += 1;
            let extra = (count as usize).saturating_sub(MAX_THUMBNAILS_PER_JOB);
            if extra == 0 {
                continue;
            }
            let oldest: Vec<Bson> = coll
                .find(doc! {"job": job.0 as i64})
                .sort(doc! {"at_ms": 1, "frame": 1})
                .limit(extra as i64)
                .projection(doc! {"_id": 1})
                .run()
                .map_err(err)?
                .filter_map(|d| d.ok()?.get("_id").cloned())
                .collect();
            coll.delete_many(doc! {"_id": {"$in": oldest}})
                .run()
                .map_err(err)?;
            self.round_trips += 2;
        }
        Ok(())
    }

    pub(super) fn read_thumbnail_frames(
        &mut self,
        job: JobId,
        limit: usize,
    ) -> StoreResult<Vec<i64>> {
        let cursor = self
            .coll(COLLECTION)
            .find(doc! {"job": job.0 as i64})
            .projection(doc! {"frame": 1})
            .sort(doc! {"frame": 1})
            .limit(limit as i64)
            .run()
            .map_err(err)?;
        self.round_trips += 1;
        let mut frames = Vec::new();
        for d in cursor {
            // A small Int64 may come back as Int32 (the test server does this).
            match d.map_err(err)?.get("frame") {
                Some(mongodb::bson::Bson::Int64(f)) => frames.push(*f),
                Some(mongodb::bson::Bson::Int32(f)) => frames.push(i64::from(*f)),
                _ => {}
            }
        }
        Ok(frames)
    }

    pub(super) fn read_thumbnail(
        &mut self,
        job: JobId,
        frame: Option<i64>,
    ) -> StoreResult<Option<Vec<u8>>> {
        let coll = self.coll(COLLECTION);
        let found = match frame {
            Some(f) => coll.find_one(doc! {"_id": id(job, f)}).run().map_err(err)?,
            None => coll
                .find_one(doc! {"job": job.0 as i64})
                .sort(doc! {"at_ms": -1, "frame": -1})
                .run()
                .map_err(err)?,
        };
        self.round_trips += 1;
        Ok(found.and_then(|d| d.get_binary_generic("png").ok().cloned()))
    }
}
