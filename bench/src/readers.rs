//! `drqueue-bench readers`: what people watching the farm cost it.
//!
//! A real `drqueue-master` process with a job of `--tasks` (default 1M)
//! tasks of `sleep 0.01` on one real engine with 4 slots. Dispatch is
//! measured alone, then beside 8 readers that each, about twice a second,
//! follow a task's log (a long poll, as `drqueue log --follow` does) or list
//! a page of tasks, as people watching a shot do; the figure is the second
//! rate against the first. Then the master's peak RSS under 1,000
//! concurrent `GET /api/jobs` against a farm holding jobs with the largest
//! fields a spec allows.

use crate::master_process::{rss_kb, MasterProcess};
use crate::{scratch, start_engines};
use drqueue_client::Client;
use drqueue_common::model::{JobId, JobSpec, TaskStatus};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// How long each dispatch window lasts.
const WINDOW: Duration = Duration::from_secs(15);
const READERS: usize = 8;
const CONCURRENT_GETS: usize = 1000;

/// Room for all the concurrent readers of the RSS case, which come from one
/// address without a token: shares of 2,048 and 1,024.
const MASTER_FLAGS: [&str; 2] = ["--http-max-connections", "8192"];

fn done(client: &Client, job: JobId) -> anyhow::Result<u64> {
    Ok(client.job(job)?.counts.get(TaskStatus::Done))
}

/// Tasks done per second over one window.
fn rate(client: &Client, job: JobId) -> anyhow::Result<f64> {
    let d0 = done(client, job)?;
    let t0 = Instant::now();
    std::thread::sleep(WINDOW);
    let d1 = done(client, job)?;
    Ok((d1 - d0) as f64 / t0.elapsed().as_secs_f64())
}

/// One person watching: every half second, a page of tasks or a follow of
/// the log of a task that has run; returns the requests made.
fn watch(url: String, job: JobId, until: Instant, seed: u64) -> u64 {
    let client = Client::new(Some(&url), None);
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    let mut n = 0u64;
    let mut turn = seed;
    while Instant::now() < until {
        turn += 1;
        let done = client.job(job).map(|v| v.counts.get(TaskStatus::Done));
        let recent = done.unwrap_or(0).saturating_sub(1 + turn % 50) as u32;
        if turn.is_multiple_of(2) {
            let _ = agent
                .get(format!(
                    "{url}/api/jobs/{job}/tasks?limit=1000&after={}",
                    recent.saturating_sub(500)
                ))
                .call()
                .and_then(|r| r.into_body().read_to_vec());
        } else {
            // A follower: the log of a recent task, waiting up to a second
            // for more, as `drqueue log --follow` does.
            let _ = client.log_window(job, recent, None, 0, 1);
        }
        n += 2;
        std::thread::sleep(Duration::from_millis(500));
    }
    n
}

pub async fn readers(tasks: u64) -> anyhow::Result<()> {
    println!("== readers: a {tasks}-task job of `sleep 0.01` on 1 engine x 4 slots, then {READERS} people watching");
    tokio::task::spawn_blocking(move || dispatch_with_readers(tasks)).await??;
    println!("== readers: master RSS under {CONCURRENT_GETS} concurrent GET /api/jobs");
    tokio::task::spawn_blocking(concurrent_gets).await??;
    Ok(())
}

fn dispatch_with_readers(tasks: u64) -> anyhow::Result<()> {
    let dir = scratch("readers");
    let master = MasterProcess::start(&dir, &MASTER_FLAGS)?;
    let client = Client::new(Some(&master.http), None);
    let spec = JobSpec {
        name: "watched".into(),
        command: vec!["sleep".into(), "0.01".into()],
        frames: format!("1-{tasks}"),
        ..JobSpec::default()
    };
    let t0 = Instant::now();
    let job = client.submit(&spec)?.id;
    println!(
        "   submitted in {:.1} s; master RSS {} MB",
        t0.elapsed().as_secs_f64(),
        rss_kb(master.pid()).0 / 1024
    );
    let _engines = start_engines(&master.engines, &dir, 1, 4)?;
    let start = Instant::now();
    while client
        .engines()?
        .iter()
        .all(|e| e.state.as_str() == "offline")
    {
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(30),
            "the engine did not register"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Warm up, then dispatch alone.
    std::thread::sleep(Duration::from_secs(2));
    let alone = rate(&client, job)?;
    let until = Instant::now() + WINDOW + Duration::from_secs(1);
    let watchers: Vec<_> = (0..READERS as u64)
        .map(|i| {
            let url = master.http.clone();
            std::thread::spawn(move || watch(url, job, until, i))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let watched = rate(&client, job)?;
    let requests: u64 = watchers.into_iter().map(|w| w.join().unwrap_or(0)).sum();
    let again = rate(&client, job)?;
    println!("   dispatch alone {alone:.0} tasks/s; with {READERS} readers ({:.1} requests/s in all) {watched:.0} tasks/s; alone again {again:.0} tasks/s", requests as f64 / (WINDOW.as_secs_f64() + 1.0));
    println!(
        "   with readers: {:.1} % of dispatch alone (the mean of the two alone windows)",
        200.0 * watched / (alone + again)
    );
    println!("   master peak RSS {} MB", rss_kb(master.pid()).1 / 1024);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn concurrent_gets() -> anyhow::Result<()> {
    let dir = scratch("rss");
    let master = MasterProcess::start(&dir, &MASTER_FLAGS)?;
    let client = Client::new(Some(&master.http), None);
    // Jobs with the largest fields a spec allows (held paused, so they stay).
    let arg = "a".repeat(16 * 1024);
    for i in 0..20 {
        let spec = JobSpec {
            name: format!("big-{i}-{}", "n".repeat(200)),
            command: vec!["true".into(), arg.clone(), arg.clone(), arg.clone()],
            frames: (1..=500)
                .map(|f| f.to_string())
                .collect::<Vec<_>>()
                .join(","),
            limits: (0..64).map(|l| format!("licence-{l}")).collect(),
            paused: true,
            ..JobSpec::default()
        };
        client.submit(&spec)?;
    }
    let pid = master.pid();
    let before = rss_kb(pid).0;
    let addr = master.http.trim_start_matches("http://").to_string();
    // Open every connection first, then send every request at once.
    let mut conns = Vec::new();
    for _ in 0..CONCURRENT_GETS {
        conns.push(std::net::TcpStream::connect(&addr)?);
    }
    let request = "GET /api/jobs HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    for c in &mut conns {
        c.write_all(request.as_bytes())?;
    }
    let (mut ok, mut bytes) = (0usize, 0usize);
    for mut c in conns {
        let mut answer = Vec::new();
        c.set_read_timeout(Some(Duration::from_secs(60)))?;
        let _ = c.read_to_end(&mut answer);
        bytes += answer.len();
        if answer.starts_with(b"HTTP/1.1 200") {
            ok += 1;
        }
    }
    println!(
        "   {ok} of {CONCURRENT_GETS} answered 200 ({} KB each); master RSS before {} MB, peak {} MB",
        bytes / CONCURRENT_GETS.max(1) / 1024,
        before / 1024,
        rss_kb(pid).1 / 1024
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
