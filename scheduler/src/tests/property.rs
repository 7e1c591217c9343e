//! The property test: generated farms, every invariant after every step.

use super::*;

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
    Finish {
        engine: usize,
        pick: usize,
        success: bool,
    },
    Advance(u64),
    Kill(usize),
    Stop(usize),
    Restart(usize),
    Pause(usize),
    Resume(usize),
    Cancel(usize),
    Retry(usize),
    Enable(usize),
    RestartMaster,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1u32..20, 1u32..4, 0u32..3, 0usize..3, 1u32..4, 0usize..3, 0u32..3).prop_map(|(frames, blocksize, p, pool, max_attempts, owner, max_engines)| Op::Submit {
            frames, blocksize, priority: p * 100, pool, max_attempts, owner, max_engines
        }),
        1 => (0usize..3, 1u32..3, 0u32..3).prop_map(|(pool, slots, extra_hwm)| Op::AddEngine { pool, slots, extra_hwm }),
        // One attempt in four fails: enough for blacklists and sick engines.
        12 => (0usize..8, 0usize..4, prop::bool::weighted(0.75)).prop_map(|(engine, pick, success)| Op::Finish { engine, pick, success }),
        2 => (100u64..7000).prop_map(Op::Advance),
        1 => (0usize..8).prop_map(Op::Kill),
        1 => (0usize..8).prop_map(Op::Stop),
        1 => (0usize..8).prop_map(Op::Restart),
        1 => (0usize..8).prop_map(Op::Pause),
        1 => (0usize..8).prop_map(Op::Resume),
        1 => (0usize..8).prop_map(Op::Cancel),
        1 => (0usize..8).prop_map(Op::Retry),
        1 => (0usize..8).prop_map(Op::Enable),
        1 => Just(Op::RestartMaster),
    ]
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut sim = Sim::new();
    sim.s.set_limit("lic", LICENCES).expect("valid limit");
    sim.add_engine(vec!["default"], 1, 2);
    let mut stopped: Vec<bool> = vec![false; 64];
    for op in ops {
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
                let mut sp = spec(&format!("1-{frames}"), blocksize);
                sp.owner = ["ana", "ben", "cy"][owner].into();
                sp.max_engines = max_engines;
                if frames % 2 == 0 {
                    sp.limits = vec!["lic".into()];
                }
                sp.priority = priority;
                sp.pool = POOLS[pool].into();
                sp.max_attempts = max_attempts;
                let mut fx = Effects::default();
                let id = sim.s.submit(sp, sim.now, &mut fx).expect("valid spec");
                sim.jobs.push(id);
                sim.settle(fx);
            }
            Op::AddEngine {
                pool,
                slots,
                extra_hwm,
            } => {
                if sim.engines.len() < 8 {
                    sim.add_engine(vec![POOLS[pool], "default"], slots, slots + extra_hwm);
                }
            }
            Op::Finish {
                engine,
                pick,
                success,
            } => {
                if engine < sim.engines.len() && !stopped[engine] {
                    // Engine 1 is a bad node: it fails far more often, so
                    // runs see it fall sick, recover, and fall sick again.
                    let success = success && (engine != 1 || pick % 4 == 0);
                    sim.finish(engine, pick, success);
                }
            }
            Op::Advance(ms) => {
                // A stopped (SIGSTOP) engine sends no heartbeats.
                let saved: Vec<bool> = sim.engines.iter().map(|e| e.alive).collect();
                for (i, e) in sim.engines.iter_mut().enumerate() {
                    if stopped[i] {
                        e.alive = false;
                    }
                }
                sim.advance(ms);
                for (e, a) in sim.engines.iter_mut().zip(saved) {
                    e.alive = a;
                }
            }
            Op::Kill(i) => {
                if i < sim.engines.len() {
                    sim.kill(i);
                }
            }
            Op::Stop(i) => {
                if i < sim.engines.len() {
                    stopped[i] = true;
                }
            }
            Op::Restart(i) => {
                if i < sim.engines.len() {
                    stopped[i] = false;
                    sim.register(i);
                }
            }
            Op::Pause(j) => {
                if let Some(id) = sim.jobs.get(j) {
                    let _ = sim.s.pause(*id);
                }
            }
            Op::Resume(j) => {
                if let Some(id) = sim.jobs.get(j).copied() {
                    let mut fx = Effects::default();
                    let _ = sim.s.resume(id, sim.now, &mut fx);
                    sim.settle(fx);
                }
            }
            Op::Cancel(j) => {
                if let Some(id) = sim.jobs.get(j).copied() {
                    let mut fx = Effects::default();
                    let _ = sim.s.cancel(id, sim.now, &mut fx);
                    sim.settle(fx);
                }
            }
            Op::Retry(j) => {
                if let Some(id) = sim.jobs.get(j).copied() {
                    let mut fx = Effects::default();
                    let _ = sim.s.retry(id, sim.now, &mut fx);
                    sim.settle(fx);
                }
            }
            Op::Enable(i) => {
                if i < sim.engines.len() {
                    let id = sim.engines[i].id.clone();
                    let mut fx = Effects::default();
                    let _ = sim.s.set_engine_disabled(&id, false, sim.now, &mut fx);
                    sim.settle(fx);
                }
            }
            Op::RestartMaster => sim.restart_master(),
        }
        sim.check_invariants()?;
    }
    // Let the farm finish: stopped engines resume, an engine per pool joins,
    // and every held task completes.
    for (i, s) in stopped.iter_mut().enumerate().take(sim.engines.len()) {
        if *s {
            *s = false;
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
            prop_assert!(
                matches!(t.status, TaskStatus::Done | TaskStatus::Failed),
                "task {}.{} ended {}",
                id,
                i,
                t.status
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]
    #[test]
    fn invariants_hold_over_random_farms(ops in prop::collection::vec(op(), 1..60)) {
        run(ops)?;
    }
}
