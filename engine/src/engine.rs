//! The engine's loop: keeps a link to the master, runs what it is given, and
//! never forgets a result until the master has acknowledged it.
//! (Past 600 lines: one session loop and its stops; splitting it would scatter its state.)
//!
//! State is three sets: attempts queued (received, not started), running,
//! and finished but unacknowledged. The master sends at most HWM attempts;
//! the engine runs `slots` of them at once and starts the next the moment a
//! slot frees. If the master falls silent the engine keeps running what it
//! holds, reconnects with backoff, registers again with what it holds, and
//! re-sends every unacknowledged result with its log.

use crate::facts;
use crate::link::Credentials;
use crate::rediscover::AFTER_SILENT;
use drqueue_common::frames::Block;
use drqueue_common::keys::KeyPair;
use drqueue_common::model::{EngineFacts, EngineId};
use drqueue_common::now_millis;
use drqueue_common::protocol::{
    AttemptKey, Finished, FromEngine, Heartbeat, JobBody, Outcome, OutputFile, Register, ToEngine,
};
use drqueue_runner::contain::{Choice, Containment};
use drqueue_runner::{Attempt, Control, Pool, RunnerEvent};
use session::{session, shutdown_gracefully};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

mod session;

#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Master endpoints, tried in turn.
    pub masters: Vec<String>,
    /// They were found by DNS SRV or mDNS (trusted only by key, see
    /// `link::Credentials::discovered`), and are looked for again when lost.
    pub rediscover: Option<crate::rediscover::Rediscover>,
    pub name: Option<String>,
    pub pools: Vec<String>,
    pub slots: u32,
    pub hwm: u32,
    pub state_dir: PathBuf,
    /// A join token from `drqueue engine join-token`: enrolls the engine
    /// on first contact, and names the master key to trust.
    pub join_token: Option<String>,
    /// How often the full facts (renderers, RAM) are gathered again.
    pub facts_refresh: Duration,
    /// How tasks' processes are contained (cgroup v2 when writable).
    pub containment: Choice,
    /// The cap of the cache of uploaded inputs (`<state_dir>/cache`).
    pub cache_bytes: u64,
}

/// Slow work done off the loop (it runs processes), reported back to it.
enum Background {
    Facts(EngineFacts),
    Check { id: u64, ok: bool, detail: String },
}

struct Running {
    control: Arc<Control>,
    deadline: Option<Instant>,
}

struct State {
    opts: EngineOptions,
    id: EngineId,
    facts: EngineFacts,
    /// With the files of the tasks each waits for (a frame's tiles).
    queue: VecDeque<(AttemptKey, Arc<JobBody>, Block, Vec<OutputFile>)>,
    running: HashMap<AttemptKey, Running>,
    unacked: BTreeMap<AttemptKey, Outcome>,
    /// Started attempts not yet reported: reported only if still running
    /// after [`STARTED_DELAY`].
    unreported_starts: HashMap<AttemptKey, Instant>,
    /// Running attempts being stopped for a shutdown: handed back, not failed.
    releasing: bool,
    released: Vec<AttemptKey>,
    peak_held: u32,
    pool: Pool,
    creds: Credentials,
    sys: sysinfo::System,
    background: mpsc::UnboundedSender<Background>,
    /// Blob chunks the slot threads are waiting for.
    blobs: Arc<crate::blobs::LinkBlobs>,
}

impl State {
    fn held(&self) -> u32 {
        (self.queue.len() + self.running.len()) as u32
    }

    fn held_keys(&self) -> Vec<AttemptKey> {
        self.queue
            .iter()
            .map(|(k, ..)| *k)
            .chain(self.running.keys().copied())
            .collect()
    }

    fn log_path(&self, key: AttemptKey) -> PathBuf {
        self.opts.state_dir.join("logs").join(format!(
            "{}-{}-{}.log",
            key.task.job, key.task.index, key.attempt
        ))
    }

