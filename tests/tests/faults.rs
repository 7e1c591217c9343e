//! Nothing is lost: engines and the master die mid-job, the job still ends
//! done, and (when the engine survived) no task ran twice.

use drqueue_common::model::{JobId, JobStatus, TaskStatus};
use drqueue_tests::{eventually, Farm};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(180);

fn running_on(farm: &Farm, job: JobId, engine_name: &str) -> bool {
    let c = farm.client();
    let id = c
        .engines()
        .unwrap()
        .into_iter()
        .find(|e| e.name == engine_name)
        .map(|e| e.id);
    c.tasks(job, Some(TaskStatus::Running))
        .unwrap()
        .iter()
        .any(|t| t.engine == id)
}

#[test]
fn a_task_on_a_killed_engine_runs_elsewhere() {
    let mut farm = Farm::start();
    let victim = farm.engine("victim", &[]);
    farm.engine("survivor", &[]);
    farm.wait_engines(2);
    let id = farm.submit_counting("1-4", "1");
    eventually(LONG, "a task running on the victim", || {
        running_on(&farm, id, "victim").then_some(())
    });
    farm.signal_engine(victim, libc::SIGKILL);
    let job = farm.wait_job(id, LONG);
    assert_eq!(job.status, JobStatus::Done);
    assert_eq!(job.counts.get(TaskStatus::Done), 4);
    let engines = farm.client().engines().unwrap();
    let victim = engines.iter().find(|e| e.name == "victim").unwrap();
    assert_eq!(victim.state.as_str(), "offline");
    for t in 0..4 {
        assert!(farm.runs_of(t) >= 1);
    }
}

#[test]
fn a_stopped_engine_is_noticed_and_its_late_result_does_not_double_count() {
    let mut farm = Farm::start();
    let frozen = farm.engine("frozen", &[]);
    farm.engine("awake", &[]);
    farm.wait_engines(2);
    let id = farm.submit_counting("1-4", "1");
    eventually(LONG, "a task running on the frozen engine", || {
        running_on(&farm, id, "frozen").then_some(())
    });
    farm.signal_engine(frozen, libc::SIGSTOP);
    let job = farm.wait_job(id, LONG);
    assert_eq!(job.status, JobStatus::Done);
    // Wake it: it reports its stale attempt; the counts must not move.
    farm.signal_engine(frozen, libc::SIGCONT);
    let c = farm.client();
    eventually(LONG, "the woken engine to register again", || {
        c.engines()
            .ok()?
            .iter()
            .find(|e| e.name == "frozen" && e.state.as_str() != "offline")
            .map(|_| ())
    });
    let job = c.job(id).unwrap();
    assert_eq!(
        (
            job.status,
            job.counts.get(TaskStatus::Done),
            job.counts.total()
        ),
        (JobStatus::Done, 4, 4)
    );
}

#[test]
fn the_farm_carries_on_after_the_master_is_killed_and_restarted() {
    let mut farm = Farm::start();
    farm.engine("a", &["--slots", "2"]);
    farm.engine("b", &["--slots", "2"]);
    farm.wait_engines(2);
    let id = farm.submit_counting("1-24", "0.3");
    let c = farm.client();
    eventually(LONG, "some tasks done", || {
        (c.job(id).ok()?.counts.get(TaskStatus::Done) >= 4).then_some(())
    });
    farm.kill_master();
    std::thread::sleep(Duration::from_millis(500));
    farm.start_master();
    let job = farm.wait_job(id, LONG);
    assert_eq!(job.status, JobStatus::Done);
    assert_eq!(job.counts.get(TaskStatus::Done), 24);
    for t in 0..24 {
        assert_eq!(
            farm.runs_of(t),
            1,
            "task {t} ran {} times; the engines survived, so once was enough",
            farm.runs_of(t)
        );
    }
    // A job submitted after the restart runs too, with ids carrying on.
    let next = farm.submit(&["--", "true"]);
    assert!(next > id);
    assert_eq!(farm.wait_job(next, LONG).status, JobStatus::Done);
}

#[test]
fn a_master_stopped_cleanly_keeps_everything() {
    let mut farm = Farm::start();
    let id = farm.submit(&["--frames", "1-5", "--", "true"]);
    let status = farm.stop_master();
    assert!(status.success(), "SIGTERM is a clean exit");
    farm.start_master();
    let job = farm.client().job(id).unwrap();
    assert_eq!((job.status, job.tasks_total), (JobStatus::Queued, 5));
    farm.engine("late", &[]);
    assert_eq!(farm.wait_job(id, LONG).status, JobStatus::Done);
}

/// Three jobs running a program no engine has fail the same way everywhere:
/// that is the jobs' fault, so no engine is made sick, and a good job then
/// runs at once (not after the check interval).
#[test]
fn jobs_with_a_missing_program_sicken_no_engine() {
    let mut farm = drqueue_tests::Farm::start_with(&["--sick-after", "3"]);
    for i in 0..4 {
        farm.engine(&format!("e{i}"), &[]);
    }
    farm.wait_engines(4);
    let bad: Vec<_> = (0..3)
        .map(|_| farm.submit(&["--frames", "1-4", "--", "/no/such/renderer"]))
        .collect();
    for id in bad {
        assert_eq!(
            farm.wait_job(id, std::time::Duration::from_secs(120))
                .status,
            drqueue_common::model::JobStatus::Failed
        );
    }
    let engines = farm.client().engines().unwrap();
    let sick: Vec<_> = engines.iter().filter(|e| e.sick.is_some()).collect();
    assert!(sick.is_empty(), "sick engines: {sick:?}");
    let log = farm.master_log();
    assert!(!log.contains("engine is sick"), "{log}");
    let good = farm.submit(&["--", "true"]);
    assert_eq!(
        farm.wait_job(good, std::time::Duration::from_secs(120))
            .status,
        drqueue_common::model::JobStatus::Done
    );
}
