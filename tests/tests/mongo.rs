//! A farm whose master keeps its state in MongoDB (the test server that
//! scripts/test starts; skipped with a visible line when there is none).

use drqueue_common::model::{JobStatus, TaskStatus};
use drqueue_tests::{bin, eventually, test_mongo_db, Farm, TestMongo};
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
    let id = farm.submit_counting("1-16", "0.3");
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
        assert_eq!(farm.runs_of(t), 1, "task {t} ran {} times", farm.runs_of(t));
    }
    // Logs and engines live in MongoDB too.
    let log = farm.drqueue(&["log", &id.to_string(), "5", "--raw"]);
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
    let id = farm.submit_counting("1-40", "0.3");
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
        assert_eq!(farm.runs_of(t), 1, "task {t} ran {} times", farm.runs_of(t));
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

/// Kills the standby master when the test ends, whatever happens.
struct Reaper(std::process::Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// How the active master fails in a takeover test.
#[derive(Clone, Copy, PartialEq)]
enum Failure {
    Kill,
    /// SIGSTOP: frozen with its sockets open, then woken after the takeover.
    Freeze,
}

/// When a master's log says something, from the log line's own UTC time.
fn logged_at(log: &str, what: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    let line = log.lines().find(|l| l.contains(what))?;
    let stamp = line.split_whitespace().next()?;
    chrono::DateTime::parse_from_rfc3339(stamp)
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc))
}

const LEASE_S: u64 = 3;

fn a_standby_takes_over(failure: Failure) {
    let Some(db) = test_mongo_db("standby") else {
        return;
    };
    let lease = LEASE_S.to_string();
    let mut farm = Farm::start_on(Some(&db), &["--lease", &lease]);
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let (http2, zmq2) = (free(), free());
    let ready2 = farm.dir.join("ready2.json");
    let log2 = farm.dir.join("standby.log");
    let _standby = Reaper(
        std::process::Command::new(bin("drqueue-master"))
            .args(["--db", &db, "--lease", &lease])
            // A standby shares the active master's keys dir: engines trust
            // one master key, and enrollment lives beside it.
            .arg("--keys-dir")
            .arg(farm.dir.join("keys"))
            .args([
                "--http",
                &format!("127.0.0.1:{http2}"),
                "--engines",
                &format!("tcp://127.0.0.1:{zmq2}"),
            ])
            .arg("--ready-file")
            .arg(&ready2)
            .stderr(std::fs::File::create(&log2).unwrap())
            .spawn()
            .unwrap(),
    );
    let standby_log = || std::fs::read_to_string(&log2).unwrap_or_default();
    eventually(LONG, "the second master to wait as a standby", || {
        standby_log().contains("standby").then_some(())
    });
    let masters = format!("{},tcp://127.0.0.1:{zmq2}", farm.engines_endpoint);
    farm.engine("a", &["--master", &masters, "--slots", "2"]);
    farm.engine("b", &["--master", &masters, "--slots", "2"]);
    farm.wait_engines(2);
    let tasks = 80;
    let id = farm.submit_counting(&format!("1-{tasks}"), "0.5");
    let c = farm.client();
    // A healthy active master keeps its lease: past two leases the standby
    // still waits and the active one still serves.
    std::thread::sleep(Duration::from_secs(2 * LEASE_S + 1));
    assert!(
        !ready2.exists(),
        "the standby took over from a healthy master:\n{}",
        standby_log()
    );
    let before = c.job(id).expect("the active master still serves");
    assert!(
        before.counts.get(TaskStatus::Done) < tasks as u64,
        "the job must still be running at the failure"
    );
    let failed_at = chrono::Utc::now();
    let pid = farm.master_pid().expect("the active master runs");
    match failure {
        Failure::Kill => farm.kill_master(),
        Failure::Freeze => drqueue_tests::signal(pid, libc::SIGSTOP),
    }
    eventually(LONG, "the standby to take over", || {
        ready2.exists().then_some(())
    });
    // The lease bounds the takeover: its last renewal came at most a lease
    // before the failure's moment, so the standby holds it by lease + 1 s.
    let took_over = logged_at(&standby_log(), "took over").expect("takeover logged");
    let delay = (took_over - failed_at).num_milliseconds();
    assert!(
        delay <= (LEASE_S as i64 + 1) * 1000,
        "the standby took over {delay} ms after the failure; the lease is {LEASE_S} s"
    );
    if failure == Failure::Freeze {
        // Woken, the old master finds its lease taken and stops.
        drqueue_tests::signal(pid, libc::SIGCONT);
        eventually(LONG, "the woken master to stop", || farm.master_exited());
    }
    let c2 = drqueue_client::Client::new(Some(&format!("http://127.0.0.1:{http2}")), None);
    let job = eventually(LONG, "the job to end on the new master", || {
        let v = c2.job(id).ok()?;
        v.status.is_terminal().then_some(v)
    });
    assert_eq!(
        (job.status, job.counts.get(TaskStatus::Done)),
        (JobStatus::Done, tasks as u64)
    );
    for t in 0..tasks {
        assert_eq!(farm.runs_of(t), 1, "task {t} ran {} times", farm.runs_of(t));
    }
    for t in c2.tasks(id, None).unwrap() {
        assert!(t.attempts >= 1, "task {} is done with attempts 0", t.index);
        let log = c2.log(id, t.index, None, 0).expect("a readable log");
        let text = String::from_utf8_lossy(&log.data);
        assert!(
            text.contains(&format!("task {}", t.index)),
            "task {}'s log: {text:?}",
            t.index
        );
    }
    assert_eq!(
        c2.engines()
            .unwrap()
            .iter()
            .filter(|e| e.state.as_str() != "offline")
            .count(),
        2,
        "both engines found the new master"
    );
}

#[test]
fn a_standby_master_takes_over_when_the_active_one_is_killed() {
    a_standby_takes_over(Failure::Kill);
}

#[test]
fn a_standby_master_takes_over_when_the_active_one_freezes() {
    a_standby_takes_over(Failure::Freeze);
}
