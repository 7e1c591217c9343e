//! The scheduling model end to end: pools, detected renderers and presets,
//! blocked reasons, dependency chains, blacklists, sick engines, and a real
//! POV-Ray render. Engines get different `DRQUEUE_POOL` values and stand-in
//! renderers (small scripts named `blender`, `render`) on their PATH.

use drqueue_common::model::{JobId, JobStatus, TaskView};
use drqueue_tests::{decode_png, eventually, fake_program, link_program, path_with, which, Farm};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(120);

/// A stand-in Blender: answers `--version`, and for `-o PATTERN -s S -e E`
/// writes one file per frame, `####` replaced by the padded frame number.
const FAKE_BLENDER: &str = r#"#!/bin/sh
if [ "$1" = "--version" ]; then echo "Blender 4.0.2"; exit 0; fi
s=; e=; o=
while [ $# -gt 0 ]; do
  case "$1" in -s) s=$2; shift;; -e) e=$2; shift;; -o) o=$2; shift;; esac
  shift
done
f=$s
while [ "$f" -le "$e" ]; do
  out=$(echo "$o" | sed "s/####/$(printf %04d "$f")/")
  mkdir -p "$(dirname "$out")"
  echo "frame $f" > "$out"
  f=$((f + 1))
done
"#;

/// Engine ids by name, from `engines --json`.
fn engine_ids(farm: &Farm) -> BTreeMap<String, String> {
    let out = farm.drqueue(&["engines", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).expect("engines --json");
    v.as_array()
        .expect("an array")
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap_or_default().to_string(),
                e["id"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn tasks_json(farm: &Farm, job: JobId) -> Vec<TaskView> {
    let out = farm.drqueue(&["tasks", &job.to_string(), "--json"]);
    serde_json::from_slice(&out.stdout).expect("tasks --json")
}

/// The engines that ran a job's tasks (latest attempt of each).
fn engines_of(farm: &Farm, job: JobId) -> BTreeSet<String> {
    tasks_json(farm, job)
        .into_iter()
        .filter_map(|t| t.engine.map(String::from))
        .collect()
}

fn blocked(farm: &Farm, job: JobId) -> Vec<String> {
    let out = farm.drqueue(&["show", &job.to_string(), "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).expect("show --json");
    serde_json::from_value(v["blocked"].clone()).expect("blocked is a list of strings")
}

fn engine_json(farm: &Farm, name: &str) -> Value {
    let out = farm.drqueue(&["engine", "show", name, "--json"]);
    serde_json::from_slice(&out.stdout).expect("engine show --json")
}

#[test]
fn pools_and_detected_renderers_decide_which_engine_runs_what() {
    let mut farm = Farm::start();
    let blender_dir = farm.dir.join("bin-blender");
    fake_program(&blender_dir, "blender", FAKE_BLENDER);
    // cpu1 has no Blender yet; it refreshes its facts every second.
    let later_dir = farm.dir.join("bin-later");
    std::fs::create_dir_all(&later_dir).unwrap();
    farm.engine_with_env(
        "gpu1",
        &[],
        &[("DRQUEUE_POOL", "gpu"), ("PATH", &path_with(&blender_dir))],
    );
    farm.engine_with_env(
        "cpu1",
        &["--facts-refresh", "1"],
        &[
            ("DRQUEUE_POOL", "cpu,default"),
            ("PATH", &path_with(&later_dir)),
        ],
    );
    farm.engine("plain", &[]);
    farm.wait_engines(3);
    let ids = engine_ids(&farm);

    let pools: Value = serde_json::from_slice(&farm.drqueue(&["pools", "--json"]).stdout).unwrap();
    let counts: BTreeMap<String, u64> = pools
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                p["engines"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        counts,
        BTreeMap::from([("cpu".into(), 1), ("default".into(), 2), ("gpu".into(), 1)])
    );
    let gpu1 = engine_json(&farm, "gpu1");
    assert!(gpu1["capabilities"]
        .as_array()
        .unwrap()
        .contains(&Value::from("blender")));
    assert_eq!(gpu1["versions"]["blender"], "4.0.2");

    // The blender preset in pool gpu runs only on gpu1, and writes frames.
    let job = farm.submit(&[
        "--preset",
        "blender",
        "--scene",
        "shot.blend",
        "--frames",
        "1-6",
        "--blocksize",
        "2",
        "--pool",
        "gpu",
        "--output",
        "out/f_####.png",
    ]);
    assert_eq!(farm.wait_job(job, LONG).status, JobStatus::Done);
    assert_eq!(
        engines_of(&farm, job),
        BTreeSet::from([ids["gpu1"].clone()])
    );
    for f in 1..=6 {
        let p = farm.dir.join(format!("out/f_{f:04}.png"));
        assert_eq!(
            std::fs::read_to_string(&p).unwrap_or_default(),
            format!("frame {f}\n"),
            "{}",
            p.display()
        );
    }
    let show: Value =
        serde_json::from_slice(&farm.drqueue(&["show", &job.to_string(), "--json"]).stdout)
            .unwrap();
    assert_eq!(
        show["requirements"]["capabilities"],
        serde_json::json!(["blender"])
    );

    // Pool cpu: only cpu1.
    let cpu = farm.submit(&["--pool", "cpu", "--frames", "1-4", "--", "true"]);
    assert_eq!(farm.wait_job(cpu, LONG).status, JobStatus::Done);
    assert_eq!(
        engines_of(&farm, cpu),
        BTreeSet::from([ids["cpu1"].clone()])
    );

    // Blender in pool default: nobody there has it, yet.
    let later = farm.submit(&[
        "--require",
        "blender",
        "--frames",
        "1-2",
        "--",
        "blender",
        "--version",
    ]);
    eventually(LONG, "the capability to be named as the blocker", || {
        (blocked(&farm, later) == vec!["2 engines lack capability `blender`".to_string()])
            .then_some(())
    });
    // Installing it on cpu1 is noticed at its next facts refresh.
    fake_program(&later_dir, "blender", FAKE_BLENDER);
    assert_eq!(farm.wait_job(later, LONG).status, JobStatus::Done);
    assert_eq!(
        engines_of(&farm, later),
        BTreeSet::from([ids["cpu1"].clone()])
    );
}

#[test]
fn show_names_each_reason_ready_tasks_are_not_running() {
    let mut farm = Farm::start();
    farm.engine("e1", &["--slots", "1", "--hwm", "2"]);
    farm.engine("e2", &["--slots", "1", "--hwm", "2"]);
    farm.wait_engines(2);
    let c = farm.client();
    let max_ram = c.engines().unwrap().iter().map(|e| e.ram_mb).max().unwrap();

    let gpu = farm.submit(&["--pool", "gpu", "--", "true"]);
    assert_eq!(blocked(&farm, gpu), vec!["no engine in pool `gpu`"]);

    let houdini = farm.submit(&["--require", "houdini", "--", "true"]);
    assert_eq!(
        blocked(&farm, houdini),
        vec!["2 engines lack capability `houdini`"]
    );

    let big = farm.submit(&["--min-ram-mb", "99999999", "--", "true"]);
    assert_eq!(
        blocked(&farm, big),
        vec![format!(
            "needs 99999999 MB RAM, the largest engine has {max_ram} MB"
        )]
    );

    // A limit of one: one task runs, the rest wait for the token.
    assert!(farm
        .drqueue(&["limit", "set", "nuke", "1"])
        .status
        .success());
    let licensed = farm.submit(&["--limit", "nuke", "--frames", "1-3", "--", "sleep", "600"]);
    eventually(LONG, "the limit to be named", || {
        (blocked(&farm, licensed) == vec!["limit `nuke` 1/1 in use".to_string()]).then_some(())
    });

    // max_engines 1: the other engine gets none of it.
    let capped = farm.submit(&[
        "--max-engines",
        "1",
        "--frames",
        "1-3",
        "--",
        "sleep",
        "600",
    ]);
    eventually(LONG, "max_engines to be named", || {
        (blocked(&farm, capped) == vec!["max_engines 1 reached".to_string()]).then_some(())
    });
    assert_eq!(engines_of(&farm, capped).len(), 1);

    let after = farm.submit(&["--after", &licensed.to_string(), "--", "true"]);
    assert_eq!(
        blocked(&farm, after),
        vec![format!("waiting for job {licensed}")]
    );
    assert_eq!(c.job(after).unwrap().status, JobStatus::Waiting);

    let paused = farm.submit(&["--paused", "--", "true"]);
    assert_eq!(blocked(&farm, paused), vec!["paused"]);

    let later = farm.submit(&["--start-after", "+2h", "--", "true"]);
    let reasons = blocked(&farm, later);
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(
        reasons[0].starts_with("starts at ")
            && (reasons[0].ends_with("(in 1h 59m)") || reasons[0].ends_with("(in 2h 0m)")),
        "{reasons:?}"
    );

    // The human view says the same.
    let show =
        String::from_utf8_lossy(&farm.drqueue(&["show", &capped.to_string()]).stdout).to_string();
    assert!(
        show.contains("not running because:\n    - max_engines 1 reached"),
        "{show}"
    );

    for job in [licensed, capped] {
        assert!(farm.drqueue(&["cancel", &job.to_string()]).status.success());
        assert_eq!(farm.wait_job(job, LONG).status, JobStatus::Cancelled);
    }
    // Its dependency was cancelled, which `--after` (done) does not accept.
    let after_view = farm.wait_job(after, LONG);
    assert_eq!(after_view.status, JobStatus::Cancelled);
    assert!(
        after_view
            .reason
            .as_deref()
            .unwrap_or("")
            .contains("ended cancelled"),
        "{:?}",
        after_view.reason
    );
}

#[test]
fn a_dependency_chain_runs_in_order() {
    let mut farm = Farm::start();
    farm.engine("a", &["--slots", "2"]);
    farm.engine("b", &["--slots", "2"]);
    farm.wait_engines(2);
    let first = farm.submit(&["--frames", "1-4", "--", "sleep", "0.3"]);
    let second = farm.submit(&[
        "--after",
        &first.to_string(),
        "--frames",
        "1-4",
        "--",
        "sleep",
        "0.2",
    ]);
    let third = farm.submit(&[
        "--after",
        &format!("{second}:done,failed"),
        "--frames",
        "1-2",
        "--",
        "true",
    ]);
    assert_eq!(farm.client().job(third).unwrap().status, JobStatus::Waiting);
    assert_eq!(farm.wait_job(third, LONG).status, JobStatus::Done);
    let span = |job| {
        let t = tasks_json(&farm, job);
        let start = t.iter().filter_map(|t| t.started_ms).min().unwrap();
        let end = t.iter().filter_map(|t| t.ended_ms).max().unwrap();
        (start, end)
    };
    let (a, b, c) = (span(first), span(second), span(third));
    assert!(
        a.1 <= b.0,
        "job {second} started before job {first} ended: {a:?} {b:?}"
    );
    assert!(
        b.1 <= c.0,
        "job {third} started before job {second} ended: {b:?} {c:?}"
    );
}

#[test]
fn an_engine_that_fails_a_job_twice_gets_no_more_of_it() {
    let mut farm = Farm::start();
    let good = farm.dir.join("bin-good");
    let bad = farm.dir.join("bin-bad");
    fake_program(&good, "render", "#!/bin/sh\necho rendered frame $1\n");
    fake_program(
        &bad,
        "render",
        "#!/bin/sh\necho licence error >&2\nexit 7\n",
    );
    farm.engine_with_env("good", &[], &[("PATH", &path_with(&good))]);
    farm.engine_with_env("bad", &[], &[("PATH", &path_with(&bad))]);
    farm.wait_engines(2);
    let ids = engine_ids(&farm);
    let job = farm.submit(&[
        "--frames",
        "1-8",
        "--max-attempts",
        "5",
        "--",
        "render",
        "{frame}",
    ]);
    assert_eq!(farm.wait_job(job, LONG).status, JobStatus::Done);
    let tasks = tasks_json(&farm, job);
    assert!(tasks
        .iter()
        .all(|t| t.engine.as_deref() == Some(ids["good"].as_str())));
    // Two failures make the blacklist; one more can be an attempt `bad` had
    // already started (it holds up to its HWM, 2). Then nothing more.
    let failed = |name| engine_json(&farm, name)["tasks_failed"].as_u64().unwrap();
    assert!(
        (2..=3).contains(&failed("bad")),
        "{} failed attempts",
        failed("bad")
    );
    assert_eq!(failed("good"), 0);
    let show: Value =
        serde_json::from_slice(&farm.drqueue(&["show", &job.to_string(), "--json"]).stdout)
            .unwrap();
    assert_eq!(show["blacklisted"], serde_json::json!([ids["bad"]]));
    let human =
        String::from_utf8_lossy(&farm.drqueue(&["show", &job.to_string()]).stdout).to_string();
    assert!(human.contains("blacklisted bad"), "{human}");
}

#[test]
fn five_failures_in_a_row_make_an_engine_sick_until_a_check_or_enable() {
    // Checks every second; the check passes once `healthy` exists in the
    // engine's state directory (where check commands run).
    let mut farm = Farm::start_with(&[
        "--check-interval",
        "1",
        "--check-command",
        "test -e healthy",
    ]);
    farm.engine("s", &[]);
    farm.wait_engines(1);
    let fail_five = |farm: &Farm| {
        for _ in 0..5 {
            let j = farm.submit(&["--max-attempts", "1", "--", "false"]);
            assert_eq!(farm.wait_job(j, LONG).status, JobStatus::Failed);
        }
    };
    fail_five(&farm);
    let e = engine_json(&farm, "s");
    assert_eq!(e["state"], "sick");
    assert!(
        e["sick"]
            .as_str()
            .unwrap()
            .starts_with("failed 5 tasks in a row"),
        "{e}"
    );
    let waiting = farm.submit(&["--", "true"]);
    let reasons = blocked(&farm, waiting);
    assert!(reasons[0].contains("sick (1)"), "{reasons:?}");
    eventually(LONG, "the failed check to be recorded", || {
        let e = engine_json(&farm, "s");
        e["sick"]
            .as_str()?
            .contains("check task failed: check command exited with code 1")
            .then_some(())
    });
    std::fs::write(farm.dir.join("engine-s/healthy"), "").unwrap();
    assert_eq!(farm.wait_job(waiting, LONG).status, JobStatus::Done);
    assert_eq!(engine_json(&farm, "s")["sick"], Value::Null);

    // Sick again; this time a user vouches for it.
    std::fs::remove_file(farm.dir.join("engine-s/healthy")).unwrap();
    fail_five(&farm);
    assert_eq!(engine_json(&farm, "s")["state"], "sick");
    assert!(farm.drqueue(&["engine", "enable", "s"]).status.success());
    let e = engine_json(&farm, "s");
    assert_eq!(
        (e["state"].as_str(), e["failures_in_row"].as_u64()),
        (Some("idle"), Some(0))
    );
}

#[test]
fn drain_waits_for_running_tasks_then_leaves_the_engine_disabled() {
    let mut farm = Farm::start();
    farm.engine("d", &["--hwm", "3"]);
    farm.wait_engines(1);
    let job = farm.submit(&["--frames", "1-3", "--", "sleep", "1"]);
    eventually(LONG, "a task to run", || {
        tasks_json(&farm, job)
            .iter()
            .any(|t| t.status.as_str() == "running")
            .then_some(())
    });
    let out = farm.drqueue(&["engine", "drain", "d"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("drained and disabled"));
    let e = engine_json(&farm, "d");
    assert_eq!(
        (e["state"].as_str(), e["running"].as_u64()),
        (Some("disabled"), Some(0))
    );
    // It finished the task it was running; the queued ones wait for an engine.
    let done = tasks_json(&farm, job)
        .iter()
        .filter(|t| t.status.as_str() == "done")
        .count();
    assert_eq!(done, 1);
    assert!(farm.drqueue(&["engine", "enable", "d"]).status.success());
    assert_eq!(farm.wait_job(job, LONG).status, JobStatus::Done);
}

/// POV-Ray (Debian's `povray`, which `.ci/run` installs) renders frames 1-8 of
/// a small animated scene through the preset on two engines.
#[test]
fn povray_renders_an_animation_through_the_preset() {
    let Some(povray) = which("povray") else {
        drqueue_common::test_skip::skip("povray is not installed (apt-get install povray)");
        return;
    };
    eprintln!("using {}", povray.display());
    let mut farm = Farm::start();
    let bin = farm.dir.join("povray-bin");
    link_program(&bin, &povray);
    let path = path_with(&bin);
    farm.engine_with_env("pov1", &[], &[("PATH", &path)]);
    farm.engine_with_env("pov2", &[], &[("PATH", &path)]);
    farm.wait_engines(2);
    let scene = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/orbit.pov");
    let out_dir = farm.dir.join("renders");
    std::fs::create_dir_all(&out_dir).unwrap();
    let output = out_dir.join("frame.png");
    let job = farm.submit(&[
        "--preset",
        "povray",
        "--scene",
        scene.to_str().unwrap(),
        "--frames",
        "1-8",
        "--output",
        output.to_str().unwrap(),
        "--",
        "+W160",
        "+H120",
        "+FN",
    ]);
    let view = farm.wait_job(job, LONG);
    assert_eq!(view.status, JobStatus::Done, "{view:?}");
    assert_eq!(engines_of(&farm, job).len(), 2, "both engines rendered");
    let mut frames = Vec::new();
    for f in 1..=8 {
        let (width, height, pixels) = decode_png(&out_dir.join(format!("frame{f}.png")));
        assert_eq!((width, height), (160, 120));
        frames.push(pixels);
    }
    // POV-Ray's `Rendered N of M pixels (P%)` lines, split by carriage
    // returns, were followed to the end of each frame.
    let c = farm.client();
    for task in 0..8 {
        let attempts = c.attempts(job, task).unwrap();
        let last = attempts.last().expect("an attempt");
        assert_eq!(last.outcome.progress, Some(100.0), "task {task}: {last:?}");
    }
    // The preset knows POV-Ray's naming: each task's file was checked and
    // recorded when it ended.
    let out = farm.drqueue(&["--json", "outputs", &job.to_string()]);
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("outputs JSON");
    let mut listed: Vec<String> = rows
        .as_array()
        .expect("a list")
        .iter()
        .map(|r| r["path"].as_str().unwrap_or_default().to_string())
        .collect();
    listed.sort();
    let mut want: Vec<String> = (1..=8)
        .map(|f| out_dir.join(format!("frame{f}.png")).display().to_string())
        .collect();
    want.sort();
    assert_eq!(listed, want);
    // And each frame has a thumbnail, decoded from POV-Ray's own PNG.
    let url = format!("{}/api/jobs/{job}/frames/5/thumbnail", farm.http);
    let png = drqueue_tests::eventually(LONG, "frame 5's thumbnail", || {
        let mut resp = ureq::get(&url).call().ok()?;
        resp.body_mut().read_to_vec().ok()
    });
    let reader = png::Decoder::new(std::io::Cursor::new(png))
        .read_info()
        .expect("a PNG");
    assert_eq!((reader.info().width, reader.info().height), (160, 120));
    for (i, w) in frames.windows(2).enumerate() {
        assert_ne!(
            w[0],
            w[1],
            "frames {} and {} are the same image",
            i + 1,
            i + 2
        );
    }
}
