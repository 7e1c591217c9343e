//! Recovery: lost engines, master restarts, results delivered with Register.

use super::*;

#[test]
fn a_lost_engines_tasks_run_elsewhere_and_its_late_success_counts_once() {
    let mut sim = Sim::new();
    sim.add_engine(vec!["default"], 1, 1);
    let id = sim.submit(spec("1", 1));
    let stale = sim.engines[0].held[0];
    // Engine 0 goes silent (SIGSTOP); engine 1 joins; the timeout passes.
    sim.engines[0].alive = false;
    sim.add_engine(vec!["default"], 1, 1);
    sim.advance(6000);
    assert_eq!(sim.engines[1].held.len(), 1, "requeued onto engine 1");
    // Engine 0 wakes with a success for the old attempt.
    let mut fx = Effects::default();
    let ok = Outcome {
        exit_code: Some(0),
        ..Default::default()
    };
    sim.s
        .task_finished("engine-0", stale, ok.clone(), sim.now, &mut fx);
    assert!(fx
        .messages
        .iter()
        .any(|(e, m)| e == "engine-1" && matches!(m, ToEngine::Cancel(_))));
    assert_eq!(sim.s.job_status(id), Some(JobStatus::Done));
    let view = sim.s.job_view(id, sim.now).unwrap();
    assert_eq!(view.counts.get(TaskStatus::Done), 1);
    // The replaced attempt reporting success too changes nothing.
    let current = sim.engines[1].held[0];
    sim.s
        .task_finished("engine-1", current, ok, sim.now, &mut fx);
    assert_eq!(
        sim.s
            .job_view(id, sim.now)
            .unwrap()
            .counts
            .get(TaskStatus::Done),
        1
    );
}

#[test]
fn a_restarted_master_adopts_what_engines_still_run() {
    let mut sim = Sim::new();
    sim.add_engine(vec!["default"], 2, 2);
    let id = sim.submit(spec("1-4", 1));
    let held_before = sim.engines[0].held.clone();
    // The master dies before committing: the store has tasks as ready.
    sim.store.tasks.values_mut().for_each(|t| {
        t.status = TaskStatus::Ready;
        t.attempts = 0;
        t.engine = None
    });
    sim.restart_master(false);
    assert_eq!(sim.engines[0].held, held_before, "no task given out twice");
    let running = sim.s.task_views(id, Some(TaskStatus::Assigned)).unwrap();
    assert_eq!(running.len(), 2);
    for _ in 0..4 {
        sim.finish(0, 0, true);
    }
    assert_eq!(sim.s.job_status(id), Some(JobStatus::Done));
}

#[test]
fn restart_waits_for_engines_then_gives_up_on_them() {
    let mut sim = Sim::new();
    sim.add_engine(vec!["default"], 1, 1);
    let id = sim.submit(spec("1-2", 1));
    sim.kill(0);
    sim.restart_master(false);
    sim.add_engine(vec!["default"], 1, 1);
    assert!(
        sim.engines[1].held.is_empty(),
        "nothing dispatched while engine 0 may come back"
    );
    assert!(!sim.blocked(id, sim.now).is_empty());
    sim.advance(7000);
    assert_eq!(sim.engines[1].held.len(), 1);
}

#[test]
fn a_result_delivered_with_the_register_is_not_run_again() {
    // The engine finished a task while the master was down; the result was
    // never acknowledged. Re-registering must not requeue that task.
    let mut sim = Sim::new();
    sim.add_engine(vec!["default"], 1, 2);
    let id = sim.submit(spec("1-2", 1));
    let done = sim.engines[0].held.remove(0);
    let still_held = sim.engines[0].held.clone();
    sim.s = Scheduler::restore(
        sim_config(),
        sim.store.snapshot(),
        sim.now,
        &mut Effects::default(),
    );
    let mut fx = Effects::default();
    sim.s.engine_registered(
        &EngineId::from("engine-0"),
        facts(&["default"]),
        1,
        2,
        &still_held,
        &[done],
        sim.now,
        &mut fx,
    );
    // Whatever runs between the Register and the result must not hand the
    // finished task out again.
    sim.s.dispatch(sim.now, &mut fx);
    let ok = Outcome {
        exit_code: Some(0),
        ..Default::default()
    };
    sim.s.task_finished("engine-0", done, ok, sim.now, &mut fx);
    let reassigned: Vec<_> = fx
        .messages
        .iter()
        .filter_map(|(_, m)| match m {
            ToEngine::Assign(a) => Some(a.tasks.iter().map(|t| t.index).collect::<Vec<_>>()),
            _ => None,
        })
        .flatten()
        .collect();
    assert!(
        !reassigned.contains(&done.task.index),
        "task {} was handed out again",
        done.task
    );
    let view = sim.s.job_view(id, sim.now).unwrap();
    assert_eq!(view.counts.get(TaskStatus::Done), 1);
}

