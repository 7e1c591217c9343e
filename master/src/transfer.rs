//! Blob transfers with engines over their link: chunks of job inputs they
//! fetch, and chunks of outputs they store. Handled beside the router, off
//! the core, each chunk's file work on the blocking pool, so a transfer
//! never holds up scheduling.

use crate::cas::{BlobDir, PutError, MAX_BLOB_BYTES};
use crate::events::Outgoing;
use bytes::Bytes;
use drqueue_common::cas::{BlobHash, BlobHasher};
use drqueue_common::protocol::{FromEngine, ToEngine, BLOB_CHUNK};
use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// An upload nobody has added to for this long is dropped (its engine died).
const STALE_UPLOAD: Duration = Duration::from_secs(600);
/// Uploads in flight from all engines at once.
const MAX_UPLOADS: usize = 256;

/// One blob an engine is sending, chunk by chunk, in order.
struct Upload {
    file: std::fs::File,
    tmp: PathBuf,
    hasher: BlobHasher,
    total: u64,
    touched: Instant,
}

#[derive(Clone)]
pub struct Transfers {
    cas: BlobDir,
    uploads: Arc<Mutex<HashMap<(Bytes, BlobHash), Upload>>>,
}

impl Transfers {
    pub fn new(cas: BlobDir) -> Transfers {
        Transfers {
            cas,
            uploads: Arc::default(),
        }
    }

    /// Takes a transfer message from engine `identity`, answering on `out`;
    /// any other message is handed back.
    pub fn handle(
        &self,
        identity: Bytes,
        msg: Box<FromEngine>,
        out: &mpsc::UnboundedSender<Outgoing>,
    ) -> Option<Box<FromEngine>> {
        match *msg {
            FromEngine::Fetch { hash, offset } => {
                let cas = self.cas.clone();
                let out = out.clone();
                tokio::task::spawn_blocking(move || {
                    let answer = read_chunk(&cas, hash, offset);
                    let _ = out.send((identity, answer));
                });
                None
            }
            FromEngine::Store {
                hash,
                offset,
                total,
                data,
            } => {
                let me = self.clone();
                let out = out.clone();
                tokio::task::spawn_blocking(move || {
                    let (next, error) = match me.store(&identity, hash, offset, total, &data) {
                        Ok(next) => (next, None),
                        Err(e) => {
                            tracing::warn!(blob = %hash, "an engine's upload failed: {e}");
                            (0, Some(e))
                        }
                    };
                    let answer = ToEngine::Stored {
                        hash,
                        offset,
                        next,
                        error,
                    };
                    let _ = out.send((identity, answer));
                });
                None
            }
            other => Some(Box::new(other)),
        }
    }

    /// Applies one chunk of an upload; returns the offset wanted next.
    fn store(
        &self,
        identity: &Bytes,
        hash: BlobHash,
        offset: u64,
        total: u64,
        data: &[u8],
    ) -> Result<u64, String> {
        if self.cas.has(&hash) {
            self.cas.touch(&hash);
            return Ok(total); // stored already: nothing more to send
        }
        if total > MAX_BLOB_BYTES {
            return Err(PutError::TooLarge.to_string());
        }
        let key = (identity.clone(), hash);
        let mut uploads = self.uploads.lock().unwrap_or_else(|p| p.into_inner());
        uploads.retain(|_, u| {
            let fresh = u.touched.elapsed() < STALE_UPLOAD;
            if !fresh {
                let _ = std::fs::remove_file(&u.tmp);
            }
            fresh
        });
        if offset == 0 {
            if let Some(old) = uploads.remove(&key) {
                let _ = std::fs::remove_file(old.tmp);
            }
            if uploads.len() >= MAX_UPLOADS {
                return Err("too many uploads in flight on the master: try again".into());
            }
            let (file, tmp) = self.cas.temp_file(&hash).map_err(|e| e.to_string())?;
            uploads.insert(
                key.clone(),
                Upload {
                    file,
                    tmp,
                    hasher: BlobHasher::default(),
                    total,
                    touched: Instant::now(),
                },
            );
        }
        let Some(up) = uploads.get_mut(&key) else {
            // The master restarted, or the upload went stale: from the top.
            return Ok(0);
        };
        if offset != up.hasher.len() || total != up.total {
            // Out of step (a resend): ask for what comes next.
            return Ok(up.hasher.len());
        }
        if up.hasher.len() + data.len() as u64 > up.total {
            let up = uploads.remove(&key);
            if let Some(up) = up {
                let _ = std::fs::remove_file(up.tmp);
            }
            return Err(format!(
                "blob {hash} is longer than the {total} bytes announced"
            ));
        }
        up.hasher.update(data);
        up.touched = Instant::now();
        if let Err(e) = up.file.write_all(data) {
            return Err(format!("the content store could not write: {e}"));
        }
        if up.hasher.len() < up.total {
            return Ok(up.hasher.len());
        }
        let Some(up) = uploads.remove(&key) else {
            return Ok(0);
        };
        drop(uploads);
        let (actual, len) = up.hasher.finish();
        if actual != hash {
            let _ = std::fs::remove_file(&up.tmp);
            return Err(PutError::Mismatch {
                expected: hash,
                actual,
            }
            .to_string());
        }
        up.file
            .sync_all()
            .and_then(|()| self.cas.install(&up.tmp, &hash, len))
            .map_err(|e| {
                let _ = std::fs::remove_file(&up.tmp);
                format!("the content store could not keep blob {hash}: {e}")
            })?;
        Ok(total)
    }
}

/// Up to [`BLOB_CHUNK`] bytes of a blob from `offset`.
fn read_chunk(cas: &BlobDir, hash: BlobHash, offset: u64) -> ToEngine {
    if offset == 0 {
        cas.touch(&hash);
    }
    let missing = ToEngine::Blob {
        hash,
        offset,
        total: None,
        data: Vec::new(),
    };
    let Ok(mut file) = std::fs::File::open(cas.path_of(&hash)) else {
        return missing;
    };
    let Ok(total) = file.metadata().map(|m| m.len()) else {
        return missing;
    };
    let want = total.saturating_sub(offset).min(BLOB_CHUNK as u64) as usize;
    let mut data = vec![0u8; want];
    let read = file
        .seek(SeekFrom::Start(offset.min(total)))
        .and_then(|_| file.read_exact(&mut data));
    if read.is_err() {
        return missing;
    }
    ToEngine::Blob {
        hash,
        offset,
        total: Some(total),
        data,
    }
}
