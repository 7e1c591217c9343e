//! Jobs: dependencies, cancel, blocked reasons, notifications, graphs.

use super::*;

#[test]
fn dependencies_wait_then_run_or_cancel() {
    let mut sim = Sim::new();
    sim.add_engine(vec!["default"], 1, 1);
    let mut fx = Effects::default();
    let a = sim.s.submit(spec("1", 1), sim.now, &mut fx).unwrap();
    let mut b = spec("1", 1);
    b.after = vec![Dependency {
        job: a,
        on: vec![JobStatus::Done],
    }];
    let b = sim.s.submit(b, sim.now, &mut fx).unwrap();
    let mut c = spec("1", 1);
    c.after = vec![Dependency {
        job: b,
        on: vec![JobStatus::Failed],
    }];
    let c = sim.s.submit(c, sim.now, &mut fx).unwrap();
    sim.settle(fx);
    assert_eq!(sim.s.job_status(b), Some(JobStatus::Waiting));
    assert_eq!(
        sim.blocked(b, sim.now),
        vec![format!("waiting for job {a}")]
    );
    sim.finish(0, 0, true);
    assert_eq!(sim.s.job_status(a), Some(JobStatus::Done));
    sim.finish(0, 0, true);
    assert_eq!(sim.s.job_status(b), Some(JobStatus::Done));
    assert_eq!(sim.s.job_status(c), Some(JobStatus::Cancelled));
}

#[test]
fn cancel_kills_held_attempts_and_keeps_their_credit_until_they_end() {
    let mut sim = Sim::new();
    let id = sim.submit(spec("1-4", 1));
    sim.add_engine(vec!["default"], 1, 2);
    let mut fx = Effects::default();
    sim.s.cancel(id, sim.now, &mut fx).unwrap();
    let cancels: Vec<_> = fx
        .messages
        .iter()
        .filter(|(_, m)| matches!(m, ToEngine::Cancel(_)))
        .collect();
    assert_eq!(cancels.len(), 1);
    assert_eq!(sim.s.engine("engine-0").unwrap().outstanding(), 2);
    sim.settle(fx);
    assert_eq!(sim.s.engine("engine-0").unwrap().outstanding(), 0);
    let view = sim.s.job_view(id, sim.now).unwrap();
    assert_eq!(
        (view.status, view.counts.get(TaskStatus::Cancelled)),
        (JobStatus::Cancelled, 4)
    );
}

#[test]
fn blocked_reasons_name_pool_and_requirements() {
    let mut sim = Sim::new();
    sim.add_engine(vec!["default"], 1, 1);
    let mut fx = Effects::default();
    let mut gpu = spec("1", 1);
    gpu.pool = "gpu".into();
    let gpu = sim.s.submit(gpu, sim.now, &mut fx).unwrap();
    let mut big = spec("1", 1);
    big.requirements = Requirements {
        min_ram_mb: 64000,
        capabilities: vec!["houdini".into()],
        ..Default::default()
    };
    let big = sim.s.submit(big, sim.now, &mut fx).unwrap();
    sim.settle(fx);
    assert_eq!(
        sim.blocked(gpu, sim.now),
        vec!["no engine in pool `gpu`".to_string()]
    );
    let reasons = sim.blocked(big, sim.now);
    assert!(
        reasons.contains(&"needs 64000 MB RAM, the largest engine has 16000 MB".to_string()),
        "{reasons:?}"
    );
    assert!(
        reasons.contains(&"1 engine lacks capability `houdini`".to_string()),
        "{reasons:?}"
    );
}

#[test]
fn start_after_names_the_clock_time() {
    let mut sim = Sim::new();
    let mut fx = Effects::default();
    let mut sp = spec("1", 1);
    sp.start_after = Some(sim.now + 90 * 60 * 1000);
    let id = sim.s.submit(sp, sim.now, &mut fx).unwrap();
    let reasons = sim.blocked(id, sim.now);
    assert_eq!(reasons.len(), 1);
    assert!(reasons[0].starts_with("starts at "), "{reasons:?}");
    assert!(reasons[0].ends_with("(in 1h 30m)"), "{reasons:?}");
}

