//! The farm's users, in memory: who a bearer token belongs to, and the
//! changes an admin makes (each returns the record to store).
//!
//! Tokens are kept as SHA-256 hashes only; a token is shown once, when it is
//! made. Tokens from `--token-file` act as the built-in user `admin` and are
//! never stored. A directory with no users at all is the single-machine
//! farm: the HTTP layer then treats loopback callers as [`LOCAL_USER`].

use drqueue_common::keys::{hex, random_bytes, sha256_hex};
use drqueue_common::users::{check_user_name, NewToken, Role, TokenInfo, UserView};
use drqueue_common::Millis;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// Who every loopback caller is on a farm without users.
pub const LOCAL_USER: &str = "local";
/// Who a `--token-file` token (and the first admin) is.
pub const ADMIN_USER: &str = "admin";
/// A token starts with this, so a leaked one is recognisable in a scan.
pub const API_TOKEN_PREFIX: &str = "drqt_";
/// Tokens per user, and users per farm: a bound on what the store holds.
const MAX_TOKENS_PER_USER: usize = 32;
const MAX_USERS: usize = 10_000;
/// The token id shown for revoking: this many hex digits of its hash.
const TOKEN_ID_LEN: usize = 12;

/// A user as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    pub name: String,
    pub role: Role,
    pub tokens: Vec<TokenRecord>,
    pub created_ms: Millis,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// SHA-256 of the whole token, hex.
    pub sha256: String,
    pub created_ms: Millis,
}

impl TokenRecord {
    fn id(&self) -> &str {
        &self.sha256[..TOKEN_ID_LEN.min(self.sha256.len())]
    }
}

impl UserRecord {
    pub fn view(&self) -> UserView {
        UserView {
            name: self.name.clone(),
            role: self.role,
            tokens: self
                .tokens
                .iter()
                .map(|t| TokenInfo {
                    id: t.id().to_string(),
                    created_ms: t.created_ms,
                })
                .collect(),
            created_ms: self.created_ms,
        }
    }
}

/// Who made a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub role: Role,
}

/// What a change to the users did, for the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserChange {
    Put(UserRecord),
    Remove(String),
}

#[derive(Debug, Clone, Default)]
pub struct Directory {
    users: BTreeMap<String, UserRecord>,
    /// Token hash → user name.
    by_token: HashMap<String, String>,
    /// Hashes of `--token-file` tokens.
    file_tokens: Vec<String>,
}

impl Directory {
    pub fn new(stored: Vec<UserRecord>, file_tokens: &[String]) -> Directory {
        let mut d = Directory {
            file_tokens: file_tokens
                .iter()
                .map(|t| sha256_hex(t.as_bytes()))
                .collect(),
            ..Directory::default()
        };
        for u in stored {
            d.insert(u);
        }
        d
    }

    fn insert(&mut self, u: UserRecord) {
        for t in &u.tokens {
            self.by_token.insert(t.sha256.clone(), u.name.clone());
        }
        self.users.insert(u.name.clone(), u);
    }

    fn forget(&mut self, name: &str) -> Option<UserRecord> {
        let u = self.users.remove(name)?;
        for t in &u.tokens {
            self.by_token.remove(&t.sha256);
        }
        Some(u)
    }

