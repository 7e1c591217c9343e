//! The property test: generated farms, every invariant after every step.
//!
//! Steps pick among what exists (a job, an engine, an engine that holds
//! work), so few do nothing; the events include the hard ones: a master
//! restart that loses its last commit, results delivered inside Register,
//! lost and late Cancels, clean engine shutdowns and limit changes. The
//! invariants are checked against the simulated engines' own state after
//! every step, and a coverage count over the whole run fails the test if the
//! generator stops producing the situations that matter.

use super::*;
use proptest::test_runner::{Config as RunnerConfig, TestRunner};

/// Which of the things that exist a step acts on (taken modulo their count).
#[derive(Debug, Clone, Copy)]
struct Pick(usize);

fn any_pick() -> impl Strategy<Value = Pick> {
    any::<usize>().prop_map(Pick)
}

#[derive(Debug, Clone)]
enum Op {
    Submit {
        frames: u32,
        blocksize: u32,
        priority: u32,
        pool: usize,
        max_attempts: u32,
        owner: usize,
        max_engines: u32,
    },
    AddEngine {
        pool: usize,
        slots: u32,
        extra_hwm: u32,
    },
    /// An engine that holds work finishes one attempt.
    Finish {
        engine: Pick,
        pick: usize,
        success: bool,
    },
    Advance(u64),
    Kill(Pick),
    Stop(Pick),
    /// A stopped or dead engine comes back and registers.
    Restart(Pick),
    ShutDown(Pick),
    Pause(Pick),
    Resume(Pick),
    /// With `lost`, the Cancel messages are held back until the next
    /// advance (late), or for good if the engine dies meanwhile.
    Cancel {
        job: Pick,
        lost: bool,
    },
    Retry(Pick),
    Enable(Pick),
    SetLimit(u32),
    /// An engine reports success for an attempt another engine holds (a
    /// forged or confused engine). The master must drop it.
    Forge {
        forger: Pick,
        victim: Pick,
    },
    RestartMaster {
        lose_last_commit: bool,
    },
    /// An engine reports progress (or output) of an attempt some engine
    /// holds: its own, or, forged, another's. Only the holder's counts.
    Progress {
        reporter: Pick,
        holder: Pick,
        percent: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1u32..20, 1u32..4, 0u32..3, 0usize..3, 1u32..4, 0usize..3, 0u32..3).prop_map(|(frames, blocksize, p, pool, max_attempts, owner, max_engines)| Op::Submit {
            frames, blocksize, priority: p * 100, pool, max_attempts, owner, max_engines
        }),
        1 => (0usize..3, 1u32..3, 0u32..3).prop_map(|(pool, slots, extra_hwm)| Op::AddEngine { pool, slots, extra_hwm }),
        // One attempt in four fails: enough for blacklists and sick engines.
        12 => (any_pick(), 0usize..4, prop::bool::weighted(0.75)).prop_map(|(engine, pick, success)| Op::Finish { engine, pick, success }),
        2 => (100u64..7000).prop_map(Op::Advance),
        1 => any_pick().prop_map(Op::Kill),
        1 => any_pick().prop_map(Op::Stop),
        1 => any_pick().prop_map(Op::Restart),
        1 => any_pick().prop_map(Op::ShutDown),
        1 => any_pick().prop_map(Op::Pause),
        1 => any_pick().prop_map(Op::Resume),
        1 => (any_pick(), any::<bool>()).prop_map(|(job, lost)| Op::Cancel { job, lost }),
        1 => any_pick().prop_map(Op::Retry),
        1 => any_pick().prop_map(Op::Enable),
        1 => (0u32..4).prop_map(Op::SetLimit),
        1 => (any_pick(), any_pick()).prop_map(|(forger, victim)| Op::Forge { forger, victim }),
        1 => any::<bool>().prop_map(|lose_last_commit| Op::RestartMaster { lose_last_commit }),
        2 => (any_pick(), any_pick(), 0u8..=120).prop_map(|(reporter, holder, percent)| Op::Progress { reporter, holder, percent }),
    ]
}

fn pick<T: Copy>(items: &[T], i: &Pick) -> Option<T> {
    (!items.is_empty()).then(|| items[i.0 % items.len()])
}

