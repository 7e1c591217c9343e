//! `sched`: the scheduler alone, with no socket and no store.

use crate::spec;
use drqueue_common::model::{EngineFacts, TaskKey};
use drqueue_common::protocol::{AttemptKey, Outcome, ToEngine};
use std::time::{Duration, Instant};

/// The pure scheduler under a simulated farm: every held attempt finishes
/// at once, then the scheduler dispatches again.
pub fn scheduler_alone(tasks: u64) {
    use drqueue_master::scheduler::{Config, Effects, Scheduler};
    println!("== scheduler alone: 50 engines (4 slots, HWM 5), {tasks} tasks in 200 jobs, no I/O");
    for (label, owners, rules) in [
        ("1 owner", 1usize, false),
        ("8 owners taking turns", 8, false),
        ("8 owners, a limit and max_engines on every job", 8, true),
    ] {
        let mut s = Scheduler::new(Config::default());
        let mut fx = Effects::default();
        let now = 1_000_000;
        if rules {
            s.set_limit("lic", 120).expect("valid limit");
        }
        for i in 0..50 {
            let facts = EngineFacts {
                name: format!("e{i}"),
                os: "linux".into(),
                cores: 16,
                ram_mb: 64_000,
                pools: vec!["default".into()],
                ..Default::default()
            };
            s.engine_registered(&format!("e{i}").into(), facts, 4, 5, &[], &[], now, &mut fx);
        }
        let per_job = (tasks / 200).max(1);
        for j in 0..200 {
            let mut sp = spec(&["true"], per_job);
            sp.owner = format!("artist{}", j % owners);
            if rules {
                sp.limits = vec!["lic".into()];
                sp.max_engines = 10;
            }
            s.submit(sp, now, &mut fx).expect("valid job");
        }
        s.persist(&mut fx);
        fx = Effects::default();
        let start = Instant::now();
        let (mut done, mut rounds) = (0u64, 0u64);
        let mut dispatch_time = Duration::ZERO;
        while done < per_job * 200 {
            let t = Instant::now();
            s.dispatch(now, &mut fx);
            dispatch_time += t.elapsed();
            rounds += 1;
            let msgs = std::mem::take(&mut fx.messages);
            if msgs.is_empty() {
                break;
            }
            for (engine, m) in msgs {
                if let ToEngine::Assign(a) = m {
                    for t in a.tasks {
                        let key = AttemptKey {
                            task: TaskKey {
                                job: a.job.id,
                                index: t.index,
                            },
                            attempt: t.attempt,
                        };
                        let ok = Outcome {
                            exit_code: Some(0),
                            ..Default::default()
                        };
                        s.task_finished(&engine, key, ok, now, &mut fx);
                        done += 1;
                    }
                }
            }
            fx.after_commit.clear();
            fx.ended_jobs.clear();
            s.persist(&mut fx);
            fx.batch = Default::default();
            fx.observed.clear();
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "   {label}: {done} tasks in {secs:.2} s = {:.0} tasks/s; dispatch {:.1} µs per round over {rounds} rounds",
            done as f64 / secs,
            dispatch_time.as_secs_f64() * 1e6 / rounds as f64
        );
    }
}
