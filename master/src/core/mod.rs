//! The master's event loop: the one task that owns the [`Scheduler`].
//!
//! Engine messages (already decoded by [`crate::router`]), API requests (from
//! [`crate::http`]), the mailer's reports and clock ticks arrive as
//! [`Event`]s on one channel. After each burst of events the loop
//! dispatches, sends the resulting messages, and hands one batch of changes
//! to the store writer, with the acks and replies that must wait for it.
//! Because only this task touches the scheduler, nothing on the dispatch path
//! takes a lock.
//!
//! | file | concern |
//! |---|---|
//! | `mod.rs` | the loop, flushing outputs to sockets and the store |
//! | `engine_link.rs` | engine connections: registration, replay guard, messages |
//! | `requests.rs` | one arm per API [`Request`](crate::events::Request) |
//! | `notices.rs` | the scheduler's notices, logged; notifications handed to the mailer |
//! | `feed_out.rs` | what changed, as events for the live feed (`GET /api/events`) |
//! | `metrics_out.rs` | the scheduler's observations counted, the farm's gauges read for `GET /metrics` |

mod engine_link;
mod feed_out;
mod log_watch;
mod metrics_out;
mod notices;
mod requests;

pub use notices::log_notice;

use crate::events::{Event, MailReport, Outgoing};
use crate::notify::Mailer;
use crate::scheduler::{Effects, Scheduler};
use crate::store::writer::{PostCommit, WriterMsg};
use crate::store::{LogChunk, ThumbnailRecord};
use bytes::Bytes;
use drqueue_common::model::EngineId;
use drqueue_common::protocol::{AttemptKey, ToEngine};
use drqueue_common::{now_millis, Millis};
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// One engine connection (a ZeroMQ peer identity) and whose it is.
struct Conn {
    engine: EngineId,
}

/// Events handled before the loop dispatches and flushes.
const MAX_EVENTS_PER_ROUND: usize = 2048;

pub struct Core {
    sched: Scheduler,
    fx: Effects,
    now: Millis,
    post_commit: Vec<PostCommit>,
    logs: Vec<LogChunk>,
    /// Thumbnails of finished attempts, for the next commit.
    thumbnails: Vec<ThumbnailRecord>,
    conns: HashMap<Bytes, Conn>,
    engine_conn: HashMap<EngineId, Bytes>,
    /// Messages about attempts their engine does not hold, logged sparingly.
    foreign_notices: notices::RateLimit,
    out: mpsc::UnboundedSender<Outgoing>,
    writer: mpsc::UnboundedSender<WriterMsg>,
    /// None when the master has no `--smtp`: notifications then fail with
    /// that reason.
    mailer: Option<Mailer>,
    /// The HTTP API as users reach it, for links in mails.
    public_url: String,
    /// Log followers waiting for their attempt's next chunk.
    log_watchers: log_watch::LogWatchers,
    /// The live feed's pending changes and chart.
    feed_out: feed_out::FeedOut,
    /// What `GET /metrics` reports.
    metrics: std::sync::Arc<crate::metrics::Metrics>,
}

impl Core {
    pub fn new(
        sched: Scheduler,
        out: mpsc::UnboundedSender<Outgoing>,
        writer: mpsc::UnboundedSender<WriterMsg>,
    ) -> Core {
        Core {
            sched,
            fx: Effects::default(),
            now: now_millis(),
            post_commit: Vec::new(),
            logs: Vec::new(),
            thumbnails: Vec::new(),
            conns: HashMap::new(),
            engine_conn: HashMap::new(),
            foreign_notices: notices::RateLimit::default(),
            out,
            writer,
            mailer: None,
            public_url: String::new(),
            log_watchers: log_watch::LogWatchers::default(),
            feed_out: feed_out::FeedOut::default(),
            metrics: std::sync::Arc::new(crate::metrics::Metrics::new(Default::default())),
        }
    }

    /// Counts into `metrics` (the API's `GET /metrics`).
    pub fn with_metrics(mut self, metrics: std::sync::Arc<crate::metrics::Metrics>) -> Core {
        self.metrics = metrics;
        self
    }

    /// Publishes what changes to `feed` (the API's `GET /api/events`).
    pub fn with_feed(mut self, feed: crate::feed::Feed) -> Core {
        self.feed_out = feed_out::FeedOut::new(feed);
        self
    }

    /// Sets how notifications go out.
    pub fn with_mail(mut self, mailer: Option<Mailer>, public_url: String) -> Core {
        self.mailer = mailer;
        self.public_url = public_url;
        self
    }

    /// Runs `f` once everything changed so far is committed.
    fn after_commit(&mut self, f: impl FnOnce() + Send + 'static) {
        self.post_commit.push(Box::new(f));
    }

    /// Sends a request to the store thread (answered after pending commits).
    fn ask_store(&mut self, msg: WriterMsg) {
        self.flush();
        let _ = self.writer.send(msg);
    }

