//! Tiled jobs: a frame's assembly waits for its tiles, is handed their
//! files, is cancelled when one fails, and waits again when it is retried.

use super::*;
use drqueue_common::tiles::Tiles;

/// Two tiles a frame: for frames 1-2, tasks 0-1 and 2-3 are the tiles,
/// 4 and 5 the assemblies.
fn tiled(frames: &str) -> JobSpec {
    let mut s = spec(frames, 1);
    s.tiles = Some(Tiles {
        cols: 2,
        rows: 1,
        overlap: 0,
        width: 8,
        height: 8,
        keep: false,
    });
    s
}

fn status(sim: &Sim, id: JobId, i: usize) -> TaskStatus {
    sim.s.jobs[&id].tasks[i].status
}

fn held(sim: &Sim) -> Vec<u32> {
    let mut v: Vec<u32> = sim.engines[0].held.iter().map(|k| k.task.index).collect();
    v.sort_unstable();
    v
}

#[test]
fn the_assembly_waits_for_its_tiles_and_is_handed_their_files() {
    let mut sim = Sim::new();
    let id = sim.submit(tiled("1-2"));
    sim.add_engine(vec!["default"], 1, 10);
    assert_eq!(held(&sim), vec![0, 1, 2, 3], "no assembly before its tiles");
    assert_eq!(status(&sim, id, 4), TaskStatus::Waiting);
    sim.finish(0, 0, true);
    assert_eq!(status(&sim, id, 4), TaskStatus::Waiting, "one tile of two");
    sim.finish(0, 0, true);
    assert_eq!(held(&sim), vec![2, 3, 4]);
    // The Sim checks what the assembly was handed: task0's and task1's files.
    assert_eq!(sim.violations, Vec::<String>::new());
    assert_eq!(sim.coverage.assemblies, 1);
    // It survives a restart that loses nothing: handed from the store.
    sim.restart_master(false);
    sim.finish(0, 0, true);
    sim.finish(0, 0, true);
    assert!(held(&sim).contains(&5));
    assert_eq!(sim.violations, Vec::<String>::new());
}

#[test]
fn a_failed_tile_cancels_its_assembly_and_a_retry_brings_it_back() {
    let mut sim = Sim::new();
    let mut spec = tiled("1");
    spec.max_attempts = 1;
    let id = sim.submit(spec);
    sim.add_engine(vec!["default"], 1, 10);
    sim.finish(0, 0, false);
    assert_eq!(status(&sim, id, 0), TaskStatus::Failed);
    assert_eq!(
        status(&sim, id, 2),
        TaskStatus::Cancelled,
        "it can never run"
    );
    sim.finish(0, 0, true);
    assert_eq!(sim.s.job_status(id), Some(JobStatus::Failed));
    let mut fx = Effects::default();
    assert_eq!(sim.s.retry(id, sim.now, &mut fx).unwrap(), 2);
    sim.settle(fx);
    assert_eq!(status(&sim, id, 2), TaskStatus::Waiting);
    assert_eq!(held(&sim), vec![0]);
    sim.finish(0, 0, true);
    assert_eq!(held(&sim), vec![2]);
    sim.finish(0, 0, true);
    assert_eq!(sim.s.job_status(id), Some(JobStatus::Done));
    assert_eq!(sim.violations, Vec::<String>::new());
}

#[test]
fn retrying_one_tile_reopens_the_cancelled_assembly() {
    let mut sim = Sim::new();
    let mut spec = tiled("1");
    spec.max_attempts = 1;
    let id = sim.submit(spec);
    sim.add_engine(vec!["default"], 1, 10);
    sim.finish(0, 0, false);
    sim.finish(0, 0, true);
    let mut fx = Effects::default();
    sim.s.retry_some(id, &[0], sim.now, &mut fx).unwrap();
    sim.settle(fx);
    assert_eq!(status(&sim, id, 2), TaskStatus::Waiting);
    sim.finish(0, 0, true);
    sim.finish(0, 0, true);
    assert_eq!(sim.s.job_status(id), Some(JobStatus::Done));
}
