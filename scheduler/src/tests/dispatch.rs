//! Dispatch: HWM, priority, owner turns, max_engines, RAM, limits, facts.

use super::*;

#[test]
fn hwm_bounds_what_an_engine_holds_and_prefetches_one() {
    let mut sim = Sim::new();
    sim.submit(spec("1-10", 1));
    sim.add_engine(vec!["default"], 1, 2);
    assert_eq!(sim.engines[0].held.len(), 2, "slot + one prefetched");
    sim.finish(0, 0, true);
    assert_eq!(sim.engines[0].held.len(), 2);
}

#[test]
fn higher_priority_goes_first_then_submission_order() {
    let mut sim = Sim::new();
    let mut fx = Effects::default();
    let low = sim.s.submit(spec("1-3", 1), sim.now, &mut fx).unwrap();
    let mut hi = spec("1-3", 1);
    hi.priority = 900;
    let high = sim.s.submit(hi, sim.now, &mut fx).unwrap();
    sim.settle(fx);
    sim.add_engine(vec!["default"], 1, 1);
    assert_eq!(sim.engines[0].held[0].task.job, high);
    for _ in 0..3 {
        sim.finish(0, 0, true);
    }
    assert_eq!(sim.engines[0].held[0].task.job, low);
}

#[test]
fn a_limit_caps_running_tasks_and_says_so() {
    let mut sim = Sim::new();
    sim.s.set_limit("nuke", 1).unwrap();
    sim.add_engine(vec!["default"], 2, 2);
    sim.add_engine(vec!["default"], 2, 2);
    let id = sim.submit(spec("1-4", 1).limit("nuke"));
    let held: usize = sim.engines.iter().map(|e| e.held.len()).sum();
    assert_eq!(held, 1, "one token, one task");
    assert_eq!(
        sim.blocked(id, sim.now),
        vec!["limit `nuke` 1/1 in use".to_string()]
    );
    let views = sim.s.limit_views();
    assert_eq!((views[0].count, views[0].in_use), (1, 1));
    for _ in 0..4 {
        let e = sim.engines.iter().position(|e| !e.held.is_empty()).unwrap();
        sim.finish(e, 0, true);
    }
    assert_eq!(sim.s.job_status(id), Some(JobStatus::Done));
    assert!(sim.s.set_limit("bad name", 1).is_err());
}

#[test]
fn owners_of_equal_priority_take_turns() {
    let mut sim = Sim::new();
    let mut fx = Effects::default();
    // Ana submits two big jobs first; Ben's job comes later.
    let mut ids = Vec::new();
    for owner in ["ana", "ana", "ben"] {
        let mut sp = spec("1-10", 1);
        sp.owner = owner.into();
        ids.push(sim.s.submit(sp, sim.now, &mut fx).unwrap());
    }
    sim.settle(fx);
    for _ in 0..4 {
        sim.add_engine(vec!["default"], 1, 1);
    }
    let per_owner = |sim: &Sim, owner: &str| {
        sim.engines
            .iter()
            .flat_map(|e| &e.held)
            .filter(|k| sim.s.jobs[&k.task.job].spec.owner == owner)
            .count()
    };
    assert_eq!((per_owner(&sim, "ana"), per_owner(&sim, "ben")), (2, 2));
    // Within Ana's share, her older job goes first.
    assert!(sim
        .engines
        .iter()
        .flat_map(|e| &e.held)
        .all(|k| k.task.job != ids[1]));
    // Freed slots keep the balance.
    for _ in 0..3 {
        for e in 0..4 {
            sim.finish(e, 0, true);
        }
        assert_eq!((per_owner(&sim, "ana"), per_owner(&sim, "ben")), (2, 2));
    }
}

#[test]
fn higher_priority_still_beats_fair_share() {
    let mut sim = Sim::new();
    let mut fx = Effects::default();
    let mut urgent = spec("1-10", 1);
    urgent.owner = "ana".into();
    urgent.priority = 900;
    let urgent = sim.s.submit(urgent, sim.now, &mut fx).unwrap();
    let mut other = spec("1-10", 1);
    other.owner = "ben".into();
    sim.s.submit(other, sim.now, &mut fx).unwrap();
    sim.settle(fx);
    sim.add_engine(vec!["default"], 2, 2);
    sim.add_engine(vec!["default"], 2, 2);
    assert!(sim
        .engines
        .iter()
        .flat_map(|e| &e.held)
        .all(|k| k.task.job == urgent));
}

