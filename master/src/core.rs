//! The master's event loop: the one task that owns the [`Scheduler`].
//!
//! Engine messages (already decoded by [`crate::router`]), API calls (from
//! [`crate::http`]) and clock ticks arrive on one channel. After each burst of
//! events the loop dispatches, sends the resulting messages, and hands one
//! batch of changes to the store writer, with the acks that must wait for it.
//! Because only this task touches the scheduler, nothing on the dispatch path
//! takes a lock.

use crate::notify::Mailer;
use crate::router::Outgoing;
use crate::scheduler::{Effects, Scheduler};
use crate::store::writer::{PostCommit, WriterMsg};
use crate::store::LogChunk;
use bytes::Bytes;
use drqueue_common::model::EngineId;
use drqueue_common::protocol::{AttemptKey, FromEngine, ReplayGuard, ToEngine};
use drqueue_common::{now_millis, Millis};
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// A request from the HTTP API, run on the core with full access to it.
pub type ApiCall = Box<dyn FnOnce(&mut Core) + Send>;

pub enum Event {
    /// A message from an engine, authenticated and decoded.
    FromEngine {
        identity: Bytes,
        seq: u64,
        msg: Box<FromEngine>,
    },
    Api(ApiCall),
    /// Stop: flush everything to the store, then answer.
    Shutdown(oneshot::Sender<()>),
}

/// One engine connection (a ZeroMQ peer identity) and whose it is.
struct Conn {
    engine: EngineId,
}

/// How far a Register's clock may be from ours when a farm key is in use;
/// outside it the Register is taken for a replay.
const REGISTER_WINDOW_MS: u64 = 10 * 60 * 1000;

/// Events handled before the loop dispatches and flushes.
const MAX_EVENTS_PER_ROUND: usize = 2048;

pub struct Core {
    pub sched: Scheduler,
    pub fx: Effects,
    pub now: Millis,
    post_commit: Vec<PostCommit>,
    logs: Vec<LogChunk>,
    conns: HashMap<Bytes, Conn>,
    engine_conn: HashMap<EngineId, Bytes>,
    guards: HashMap<EngineId, ReplayGuard>,
    out: mpsc::UnboundedSender<Outgoing>,
    writer: mpsc::UnboundedSender<WriterMsg>,
    authenticated: bool,
    /// None when the master has no `--smtp`: notifications then fail with
    /// that reason.
    mailer: Option<Mailer>,
    /// The HTTP API as users reach it, for links in mails.
    public_url: String,
}

impl Core {
    pub fn new(
        sched: Scheduler,
        out: mpsc::UnboundedSender<Outgoing>,
        writer: mpsc::UnboundedSender<WriterMsg>,
        authenticated: bool,
    ) -> Core {
        Core {
            sched,
            fx: Effects::default(),
            now: now_millis(),
            post_commit: Vec::new(),
            logs: Vec::new(),
            conns: HashMap::new(),
            engine_conn: HashMap::new(),
            guards: HashMap::new(),
            out,
            writer,
            authenticated,
            mailer: None,
            public_url: String::new(),
        }
    }

    /// Sets how notifications go out.
    pub fn with_mail(mut self, mailer: Option<Mailer>, public_url: String) -> Core {
        self.mailer = mailer;
        self.public_url = public_url;
        self
    }

    /// Runs `f` once everything changed so far is committed.
    pub fn after_commit(&mut self, f: impl FnOnce() + Send + 'static) {
        self.post_commit.push(Box::new(f));
    }

    /// Sends a request to the store thread (answered after pending commits).
    pub fn to_store(&mut self, msg: WriterMsg) {
        self.flush();
        let _ = self.writer.send(msg);
    }