fn apply(sim: &mut Sim, op: Op) {
    match op {
        Op::Submit {
            frames,
            blocksize,
            priority,
            pool,
            max_attempts,
            owner,
            max_engines,
        } => {
            let mut sp = spec(&format!("1-{frames}"), blocksize)
                .owner(["ana", "ben", "cy"][owner])
                .max_engines(max_engines)
                .priority(priority)
                .pool(POOLS[pool])
                .max_attempts(max_attempts);
            if frames % 2 == 0 {
                sp = sp.limit("lic");
            }
            // Some jobs stall quickly: a quiet attempt is stopped and requeued
            // while every other event goes on.
            if frames % 3 == 0 {
                sp = sp.with(|s| s.stall_after_secs = 5);
            }
            // Some are cut at dispatch to each engine's speed.
            if frames % 4 == 1 {
                sp = sp.with(|s| s.target_task_minutes = Some(1));
            }
            // Some are tiled: a frame's assembly waits for its tiles.
            if frames % 5 == 2 {
                sp = sp.with(|s| {
                    s.target_task_minutes = None;
                    s.blocksize = 1;
                    s.tiles = Some(drqueue_common::tiles::Tiles {
                        cols: 2,
                        rows: 1 + frames % 2,
                        overlap: 0,
                        width: 8,
                        height: 8,
                        keep: false,
                    });
                });
            }
            let id = sim.submit(sp);
            sim.jobs.push(id);
        }
        Op::AddEngine {
            pool,
            slots,
            extra_hwm,
        } => {
            if sim.engines.len() < 6 {
                sim.add_engine(vec![POOLS[pool], "default"], slots, slots + extra_hwm);
            }
        }
        Op::Finish {
            engine,
            pick: p,
            success,
        } => {
            let busy: Vec<usize> = (0..sim.engines.len())
                .filter(|i| {
                    let e = &sim.engines[*i];
                    e.alive && !e.stopped && !e.held.is_empty()
                })
                .collect();
            if let Some(i) = pick(&busy, &engine) {
                // Engine 1 is a bad node: it fails far more often, so runs
                // see it fall sick, recover, and fall sick again.
                let success = success && (i != 1 || p % 4 == 0);
                // Engines differ in speed: engine i takes (i + 1) × 7 s a
                // task, which feeds speed scores and auto-sized cuts.
                let out = Outcome {
                    exit_code: Some(if success { 0 } else { 1 }),
                    wall_ms: (i as u64 + 1) * 7_000,
                    ..Default::default()
                };
                sim.finish_with(i, p, out);
            }
        }
        Op::Advance(ms) => sim.advance(ms),
        Op::Kill(i) => {
            let alive: Vec<usize> = (0..sim.engines.len())
                .filter(|i| sim.engines[*i].alive)
                .collect();
            if let Some(i) = pick(&alive, &i) {
                sim.kill(i);
            }
        }
        Op::Stop(i) => {
            let running: Vec<usize> = (0..sim.engines.len())
                .filter(|i| sim.engines[*i].alive && !sim.engines[*i].stopped)
                .collect();
            if let Some(i) = pick(&running, &i) {
                let e = &mut sim.engines[i];
                e.stopped = true;
                e.frozen_with.extend(e.held.iter().copied());
            }
        }
        Op::Restart(i) => {
            let down: Vec<usize> = (0..sim.engines.len())
                .filter(|i| !sim.engines[*i].alive || sim.engines[*i].stopped)
                .collect();
            if let Some(i) = pick(&down, &i) {
                sim.register(i);
            }
        }
        Op::ShutDown(i) => {
            let running: Vec<usize> = (0..sim.engines.len())
                .filter(|i| sim.engines[*i].alive && !sim.engines[*i].stopped)
                .collect();
            if let Some(i) = pick(&running, &i) {
                sim.shut_down(i);
            }
        }
        Op::Pause(j) => {
            if let Some(id) = pick(&sim.jobs, &j) {
                if sim.s.pause(id).is_ok() && sim.s.job_status(id) == Some(JobStatus::Paused) {
                    if sim
                        .s
                        .jobs
                        .get(&id)
                        .is_some_and(|j| j.counts.get(TaskStatus::Ready) > 0)
                    {
                        sim.coverage.paused_with_ready += 1;
                    }
                    // Paused for the oracle once that commit is durable.
                    sim.settle(Effects::default());
                    sim.pausing.push(id);
                }
            }
        }
        Op::Resume(j) => {
            if let Some(id) = pick(&sim.jobs, &j) {
                let mut fx = Effects::default();
                let _ = sim.s.resume(id, sim.now, &mut fx);
                sim.paused.remove(&id);
                sim.pausing.retain(|j| *j != id);
                sim.settle(fx);
            }
        }
        Op::Cancel { job, lost } => {
            if let Some(id) = pick(&sim.jobs, &job) {
                let mut fx = Effects::default();
                let _ = sim.s.cancel(id, sim.now, &mut fx);
                sim.hold_cancels = lost;
                let msgs = std::mem::take(&mut fx.messages);
                let mut next = Effects::default();
                sim.deliver(msgs, &mut next);
                sim.hold_cancels = false;
                sim.settle(next);
            }
        }
        Op::Retry(j) => {
            if let Some(id) = pick(&sim.jobs, &j) {
                let mut fx = Effects::default();
                if sim.s.retry(id, sim.now, &mut fx).is_ok() {
                    sim.forgive_job(id);
                }
                sim.settle(fx);
            }
        }
        Op::Enable(i) => {
            if let Some(i) = pick(&(0..sim.engines.len()).collect::<Vec<_>>(), &i) {
                let id = sim.engines[i].id.clone();
                let mut fx = Effects::default();
                if sim
                    .s
                    .set_engine_disabled(&id, false, sim.now, &mut fx)
                    .is_ok()
                {
                    sim.forgiving.push(i);
                }
                sim.settle(fx);
            }
        }
        Op::Forge { forger, victim } => sim.forge(forger.0, victim.0),
        Op::SetLimit(n) => {
            sim.s.set_limit("lic", n).expect("valid limit");
            sim.limit = n;
            sim.coverage.limit_changes += 1;
            sim.settle(Effects::default());
        }
        Op::RestartMaster { lose_last_commit } => sim.restart_master(lose_last_commit),
        Op::Progress {
            reporter,
            holder,
            percent,
        } => {
            let busy: Vec<usize> = (0..sim.engines.len())
                .filter(|&i| !sim.engines[i].held.is_empty())
                .collect();
            if let Some(h) = pick(&busy, &holder) {
                let key = sim.engines[h].held[0];
                let r = reporter.0 % sim.engines.len();
                let id = sim.engines[r].id.clone();
                sim.s.task_progress(&id, key, f32::from(percent), sim.now);
                sim.s.task_activity(&id, key, sim.now);
            }
        }
    }
}

