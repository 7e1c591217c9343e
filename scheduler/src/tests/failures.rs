//! Failures: retries elsewhere, blacklists, sick engines and their checks.

use super::*;

#[test]
fn failures_retry_elsewhere_then_fail_the_job() {
    let mut sim = Sim::new();
    sim.add_engine(vec!["default"], 1, 1);
    sim.add_engine(vec!["default"], 1, 1);
    let id = sim.submit(spec("1", 1).max_attempts(2));
    let first = sim.engines.iter().position(|e| !e.held.is_empty()).unwrap();
    sim.finish(first, 0, false);
    let second = sim.engines.iter().position(|e| !e.held.is_empty()).unwrap();
    assert_ne!(first, second, "the retry goes to the other engine");
    sim.finish(second, 0, false);
    assert_eq!(sim.s.job_status(id), Some(JobStatus::Failed));
    let tasks = sim.s.task_views(id, None).unwrap();
    assert_eq!(
        (tasks[0].status, tasks[0].attempts),
        (TaskStatus::Failed, 2)
    );
}

#[test]
fn an_engine_that_fails_a_job_twice_gets_no_more_of_it() {
    let mut sim = Sim::new();
    sim.add_engine(vec!["default"], 1, 2);
    let mut fx = Effects::default();
    let mut sp = spec("1-6", 1);
    sp.max_attempts = 5;
    let id = sim.s.submit(sp, sim.now, &mut fx).unwrap();
    let other = sim.s.submit(spec("1-4", 1), sim.now, &mut fx).unwrap();
    sim.settle(fx);
    // A second engine joins, busy with the other job for now.
    sim.add_engine(vec!["default"], 1, 1);
    sim.finish(0, 0, false);
    sim.finish(0, 0, false);
    // Blacklisted: engine 0's queued task of the job was taken back; from
    // now on it runs only the other job.
    let view = sim.s.job_view(id, sim.now).unwrap();
    assert_eq!(view.blacklisted, vec![EngineId::from("engine-0")]);
    for _ in 0..20 {
        assert!(sim.engines[0].held.iter().all(|k| k.task.job == other));
        sim.finish(0, 0, true);
        sim.finish(1, 0, true);
    }
    assert_eq!(sim.s.job_status(id), Some(JobStatus::Done));
    // Retry forgives it.
    let mut fx = Effects::default();
    sim.s.retry(id, sim.now, &mut fx).unwrap();
    assert!(sim.s.job_view(id, sim.now).unwrap().blacklisted.is_empty());
}

#[test]
fn a_blacklisted_engine_keeps_a_job_no_other_engine_can_run() {
    // One engine, a job that always fails: it must end failed by its
    // max_attempts, not wait forever for an engine that will never come.
    let mut sim = Sim::new();
    sim.add_engine(vec!["default"], 1, 1);
    let id = sim.submit(spec("1", 1).max_attempts(4));
    for _ in 0..4 {
        sim.finish(0, 0, false);
    }
    assert_eq!(sim.s.job_status(id), Some(JobStatus::Failed));
    assert_eq!(sim.s.task_views(id, None).unwrap()[0].attempts, 4);
}

#[test]
fn five_failures_in_a_row_make_an_engine_sick_until_it_is_enabled() {
    let mut sim = Sim::new();
    sim.add_engine(vec!["default"], 1, 1);
    let mut fx = Effects::default();
    // One attempt each: the failures are of different jobs.
    let ids: Vec<JobId> = (0..6)
        .map(|_| {
            let mut sp = spec("1", 1);
            sp.max_attempts = 1;
            sim.s.submit(sp, sim.now, &mut fx).unwrap()
        })
        .collect();
    sim.settle(fx);
    for _ in 0..5 {
        sim.finish(0, 0, false);
    }
    let e = sim.s.engine("engine-0").unwrap();
    assert_eq!(e.view().state, EngineState::Sick);
    assert!(e
        .sick
        .as_deref()
        .unwrap()
        .starts_with("failed 5 tasks in a row"));
    assert!(sim.engines[0].held.is_empty(), "no work for a sick engine");
    let reasons = sim.blocked(ids[5], sim.now);
    assert!(reasons[0].contains("sick (1)"), "{reasons:?}");
    let mut fx = Effects::default();
    sim.s
        .set_engine_disabled("engine-0", false, sim.now, &mut fx)
        .unwrap();
    sim.settle(fx);
    assert_eq!(sim.s.engine("engine-0").unwrap().failures_in_row, 0);
    assert_eq!(sim.engines[0].held.len(), 1, "enabled: work again");
}

#[test]
fn one_bad_job_does_not_make_an_engine_sick() {
    let mut sim = Sim::new();
    sim.add_engine(vec!["default"], 1, 1);
    let id = sim.submit(spec("1", 1).max_attempts(8));
    for _ in 0..8 {
        sim.finish(0, 0, false);
    }
    assert_eq!(sim.s.job_status(id), Some(JobStatus::Failed));
    let e = sim.s.engine("engine-0").unwrap();
    assert_eq!((e.failures_in_row, e.sick.is_none()), (8, true));
}