/// The audit's defect: the assignment's commit is lost in a crash, the
/// engine runs the attempt anyway and delivers its result inside Register.
/// The task must end done with the attempt it ran (not "attempt 0"), so its
/// log and history can be read.
#[test]
fn a_result_in_register_after_a_lost_assignment_keeps_its_attempt() {
    let mut sim = Sim::new();
    sim.add_engine(vec!["default"], 1, 1);
    let mut fx = Effects::default();
    let id = sim.s.submit(spec("1", 1), sim.now, &mut fx).unwrap();
    sim.store.commit(sim.s.take_batch());
    let before_assignment = sim.store.snapshot();
    sim.settle(fx);
    let key = sim.engines[0].held.pop().expect("the engine got the task");
    assert_eq!(key.attempt, 1);

    // The master dies having lost the assignment's commit; the engine ran
    // the attempt meanwhile and reports it on registering again.
    sim.now += 1000;
    let mut fx = Effects::default();
    sim.s = Scheduler::restore(sim_config(), before_assignment, sim.now, &mut fx);
    sim.s.engine_registered(
        &EngineId::from("engine-0"),
        facts(&["default"]),
        1,
        1,
        &[],
        &[key],
        sim.now,
        &mut fx,
    );
    let ok = Outcome {
        exit_code: Some(0),
        wall_ms: 10,
        ..Default::default()
    };
    sim.s.task_finished("engine-0", key, ok, sim.now, &mut fx);
    sim.settle(fx);

    let task = sim.s.task_record(TaskKey { job: id, index: 0 }).unwrap();
    assert_eq!(task.status, TaskStatus::Done);
    assert_eq!(task.attempts, 1, "the attempt that ran, not attempt 0");
    assert_eq!(task.engine.as_deref(), Some("engine-0"));
    let history = task.history(Vec::new());
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].attempt, key);
    assert_eq!(sim.s.job_status(id), Some(JobStatus::Done));
}

/// A new job whose tasks start alike is stored as one record: its tasks
/// come back after a restart ready (released) or waiting (paused), and run.
#[test]
fn a_new_job_is_one_record_and_its_tasks_come_back_in_their_start_state() {
    let mut sim = Sim::new();
    let queued = sim.submit(spec("1-1000", 1));
    let paused = sim.submit(spec("1-5", 1).with(|s| s.paused = true));
    assert!(
        sim.store.tasks.is_empty(),
        "no task records for tasks in their start state"
    );
    sim.restart_master(false);
    let count =
        |sim: &Sim, id, status| sim.s.job_view(id, sim.now).expect("job").counts.get(status);
    assert_eq!(count(&sim, queued, TaskStatus::Ready), 1000);
    assert_eq!(count(&sim, paused, TaskStatus::Waiting), 5);
    // They run, and the ones that ran are stored from then on.
    sim.add_engine(vec!["default"], 2, 2);
    sim.finish(0, 0, true);
    assert_eq!(count(&sim, queued, TaskStatus::Done), 1);
    sim.restart_master(false);
    assert_eq!(count(&sim, queued, TaskStatus::Done), 1);
    assert_eq!(count(&sim, paused, TaskStatus::Waiting), 5);
    let mut fx = Effects::default();
    sim.s.resume(paused, sim.now, &mut fx).expect("resume");
    sim.settle(fx);
    sim.restart_master(false);
    assert_eq!(
        count(&sim, paused, TaskStatus::Ready),
        5,
        "released is kept"
    );
}

