//! Usage: what each attempt cost, kept apart from jobs so that deleting or
//! cleaning a job never rewrites history, and the report built from it
//! (`drqueue usage`, `GET /api/usage`).

use crate::model::{EngineId, JobId};
use crate::Millis;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One ended attempt's cost, as its engine reported it. Written once per
/// attempt (a result delivered again replaces the same record).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRecord {
    pub job: JobId,
    pub task: u32,
    pub attempt: u32,
    pub job_name: String,
    pub owner: String,
    pub pool: String,
    pub engine: EngineId,
    pub ended_ms: Millis,
    pub cpu_ms: u64,
    pub wall_ms: u64,
    pub peak_rss_kb: u64,
    /// The attempt succeeded.
    pub ok: bool,
}

/// How a report groups records.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum UsageBy {
    #[default]
    Owner,
    Pool,
    Job,
    /// The UTC day the attempt ended.
    Day,
}

impl UsageBy {
    pub fn as_str(self) -> &'static str {
        match self {
            UsageBy::Owner => "owner",
            UsageBy::Pool => "pool",
            UsageBy::Job => "job",
            UsageBy::Day => "day",
        }
    }

    /// The group a record falls in.
    fn key(self, r: &UsageRecord) -> String {
        match self {
            UsageBy::Owner => r.owner.clone(),
            UsageBy::Pool => r.pool.clone(),
            UsageBy::Job => format!("{} {}", r.job, r.job_name),
            UsageBy::Day => chrono::DateTime::from_timestamp_millis(r.ended_ms as i64)
                .map_or_else(|| "?".into(), |t| t.format("%Y-%m-%d").to_string()),
        }
    }
}

impl std::str::FromStr for UsageBy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "owner" => Ok(UsageBy::Owner),
            "pool" => Ok(UsageBy::Pool),
            "job" => Ok(UsageBy::Job),
            "day" => Ok(UsageBy::Day),
            _ => Err(format!("by: {s:?} is not one of owner, pool, job, day")),
        }
    }
}

/// `GET /api/usage`'s query.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct UsageQuery {
    #[serde(default)]
    pub by: UsageBy,
    /// Only attempts that ended at or after this time (ms since the epoch).
    #[serde(default)]
    pub since_ms: Option<Millis>,
}

/// One group's totals. Times are kept in milliseconds (exact sums); the
/// hours are for reading.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct UsageRow {
    pub key: String,
    pub cpu_ms: u64,
    pub wall_ms: u64,
    pub cpu_hours: f64,
    pub wall_hours: f64,
    /// Attempts that succeeded: tasks rendered.
    pub tasks: u64,
    /// Attempts that failed (a task retried twice counts twice).
    pub failures: u64,
    /// The largest peak RSS of any attempt in the group.
    pub peak_rss_kb: u64,
}

impl UsageRow {
    fn add(&mut self, r: &UsageRecord) {
        self.cpu_ms += r.cpu_ms;
        self.wall_ms += r.wall_ms;
        if r.ok {
            self.tasks += 1;
        } else {
            self.failures += 1;
        }
        self.peak_rss_kb = self.peak_rss_kb.max(r.peak_rss_kb);
        self.cpu_hours = self.cpu_ms as f64 / 3_600_000.0;
        self.wall_hours = self.wall_ms as f64 / 3_600_000.0;
    }
}

/// The report: a row per group, in key order, and the total.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct UsageReport {
    pub by: UsageBy,
    pub since_ms: Option<Millis>,
    pub rows: Vec<UsageRow>,
    pub total: UsageRow,
}

/// Sums records into groups as they stream by (a store's rows are never
/// all held at once).
#[derive(Debug, Default)]
pub struct UsageTally {
    by: UsageBy,
    since_ms: Option<Millis>,
    groups: BTreeMap<String, UsageRow>,
    total: UsageRow,
}

impl UsageTally {
    pub fn new(by: UsageBy, since_ms: Option<Millis>) -> UsageTally {
        UsageTally {
            by,
            since_ms,
            total: UsageRow {
                key: "total".into(),
                ..UsageRow::default()
            },
            ..UsageTally::default()
        }
    }

