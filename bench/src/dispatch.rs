//! `dispatch` (a): the dispatch ceiling. An in-process master (SQLite,
//! persistence on, or MongoDB with `--db`) and 4 simulated engines that
//! finish every task the instant it arrives: the scheduler, protocol,
//! transport and store alone.

use crate::sim::{sim_credentials, sim_link, SimRegister};
use crate::{percentile, run_job, scratch, spec, start_master_on, wait_engines};
use drqueue_common::model::TaskKey;
use drqueue_common::protocol::{AttemptKey, Finished, FromEngine, Heartbeat, Outcome, ToEngine};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A simulated engine: the engine's own link (handshake, enrollment,
/// encryption), registers, and finishes each task the moment it arrives,
/// noting when it arrived.
async fn sim_engine(
    endpoint: String,
    name: String,
    hwm: u32,
    starts: Arc<Mutex<Vec<Instant>>>,
) -> anyhow::Result<()> {
    let pin = scratch(&format!("pin-{name}")).join("master.pub");
    let creds = sim_credentials(&name, pin)?;
    let reg = SimRegister {
        slots: hwm,
        hwm,
        ram_mb: 1024,
        held: Vec::new(),
        finished: Vec::new(),
    };
    let mut link = sim_link(&endpoint, &creds, reg).await?;
    let mut beat = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            to = link.recv() => {
                let Some(to) = to else { anyhow::bail!("the master closed the link") };
                if let ToEngine::Assign(a) = to {
                    let now = Instant::now();
                    starts.lock().expect("lock").extend(std::iter::repeat_n(now, a.tasks.len()));
                    // Sent together, as the engine sends a loop turn's results.
                    let done: Vec<FromEngine> = a.tasks.iter().map(|t| FromEngine::Finished(Finished {
                        attempt: AttemptKey { task: TaskKey { job: a.job.id, index: t.index }, attempt: t.attempt },
                        outcome: Outcome { exit_code: Some(0), ..Default::default() },
                    })).collect();
                    link.send_all(&done).await?;
                }
            }
            _ = beat.tick() => {
                let hb = FromEngine::Heartbeat(Heartbeat { load: 0.0, free_ram_mb: 1024, held: 0, peak_held: 0 });
                link.send(&hb).await?;
            }
        }
    }
}

pub async fn dispatch(tasks: u64, db: Option<String>) -> anyhow::Result<()> {
    let dir = scratch("dispatch");
    let db = db.unwrap_or_else(|| dir.join("db").display().to_string());
    let store = if db.starts_with("mongodb") {
        "MongoDB"
    } else {
        "SQLite, synchronous=FULL"
    };
    println!("== (a) dispatch ceiling: in-process master ({store}), 4 simulated engines, {tasks} no-op tasks");
    let master = start_master_on(db).await?;
    let starts = Arc::new(Mutex::new(Vec::with_capacity(tasks as usize)));
    let mut sims = Vec::new();
    for i in 0..4 {
        let (ep, st) = (master.engines_endpoint.clone(), starts.clone());
        sims.push(tokio::spawn(async move {
            if let Err(e) = sim_engine(ep, format!("sim-{i}"), 256, st).await {
                eprintln!("simulated engine stopped: {e}");
            }
        }));
    }
    wait_engines(&master.http_url, 4).await?;
    // Single-task latency on an idle farm.
    let mut idle = Vec::new();
    for _ in 0..50 {
        starts.lock().expect("lock").clear();
        let (t0, _) = run_job(master.http_url.clone(), spec(&["true"], 1)).await?;
        let s = starts.lock().expect("lock")[0];
        idle.push(s.duration_since(t0).as_secs_f64() * 1000.0);
    }
    idle.sort_by(f64::total_cmp);
    starts.lock().expect("lock").clear();
    let commits0 = master
        .stats
        .commits
        .load(std::sync::atomic::Ordering::Relaxed);
    let trips0 = master
        .stats
        .round_trips
        .load(std::sync::atomic::Ordering::Relaxed);
    let (t0, _) = run_job(master.http_url.clone(), spec(&["true"], tasks)).await?;
    master.flush().await;
    let elapsed = t0.elapsed();
    let commits = master
        .stats
        .commits
        .load(std::sync::atomic::Ordering::Relaxed)
        - commits0;
    let mut lat: Vec<f64> = starts
        .lock()
        .expect("lock")
        .iter()
        .map(|s| s.duration_since(t0).as_secs_f64() * 1000.0)
        .collect();
    lat.sort_by(f64::total_cmp);
    let rate = tasks as f64 / elapsed.as_secs_f64();
    println!(
        "   {tasks} tasks in {:.2} s: {:.0} tasks/s (submit to job done, all committed)",
        elapsed.as_secs_f64(),
        rate
    );
    println!("   submit->start, bulk job: p50 {:.0} ms, p99 {:.0} ms (queueing behind the job's own tasks)", percentile(&lat, 0.5), percentile(&lat, 0.99));
    println!(
        "   submit->start, one task on an idle farm (50 runs): p50 {:.2} ms, p99 {:.2} ms",
        percentile(&idle, 0.5),
        percentile(&idle, 0.99)
    );
    let trips = master
        .stats
        .round_trips
        .load(std::sync::atomic::Ordering::Relaxed)
        - trips0;
    println!(
        "   store: {commits} commits, {trips} round trips for {tasks} tasks = {:.2} round trips per 1,000 tasks",
        trips as f64 * 1000.0 / tasks as f64
    );
    for sim in sims {
        sim.abort();
    }
    master.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