#[test]
fn max_engines_caps_the_engines_one_job_runs_on() {
    let mut sim = Sim::new();
    for _ in 0..3 {
        sim.add_engine(vec!["default"], 2, 2);
    }
    let id = sim.submit(spec("1-20", 1).max_engines(2));
    let busy = sim.engines.iter().filter(|e| !e.held.is_empty()).count();
    assert_eq!(busy, 2);
    assert_eq!(sim.s.engines_running(id), 2);
    assert_eq!(
        sim.blocked(id, sim.now),
        vec!["max_engines 2 reached".to_string()]
    );
    // Each of the two engines holds what its HWM allows.
    assert_eq!(sim.engines.iter().map(|e| e.held.len()).sum::<usize>(), 4);
}

#[test]
fn ram_requirements_use_the_free_ram_of_the_last_heartbeat() {
    let mut sim = Sim::new();
    sim.add_engine(vec!["default"], 4, 4);
    let id = sim.submit(spec("1-8", 1).min_ram_mb(6000));
    // 16000 MB and nothing running: room for two.
    assert_eq!(sim.engines[0].held.len(), 2);
    // The next heartbeat says 1000 MB free (the simulation's figure): when
    // a task ends, its successor does not fit.
    sim.advance(100);
    sim.finish(0, 0, true);
    assert_eq!(sim.engines[0].held.len(), 1);
    let reasons = sim.blocked(id, sim.now);
    assert_eq!(
        reasons,
        vec!["needs 6000 MB RAM free; the most free on an eligible engine is 1000 MB".to_string()]
    );
}

#[test]
fn refreshed_facts_bring_new_renderers_into_play() {
    let mut sim = Sim::new();
    sim.add_engine(vec!["default"], 1, 1);
    sim.submit(spec("1", 1).needs("houdini"));
    assert!(sim.engines[0].held.is_empty());
    let mut f = facts(&["default"]);
    f.capabilities.push("houdini".into());
    sim.s.facts_refreshed("engine-0", f);
    sim.settle(Effects::default());
    assert_eq!(sim.engines[0].held.len(), 1);
}

#[test]
fn disabling_an_engine_hands_its_queued_tasks_to_others() {
    let mut sim = Sim::new();
    sim.add_engine(vec!["default"], 1, 3);
    sim.submit(spec("1-3", 1));
    assert_eq!(sim.engines[0].held.len(), 3);
    // The first has started; the two prefetched ones have not.
    let running = sim.engines[0].held[0];
    sim.s.task_started("engine-0", running, sim.now);
    let mut fx = Effects::default();
    sim.s
        .set_engine_disabled("engine-0", true, sim.now, &mut fx)
        .unwrap();
    sim.settle(fx);
    assert_eq!(sim.engines[0].held, vec![running]);
    sim.add_engine(vec!["default"], 2, 2);
    assert_eq!(sim.engines[1].held.len(), 2);
}

#[test]
fn one_assign_per_engine_and_job_per_dispatch() {
    let mut sim = Sim::new();
    sim.add_engine(vec!["default"], 2, 6);
    let mut fx = Effects::default();
    sim.s.submit(spec("1-10", 1), sim.now, &mut fx).unwrap();
    sim.s.dispatch(sim.now, &mut fx);
    let assigns: Vec<usize> = fx
        .messages
        .iter()
        .filter_map(|(_, m)| match m {
            ToEngine::Assign(a) => Some(a.tasks.len()),
            _ => None,
        })
        .collect();
    assert_eq!(assigns, vec![6], "idle slots and prefetch in one message");
}

/// A revoked engine's attempts run elsewhere, not counted as failures; its
/// word about them no longer counts, and it stays refused after a restart.
#[test]
fn a_revoked_engine_loses_its_work_and_its_say() {
    let mut sim = Sim::new();
    sim.add_engine(vec!["default"], 1, 1);
    let job = sim.submit(spec("1", 1));
    let key = sim.engines[0].held[0];
    sim.add_engine(vec!["default"], 1, 1);
    let mut fx = Effects::default();
    sim.s.revoke_engine("engine-0", sim.now, &mut fx).unwrap();
    assert!(fx
        .messages
        .iter()
        .any(|(to, m)| to == "engine-0" && *m == ToEngine::Revoked));
    sim.settle(fx);
    assert!(sim.s.is_revoked("engine-0"));
    assert!(!sim.s.owns_attempt("engine-0", key));
    assert_eq!(
        sim.engines[1].held.len(),
        1,
        "the task went to the other engine"
    );
    let t = sim.s.task_record(key.task).unwrap();
    assert_eq!(t.failures, 0);
    sim.finish(1, 0, true);
    assert_eq!(sim.s.job_status(job), Some(JobStatus::Done));
    sim.restart_master(false);
    assert!(sim.s.is_revoked("engine-0"), "forgotten across a restart");
    assert_eq!(
        sim.s.engine("engine-0").unwrap().state(),
        drqueue_common::model::EngineState::Revoked,
        "a revoked engine registered again"
    );
}
