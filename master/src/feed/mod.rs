//! The live feed behind `GET /api/events`: what changed on the farm, as
//! batches of events in a bounded ring, numbered so a client that
//! reconnects with `Last-Event-ID` resumes where it left off.
//!
//! The core notes what changed as it commits ([`Pending`]); every
//! [`BATCH_MS`] it turns that into events (views built from the scheduler,
//! in `core/feed_out.rs`) and [`Feed::publish`]es them. Subscribers wait on
//! a watch channel for the newest sequence number and read the ring from
//! where they are. Nothing is built while nobody listens: the ring then
//! marks a gap, and a client resuming across it is told to reload.
//!
//! | file | concern |
//! |---|---|
//! | `mod.rs` | the ring, sequence numbers, resume, subscriber count |
//! | `topics.rs` | the topics a client asks for, parsed and matched |

mod topics;

pub use topics::{Topic, Topics};

use drqueue_common::model::{EngineId, JobId, TaskKey};
use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// Changes are merged and sent at most this often.
pub const BATCH_MS: u64 = 500;
/// Events the ring keeps for clients that reconnect.
const RING_EVENTS: usize = 4096;
/// Bytes of event data the ring keeps, at most.
const RING_BYTES: usize = 16 << 20;

/// One event as sent: its number, topic and JSON body.
#[derive(Debug, Clone)]
pub struct FeedEvent {
    pub seq: u64,
    pub topic: Topic,
    pub data: Arc<str>,
}

/// What changed since the last batch, by key.
#[derive(Debug, Default)]
pub struct Pending {
    pub jobs: BTreeSet<JobId>,
    pub deleted_jobs: BTreeSet<JobId>,
    pub tasks: BTreeSet<TaskKey>,
    pub engines: BTreeSet<EngineId>,
    /// New log bytes: (task, attempt, offset, data).
    pub logs: Vec<(TaskKey, u32, u64, Vec<u8>)>,
    /// Jobs whose tasks changed with no record of each: their watchers
    /// read the tasks again (`tasks_truncated`).
    pub tasks_reread: BTreeSet<JobId>,
}

impl Pending {
    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
            && self.deleted_jobs.is_empty()
            && self.tasks.is_empty()
            && self.engines.is_empty()
            && self.logs.is_empty()
    }
}

struct Ring {
    events: VecDeque<FeedEvent>,
    bytes: usize,
    next_seq: u64,
    /// Events before this number are gone (dropped from the ring, or never
    /// built while nobody listened).
    floor: u64,
}

/// Where a subscriber's next read starts.
#[derive(Debug, PartialEq, Eq)]
pub enum Resume {
    /// Events after this number follow.
    From(u64),
    /// Its last event is older than the ring: it must reload.
    Reload,
}

/// The shared handle: the core publishes, HTTP handlers subscribe.
#[derive(Clone)]
pub struct Feed {
    ring: Arc<Mutex<Ring>>,
    newest: watch::Sender<u64>,
    subscribers: Arc<AtomicUsize>,
}

impl Default for Feed {
    fn default() -> Self {
        Feed::new()
    }
}

