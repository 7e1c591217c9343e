//! Which jobs a job command acts on: ids and ranges (`cancel 9 11 15`,
//! `delete 5-9`), which act at once, or filters (`--owner`, `--status`,
//! `--name`, `--all`), which ask first on a terminal and want `--yes`
//! without one.

use crate::error::{CliError, CliResult};
use drqueue_client::Client;
use drqueue_common::listing::JobFilter;
use drqueue_common::model::{JobId, JobStatus};
use std::io::{BufRead, IsTerminal, Write};

/// The most jobs one range may name: a typo (`1-100000000`) is refused.
const MAX_RANGE: u64 = 100_000;

#[derive(clap::Args)]
pub struct JobSelection {
    /// Job ids and ranges: `9 11 15`, `5-9`.
    #[arg(value_name = "JOB")]
    jobs: Vec<String>,
    /// Every job of this user.
    #[arg(long)]
    owner: Option<String>,
    /// Every job in this status: waiting, queued, running, paused, done,
    /// failed or cancelled.
    #[arg(long)]
    status: Option<JobStatus>,
    /// Every job whose name matches this glob (`shot_*`).
    #[arg(long)]
    name: Option<String>,
    /// Every job on the farm (with the other filters: every job they match).
    #[arg(long)]
    all: bool,
    /// Act on what the filters match without asking.
    #[arg(long, short)]
    yes: bool,
}

impl JobSelection {
    fn filtered(&self) -> bool {
        self.owner.is_some() || self.status.is_some() || self.name.is_some() || self.all
    }

    /// The ids given (no filters): for commands that act on one job.
    pub fn ids(&self) -> CliResult<Vec<JobId>> {
        if self.filtered() {
            return Err(CliError::Input(
                "name the job by its id; filters (--owner, --status, --name, --all) do not go with --tasks".into(),
            ));
        }
        let mut ids = Vec::new();
        for arg in &self.jobs {
            ids.extend(parse_ids(arg)?);
        }
        Ok(ids)
    }

    /// The jobs to act on, in the order given (ids) or oldest first
    /// (filters), having asked when a filter chose them.
    pub fn resolve(&self, client: &Client, verb: &str) -> CliResult<Vec<JobId>> {
        if !self.jobs.is_empty() {
            if self.filtered() {
                return Err(CliError::Input(
                    "give job ids or filters (--owner, --status, --name, --all), not both".into(),
                ));
            }
            let mut ids = Vec::new();
            for arg in &self.jobs {
                ids.extend(parse_ids(arg)?);
            }
            return Ok(ids);
        }
        if !self.filtered() {
            return Err(CliError::Input(format!(
                "which jobs? name them (`drqueue {verb} 9 11 5-9`) or filter (--owner, --status, --name, --all)"
            )));
        }
        let filter = JobFilter {
            status: self.status,
            owner: self.owner.clone(),
            name: self.name.clone(),
            order: drqueue_common::listing::Order::Oldest,
            ..JobFilter::default()
        };
        let ids: Vec<JobId> = client.jobs_where(&filter)?.iter().map(|j| j.id).collect();
        if ids.is_empty() || self.yes {
            return Ok(ids);
        }
        if !std::io::stdin().is_terminal() {
            return Err(CliError::Input(format!(
                "the filters match {} job(s); add --yes to {verb} them without a terminal to ask on",
                ids.len()
            )));
        }
        if confirm(&format!("{verb} {}?", listed(&ids))) {
            Ok(ids)
        } else {
            Err(CliError::Local("nothing done".into()))
        }
    }
}

/// `12` or `5-9`.
fn parse_ids(arg: &str) -> CliResult<Vec<JobId>> {
    let bad = || {
        CliError::Input(format!(
            "{arg:?} is not a job id or a range of them (12, 5-9)"
        ))
    };
    let Some((a, b)) = arg.split_once('-') else {
        return Ok(vec![JobId(arg.parse().map_err(|_| bad())?)]);
    };
    let (a, b): (u64, u64) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
    if b < a || b - a >= MAX_RANGE {
        return Err(CliError::Input(format!(
            "{arg:?}: a range goes up, and names at most {MAX_RANGE} jobs"
        )));
    }
    Ok((a..=b).map(JobId).collect())
}

/// "3 jobs (4, 7, 9)", eliding a long list.
fn listed(ids: &[JobId]) -> String {
    let shown: Vec<String> = ids.iter().take(10).map(|i| i.to_string()).collect();
    let more = if ids.len() > 10 { ", …" } else { "" };
    format!("{} job(s) ({}{more})", ids.len(), shown.join(", "))
}

fn confirm(question: &str) -> bool {
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    matches!(answer.trim(), "y" | "Y" | "yes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_ranges_parse() {
        assert_eq!(parse_ids("12").unwrap(), vec![JobId(12)]);
        assert_eq!(
            parse_ids("5-7").unwrap(),
            vec![JobId(5), JobId(6), JobId(7)]
        );
        for bad in ["x", "7-5", "1-", "1-1000000", "-3"] {
            assert!(parse_ids(bad).is_err(), "{bad}");
        }
        assert_eq!(listed(&[JobId(1), JobId(2)]), "2 job(s) (1, 2)");
    }
}
