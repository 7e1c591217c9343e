//! Key pairs and how people see them: X25519 static keys in files only
//! their owner reads, fingerprints to compare by eye, and the join-token
//! format that carries the master's fingerprint to a new engine.

use sha2::{Digest, Sha256};
use std::path::Path;

/// A static key pair: an engine's or the master's identity.
#[derive(Clone)]
pub struct KeyPair {
    pub(crate) private: [u8; 32],
    pub public: [u8; 32],
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyPair({})", fingerprint(&self.public))
    }
}

const KEY_FILE_TAG: &str = "drqueue-x25519-v1";

impl KeyPair {
    pub fn generate() -> Result<KeyPair, String> {
        let kp = snow::Builder::new(crate::session::params())
            .generate_keypair()
            .map_err(|e| format!("cannot generate a key pair: {e}"))?;
        let mut pair = KeyPair {
            private: [0; 32],
            public: [0; 32],
        };
        pair.private.copy_from_slice(&kp.private);
        pair.public.copy_from_slice(&kp.public);
        Ok(pair)
    }

    /// Loads the key pair at `path`, or makes one there (mode 0600) on first
    /// use.
    pub fn load_or_create(path: &Path) -> Result<KeyPair, String> {
        match std::fs::read_to_string(path) {
            Ok(text) => KeyPair::parse(&text).map_err(|e| {
                format!(
                    "{}: {e}; move the file away to make a new key (the engine must then be enrolled afresh)",
                    path.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let pair = KeyPair::generate()?;
                let text = format!(
                    "{KEY_FILE_TAG}\n{}\n{}\n",
                    hex(&pair.private),
                    hex(&pair.public)
                );
                write_private(path, text.as_bytes())
                    .map_err(|e| format!("cannot write the key {}: {e}", path.display()))?;
                Ok(pair)
            }
            Err(e) => Err(format!("cannot read the key {}: {e}", path.display())),
        }
    }

    fn parse(text: &str) -> Result<KeyPair, String> {
        let mut lines = text.lines().map(str::trim);
        if lines.next() != Some(KEY_FILE_TAG) {
            return Err(format!("not a DrQueue key file (no {KEY_FILE_TAG} line)"));
        }
        let private = lines
            .next()
            .and_then(unhex32)
            .ok_or("bad private key line")?;
        let public = lines
            .next()
            .and_then(unhex32)
            .ok_or("bad public key line")?;
        Ok(KeyPair { private, public })
    }

    pub fn fingerprint(&self) -> String {
        fingerprint(&self.public)
    }
}

/// Writes a file only its owner can read, atomically.
pub fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// How a public key is shown to people: 32 hex digits of its SHA-256, in
/// groups of four so two can be compared by eye.
pub fn fingerprint(public: &[u8]) -> String {
    let digest = Sha256::digest(public);
    let h = hex(&digest[..16]);
    h.as_bytes()
        .chunks(4)
        .map(|c| std::str::from_utf8(c).unwrap_or(""))
        .collect::<Vec<_>>()
        .join(":")
}

/// What a join token starts with: `DRQ1.<master fingerprint>.<secret>`.
pub const TOKEN_PREFIX: &str = "DRQ1";

/// The master fingerprint a join token carries, in the usual grouped form.
pub fn token_fingerprint(token: &str) -> Result<String, String> {
    let mut parts = token.trim().split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(TOKEN_PREFIX), Some(fp), Some(secret), None)
            if fp.len() == 32 && unhex(fp).is_some() && !secret.is_empty() =>
        {
            Ok(fp
                .as_bytes()
                .chunks(4)
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect::<Vec<_>>()
                .join(":"))
        }
        _ => Err(format!(
            "join token is not of the form {TOKEN_PREFIX}.<fingerprint>.<secret>: copy it whole from `drqueue engine join-token`"
        )),
    }
}

/// SHA-256 of `data`, hex: how secrets such as join tokens are stored.
/// Fills `buf` from the kernel's random source.
pub fn random_bytes(buf: &mut [u8]) -> Result<(), String> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(buf))
        .map_err(|e| format!("cannot read /dev/urandom: {e}"))
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex32(s: &str) -> Option<[u8; 32]> {
    let bytes = unhex(s)?;
    bytes.try_into().ok()
}

pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() & 1 != 0 || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files_round_trip_and_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("drq-key-{}", std::process::id()));
        let path = dir.join("engine.key");
        let _ = std::fs::remove_file(&path);
        let a = KeyPair::load_or_create(&path).unwrap();
        let b = KeyPair::load_or_create(&path).unwrap();
        assert_eq!(a.public, b.public);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::write(&path, "junk").unwrap();
        assert!(KeyPair::load_or_create(&path)
            .unwrap_err()
            .contains("not a DrQueue key"));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn fingerprints_read_in_groups() {
        let f = fingerprint(&[0u8; 32]);
        assert_eq!(f.len(), 32 + 7);
        assert_eq!(f.matches(':').count(), 7);
    }
}
