//! No process a task starts outlives it: not one that leaves its process
//! group (`setsid`, double fork), and not when the engine is killed with -9.
//! Checked by scanning /proc for a marker argument, with both mechanisms.

use drqueue_common::model::{JobStatus, TaskStatus};
use drqueue_tests::{eventually, Farm};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(120);

/// Live processes (not zombies) whose command line holds `marker`.
fn alive_with(marker: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let zombie = stat
                .rfind(')')
                .is_some_and(|i| stat[i + 1..].trim_start().starts_with('Z'));
            !zombie && String::from_utf8_lossy(&cmdline).contains(marker)
        })
        .collect()
}

fn marker(name: &str) -> String {
    format!("drqueue-marker-{}-{name}", std::process::id())
}

fn escapees_end_with_their_task(containment: &str) {
    let mut farm = Farm::start();
    farm.engine("e", &["--containment", containment]);
    let mark = marker(&format!("escape-{containment}"));
    let script = format!(
        "(setsid sh -c 'sleep 300; : {mark}' &); setsid sh -c 'sleep 300; : {mark}' & echo started"
    );
    let id = farm.submit(&["--frames", "1", "--", "sh", "-c", &script]);
    assert_eq!(farm.wait_job(id, LONG).status, JobStatus::Done);
    eventually(LONG, "the escapees to be gone", || {
        alive_with(&mark).is_empty().then_some(())
    });
    let shown = farm.drqueue(&["engine", "show", "e"]);
    let shown = String::from_utf8_lossy(&shown.stdout).to_string();
    let expected = if containment == "marker" {
        "process marker"
    } else {
        "cgroup v2"
    };
    assert!(shown.contains(expected), "{shown}");
}

#[test]
fn setsid_and_double_forked_escapees_end_with_their_task_in_a_cgroup() {
    escapees_end_with_their_task("auto");
}

#[test]
fn setsid_and_double_forked_escapees_end_with_their_task_by_marker() {
    escapees_end_with_their_task("marker");
}

/// `kill -9` of the engine: its next start ends what the last one left, and
/// the task runs again with no orphan beside it.
fn a_killed_engine_leaves_nothing_running(containment: &str) {
    let mut farm = Farm::start();
    let e = farm.engine("k", &["--containment", containment]);
    let mark = marker(&format!("kill-{containment}"));
    let flag = farm.dir.join("second-run");
    // The first run waits long; the second (after the restart) ends at once.
    let script = format!(
        "if [ -e {flag} ]; then exit 0; fi; touch {flag}; setsid sh -c 'sleep 300; : {mark}' & sleep 300; : {mark}",
        flag = flag.display()
    );
    let id = farm.submit(&["--frames", "1", "--", "sh", "-c", &script]);
    let c = farm.client();
    eventually(LONG, "the task and its escapee to run", || {
        let running = c.tasks(id, Some(TaskStatus::Running)).ok()?;
        (!running.is_empty() && alive_with(&mark).len() >= 2).then_some(())
    });
    farm.signal_engine(e, libc::SIGKILL);
    assert!(
        !alive_with(&mark).is_empty(),
        "nothing to prove: the task died with the engine"
    );
    farm.engine("k", &["--containment", containment]);
    eventually(LONG, "the restarted engine to end what was left", || {
        alive_with(&mark).is_empty().then_some(())
    });
    assert_eq!(farm.wait_job(id, LONG).status, JobStatus::Done);
    assert!(alive_with(&mark).is_empty());
}

#[test]
fn a_killed_engine_leaves_nothing_running_in_a_cgroup() {
    a_killed_engine_leaves_nothing_running("auto");
}

#[test]
fn a_killed_engine_leaves_nothing_running_by_marker() {
    a_killed_engine_leaves_nothing_running("marker");
}

/// `drqueue engine revoke` mid-task: the engine stops the task (nothing of
/// it survives) and exits for good (status 78), the task runs elsewhere, and
/// the engine is refused when it comes back.
#[test]
fn a_revoked_engine_stops_its_task_which_runs_elsewhere() {
    let mut farm = Farm::start();
    let victim = farm.engine("victim", &[]);
    let mark = marker("revoke");
    let flag = farm.dir.join("ran-once");
    // Only the first run's long-lived shell carries the whole marker: the
    // script holds it in two halves, so the retry on the other engine (a
    // short-lived shell running the same script) is never taken for it.
    let (head, tail) = mark.split_at(mark.len() - 3);
    let script = format!(
        "if [ -e {flag} ]; then exit 0; fi; touch {flag}; A={head}; B={tail}; exec sh -c \"sleep 300; : $A$B\"",
        flag = flag.display()
    );
    let id = farm.submit(&["--frames", "1", "--", "sh", "-c", &script]);
    let c = farm.client();
    eventually(LONG, "the task to run on the victim", || {
        (!alive_with(&mark).is_empty()).then_some(())
    });
    farm.engine("other", &[]);
    farm.wait_engines(2);
    let out = farm.drqueue(&["engine", "revoke", "victim"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = eventually(LONG, "the revoked engine to exit", || {
        farm.engine_exited(victim)
    });
    assert_eq!(status.code(), Some(78), "{}", farm.engine_log("victim"));
    assert!(
        alive_with(&mark).is_empty(),
        "the revoked engine's task survived"
    );
    assert_eq!(farm.wait_job(id, LONG).status, JobStatus::Done);
    let engines = c.engines().unwrap();
    let other = engines.iter().find(|e| e.name == "other").unwrap();
    assert_eq!(
        c.tasks(id, None).unwrap()[0].engine.as_ref(),
        Some(&other.id)
    );
    let revoked = engines.iter().find(|e| e.name == "victim").unwrap();
    assert_eq!(revoked.state.as_str(), "revoked");
    // Back again with the same identity: refused, and it exits at once.
    let again = farm.engine("victim", &[]);
    let status = eventually(LONG, "the revoked engine to be refused", || {
        farm.engine_exited(again)
    });
    assert_eq!(status.code(), Some(78));
    assert!(farm.engine_log("victim").contains("revoked"));
}