#[test]
fn a_notification_waits_for_the_end_then_retries_with_backoff_until_sent() {
    let mut sim = Sim::new();
    sim.add_engine(vec!["default"], 1, 1);
    let mut fx = Effects::default();
    let mut sp = spec("1", 1);
    sp.notify = vec!["ana@example.com".into()];
    let id = sim.s.submit(sp, sim.now, &mut fx).unwrap();
    sim.settle(fx);
    let state = |sim: &Sim| sim.s.jobs[&id].notification.clone().unwrap();
    assert_eq!(state(&sim).state, NotifyState::Waiting);
    assert!(sim.s.due_notifications(sim.now).is_empty());
    sim.finish(0, 0, true);
    assert_eq!(state(&sim).state, NotifyState::Pending);
    // Due once: a second call while it is in flight gives nothing.
    assert_eq!(sim.s.due_notifications(sim.now), vec![id]);
    assert!(sim.s.due_notifications(sim.now).is_empty());
    // In flight is stored as pending: a crash now sends it again, never loses it.
    let stored = sim.s.jobs[&id].record(id, &sim.s.engines).notification;
    assert_eq!(stored.map(|n| n.state), Some(NotifyState::Pending));
    sim.s
        .notification_result(id, Err("SMTP: refused".into()), false, sim.now);
    let n = state(&sim);
    assert_eq!(
        (n.state, n.attempts, n.next_try_ms),
        (NotifyState::Pending, 1, Some(sim.now + 1000))
    );
    assert!(sim.s.due_notifications(sim.now + 999).is_empty());
    assert_eq!(sim.s.due_notifications(sim.now + 1000), vec![id]);
    sim.s
        .notification_result(id, Err("SMTP: refused".into()), false, sim.now + 1000);
    assert_eq!(
        state(&sim).next_try_ms,
        Some(sim.now + 3000),
        "backoff doubles"
    );
    sim.s.due_notifications(sim.now + 3000);
    sim.s.notification_result(id, Ok(()), false, sim.now + 3000);
    let n = state(&sim);
    assert_eq!(
        (n.state, n.attempts, n.last_error),
        (NotifyState::Sent, 3, None)
    );
    // A late or repeated result changes nothing.
    sim.s
        .notification_result(id, Err("late".into()), false, sim.now + 4000);
    assert_eq!(state(&sim).state, NotifyState::Sent);
}

#[test]
fn a_notification_gives_up_after_its_attempts_or_at_once_when_permanent() {
    let mut sim = Sim::new();
    sim.s.cfg.mail_attempts = 2;
    sim.add_engine(vec!["default"], 1, 1);
    let mut fx = Effects::default();
    let mut sp = spec("1", 1);
    sp.notify = vec!["ana@example.com".into()];
    sp.notify_on = drqueue_common::model::NotifyOn::Failed;
    let quiet = sim.s.submit(sp.clone(), sim.now, &mut fx).unwrap();
    sim.settle(fx);
    sim.finish(0, 0, true);
    let n = sim.s.jobs[&quiet].notification.clone().unwrap();
    assert_eq!(
        n.state,
        NotifyState::Skipped,
        "done, but only failures notify"
    );

    let mut fx = Effects::default();
    sp.notify_on = drqueue_common::model::NotifyOn::Both;
    let id = sim.s.submit(sp, sim.now, &mut fx).unwrap();
    sim.settle(fx);
    sim.finish(0, 0, true);
    for t in [0, 1000] {
        assert_eq!(sim.s.due_notifications(sim.now + t), vec![id]);
        sim.s
            .notification_result(id, Err("SMTP: refused".into()), false, sim.now + t);
    }
    let n = sim.s.jobs[&id].notification.clone().unwrap();
    assert_eq!(
        (n.state, n.attempts, n.last_error.as_deref()),
        (NotifyState::Failed, 2, Some("SMTP: refused"))
    );
}

#[test]
fn retrying_a_job_arms_its_notification_for_the_next_end() {
    let mut sim = Sim::new();
    sim.add_engine(vec!["default"], 1, 1);
    let mut fx = Effects::default();
    let mut sp = spec("1", 1);
    sp.notify = vec!["ana@example.com".into()];
    sp.max_attempts = 1;
    let id = sim.s.submit(sp, sim.now, &mut fx).unwrap();
    sim.settle(fx);
    sim.finish(0, 0, false);
    assert_eq!(sim.s.job_status(id), Some(JobStatus::Failed));
    sim.s.due_notifications(sim.now);
    sim.s.notification_result(id, Ok(()), false, sim.now);
    let mut fx = Effects::default();
    assert_eq!(sim.s.retry(id, sim.now, &mut fx).unwrap(), 1);
    sim.settle(fx);
    let n = sim.s.jobs[&id].notification.clone().unwrap();
    assert_eq!(n.state, NotifyState::Waiting);
    sim.finish(0, 0, true);
    let n = sim.s.jobs[&id].notification.clone().unwrap();
    assert_eq!((n.state, n.attempts), (NotifyState::Pending, 0));
}