fn run(ops: Vec<Op>) -> Result<Coverage, TestCaseError> {
    let mut sim = Sim::new();
    sim.s.set_limit("lic", LICENCES).expect("valid limit");
    sim.limit = LICENCES;
    sim.add_engine(vec!["default"], 1, 2);
    // SIM_TRACE=1 prints each step and what every engine holds after it.
    let trace = std::env::var_os("SIM_TRACE").is_some();
    for op in ops {
        if trace {
            eprintln!("{op:?}");
        }
        apply(&mut sim, op);
        if trace {
            sim.trace_engines();
        }
        sim.check_invariants()?;
    }
    // Let the farm finish: the licences come back, frozen and dead engines
    // come back, an engine per pool joins, held cancels arrive, and every
    // held task completes.
    sim.s.set_limit("lic", LICENCES).expect("valid limit");
    sim.limit = LICENCES;
    for i in 0..sim.engines.len() {
        if !sim.engines[i].alive || sim.engines[i].stopped {
            sim.register(i);
        }
    }
    sim.add_engine(POOLS.to_vec(), 2, 3);
    for _ in 0..5000 {
        let busy: Vec<usize> = (0..sim.engines.len())
            .filter(|i| sim.engines[*i].alive && !sim.engines[*i].held.is_empty())
            .collect();
        if busy.is_empty() {
            sim.advance(7000);
            if sim.engines.iter().all(|e| !e.alive || e.held.is_empty()) {
                break;
            }
            continue;
        }
        for i in busy {
            sim.finish(i, 0, true);
        }
        sim.check_invariants()?;
    }
    sim.check_done_records()?;
    sim.coverage.auto_cuts = sim
        .s
        .jobs
        .values()
        .filter(|j| j.spec.auto_blocksize() && j.tasks.len() > 1)
        .count() as u32;
    for (id, job) in &sim.s.jobs {
        if matches!(job.status, JobStatus::Paused | JobStatus::Cancelled) {
            continue;
        }
        prop_assert!(
            matches!(job.status, JobStatus::Done | JobStatus::Failed),
            "job {} ended {} with counts {:?}",
            id,
            job.status,
            job.counts
        );
        for (i, t) in job.tasks.iter().enumerate() {
            // A tiled frame's assembly is cancelled when a tile failed.
            let orphan = t.status == TaskStatus::Cancelled
                && job
                    .waits_for(i as u32)
                    .any(|d| job.tasks[d as usize].status == TaskStatus::Failed);
            prop_assert!(
                matches!(t.status, TaskStatus::Done | TaskStatus::Failed) || orphan,
                "task {}.{} ended {}",
                id,
                i,
                t.status
            );
        }
    }
    Ok(sim.coverage)
}

