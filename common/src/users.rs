//! Who may do what on the farm: users, their roles and API tokens, and the
//! audit trail of every change, as the HTTP API and the CLI see them.

use crate::model::JobId;
use serde::{Deserialize, Serialize};

/// What a user may do. Each role may do everything the ones before it may.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads everything (when reads need a token at all).
    Viewer,
    /// Submits, and controls only their own jobs.
    Artist,
    /// Controls any job, engines, limits and enrollment; reads the audit.
    Wrangler,
    /// Manages users and tokens.
    Admin,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Viewer, Role::Artist, Role::Wrangler, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Artist => "artist",
            Role::Wrangler => "wrangler",
            Role::Admin => "admin",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown role {s:?}; use viewer, artist, wrangler or admin"))
    }
}

/// The longest user name, and what it may hold: names appear in tables,
/// logs and job owners, so they stay plain.
pub const MAX_USER_NAME: usize = 64;

/// Checks a user name: 1 to 64 of ASCII letters, digits, `.`, `_` and `-`,
/// starting with a letter or digit.
pub fn check_user_name(name: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty() || name.len() > MAX_USER_NAME {
        return Err(format!(
            "user name: must be 1 to {MAX_USER_NAME} characters (got {})",
            name.len()
        ));
    }
    if !name.chars().all(ok_char) || !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(format!(
            "user name {name:?}: use letters, digits, '.', '_' and '-', starting with a letter or digit"
        ));
    }
    Ok(())
}

/// One of a user's tokens, as listed: never the token itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TokenInfo {
    /// Names the token for `drqueue token revoke` (the start of its hash).
    pub id: String,
    pub created_ms: u64,
}

/// A user, as `drqueue user list` shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct UserView {
    pub name: String,
    pub role: Role,
    pub tokens: Vec<TokenInfo>,
    pub created_ms: u64,
}

/// A token just made: the only time the token itself is shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct NewToken {
    pub user: String,
    pub id: String,
    pub token: String,
}

/// `POST /api/users`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    pub name: String,
    pub role: Role,
}

/// Who the caller is: `GET /api/whoami`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct WhoAmI {
    pub user: String,
    pub role: Role,
}

/// One change made through the API, as the audit trail keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AuditEntry {
    /// Order of recording (the store assigns it; 0 before it is stored).
    #[serde(default)]
    pub seq: u64,
    pub at_ms: u64,
    /// The user who asked (`local` on a farm without users).
    pub user: String,
    /// The client's address.
    pub remote: String,
    /// `METHOD /path`.
    pub action: String,
    /// The job it concerned, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<JobId>,
    /// The HTTP status of the answer.
    pub status: u16,
    /// What was refused and why, or a short summary of what was done.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// Which audit entries to read, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<JobId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Entries at or after this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_ms: Option<u64>,
    /// At most this many (the API caps it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_by_what_they_may_do() {
        assert!(Role::Viewer < Role::Artist && Role::Artist < Role::Wrangler);
        assert!(Role::Wrangler < Role::Admin);
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>(), Ok(r));
        }
        assert!("root".parse::<Role>().unwrap_err().contains("wrangler"));
    }

    #[test]
    fn user_names_stay_plain() {
        assert!(check_user_name("alice").is_ok());
        assert!(check_user_name("render.daemon-2").is_ok());
        for bad in ["", "-x", "a b", "al\u{1b}[31mice", "é", &"a".repeat(65)] {
            assert!(check_user_name(bad).is_err(), "{bad:?} accepted");
        }
    }
}
