//! `drqueue usage`: CPU-hours, wall-hours, tasks and failures by owner,
//! pool, job or day, from the master's usage records (kept when jobs are
//! deleted or cleaned).

use crate::error::{CliError, CliResult};
use crate::output::Output;
use crate::table::{Align, Cell, Table};
use drqueue_client::Client;
use drqueue_common::usage::{UsageBy, UsageQuery, UsageReport, UsageRow};

#[derive(clap::Args)]
pub struct UsageArgs {
    /// Group by owner, pool, job or day (UTC).
    #[arg(long, default_value = "owner", value_parser = parse_by)]
    by: UsageBy,
    /// Only attempts that ended since then: a duration back (`30m`, `2h`,
    /// `7d`) or an RFC 3339 time (`2026-12-01T00:00:00Z`).
    #[arg(long)]
    since: Option<String>,
    /// Print CSV (a header, a line per group) for a spreadsheet.
    #[arg(long, conflicts_with = "json")]
    csv: bool,
}

fn parse_by(s: &str) -> Result<UsageBy, String> {
    s.parse()
}

pub fn usage(client: &Client, a: UsageArgs, out: &dyn Output) -> CliResult<()> {
    let since_ms = a
        .since
        .as_deref()
        .map(crate::users::parse_since)
        .transpose()?;
    let report = client.usage(&UsageQuery { by: a.by, since_ms })?;
    if a.csv {
        print!("{}", report.to_csv());
        return Ok(());
    }
    if out.is_json() {
        let json = serde_json::to_value(&report).map_err(|e| CliError::Input(e.to_string()))?;
        return out.done(&json, "");
    }
    table(&report).print();
    Ok(())
}

fn table(report: &UsageReport) -> Table {
    let mut t = Table::new(&[
        (report.by.as_str(), Align::Left),
        ("CPU-HOURS", Align::Right),
        ("WALL-HOURS", Align::Right),
        ("TASKS", Align::Right),
        ("FAILURES", Align::Right),
        ("PEAK RSS", Align::Right),
    ]);
    let row = |r: &UsageRow| -> Vec<Cell> {
        vec![
            Cell::from(&r.key),
            Cell::from(format!("{:.3}", r.cpu_hours)),
            Cell::from(format!("{:.3}", r.wall_hours)),
            Cell::from(r.tasks),
            Cell::from(r.failures),
            Cell::from(crate::table::memory_kb(r.peak_rss_kb)),
        ]
    };
    for r in &report.rows {
        t.row(row(r));
    }
    t.row(row(&report.total));
    t
}
