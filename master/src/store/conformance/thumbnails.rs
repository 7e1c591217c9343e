//! Thumbnails in every store: replaced by frame, the newest found, capped
//! per job, and gone with their job.

use super::Open;
use crate::store::{Batch, ThumbnailRecord, MAX_THUMBNAILS_PER_JOB};
use drqueue_common::model::JobId;

fn thumb(job: u64, frame: i64, at_ms: u64, byte: u8) -> ThumbnailRecord {
    ThumbnailRecord {
        job: JobId(job),
        frame,
        at_ms,
        png: vec![byte; 3],
    }
}

pub fn thumbnails_are_replaced_capped_and_go_with_their_job(open: Open) {
    let mut s = open("thumbnails");
    s.commit(&Batch {
        thumbnails: vec![thumb(1, 1, 10, 1), thumb(1, 2, 20, 2), thumb(2, 1, 30, 9)],
        ..Batch::default()
    })
    .expect("commit");
    assert_eq!(s.thumbnail(JobId(1), Some(1)).unwrap(), Some(vec![1; 3]));
    assert_eq!(
        s.thumbnail(JobId(1), None).unwrap(),
        Some(vec![2; 3]),
        "the newest"
    );
    assert_eq!(s.thumbnail(JobId(1), Some(7)).unwrap(), None);
    assert_eq!(s.thumbnail_frames(JobId(1), 10).unwrap(), vec![1, 2]);
    assert_eq!(s.thumbnail_frames(JobId(1), 1).unwrap(), vec![1]);
    assert!(s.thumbnail_frames(JobId(9), 10).unwrap().is_empty());
    // A frame rendered again replaces its thumbnail, and is the newest.
    s.commit(&Batch {
        thumbnails: vec![thumb(1, 1, 40, 5)],
        ..Batch::default()
    })
    .expect("commit");
    assert_eq!(s.thumbnail(JobId(1), Some(1)).unwrap(), Some(vec![5; 3]));
    assert_eq!(s.thumbnail(JobId(1), None).unwrap(), Some(vec![5; 3]));
    // Past the cap, the oldest go.
    let many: Vec<ThumbnailRecord> = (0..MAX_THUMBNAILS_PER_JOB as i64 + 2)
        .map(|f| thumb(3, f, 100 + f as u64, 7))
        .collect();
    s.commit(&Batch {
        thumbnails: many,
        ..Batch::default()
    })
    .expect("commit");
    assert_eq!(
        s.thumbnail(JobId(3), Some(0)).unwrap(),
        None,
        "the oldest went"
    );
    assert_eq!(s.thumbnail(JobId(3), Some(1)).unwrap(), None);
    assert!(s.thumbnail(JobId(3), Some(2)).unwrap().is_some());
    // A deleted job's thumbnails go with it; others stay.
    s.commit(&Batch {
        deleted_jobs: vec![JobId(1)],
        ..Batch::default()
    })
    .expect("commit");
    assert_eq!(s.thumbnail(JobId(1), None).unwrap(), None);
    assert_eq!(s.thumbnail(JobId(2), Some(1)).unwrap(), Some(vec![9; 3]));
    // The reader handle sees them too.
    let mut r = s.reader().expect("reader");
    assert_eq!(r.thumbnail(JobId(2), None).unwrap(), Some(vec![9; 3]));
}
