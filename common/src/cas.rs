//! Content-addressed job inputs: a blob is named by the BLAKE3 hash of its
//! bytes, and a job's folder is a manifest of (relative path, hash, size,
//! mode), itself stored as a blob. The rules for manifest paths live here,
//! so the client that writes a manifest, the master that accepts it and the
//! engine that lays it out refuse the same paths.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::io::Read;
use std::str::FromStr;

/// The BLAKE3 hash of a blob; on the wire and in URLs, 64 lowercase hex
/// digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlobHash([u8; 32]);

impl BlobHash {
    pub fn of(bytes: &[u8]) -> BlobHash {
        BlobHash(*blake3::hash(bytes).as_bytes())
    }

    /// The hash and length of everything `reader` yields.
    pub fn of_reader(mut reader: impl Read) -> std::io::Result<(BlobHash, u64)> {
        let mut hasher = BlobHasher::default();
        let mut buf = vec![0u8; 256 << 10];
        loop {
            let n = reader.read(&mut buf)?;
            if n == 0 {
                return Ok(hasher.finish());
            }
            hasher.update(&buf[..n]);
        }
    }

    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Hashes a blob as it streams past.
#[derive(Default)]
pub struct BlobHasher {
    hasher: blake3::Hasher,
    len: u64,
}

impl BlobHasher {
    pub fn update(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
        self.len += bytes.len() as u64;
    }
    pub fn len(&self) -> u64 {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn finish(&self) -> (BlobHash, u64) {
        (BlobHash(*self.hasher.finalize().as_bytes()), self.len)
    }
}

impl fmt::Display for BlobHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex())
    }
}

impl fmt::Debug for BlobHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlobHash({})", self.hex())
    }
}

impl FromStr for BlobHash {
    type Err = String;
    fn from_str(s: &str) -> Result<BlobHash, String> {
        let bad = || {
            format!(
                "{:?} is not a blob hash: expected 64 lowercase hex digits (BLAKE3)",
                s.chars().take(80).collect::<String>()
            )
        };
        if s.len() != 64 {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, pair) in s.as_bytes().chunks(2).enumerate() {
            let digit = |c: u8| match c {
                b'0'..=b'9' => Some(c - b'0'),
                b'a'..=b'f' => Some(c - b'a' + 10),
                _ => None,
            };
            match (digit(pair[0]), digit(pair[1])) {
                (Some(h), Some(l)) => out[i] = h << 4 | l,
                _ => return Err(bad()),
            }
        }
        Ok(BlobHash(out))
    }
}

impl Serialize for BlobHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.hex())
    }
}

impl<'de> Deserialize<'de> for BlobHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<BlobHash, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl schemars::JsonSchema for BlobHash {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "BlobHash".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "The BLAKE3 hash of a blob, as 64 lowercase hex digits.",
            "type": "string",
            "pattern": "^[0-9a-f]{64}$",
        })
    }
}

/// What the master's content store holds (`GET /api/cas`, `drqueue cas`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CasStats {
    pub blobs: u64,
    pub bytes: u64,
    /// Blobs and bytes written since the master started.
    pub written_blobs: u64,
    pub written_bytes: u64,
    /// Free bytes on the store's disk, and the floor below which uploads
    /// are refused (507).
    pub free_bytes: u64,
    pub min_free_bytes: u64,
    /// Each user's upload quota (0: none), and what the caller's live jobs
    /// keep in the store against it.
    #[serde(default)]
    pub quota_bytes: u64,
    #[serde(default)]
    pub your_bytes: u64,
}

/// One file of a job's folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ManifestEntry {
    /// Relative to the job's folder, `/`-separated ([`check_path`]).
    pub path: String,
    pub hash: BlobHash,
    pub size: u64,
    /// Permission bits; only the owner's execute bit is kept when laid out.
    pub mode: u32,
}

/// A job's folder: its files by relative path, sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub files: Vec<ManifestEntry>,
}

/// The most files one manifest lists.
pub const MAX_MANIFEST_FILES: usize = 100_000;
/// The longest relative path in a manifest, in bytes.
pub const MAX_PATH_BYTES: usize = 1024;
/// The largest manifest blob: [`MAX_MANIFEST_FILES`] entries fit.
pub const MAX_MANIFEST_BYTES: u64 = 64 << 20;

