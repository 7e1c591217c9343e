//! The mutants an outside audit planted that survived the suite, each now
//! pinned by a directed case. A comment on each says which bug it catches.

use super::*;

fn job_on(sim: &Sim, engine: usize, job: JobId) -> usize {
    sim.engines[engine]
        .held
        .iter()
        .filter(|k| k.task.job == job)
        .count()
}

fn licensed(frames: &str) -> JobSpec {
    let mut sp = spec(frames, 1);
    sp.limits = vec!["lic".into()];
    sp
}

/// Catches: a licence token freed when the Cancel is sent rather than when
/// the attempt has really ended.
#[test]
fn a_cancelled_attempt_keeps_its_licence_until_it_has_ended() {
    let mut sim = Sim::new();
    sim.s.set_limit("lic", 1).unwrap();
    sim.add_engine(vec!["default"], 2, 2);
    let a = sim.submit(licensed("1"));
    assert_eq!(job_on(&sim, 0, a), 1);

    let mut fx = Effects::default();
    sim.s.cancel(a, sim.now, &mut fx).unwrap();
    fx.messages.clear(); // the Cancel is still on its way
    let b = sim.s.submit(licensed("1"), sim.now, &mut fx).unwrap();
    sim.settle(fx);
    assert_eq!(
        job_on(&sim, 0, b),
        0,
        "A's attempt still runs and holds the token"
    );

    let key = sim.engines[0].held.remove(0);
    let mut fx = Effects::default();
    let stopped = Outcome {
        cancelled: true,
        ..Default::default()
    };
    sim.s
        .task_finished("engine-0", key, stopped, sim.now, &mut fx);
    sim.settle(fx);
    assert_eq!(job_on(&sim, 0, b), 1, "the token is free once A has ended");
}

/// Catches: `requeue_lost` without its live-attempt check. An engine lost
/// while it still ran a superseded attempt must not requeue the task that
/// another engine now runs.
#[test]
fn losing_an_engine_with_a_superseded_attempt_leaves_the_live_one_alone() {
    let mut sim = Sim::new();
    sim.add_engine(vec!["default"], 1, 1);
    sim.add_engine(vec!["default"], 1, 1);
    let id = sim.submit(spec("1", 1));
    let first = sim.engines.iter().position(|e| !e.held.is_empty()).unwrap();
    let other = 1 - first;

    // Cancelled (the message is lost: the engine runs on), then retried:
    // the task goes to the other engine.
    let mut fx = Effects::default();
    sim.s.cancel(id, sim.now, &mut fx).unwrap();
    fx.messages.clear();
    sim.s.retry(id, sim.now, &mut fx).unwrap();
    sim.settle(fx);
    assert_eq!(job_on(&sim, other, id), 1);

    // The first engine falls silent and is declared lost.
    sim.engines[first].alive = false;
    sim.advance(6_000);
    sim.add_engine(vec!["default"], 1, 1);
    let holders: Vec<usize> = (0..sim.engines.len())
        .filter(|i| *i != first && job_on(&sim, *i, id) > 0)
        .collect();
    assert_eq!(holders, vec![other], "one live attempt, on one engine");
}

/// Catches: dispatch ignoring pause.
#[test]
fn a_paused_job_gets_no_new_task_when_a_slot_frees() {
    let mut sim = Sim::new();
    sim.add_engine(vec!["default"], 1, 1);
    let id = sim.submit(spec("1-3", 1));
    assert_eq!(job_on(&sim, 0, id), 1);
    sim.s.pause(id).unwrap();
    sim.finish(0, 0, true);
    assert_eq!(job_on(&sim, 0, id), 0, "paused: the freed slot stays free");
}

/// Catches: a blacklist off by one (either way): one failure leaves the
/// engine in the job, the second takes it out.
#[test]
fn the_blacklist_takes_an_engine_out_at_exactly_its_threshold() {
    let mut sim = Sim::new();
    assert_eq!(sim.s.config().blacklist_after, 2);
    sim.add_engine(vec!["default"], 1, 1);
    sim.add_engine(vec!["default"], 1, 1);
    let id = sim.submit(spec("1-8", 1).max_attempts(5));
    assert_eq!(job_on(&sim, 0, id), 1);
    sim.finish(0, 0, false);
    assert_eq!(
        job_on(&sim, 0, id),
        1,
        "after one failure it still runs the job"
    );
    sim.finish(0, 0, false);
    assert_eq!(
        job_on(&sim, 0, id),
        0,
        "after two it gets none while engine 1 can"
    );
}

/// Catches: a `max_engines` count one short (or one over).
#[test]
fn max_engines_puts_a_job_on_exactly_that_many_engines() {
    let mut sim = Sim::new();
    for _ in 0..3 {
        sim.add_engine(vec!["default"], 1, 1);
    }
    let id = sim.submit(spec("1-6", 1).max_engines(2));
    let on = (0..3).filter(|i| job_on(&sim, *i, id) > 0).count();
    assert_eq!(on, 2);
}

/// Catches: `task_finished` trusting whoever reports a result. An engine
/// that reports another engine's attempt (forged, or a cloned identity)
/// changes nothing, and the holder's own result still counts.
#[test]
fn a_result_from_an_engine_that_does_not_hold_the_attempt_changes_nothing() {
    let mut sim = Sim::new();
    sim.add_engine(vec!["default"], 1, 1);
    sim.add_engine(vec!["other"], 1, 1);
    let job = sim.submit(spec("1", 1));
    let key = sim.engines[0].held[0];
    let mut fx = Effects::default();
    let success = Outcome {
        exit_code: Some(0),
        ..Default::default()
    };
    sim.s
        .task_finished("engine-1", key, success.clone(), sim.now, &mut fx);
    assert!(fx
        .notices
        .iter()
        .any(|n| matches!(n, Notice::ForeignAttempt { what: "result", .. })));
    sim.settle(fx);
    let t = sim.s.task_record(key.task).unwrap();
    assert_eq!(t.status, TaskStatus::Assigned, "the forged success counted");
    assert!(!sim.s.owns_attempt("engine-1", key));
    assert!(sim.s.owns_attempt("engine-0", key));

    sim.finish(0, 0, true);
    // Its log may still come after the result (a resend follows Register).
    assert!(sim.s.owns_attempt("engine-0", key));
    assert!(!sim.s.owns_attempt("engine-1", key));
    let view = sim.s.job_view(job, sim.now).unwrap();
    assert_eq!(view.status, JobStatus::Done);
    assert_eq!(
        sim.s.task_record(key.task).unwrap().engine.as_deref(),
        Some("engine-0")
    );
}