    /// No users and no token file: the single-machine farm.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty() && self.file_tokens.is_empty()
    }

    /// Whether any user is stored (the token file's aside).
    pub fn has_stored_users(&self) -> bool {
        !self.users.is_empty()
    }

    /// The user a bearer token belongs to. Hashing first makes the lookup
    /// independent of how much of a guess matches.
    pub fn authenticate(&self, token: &str) -> Option<Caller> {
        let hash = sha256_hex(token.as_bytes());
        if self.file_tokens.contains(&hash) {
            return Some(Caller {
                name: ADMIN_USER.into(),
                role: Role::Admin,
            });
        }
        let u = self.users.get(self.by_token.get(&hash)?)?;
        Some(Caller {
            name: u.name.clone(),
            role: u.role,
        })
    }

    pub fn views(&self) -> Vec<UserView> {
        self.users.values().map(UserRecord::view).collect()
    }

    /// Adds a user with a first token.
    pub fn add(
        &mut self,
        name: &str,
        role: Role,
        now: Millis,
    ) -> Result<(UserChange, NewToken), String> {
        check_user_name(name)?;
        if name == LOCAL_USER {
            return Err(format!(
                "user name {LOCAL_USER:?} is the built-in user of a farm without users; pick another"
            ));
        }
        if self.users.contains_key(name) {
            return Err(format!("user {name:?} exists; `drqueue token create --user {name}` gives them another token"));
        }
        if self.is_empty() && role != Role::Admin {
            return Err(format!(
                "the farm's first user must be an admin, who can then add others: `drqueue user add {name} --role admin`"
            ));
        }
        if self.users.len() >= MAX_USERS {
            return Err(format!("the farm has {MAX_USERS} users, the most it keeps"));
        }
        self.insert(UserRecord {
            name: name.into(),
            role,
            tokens: Vec::new(),
            created_ms: now,
        });
        self.create_token(name, now)
    }

    /// Gives a user another token.
    pub fn create_token(
        &mut self,
        name: &str,
        now: Millis,
    ) -> Result<(UserChange, NewToken), String> {
        let mut u = self
            .users
            .get(name)
            .cloned()
            .ok_or_else(|| format!("no user {name:?}; `drqueue user list` shows them"))?;
        if u.tokens.len() >= MAX_TOKENS_PER_USER {
            return Err(format!(
                "user {name:?} has {MAX_TOKENS_PER_USER} tokens; revoke one first"
            ));
        }
        let token = new_token()?;
        let record = TokenRecord {
            sha256: sha256_hex(token.as_bytes()),
            created_ms: now,
        };
        let id = record.id().to_string();
        u.tokens.push(record);
        self.insert(u.clone());
        Ok((
            UserChange::Put(u),
            NewToken {
                user: name.into(),
                id,
                token,
            },
        ))
    }

    /// Revokes the token whose id (or whose hash's start, at least 8 hex
    /// digits) is `id`.
    pub fn revoke_token(&mut self, id: &str) -> Result<UserChange, String> {
        if id.len() < 8 {
            return Err(format!(
                "token id {id:?}: give at least 8 characters of the id `drqueue user list` shows"
            ));
        }
        let owners: Vec<&UserRecord> = self
            .users
            .values()
            .filter(|u| u.tokens.iter().any(|t| t.sha256.starts_with(id)))
            .collect();
        let mut u = match owners.as_slice() {
            [one] => (*one).clone(),
            [] => return Err(format!("no token {id:?}; `drqueue user list` shows them")),
            _ => return Err(format!("token id {id:?} is ambiguous; give more of it")),
        };
        self.forget(&u.name);
        u.tokens.retain(|t| !t.sha256.starts_with(id));
        self.insert(u.clone());
        Ok(UserChange::Put(u))
    }

    /// Removes a user and their tokens. The last admin stays, so the farm
    /// is never left without anyone who can manage it.
    pub fn remove(&mut self, name: &str) -> Result<UserChange, String> {
        let u = self
            .users
            .get(name)
            .ok_or_else(|| format!("no user {name:?}; `drqueue user list` shows them"))?;
        let admins = self
            .users
            .values()
            .filter(|u| u.role == Role::Admin)
            .count();
        if u.role == Role::Admin && admins == 1 && self.file_tokens.is_empty() {
            return Err(format!(
                "{name:?} is the farm's last admin; add another admin before removing them"
            ));
        }
        self.forget(name);
        Ok(UserChange::Remove(name.into()))
    }
}

/// A fresh API token: the prefix and 32 random bytes, hex.
fn new_token() -> Result<String, String> {
    let mut secret = [0u8; 32];
    random_bytes(&mut secret)?;
    Ok(format!("{API_TOKEN_PREFIX}{}", hex(&secret)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(d: &Directory, name: &str) -> UserRecord {
        d.users.get(name).cloned().unwrap()
    }

    #[test]
    fn a_token_names_its_user_until_revoked() {
        let mut d = Directory::default();
        d.add("root", Role::Admin, 1).unwrap();
        let (_, t) = d.add("alice", Role::Artist, 1).unwrap();
        assert!(t.token.starts_with(API_TOKEN_PREFIX));
        let alice = Caller {
            name: "alice".into(),
            role: Role::Artist,
        };
        assert_eq!(d.authenticate(&t.token), Some(alice));
        assert_eq!(d.authenticate("drqt_guess"), None);
        // Only hashes are kept.
        let rec = stored(&d, "alice");
        assert!(!format!("{rec:?}").contains(&t.token));
        d.revoke_token(&t.id).unwrap();
        assert_eq!(d.authenticate(&t.token), None);
        assert!(d.revoke_token(&t.id).is_err());
    }

    #[test]
    fn a_reloaded_directory_knows_the_same_tokens() {
        let mut d = Directory::new(vec![], &["file-token".to_string()]);
        let (change, t) = d.add("bob", Role::Wrangler, 1).unwrap();
        let UserChange::Put(rec) = change else {
            panic!("a new user is put")
        };
        let again = Directory::new(vec![rec], &[]);
        assert_eq!(
            again.authenticate(&t.token).map(|c| c.role),
            Some(Role::Wrangler)
        );
    }

    #[test]
    fn file_tokens_are_admins_and_not_users() {
        let d = Directory::new(vec![], &["s3cret".to_string()]);
        assert!(!d.is_empty());
        assert!(!d.has_stored_users());
        assert_eq!(d.authenticate("s3cret").map(|c| c.role), Some(Role::Admin));
        assert_eq!(d.authenticate("s3cre"), None);
    }

    #[test]
    fn names_are_checked_and_the_last_admin_stays() {
        let mut d = Directory::default();
        assert!(d
            .add("alice", Role::Artist, 1)
            .unwrap_err()
            .contains("first user"));
        assert!(d.add("local", Role::Admin, 1).is_err());
        assert!(d.add("bad name", Role::Admin, 1).is_err());
        d.add("root", Role::Admin, 1).unwrap();
        assert!(d.add("root", Role::Viewer, 1).is_err());
        assert!(d.remove("root").unwrap_err().contains("last admin"));
        d.add("second", Role::Admin, 1).unwrap();
        assert_eq!(d.remove("root"), Ok(UserChange::Remove("root".into())));
        assert!(d.remove("root").is_err());
    }

    #[test]
    fn a_short_or_shared_token_id_is_refused() {
        let mut d = Directory::default();
        d.add("a", Role::Admin, 1).unwrap();
        assert!(d.revoke_token("abc").unwrap_err().contains("at least 8"));
    }
}
