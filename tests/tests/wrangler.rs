//! The CLI's daily work, with the real master, engines and the renderer
//! built into the engine: tables with times and engine names, attempts,
//! truthful `watch`, task-level cancel and retry, priority, clean, the
//! submit warning for jobs no engine can run, and run-local's runs.

use drqueue_common::model::{JobStatus, TaskStatus};
use drqueue_tests::{bin, decode_png, Farm};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(120);

fn text(o: &[u8]) -> String {
    String::from_utf8_lossy(o).to_string()
}

#[test]
fn the_built_in_renderer_renders_frames_and_the_tables_show_what_it_cost() {
    let mut farm = Farm::start();
    farm.engine("render-1", &["--slots", "2"]);
    std::fs::create_dir_all(farm.dir.join("frames")).unwrap();
    let engine = bin("drqueue-engine").display().to_string();
    let id = farm.submit(&[
        "--frames",
        "1-4",
        "--blocksize",
        "2",
        "--",
        &engine,
        "render-demo",
        "--frame",
        "{frame}",
        "--output",
        "frames/f_{padframe:4}.png",
        "--width",
        "64",
        "--height",
        "48",
        "--samples",
        "2",
    ]);
    assert_eq!(farm.wait_job(id, LONG).status, JobStatus::Done);
    let frames: Vec<_> = (1..=4)
        .map(|f| decode_png(&farm.dir.join(format!("frames/f_{f:04}.png"))))
        .collect();
    assert!(frames.iter().all(|(w, h, _)| (*w, *h) == (64, 48)));
    assert_ne!(
        frames[0].2, frames[1].2,
        "the moons move from frame to frame"
    );
    // Each frame's thumbnail is served, a PNG no larger than 160 px. (The
    // job reads done from memory; its last thumbnails land with the next
    // commit, milliseconds later.)
    for path in [
        format!("/api/jobs/{id}/frames/3/thumbnail"),
        format!("/api/jobs/{id}/thumbnail"),
    ] {
        let png = drqueue_tests::eventually(LONG, "a thumbnail", || {
            let mut resp = ureq::get(format!("{}{path}", farm.http)).call().ok()?;
            resp.body_mut().read_to_vec().ok()
        });
        let reader = png::Decoder::new(std::io::Cursor::new(png))
            .read_info()
            .expect("a PNG");
        let size = (reader.info().width, reader.info().height);
        assert_eq!(size, (64, 48), "{path}: small images stay");
    }
    let missing = ureq::get(format!("{}/api/jobs/{id}/frames/99/thumbnail", farm.http)).call();
    assert!(
        matches!(missing, Err(ureq::Error::StatusCode(404))),
        "{missing:?}"
    );

    let tasks = text(&farm.drqueue(&["tasks", &id.to_string()]).stdout);
    let header = tasks.lines().next().unwrap_or_default();
    for col in ["ENGINE", "STARTED", "TOOK", "CPU", "PEAK RSS", "EXIT"] {
        assert!(header.contains(col), "{col} in {header}");
    }
    assert!(
        tasks.lines().skip(1).all(|l| l.contains("render-1")),
        "engine names: {tasks}"
    );
    assert!(!tasks.contains("\x1b["), "no colour into a pipe");
    let attempts = farm.drqueue(&["attempts", &id.to_string(), "1"]);
    let attempts = text(&attempts.stdout);
    assert!(attempts.starts_with("ATTEMPT"), "{attempts}");
    assert!(
        attempts
            .lines()
            .nth(1)
            .is_some_and(|l| l.contains("render-1") && l.contains("yes")),
        "{attempts}"
    );
    let log = text(&farm.drqueue(&["log", &id.to_string(), "1"]).stdout);
    assert!(log.contains("drqueue_progress: 100"), "{log}");
    assert!(log.contains("drqueue_output: frames/f_0004.png"), "{log}");
    assert!(
        log.contains("render-demo --frame 3 --output frames/f_0003.png"),
        "the header shows the command: {log}"
    );
}

#[test]
fn watch_off_a_terminal_prints_plain_truthful_lines() {
    let mut farm = Farm::start();
    farm.engine("w", &[]);
    let id = farm.submit(&[
        "--frames",
        "0-2",
        "--max-attempts",
        "1",
        "--",
        "sh",
        "-c",
        "sleep 0.3; test {task} != 1",
    ]);
    let out = farm.drqueue(&["watch", &id.to_string()]);
    assert_eq!(out.status.code(), Some(1), "a failed job");
    let lines = text(&out.stdout);
    let last = lines.lines().last().unwrap_or_default();
    assert!(last.contains("failed | 2/3 done, 1 failed"), "{lines}");
    assert!(
        !lines.contains("3/3 done"),
        "never full before the end: {lines}"
    );
    assert!(lines.lines().count() >= 2, "lines as it goes: {lines}");
    // "running" is what runs: one slot, so never two.
    assert!(
        !lines.contains("2 running") && !lines.contains("3 running"),
        "{lines}"
    );
}

