//! The blobs attempts collected, in every store: the ones the content
//! store's garbage collection keeps, and gone with their job.

use super::{attempt, Open};
use crate::store::{AttemptRecord, Batch};
use drqueue_common::cas::BlobHash;
use drqueue_common::model::JobId;
use drqueue_common::protocol::{Outcome, OutputFile};

fn record(job: u64, n: u32, outputs: Vec<OutputFile>) -> AttemptRecord {
    AttemptRecord {
        attempt: attempt(job, 0, n),
        engine: "e".to_string().into(),
        ended_ms: n as u64,
        outcome: Outcome {
            exit_code: Some(0),
            outputs,
            ..Outcome::default()
        },
        counted: true,
    }
}

fn file(path: &str, hash: Option<BlobHash>) -> OutputFile {
    OutputFile {
        path: path.into(),
        size: 1,
        hash,
    }
}

pub fn collected_blobs_are_listed_and_go_with_their_job(open: Open) {
    let mut s = open("collected");
    let (a, b, c) = (BlobHash::of(b"a"), BlobHash::of(b"b"), BlobHash::of(b"c"));
    s.commit(&Batch {
        attempts: vec![
            record(
                1,
                1,
                vec![file("out/1.png", Some(a)), file("shared.png", None)],
            ),
            record(1, 2, vec![file("out/2.png", Some(b))]),
            record(2, 1, vec![file("out/9.png", Some(c))]),
            record(3, 1, vec![file("written-not-collected.png", None)]),
        ],
        ..Batch::default()
    })
    .expect("commit");
    let mut got = s.collected_blobs().expect("collected blobs");
    got.sort();
    let mut want = vec![a, b, c];
    want.sort();
    assert_eq!(got, want);
    s.commit(&Batch {
        deleted_jobs: vec![JobId(1)],
        ..Batch::default()
    })
    .expect("commit");
    assert_eq!(s.collected_blobs().expect("collected blobs"), vec![c]);
}