    fn note_peak(&mut self) {
        let held = self.held();
        if held > self.peak_held {
            self.peak_held = held;
            let stats = serde_json::json!({ "peak_held": self.peak_held, "hwm": self.opts.hwm, "slots": self.opts.slots });
            let _ = std::fs::write(self.opts.state_dir.join("stats.json"), stats.to_string());
        }
    }

    /// Starts queued attempts while slots are free.
    fn start_ready(&mut self) {
        while self.running.len() < self.opts.slots as usize && !self.releasing {
            let Some((key, body, block, inputs)) = self.queue.pop_front() else {
                break;
            };
            let control = Arc::new(Control::default());
            let deadline = (body.timeout_secs > 0)
                .then(|| Instant::now() + Duration::from_secs(body.timeout_secs));
            self.running.insert(
                key,
                Running {
                    control: control.clone(),
                    deadline,
                },
            );
            self.pool.start(Attempt {
                key,
                body,
                block,
                inputs,
                log_path: self.log_path(key),
                control,
            });
        }
    }

    /// Nothing queued, running or waiting for an ack.
    fn is_idle(&self) -> bool {
        self.queue.is_empty() && self.running.is_empty() && self.unacked.is_empty()
    }

    fn check_timeouts(&mut self) {
        let now = Instant::now();
        for r in self.running.values() {
            if r.deadline.is_some_and(|d| now >= d) {
                r.control.time_out();
            }
        }
    }

    /// Applies one message from the master; returns false when the session
    /// must end (the master asked us to register again, or refused us).
    fn on_master(&mut self, msg: ToEngine, outbox: &mut Vec<FromEngine>) -> Result<(), SessionEnd> {
        match msg {
            ToEngine::Assign(a) => {
                let body = Arc::new(a.job);
                for t in a.tasks {
                    let key = AttemptKey {
                        task: drqueue_common::model::TaskKey {
                            job: body.id,
                            index: t.index,
                        },
                        attempt: t.attempt,
                    };
                    let known = self.running.contains_key(&key)
                        || self.unacked.contains_key(&key)
                        || self.queue.iter().any(|(k, ..)| *k == key);
                    if !known {
                        self.queue.push_back((key, body.clone(), t.block, t.inputs));
                    }
                }
                self.note_peak();
                self.start_ready();
            }
            ToEngine::Cancel(keys) | ToEngine::Welcome { cancel: keys, .. } => {
                self.cancel(&keys, outbox)
            }
            ToEngine::Ack(keys) => {
                for k in keys {
                    if self.unacked.remove(&k).is_some_and(|o| o.log_bytes > 0) {
                        let _ = std::fs::remove_file(self.log_path(k));
                    }
                }
            }
            ToEngine::Pong => {}
            msg @ (ToEngine::Blob { .. } | ToEngine::Stored { .. }) => self.blobs.deliver(msg),
            ToEngine::Check { id, command } => {
                tracing::info!(id, ?command, "running the check task the master sent");
                let tx = self.background.clone();
                let dir = self.opts.state_dir.clone();
                tokio::task::spawn_blocking(move || {
                    let (ok, detail) = crate::check::run_check(&command, &dir);
                    let _ = tx.send(Background::Check { id, ok, detail });
                });
            }
            ToEngine::Reregister => return Err(SessionEnd::Reregister),
            ToEngine::TakenOver => return Err(SessionEnd::TakenOver),
            ToEngine::Admitted | ToEngine::Pending { .. } => {}
            ToEngine::Refused { reason } => return Err(SessionEnd::Refused(reason)),
            ToEngine::Revoked => return Err(SessionEnd::Revoked),
        }
        Ok(())
    }

    fn cancel(&mut self, keys: &[AttemptKey], outbox: &mut Vec<FromEngine>) {
        for key in keys {
            if let Some(p) = self.queue.iter().position(|(k, ..)| k == key) {
                self.queue.remove(p);
                let outcome = Outcome {
                    cancelled: true,
                    ..Default::default()
                };
                self.unacked.insert(*key, outcome.clone());
                outbox.push(FromEngine::Finished(Finished {
                    attempt: *key,
                    outcome,
                }));
            } else if let Some(r) = self.running.get(key) {
                tracing::info!(task = %key.task, attempt = key.attempt, "cancelling");
                r.control.cancel();
            }
        }
    }

