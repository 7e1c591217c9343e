//! A farm whose master keeps its state in MongoDB (the test server that
//! scripts/test starts; skipped with a visible line when there is none).

use drqueue_common::model::{JobStatus, TaskStatus};
use drqueue_tests::{eventually, test_mongo_db, Farm, TestMongo};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(180);

#[test]
fn a_farm_on_mongodb_survives_a_killed_master_with_nothing_run_twice() {
    let Some(db) = test_mongo_db("farm") else {
        return;
    };
    let mut farm = Farm::start_on(Some(&db), &[]);
    farm.engine("a", &["--slots", "2"]);
    farm.engine("b", &["--slots", "2"]);
    farm.wait_engines(2);
    std::fs::create_dir_all(farm.dir.join("runs")).unwrap();
    let id = farm.submit(&[
        "--frames",
        "1-16",
        "--",
        "sh",
        "-c",
        "echo run >> runs/$0.txt; echo task $0; sleep 0.3",
        "{task}",
    ]);
    let c = farm.client();
    eventually(LONG, "some tasks done", || {
        (c.job(id).ok()?.counts.get(TaskStatus::Done) >= 3).then_some(())
    });
    farm.kill_master();
    farm.start_master();
    let job = farm.wait_job(id, LONG);
    assert_eq!(
        (job.status, job.counts.get(TaskStatus::Done)),
        (JobStatus::Done, 16)
    );
    for t in 0..16 {
        let runs =
            std::fs::read_to_string(farm.dir.join(format!("runs/{t}.txt"))).unwrap_or_default();
        assert_eq!(
            runs.lines().count(),
            1,
            "task {t} ran {} times",
            runs.lines().count()
        );
    }
    // Logs and engines live in MongoDB too.
    let log = farm.drqueue(&["log", &id.to_string(), "5"]);
    assert_eq!(String::from_utf8_lossy(&log.stdout), "task 5\n");
    assert_eq!(c.engines().unwrap().len(), 2);
    // A clean stop and a start on the same database keeps the job.
    assert!(farm.stop_master().success());
    farm.start_master();
    assert_eq!(farm.client().job(id).unwrap().status, JobStatus::Done);
}

#[test]
fn a_mongodb_outage_of_ten_seconds_loses_nothing() {
    let scratch = std::env::temp_dir().join(format!("drqueue-outage-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).unwrap();
    let Some(mut mongo) = TestMongo::start(&scratch) else {
        return;
    };
    let mut farm = Farm::start_on(Some(&mongo.uri("outage")), &[]);
    farm.engine("a", &["--slots", "2"]);
    farm.engine("b", &["--slots", "2"]);
    farm.wait_engines(2);
    std::fs::create_dir_all(farm.dir.join("runs")).unwrap();
    let id = farm.submit(&[
        "--frames",
        "1-40",
        "--",
        "sh",
        "-c",
        "echo run >> runs/$0.txt; sleep 0.3",
        "{task}",
    ]);
    let c = farm.client();
    eventually(LONG, "some tasks done", || {
        (c.job(id).ok()?.counts.get(TaskStatus::Done) >= 4).then_some(())
    });
    mongo.stop();
    std::thread::sleep(Duration::from_secs(10));
    // The master is still up and answering, from what it holds.
    let during = c.job(id).expect("the master answers during the outage");
    assert!(!during.status.is_terminal() || during.counts.get(TaskStatus::Done) == 40);
    mongo.resume();
    let job = farm.wait_job(id, LONG);
    assert_eq!(
        (job.status, job.counts.get(TaskStatus::Done)),
        (JobStatus::Done, 40)
    );
    for t in 0..40 {
        let runs =
            std::fs::read_to_string(farm.dir.join(format!("runs/{t}.txt"))).unwrap_or_default();
        assert_eq!(
            runs.lines().count(),
            1,
            "task {t} ran {} times",
            runs.lines().count()
        );
    }
    // Nothing was lost on the way to MongoDB: a master restarted on it sees the job done.
    assert!(farm.stop_master().success());
    farm.start_master();
    let job = farm.client().job(id).unwrap();
    assert_eq!(
        (job.status, job.counts.get(TaskStatus::Done)),
        (JobStatus::Done, 40)
    );
    let _ = std::fs::remove_dir_all(&scratch);
}
