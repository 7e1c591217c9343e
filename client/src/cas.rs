//! A job folder up to the master's content store, and collected outputs
//! back down: hashing (BLAKE3), asking which blobs the master lacks,
//! uploading only those, and resumable, verified downloads.

use crate::{Client, ClientError, Result};
use drqueue_common::cas::{check_path, BlobHash, BlobHasher, Manifest, ManifestEntry};
use drqueue_common::listing::glob_match;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Told how long work goes: a phase with its total, then bytes as they pass.
pub trait Progress {
    fn phase(&self, _what: &str, _total_bytes: u64) {}
    fn advance(&self, _bytes: u64) {}
    fn done(&self) {}
}

/// No progress shown (the Python module, tests).
pub struct Quiet;
impl Progress for Quiet {}

/// What an upload did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Uploaded {
    /// The manifest's hash: the job's `inputs`.
    pub manifest: BlobHash,
    pub files: usize,
    pub bytes: u64,
    /// What actually went over the network: blobs the master lacked.
    pub sent_blobs: usize,
    pub sent_bytes: u64,
}

/// A file found in the folder, not yet hashed.
struct Found {
    rel: String,
    path: PathBuf,
    size: u64,
    mode: u32,
}

/// The files of `dir` (following links that stay inside it), minus those a
/// glob of `exclude` matches by relative path or by name.
fn walk(dir: &Path, exclude: &[String]) -> Result<Vec<Found>> {
    let bad = |msg: String| ClientError::BadRequest(msg);
    let root = dir
        .canonicalize()
        .map_err(|e| bad(format!("--upload {}: {e}", dir.display())))?;
    if !root.is_dir() {
        return Err(bad(format!("--upload {}: not a folder", dir.display())));
    }
    let mut found = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|e| bad(format!("{}: {e}", d.display())))?;
        for entry in entries {
            let entry = entry.map_err(|e| bad(format!("{}: {e}", d.display())))?;
            let path = entry.path();
            let rel = path
                .strip_prefix(&root)
                .map_err(|e| bad(e.to_string()))?
                .to_string_lossy()
                .to_string();
            let name = entry.file_name().to_string_lossy().to_string();
            if exclude
                .iter()
                .any(|g| glob_match(g, &rel) || glob_match(g, &name))
            {
                continue;
            }
            let meta = std::fs::metadata(&path).map_err(|e| bad(format!("{rel}: {e}")))?;
            if entry.file_type().is_ok_and(|t| t.is_symlink()) {
                // A link may point anywhere: only one that stays inside the
                // folder is followed, so nothing outside it is uploaded.
                let target = path
                    .canonicalize()
                    .map_err(|e| bad(format!("{rel}: {e}")))?;
                if !target.starts_with(&root) {
                    return Err(bad(format!(
                        "{rel} is a link out of the job's folder (to {}): copy the file in, or exclude it with --upload-exclude",
                        target.display()
                    )));
                }
                if meta.is_dir() {
                    return Err(bad(format!(
                        "{rel} links to a folder inside the job's folder: the folder is uploaded already; exclude the link"
                    )));
                }
            }
            if meta.is_dir() {
                stack.push(path);
            } else if meta.is_file() {
                check_path(&rel).map_err(bad)?;
                found.push(Found {
                    rel,
                    path,
                    size: meta.len(),
                    mode: meta.permissions().mode() & 0o777,
                });
            }
        }
    }
    found.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok(found)
}

impl Client {
    /// Which of `hashes` the master lacks.
    pub fn cas_missing(&self, hashes: &[BlobHash]) -> Result<Vec<BlobHash>> {
        #[derive(serde::Deserialize)]
        struct Missing {
            missing: Vec<BlobHash>,
        }
        let answer: Missing = self.post(
            "/api/cas/missing",
            Some(&serde_json::json!({ "hashes": hashes })),
        )?;
        Ok(answer.missing)
    }

