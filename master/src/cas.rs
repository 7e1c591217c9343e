//! The content store: blobs named by their BLAKE3 hash, each a file under
//! one folder (`<data-dir>/cas`, or `--cas-dir` that every master of a
//! MongoDB farm can reach, so a standby that takes over serves the same
//! blobs). A blob is written to a temporary file while its hash is worked
//! out, kept only when the hash matches its name, and moved into place
//! with a rename: a reader never sees half a blob, and a master killed
//! mid-upload leaves only a temporary file, swept at the next start.
//!
//! Moving to an S3-compatible store later means one more implementation of
//! these few calls (has, put, open); the manifests name hashes, not files.

use drqueue_common::cas::{BlobHash, BlobHasher, CasStats};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::io::AsyncWriteExt;

/// The largest blob one upload may be.
pub const MAX_BLOB_BYTES: u64 = 64 << 30;

/// What one garbage collection did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
pub struct GcReport {
    pub removed_blobs: u64,
    pub removed_bytes: u64,
    pub kept_blobs: u64,
}

#[derive(Clone)]
pub struct BlobDir {
    root: PathBuf,
    /// Uploads are refused (507) while the disk has less free space than
    /// this, before the store's own disk can fill.
    min_free_bytes: u64,
    /// Garbage collection removes what no live job names once unused this long.
    pub keep_unused: std::time::Duration,
    /// The most each user's live jobs may keep in the store (their uploaded
    /// folders, counted once per distinct file); 0: no quota.
    pub quota_bytes: u64,
    /// Blobs written since the start: a second submit of an unchanged scene
    /// adds none, which the tests read through `GET /api/cas`.
    written: Arc<AtomicU64>,
    written_bytes: Arc<AtomicU64>,
}

/// Why a blob was not kept.
#[derive(Debug, thiserror::Error)]
pub enum PutError {
    #[error("the upload's content hashes to {actual}, not {expected}: it was corrupted on the way or named wrongly; nothing was kept")]
    Mismatch {
        expected: BlobHash,
        actual: BlobHash,
    },
    #[error("the upload is larger than {MAX_BLOB_BYTES} bytes")]
    TooLarge,
    #[error("the master's disk has {free} bytes free, under its floor of {floor}: uploads wait until space is freed (drqueue clean, or a larger disk)")]
    DiskFull { free: u64, floor: u64 },
    #[error("the upload broke off: {0}")]
    Body(String),
    #[error("the content store could not write: {0}")]
    Io(#[from] io::Error),
}

impl BlobDir {
    /// Opens (making it) the store at `root` and sweeps temporary files an
    /// interrupted upload left.
    pub fn open(root: &Path, min_free_bytes: u64) -> io::Result<BlobDir> {
        BlobDir::open_keeping(
            root,
            min_free_bytes,
            std::time::Duration::from_secs(31 * 86_400),
        )
    }