#[test]
fn a_graph_is_created_whole_or_not_at_all() {
    use drqueue_common::graph::{Graph, GraphJob, NamedDependency};
    let mut sim = Sim::new();
    let job = |name: &str, after: &[&str], cmd: &str| GraphJob {
        name: name.into(),
        spec: JobSpec {
            command: vec![cmd.into()],
            ..spec("1", 1)
        },
        after_names: after
            .iter()
            .map(|a| NamedDependency {
                name: a.to_string(),
                on: vec![JobStatus::Done],
            })
            .collect(),
    };
    let mut fx = Effects::default();
    // A cycle, or a bad spec anywhere: nothing is created.
    let cyclic = Graph {
        jobs: vec![job("a", &["b"], "x"), job("b", &["a"], "x")],
    };
    assert!(sim.s.submit_graph(cyclic, sim.now, &mut fx).is_err());
    let mut broken = job("c", &["a"], "x");
    broken.spec.frames = "nope".into();
    let bad = Graph {
        jobs: vec![job("a", &[], "x"), broken],
    };
    assert!(sim.s.submit_graph(bad, sim.now, &mut fx).is_err());
    assert!(sim.s.jobs.is_empty() && sim.s.next_job_id == JobId::FIRST);
    // A good one: dependencies first, names resolved to ids in `after` and
    // in `{job:NAME}`.
    let good = Graph {
        jobs: vec![
            job("encode", &["render"], "ffmpeg-{job:render}"),
            job("render", &[], "blender"),
        ],
    };
    let ids = sim.s.submit_graph(good, sim.now, &mut fx).unwrap();
    assert_eq!(
        ids,
        vec![
            ("render".to_string(), JobId(1)),
            ("encode".to_string(), JobId(2))
        ]
    );
    let encode = &sim.s.jobs[&JobId(2)];
    assert_eq!(encode.spec.command, ["ffmpeg-1"]);
    assert_eq!(encode.spec.after[0].job, JobId(1));
    assert_eq!(encode.status, JobStatus::Waiting);
}

/// Prints the scheduler's outputs for a farm with a job held until later,
/// a paused job, a waiting one and a running one: what the API shows.
/// Run by `outputs_do_not_depend_on_the_time_zone` in child processes.
#[test]
#[ignore = "a probe: outputs_do_not_depend_on_the_time_zone runs it"]
fn time_zone_probe() {
    let mut sim = Sim::new();
    sim.add_engine(vec!["default"], 1, 1);
    let mut fx = Effects::default();
    let mut later = spec("1-2", 1);
    later.start_after = Some(sim.now + 26 * 3600 * 1000); // tomorrow, in any zone
    let mut soon = spec("1", 1);
    soon.start_after = Some(sim.now + 90 * 60 * 1000);
    let mut paused = spec("1", 1);
    paused.paused = true;
    let running = sim.s.submit(spec("1-3", 1), sim.now, &mut fx).unwrap();
    let mut after = spec("1", 1);
    after.after = vec![Dependency {
        job: running,
        on: vec![JobStatus::Done],
    }];
    for sp in [later, soon, paused, after] {
        sim.s.submit(sp, sim.now, &mut fx).unwrap();
    }
    sim.settle(fx);
    let views = sim.s.job_views(None, sim.now);
    println!("PROBE-BEGIN");
    println!("{}", serde_json::to_string(&views).unwrap());
    println!("{:?}", sim.s.take_batch());
    println!("PROBE-END");
}

#[test]
fn outputs_do_not_depend_on_the_time_zone() {
    let exe = std::env::current_exe().expect("the test binary");
    let outputs: Vec<String> = ["UTC", "Asia/Tokyo", "America/Los_Angeles"]
        .iter()
        .map(|tz| {
            let out = std::process::Command::new(&exe)
                .args(["--exact", "tests::jobs::time_zone_probe", "--ignored"])
                .args(["--nocapture", "--test-threads=1"])
                .env("TZ", tz)
                .output()
                .expect("run the probe");
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            let begin = text.find("PROBE-BEGIN").expect("the probe ran");
            let end = text.find("PROBE-END").expect("the probe ended");
            text[begin..end].to_string()
        })
        .collect();
    assert!(outputs[0].contains("starts at"), "{}", outputs[0]);
    assert_eq!(outputs[0], outputs[1], "UTC and Asia/Tokyo differ");
    assert_eq!(outputs[0], outputs[2], "UTC and America/Los_Angeles differ");
}

#[test]
fn busy_engines_block_only_a_job_with_nothing_running() {
    let mut sim = Sim::new();
    sim.add_engine(vec!["default"], 1, 1);
    let mut fx = Effects::default();
    let running = sim.s.submit(spec("1-3", 1), sim.now, &mut fx).unwrap();
    sim.settle(fx);
    let mut fx = Effects::default();
    let starved = sim.s.submit(spec("1-2", 1), sim.now, &mut fx).unwrap();
    sim.settle(fx);
    assert_eq!(
        sim.blocked(running, sim.now),
        Vec::<String>::new(),
        "a job with a task on the engine is waiting its turn, not blocked"
    );
    let reasons = sim.blocked(starved, sim.now);
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(reasons[0].contains("busy"), "{reasons:?}");
}