#[test]
fn some_tasks_are_cancelled_and_retried_and_a_priority_changes() {
    let mut farm = Farm::start();
    farm.engine("e", &[]);
    let id = farm.submit(&["--paused", "--frames", "0-5", "--", "true"]);
    let job = id.to_string();
    let ok = |args: &[&str]| {
        let out = farm.drqueue(args);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    };
    ok(&["cancel", &job, "--tasks", "1,3-4"]);
    let c = farm.client();
    assert_eq!(c.job(id).unwrap().counts.get(TaskStatus::Cancelled), 3);
    ok(&["retry", &job, "--tasks", "3"]);
    assert_eq!(c.job(id).unwrap().counts.get(TaskStatus::Cancelled), 2);
    ok(&["priority", &job, "800"]);
    assert_eq!(c.job(id).unwrap().priority, 800);
    for args in [
        vec!["priority", &job, "5000"],
        vec!["cancel", &job, "--tasks", "x"],
        vec!["cancel", &job, "9", "--tasks", "1"],
        vec!["retry", "--all", "--tasks", "1"],
    ] {
        assert_eq!(farm.drqueue(&args).status.code(), Some(2), "{args:?}");
    }
    let out = farm.drqueue(&["cancel", &job, "--tasks", "6"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no task 6"),
        "{}",
        text(&out.stderr)
    );
    // The rest run and are done; with two cancelled the job ends cancelled.
    ok(&["resume", &job]);
    let view = farm.wait_job(id, LONG);
    assert_eq!(view.status, JobStatus::Cancelled);
    assert_eq!(view.counts.get(TaskStatus::Done), 4);
}

#[test]
fn submit_warns_of_a_job_no_engine_can_run_and_can_refuse_it() {
    let mut farm = Farm::start();
    farm.engine("plain", &[]);
    farm.wait_engines(1);
    let scene = farm.dir.join("scene.pov");
    std::fs::write(&scene, "// empty\n").unwrap();
    let scene = scene.display().to_string();
    let out = farm.drqueue(&["submit", "--preset", "povray", "--scene", &scene]);
    assert!(out.status.success(), "accepted: engines may come later");
    let warning = text(&out.stderr);
    assert!(
        warning.contains("warning") && warning.contains("povray"),
        "{warning}"
    );
    let out = farm.drqueue(&[
        "submit",
        "--require-runnable",
        "--preset",
        "povray",
        "--scene",
        &scene,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no engine could run"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        farm.client().jobs(None).unwrap().len(),
        1,
        "the refused job was not made"
    );
    let out = farm.drqueue(&["submit", "--require-runnable", "--", "true"]);
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn clean_deletes_only_ended_jobs_older_than_asked() {
    let mut farm = Farm::start();
    farm.engine("e", &[]);
    let old = farm.submit(&["--", "true"]);
    assert_eq!(farm.wait_job(old, LONG).status, JobStatus::Done);
    let kept = farm.submit(&["--paused", "--", "true"]);
    std::thread::sleep(std::time::Duration::from_millis(1200));
    let fresh = farm.submit(&["--", "true"]);
    assert_eq!(farm.wait_job(fresh, LONG).status, JobStatus::Done);
    assert_eq!(
        farm.drqueue(&["clean", "--older-than", "7x"]).status.code(),
        Some(2)
    );
    let dry = farm.drqueue(&["clean", "--older-than", "1s", "--dry-run"]);
    assert!(
        text(&dry.stdout).lines().count() == 2,
        "{}",
        text(&dry.stdout)
    );
    let out = farm.drqueue(&["clean", "--older-than", "1s"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), format!("job {old} deleted"));
    let left: Vec<_> = farm
        .client()
        .jobs(None)
        .unwrap()
        .iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(left, vec![fresh, kept]);
}

#[test]
fn run_local_keeps_each_runs_logs_and_offers_only_what_applies() {
    let dir = std::env::temp_dir().join(format!("drqueue-run-local-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(bin("drqueue"))
            .arg("run-local")
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("run drqueue")
    };
    for _ in 0..2 {
        let out = run(&[
            "--log-dir",
            "logs",
            "--frames",
            "1-2",
            "--",
            "sh",
            "-c",
            "echo frame {frame}",
        ]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    for n in [1, 2] {
        let log = dir.join(format!("logs/run-{n}/1-0-1.log"));
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            "frame 1\n",
            "{}",
            log.display()
        );
    }
    let out = run(&["--preset", "povray", "--scene", "missing.pov"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("missing.pov: no such file here"),
        "{}",
        text(&out.stderr)
    );
    let help = text(&run(&["--help"]).stdout);
    for farm_only in [
        "--pool",
        "--notify",
        "--limit",
        "--after",
        "--owner",
        "--require",
    ] {
        assert!(
            !help.contains(&format!("{farm_only} ")),
            "{farm_only} in run-local --help"
        );
    }
    assert!(help.contains("--max-attempts"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn run_local_requeues_a_stalled_task_as_the_farm_does() {
    let dir = std::env::temp_dir().join(format!("drqueue-run-local-stall-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = std::process::Command::new(bin("drqueue"))
        .args(["run-local", "--stall-after", "1s", "--", "sh", "-c"])
        .arg("echo working; if [ \"$DRQUEUE_ATTEMPT\" = 1 ]; then exec sleep 600; fi; echo done")
        .current_dir(&dir)
        .output()
        .expect("run drqueue");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let second = std::fs::read_to_string(dir.join("drqueue-local/run-1/1-0-2.log")).unwrap();
    assert_eq!(second, "working\ndone\n");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// One scraped sample's value: `name{labels} value`, exactly that series.
fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{metrics}"))
}

/// `GET /metrics` and `drqueue usage` against jobs whose every attempt the
/// test knows: the counters match what ran, the usage totals match what the
/// engine reported per task, and deleting the jobs leaves the usage alone.
#[test]
fn metrics_and_usage_report_what_the_engines_ran() {
    let (mut farm, admin) = drqueue_tests::farm_with_admin(&[]);
    farm.engine("cruncher", &["--slots", "2"]);
    farm.wait_engines(1);
    let engine = bin("drqueue-engine").display().to_string();
    std::fs::create_dir_all(farm.dir.join("frames")).unwrap();
    let good = farm.submit(&[
        "--name",
        "crunch",
        "--frames",
        "1-4",
        "--",
        &engine,
        "render-demo",
        "--frame",
        "{frame}",
        "--output",
        "frames/u_{frame}.png",
        "--width",
        "96",
        "--height",
        "64",
        "--samples",
        "4",
    ]);
    let bad = farm.submit(&[
        "--name",
        "broken",
        "--max-attempts",
        "2",
        "--",
        "sh",
        "-c",
        "exit 3",
    ]);
    assert_eq!(farm.wait_job(good, LONG).status, JobStatus::Done);
    assert_eq!(farm.wait_job(bad, LONG).status, JobStatus::Failed);

    // What the engine reported for each done task, as `tasks` lists it.
    let tasks = farm.client().tasks(good, None).expect("tasks");
    let cpu_ms: u64 = tasks.iter().map(|t| t.cpu_ms.expect("cpu reported")).sum();
    let peak = tasks.iter().filter_map(|t| t.peak_rss_kb).max().unwrap();
    assert!(cpu_ms > 0, "the renderer used CPU");

    // Metrics: read rules apply (no token, no numbers).
    let anonymous = ureq::get(format!("{}/metrics", farm.http)).call();
    assert!(
        matches!(anonymous, Err(ureq::Error::StatusCode(401))),
        "{anonymous:?}"
    );
    let scrape = || {
        let mut resp = ureq::get(format!("{}/metrics", farm.http))
            .header("Authorization", &format!("Bearer {admin}"))
            .call()
            .expect("scrape");
        let kind = resp
            .headers()
            .get("content-type")
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        assert!(kind.starts_with("text/plain; version=0.0.4"), "{kind}");
        resp.body_mut().read_to_string().unwrap()
    };
    let m = scrape();
    assert_eq!(
        sample(&m, "drqueue_tasks_finished_total{pool=\"default\"}"),
        4.0
    );
    assert_eq!(
        sample(&m, "drqueue_tasks_failed_total{pool=\"default\"}"),
        2.0
    );
    assert_eq!(sample(&m, "drqueue_tasks{status=\"done\"}"), 4.0);
    assert_eq!(sample(&m, "drqueue_tasks{status=\"failed\"}"), 1.0);
    assert_eq!(sample(&m, "drqueue_jobs{status=\"done\"}"), 1.0);
    assert_eq!(sample(&m, "drqueue_slots{pool=\"default\"}"), 2.0);
    assert_eq!(sample(&m, "drqueue_slots_busy{pool=\"default\"}"), 0.0);
    assert_eq!(sample(&m, "drqueue_engines{state=\"idle\"}"), 1.0);
    assert_eq!(sample(&m, "drqueue_stalls_total"), 0.0);
    assert_eq!(sample(&m, "drqueue_requeues_total"), 0.0);
    // Six attempts started, each timed from its submit and its assignment.
    assert_eq!(sample(&m, "drqueue_submit_to_start_seconds_count"), 6.0);
    assert_eq!(sample(&m, "drqueue_dispatch_latency_seconds_count"), 6.0);
    let waited = sample(&m, "drqueue_submit_to_start_seconds_sum");
    assert!(
        waited >= sample(&m, "drqueue_dispatch_latency_seconds_sum"),
        "{m}"
    );
    assert!(sample(&m, "drqueue_store_commit_seconds_count") >= 2.0);
    assert!(
        sample(&m, "drqueue_store_commit_records_sum") >= 10.0,
        "the jobs' tasks were written"
    );

    // Usage: the totals are what the engine reported (the last records land
    // with the commit after the job reads done, milliseconds later).
    let usage = |args: &[&str]| -> serde_json::Value {
        let mut full = vec!["--json", "usage"];
        full.extend_from_slice(args);
        let out = farm.drqueue(&full);
        assert!(out.status.success(), "{}", text(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("usage --json")
    };
    let by_job = drqueue_tests::eventually(LONG, "usage of both jobs", || {
        let r = usage(&["--by", "job"]);
        (r["total"]["tasks"] == 4 && r["total"]["failures"] == 2).then_some(r)
    });
    let crunch = &by_job["rows"][0];
    assert_eq!(crunch["key"], format!("{good} crunch"));
    assert_eq!(crunch["cpu_ms"], cpu_ms, "{by_job}");
    assert_eq!(crunch["peak_rss_kb"], peak);
    assert_eq!(
        (crunch["tasks"].as_u64(), crunch["failures"].as_u64()),
        (Some(4), Some(0))
    );
    let broken = &by_job["rows"][1];
    assert_eq!(
        (broken["tasks"].as_u64(), broken["failures"].as_u64()),
        (Some(0), Some(2))
    );
    let hours = crunch["cpu_hours"].as_f64().unwrap();
    assert!((hours * 3_600_000.0 - cpu_ms as f64).abs() < 1.0, "{hours}");

    // Deleting the jobs does not rewrite history.
    for id in [good, bad] {
        farm.client().delete(id, false).expect("delete");
    }
    let by_owner = usage(&["--by", "owner"]);
    assert_eq!(
        by_owner["rows"].as_array().map(Vec::len),
        Some(1),
        "{by_owner}"
    );
    assert_eq!(by_owner["rows"][0]["key"], "admin");
    assert_eq!(by_owner["total"]["tasks"], 4);
    assert_eq!(by_owner["total"]["failures"], 2);
    assert_eq!(by_owner["total"]["cpu_ms"], by_job["total"]["cpu_ms"]);
    // The API serves the same report; --since leaves older attempts out.
    let api: serde_json::Value = ureq::get(format!("{}/api/usage?by=pool", farm.http))
        .header("Authorization", &format!("Bearer {admin}"))
        .call()
        .expect("GET /api/usage")
        .body_mut()
        .read_json()
        .unwrap();
    assert_eq!(api["rows"][0]["key"], "default");
    assert_eq!(api["total"], by_owner["total"]);
    assert_eq!(
        usage(&["--since", "2099-01-01T00:00:00Z"])["total"]["tasks"],
        0
    );
    let csv = farm.drqueue(&["usage", "--by", "day", "--csv"]);
    let csv = text(&csv.stdout);
    assert!(
        csv.starts_with("day,cpu_hours,wall_hours,tasks,failures,"),
        "{csv}"
    );
    assert_eq!(csv.lines().count(), 2, "{csv}");
    let table = text(&farm.drqueue(&["usage"]).stdout);
    assert!(
        table.contains("CPU-HOURS") && table.contains("total"),
        "{table}"
    );
    let wrong = farm.drqueue(&["usage", "--by", "host"]);
    assert!(!wrong.status.success());
    assert!(
        text(&wrong.stderr).contains("owner, pool, job, day"),
        "{}",
        text(&wrong.stderr)
    );
}
