//! Followers of a live log, waiting for it to grow: `drqueue log --follow`
//! long-polls instead of asking every half second. A follower is woken once
//! the next chunk of its attempt is committed (so its read finds it), or
//! when the attempt ends.

use drqueue_common::protocol::AttemptKey;
use std::collections::HashMap;
use tokio::sync::oneshot;

/// Followers waiting at once, at most: past it the oldest are woken early
/// (they simply ask again), so memory stays bounded.
const MAX_WAITING: usize = 10_000;

#[derive(Default)]
pub(super) struct LogWatchers {
    waiting: HashMap<AttemptKey, Vec<oneshot::Sender<()>>>,
    count: usize,
}

impl LogWatchers {
    pub(super) fn add(&mut self, attempt: AttemptKey, follower: oneshot::Sender<()>) {
        if self.count >= MAX_WAITING {
            // Followers that gave up (timed out) go first.
            for list in self.waiting.values_mut() {
                list.retain(|f| !f.is_closed());
            }
            self.waiting.retain(|_, list| !list.is_empty());
            self.count = self.waiting.values().map(Vec::len).sum();
        }
        if self.count >= MAX_WAITING {
            return; // dropped: the follower is answered at once
        }
        let list = self.waiting.entry(attempt).or_default();
        // Followers of a quiet attempt come back every wait: forget those
        // that gave up.
        let before = list.len();
        list.retain(|f| !f.is_closed());
        self.count -= before - list.len();
        list.push(follower);
        self.count += 1;
    }

    /// The followers of `attempt`, no longer waiting.
    pub(super) fn take(&mut self, attempt: &AttemptKey) -> Option<Vec<oneshot::Sender<()>>> {
        let list = self.waiting.remove(attempt)?;
        self.count -= list.len();
        Some(list)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use drqueue_common::model::{JobId, TaskKey};

    #[test]
    fn followers_are_bounded_and_taken_once() {
        let key = AttemptKey {
            task: TaskKey {
                job: JobId(1),
                index: 0,
            },
            attempt: 1,
        };
        let mut w = LogWatchers::default();
        let mut held = Vec::new();
        for _ in 0..MAX_WAITING + 5 {
            let (tx, rx) = oneshot::channel();
            w.add(key, tx);
            held.push(rx);
        }
        assert_eq!(w.count, MAX_WAITING);
        // Those past the bound were dropped: their wait ends at once.
        assert!(held.last_mut().unwrap().try_recv().is_err());
        assert_eq!(w.take(&key).map(|l| l.len()), Some(MAX_WAITING));
        assert!(w.take(&key).is_none());
        assert_eq!(w.count, 0);
    }
}