    /// Applies an event from a running attempt; returns what to tell the master.
    fn on_runner(&mut self, ev: RunnerEvent) -> Option<FromEngine> {
        match ev {
            RunnerEvent::Started(key) => {
                self.unreported_starts.insert(key, Instant::now());
                None
            }
            RunnerEvent::Log { key, offset, data } => Some(FromEngine::Log {
                attempt: key,
                offset,
                data,
            }),
            RunnerEvent::Progress(key, percent) => Some(FromEngine::Progress {
                attempt: key,
                percent,
            }),
            RunnerEvent::Finished(key, outcome) => {
                self.running.remove(&key);
                self.unreported_starts.remove(&key);
                self.start_ready();
                if self.releasing {
                    self.released.push(key);
                    return None;
                }
                tracing::info!(task = %key.task, attempt = key.attempt, ok = outcome.is_success(), "attempt ended: {}", outcome.describe());
                self.unacked.insert(key, outcome.clone());
                Some(FromEngine::Finished(Finished {
                    attempt: key,
                    outcome,
                }))
            }
        }
    }

    /// Started messages for attempts running longer than [`STARTED_DELAY`].
    fn due_starts(&mut self) -> Vec<FromEngine> {
        let due: Vec<(AttemptKey, Instant)> = self
            .unreported_starts
            .iter()
            .filter(|(_, t)| t.elapsed() >= STARTED_DELAY)
            .map(|(k, t)| (*k, *t))
            .collect();
        due.into_iter()
            .map(|(attempt, t)| {
                self.unreported_starts.remove(&attempt);
                FromEngine::Started {
                    attempt,
                    ago_ms: t.elapsed().as_millis().min(u32::MAX as u128) as u32,
                }
            })
            .collect()
    }

    fn register(&mut self) -> FromEngine {
        FromEngine::Register(Register {
            engine: self.id.clone(),
            session: rand::random(),
            time_ms: now_millis(),
            facts: self.facts.clone(),
            slots: self.opts.slots,
            hwm: self.opts.hwm,
            held: self.held_keys(),
            finished: self
                .unacked
                .iter()
                .map(|(k, o)| Finished {
                    attempt: *k,
                    outcome: o.clone(),
                })
                .collect(),
        })
    }

    /// After a reconnect: logs so far of everything running or unacknowledged
    /// (the master keeps what it lacks). The results themselves went with
    /// the Register.
    fn resend_logs(&self) -> Vec<FromEngine> {
        let mut out = Vec::new();
        let keys: Vec<AttemptKey> = self
            .running
            .keys()
            .chain(self.unacked.keys())
            .copied()
            .collect();
        for key in keys {
            if let Ok(data) = std::fs::read(self.log_path(key)) {
                for (i, chunk) in data.chunks(256 * 1024).enumerate() {
                    out.push(FromEngine::Log {
                        attempt: key,
                        offset: (i * 256 * 1024) as u64,
                        data: chunk.to_vec(),
                    });
                }
            }
        }
        out
    }

    /// Gathers the facts again, off the loop.
    fn refresh_facts(&self) {
        let tx = self.background.clone();
        let (name, pools) = (self.opts.name.clone(), self.opts.pools.clone());
        let containment = self.facts.containment.clone();
        tokio::task::spawn_blocking(move || {
            let mut facts = facts::gather(name, pools);
            facts.containment = containment;
            let _ = tx.send(Background::Facts(facts));
        });
    }

