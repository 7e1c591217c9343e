//! A task's own folder, laid out from its job's uploaded manifest, and the
//! outputs it collects back.
//!
//! Inputs come through a local cache of blobs ([`Cache`], a size cap with
//! least-recently-used eviction). Each task gets a *copy* of each file,
//! hashed while it is copied: a task that edits an input in place edits
//! its copy, never the cache, and a cache file that went bad is caught at
//! that moment, fetched again and logged. (Read-only hard links would be
//! cheaper but a task running as the same user can chmod them back; copies
//! cost one read and one write of the folder per task, which the note of
//! issue 17 measures.)

use drqueue_common::cas::{BlobHash, BlobHasher, Manifest, MAX_MANIFEST_BYTES};
use drqueue_common::listing::glob_match;
use drqueue_common::protocol::{OutputFile, BLOB_CHUNK, MAX_OUTPUTS};
use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

/// How a slot thread reaches the master's content store.
pub trait BlobLink: Send + Sync {
    /// Up to [`BLOB_CHUNK`] bytes of `hash` from `offset`, and its size.
    fn fetch(&self, hash: &BlobHash, offset: u64) -> Result<(u64, Vec<u8>), String>;
    /// Stores the chunk at `offset` of a blob of `total` bytes; returns the
    /// offset the master wants next (`total` once it is stored).
    fn store(&self, hash: &BlobHash, offset: u64, total: u64, data: &[u8]) -> Result<u64, String>;
}

/// The engine's blob cache: `blobs/ab/cdef…` whole and verified,
/// `partial/<hash>` while a download is under way (resumed from its
/// length after an interruption).
pub struct Cache {
    root: PathBuf,
    max_bytes: u64,
    /// One download at a time: two slots laying out the same job fetch
    /// each blob once.
    fetching: Mutex<()>,
}

/// Files the engine writes into a task's log.
pub type Note<'a> = &'a mut dyn FnMut(&str);

impl Cache {
    pub fn new(root: &Path, max_bytes: u64) -> std::io::Result<Cache> {
        std::fs::create_dir_all(root.join("blobs"))?;
        std::fs::create_dir_all(root.join("partial"))?;
        Ok(Cache {
            root: root.to_path_buf(),
            max_bytes,
            fetching: Mutex::new(()),
        })
    }

    fn blob_path(&self, hash: &BlobHash) -> PathBuf {
        let hex = hash.hex();
        self.root.join("blobs").join(&hex[..2]).join(&hex[2..])
    }