/// Cancelling a whole job writes its record alone, not a row per task: after
/// a restart its unfinished tasks (stored or not, held or not) come back
/// cancelled, ended when the job did, and a retry runs them again.
#[test]
fn a_cancelled_job_is_one_record_and_its_tasks_come_back_cancelled() {
    let mut sim = Sim::new();
    sim.add_engine(vec!["default"], 1, 2);
    let id = sim.submit(spec("1-1000", 1));
    sim.finish(0, 0, true);
    let rows_before = sim.store.tasks.len();
    let held = sim.engines[0].held.len();
    assert!(held > 0, "the engine holds tasks at the cancel");
    let mut fx = Effects::default();
    sim.s.cancel(id, sim.now, &mut fx).expect("cancel");
    let cancelled_at = sim.now;
    sim.settle(fx);
    assert_eq!(
        sim.store.tasks.len(),
        rows_before,
        "the cancel wrote no task rows"
    );
    sim.now += 5_000;
    sim.restart_master(false);
    let view = sim.s.job_view(id, sim.now).expect("job");
    assert_eq!(view.status, JobStatus::Cancelled);
    assert_eq!(
        (
            view.counts.get(TaskStatus::Done),
            view.counts.get(TaskStatus::Cancelled)
        ),
        (1, 999)
    );
    let task = sim
        .s
        .task_record(TaskKey {
            job: id,
            index: 999,
        })
        .expect("task");
    assert_eq!(task.ended_ms, Some(cancelled_at));
    // A retry brings them back, and a restart keeps them back.
    let mut fx = Effects::default();
    assert_eq!(sim.s.retry(id, sim.now, &mut fx).expect("retry"), 999);
    sim.settle(fx);
    sim.restart_master(false);
    let view = sim.s.job_view(id, sim.now).expect("job");
    assert_eq!(view.counts.get(TaskStatus::Cancelled), 0);
    assert_eq!(view.counts.get(TaskStatus::Done), 1);
}

/// Idle engines beat once in `IDLE_BEATS` of the intervals the Welcome asks
/// for, and late by one interval at worst (they beat on their own tick). For
/// any engine timeout, that must never look like a lost engine, and an
/// engine that stops beating must still be lost within the timeout (plus the
/// master's one-second tick).
#[test]
fn idle_beats_keep_an_engine_online_and_silence_loses_it_within_the_timeout() {
    use drqueue_common::protocol::IDLE_BEATS;
    for timeout in [400, 2_000, 5_000, 60_000] {
        let mut s = Scheduler::new(Config {
            engine_timeout_ms: timeout,
            ..Config::default()
        });
        let mut now: Millis = 1_000_000;
        let mut fx = Effects::default();
        s.engine_registered(
            &"e".into(),
            facts(&["default"]),
            1,
            1,
            &[],
            &[],
            now,
            &mut fx,
        );
        let beat_ms = fx
            .messages
            .iter()
            .find_map(|(_, m)| match m {
                ToEngine::Welcome { heartbeat_ms, .. } => Some(u64::from(*heartbeat_ms)),
                _ => None,
            })
            .expect("a Welcome");
        let idle_interval = beat_ms * u64::from(IDLE_BEATS) + beat_ms;
        let online = |s: &Scheduler| s.engines()[0].online;
        let beat = |s: &mut Scheduler, now| {
            let hb = Heartbeat {
                load: 0.0,
                free_ram_mb: 1000,
                held: 0,
                peak_held: 0,
            };
            s.heartbeat("e", hb, now);
        };
        // Twenty idle beats, the master ticking every second between them.
        for _ in 0..20 {
            let next = now + idle_interval;
            while now < next {
                now = (now + 1000).min(next);
                s.tick(now, &mut fx);
                assert!(online(&s), "timeout {timeout} ms: an idle engine beating every {idle_interval} ms was lost");
            }
            beat(&mut s, now);
        }
        // Silence: lost by the timeout and one tick.
        let last = now;
        while online(&s) {
            now += 1000;
            s.tick(now, &mut fx);
            assert!(
                now - last <= timeout + 1000,
                "timeout {timeout} ms: a silent engine still online after {} ms",
                now - last
            );
        }
    }
}
