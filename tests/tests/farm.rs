//! A working farm: real master, real engines, real CLI.

use drqueue_common::model::{JobId, JobStatus, TaskStatus};
use drqueue_tests::{eventually, Farm};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(120);

/// A task's attempt history from the HTTP API.
fn attempts_of(farm: &Farm, job: JobId, task: u32) -> serde_json::Value {
    ureq::get(format!(
        "{}/api/jobs/{job}/tasks/{task}/attempts",
        farm.http
    ))
    .call()
    .unwrap()
    .into_body()
    .read_json()
    .unwrap()
}

#[test]
fn two_engines_render_every_frame_exactly_once() {
    let mut farm = Farm::start();
    farm.engine("a", &["--slots", "2"]);
    farm.engine("b", &["--slots", "2"]);
    std::fs::create_dir_all(farm.dir.join("frames")).unwrap();
    let id = farm.submit(&[
        "--frames",
        "1-100",
        "--blocksize",
        "10",
        "--name",
        "hundred",
        "--",
        "sh",
        "-c",
        r#"echo "task $1" >> "frames/$0.txt""#,
        "{padframe:4}",
        "{task}",
    ]);
    let out = farm.drqueue(&["wait", &id.to_string()]);
    assert!(
        out.status.success(),
        "wait: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in 1..=100 {
        let path = farm.dir.join(format!("frames/{f:04}.txt"));
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|_| panic!("frame {f} was not rendered"));
        assert_eq!(
            text.lines().count(),
            1,
            "frame {f} rendered {} times",
            text.lines().count()
        );
    }
    let job = farm.client().job(id).unwrap();
    assert_eq!(job.status, JobStatus::Done);
    assert_eq!(job.tasks_total, 10);
    assert_eq!(job.counts.get(TaskStatus::Done), 10);
    assert_eq!(job.counts.total(), 10);
    // Both engines took part, and the JSON listing has SPEC's fields.
    let tasks = farm.drqueue(&["tasks", &id.to_string(), "--json"]);
    let tasks: serde_json::Value = serde_json::from_slice(&tasks.stdout).unwrap();
    let engines: std::collections::BTreeSet<&str> = tasks
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["engine"].as_str().unwrap())
        .collect();
    assert_eq!(engines.len(), 2, "both engines ran tasks");
    for field in ["index", "first", "last", "status", "attempts", "engine"] {
        assert!(tasks[0].get(field).is_some(), "tasks --json lacks {field}");
    }
    let show: serde_json::Value =
        serde_json::from_slice(&farm.drqueue(&["show", &id.to_string(), "--json"]).stdout).unwrap();
    for field in [
        "id",
        "name",
        "owner",
        "status",
        "priority",
        "pool",
        "counts",
        "tasks_total",
        "blocked",
    ] {
        assert!(show.get(field).is_some(), "show --json lacks {field}");
    }
    assert_eq!(show["counts"].as_object().unwrap().len(), 7);
    // Each task's attempt history, its completing attempt included.
    let attempts: serde_json::Value = attempts_of(&farm, id, 0);
    let attempts = attempts.as_array().unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(
        (
            attempts[0]["attempt"]["attempt"].as_u64(),
            attempts[0]["counted"].as_bool()
        ),
        (Some(1), Some(true))
    );
    assert_eq!(attempts[0]["outcome"]["exit_code"], 0);
    let jobs: serde_json::Value =
        serde_json::from_slice(&farm.drqueue(&["jobs", "--json"]).stdout).unwrap();
    assert_eq!(jobs.as_array().unwrap().len(), 1);
    let engines: serde_json::Value =
        serde_json::from_slice(&farm.drqueue(&["engines", "--json"]).stdout).unwrap();
    for field in [
        "id",
        "name",
        "hostname",
        "os",
        "cores",
        "ram_mb",
        "pools",
        "capabilities",
        "state",
        "slots",
        "hwm",
        "running",
    ] {
        assert!(
            engines[0].get(field).is_some(),
            "engines --json lacks {field}"
        );
    }
}

