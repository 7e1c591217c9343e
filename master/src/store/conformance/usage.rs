//! Usage records in every store: written per attempt, replaced when a
//! result comes again, read from a time on, and kept when their job goes.

use super::{job, task, Open};
use crate::store::{Batch, UsageRecord};
use drqueue_common::model::{EngineId, JobId};

fn usage(job: u64, task: u32, attempt: u32, ended_ms: u64, cpu_ms: u64) -> UsageRecord {
    UsageRecord {
        job: JobId(job),
        task,
        attempt,
        job_name: format!("job {job}"),
        owner: "ann".into(),
        pool: "default".into(),
        engine: EngineId::from("e1"),
        ended_ms,
        cpu_ms,
        wall_ms: cpu_ms + 1,
        peak_rss_kb: 2048,
        ok: attempt > 1,
    }
}

fn read(s: &mut dyn crate::store::Store, since_ms: u64) -> Vec<UsageRecord> {
    let mut out = Vec::new();
    s.usage(since_ms, &mut |u| out.push(u)).expect("usage");
    out
}

pub fn usage_is_kept_when_its_job_goes(open: Open) {
    let mut s = open("usage");
    s.commit(&Batch {
        jobs: vec![job(1)],
        tasks: vec![task(1, 0)],
        usage: vec![usage(1, 0, 1, 100, 10), usage(1, 0, 2, 200, 20)],
        ..Batch::default()
    })
    .expect("commit");
    // The same attempt's result delivered again replaces, never doubles.
    s.commit(&Batch {
        usage: vec![usage(1, 0, 2, 200, 20), usage(2, 3, 2, 300, 30)],
        ..Batch::default()
    })
    .expect("commit");
    let all = read(s.as_mut(), 0);
    assert_eq!(all.len(), 3, "{all:?}");
    assert_eq!(all[0], usage(1, 0, 1, 100, 10), "oldest first, whole");
    assert_eq!(
        read(s.as_mut(), 200)
            .iter()
            .map(|u| u.cpu_ms)
            .collect::<Vec<_>>(),
        vec![20, 30],
        "from a time on"
    );
    s.commit(&Batch {
        deleted_jobs: vec![JobId(1)],
        ..Batch::default()
    })
    .expect("delete");
    assert!(s.load().expect("load").jobs.is_empty(), "the job is gone");
    assert_eq!(read(s.as_mut(), 0).len(), 3, "its usage is not");
    // And it survives reopening the store.
    drop(s);
    let mut again = open("usage");
    assert_eq!(read(again.as_mut(), 0).len(), 3);
}
