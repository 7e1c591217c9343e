//! The farm understands its renderers: stand-ins on the engine's PATH print
//! exactly what the real ones print (Blender 3 and 5, EEVEE, POV-Ray with
//! carriage returns, Arnold, Mantra/Karma, prman), and the progress they
//! report reaches `tasks` and the job; a renderer's fatal-error line fails
//! the task at its first attempt. Real master, engines and CLI.

use drqueue_common::model::{JobStatus, TaskStatus};
use drqueue_tests::{eventually, fake_program, path_with, Farm};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(120);

/// A stand-in that prints `lines` (printf format), then waits for `release`.
fn stand_in(lines: &str) -> String {
    format!("#!/bin/sh\nprintf '{lines}'\nwhile [ ! -e release ]; do sleep 0.05; done\n")
}

#[test]
fn progress_printed_by_each_renderer_reaches_the_task_and_the_job() {
    let mut farm = Farm::start();
    let bin = farm.dir.join("renderers");
    let cases: &[(&str, &str, f32)] = &[
        ("blender", "Fra:1 Mem:9.90M (Peak 10.83M) | Time:00:00.06 | Remaining:00:01.20 | Mem:1.2M | Sample 2/4\\n", 50.0),
        ("blender5", "00:00.327  render  | Fra:1 Mem:9.90M | Sample 3/4\\n", 75.0),
        ("eevee", "Fra:1 Mem:9.90M | Rendering 16 / 64 samples\\n", 25.0),
        ("povray", "Rendered 1024 of 76800 pixels (1%%)\\rRendered 38400 of 76800 pixels (50%%)\\r", 50.0),
        ("kick", "00:00:03  1020MB         |    40%% done - 12 rays/pixel\\n", 40.0),
        ("husk", "ALF_PROGRESS 63%%\\n", 63.0),
        ("prman", "R90000  87%%\\n", 87.0),
    ];
    for (name, lines, _) in cases {
        // blender5 and eevee are Blender printing other forms.
        let program = match *name {
            "blender5" | "eevee" => format!("blender-{name}"),
            n => n.to_string(),
        };
        fake_program(&bin, &program, &stand_in(lines));
    }
    // The rules go by the program's file name: the Blender forms run as
    // `blender` from their own folders.
    for alt in ["blender5", "eevee"] {
        let dir = farm.dir.join(alt);
        fake_program(
            &dir,
            "blender",
            &std::fs::read_to_string(bin.join(format!("blender-{alt}"))).unwrap(),
        );
    }
    let path = path_with(&bin);
    farm.engine_with_env("r", &["--slots", "8"], &[("PATH", &path)]);
    farm.wait_engines(1);
    let mut jobs = Vec::new();
    for (name, _, want) in cases {
        let program = match *name {
            "blender5" | "eevee" => farm.dir.join(name).join("blender").display().to_string(),
            n => n.to_string(),
        };
        let id = farm.submit(&["--name", name, "--", &program]);
        jobs.push((id, *name, *want));
    }
    let c = farm.client();
    for (id, name, want) in &jobs {
        let got = eventually(LONG, &format!("{name}'s progress"), || {
            c.tasks(*id, None).ok()?.first()?.progress
        });
        assert_eq!(got, *want, "{name}");
        let job = c.job(*id).unwrap();
        assert_eq!(
            job.progress,
            Some(*want),
            "{name}: one task, so the job is as far"
        );
    }
    let out = farm.drqueue(&["tasks", &jobs[0].0.to_string()]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("50%"),
        "the PROGRESS column"
    );
    std::fs::write(farm.dir.join("release"), "").unwrap();
    for (id, name, _) in &jobs {
        let view = farm.wait_job(*id, LONG);
        assert_eq!(view.status, JobStatus::Done, "{name}");
        assert_eq!(view.progress, Some(100.0), "{name}");
        assert!(
            c.tasks(*id, None).unwrap()[0].progress.is_none(),
            "live only while it runs"
        );
    }
}

/// A farm with one engine whose `blender` fails as a build without
/// OpenImageDenoise does, on every scene, every time.
fn farm_with_a_broken_blender() -> Farm {
    let mut farm = Farm::start();
    let bin = farm.dir.join("renderers");
    fake_program(
        &bin,
        "blender",
        "#!/bin/sh\necho 'Fra:1 Mem:9.90M'\necho 'Error: Build without OpenImageDenoiser'\nexit 1\n",
    );
    let path = path_with(&bin);
    farm.engine_with_env("r", &["--slots", "2"], &[("PATH", &path)]);
    farm
}

#[test]
fn a_fatal_error_line_fails_each_task_at_its_first_attempt() {
    let farm = farm_with_a_broken_blender();
    let id = farm.submit(&[
        "--frames",
        "1-3",
        "--max-attempts",
        "3",
        "--",
        "blender",
        "-b",
        "x.blend",
    ]);
    let view = farm.wait_job(id, LONG);
    assert_eq!(view.status, JobStatus::Failed);
    let tasks = farm.client().tasks(id, None).unwrap();
    assert!(
        tasks
            .iter()
            .all(|t| t.attempts == 1 && t.status == TaskStatus::Failed),
        "{tasks:?}"
    );
    let show =
        String::from_utf8_lossy(&farm.drqueue(&["show", &id.to_string()]).stdout).to_string();
    assert!(
        show.contains("Error: Build without OpenImageDenoiser"),
        "show quotes the line: {show}"
    );
    // `drqueue retry` still retries it.
    let out = farm.drqueue(&["retry", &id.to_string()]);
    assert!(out.status.success());
    let view = farm.wait_job(id, LONG);
    assert_eq!(view.status, JobStatus::Failed);
    let tasks = farm.client().tasks(id, None).unwrap();
    assert!(tasks.iter().all(|t| t.attempts == 2), "{tasks:?}");
}

