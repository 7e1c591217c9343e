//! `drqueue watch-dir DIR`: the watch folder ([`drqueue_watch`]) run as a
//! client, submitting through the API as the caller (or `--watch-as`, for
//! wranglers). The master can run the same folder itself (`--watch-dir`).

use crate::error::{CliError, CliResult};
use drqueue_client::{Client, ClientError};
use drqueue_common::graph::Graph;
use drqueue_common::model::JobId;
use drqueue_common::Millis;
use drqueue_watch::{Farm, Options, Outcome, SubmitError, Watcher};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args)]
pub struct WatchDirArgs {
    /// The folder: job files (TOML, JSON) dropped here are submitted; other
    /// files by the rules in its .drqueue-rules.toml.
    dir: PathBuf,
    /// Who owns the jobs (default: you).
    #[arg(long)]
    watch_as: Option<String>,
    /// Milliseconds a file must stay unchanged before it is taken.
    #[arg(long, default_value_t = 2000)]
    settle_ms: u64,
    /// Take what is in the folder now, then exit (1 if the master could
    /// not be reached).
    #[arg(long)]
    once: bool,
}

struct Api<'a>(&'a Client);

fn submit_error(e: ClientError) -> SubmitError {
    match e {
        ClientError::Connect { .. }
        | ClientError::Timeout(_)
        | ClientError::Server { .. }
        | ClientError::Protocol(_) => SubmitError::Unavailable(e.to_string()),
        _ => SubmitError::Refused(e.to_string()),
    }
}

impl Farm for Api<'_> {
    fn submit(&mut self, graph: Graph) -> Result<Vec<JobId>, SubmitError> {
        let views = self.0.submit_graph(&graph).map_err(submit_error)?;
        Ok(views.into_iter().map(|v| v.id).collect())
    }

    fn submitted_since(
        &mut self,
        owner: &str,
        name: &str,
        since: Millis,
    ) -> Result<Vec<JobId>, SubmitError> {
        let rows = self
            .0
            .jobs_where(&drqueue_watch::since_filter(owner, name))
            .map_err(submit_error)?;
        Ok(drqueue_watch::submitted_since(rows, name, since))
    }
}

pub fn run(client: &Client, a: WatchDirArgs, json: bool) -> CliResult<ExitCode> {
    let opts = Options {
        dir: a.dir.clone(),
        owner: a.watch_as.clone().unwrap_or_default(),
        settle_ms: a.settle_ms,
    };
    let mut watcher = Watcher::open(opts, Api(client))
        .map_err(|e| CliError::Input(format!("watch-dir {}: {e}", a.dir.display())))?;
    if !json {
        eprintln!(
            "watching {} (job files are moved to submitted/ or rejected/ once taken)",
            a.dir.display()
        );
    }
    let mut failed = false;
    loop {
        let outcomes = watcher
            .turn(drqueue_common::now_millis())
            .map_err(CliError::Local)?;
        for o in &outcomes {
            say(o, json);
            failed |= matches!(o, Outcome::Waiting { .. });
        }
        if a.once && (watcher.idle() || failed) {
            return Ok(ExitCode::from(u8::from(failed)));
        }
        std::thread::sleep(Duration::from_millis(if a.once { 200 } else { 500 }));
    }
}

fn say(o: &Outcome, json: bool) {
    let (file, verdict, detail) = match o {
        Outcome::Submitted { file, jobs, .. } => (
            file,
            "submitted",
            jobs.iter()
                .map(|j| j.to_string())
                .collect::<Vec<_>>()
                .join(" "),
        ),
        Outcome::Rejected { file, error, .. } => (file, "rejected", error.clone()),
        Outcome::Waiting { file, why } => (file, "waiting", why.clone()),
    };
    if json {
        let jobs: Vec<String> = match o {
            Outcome::Submitted { jobs, .. } => jobs.iter().map(|j| j.to_string()).collect(),
            _ => Vec::new(),
        };
        println!(
            "{}",
            serde_json::json!({ "file": file, "outcome": verdict, "jobs": jobs, "detail": detail })
        );
    } else {
        println!("{file}: {verdict}: {detail}");
    }
}