impl Feed {
    pub fn new() -> Feed {
        Feed {
            ring: Arc::new(Mutex::new(Ring {
                events: VecDeque::new(),
                bytes: 0,
                next_seq: 1,
                floor: 1,
            })),
            newest: watch::channel(0).0,
            subscribers: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn ring(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The newest event's number.
    pub fn newest(&self) -> u64 {
        *self.newest.borrow()
    }

    /// Whether anyone listens: the core builds no events otherwise.
    pub fn has_subscribers(&self) -> bool {
        self.subscribers.load(Ordering::Relaxed) > 0
    }

    /// Changes went by with nobody listening: a resume across them reloads.
    pub fn skipped(&self) {
        let mut ring = self.ring();
        ring.floor = ring.next_seq;
        ring.events.clear();
        ring.bytes = 0;
    }

    /// Adds one batch's events and wakes the subscribers.
    pub fn publish(&self, batch: Vec<(Topic, String)>) {
        if batch.is_empty() {
            return;
        }
        let newest = {
            let mut ring = self.ring();
            for (topic, data) in batch {
                let seq = ring.next_seq;
                ring.next_seq += 1;
                ring.bytes += data.len();
                ring.events.push_back(FeedEvent {
                    seq,
                    topic,
                    data: data.into(),
                });
            }
            while ring.events.len() > RING_EVENTS || ring.bytes > RING_BYTES {
                let Some(old) = ring.events.pop_front() else {
                    break;
                };
                ring.bytes -= old.data.len();
                ring.floor = old.seq + 1;
            }
            ring.next_seq - 1
        };
        self.newest.send_replace(newest);
    }

    /// A new subscriber: where it starts (after `last_id` when it resumes),
    /// and the guard that counts it while it listens.
    pub fn subscribe(&self, last_id: Option<u64>) -> (Resume, watch::Receiver<u64>, Listening) {
        self.subscribers.fetch_add(1, Ordering::Relaxed);
        let guard = Listening(self.subscribers.clone());
        let ring = self.ring();
        let resume = match last_id {
            None => Resume::From(ring.next_seq - 1),
            Some(id) if id.saturating_add(1) >= ring.floor && id < ring.next_seq => {
                Resume::From(id)
            }
            Some(_) => Resume::Reload,
        };
        (resume, self.newest.subscribe(), guard)
    }

    /// Events after `after` that `topics` wants, at most `max`; and the
    /// number read up to, or None when `after` has fallen out of the ring.
    pub fn read(&self, after: u64, topics: &Topics, max: usize) -> Option<(Vec<FeedEvent>, u64)> {
        let ring = self.ring();
        if after.saturating_add(1) < ring.floor {
            return None;
        }
        let mut out = Vec::new();
        let mut upto = after;
        for e in ring.events.iter().filter(|e| e.seq > after) {
            if out.len() >= max {
                break;
            }
            upto = e.seq;
            if topics.wants(&e.topic) {
                out.push(e.clone());
            }
        }
        Some((out, upto.max(after)))
    }
}

/// Counts a subscriber while it is alive.
pub struct Listening(Arc<AtomicUsize>);

impl Drop for Listening {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(n: u64) -> Topic {
        Topic::Job(JobId(n))
    }

    #[test]
    fn subscribers_read_what_they_asked_for_in_order() {
        let feed = Feed::new();
        let (resume, _rx, _g) = feed.subscribe(None);
        assert_eq!(resume, Resume::From(0));
        feed.publish(vec![
            (Topic::Jobs, "a".into()),
            (job(7), "b".into()),
            (job(8), "c".into()),
        ]);
        let topics: Topics = "jobs,job:8".parse().unwrap();
        let (events, upto) = feed.read(0, &topics, 100).unwrap();
        let data: Vec<&str> = events.iter().map(|e| &*e.data).collect();
        assert_eq!(data, vec!["a", "c"]);
        assert_eq!(upto, 3);
        assert!(feed.read(3, &topics, 100).unwrap().0.is_empty());
    }

    #[test]
    fn a_resume_past_the_ring_or_a_gap_reloads() {
        let feed = Feed::new();
        let (_, _rx, guard) = feed.subscribe(None);
        for i in 0..(RING_EVENTS + 10) {
            feed.publish(vec![(Topic::Jobs, format!("{i}"))]);
        }
        assert_eq!(feed.subscribe(Some(3)).0, Resume::Reload);
        let recent = (RING_EVENTS + 5) as u64;
        assert_eq!(feed.subscribe(Some(recent)).0, Resume::From(recent));
        assert!(feed.read(3, &Topics::all(), 10).is_none());
        drop(guard);
        feed.skipped();
        assert_eq!(feed.subscribe(Some(recent)).0, Resume::Reload);
        // A number the feed never gave is no resume point either.
        assert_eq!(feed.subscribe(Some(u64::MAX - 1)).0, Resume::Reload);
    }

    #[test]
    fn subscribers_are_counted_while_they_listen() {
        let feed = Feed::new();
        assert!(!feed.has_subscribers());
        let (_, _, g) = feed.subscribe(None);
        assert!(feed.has_subscribers());
        drop(g);
        assert!(!feed.has_subscribers());
    }
}
