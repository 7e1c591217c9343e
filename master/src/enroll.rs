//! Which engines may join: the enrolled engines' keys, join tokens, and the
//! capped list of engines waiting to be accepted.
//!
//! Persisted as `enrolled.json` in the master's keys directory (beside
//! `master.key`), written atomically on every change. Pending engines live
//! only in memory: they retry every few seconds, so a restarted master sees
//! them again. Join tokens are stored as SHA-256 hashes, never in clear.

use drqueue_common::keys::{
    fingerprint, hex, random_bytes, sha256_hex, write_private, TOKEN_PREFIX,
};
use drqueue_common::model::EngineId;
use drqueue_common::Millis;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};

/// At most this many engines wait to be accepted; the oldest is dropped.
pub const MAX_PENDING: usize = 256;
/// Outstanding join tokens are capped too, so the file stays small.
const MAX_TOKENS: usize = 1024;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Enrolled {
    pub name: String,
    /// The engine's public key, hex.
    pub key: String,
    pub since_ms: Millis,
    /// How it was admitted: "loopback", "token" or "accepted".
    pub how: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct JoinToken {
    /// SHA-256 of the secret part, hex.
    hash: String,
    uses_left: u32,
    /// 0: never expires.
    expires_ms: Millis,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct File {
    engines: BTreeMap<EngineId, Enrolled>,
    tokens: Vec<JoinToken>,
}

/// An engine that proved a key nobody has accepted yet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    pub engine: EngineId,
    pub name: String,
    pub key: String,
    pub fingerprint: String,
    pub first_seen_ms: Millis,
    pub last_seen_ms: Millis,
    /// Set when the engine id is enrolled with another key (a reinstalled
    /// machine, or someone else claiming its id).
    pub key_changed: bool,
}

/// What the master does with a connection that finished its handshake.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Admit,
    Pending { fingerprint: String },
}

pub struct Enrollment {
    path: Option<PathBuf>,
    file: File,
    pending: VecDeque<Pending>,
    /// Engines reaching a loopback-only master are admitted on sight.
    auto: bool,
}