    /// Wakes the followers of `attempt` once what came so far is committed.
    fn wake_log_followers(&mut self, attempt: &AttemptKey) {
        if let Some(followers) = self.log_watchers.take(attempt) {
            self.after_commit(move || {
                for f in followers {
                    let _ = f.send(());
                }
            });
        }
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
                self.send_due_notifications();
            }
            self.flush();
            if let Some(done) = shutdown {
                let (tx, rx) = oneshot::channel();
                let _ = self.writer.send(WriterMsg::Flush(tx));
                let _ = rx.await;
                let _ = self.writer.send(WriterMsg::Stop);
                let _ = done.send(());
                return;
            }
        }
    }

    fn handle(&mut self, ev: Event) -> Option<oneshot::Sender<()>> {
        match ev {
            Event::FromEngine { identity, msg } => self.on_engine(identity, *msg),
            Event::Request(request) => self.on_request(request),
            Event::MailReport(MailReport {
                job,
                result,
                permanent,
            }) => self
                .sched
                .notification_result(job, result, permanent, self.now),
            Event::Shutdown(done) => return Some(done),
        }
        None
    }

    fn send_to(&self, identity: &Bytes, msg: ToEngine) {
        let _ = self.out.send((identity.clone(), msg));
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
        self.log_notices();
        for job in std::mem::take(&mut self.fx.tasks_changed_unrecorded) {
            self.note_tasks_reread(job);
        }
        for job in self.fx.ended_jobs.drain(..) {
            if let Some(view) = self.sched.job_view(job, now) {
                tracing::info!(%job, name = %view.name, status = %view.status, done = view.counts.get(drqueue_common::model::TaskStatus::Done), "job ended");
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
        self.sched.persist(&mut self.fx);
        self.count_observations();
        let mut batch = std::mem::take(&mut self.fx.batch);
        batch.logs = std::mem::take(&mut self.logs);
        batch.thumbnails = std::mem::take(&mut self.thumbnails);
        self.note_for_feed(&batch);
        self.publish_feed();
        if !batch.is_empty() || !after.is_empty() {
            let _ = self.writer.send(WriterMsg::Commit { batch, after });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Request;
    use crate::scheduler::Config;
    use drqueue_common::model::JobSpec;

    fn core() -> (
        Core,
        mpsc::UnboundedReceiver<Outgoing>,
        mpsc::UnboundedReceiver<WriterMsg>,
    ) {
        let (out, out_rx) = mpsc::unbounded_channel();
        let (writer, writer_rx) = mpsc::unbounded_channel();
        let core = Core::new(Scheduler::new(Config::default()), out, writer);
        (core, out_rx, writer_rx)
    }

    /// A request's reply, and every action the scheduler queued for after
    /// the commit, travel with the commit: nothing is answered before the
    /// store has it, and nothing queued is dropped.
    #[test]
    fn a_submit_is_answered_with_its_commit_not_before() {
        let (mut core, _out, mut writer) = core();
        let (reply, mut answer) = oneshot::channel();
        let spec = Box::new(JobSpec {
            command: vec!["true".into()],
            frames: "1-3".into(),
            blocksize: 1,
            ..Default::default()
        });
        core.handle(Event::Request(Request::Submit {
            spec,
            require_runnable: false,
            reply,
        }));
        core.flush();
        assert!(answer.try_recv().is_err(), "answered before the commit");
        let Ok(WriterMsg::Commit { batch, after }) = writer.try_recv() else {
            panic!("the submit's changes go to the store as one commit");
        };
        // One record for the job: its tasks, ready as they start, have none.
        assert_eq!(batch.jobs.len(), 1);
        assert!(batch.jobs[0].released && batch.tasks.is_empty());
        for f in after {
            f();
        }
        let views = answer.try_recv().expect("answered once committed");
        assert_eq!(views.expect("accepted")[0].tasks_total, 3);
    }

    #[test]
    fn a_pause_is_answered_with_its_commit_not_before() {
        let (mut core, _out, mut writer) = core();
        let (reply, _) = oneshot::channel();
        let spec = Box::new(JobSpec {
            command: vec!["true".into()],
            frames: "1".into(),
            blocksize: 1,
            ..Default::default()
        });
        core.handle(Event::Request(Request::Submit {
            spec,
            require_runnable: false,
            reply,
        }));
        core.flush();
        let _ = writer.try_recv();
        let (reply, mut answer) = oneshot::channel();
        core.handle(Event::Request(Request::ControlJob {
            tasks: None,
            id: drqueue_common::model::JobId(1),
            action: crate::events::JobAction::Pause,
            only_owner: None,
            reply,
        }));
        core.flush();
        assert!(answer.try_recv().is_err(), "answered before the commit");
        let Ok(WriterMsg::Commit { batch, after }) = writer.try_recv() else {
            panic!("the pause goes to the store");
        };
        assert_eq!(batch.jobs.len(), 1, "the paused job is written");
        after.into_iter().for_each(|f| f());
        assert!(answer.try_recv().expect("answered").is_ok());
    }
}