    /// Uploads one blob from `reader` (`len` bytes), streamed.
    pub fn cas_put(&self, hash: &BlobHash, len: u64, reader: impl Read) -> Result<()> {
        self.upload_body(&format!("/api/cas/{hash}"), len, reader)
    }

    /// Hashes `dir`, uploads what the master lacks, and returns the
    /// manifest to name as the job's `inputs`.
    pub fn upload_dir(
        &self,
        dir: &Path,
        exclude: &[String],
        progress: &dyn Progress,
    ) -> Result<Uploaded> {
        let found = walk(dir, exclude)?;
        let bytes: u64 = found.iter().map(|f| f.size).sum();
        progress.phase("hashing", bytes);
        let mut files = Vec::with_capacity(found.len());
        for f in &found {
            let mut file = std::fs::File::open(&f.path)
                .map_err(|e| ClientError::BadRequest(format!("{}: {e}", f.rel)))?;
            let mut hasher = BlobHasher::default();
            let mut buf = vec![0u8; 256 << 10];
            loop {
                let n = file
                    .read(&mut buf)
                    .map_err(|e| ClientError::BadRequest(format!("{}: {e}", f.rel)))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                progress.advance(n as u64);
            }
            let (hash, size) = hasher.finish();
            files.push(ManifestEntry {
                path: f.rel.clone(),
                hash,
                size,
                mode: f.mode,
            });
        }
        progress.done();
        let manifest = Manifest { files };
        manifest.check().map_err(ClientError::BadRequest)?;
        let manifest_bytes = manifest.to_bytes();
        let manifest_hash = BlobHash::of(&manifest_bytes);
        let mut wanted: Vec<BlobHash> = manifest.files.iter().map(|f| f.hash).collect();
        wanted.sort();
        wanted.dedup();
        wanted.push(manifest_hash);
        let missing = self.cas_missing(&wanted)?;
        let mut sent = (0usize, 0u64);
        let to_send: Vec<(&ManifestEntry, &Found)> = manifest
            .files
            .iter()
            .zip(&found)
            .filter(|(e, _)| missing.contains(&e.hash))
            .collect();
        let upload_bytes: u64 = to_send.iter().map(|(e, _)| e.size).sum();
        self.check_quota(upload_bytes + manifest_bytes.len() as u64)?;
        progress.phase("uploading", upload_bytes);
        let mut done = std::collections::HashSet::new();
        for (entry, f) in to_send {
            if !done.insert(entry.hash) {
                continue; // the same content under two names goes once
            }
            let file = std::fs::File::open(&f.path)
                .map_err(|e| ClientError::BadRequest(format!("{}: {e}", f.rel)))?;
            let counted = Counting {
                inner: file,
                progress,
            };
            self.cas_put(&entry.hash, entry.size, counted)?;
            sent.0 += 1;
            sent.1 += entry.size;
        }
        if missing.contains(&manifest_hash) {
            self.cas_put(
                &manifest_hash,
                manifest_bytes.len() as u64,
                &manifest_bytes[..],
            )?;
            sent.0 += 1;
            sent.1 += manifest_bytes.len() as u64;
        }
        progress.done();
        Ok(Uploaded {
            manifest: manifest_hash,
            files: manifest.files.len(),
            bytes,
            sent_blobs: sent.0,
            sent_bytes: sent.1,
        })
    }