    /// Applies finished background work; returns what to tell the master.
    fn on_background(&mut self, done: Background) -> FromEngine {
        match done {
            Background::Facts(f) => {
                if f.capabilities != self.facts.capabilities || f.ram_mb != self.facts.ram_mb {
                    tracing::info!(capabilities = ?f.capabilities, ram_mb = f.ram_mb, "facts changed");
                }
                self.facts = f.clone();
                FromEngine::Facts(f)
            }
            Background::Check { id, ok, detail } => {
                tracing::info!(id, ok, "check task: {detail}");
                FromEngine::CheckResult { id, ok, detail }
            }
        }
    }

    fn heartbeat(&mut self) -> FromEngine {
        let (load, free_ram_mb) = facts::load_and_free_ram(&mut self.sys);
        FromEngine::Heartbeat(Heartbeat {
            load,
            free_ram_mb,
            held: self.held(),
            peak_held: self.peak_held,
        })
    }
}

enum SessionEnd {
    Reregister,
    Refused(String),
    /// The master holds the engine's key for `drqueue engine accept`.
    Pending(String),
    /// The master is not one this engine trusts.
    WrongMaster(String),
    /// Another process proved this engine's identity and took over.
    TakenOver,
    /// Cut off by the master for good.
    Revoked,
    Silent,
    Shutdown,
}

/// How often an engine waiting to be accepted (or refusing an untrusted
/// master) tries again.
const PENDING_RETRY: Duration = Duration::from_secs(5);
/// How long an attempt runs before the engine reports that it started.
const STARTED_DELAY: Duration = Duration::from_millis(50);

