//! `restart`: a big job across a crash of the master.
//!
//! The real `drqueue-master` binary (a child process) and `--count` (100)
//! timed simulated engines ([`crate::engines::start_sims`]: one slot, tasks
//! of 1 s as timers). A job of `--tasks` (1,000,000) tasks is submitted
//! through the API; once every slot is busy the master is killed with
//! SIGKILL and started again on the same database and ports. The engines
//! notice the silence, connect again and register what they hold, as real
//! engines do.
//!
//! Reported: the submit; the master's RSS per queued task; the reload (from
//! the new process's start until it accepts work); when the engines were
//! back; how soon after the last one re-registered the master dispatched
//! again, and gave every engine new work; and the cancel of the job.
//! Nothing is asserted.

use crate::engines::{start_sims, wait_connected};
use crate::master_process::{rss_kb, MasterProcess};
use crate::{scratch, spec};
use drqueue_client::Client;
use std::time::{Duration, Instant};

pub fn restart(count: usize, tasks: u64) -> anyhow::Result<()> {
    println!("== restart: a {tasks}-task job on {count} simulated engines, across a kill -9 of the real master binary");
    let dir = scratch("restart");
    let mut master = MasterProcess::start(&dir, &["--http-max-connections", "4096"])?;
    let client = Client::new(Some(&master.http), None);
    let (sims_rt, log) = start_sims(count, &master.engines, &dir.join("pins"))?;
    wait_connected(&client, count, Instant::now())?;
    std::thread::sleep(Duration::from_secs(1));
    let (rss0, _) = rss_kb(master.pid());

    let t0 = Instant::now();
    let job = client.submit(&spec(&["sleep", "1"], tasks))?;
    let submit = t0.elapsed();
    until(Duration::from_secs(120), "every slot busy", || {
        log.lock().expect("lock").starts.len() >= count
    })?;
    // Let the master settle (allocator, first commits) before reading RSS.
    std::thread::sleep(Duration::from_secs(3));
    let (rss1, _) = rss_kb(master.pid());
    println!(
        "   submit through the API: {:.2} s; master RSS {:.1} -> {:.1} MB = {:.0} B per queued task",
        submit.as_secs_f64(),
        rss0 as f64 / 1024.0,
        rss1 as f64 / 1024.0,
        (rss1.saturating_sub(rss0) * 1024) as f64 / tasks as f64
    );

    let welcomes_before = log.lock().expect("lock").welcomes.len();
    let killed = Instant::now();
    let reload = master.crash_and_restart()?;
    println!(
        "   kill -9, then the new master accepted work {:.2} s after its start (the store reloaded)",
        reload.as_secs_f64()
    );
    until(Duration::from_secs(120), "every engine back", || {
        log.lock().expect("lock").welcomes.len() >= welcomes_before + count
    })?;
    let (first_back, last_back) = {
        let l = log.lock().expect("lock");
        (
            l.welcomes[welcomes_before],
            l.welcomes[l.welcomes.len() - 1],
        )
    };
    let assigned_after = |since: Instant| -> usize {
        let l = log.lock().expect("lock");
        l.assigns.iter().filter(|a| **a >= since).count()
    };
    until(
        Duration::from_secs(120),
        "new work after the restart",
        || assigned_after(last_back) > 0,
    )?;
    until(
        Duration::from_secs(120),
        "new work for every engine",
        || assigned_after(last_back) >= count,
    )?;
    let (first_assign, all_assigned) = {
        let l = log.lock().expect("lock");
        let after: Vec<Instant> = l
            .assigns
            .iter()
            .copied()
            .filter(|a| *a >= last_back)
            .collect();
        (after[0], after[count - 1])
    };
    println!(
        "   engines back {:.2} to {:.2} s after the kill (they notice the silence, as engines do)",
        first_back.duration_since(killed).as_secs_f64(),
        last_back.duration_since(killed).as_secs_f64()
    );
    println!(
        "   after the last engine re-registered: first dispatch {:.0} ms, {count} assigns {:.0} ms",
        first_assign.duration_since(last_back).as_secs_f64() * 1000.0,
        all_assigned.duration_since(last_back).as_secs_f64() * 1000.0
    );

    let t0 = Instant::now();
    client.control(job.id, "cancel")?;
    println!("   cancel of the job: {:.2} s", t0.elapsed().as_secs_f64());
    sims_rt.shutdown_background();
    drop(master);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Polls `done` every 5 ms until it holds, for at most `limit`.
fn until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) -> anyhow::Result<()> {
    let t0 = Instant::now();
    while !done() {
        anyhow::ensure!(
            t0.elapsed() < limit,
            "no {what} within {} s",
            limit.as_secs()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}