#[test]
fn a_sick_engine_that_passes_its_check_gets_work_again() {
    let mut sim = Sim::new();
    sim.add_engine(vec!["default"], 1, 1);
    let mut fx = Effects::default();
    for _ in 0..6 {
        let mut sp = spec("1", 1);
        sp.max_attempts = 1;
        sim.s.submit(sp, sim.now, &mut fx).unwrap();
    }
    sim.settle(fx);
    for _ in 0..5 {
        sim.finish(0, 0, false);
    }
    assert!(sim.s.engine("engine-0").unwrap().sick.is_some());
    // Before the check interval nothing is sent; after it the simulated
    // engine answers its check with a pass.
    sim.advance(1000);
    assert!(sim.s.engine("engine-0").unwrap().sick.is_some());
    sim.advance(4000);
    sim.advance(4000);
    sim.advance(2000);
    assert!(sim.s.engine("engine-0").unwrap().sick.is_none());
    assert_eq!(sim.engines[0].held.len(), 1);
    // A failed check keeps it sick and says why.
    let e = sim.s.engine_index["engine-0"];
    sim.s.engines[e].sick = Some("x".into());
    sim.s.engines[e].check_pending = Some(99);
    sim.s
        .check_result("engine-0", 99, false, "disk full", &mut Effects::default());
    assert!(sim
        .s
        .engine("engine-0")
        .unwrap()
        .sick
        .as_deref()
        .unwrap()
        .ends_with("disk full"));
}

fn failed(signature: &str) -> Outcome {
    Outcome {
        exit_code: Some(127),
        signature: Some(signature.into()),
        ..Default::default()
    }
}

/// Bad jobs that fail the same way everywhere (a missing program) are their
/// own fault: no engine is blacklisted or made sick, what the first engine
/// was charged is taken back, and a healthy job then runs at once.
#[test]
fn the_same_failure_on_two_engines_is_the_jobs_fault() {
    let mut sim = Sim::new();
    sim.add_engine(vec!["default"], 1, 1);
    sim.add_engine(vec!["default"], 1, 1);
    let missing = "could not run: cannot run \"<path>\": No such file or directory";
    let mut bad = Vec::new();
    for _ in 0..3 {
        bad.push(sim.submit(spec("1-4", 1).max_attempts(3)));
    }
    for _ in 0..40 {
        for e in 0..2 {
            sim.finish_with(e, 0, failed(missing));
        }
    }
    for id in &bad {
        assert_eq!(sim.s.job_status(*id), Some(JobStatus::Failed));
        let view = sim.s.job_view(*id, sim.now).unwrap();
        assert!(view.blacklisted.is_empty(), "{:?}", view.blacklisted);
        assert_eq!(view.job_faults, vec![missing.to_string()]);
        // Deterministic once two engines saw it: no task burns all 3.
        let tasks = sim.s.task_views(*id, None).unwrap();
        assert!(tasks.iter().all(|t| t.attempts <= 2), "{tasks:?}");
        assert!(view
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("on two engines")));
    }
    for name in ["engine-0", "engine-1"] {
        let e = sim.s.engine(name).unwrap();
        assert!(e.sick.is_none(), "{name} is sick: {:?}", e.sick);
        assert!(e.failures_in_row <= 1, "{name}: {}", e.failures_in_row);
    }
    let good = sim.submit(spec("1", 1));
    assert_eq!(sim.engines.iter().map(|e| e.held.len()).sum::<usize>(), 1);
    sim.finish(0, 0, true);
    sim.finish(1, 0, true);
    assert_eq!(sim.s.job_status(good), Some(JobStatus::Done));
}

/// A failure only one engine has, while another runs the job fine, is that
/// engine's fault (it lacks the renderer): it counts toward its blacklist.
#[test]
fn a_failure_only_one_engine_has_is_that_engines_fault() {
    let mut sim = Sim::new();
    sim.add_engine(vec!["default"], 1, 1);
    sim.add_engine(vec!["default"], 1, 1);
    let id = sim.submit(spec("1-6", 1).max_attempts(5));
    for _ in 0..6 {
        sim.finish_with(0, 0, failed("could not run: renderer missing"));
        sim.finish(1, 0, true);
    }
    let view = sim.s.job_view(id, sim.now).unwrap();
    assert!(view.job_faults.is_empty());
    assert_eq!(view.blacklisted, vec![EngineId::from("engine-0")]);
}

/// `--retry-deterministic`: the same failure everywhere still uses every
/// attempt.
#[test]
fn retry_deterministic_uses_every_attempt_of_a_jobs_fault() {
    let mut sim = Sim::new();
    sim.add_engine(vec!["default"], 1, 1);
    sim.add_engine(vec!["default"], 1, 1);
    let id = sim.submit(
        spec("1-2", 1)
            .max_attempts(3)
            .with(|s| s.retry_deterministic = true),
    );
    for _ in 0..10 {
        for e in 0..2 {
            sim.finish_with(e, 0, failed("exit 1: Error: no scene"));
        }
    }
    assert_eq!(sim.s.job_status(id), Some(JobStatus::Failed));
    let tasks = sim.s.task_views(id, None).unwrap();
    assert!(tasks.iter().all(|t| t.attempts == 3), "{tasks:?}");
}