    /// The cached blob's path, fetching it first when it is not cached.
    pub fn get(&self, hash: &BlobHash, link: &dyn BlobLink) -> Result<PathBuf, String> {
        let path = self.blob_path(hash);
        let _one = self.fetching.lock().unwrap_or_else(|p| p.into_inner());
        if path.is_file() {
            // Used now: the last to be evicted.
            let _ = std::fs::File::options()
                .append(true)
                .open(&path)
                .and_then(|f| f.set_modified(SystemTime::now()));
            return Ok(path);
        }
        let partial = self.root.join("partial").join(hash.hex());
        for round in 0..2 {
            download(hash, &partial, link)?;
            let got = std::fs::File::open(&partial)
                .and_then(BlobHash::of_reader)
                .map_err(|e| format!("cannot read {}: {e}", partial.display()))?;
            if got.0 == *hash {
                break;
            }
            // A bad resume (the partial file was from another life) or a
            // bad transfer: start over once.
            let _ = std::fs::remove_file(&partial);
            if round == 1 {
                return Err(format!(
                    "blob {hash} arrived as {} twice: the master's copy is bad",
                    got.0
                ));
            }
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        std::fs::rename(&partial, &path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(path)
    }

    /// Forgets a cached blob that turned out bad.
    fn discard(&self, hash: &BlobHash) {
        let _ = std::fs::remove_file(self.blob_path(hash));
    }

    /// Removes the least recently used blobs, other than `keep`, until the
    /// cache is under its cap.
    pub fn evict(&self, keep: &HashSet<BlobHash>) {
        let _one = self.fetching.lock().unwrap_or_else(|p| p.into_inner());
        let mut files: Vec<(SystemTime, u64, PathBuf, String)> = Vec::new();
        for dir in std::fs::read_dir(self.root.join("blobs"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let prefix = dir.file_name().to_string_lossy().to_string();
            for f in std::fs::read_dir(dir.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                if let Ok(m) = f.metadata() {
                    let hex = format!("{prefix}{}", f.file_name().to_string_lossy());
                    files.push((
                        m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                        m.len(),
                        f.path(),
                        hex,
                    ));
                }
            }
        }
        let mut total: u64 = files.iter().map(|f| f.1).sum();
        files.sort();
        for (_, len, path, hex) in files {
            if total <= self.max_bytes {
                break;
            }
            if hex.parse::<BlobHash>().is_ok_and(|h| keep.contains(&h)) {
                continue;
            }
            if std::fs::remove_file(&path).is_ok() {
                total -= len;
            }
        }
    }
}

/// Fetches `hash` into `partial`, resuming from what is there.
fn download(hash: &BlobHash, partial: &Path, link: &dyn BlobLink) -> Result<(), String> {
    let mut file = std::fs::File::options()
        .create(true)
        .append(true)
        .open(partial)
        .map_err(|e| format!("{}: {e}", partial.display()))?;
    let mut offset = file.metadata().map(|m| m.len()).unwrap_or(0);
    loop {
        let (total, data) = link.fetch(hash, offset)?;
        if offset > total {
            // Longer than the blob: not this blob's bytes. Start over.
            file.set_len(0).map_err(|e| e.to_string())?;
            offset = 0;
            continue;
        }
        if data.len() > BLOB_CHUNK || (data.is_empty() && offset < total) {
            return Err(format!("the master sent a bad chunk of blob {hash}"));
        }
        file.write_all(&data)
            .map_err(|e| format!("{}: {e}", partial.display()))?;
        offset += data.len() as u64;
        if offset >= total {
            return file.sync_all().map_err(|e| e.to_string());
        }
    }
}

/// What a folder held before the task ran, by relative path: size and
/// modification time, to tell which files the task made or changed.
pub type Snapshot = HashMap<String, (u64, Option<SystemTime>)>;

/// Lays the job's folder out in `dir` from the manifest `manifest`.
pub fn lay_out(
    manifest: &BlobHash,
    dir: &Path,
    cache: &Cache,
    link: &dyn BlobLink,
    note: Note,
) -> Result<(), String> {
    let path = cache.get(manifest, link)?;
    let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    if len > MAX_MANIFEST_BYTES {
        return Err(format!("the job's manifest is {len} bytes, over the limit"));
    }
    let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let manifest = Manifest::parse(&bytes)?;
    note(&format!(
        "drqueue-engine: laying out the job's folder: {} files, {} bytes\n",
        manifest.files.len(),
        manifest.total_bytes()
    ));
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let keep: HashSet<BlobHash> = manifest.files.iter().map(|f| f.hash).collect();
    for f in &manifest.files {
        let dest = dir.join(&f.path);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        place(&f.hash, &f.path, &dest, (cache, link), &mut *note)?;
        let mode = if f.mode & 0o100 != 0 { 0o755 } else { 0o644 };
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(mode))
            .map_err(|e| format!("{}: {e}", dest.display()))?;
    }
    cache.evict(&keep);
    Ok(())
}

/// Copies blob `hash` (the file `name`) from the cache to `dest`, verified;
/// a corrupt cached copy is fetched again once, and logged.
pub fn place(
    hash: &BlobHash,
    name: &str,
    dest: &Path,
    (cache, link): (&Cache, &dyn BlobLink),
    note: Note,
) -> Result<(), String> {
    let mut copied = copy_verified(&cache.get(hash, link)?, dest, hash);
    if let Err(Bad::Corrupt(got)) = &copied {
        note(&format!(
            "drqueue-engine: the cached copy of {name} (blob {hash}) was corrupt (it hashes to {got}): fetched it again\n"
        ));
        // The runner has no logger of its own: the engine's stderr is its log.
        eprintln!("drqueue-engine: the cached copy of blob {hash} was corrupt: fetched it again");
        cache.discard(hash);
        copied = copy_verified(&cache.get(hash, link)?, dest, hash);
    }
    match copied {
        Ok(()) => Ok(()),
        Err(Bad::Corrupt(got)) => Err(format!(
            "blob {hash} is still corrupt after a fresh fetch ({got})"
        )),
        Err(Bad::Io(e)) => Err(format!("{}: {e}", dest.display())),
    }
}

/// Uploads the files an attempt wrote (paths relative to `base`, or
/// absolute) and sets their hashes.
pub fn upload_found(
    base: &Path,
    files: &mut [OutputFile],
    link: &dyn BlobLink,
) -> Result<(), String> {
    for f in files {
        let path = base.join(&f.path);
        let (hash, size) = std::fs::File::open(&path)
            .and_then(BlobHash::of_reader)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        upload(&path, &hash, size, link)?;
        f.size = size;
        f.hash = Some(hash);
    }
    Ok(())
}

enum Bad {
    Corrupt(BlobHash),
    Io(std::io::Error),
}

/// Copies `src` to `dest`, hashing as it goes; Corrupt when the bytes are
/// not `expected`'s.
fn copy_verified(src: &Path, dest: &Path, expected: &BlobHash) -> Result<(), Bad> {
    let mut from = std::fs::File::open(src).map_err(Bad::Io)?;
    let mut to = std::fs::File::create(dest).map_err(Bad::Io)?;
    let mut hasher = BlobHasher::default();
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = from.read(&mut buf).map_err(Bad::Io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        to.write_all(&buf[..n]).map_err(Bad::Io)?;
    }
    let (got, _) = hasher.finish();
    if got != *expected {
        return Err(Bad::Corrupt(got));
    }
    Ok(())
}

/// The files under `dir` matching any of `globs` (relative paths; `*`
/// matches across folders), with their size and time.
pub fn snapshot(dir: &Path, globs: &[String]) -> Snapshot {
    let mut out = Snapshot::new();
    if globs.is_empty() {
        return out;
    }
    let mut stack = vec![dir.to_path_buf()];
    // Bounded: a task that writes a million files collects the first ones.
    let mut seen = 0usize;
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            seen += 1;
            if seen > 1_000_000 {
                return out;
            }
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            let path = entry.path();
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() {
                let Ok(rel) = path.strip_prefix(dir) else {
                    continue;
                };
                let rel = rel.to_string_lossy().to_string();
                if globs.iter().any(|g| glob_match(g, &rel)) {
                    let meta = entry.metadata().ok();
                    out.insert(
                        rel,
                        (
                            meta.as_ref().map_or(0, |m| m.len()),
                            meta.and_then(|m| m.modified().ok()),
                        ),
                    );
                }
            }
        }
    }
    out
}