    /// Downloads blob `hash` to `dest`, resuming a partial `dest.part` and
    /// checking the hash before the file takes its name.
    pub fn cas_download(
        &self,
        hash: &BlobHash,
        dest: &Path,
        progress: &dyn Progress,
    ) -> Result<()> {
        let io = |e: std::io::Error| ClientError::BadRequest(format!("{}: {e}", dest.display()));
        if dest.is_file() {
            let have = std::fs::File::open(dest)
                .and_then(BlobHash::of_reader)
                .map_err(io)?;
            if have.0 == *hash {
                return Ok(());
            }
        }
        if let Some(dir) = dest.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let part = dest.with_extension(match dest.extension() {
            Some(e) => format!("{}.part", e.to_string_lossy()),
            None => "part".into(),
        });
        for round in 0..2 {
            let mut file = std::fs::File::options()
                .create(true)
                .append(true)
                .open(&part)
                .map_err(io)?;
            let from = file.metadata().map_err(io)?.len();
            let mut resp = self.get_range(&format!("/api/cas/{hash}"), from)?;
            let reader = resp.body_mut().as_reader();
            let mut reader = Counting {
                inner: reader,
                progress,
            };
            std::io::copy(&mut reader, &mut file).map_err(io)?;
            file.sync_all().map_err(io)?;
            drop(file);
            let got = std::fs::File::open(&part)
                .and_then(BlobHash::of_reader)
                .map_err(io)?;
            if got.0 == *hash {
                return std::fs::rename(&part, dest).map_err(io);
            }
            // A stale partial file from another blob: start over once.
            let _ = std::fs::remove_file(&part);
            if round == 1 {
                return Err(ClientError::Protocol(format!(
                    "blob {hash} arrived as {}: the download was corrupted",
                    got.0
                )));
            }
        }
        Ok(())
    }
}

/// A reader that reports the bytes read.
struct Counting<'a, R> {
    inner: R,
    progress: &'a dyn Progress,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.advance(n as u64);
        Ok(n)
    }
}

/// What `download_outputs` fetched.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Downloaded {
    pub files: usize,
    pub bytes: u64,
}

impl Client {
    /// What the master's content store holds.
    /// Refuses an upload of `bytes` that the caller's quota has no room
    /// for, before a byte is sent: the master refuses it too, but only by
    /// closing the connection mid-body, which a client sees as a broken pipe.
    fn check_quota(&self, bytes: u64) -> Result<()> {
        let stats = self.cas_stats()?;
        let would = stats.your_bytes.saturating_add(bytes);
        if stats.quota_bytes > 0 && would > stats.quota_bytes {
            return Err(ClientError::BadRequest(format!(
                "your jobs would keep {would} bytes in the content store, over the upload quota of {} bytes: delete finished jobs (drqueue clean), or ask an admin for a larger --cas-quota-mb",
                stats.quota_bytes
            )));
        }
        Ok(())
    }

    pub fn cas_stats(&self) -> Result<drqueue_common::cas::CasStats> {
        self.get("/api/cas", &[])
    }

    /// Runs the content store's garbage collection now (admins); what it
    /// removed and kept, as JSON.
    pub fn cas_gc(&self) -> Result<serde_json::Value> {
        self.post("/api/cas/gc", None::<&()>)
    }

    /// Fetches the collected outputs of each task's last successful attempt
    /// into `to`, laid out by their relative paths; resumable and verified.
    pub fn download_outputs(
        &self,
        job: drqueue_common::model::JobId,
        to: &Path,
        progress: &dyn Progress,
    ) -> Result<Downloaded> {
        let mut wanted: Vec<(String, BlobHash, u64)> = Vec::new();
        for task in self.tasks(job, Some(drqueue_common::model::TaskStatus::Done))? {
            let attempts = self.attempts(job, task.index)?;
            if let Some(a) = attempts.iter().rev().find(|a| a.outcome.is_success()) {
                for o in &a.outcome.outputs {
                    if let Some(hash) = o.hash {
                        // The master's word on a path is checked like any input.
                        check_path(&o.path).map_err(ClientError::Protocol)?;
                        wanted.push((o.path.clone(), hash, o.size));
                    }
                }
            }
        }
        progress.phase("downloading", wanted.iter().map(|w| w.2).sum());
        let mut got = Downloaded::default();
        for (path, hash, size) in &wanted {
            self.cas_download(hash, &to.join(path), progress)?;
            got.files += 1;
            got.bytes += size;
        }
        progress.done();
        Ok(got)
    }
}