pub async fn run(
    opts: EngineOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    if opts.masters.is_empty() {
        anyhow::bail!("no master endpoint given: use --master tcp://HOST:5555 or DRQUEUE_MASTER");
    }
    let id = crate::identity::engine_id(&opts.state_dir)?;
    // Before anything runs or registers: end what a previous life (killed,
    // so it could not) left running.
    let contain = Arc::new(Containment::new(&id, opts.containment));
    let left = contain.sweep();
    if left > 0 {
        tracing::warn!(
            processes = left,
            "ended processes a previous run of this engine left running"
        );
    }
    let mut facts = facts::gather(opts.name.clone(), opts.pools.clone());
    facts.containment = contain.describe();
    let keys =
        KeyPair::load_or_create(&opts.state_dir.join("engine.key")).map_err(anyhow::Error::msg)?;
    let creds = Credentials {
        keys,
        engine: id.as_str().into(),
        name: facts.name.clone(),
        join_token: opts.join_token.clone(),
        master_pin: opts.state_dir.join("master.pub"),
        discovered: opts.rediscover.is_some(),
    };
    tracing::info!(key = %creds.keys.fingerprint(), "engine key");
    tracing::info!(engine = %id, name = %facts.name, pools = ?facts.pools, capabilities = ?facts.capabilities, slots = opts.slots, hwm = opts.hwm, containment = %facts.containment, "engine starting");
    let (events, mut runner_rx) = mpsc::unbounded_channel();
    let (background, mut background_rx) = mpsc::unbounded_channel();
    let (blob_tx, mut blob_rx) = mpsc::unbounded_channel();
    let blobs = Arc::new(crate::blobs::LinkBlobs::new(blob_tx));
    let pool_blobs = drqueue_runner::Blobs {
        cache: drqueue_runner::sandbox::Cache::new(&opts.state_dir.join("cache"), opts.cache_bytes)
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot make the input cache under {}: {e}",
                    opts.state_dir.display()
                )
            })?,
        link: blobs.clone(),
        work: opts.state_dir.join("work"),
    };
    let mut st = State {
        opts: opts.clone(),
        id: id.into(),
        facts,
        queue: VecDeque::new(),
        running: HashMap::new(),
        unacked: BTreeMap::new(),
        unreported_starts: HashMap::new(),
        releasing: false,
        released: Vec::new(),
        peak_held: 0,
        pool: Pool::new(
            opts.slots,
            events,
            contain.clone(),
            Some(Arc::new(pool_blobs)),
        )
        .map_err(|e| anyhow::anyhow!("cannot start the slot threads: {e}"))?,
        creds,
        sys: sysinfo::System::new(),
        background,
        blobs,
    };
    tokio::pin!(shutdown);
    let mut backoff = Duration::from_millis(200);
    let mut master_index = 0usize;
    let mut silent_in_row = 0u32;
    loop {
        let masters = &st.opts.masters;
        let endpoint = masters[master_index % masters.len()].clone();
        let end = tokio::select! {
            end = session(&mut st, &endpoint, &mut runner_rx, (&mut background_rx, &mut blob_rx)) => end,
            _ = &mut shutdown => SessionEnd::Shutdown,
        };
        // Only lost connections in a row count towards looking again.
        silent_in_row = if matches!(end, SessionEnd::Silent) {
            silent_in_row + 1
        } else {
            0
        };
        match end {
            SessionEnd::Shutdown => break,
            SessionEnd::Reregister => {
                backoff = Duration::from_millis(200);
                continue;
            }
            SessionEnd::Refused(reason) => {
                tracing::error!(master = %endpoint, "the master refused this engine: {reason}");
                backoff = Duration::from_secs(10);
            }
            SessionEnd::Pending(fingerprint) => {
                tracing::warn!(master = %endpoint, %fingerprint, "not enrolled yet: on the master, run `drqueue engine accept {}` (compare the fingerprint), or restart this engine with a join token (DRQUEUE_JOIN_TOKEN)", st.facts.name);
                backoff = PENDING_RETRY;
            }
            SessionEnd::WrongMaster(why) => {
                tracing::error!(master = %endpoint, "not trusting this master: {why}. Check that --master (DRQUEUE_MASTER) names the right one");
                backoff = PENDING_RETRY;
            }
            SessionEnd::TakenOver => {
                // The successor's start swept this identity's boxes: leave
                // them to it, and say nothing more to the master.
                contain.hand_over();
                return Err(crate::Permanent(
                    "another drqueue-engine process proved this engine's identity to the master and took over: this one stops. Run one engine per state dir (--state-dir)".into(),
                )
                .into());
            }
            SessionEnd::Revoked => {
                // Nothing it runs is wanted any more, and nothing it reports
                // would count: stop it all, and stay away.
                st.queue.clear();
                for r in st.running.values() {
                    r.control.cancel();
                }
                let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
                while !st.running.is_empty() {
                    match tokio::time::timeout_at(deadline, runner_rx.recv()).await {
                        Ok(Some(ev)) => {
                            st.on_runner(ev);
                        }
                        _ => break,
                    }
                }
                contain.tidy();
                return Err(crate::Permanent(format!(
                    "the master at {endpoint} revoked this engine: its tasks were stopped. To bring the machine back, enroll it afresh as a new engine (a new --state-dir)"
                ))
                .into());
            }
            SessionEnd::Silent => {
                tracing::warn!(master = %endpoint, "lost the master; reconnecting (tasks keep running)");
            }
        }
        if let (Some(r), true) = (&st.opts.rediscover, silent_in_row >= AFTER_SILENT) {
            silent_in_row = 0;
            if let Some((found, via)) = r.find().await.filter(|(f, _)| f != &endpoint) {
                tracing::info!(master = %found, via, "the master moved; following it");
                st.opts.masters = vec![found];
                backoff = Duration::from_millis(200);
                continue;
            }
        }
        master_index += 1;
        // Keep running what we hold while we wait to reconnect.
        let wake = tokio::time::sleep(backoff);
        tokio::pin!(wake);
        loop {
            tokio::select! {
                _ = &mut wake => break,
                _ = &mut shutdown => {
                    shutdown_gracefully(&mut st, None, &mut runner_rx).await;
                    contain.tidy();
                    return Ok(());
                }
                // Disconnected: results wait in `unacked` for the next Register,
                // fresh facts go with it, a check's answer is moot.
                Some(ev) = runner_rx.recv() => { st.on_runner(ev); }
                Some(done) = background_rx.recv() => { st.on_background(done); }
            }
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
    shutdown_gracefully(&mut st, None, &mut runner_rx).await;
    contain.tidy();
    Ok(())
}
