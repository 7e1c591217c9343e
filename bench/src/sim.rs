//! A simulated engine's link: the engine's own handshake, enrollment and
//! sealing on a real DEALER socket, with no engine process behind it.

use drqueue_common::keys::KeyPair;
use drqueue_common::model::{EngineFacts, TaskKey};
use drqueue_common::protocol::{
    AttemptKey, Finished, FromEngine, Heartbeat, Outcome, Register, ToEngine, IDLE_BEATS,
};
use drqueue_engine::link::{Credentials, Link};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A simulated engine's identity: a fresh key, kept across its reconnects
/// (the master knows an engine by its key), trusting the master pinned in
/// `master_pin`.
pub fn sim_credentials(name: &str, master_pin: PathBuf) -> anyhow::Result<Credentials> {
    Ok(Credentials {
        keys: KeyPair::generate().map_err(anyhow::Error::msg)?,
        engine: name.into(),
        name: name.to_string(),
        join_token: None,
        master_pin,
        discovered: false,
    })
}

/// What a simulated engine says in its Register.
pub struct SimRegister {
    pub slots: u32,
    pub hwm: u32,
    pub ram_mb: u64,
    /// What it holds (queued or running), for a restarted master to adopt.
    pub held: Vec<AttemptKey>,
    /// Results the master has not acknowledged.
    pub finished: Vec<Finished>,
}

/// Connects and registers; the Welcome is the link's first message.
pub async fn sim_link(
    endpoint: &str,
    creds: &Credentials,
    reg: SimRegister,
) -> anyhow::Result<Link> {
    let mut link = Link::connect(endpoint, creds, Duration::from_secs(30))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    link.send(&FromEngine::Register(Register {
        engine: creds.engine.clone(),
        session: rand::random(),
        time_ms: drqueue_common::now_millis(),
        facts: EngineFacts {
            name: creds.name.clone(),
            pools: vec!["default".into()],
            cores: 8,
            ram_mb: reg.ram_mb,
            ..Default::default()
        },
        slots: reg.slots,
        hwm: reg.hwm,
        held: reg.held,
        finished: reg.finished,
    }))
    .await?;
    Ok(link)
}

/// What simulated engines saw, for the bench to read: each task's start,
/// each Assign and each Welcome, as instants.
#[derive(Default)]
pub struct SimLog {
    pub starts: Vec<Instant>,
    pub assigns: Vec<Instant>,
    pub welcomes: Vec<Instant>,
}

/// A simulated engine of one slot (HWM 2) that runs each task as a timer of
/// `task`, reporting `Started` and `Finished` as an engine does. Like an
/// engine it beats every second with work and every `IDLE_BEATS` without,
/// and when the master falls silent it connects again, registering what it
/// holds and the results not yet acknowledged.
pub async fn timed_engine(
    endpoint: String,
    creds: Credentials,
    task: Duration,
    log: Arc<Mutex<SimLog>>,
) -> anyhow::Result<()> {
    let mut st = Timed::default();
    loop {
        let reg = SimRegister {
            slots: 1,
            hwm: 2,
            ram_mb: 16_384,
            held: st
                .running
                .iter()
                .map(|r| r.0)
                .chain(st.queue.iter().copied())
                .collect(),
            finished: st.unacked.clone(),
        };
        match sim_link(&endpoint, &creds, reg).await {
            Ok(mut link) => st.serve(&mut link, task, &log).await?,
            // The master is down: try again shortly, as an engine does.
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// A timed engine's work, kept across its connections.
#[derive(Default)]
struct Timed {
    queue: VecDeque<AttemptKey>,
    running: Option<(AttemptKey, tokio::time::Instant)>,
    unacked: Vec<Finished>,
}

impl Timed {
    /// One connection's life; returns when the master is lost or asks the
    /// engine to register again.
    async fn serve(
        &mut self,
        link: &mut Link,
        task: Duration,
        log: &Mutex<SimLog>,
    ) -> anyhow::Result<()> {
        let beat = Duration::from_secs(1);
        let silence = beat * (IDLE_BEATS + 2);
        let mut tick = tokio::time::interval(beat);
        let mut last_beat = Instant::now();
        let mut last_heard = Instant::now();
        loop {
            if self.running.is_none() {
                if let Some(key) = self.queue.pop_front() {
                    log.lock().expect("lock").starts.push(Instant::now());
                    self.running = Some((key, tokio::time::Instant::now() + task));
                    let started = FromEngine::Started {
                        attempt: key,
                        ago_ms: 0,
                    };
                    if link.send(&started).await.is_err() {
                        return Ok(());
                    }
                }
            }
            let until = self.running.map(|(_, t)| t);
            tokio::select! {
                to = link.recv() => {
                    let Some(to) = to else { return Ok(()) };
                    last_heard = Instant::now();
                    match to {
                        ToEngine::Welcome { cancel, .. } => {
                            log.lock().expect("lock").welcomes.push(Instant::now());
                            self.drop_attempts(&cancel);
                        }
                        ToEngine::Assign(a) => {
                            log.lock().expect("lock").assigns.push(Instant::now());
                            self.queue.extend(a.tasks.iter().map(|t| AttemptKey {
                                task: TaskKey { job: a.job.id, index: t.index },
                                attempt: t.attempt,
                            }));
                        }
                        ToEngine::Cancel(keys) => self.drop_attempts(&keys),
                        ToEngine::Ack(keys) => self.unacked.retain(|f| !keys.contains(&f.attempt)),
                        ToEngine::Reregister => return Ok(()),
                        _ => {}
                    }
                }
                _ = tokio::time::sleep_until(until.unwrap_or_else(tokio::time::Instant::now)), if until.is_some() => {
                    if let Some((key, _)) = self.running.take() {
                        let done = Finished {
                            attempt: key,
                            outcome: Outcome { exit_code: Some(0), wall_ms: task.as_millis() as u64, ..Default::default() },
                        };
                        self.unacked.push(done.clone());
                        if link.send(&FromEngine::Finished(done)).await.is_err() {
                            return Ok(());
                        }
                    }
                }
                _ = tick.tick() => {
                    if last_heard.elapsed() > silence {
                        return Ok(());
                    }
                    let held = self.queue.len() as u32 + u32::from(self.running.is_some());
                    if held > 0 || last_beat.elapsed() >= beat * IDLE_BEATS - beat / 10 {
                        let hb = Heartbeat { load: 0.0, free_ram_mb: 16_384, held, peak_held: held };
                        if link.send(&FromEngine::Heartbeat(hb)).await.is_err() {
                            return Ok(());
                        }
                        last_beat = Instant::now();
                    }
                }
            }
        }
    }

    fn drop_attempts(&mut self, keys: &[AttemptKey]) {
        self.queue.retain(|k| !keys.contains(k));
        if self.running.is_some_and(|(k, _)| keys.contains(&k)) {
            self.running = None;
        }
    }
}