#[test]
fn invariants_hold_over_random_farms() {
    let mut runner = TestRunner::new(RunnerConfig {
        cases: 3000,
        ..RunnerConfig::default()
    });
    let total = std::cell::RefCell::new(Coverage::default());
    let result = runner.run(&prop::collection::vec(op(), 1..60), |ops| {
        let c = run(ops)?;
        let mut t = total.borrow_mut();
        t.successes += c.successes;
        t.failures += c.failures;
        t.engine_kills_with_work += c.engine_kills_with_work;
        t.results_in_register += c.results_in_register;
        t.lost_commits += c.lost_commits;
        t.lost_cancels += c.lost_cancels;
        t.late_cancels_delivered += c.late_cancels_delivered;
        t.clean_shutdowns_with_work += c.clean_shutdowns_with_work;
        t.limit_changes += c.limit_changes;
        t.sick_engines += c.sick_engines;
        t.blacklistings += c.blacklistings;
        t.paused_with_ready += c.paused_with_ready;
        t.forgeries += c.forgeries;
        t.auto_cuts += c.auto_cuts;
        t.assemblies += c.assemblies;
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    // A generator that goes weak fails here: each situation must come up in
    // a good share of the run (3,000 cases).
    let t = total.into_inner();
    eprintln!("coverage over 3000 cases: {t:?}");
    let floors = [
        ("successes", t.successes, 20_000),
        ("failures", t.failures, 1_300),
        ("engine kills with work", t.engine_kills_with_work, 250),
        ("results delivered in Register", t.results_in_register, 150),
        ("restarts losing the last commit", t.lost_commits, 80),
        ("lost or late cancels", t.lost_cancels, 60),
        ("late cancels delivered", t.late_cancels_delivered, 40),
        (
            "clean shutdowns with work",
            t.clean_shutdowns_with_work,
            200,
        ),
        ("limit changes", t.limit_changes, 1_500),
        ("sick engines", t.sick_engines, 10),
        ("blacklistings", t.blacklistings, 450),
        ("paused jobs with ready tasks", t.paused_with_ready, 800),
        ("forged results", t.forgeries, 100),
        ("auto-sized jobs cut", t.auto_cuts, 300),
        ("tiled frames assembled", t.assemblies, 3_000),
    ];
    for (what, seen, floor) in floors {
        assert!(
            seen >= floor,
            "the generator went weak: {what} {seen} < {floor}"
        );
    }
}

// Cases the generator once found, replayed exactly.

fn submit(frames: u32, blocksize: u32, pool: usize, max_attempts: u32, max_engines: u32) -> Op {
    Op::Submit {
        frames,
        blocksize,
        priority: 0,
        pool,
        max_attempts,
        owner: 0,
        max_engines,
    }
}

fn finish(engine: usize, success: bool) -> Op {
    Op::Finish {
        engine: Pick(engine),
        pick: 0,
        success,
    }
}

const LOSE_LAST_COMMIT: Op = Op::RestartMaster {
    lose_last_commit: true,
};

fn replay(ops: Vec<Op>) {
    if let Err(e) = run(ops) {
        panic!("{e}");
    }
}

/// An engine the master has not heard from since a restart that lost its
/// last commit may hold work of a job; the master cannot count it.
#[test]
fn engines_unheard_since_a_lost_commit_do_not_count_for_max_engines() {
    use Op::*;
    replay(vec![
        AddEngine {
            pool: 1,
            slots: 1,
            extra_hwm: 2,
        },
        submit(7, 1, 1, 1, 0),
        submit(1, 1, 0, 1, 0),
        Cancel {
            job: Pick(1180189748675136979),
            lost: false,
        },
        submit(19, 3, 0, 2, 2),
        Pause(Pick(7332431023795475724)),
        submit(1, 1, 1, 1, 0),
        finish(220810236892960928, true),
        Pause(Pick(1833753233462791)),
        finish(0, true),
        finish(0, true),
        finish(0, true),
        finish(2674929334496635165, false),
        Stop(Pick(13423869398312619833)),
        finish(0, true),
        finish(0, false),
        Restart(Pick(0)),
        AddEngine {
            pool: 0,
            slots: 1,
            extra_hwm: 0,
        },
        LOSE_LAST_COMMIT,
    ]);
}

/// Nor can it count the licence such an engine holds.
#[test]
fn engines_unheard_since_a_lost_commit_do_not_count_for_limits() {
    use Op::*;
    replay(vec![
        submit(1, 1, 1, 1, 0),
        submit(7, 1, 0, 1, 0),
        Cancel {
            job: Pick(5422947957516799477),
            lost: true,
        },
        submit(8, 1, 0, 1, 0),
        AddEngine {
            pool: 2,
            slots: 1,
            extra_hwm: 0,
        },
        LOSE_LAST_COMMIT,
    ]);
}

/// A retry's attempt number after two lost commits: the engine still holds
/// (and is stopping) the attempt whose assignment was lost, and its
/// cancelled result has come and gone; the retry must not reuse that
/// number, or the engine ends up holding more than its HWM.
#[test]
fn a_new_attempt_never_reuses_a_number_an_engine_reported() {
    replay(vec![
        submit(5, 2, 0, 3, 0),
        finish(0, true),
        finish(0, false),
        LOSE_LAST_COMMIT,
        LOSE_LAST_COMMIT,
    ]);
}

/// A success the master took in a commit that was lost is not done: the
/// restarted master may cancel the task and a retry run it again.
#[test]
fn a_success_in_a_lost_commit_is_not_counted_done() {
    use Op::*;
    replay(vec![
        submit(1, 1, 0, 1, 0),
        finish(0, true),
        Stop(Pick(0)),
        LOSE_LAST_COMMIT,
        Cancel {
            job: Pick(0),
            lost: false,
        },
        Restart(Pick(0)),
        Retry(Pick(0)),
    ]);
}

/// A retry forgives its job's failures, but not when the crash that follows
/// loses the retry's commit: the restarted master still holds them.
#[test]
fn a_retry_lost_in_a_crash_forgives_nothing() {
    use Op::*;
    replay(vec![
        submit(1, 1, 0, 1, 0),
        Pause(Pick(0)),
        finish(0, false),
        finish(0, false),
        AddEngine {
            pool: 0,
            slots: 1,
            extra_hwm: 1,
        },
        submit(3, 1, 0, 3, 1),
        finish(0, false),
        Retry(Pick(193859286972275315)),
        LOSE_LAST_COMMIT,
        finish(0, false),
        Finish {
            engine: Pick(0),
            pick: 1,
            success: false,
        },
        Finish {
            engine: Pick(0),
            pick: 1,
            success: false,
        },
        finish(0, false),
    ]);
}

/// A failure delivered again in Register (its ack was lost while the engine
/// was frozen) is not counted twice: the engine is not blacklisted for it.
#[test]
fn a_failure_delivered_again_is_not_counted_twice() {
    use Op::*;
    replay(vec![
        submit(1, 1, 1, 1, 0),
        submit(1, 1, 1, 1, 0),
        submit(7, 1, 0, 2, 0),
        finish(0, false),
        Stop(Pick(0)),
        AddEngine {
            pool: 0,
            slots: 1,
            extra_hwm: 0,
        },
        Finish {
            engine: Pick(0),
            pick: 1,
            success: false,
        },
        Finish {
            engine: Pick(0),
            pick: 1,
            success: false,
        },
        Restart(Pick(0)),
    ]);
}

/// Found by the property test: an auto-cut job's cuts lost in two
/// restarts in a row. The engine's cancelled attempts of cuts that no
/// longer existed were forgotten once their results came, so the new cuts
/// by those numbers reused their attempt numbers, and the engine held more
/// than its HWM.
#[test]
fn lost_cuts_never_reuse_an_attempt_number() {
    let ops = vec![
        Op::Submit {
            frames: 13,
            blocksize: 1,
            priority: 0,
            pool: 2,
            max_attempts: 1,
            owner: 0,
            max_engines: 0,
        },
        Op::AddEngine {
            pool: 2,
            slots: 1,
            extra_hwm: 2,
        },
        Op::RestartMaster {
            lose_last_commit: true,
        },
        Op::RestartMaster {
            lose_last_commit: true,
        },
    ];
    run(ops).unwrap();
}
