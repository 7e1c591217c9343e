//! Engine connections as the core sees them: which ZeroMQ identity is which
//! engine, and each decoded message fed to the scheduler. The router's
//! session table has already proved who sent it.

use super::{Conn, Core};
use crate::scheduler::Notice;
use crate::store::{LogChunk, ThumbnailRecord};
use bytes::Bytes;
use drqueue_common::protocol::{
    AttemptKey, Finished, FromEngine, ToEngine, MAX_THUMBNAILS, MAX_THUMBNAIL_BYTES,
};
use drqueue_common::Millis;

/// Room past a job's log cap for the engine's line marking the gap.
const LOG_MARKER_SLACK: u64 = 1024;

impl Core {
    /// A successful attempt's thumbnails go to the store on their own, with
    /// the next commit; they never ride in the attempt's record. Those of an
    /// attempt the engine does not hold are dropped.
    fn keep_thumbnails(&mut self, engine: &str, f: &mut Finished, now: Millis) {
        let thumbnails = std::mem::take(&mut f.outcome.thumbnails);
        if !f.outcome.is_success() || !self.sched.owns_attempt(engine, f.attempt) {
            return;
        }
        let job = f.attempt.task.job;
        self.thumbnails.extend(
            thumbnails
                .into_iter()
                .filter(|t| t.png.len() <= MAX_THUMBNAIL_BYTES)
                .take(MAX_THUMBNAILS)
                .map(|t| ThumbnailRecord {
                    job,
                    frame: t.frame,
                    at_ms: now,
                    png: t.png,
                }),
        );
    }

    pub(super) fn on_engine(&mut self, identity: Bytes, msg: FromEngine) {
        let now = self.now;
        if let FromEngine::Register(r) = msg {
            if self.sched.is_revoked(&r.engine) {
                tracing::warn!(engine = %r.engine, "refusing a revoked engine");
                self.send_to(&identity, ToEngine::Revoked);
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
            for mut f in r.finished {
                self.keep_thumbnails(&r.engine, &mut f, now);
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
            } => {
                if self.sched.owns_attempt(&engine, attempt) {
                    // The engine keeps a log within its job's cap; the store
                    // takes no byte past it (plus the gap marker's line).
                    let cap = self.sched.log_cap(attempt.task.job) + LOG_MARKER_SLACK;
                    if offset.saturating_add(data.len() as u64) <= cap {
                        self.sched.task_activity(&engine, attempt, now);
                        self.logs.push(LogChunk {
                            attempt,
                            offset,
                            data,
                        });
                        self.wake_log_followers(&attempt);
                    }
                } else {
                    self.fx.notices.push(Notice::ForeignAttempt {
                        engine: engine.clone(),
                        attempt,
                        what: "log",
                    });
                }
            }
            FromEngine::Finished(mut f) => {
                self.keep_thumbnails(&engine, &mut f, now);
                if !f.outcome.is_success() {
                    tracing::info!(%engine, task = %f.attempt.task, attempt = f.attempt.attempt, "attempt failed: {}", f.outcome.describe());
                }
                self.wake_log_followers(&f.attempt);
                self.sched
                    .task_finished(&engine, f.attempt, f.outcome, now, &mut self.fx);
            }
            FromEngine::Release(keys) => self.sched.released(&engine, &keys, now),
            FromEngine::Facts(facts) => self.sched.facts_refreshed(&engine, facts),
            FromEngine::Progress { attempt, percent } => {
                self.sched.task_progress(&engine, attempt, percent, now);
                self.note_progress(attempt.task);
            }
            FromEngine::CheckResult { id, ok, detail } => {
                self.sched
                    .check_result(&engine, id, ok, &detail, &mut self.fx)
            }
            // The router hands blob chunks to the transfers, never here.
            FromEngine::Fetch { .. } | FromEngine::Store { .. } => {}
        }
    }
}