impl Manifest {
    /// Parses a manifest blob and checks every rule: sizes, paths, no path
    /// twice and no path both a file and a folder.
    pub fn parse(bytes: &[u8]) -> Result<Manifest, String> {
        if bytes.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(format!(
                "the manifest is {} bytes; the most is {MAX_MANIFEST_BYTES}",
                bytes.len()
            ));
        }
        let manifest: Manifest =
            serde_json::from_slice(bytes).map_err(|e| format!("the manifest is not valid: {e}"))?;
        manifest.check()?;
        Ok(manifest)
    }

    pub fn check(&self) -> Result<(), String> {
        if self.files.len() > MAX_MANIFEST_FILES {
            return Err(format!(
                "the manifest lists {} files; the most is {MAX_MANIFEST_FILES}: upload a smaller folder",
                self.files.len()
            ));
        }
        let mut paths = std::collections::HashSet::with_capacity(self.files.len());
        for f in &self.files {
            check_path(&f.path)?;
            if !paths.insert(f.path.as_str()) {
                return Err(format!("manifest path {:?} is listed twice", f.path));
            }
        }
        for f in &self.files {
            let mut folder = f.path.as_str();
            while let Some((parent, _)) = folder.rsplit_once('/') {
                if paths.contains(parent) {
                    return Err(format!(
                        "manifest path {parent:?} is a file and also a folder of {:?}",
                        f.path
                    ));
                }
                folder = parent;
            }
        }
        Ok(())
    }

    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        // A manifest of strings and numbers always serialises.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// A manifest path must stay inside the job's folder: relative, `/`-separated,
/// with no `.`, `..` or empty parts, no backslash, no NUL and no control
/// characters, at most [`MAX_PATH_BYTES`] long.
pub fn check_path(path: &str) -> Result<(), String> {
    let refuse = |why: &str| Err(format!("unsafe manifest path {path:?}: {why}"));
    if path.is_empty() {
        return refuse("it is empty");
    }
    if path.len() > MAX_PATH_BYTES {
        return refuse(&format!("it is longer than {MAX_PATH_BYTES} bytes"));
    }
    if path.starts_with('/') {
        return refuse("it is absolute; paths are relative to the job's folder");
    }
    if path.contains('\\') {
        return refuse("it has a backslash; use /");
    }
    if path.chars().any(char::is_control) {
        return refuse("it has a control character");
    }
    for part in path.split('/') {
        match part {
            "" => return refuse("it has an empty part (// or a trailing /)"),
            "." => return refuse("it has a . part"),
            ".." => return refuse("it leaves the job's folder (..)"),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str) -> ManifestEntry {
        ManifestEntry {
            path: path.into(),
            hash: BlobHash::of(path.as_bytes()),
            size: 1,
            mode: 0o644,
        }
    }

    #[test]
    fn hashes_round_trip_as_hex_and_refuse_anything_else() {
        let h = BlobHash::of(b"hello");
        assert_eq!(h.hex().len(), 64);
        assert_eq!(h.hex().parse::<BlobHash>(), Ok(h));
        assert_eq!(BlobHash::of_reader(&b"hello"[..]).ok(), Some((h, 5)));
        for bad in [
            "",
            "abc",
            &h.hex().to_uppercase(),
            &format!("{}g", &h.hex()[1..]),
        ] {
            assert!(bad.parse::<BlobHash>().is_err(), "{bad}");
        }
        let json = serde_json::to_string(&h).unwrap();
        assert_eq!(serde_json::from_str::<BlobHash>(&json).ok(), Some(h));
    }

    #[test]
    fn unsafe_paths_are_refused_with_the_path_named() {
        for bad in [
            "../x",
            "a/../../x",
            "/etc/passwd",
            "a//b",
            "a/",
            "./a",
            "a\\b",
            "",
            "a\u{0}b",
            "a\nb",
        ] {
            let err = check_path(bad).expect_err(bad);
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
        for good in ["scene.pov", "tex/brick.png", "a..b", ".hidden/x", "é/ü.inc"] {
            assert_eq!(check_path(good), Ok(()), "{good}");
        }
    }

    #[test]
    fn a_manifest_with_a_path_twice_or_a_file_over_a_folder_is_refused() {
        let twice = Manifest {
            files: vec![entry("a"), entry("a")],
        };
        assert!(twice.check().unwrap_err().contains("twice"));
        let over = Manifest {
            files: vec![entry("a"), entry("a-b"), entry("a/b")],
        };
        assert!(over.check().unwrap_err().contains("also a folder"));
        let fine = Manifest {
            files: vec![entry("a/b"), entry("a/c"), entry("b")],
        };
        assert_eq!(Manifest::parse(&fine.to_bytes()), Ok(fine));
        assert!(Manifest::parse(b"{\"files\": [{\"path\": \"../x\", \"hash\": \"00\"}]}").is_err());
    }
}
