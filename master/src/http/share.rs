//! Requests in flight per client: a client is its token, or its address
//! when it sends none, so one client (one script, one runaway monitor)
//! cannot hold every request slot, even when many people come through one
//! reverse proxy's address. Past its share a request is answered 429.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Clone)]
pub(super) struct Shares {
    held: Arc<Mutex<HashMap<String, usize>>>,
    share: usize,
}

/// One request's place in its client's share, given back when dropped.
pub(super) struct Held {
    shares: Shares,
    key: String,
}

impl Shares {
    pub(super) fn new(share: usize) -> Shares {
        Shares {
            held: Arc::default(),
            share: share.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A place for one more request of `key`, or None past its share.
    pub(super) fn take(&self, key: String) -> Option<Held> {
        let mut held = self.lock();
        let n = held.entry(key.clone()).or_default();
        if *n >= self.share {
            return None;
        }
        *n += 1;
        Some(Held {
            shares: self.clone(),
            key,
        })
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut held = self.shares.lock();
        if let Some(n) = held.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_share_is_given_back_when_the_request_ends() {
        let s = Shares::new(2);
        let a = s.take("t:alice".into()).unwrap();
        let _b = s.take("t:alice".into()).unwrap();
        assert!(s.take("t:alice".into()).is_none());
        assert!(s.take("a:10.0.0.1".into()).is_some());
        drop(a);
        assert!(s.take("t:alice".into()).is_some());
    }
}