    /// As [`BlobDir::open`], keeping unnamed blobs `keep_unused` long.
    pub fn open_keeping(
        root: &Path,
        min_free_bytes: u64,
        keep_unused: std::time::Duration,
    ) -> io::Result<BlobDir> {
        std::fs::create_dir_all(root.join("tmp"))?;
        for entry in std::fs::read_dir(root.join("tmp"))? {
            let _ = std::fs::remove_file(entry?.path());
        }
        Ok(BlobDir {
            root: root.to_path_buf(),
            min_free_bytes,
            keep_unused,
            quota_bytes: 0,
            written: Arc::default(),
            written_bytes: Arc::default(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/ab/cdef…`: 256 folders keep each one small.
    pub fn path_of(&self, hash: &BlobHash) -> PathBuf {
        let hex = hash.hex();
        self.root.join(&hex[..2]).join(&hex[2..])
    }

    pub fn has(&self, hash: &BlobHash) -> bool {
        self.path_of(hash).is_file()
    }

    /// Marks a blob used now: garbage collection removes only blobs unused
    /// for its whole keep time (a blob uploaded for a job not yet submitted
    /// is kept, too).
    pub fn touch(&self, hash: &BlobHash) {
        let _ = std::fs::File::options()
            .append(true)
            .open(self.path_of(hash))
            .and_then(|f| f.set_modified(std::time::SystemTime::now()));
    }

    /// Those of `hashes` the store lacks, in the order given; those it has
    /// count as used.
    pub fn missing(&self, hashes: &[BlobHash]) -> Vec<BlobHash> {
        hashes
            .iter()
            .filter(|h| {
                let has = self.has(h);
                if has {
                    self.touch(h);
                }
                !has
            })
            .copied()
            .collect()
    }

    /// Reads a whole blob (a manifest), at most `max` bytes.
    pub async fn read_small(&self, hash: &BlobHash, max: u64) -> io::Result<Vec<u8>> {
        let path = self.path_of(hash);
        let meta = tokio::fs::metadata(&path).await?;
        if meta.len() > max {
            return Err(io::Error::other(format!(
                "blob {hash} is {} bytes, over {max}",
                meta.len()
            )));
        }
        tokio::fs::read(path).await
    }

    pub fn free_bytes(&self) -> u64 {
        free_bytes(&self.root)
    }

    /// Streams `chunks` into the store as `expected`, keeping it only when
    /// its content hashes to that. Returns whether it was new.
    pub async fn put<S, E>(&self, expected: BlobHash, mut chunks: S) -> Result<bool, PutError>
    where
        S: futures_util::Stream<Item = Result<bytes::Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        use futures_util::StreamExt;
        if self.has(&expected) {
            // Drain nothing: the caller may close the connection; the blob is there.
            self.touch(&expected);
            return Ok(false);
        }
        let free = self.free_bytes();
        if free < self.min_free_bytes {
            return Err(PutError::DiskFull {
                free,
                floor: self.min_free_bytes,
            });
        }
        let tmp =
            self.root
                .join("tmp")
                .join(format!("{}.{}", expected.hex(), rand::random::<u64>()));
        let result = async {
            let mut file = tokio::fs::File::create(&tmp).await?;
            let mut hasher = BlobHasher::default();
            while let Some(chunk) = chunks.next().await {
                let chunk = chunk.map_err(|e| PutError::Body(e.to_string()))?;
                if hasher.len() + chunk.len() as u64 > MAX_BLOB_BYTES {
                    return Err(PutError::TooLarge);
                }
                hasher.update(&chunk);
                file.write_all(&chunk).await?;
            }
            let (actual, len) = hasher.finish();
            if actual != expected {
                return Err(PutError::Mismatch { expected, actual });
            }
            file.sync_all().await?;
            drop(file);
            let dest = self.path_of(&expected);
            if let Some(dir) = dest.parent() {
                tokio::fs::create_dir_all(dir).await?;
            }
            tokio::fs::rename(&tmp, &dest).await?;
            Ok(len)
        }
        .await;
        match result {
            Ok(len) => {
                self.written.fetch_add(1, Ordering::Relaxed);
                self.written_bytes.fetch_add(len, Ordering::Relaxed);
                Ok(true)
            }
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                Err(e)
            }
        }
    }

    /// A new temporary file for a blob being written bit by bit (an
    /// engine's upload over its link); [`BlobDir::install`] keeps it.
    pub fn temp_file(&self, hash: &BlobHash) -> Result<(std::fs::File, PathBuf), PutError> {
        let free = self.free_bytes();
        if free < self.min_free_bytes {
            return Err(PutError::DiskFull {
                free,
                floor: self.min_free_bytes,
            });
        }
        let tmp = self
            .root
            .join("tmp")
            .join(format!("{}.{}", hash.hex(), rand::random::<u64>()));
        Ok((std::fs::File::create(&tmp)?, tmp))
    }

    /// Moves a finished, verified temporary file into place as `hash`.
    pub fn install(&self, tmp: &Path, hash: &BlobHash, len: u64) -> io::Result<()> {
        let dest = self.path_of(hash);
        if let Some(dir) = dest.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::rename(tmp, dest)?;
        self.written.fetch_add(1, Ordering::Relaxed);
        self.written_bytes.fetch_add(len, Ordering::Relaxed);
        Ok(())
    }

    /// Removes every blob not in `keep` that nobody used since
    /// `now - unused_for`; returns what went and what stayed.
    pub fn collect_garbage(
        &self,
        keep: &std::collections::HashSet<BlobHash>,
        now: std::time::SystemTime,
        unused_for: std::time::Duration,
    ) -> GcReport {
        let mut report = GcReport::default();
        let cutoff = now.checked_sub(unused_for).unwrap_or(std::time::UNIX_EPOCH);
        for dir in std::fs::read_dir(&self.root)
            .into_iter()
            .flatten()
            .flatten()
        {
            let prefix = dir.file_name().to_string_lossy().to_string();
            if prefix.len() != 2 {
                continue;
            }
            for f in std::fs::read_dir(dir.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let Ok(meta) = f.metadata() else { continue };
                let name = format!("{prefix}{}", f.file_name().to_string_lossy());
                let named = name.parse::<BlobHash>().ok();
                let used = meta.modified().unwrap_or(now);
                if named.is_some_and(|h| keep.contains(&h)) || used > cutoff {
                    report.kept_blobs += 1;
                    continue;
                }
                if std::fs::remove_file(f.path()).is_ok() {
                    report.removed_blobs += 1;
                    report.removed_bytes += meta.len();
                }
            }
        }
        report
    }

    /// Counts what the store holds (a walk of its folders).
    pub fn stats(&self) -> CasStats {
        let (mut blobs, mut bytes) = (0, 0);
        for dir in std::fs::read_dir(&self.root)
            .into_iter()
            .flatten()
            .flatten()
        {
            if dir.file_name().len() != 2 {
                continue;
            }
            for f in std::fs::read_dir(dir.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                if let Ok(m) = f.metadata() {
                    blobs += 1;
                    bytes += m.len();
                }
            }
        }
        CasStats {
            blobs,
            bytes,
            written_blobs: self.written.load(Ordering::Relaxed),
            written_bytes: self.written_bytes.load(Ordering::Relaxed),
            free_bytes: self.free_bytes(),
            min_free_bytes: self.min_free_bytes,
            quota_bytes: self.quota_bytes,
            your_bytes: 0,
        }
    }
}

/// Free bytes on the file system holding `path` (for unprivileged users).
fn free_bytes(path: &Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return 0;
    };
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `st` a valid out-pointer.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return 0;
    }
    (st.f_bavail as u64).saturating_mul(st.f_frsize as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(
        parts: &[&'static [u8]],
    ) -> impl futures_util::Stream<Item = Result<bytes::Bytes, String>> + Unpin {
        futures_util::stream::iter(
            parts
                .iter()
                .map(|p| Ok(bytes::Bytes::from_static(p)))
                .collect::<Vec<_>>(),
        )
    }

    #[tokio::test]
    async fn a_blob_is_kept_only_under_its_own_hash() {
        let dir = std::env::temp_dir().join(format!("drqueue-cas-{}", rand::random::<u64>()));
        let cas = BlobDir::open(&dir, 0).unwrap();
        let hash = BlobHash::of(b"hello world");
        assert!(cas.put(hash, chunks(&[b"hello ", b"world"])).await.unwrap());
        assert!(
            !cas.put(hash, chunks(&[b"hello world"])).await.unwrap(),
            "already there"
        );
        assert_eq!(std::fs::read(cas.path_of(&hash)).unwrap(), b"hello world");
        let wrong = BlobHash::of(b"something else");
        let err = cas.put(wrong, chunks(&[b"hello world"])).await.unwrap_err();
        assert!(matches!(err, PutError::Mismatch { .. }), "{err}");
        assert!(!cas.has(&wrong));
        assert_eq!(
            std::fs::read_dir(dir.join("tmp")).unwrap().count(),
            0,
            "no leftovers"
        );
        assert_eq!(cas.missing(&[hash, wrong]), vec![wrong]);
        let stats = cas.stats();
        assert_eq!((stats.blobs, stats.bytes, stats.written_blobs), (1, 11, 1));
        // Garbage collection, with the clock moved on: a blob a live job
        // names stays however old; an unnamed one goes once unused for
        // longer than the keep time, not before.
        let other = BlobHash::of(b"orphan");
        assert!(cas.put(other, chunks(&[b"orphan"])).await.unwrap());
        let day = std::time::Duration::from_secs(86_400);
        let keep: std::collections::HashSet<BlobHash> = [hash].into();
        let now = std::time::SystemTime::now();
        let early = cas.collect_garbage(&keep, now + 30 * day, 31 * day);
        assert_eq!((early.removed_blobs, early.kept_blobs), (0, 2));
        let late = cas.collect_garbage(&keep, now + 32 * day, 31 * day);
        assert_eq!(
            (late.removed_blobs, late.removed_bytes, late.kept_blobs),
            (1, 6, 1)
        );
        assert!(cas.has(&hash) && !cas.has(&other));
        let floor = BlobDir::open(&dir, u64::MAX).unwrap();
        assert!(matches!(
            floor.put(wrong, chunks(&[b"x"])).await,
            Err(PutError::DiskFull { .. })
        ));
        let _ = std::fs::remove_dir_all(dir);
    }
}