#[test]
fn an_engine_never_holds_more_than_its_hwm() {
    let mut farm = Farm::start();
    let e = farm.engine("h", &["--hwm", "2", "--slots", "1"]);
    let id = farm.submit(&["--frames", "1-12", "--", "sleep", "0.1"]);
    let job = farm.wait_job(id, LONG);
    assert_eq!(job.status, JobStatus::Done);
    // The engine's own record…
    let stats: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(farm.engines[e].state_dir.join("stats.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        stats["peak_held"], 2,
        "the engine should prefetch exactly up to its HWM"
    );
    // …and the master's.
    let engines = farm.client().engines().unwrap();
    assert_eq!(engines[0].hwm, 2);
    assert_eq!(engines[0].peak_outstanding, 2);
    assert!(engines[0].peak_held <= 2);
}

#[test]
fn a_high_priority_job_submitted_later_starts_first() {
    let mut farm = Farm::start();
    farm.engine("p", &["--hwm", "1", "--slots", "1"]);
    farm.wait_engines(1);
    let busy = farm.submit(&["--name", "busy", "--", "sleep", "1"]);
    let c = farm.client();
    eventually(LONG, "the busy job to start", || {
        (c.job(busy).ok()?.status == JobStatus::Running).then_some(())
    });
    let low = farm.submit(&[
        "--name",
        "low",
        "--frames",
        "1-3",
        "--priority",
        "100",
        "--",
        "true",
    ]);
    let high = farm.submit(&[
        "--name",
        "high",
        "--frames",
        "1-3",
        "--priority",
        "900",
        "--",
        "true",
    ]);
    for id in [busy, low, high] {
        assert_eq!(farm.wait_job(id, LONG).status, JobStatus::Done);
    }
    let first_start = |id| {
        c.tasks(id, None)
            .unwrap()
            .iter()
            .map(|t| t.started_ms.unwrap())
            .min()
            .unwrap()
    };
    let last_high = c
        .tasks(high, None)
        .unwrap()
        .iter()
        .map(|t| t.started_ms.unwrap())
        .max()
        .unwrap();
    assert!(
        last_high <= first_start(low),
        "every high-priority task starts before any low-priority one"
    );
}

#[test]
fn a_failing_command_is_retried_then_fails_the_job_with_a_log_per_attempt() {
    let mut farm = Farm::start();
    farm.engine("f", &[]);
    let id = farm.submit(&[
        "--max-attempts",
        "3",
        "--",
        "sh",
        "-c",
        "echo attempt $DRQUEUE_ATTEMPT; exit 3",
    ]);
    let out = farm.drqueue(&["wait", &id.to_string()]);
    assert_eq!(out.status.code(), Some(1), "wait exits 1 on a failed job");
    assert!(String::from_utf8_lossy(&out.stderr).contains("failed"));
    let job = farm.client().job(id).unwrap();
    assert_eq!(job.status, JobStatus::Failed);
    let tasks = farm.client().tasks(id, None).unwrap();
    assert_eq!(
        (tasks[0].status, tasks[0].attempts, tasks[0].exit_code),
        (TaskStatus::Failed, 3, Some(3))
    );
    for attempt in 1..=3 {
        let out = farm.drqueue(&[
            "log",
            &id.to_string(),
            "0",
            "--raw",
            "--attempt",
            &attempt.to_string(),
        ]);
        assert!(out.status.success());
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("attempt {attempt}\n")
        );
    }
    // The latest attempt by default; a missing one is a clear error.
    let out = farm.drqueue(&["log", &id.to_string(), "0", "--raw"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "attempt 3\n");
    let out = farm.drqueue(&["log", &id.to_string(), "0", "--attempt", "9"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no attempt 9"));
    // Every failed attempt is in the history.
    let history: serde_json::Value = attempts_of(&farm, id, 0);
    let codes: Vec<i64> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["outcome"]["exit_code"].as_i64().unwrap())
        .collect();
    assert_eq!(codes, vec![3, 3, 3]);
    // `show` names the failed task and how to read its log.
    let show =
        String::from_utf8_lossy(&farm.drqueue(&["show", &id.to_string()]).stdout).to_string();
    assert!(
        show.contains(&format!("exit code 3: drqueue log {id} 0")),
        "{show}"
    );
    // retry puts it back and it fails the same way again
    assert!(farm.drqueue(&["retry", &id.to_string()]).status.success());
    assert_eq!(farm.wait_job(id, LONG).status, JobStatus::Failed);
    assert_eq!(farm.client().tasks(id, None).unwrap()[0].attempts, 6);
}

#[test]
fn cancel_kills_running_tasks_and_the_job_ends_cancelled() {
    let mut farm = Farm::start();
    farm.engine("c", &[]);
    let id = farm.submit(&["--", "sh", "-c", "echo $$ > sleeper.pid; exec sleep 600"]);
    let pid_file = farm.dir.join("sleeper.pid");
    let pid: i32 = eventually(LONG, "the sleeper to start", || {
        std::fs::read_to_string(&pid_file).ok()?.trim().parse().ok()
    });
    assert!(farm.drqueue(&["cancel", &id.to_string()]).status.success());
    let job = farm.wait_job(id, LONG);
    assert_eq!(job.status, JobStatus::Cancelled);
    eventually(LONG, "sleep 600 to be killed", || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        (stat.is_empty() || stat.contains(") Z")).then_some(())
    });
    assert_eq!(
        farm.drqueue(&["wait", &id.to_string()]).status.code(),
        Some(1)
    );
}

#[test]
fn pause_holds_new_tasks_and_resume_finishes_the_job() {
    let mut farm = Farm::start();
    farm.engine("p", &[]);
    let id = farm.submit(&["--paused", "--frames", "1-3", "--", "true"]);
    let job = farm.client().job(id).unwrap();
    assert_eq!(job.status, JobStatus::Paused);
    assert_eq!(job.blocked, vec!["paused".to_string()]);
    assert!(farm.drqueue(&["resume", &id.to_string()]).status.success());
    assert_eq!(farm.wait_job(id, LONG).status, JobStatus::Done);
    // delete needs a finished job, or --force
    assert!(farm.drqueue(&["delete", &id.to_string()]).status.success());
    assert_eq!(
        farm.drqueue(&["show", &id.to_string()]).status.code(),
        Some(1)
    );
}

#[test]
fn a_job_in_an_empty_pool_says_why_it_waits() {
    let mut farm = Farm::start();
    farm.engine("d", &[]);
    farm.wait_engines(1);
    let id = farm.submit(&["--pool", "gpu", "--", "true"]);
    let show: serde_json::Value =
        serde_json::from_slice(&farm.drqueue(&["show", &id.to_string(), "--json"]).stdout).unwrap();
    assert_eq!(
        show["blocked"],
        serde_json::json!(["no engine in pool `gpu`"])
    );
    let human =
        String::from_utf8_lossy(&farm.drqueue(&["show", &id.to_string()]).stdout).to_string();
    assert!(human.contains("no engine in pool `gpu`"), "{human}");
    farm.engine_with_env("g", &[], &[("DRQUEUE_POOL", "gpu,lookdev")]);
    assert_eq!(farm.wait_job(id, LONG).status, JobStatus::Done);
    let pools: serde_json::Value =
        serde_json::from_slice(&farm.drqueue(&["pools", "--json"]).stdout).unwrap();
    let names: Vec<&str> = pools
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["default", "gpu", "lookdev"]);
}

