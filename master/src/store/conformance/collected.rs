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

/// A tiled job's grid is in its spec, and a done tile's files (what its
/// assemble task is handed) in its task: both survive reopening, and a
/// task written again without them loses them.
pub fn a_tiled_job_keeps_its_grid_and_handed_on_files(open: Open) {
    use super::{job, task};
    use drqueue_common::model::TaskStatus;
    use drqueue_common::tiles::Tiles;
    let mut s = open("tiled");
    let mut j = job(7);
    j.spec.tiles = Some(Tiles {
        cols: 3,
        rows: 2,
        overlap: 4,
        width: 1920,
        height: 1080,
        keep: true,
    });
    let mut tile = task(7, 0);
    tile.status = TaskStatus::Done;
    tile.outputs = vec![file("out/tiles/r0c0/frame1.png", Some(BlobHash::of(b"t")))];
    s.commit(&Batch {
        jobs: vec![j.clone()],
        tasks: vec![tile.clone(), task(7, 1)],
        ..Batch::default()
    })
    .expect("commit");
    drop(s);
    let mut s = open("tiled");
    let snap = s.load().expect("load");
    assert_eq!(snap.jobs[0].spec.tiles, j.spec.tiles);
    let mut tasks = snap.tasks;
    tasks.sort_by_key(|t| t.index);
    assert_eq!(tasks[0].outputs, tile.outputs);
    assert!(tasks[1].outputs.is_empty());
    tile.status = TaskStatus::Ready;
    tile.outputs.clear();
    s.commit(&Batch {
        tasks: vec![tile],
        ..Batch::default()
    })
    .expect("commit");
    assert!(s
        .load()
        .expect("load")
        .tasks
        .iter()
        .all(|t| t.outputs.is_empty()));
}
