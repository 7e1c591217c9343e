//! Frames sized to each engine's speed: `--blocksize auto` on two real
//! engines, one four times as slow (its stand-in renderer sleeps longer per
//! frame). Real master, engines, child processes and CLI.

use drqueue_common::model::{JobStatus, TaskStatus};
use drqueue_tests::{fake_program, path_with, Farm};
use std::collections::HashMap;
use std::time::Duration;

/// A renderer that takes `secs` per frame from {start} to {end}.
fn frame_renderer(secs: &str) -> String {
    format!(
        "#!/bin/sh\nf=$1\nwhile [ \"$f\" -le \"$2\" ]; do\n  sleep {secs}\n  echo \"frame $f done\"\n  f=$((f + 1))\ndone\n"
    )
}

#[test]
fn blocksize_auto_gives_the_fast_engine_more_frames_in_fewer_tasks() {
    let mut farm = Farm::start();
    for (name, secs) in [("fast", "0.1"), ("slow", "0.4")] {
        let bin = farm.dir.join(format!("bin-{name}"));
        fake_program(&bin, "frame-render", &frame_renderer(secs));
        let path = path_with(&bin);
        farm.engine_with_env(name, &[], &[("PATH", &path)]);
    }
    farm.wait_engines(2);
    let id = farm.submit(&[
        "--frames",
        "1-60",
        "--blocksize",
        "auto",
        "--target-task-minutes",
        "1",
        "--",
        "frame-render",
        "{start}",
        "{end}",
    ]);
    let view = farm.wait_job(id, Duration::from_secs(120));
    assert_eq!(view.status, JobStatus::Done);
    assert_eq!(view.target_task_minutes, Some(1));
    let c = farm.client();
    let names: HashMap<String, String> = c
        .engines()
        .unwrap()
        .into_iter()
        .map(|e| (e.id.to_string(), e.name))
        .collect();
    let tasks = c.tasks(id, None).unwrap();
    let mut frames_by: HashMap<String, i64> = HashMap::new();
    let mut covered = Vec::new();
    for t in &tasks {
        assert_eq!(t.status, TaskStatus::Done);
        let engine = t.engine.as_ref().expect("a done task names its engine");
        *frames_by
            .entry(names[&engine.to_string()].clone())
            .or_default() += (t.last - t.first) / t.step + 1;
        covered.extend(t.first..=t.last);
    }
    eprintln!("frames by engine {frames_by:?} in {} tasks", tasks.len());
    covered.sort_unstable();
    assert_eq!(covered, (1..=60).collect::<Vec<i64>>(), "each frame once");
    let (fast, slow) = (
        frames_by["fast"],
        frames_by.get("slow").copied().unwrap_or(0),
    );
    assert!(
        fast >= 2 * slow,
        "the fast engine renders 4× as fast and should get far more frames: fast {fast}, slow {slow}"
    );
    assert!(
        tasks.len() < 30,
        "frames travel in blocks, not one a task: {} tasks",
        tasks.len()
    );
    // `show` says how the job is cut.
    let out = farm.drqueue(&["show", &id.to_string()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("blocksize auto"), "{text}");
}

#[test]
fn blocksize_is_a_number_or_auto() {
    let farm = Farm::start();
    let out = farm.drqueue(&["submit", "--blocksize", "fast", "--", "true"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`auto`"), "{err}");
    let out = farm.drqueue(&["submit", "--target-task-minutes", "5", "--", "true"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--blocksize auto"), "{err}");
}