#[test]
fn cancelling_some_tasks_ends_the_job_cancelled_once_the_rest_are_done() {
    let mut sim = Sim::new();
    sim.add_engine(vec!["default"], 1, 1);
    let id = sim.submit(spec("1-4", 1));
    let mut fx = Effects::default();
    // Tasks 2 and 3 are still ready (one slot): cancel them.
    assert_eq!(sim.s.cancel_some(id, &[2, 3], sim.now, &mut fx).unwrap(), 2);
    sim.settle(fx);
    let err = sim
        .s
        .cancel_some(id, &[9], sim.now, &mut Effects::default());
    assert!(
        err.unwrap_err()
            .to_string()
            .contains("job 1 has no task 9; its tasks are 0 to 3"),
        "a bad index is named"
    );
    sim.finish(0, 0, true);
    sim.finish(0, 0, true);
    let view = sim.s.job_view(id, sim.now).unwrap();
    assert_eq!(
        view.status,
        JobStatus::Cancelled,
        "done and cancelled: cancelled"
    );
    assert_eq!(view.counts.get(TaskStatus::Done), 2);
    // Retrying only task 3 brings the job back; task 2 stays cancelled.
    let mut fx = Effects::default();
    assert_eq!(sim.s.retry_some(id, &[3], sim.now, &mut fx).unwrap(), 1);
    sim.settle(fx);
    sim.finish(0, 0, true);
    let view = sim.s.job_view(id, sim.now).unwrap();
    assert_eq!(view.status, JobStatus::Cancelled);
    assert_eq!(view.counts.get(TaskStatus::Done), 3);
    assert_eq!(view.counts.get(TaskStatus::Cancelled), 1);
    // Priority changes are bounded.
    assert!(sim.s.set_priority(id, 1001).is_err());
    sim.s.set_priority(id, 900).unwrap();
    assert_eq!(sim.s.job_view(id, sim.now).unwrap().priority, 900);
}

#[test]
fn progress_counts_only_from_the_engine_running_the_attempt_and_feeds_the_eta() {
    let mut sim = Sim::new();
    sim.add_engine(vec!["default"], 1, 1);
    sim.add_engine(vec!["default"], 1, 1);
    let id = sim.submit(spec("1-4", 1));
    let key = sim.engines[0].held[0];
    let now = sim.now;
    sim.s.task_started("engine-0", key, now);
    sim.s.task_progress("engine-1", key, 80.0, now);

    sim.s.task_progress("engine-0", key, 50.0, now);
    sim.s.task_progress("engine-0", key, f32::NAN, now);
    let view = sim.s.job_view(id, now).unwrap();
    assert_eq!(view.progress, Some(12.5), "half of one task in four");
    assert_eq!(view.eta, None, "too early for the task's own estimate");
    let later = now + 60_000;
    let eta = sim.s.job_view(id, later).unwrap().eta.expect("an estimate");
    assert_eq!(eta.method, "task_progress");
    // Both engines' tasks finish: estimates come from their times now.
    sim.advance(10_000);
    sim.finish(0, 0, true);
    sim.finish(1, 0, true);
    let view = sim.s.job_view(id, sim.now).unwrap();
    let eta = view.eta.expect("an estimate from finished tasks");
    assert_eq!(eta.method, "frame_times");
    assert!(eta.low_s <= eta.high_s);
    assert!(view.progress.unwrap() >= 50.0);
}

#[test]
fn speed_scores_compare_engines_on_the_same_jobs() {
    let mut sim = Sim::new();
    sim.add_engine(vec!["default"], 1, 1);
    sim.add_engine(vec!["default"], 1, 1);
    let id = sim.submit(spec("1-8", 2));
    let took = |ms| Outcome {
        exit_code: Some(0),
        wall_ms: ms,
        ..Default::default()
    };
    assert_eq!(
        sim.s.engine_view(sim.s.engine("engine-0").unwrap()).speed,
        None
    );
    for _ in 0..2 {
        sim.finish_with(0, 0, took(1000));
        sim.finish_with(1, 0, took(2000));
    }
    assert_eq!(sim.s.job_status(id), Some(JobStatus::Done));
    sim.advance(250); // scores are worked out on the tick
    let speed = |name| {
        sim.s
            .engine_view(sim.s.engine(name).unwrap())
            .speed
            .unwrap()
    };
    // 500 and 1000 ms a frame: the median of the two is 750.
    assert!(
        (speed("engine-0") - 1.5).abs() < 1e-4,
        "{}",
        speed("engine-0")
    );
    assert!(
        (speed("engine-1") - 0.75).abs() < 1e-4,
        "{}",
        speed("engine-1")
    );
}
