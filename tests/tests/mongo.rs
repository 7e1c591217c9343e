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

/// A second master on the same database, waiting as a standby: it shares
/// the active master's keys dir (engines trust one master key, and
/// enrollment lives beside it). Killed when dropped.
struct Standby {
    http: u16,
    zmq: u16,
    ready: std::path::PathBuf,
    log_path: std::path::PathBuf,
    _process: Reaper,
}

impl Standby {
    fn start(farm: &Farm, db: &str, extra: &[&str]) -> Standby {
        let free = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        };
        let (http, zmq) = (free(), free());
        let ready = farm.dir.join("ready2.json");
        let log_path = farm.dir.join("standby.log");
        let lease = LEASE_S.to_string();
        let process = Reaper(
            std::process::Command::new(bin("drqueue-master"))
                .args(["--db", db, "--lease", &lease, "--no-advertise"])
                .arg("--keys-dir")
                .arg(farm.dir.join("keys"))
                .args(["--http", &format!("127.0.0.1:{http}")])
                .args(["--engines", &format!("tcp://127.0.0.1:{zmq}")])
                .args(extra)
                .arg("--ready-file")
                .arg(&ready)
                .stderr(std::fs::File::create(&log_path).unwrap())
                .spawn()
                .unwrap(),
        );
        let standby = Standby {
            http,
            zmq,
            ready,
            log_path,
            _process: process,
        };
        eventually(LONG, "the second master to wait as a standby", || {
            standby.log().contains("standby").then_some(())
        });
        standby
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

const LEASE_S: u64 = 3;

fn a_standby_takes_over(failure: Failure) {
    let Some(db) = test_mongo_db("standby") else {
        return;
    };
    let lease = LEASE_S.to_string();
    let mut farm = Farm::start_on(Some(&db), &["--lease", &lease]);
    let standby = Standby::start(&farm, &db, &[]);
    let (http2, zmq2, ready2) = (standby.http, standby.zmq, standby.ready.clone());
    let standby_log = || standby.log();
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

/// Two masters on MongoDB share one `--cas-dir`: a job whose folder was
/// uploaded to the active one goes on after a takeover. An engine that
/// joins afterwards fetches the inputs from the standby, and every task's
/// collected output, from both masters' time, downloads from it.
#[test]
fn an_uploaded_job_goes_on_after_a_takeover_from_the_shared_content_store() {
    let Some(db) = test_mongo_db("cas-standby") else {
        return;
    };
    let lease = LEASE_S.to_string();
    let cas = std::env::temp_dir().join(format!("drqueue-shared-cas-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cas);
    let cas_arg = cas.display().to_string();
    let mut farm = Farm::start_on(Some(&db), &["--lease", &lease, "--cas-dir", &cas_arg]);
    let standby = Standby::start(&farm, &db, &["--cas-dir", &cas_arg]);
    let scene = farm.dir.join("scene");
    std::fs::create_dir_all(&scene).unwrap();
    std::fs::write(scene.join("input.txt"), "from the content store\n").unwrap();
    let masters = format!("{},tcp://127.0.0.1:{}", farm.engines_endpoint, standby.zmq);
    farm.engine("a", &["--master", &masters]);
    farm.wait_engines(1);
    let tasks = 16u32;
    let id = farm.submit(&[
        "--upload",
        scene.to_str().unwrap(),
        "--collect",
        "out/*.txt",
        "--frames",
        &format!("1-{tasks}"),
        "--",
        "sh",
        "-c",
        "sleep 0.5; mkdir -p out; cp input.txt out/{frame}.txt",
    ]);
    let c = farm.client();
    eventually(LONG, "some tasks done", || {
        (c.job(id).ok()?.counts.get(TaskStatus::Done) >= 2).then_some(())
    });
    farm.kill_master();
    eventually(LONG, "the standby to take over", || {
        standby.ready.exists().then_some(())
    });
    let c2 = drqueue_client::Client::new(Some(&format!("http://127.0.0.1:{}", standby.http)), None);
    // A new engine with an empty cache, and the old one set aside: the rest
    // of the job's inputs come from the standby.
    eventually(LONG, "engine a on the standby", || {
        c2.engine_control("a", "disable").ok()
    });
    farm.engine(
        "b",
        &["--master", &format!("tcp://127.0.0.1:{}", standby.zmq)],
    );
    let job = eventually(LONG, "the job to end on the new master", || {
        let v = c2.job(id).ok()?;
        v.status.is_terminal().then_some(v)
    });
    assert_eq!(job.status, JobStatus::Done, "{}", standby.log());
    let ran_on_b = c2
        .tasks(id, None)
        .unwrap()
        .iter()
        .filter(|t| {
            t.engine
                .as_ref()
                .is_some_and(|e| c2.engine(e.as_str()).is_ok_and(|v| v.name == "b"))
        })
        .count();
    assert!(ran_on_b > 0, "the new engine ran part of the job");
    let down = farm.dir.join("down");
    let got = c2
        .download_outputs(id, &down, &drqueue_client::cas::Quiet)
        .expect("download from the standby");
    if got.files != tasks as usize {
        let attempts: Vec<String> = (0..tasks)
            .map(|t| format!("task {t}: {:?}", c2.attempts(id, t).unwrap()))
            .collect();
        panic!(
            "{} of {tasks} outputs downloaded\n{}",
            got.files,
            attempts.join("\n")
        );
    }
    for f in 1..=tasks {
        assert_eq!(
            std::fs::read_to_string(down.join(format!("out/{f}.txt"))).unwrap(),
            "from the content store\n"
        );
    }
    let _ = std::fs::remove_dir_all(&cas);
}
