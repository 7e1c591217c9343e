//! `--blocksize auto` and speed-steered dispatch, on simulated engines whose
//! frames take a known time: a small discrete-event run.

use super::*;

fn auto(frames: &str, minutes: u32) -> JobSpec {
    spec(frames, 1).with(|s| s.target_task_minutes = Some(minutes))
}

/// The frames of a held attempt, from the task record.
fn frames_of(sim: &Sim, key: AttemptKey) -> u64 {
    let t = sim.s.task_record(key.task).expect("a held task exists");
    ((t.last - t.first) / t.step + 1) as u64
}

/// Runs the farm until nothing is held: each engine renders its oldest
/// attempt in `ms_per_frame[engine]` per frame, one at a time. Returns the
/// frames each engine rendered and when the last one ended.
fn run_to_end(sim: &mut Sim, ms_per_frame: &[u64]) -> (Vec<u64>, Millis) {
    let start = sim.now;
    let mut rendered = vec![0; ms_per_frame.len()];
    let mut busy_until: Vec<Option<Millis>> = vec![None; ms_per_frame.len()];
    for _ in 0..10_000 {
        for (i, until) in busy_until.iter_mut().enumerate() {
            if until.is_none() {
                if let Some(&key) = sim.engines[i].held.first() {
                    *until = Some(sim.now + frames_of(sim, key) * ms_per_frame[i]);
                }
            }
        }
        let Some((i, at)) = busy_until
            .iter()
            .enumerate()
            .filter_map(|(i, u)| Some((i, (*u)?)))
            .min_by_key(|(_, at)| *at)
        else {
            return (rendered, sim.now - start);
        };
        let key = sim.engines[i].held[0];
        let frames = frames_of(sim, key);
        sim.advance(at - sim.now);
        rendered[i] += frames;
        sim.finish_with(
            i,
            0,
            Outcome {
                exit_code: Some(0),
                wall_ms: frames * ms_per_frame[i],
                ..Default::default()
            },
        );
        busy_until[i] = None;
    }
    panic!("the farm never finished");
}

#[test]
fn auto_blocks_give_the_fast_engine_more_frames_and_cover_each_once() {
    let mut sim = Sim::new();
    sim.add_engine(vec!["default"], 1, 2);
    sim.add_engine(vec!["default"], 1, 2);
    let id = sim.submit(auto("1-120", 10));
    let (rendered, _) = run_to_end(&mut sim, &[1_000, 4_000]);
    assert_eq!(sim.s.job_status(id), Some(JobStatus::Done));
    assert_eq!(rendered.iter().sum::<u64>(), 120);
    assert!(
        rendered[0] > 3 * rendered[1],
        "engine 0 is four times as fast: {rendered:?}"
    );
    // Every frame is in exactly one task, and the tasks are far fewer than
    // the frames (the point of blocks).
    let view = sim.s.job_view(id, sim.now).unwrap();
    let mut seen = Vec::new();
    for index in 0..view.tasks_total as u32 {
        let t = sim.s.task_record(TaskKey { job: id, index }).unwrap();
        assert_eq!(t.status, TaskStatus::Done);
        seen.extend((t.first..=t.last).step_by(t.step as usize));
    }
    seen.sort_unstable();
    assert_eq!(seen, (1..=120).collect::<Vec<i64>>());
    assert!(view.tasks_total < 40, "{} tasks", view.tasks_total);
    assert_eq!(view.progress, Some(100.0));
}

#[test]
fn auto_blocks_aim_at_the_target_minutes() {
    let mut sim = Sim::new();
    sim.add_engine(vec!["default"], 1, 1);
    let id = sim.submit(auto("1-1000", 1));
    // 6 s a frame: a one-minute task holds 10 frames after the probe.
    let (rendered, _) = run_to_end(&mut sim, &[6_000]);
    assert_eq!(rendered, vec![1000]);
    let sizes: Vec<i64> = (0..3)
        .map(|index| {
            let t = sim.s.task_record(TaskKey { job: id, index }).unwrap();
            (t.last - t.first) / t.step + 1
        })
        .collect();
    assert_eq!(sizes, vec![1, 10, 10], "a probe, then a minute's work each");
}

#[test]
fn cuts_survive_a_master_restart() {
    let mut sim = Sim::new();
    sim.add_engine(vec!["default"], 1, 1);
    let id = sim.submit(auto("1-50", 1));
    let key = sim.engines[0].held[0];
    sim.finish_with(
        0,
        0,
        Outcome {
            exit_code: Some(0),
            wall_ms: 6_000,
            ..Default::default()
        },
    );
    assert_eq!(key.task.index, 0);
    let before = sim.s.job_view(id, sim.now).unwrap().tasks_total;
    assert!(before >= 2);
    sim.restart_master(false);
    sim.register(0);
    let after = sim.s.job_view(id, sim.now).unwrap();
    assert_eq!(after.tasks_total, before, "the cuts are read back");
    assert_eq!(after.counts.get(TaskStatus::Done), 1);
    let (rendered, _) = run_to_end(&mut sim, &[6_000]);
    assert_eq!(rendered.iter().sum::<u64>(), 49);
    assert_eq!(sim.s.job_status(id), Some(JobStatus::Done));
}

#[test]
fn the_fastest_free_engine_takes_the_next_task() {
    let mut sim = Sim::new();
    sim.add_engine(vec!["default"], 1, 1);
    sim.add_engine(vec!["default"], 1, 1);
    // A shared job teaches the scores: engine 1 is twice as fast.
    sim.submit(spec("1-4", 1));
    for _ in 0..2 {
        for (i, ms) in [(0, 2_000), (1, 1_000)] {
            sim.finish_with(
                i,
                0,
                Outcome {
                    exit_code: Some(0),
                    wall_ms: ms,
                    ..Default::default()
                },
            );
        }
    }
    sim.advance(250);
    let speed = |sim: &Sim, n| sim.s.engine_view(sim.s.engine(n).unwrap()).speed.unwrap();
    assert!(speed(&sim, "engine-1") > speed(&sim, "engine-0"));
    // Both idle; one task: the fast engine gets it, though engine 0 comes
    // first by every other order.
    sim.submit(spec("1", 1));
    assert!(sim.engines[0].held.is_empty());
    assert_eq!(sim.engines[1].held.len(), 1);
}
