//! `monitors`: does a room full of open monitors slow dispatch?
//!
//! One real engine with 4 slots runs `sleep 0.01` tasks of a 100,000-task
//! job, first with nobody watching, then with 50 Server-Sent-Events clients
//! subscribed to the job list and to that job (as 50 open job pages). Each
//! run measures the dispatch rate over the first `tasks` tasks; with the
//! clients, also each task's delay from its end (the master's `ended_ms`)
//! to its arrival at a client, and the process's CPU per task (the master
//! and the clients share this process: the difference is what the events
//! cost both sides). Nothing is asserted.

use super::{percentile, scratch, self_cpu, spec, start_engines, start_master, wait_engines};
use drqueue_client::Client;
use drqueue_common::model::JobStatus;
use std::io::BufRead;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CLIENTS: usize = 50;
const JOB_TASKS: u64 = 100_000;

pub async fn monitors(tasks: u64) -> anyhow::Result<()> {
    println!("== monitors: 1 engine x 4 slots running `sleep 0.01`, a {JOB_TASKS}-task job, {tasks} tasks measured");
    let (alone, alone_cpu, _) = run(tasks, 0).await?;
    let (watched, watched_cpu, delays) = run(tasks, CLIENTS).await?;
    println!(
        "   no clients: {alone:.0} tasks/s, process CPU {:.0} us a task",
        alone_cpu * 1e6
    );
    println!(
        "   {CLIENTS} clients: {watched:.0} tasks/s = {:.1} % of the rate with none; process CPU {:.0} us a task ({:+.0} us for the events, clients included)",
        100.0 * watched / alone,
        watched_cpu * 1e6,
        (watched_cpu - alone_cpu) * 1e6
    );
    let mut d = delays;
    d.sort_by(f64::total_cmp);
    println!(
        "   event delay, a task's end to a client: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms over {} arrivals",
        percentile(&d, 0.5),
        percentile(&d, 0.99),
        d.last().copied().unwrap_or(f64::NAN),
        d.len()
    );
    Ok(())
}

/// One run: tasks/s over the first `tasks` done, CPU seconds a task, and
/// the clients' delays (ms).
async fn run(tasks: u64, clients: usize) -> anyhow::Result<(f64, f64, Vec<f64>)> {
    let dir = scratch(&format!("monitors-{clients}"));
    let master = start_master(&dir).await?;
    let _engines = start_engines(&master.engines_endpoint, &dir, 1, 4)?;
    wait_engines(&master.http_url, 1).await?;
    let url = master.http_url.clone();
    let mut job = spec(&["sleep", "0.01"], JOB_TASKS);
    job.paused = true;
    let id = tokio::task::spawn_blocking({
        let url = url.clone();
        move || Client::new(Some(&url), None).submit(&job).map(|v| v.id)
    })
    .await??;
    let stop = Arc::new(AtomicBool::new(false));
    let delays = Arc::new(Mutex::new(Vec::new()));
    let mut readers = Vec::new();
    for _ in 0..clients {
        let (url, stop, delays) = (url.clone(), stop.clone(), delays.clone());
        readers.push(std::thread::spawn(move || {
            watch(&url, id.0, &stop, &delays)
        }));
    }
    // Let the clients connect before the work starts.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cpu0 = self_cpu();
    let (rate, took) = tokio::task::spawn_blocking({
        let url = url.clone();
        move || -> anyhow::Result<(f64, f64)> {
            let c = Client::new(Some(&url), None);
            c.control(id, "resume")?;
            let t0 = Instant::now();
            loop {
                let v = c.job(id)?;
                let done = v.counts.get(drqueue_common::model::TaskStatus::Done);
                if done >= tasks || v.status == JobStatus::Failed {
                    let secs = t0.elapsed().as_secs_f64();
                    c.control(id, "cancel")?;
                    return Ok((done as f64 / secs, done as f64));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    })
    .await??;
    let cpu = (self_cpu() - cpu0) / took;
    stop.store(true, Ordering::Relaxed);
    master.shutdown().await;
    for r in readers {
        let _ = r.join();
    }
    let _ = std::fs::remove_dir_all(&dir);
    let d = std::mem::take(&mut *delays.lock().unwrap_or_else(|p| p.into_inner()));
    Ok((rate, cpu, d))
}

/// One client: the job list and the job, as a job page subscribes; notes
/// each done task's delay from its end.
fn watch(url: &str, job: u64, stop: &AtomicBool, delays: &Mutex<Vec<f64>>) {
    let Ok(resp) = ureq::get(format!("{url}/api/events?topics=jobs,job:{job}")).call() else {
        return;
    };
    let reader = std::io::BufReader::new(resp.into_body().into_reader());
    for line in reader.lines() {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let Ok(line) = line else { return };
        let Some(data) = line.strip_prefix("data:") else {
            continue;
        };
        // A light scan, not a full parse: the clients share this process
        // (and its 2 cores) with the master being measured.
        let now = drqueue_common::now_millis() as f64;
        let mut mine = Vec::new();
        for task in data.split("{\"index\":").skip(1) {
            if !task.contains("\"status\":\"done\"") {
                continue;
            }
            let end = task
                .split_once("\"ended_ms\":")
                .and_then(|(_, rest)| rest.split([',', '}']).next())
                .and_then(|n| n.parse::<f64>().ok());
            if let Some(end) = end {
                mine.push(now - end);
            }
        }
        delays
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(mine);
    }
}