impl Enrollment {
    /// Loads `enrolled.json` from `dir` (none yet: nobody enrolled).
    pub fn load(dir: &Path, auto: bool) -> Result<Enrollment, String> {
        let path = dir.join("enrolled.json");
        let file = match std::fs::read(&path) {
            Ok(raw) => serde_json::from_slice(&raw).map_err(|e| {
                format!(
                    "{} does not parse ({e}): fix or restore it; moving it away forgets every enrolled engine",
                    path.display()
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => File::default(),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        Ok(Enrollment {
            path: Some(path),
            file,
            pending: VecDeque::new(),
            auto,
        })
    }

    /// An enrollment kept in memory only (tests).
    pub fn in_memory(auto: bool) -> Enrollment {
        Enrollment {
            path: None,
            file: File::default(),
            pending: VecDeque::new(),
            auto,
        }
    }

    pub fn auto_enrolls(&self) -> bool {
        self.auto
    }

    fn save(&self) -> Result<(), String> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let json = serde_json::to_vec_pretty(&self.file).map_err(|e| e.to_string())?;
        write_private(path, &json).map_err(|e| format!("cannot write {}: {e}", path.display()))
    }

    /// Decides on an engine that proved `key` and says it is `engine`.
    pub fn decide(
        &mut self,
        engine: &EngineId,
        name: &str,
        key: &[u8; 32],
        join_token: Option<&str>,
        now: Millis,
    ) -> Verdict {
        let key_hex = hex(key);
        let known = self.file.engines.get(engine).map(|e| e.key == key_hex);
        if known == Some(true) {
            self.pending.retain(|p| &p.engine != engine);
            return Verdict::Admit;
        }
        // A known id with another key is never admitted on sight: that is
        // how a stolen id would look. Someone has to accept the new key.
        if known.is_none() {
            let how = if join_token.is_some_and(|t| self.spend_token(t, now)) {
                Some("token")
            } else if self.auto {
                Some("loopback")
            } else {
                None
            };
            if let Some(how) = how {
                self.enroll(engine, name, &key_hex, how, now);
                return Verdict::Admit;
            }
        }
        let fp = fingerprint(key);
        if let Some(p) = self.pending.iter_mut().find(|p| &p.engine == engine) {
            p.last_seen_ms = now;
            p.name = name.to_string();
            p.key = key_hex;
            p.fingerprint = fp.clone();
        } else {
            if self.pending.len() >= MAX_PENDING {
                if let Some(old) = self.pending.pop_front() {
                    tracing::warn!(engine = %old.engine, name = %old.name, "pending list full ({MAX_PENDING}): dropping the oldest pending engine");
                }
            }
            tracing::info!(%engine, %name, fingerprint = %fp, key_changed = known.is_some(), "engine pending: accept it with `drqueue engine accept {name}`");
            self.pending.push_back(Pending {
                engine: engine.clone(),
                name: name.to_string(),
                key: key_hex,
                fingerprint: fp.clone(),
                first_seen_ms: now,
                last_seen_ms: now,
                key_changed: known.is_some(),
            });
        }
        Verdict::Pending { fingerprint: fp }
    }

    fn enroll(&mut self, engine: &EngineId, name: &str, key_hex: &str, how: &str, now: Millis) {
        self.file.engines.insert(
            engine.clone(),
            Enrolled {
                name: name.to_string(),
                key: key_hex.to_string(),
                since_ms: now,
                how: how.to_string(),
            },
        );
        self.pending.retain(|p| &p.engine != engine);
        match self.save() {
            Ok(()) => tracing::info!(%engine, %name, how, "engine enrolled"),
            // Admitted for this run; it will be asked to enroll again after
            // a restart rather than the master refusing to serve.
            Err(e) => tracing::error!(%engine, "engine enrolled, but not saved: {e}"),
        }
    }

    fn spend_token(&mut self, token: &str, now: Millis) -> bool {
        let Some(secret) = token.trim().rsplit('.').next() else {
            return false;
        };
        let hash = sha256_hex(secret.as_bytes());
        self.file
            .tokens
            .retain(|t| t.uses_left > 0 && (t.expires_ms == 0 || t.expires_ms > now));
        let Some(t) = self.file.tokens.iter_mut().find(|t| t.hash == hash) else {
            return false;
        };
        t.uses_left -= 1;
        true
    }

    /// Accepts the pending engine called `name` (or with that id).
    pub fn accept(&mut self, name: &str, now: Millis) -> Result<Pending, String> {
        let matches: Vec<usize> = self
            .pending
            .iter()
            .enumerate()
            .filter(|(_, p)| p.name == name || p.engine.as_str() == name)
            .map(|(i, _)| i)
            .collect();
        let i = match matches.as_slice() {
            [i] => *i,
            [] => {
                return Err(format!(
                    "no pending engine called {name:?}; `drqueue engines` lists pending ones (it must have tried to connect since the master started)"
                ))
            }
            _ => {
                return Err(format!(
                    "{} pending engines are called {name:?}: accept one by its id",
                    matches.len()
                ))
            }
        };
        let p = self.pending[i].clone();
        self.enroll(&p.engine, &p.name, &p.key, "accepted", now);
        Ok(p)
    }

    /// Makes a join token good for `uses` enrollments until `expires_ms`
    /// (0: no expiry). It carries the master key's fingerprint.
    pub fn join_token(
        &mut self,
        master_public: &[u8; 32],
        uses: u32,
        expires_ms: Millis,
    ) -> Result<String, String> {
        if uses == 0 {
            return Err("uses: a token must be good for at least one engine".into());
        }
        if self.file.tokens.len() >= MAX_TOKENS {
            return Err(format!(
                "{MAX_TOKENS} join tokens are outstanding; let some expire or be used first"
            ));
        }
        let mut secret = [0u8; 16];
        random_bytes(&mut secret)?;
        let secret = hex(&secret);
        self.file.tokens.push(JoinToken {
            hash: sha256_hex(secret.as_bytes()),
            uses_left: uses,
            expires_ms,
        });
        self.save()?;
        let fp = fingerprint(master_public).replace(':', "");
        Ok(format!("{TOKEN_PREFIX}.{fp}.{secret}"))
    }

    pub fn pending(&self) -> Vec<Pending> {
        self.pending.iter().cloned().collect()
    }

    pub fn is_enrolled(&self, engine: &EngineId) -> bool {
        self.file.engines.contains_key(engine)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use drqueue_common::keys::token_fingerprint;

    fn id(s: &str) -> EngineId {
        EngineId::from(s)
    }

    #[test]
    fn loopback_admits_on_sight_but_not_a_changed_key() {
        let mut e = Enrollment::in_memory(true);
        assert_eq!(e.decide(&id("a"), "n", &[1; 32], None, 1), Verdict::Admit);
        assert_eq!(e.decide(&id("a"), "n", &[1; 32], None, 2), Verdict::Admit);
        let v = e.decide(&id("a"), "n", &[2; 32], None, 3);
        assert!(matches!(v, Verdict::Pending { .. }));
        assert!(e.pending()[0].key_changed);
        e.accept("n", 4).unwrap();
        assert_eq!(e.decide(&id("a"), "n", &[2; 32], None, 5), Verdict::Admit);
        assert!(matches!(
            e.decide(&id("a"), "n", &[1; 32], None, 6),
            Verdict::Pending { .. }
        ));
    }

    #[test]
    fn without_auto_an_engine_waits_until_accepted() {
        let mut e = Enrollment::in_memory(false);
        assert!(matches!(
            e.decide(&id("a"), "n1", &[1; 32], None, 1),
            Verdict::Pending { .. }
        ));
        assert_eq!(e.pending().len(), 1);
        assert!(e.accept("nope", 2).is_err());
        e.accept("n1", 2).unwrap();
        assert!(e.pending().is_empty());
        assert_eq!(e.decide(&id("a"), "n1", &[1; 32], None, 3), Verdict::Admit);
    }

    #[test]
    fn join_tokens_are_spent_and_expire() {
        let mut e = Enrollment::in_memory(false);
        let t = e.join_token(&[9; 32], 1, 100).unwrap();
        assert_eq!(
            token_fingerprint(&t).unwrap(),
            fingerprint(&[9; 32]),
            "the token names the master's key"
        );
        assert_eq!(
            e.decide(&id("a"), "a", &[1; 32], Some(&t), 1),
            Verdict::Admit
        );
        assert!(matches!(
            e.decide(&id("b"), "b", &[2; 32], Some(&t), 2),
            Verdict::Pending { .. }
        ));
        let t2 = e.join_token(&[9; 32], 5, 100).unwrap();
        assert!(matches!(
            e.decide(&id("c"), "c", &[3; 32], Some(&t2), 101),
            Verdict::Pending { .. }
        ));
        assert!(e.join_token(&[9; 32], 0, 0).is_err());
        assert!(token_fingerprint("DRQ1.zz.secret").is_err());
    }

    #[test]
    fn the_pending_list_is_capped() {
        let mut e = Enrollment::in_memory(false);
        for i in 0..MAX_PENDING + 10 {
            e.decide(&id(&format!("e{i}")), "x", &[1; 32], None, i as u64);
        }
        let p = e.pending();
        assert_eq!(p.len(), MAX_PENDING);
        assert_eq!(p[0].engine, id("e10"), "the oldest were dropped");
    }

    #[test]
    fn enrollment_survives_a_reload() {
        let dir = std::env::temp_dir().join(format!("drq-enroll-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut e = Enrollment::load(&dir, false).unwrap();
        let t = e.join_token(&[9; 32], 2, 0).unwrap();
        e.decide(&id("a"), "a", &[1; 32], None, 1);
        e.accept("a", 2).unwrap();
        let mut again = Enrollment::load(&dir, false).unwrap();
        assert!(again.is_enrolled(&id("a")));
        assert_eq!(
            again.decide(&id("b"), "b", &[2; 32], Some(&t), 3),
            Verdict::Admit
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