    pub fn add(&mut self, r: &UsageRecord) {
        if self.since_ms.is_some_and(|s| r.ended_ms < s) {
            return;
        }
        let key = self.by.key(r);
        self.groups
            .entry(key.clone())
            .or_insert_with(|| UsageRow {
                key,
                ..UsageRow::default()
            })
            .add(r);
        self.total.add(r);
    }

    pub fn report(self) -> UsageReport {
        UsageReport {
            by: self.by,
            since_ms: self.since_ms,
            rows: self.groups.into_values().collect(),
            total: self.total,
        }
    }
}

impl UsageReport {
    /// The rows as CSV (a header, then one line per group; no total, which
    /// a spreadsheet sums itself).
    pub fn to_csv(&self) -> String {
        let mut out = format!(
            "{},cpu_hours,wall_hours,tasks,failures,cpu_seconds,wall_seconds,peak_rss_kb\n",
            self.by.as_str()
        );
        for r in &self.rows {
            out.push_str(&format!(
                "{},{:.6},{:.6},{},{},{:.3},{:.3},{}\n",
                csv_field(&r.key),
                r.cpu_hours,
                r.wall_hours,
                r.tasks,
                r.failures,
                r.cpu_ms as f64 / 1000.0,
                r.wall_ms as f64 / 1000.0,
                r.peak_rss_kb
            ));
        }
        out
    }
}

/// A field quoted when it holds a comma, a quote or a line break.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(job: u64, owner: &str, ended_ms: Millis, cpu_ms: u64, ok: bool) -> UsageRecord {
        UsageRecord {
            job: JobId(job),
            task: 0,
            attempt: 1,
            job_name: format!("j{job}"),
            owner: owner.into(),
            pool: "default".into(),
            engine: EngineId::from("e"),
            ended_ms,
            cpu_ms,
            wall_ms: cpu_ms * 2,
            peak_rss_kb: cpu_ms,
            ok,
        }
    }

    #[test]
    fn groups_sum_and_the_total_is_every_group() {
        let mut t = UsageTally::new(UsageBy::Owner, None);
        for r in [
            rec(1, "ann", 0, 3_600_000, true),
            rec(1, "ann", 0, 1_800_000, false),
            rec(2, "bob", 0, 100, true),
        ] {
            t.add(&r);
        }
        let r = t.report();
        assert_eq!(r.rows.len(), 2);
        assert_eq!(r.rows[0].key, "ann");
        assert_eq!(r.rows[0].cpu_hours, 1.5);
        assert_eq!(r.rows[0].wall_hours, 3.0);
        assert_eq!((r.rows[0].tasks, r.rows[0].failures), (1, 1));
        assert_eq!(r.rows[0].peak_rss_kb, 3_600_000);
        assert_eq!(r.total.cpu_ms, 5_400_100);
        assert_eq!((r.total.tasks, r.total.failures), (2, 1));
    }

    #[test]
    fn since_leaves_older_attempts_out_and_days_are_utc() {
        let day = 86_400_000;
        let mut t = UsageTally::new(UsageBy::Day, Some(day));
        for r in [rec(1, "a", day - 1, 5, true), rec(1, "a", day + 5, 7, true)] {
            t.add(&r);
        }
        let r = t.report();
        assert_eq!(r.rows.len(), 1);
        assert_eq!(r.rows[0].key, "1970-01-02");
        assert_eq!(r.total.cpu_ms, 7);
    }

    #[test]
    fn csv_quotes_what_needs_it() {
        let mut t = UsageTally::new(UsageBy::Job, None);
        let mut r = rec(4, "a", 0, 1500, true);
        r.job_name = "shot \"1\", v2".into();
        t.add(&r);
        let csv = t.report().to_csv();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(
            lines[0],
            "job,cpu_hours,wall_hours,tasks,failures,cpu_seconds,wall_seconds,peak_rss_kb"
        );
        assert_eq!(
            lines[1],
            "\"4 shot \"\"1\"\", v2\",0.000417,0.000833,1,0,1.500,3.000,1500"
        );
    }

    #[test]
    fn by_parses_its_four_names_and_names_the_field_otherwise() {
        for by in [UsageBy::Owner, UsageBy::Pool, UsageBy::Job, UsageBy::Day] {
            assert_eq!(by.as_str().parse::<UsageBy>(), Ok(by));
        }
        assert!("host".parse::<UsageBy>().unwrap_err().contains("by:"));
    }
}