/// Uploads the files matching `globs` that are new or changed since
/// `before`, and returns them as outputs with their hashes.
pub fn collect(
    dir: &Path,
    globs: &[String],
    before: &Snapshot,
    link: &dyn BlobLink,
) -> Result<Vec<OutputFile>, String> {
    let after = snapshot(dir, globs);
    let mut changed: Vec<(&String, &(u64, Option<SystemTime>))> = after
        .iter()
        .filter(|(path, now)| before.get(*path) != Some(now))
        .collect();
    changed.sort();
    if changed.len() > MAX_OUTPUTS {
        return Err(format!(
            "the task made {} files matching --collect; at most {MAX_OUTPUTS} are collected: narrow the globs",
            changed.len()
        ));
    }
    let mut outputs = Vec::with_capacity(changed.len());
    for (rel, _) in changed {
        let path = dir.join(rel);
        let (hash, size) = std::fs::File::open(&path)
            .and_then(BlobHash::of_reader)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        upload(&path, &hash, size, link)?;
        outputs.push(OutputFile {
            path: rel.clone(),
            size,
            hash: Some(hash),
        });
    }
    Ok(outputs)
}

/// Sends one file as blob `hash`, from the offset the master asks for.
fn upload(path: &Path, hash: &BlobHash, size: u64, link: &dyn BlobLink) -> Result<(), String> {
    use std::io::{Seek, SeekFrom};
    let mut file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut buf = vec![0u8; BLOB_CHUNK];
    let mut offset = 0u64;
    loop {
        file.seek(SeekFrom::Start(offset))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let mut filled = 0;
        while filled < buf.len() {
            match file.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) => return Err(format!("{}: {e}", path.display())),
            }
        }
        let next = link.store(hash, offset, size, &buf[..filled])?;
        if next >= size {
            return Ok(());
        }
        if next == offset && filled == 0 {
            return Err(format!("{} changed while it was uploaded", path.display()));
        }
        offset = next;
    }
}

/// Makes the folders the task's declared outputs go in: each `outputs`
/// template's (per frame) and each `collect` glob's fixed part.
pub fn make_output_dirs(
    dir: &Path,
    body: &drqueue_common::protocol::JobBody,
    ctx: &drqueue_common::template::TaskContext,
) -> Result<(), String> {
    let mut folders: HashSet<PathBuf> = HashSet::new();
    for glob in &body.collect {
        let fixed = glob.split(['*', '?']).next().unwrap_or("");
        if let Some((folder, _)) = fixed.rsplit_once('/') {
            folders.insert(dir.join(folder));
        }
    }
    for frame in ctx.block.frames().take(MAX_OUTPUTS) {
        for t in &body.outputs {
            let path = drqueue_common::template::expand(std::slice::from_ref(t), ctx, Some(frame))
                .remove(0);
            if let Some(parent) = Path::new(&path).parent() {
                folders.insert(dir.join(parent));
            }
        }
    }
    for folder in folders {
        // Only inside the task's folder: an absolute output path is the
        // job's own business.
        let leaves = folder
            .components()
            .any(|c| c == std::path::Component::ParentDir);
        if folder.starts_with(dir) && !leaves {
            std::fs::create_dir_all(&folder).map_err(|e| format!("{}: {e}", folder.display()))?;
        }
    }
    Ok(())
}