#[test]
fn retry_deterministic_keeps_retrying_a_fatal_error() {
    let farm = farm_with_a_broken_blender();
    let id = farm.submit(&[
        "--max-attempts",
        "3",
        "--retry-deterministic",
        "--",
        "blender",
        "-b",
        "x.blend",
    ]);
    assert_eq!(farm.wait_job(id, LONG).status, JobStatus::Failed);
    assert_eq!(farm.client().tasks(id, None).unwrap()[0].attempts, 3);
}

#[test]
fn a_render_that_exits_0_without_its_image_fails_and_outputs_are_listed() {
    let mut farm = Farm::start();
    let bin = farm.dir.join("renderers");
    // Prints Blender's Saved: line for a file it writes only when asked.
    fake_program(
        &bin,
        "blender",
        "#!/bin/sh\n[ -n \"$WRITE\" ] && printf 'pixels' > \"out_$1.png\"\necho \"Saved: 'out_$1.png'\"\n",
    );
    let path = path_with(&bin);
    farm.engine_with_env("r", &[], &[("PATH", &path)]);
    std::fs::create_dir_all(farm.dir.join("frames")).unwrap();
    // Nothing written: the declared output is missing.
    let id = farm.submit(&[
        "--max-attempts",
        "1",
        "--output",
        "frames/f_####.png",
        "--",
        "sh",
        "-c",
        "exit 0",
    ]);
    assert_eq!(farm.wait_job(id, LONG).status, JobStatus::Failed);
    let log =
        String::from_utf8_lossy(&farm.drqueue(&["log", &id.to_string(), "0"]).stdout).to_string();
    assert!(
        log.contains("expected output frames/f_0001.png is missing"),
        "{log}"
    );
    // The renderer said Saved: but wrote nothing.
    let id = farm.submit(&["--max-attempts", "1", "--", "blender", "{frame}"]);
    assert_eq!(farm.wait_job(id, LONG).status, JobStatus::Failed);
    // Written: done, and listed with sizes, what Blender said it saved as
    // well as what the job expects (the same file is listed once).
    let id = farm.submit(&[
        "--frames",
        "1-2",
        "--env",
        "WRITE=1",
        "--output",
        "out_#.png",
        "--",
        "blender",
        "{frame}",
    ]);
    assert_eq!(farm.wait_job(id, LONG).status, JobStatus::Done);
    let out = farm.drqueue(&["--json", "outputs", &id.to_string()]);
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let mut listed: Vec<(u64, String, u64)> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["task"].as_u64().unwrap(),
                r["path"].as_str().unwrap().to_string(),
                r["size"].as_u64().unwrap(),
            )
        })
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        vec![(0, "out_1.png".into(), 6), (1, "out_2.png".into(), 6)]
    );
    let human = String::from_utf8_lossy(&farm.drqueue(&["outputs", &id.to_string(), "1"]).stdout)
        .to_string();
    assert!(
        human.contains("out_2.png") && !human.contains("out_1"),
        "{human}"
    );
}

#[test]
fn a_stalled_task_is_requeued_and_runs_elsewhere() {
    let mut farm = Farm::start();
    farm.engine("a", &[]);
    farm.engine("b", &[]);
    farm.wait_engines(2);
    // The first attempt prints once, then hangs in silence.
    let id = farm.submit(&[
        "--stall-after",
        "2s",
        "--",
        "sh",
        "-c",
        "echo rendering; if [ \"$DRQUEUE_ATTEMPT\" = 1 ]; then exec sleep 600; fi; echo done",
    ]);
    let view = farm.wait_job(id, LONG);
    assert_eq!(view.status, JobStatus::Done);
    let c = farm.client();
    let attempts = c.attempts(id, 0).unwrap();
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert!(
        attempts[0].outcome.cancelled && attempts[0].counted,
        "stopped, and counted for the job"
    );
    assert_ne!(
        attempts[0].engine, attempts[1].engine,
        "the requeue ran elsewhere"
    );
    assert!(farm.master_log().contains("stalled"), "the master says why");
}

#[test]
fn stalls_with_warn_and_outliers_are_explained() {
    let mut farm = Farm::start();
    farm.engine("a", &["--slots", "6"]);
    // Five quick tasks and one that hangs, quietly.
    let id = farm.submit(&[
        "--frames",
        "0-5",
        "--stall-after",
        "1s",
        "--on-stall",
        "warn",
        "--",
        "sh",
        "-c",
        "if [ {task} = 5 ]; then exec sleep 600; fi; sleep 0.2",
    ]);
    let c = farm.client();
    let reasons = eventually(LONG, "task 5 flagged as stalled and an outlier", || {
        let v = c.job(id).ok()?;
        let both = v
            .blocked
            .iter()
            .any(|b| b.contains("task 5 has printed nothing for"))
            && v.blocked.iter().any(|b| b.contains("task 5 is an outlier"));
        both.then_some(v.blocked)
    });
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    let tasks = c.tasks(id, None).unwrap();
    assert!(tasks[5].outlier && !tasks[0].outlier, "{tasks:?}");
    let show =
        String::from_utf8_lossy(&farm.drqueue(&["show", &id.to_string()]).stdout).to_string();
    assert!(show.contains("task 5 is an outlier"), "{show}");
    assert_eq!(
        c.job(id).unwrap().counts.get(TaskStatus::Running),
        1,
        "warn only: it still runs"
    );
    farm.drqueue(&["cancel", &id.to_string()]);
}
