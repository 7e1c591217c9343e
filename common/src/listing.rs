//! Listings that cost what they return: a page of jobs or tasks at a time,
//! the filters `GET /api/jobs` takes, and the summary row a job listing
//! carries (the large fields stay in `GET /api/jobs/{id}`).
//!
//! A listing is a JSON array, as SPEC fixes it; while more remain the answer
//! carries `Link: <…?after=CURSOR…>; rel="next"`, which the client library
//! (and so the CLI and the Python module) follows.

use crate::model::{Counts, JobId, JobStatus};
use crate::Millis;
use serde::{Deserialize, Serialize};

/// Rows per page when a client names no `limit`, and the most it may name.
pub const DEFAULT_PAGE: usize = 1000;
pub const MAX_PAGE: usize = 10_000;

/// A job as `GET /api/jobs` lists it: SPEC's fields, bounded in size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct JobSummary {
    pub id: JobId,
    pub name: String,
    pub owner: String,
    pub status: JobStatus,
    pub priority: u32,
    pub pool: String,
    pub counts: Counts,
    pub tasks_total: u64,
    /// Why ready tasks are not running, in words (UTC); empty when nothing
    /// blocks.
    pub blocked: Vec<String>,
    pub submitted_ms: Millis,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_ms: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_ms: Option<Millis>,
    /// Percent done by frames (null before anything ran).
    #[serde(default)]
    pub progress: Option<f32>,
    /// When the job may end (null when unknown or ended).
    #[serde(default)]
    pub eta: Option<crate::views::Eta>,
}

/// Which end of the job list comes first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    #[default]
    Newest,
    Oldest,
}

/// The filters of `GET /api/jobs` (and `drqueue jobs`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobFilter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<JobStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// A glob on the name: `*` any run, `?` one character.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default)]
    pub order: Order,
}

impl JobFilter {
    pub fn matches(&self, status: JobStatus, owner: &str, pool: &str, name: &str) -> bool {
        self.status.is_none_or(|s| s == status)
            && self.owner.as_deref().is_none_or(|o| o == owner)
            && self.pool.as_deref().is_none_or(|p| p == pool)
            && self.name.as_deref().is_none_or(|g| glob_match(g, name))
    }

    /// The query string that asks for this filter (without paging).
    pub fn query(&self) -> Vec<(&'static str, String)> {
        let mut q = Vec::new();
        if let Some(s) = self.status {
            q.push(("status", s.to_string()));
        }
        if let Some(o) = &self.owner {
            q.push(("owner", o.clone()));
        }
        if let Some(p) = &self.pool {
            q.push(("pool", p.clone()));
        }
        if let Some(n) = &self.name {
            q.push(("name", n.clone()));
        }
        if self.order == Order::Oldest {
            q.push(("order", "oldest".into()));
        }
        q
    }
}

/// `*` matches any run of characters, `?` any one; everything else itself.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    // The classic two-pointer match with one backtrack point: linear in
    // practice, never exponential.
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// The cursor in a `Link: <…>; rel="next"` header, if there is one.
pub fn next_link(header: &str) -> Option<&str> {
    header.split(',').find_map(|part| {
        let (url, params) = part.trim().split_once(';')?;
        let is_next = params
            .split(';')
            .any(|p| p.trim().eq_ignore_ascii_case("rel=\"next\""));
        let url = url.trim().strip_prefix('<')?.strip_suffix('>')?;
        is_next.then_some(url)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_as_shells_do() {
        assert!(glob_match("shot_*", "shot_010"));
        assert!(glob_match("*_0?0", "shot_010"));
        assert!(glob_match("*", ""));
        assert!(!glob_match("shot_?", "shot_10"));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxbyy"));
        assert!(glob_match("exact", "exact") && !glob_match("exact", "exact2"));
    }

    #[test]
    fn the_next_link_is_found_among_others() {
        let h = r#"</api/jobs?after=5>; rel="prev", </api/jobs?limit=2&after=9>; rel="next""#;
        assert_eq!(next_link(h), Some("/api/jobs?limit=2&after=9"));
        assert_eq!(next_link(r#"</x>; rel="prev""#), None);
    }

    #[test]
    fn filters_combine() {
        let f = JobFilter {
            owner: Some("alice".into()),
            name: Some("shot*".into()),
            ..Default::default()
        };
        assert!(f.matches(JobStatus::Running, "alice", "default", "shot_1"));
        assert!(!f.matches(JobStatus::Running, "bob", "default", "shot_1"));
        assert!(!f.matches(JobStatus::Running, "alice", "default", "comp"));
    }
}
