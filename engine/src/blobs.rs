//! Blobs over the engine's own link to the master: the slot threads ask
//! for input chunks and send output chunks here; the engine's loop sends
//! the requests with its other messages and hands each answer back to the
//! thread waiting for it.
//!
//! Why the link and not HTTP: it is already authenticated and encrypted,
//! reaches the master through whatever the engine's `--master` names, and
//! needs no second credential or TLS trust on the engine. A chunk is at
//! most [`BLOB_CHUNK`] (1 MiB, a sixteenth of the message cap), each thread
//! has one chunk in flight, so a control message waits behind at most a few
//! milliseconds of transfer.

use drqueue_common::cas::BlobHash;
use drqueue_common::protocol::{FromEngine, ToEngine};
use drqueue_runner::sandbox::BlobLink;
use std::collections::HashMap;
use std::sync::mpsc as std_mpsc;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::mpsc;

/// How long a thread waits for one answer before asking again (the link may
/// have dropped and come back meanwhile).
const ANSWER_WAIT: Duration = Duration::from_secs(15);
/// Asks before a transfer is given up (the task then fails, and is retried).
const TRIES: u32 = 8;

/// What a waiting thread is told.
enum Answer {
    Chunk { total: Option<u64>, data: Vec<u8> },
    Stored { next: u64, error: Option<String> },
}

/// Waiters are keyed by what the answer echoes: the blob and the offset.
type Key = (BlobHash, u64, bool);

pub struct LinkBlobs {
    requests: mpsc::UnboundedSender<FromEngine>,
    waiting: Mutex<HashMap<Key, std_mpsc::Sender<Answer>>>,
}

impl LinkBlobs {
    pub fn new(requests: mpsc::UnboundedSender<FromEngine>) -> LinkBlobs {
        LinkBlobs {
            requests,
            waiting: Mutex::default(),
        }
    }

    /// Hands a blob answer from the master to the thread waiting for it;
    /// an answer nobody waits for (a retry's twin) is dropped.
    pub fn deliver(&self, msg: ToEngine) {
        let (key, answer) = match msg {
            ToEngine::Blob {
                hash,
                offset,
                total,
                data,
            } => ((hash, offset, false), Answer::Chunk { total, data }),
            ToEngine::Stored {
                hash,
                offset,
                next,
                error,
            } => ((hash, offset, true), Answer::Stored { next, error }),
            _ => return,
        };
        let waiter = self
            .waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key);
        if let Some(tx) = waiter {
            let _ = tx.send(answer);
        }
    }

    /// Sends `msg` and waits for the answer keyed `key`, asking again on
    /// silence.
    fn ask(&self, key: Key, msg: impl Fn() -> FromEngine) -> Result<Answer, String> {
        for _ in 0..TRIES {
            let (tx, rx) = std_mpsc::channel();
            self.waiting
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(key, tx);
            if self.requests.send(msg()).is_err() {
                return Err("the engine is stopping".into());
            }
            if let Ok(answer) = rx.recv_timeout(ANSWER_WAIT) {
                return Ok(answer);
            }
        }
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key);
        Err(format!(
            "the master did not answer for blob {} in {TRIES} tries",
            key.0
        ))
    }
}

impl BlobLink for LinkBlobs {
    fn fetch(&self, hash: &BlobHash, offset: u64) -> Result<(u64, Vec<u8>), String> {
        let hash = *hash;
        match self.ask((hash, offset, false), || FromEngine::Fetch { hash, offset })? {
            Answer::Chunk {
                total: Some(total),
                data,
            } => Ok((total, data)),
            Answer::Chunk { total: None, .. } => Err(format!(
                "the master has no blob {hash}: upload the job's folder again"
            )),
            Answer::Stored { .. } => Err("a store answer to a fetch".into()),
        }
    }

    fn store(&self, hash: &BlobHash, offset: u64, total: u64, data: &[u8]) -> Result<u64, String> {
        let hash = *hash;
        let msg = || FromEngine::Store {
            hash,
            offset,
            total,
            data: data.to_vec(),
        };
        match self.ask((hash, offset, true), msg)? {
            Answer::Stored { error: Some(e), .. } => Err(e),
            Answer::Stored { next, error: None } => Ok(next),
            Answer::Chunk { .. } => Err("a fetch answer to a store".into()),
        }
    }
}