#[test]
fn a_task_over_its_timeout_is_killed_and_counts_as_failed() {
    let mut farm = Farm::start();
    farm.engine("t", &[]);
    let id = farm.submit(&[
        "--timeout",
        "1",
        "--max-attempts",
        "1",
        "--",
        "sh",
        "-c",
        "echo started; exec sleep 600",
    ]);
    let job = farm.wait_job(id, LONG);
    assert_eq!(job.status, JobStatus::Failed);
    let log = farm.drqueue(&["log", &id.to_string(), "0", "--raw"]);
    let text = String::from_utf8_lossy(&log.stdout).to_string();
    assert!(
        text.starts_with("started\n") && text.contains("killed after the job's timeout of 1 s"),
        "{text}"
    );
}

#[test]
fn log_follow_streams_a_running_attempt_until_it_ends() {
    let mut farm = Farm::start();
    farm.engine("f", &[]);
    let id = farm.submit(&[
        "--",
        "sh",
        "-c",
        "for i in 1 2 3; do echo line $i; sleep 0.4; done",
    ]);
    let c = farm.client();
    eventually(LONG, "the task to start", || {
        (c.job(id).ok()?.counts.get(TaskStatus::Running) > 0).then_some(())
    });
    let out = farm.drqueue(&["log", &id.to_string(), "0", "--follow"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("── job 1 task 0"), "a header: {text}");
    assert!(
        text.contains("── exit code 0 · wall"),
        "a footer from the record: {text}"
    );
    let out = farm.drqueue(&["log", &id.to_string(), "0", "--raw"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "line 1\nline 2\nline 3\n"
    );
}

#[test]
fn a_limit_of_one_never_lets_two_tasks_overlap() {
    let mut farm = Farm::start();
    farm.engine("a", &["--slots", "2"]);
    farm.engine("b", &["--slots", "2"]);
    farm.wait_engines(2);
    let out = farm.drqueue(&["limit", "set", "lic", "1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = farm.submit(&["--frames", "1-4", "--limit", "lic", "--", "sleep", "0.3"]);
    let c = farm.client();
    eventually(LONG, "a task to hold the token", || {
        let l = c.limits().ok()?;
        (l.len() == 1 && l[0].in_use == 1).then_some(())
    });
    let show: serde_json::Value =
        serde_json::from_slice(&farm.drqueue(&["show", &id.to_string(), "--json"]).stdout).unwrap();
    assert_eq!(
        show["blocked"],
        serde_json::json!(["limit `lic` 1/1 in use"])
    );
    assert_eq!(farm.wait_job(id, LONG).status, JobStatus::Done);
    let mut spans: Vec<(u64, u64)> = c
        .tasks(id, None)
        .unwrap()
        .iter()
        .map(|t| (t.started_ms.unwrap(), t.ended_ms.unwrap()))
        .collect();
    spans.sort();
    for w in spans.windows(2) {
        assert!(
            w[0].1 <= w[1].0,
            "tasks overlapped: {:?} and {:?}",
            w[0],
            w[1]
        );
    }
    let limits: serde_json::Value =
        serde_json::from_slice(&farm.drqueue(&["limits", "--json"]).stdout).unwrap();
    assert_eq!(
        limits,
        serde_json::json!([{"name": "lic", "count": 1, "in_use": 0}])
    );
    // The limit survives a master restart.
    farm.kill_master();
    farm.start_master();
    assert_eq!(farm.client().limits().unwrap()[0].count, 1);
}