    pub async fn run(mut self, mut events: mpsc::UnboundedReceiver<Event>) {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let first = tokio::select! {
                ev = events.recv() => match ev {
                    Some(ev) => Some(ev),
                    None => return,
                },
                _ = tick.tick() => None,
            };
            self.now = now_millis();
            let mut shutdown = None;
            if let Some(ev) = first {
                if let Some(done) = self.handle(ev) {
                    shutdown = Some(done);
                }
                for _ in 0..MAX_EVENTS_PER_ROUND {
                    match events.try_recv() {
                        Ok(ev) => {
                            if let Some(done) = self.handle(ev) {
                                shutdown = Some(done);
                            }
                        }
                        Err(_) => break,
                    }
                }
            } else {
                self.sched.tick(self.now, &mut self.fx);
                let (mailer, url) = (self.mailer.clone(), self.public_url.clone());
                crate::notify::send_due(&mut self, mailer.as_ref(), &url);
            }
            self.flush();
            if let Some(done) = shutdown {
                let (tx, rx) = oneshot::channel();
                let _ = self.writer.send(WriterMsg::Flush(tx));
                let _ = rx.await;
                let _ = done.send(());
                return;
            }
        }
    }

    fn handle(&mut self, ev: Event) -> Option<oneshot::Sender<()>> {
        match ev {
            Event::FromEngine { identity, seq, msg } => self.on_engine(identity, seq, *msg),
            Event::Api(call) => call(self),
            Event::Shutdown(done) => return Some(done),
        }
        None
    }

    fn send_to(&self, identity: &Bytes, msg: ToEngine) {
        let _ = self.out.send((identity.clone(), msg));
    }

    fn on_engine(&mut self, identity: Bytes, seq: u64, msg: FromEngine) {
        let now = self.now;
        if let FromEngine::Register(r) = msg {
            if self.authenticated && r.time_ms.abs_diff(now) > REGISTER_WINDOW_MS {
                tracing::warn!(engine = %r.engine, "refusing a Register whose clock is {} s off (a replay, or an engine without NTP)", r.time_ms.abs_diff(now) / 1000);
                self.send_to(
                    &identity,
                    ToEngine::Refused {
                        reason: "clock too far from the master's (check NTP)".into(),
                    },
                );
                return;
            }
            if !self.guards.entry(r.engine.clone()).or_default().accept(seq) {
                tracing::warn!(engine = %r.engine, "refusing a replayed Register");
                return;
            }
            if let Some(old) = self.engine_conn.insert(r.engine.clone(), identity.clone()) {
                if old != identity {
                    self.conns.remove(&old);
                }
            }
            self.conns.insert(
                identity,
                Conn {
                    engine: r.engine.clone(),
                },
            );
            tracing::info!(engine = %r.engine, host = %r.facts.hostname, pools = ?r.facts.pools, slots = r.slots, hwm = r.hwm, held = r.held.len(), "engine registered");
            let finished: Vec<AttemptKey> = r.finished.iter().map(|f| f.attempt).collect();
            self.sched.engine_registered(
                &r.engine,
                r.facts,
                r.slots,
                r.hwm,
                &r.held,
                &finished,
                now,
                &mut self.fx,
            );
            for f in r.finished {
                self.sched
                    .task_finished(&r.engine, f.attempt, f.outcome, now, &mut self.fx);
            }
            return;
        }
        let Some(conn) = self.conns.get(&identity) else {
            self.send_to(&identity, ToEngine::Reregister);
            return;
        };
        let engine = conn.engine.clone();
        if !self.guards.entry(engine.clone()).or_default().accept(seq) {
            tracing::warn!(%engine, seq, "dropping a replayed message");
            return;
        }
        if !self.sched.engine_seen(&engine, now) {
            // Declared lost meanwhile: it must register again (and report
            // what it holds) before anything it says counts.
            self.conns.remove(&identity);
            self.send_to(&identity, ToEngine::Reregister);
            return;
        }
        match msg {
            FromEngine::Register(_) => unreachable!("handled above"),
            FromEngine::Heartbeat(hb) => {
                self.sched.heartbeat(&engine, hb, now);
                self.send_to(&identity, ToEngine::Pong);
            }
            FromEngine::Started { attempt, ago_ms } => {
                self.sched
                    .task_started(&engine, attempt, now.saturating_sub(ago_ms as u64))
            }
            FromEngine::Log {
                attempt,
                offset,
                data,
            } => self.logs.push(LogChunk {
                attempt,
                offset,
                data,
            }),
            FromEngine::Finished(f) => {
                if !f.outcome.is_success() {
                    tracing::info!(%engine, task = %f.attempt.task, attempt = f.attempt.attempt, "attempt failed: {}", f.outcome.describe());
                }
                self.sched
                    .task_finished(&engine, f.attempt, f.outcome, now, &mut self.fx);
            }
            FromEngine::Release(keys) => self.sched.released(&engine, &keys, now),
            FromEngine::Facts(facts) => self.sched.facts_refreshed(&engine, facts),
            FromEngine::CheckResult { id, ok, detail } => {
                self.sched.check_result(&engine, id, ok, &detail)
            }
        }
    }

    /// Dispatches, sends, and hands the changes to the store writer.
    fn flush(&mut self) {
        let now = self.now;
        self.sched.dispatch(now, &mut self.fx);
        for (engine, msg) in self.fx.messages.drain(..) {
            if let Some(identity) = self.engine_conn.get(&engine) {
                let _ = self.out.send((identity.clone(), msg));
            }
        }
        for job in self.fx.ended_jobs.drain(..) {
            if let Some(view) = self.sched.job_view(job, now) {
                tracing::info!(job, name = %view.name, status = %view.status, done = view.counts.get(drqueue_common::model::TaskStatus::Done), "job ended");
            }
        }
        // Acks to one engine travel as one message.
        let mut acks: HashMap<Bytes, Vec<AttemptKey>> = HashMap::new();
        let mut after = std::mem::take(&mut self.post_commit);
        for (engine, msg) in self.fx.after_commit.drain(..) {
            let Some(identity) = self.engine_conn.get(&engine) else {
                continue;
            };
            match msg {
                ToEngine::Ack(keys) => acks.entry(identity.clone()).or_default().extend(keys),
                other => {
                    let out = self.out.clone();
                    let identity = identity.clone();
                    after.push(Box::new(move || {
                        let _ = out.send((identity, other));
                    }));
                }
            }
        }
        for (identity, keys) in acks {
            let out = self.out.clone();
            after.push(Box::new(move || {
                let _ = out.send((identity, ToEngine::Ack(keys)));
            }));
        }
        let mut batch = self.sched.take_batch();
        batch.logs = std::mem::take(&mut self.logs);
        if !batch.is_empty() || !after.is_empty() {
            let _ = self.writer.send(WriterMsg::Commit { batch, after });
        }
    }
}
