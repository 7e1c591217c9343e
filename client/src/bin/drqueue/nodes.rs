//! `drqueue nodes scan`: hosts that answer on a port (SSH's by default),
//! to find render nodes before `engine deploy` ([`drqueue_client::scan`]).

use crate::error::{CliError, CliResult};
use crate::output::Output;
use clap::Subcommand;
use drqueue_client::scan;
use std::io::IsTerminal;
use std::time::Duration;

#[derive(Subcommand)]
pub enum NodesCmd {
    /// List the hosts of RANGE that accept a TCP connection on --port, with
    /// the banner each sends (SSH servers send theirs at once). RANGE is
    /// A.B.C.D, A.B.C.D-A.B.C.E, A.B.C.D-E or a CIDR block (at most a /16).
    Scan {
        range: String,
        #[arg(long, default_value_t = 22)]
        port: u16,
        /// How long a connect, and then the banner, may take.
        #[arg(long, default_value = "1000")]
        timeout_ms: u64,
        /// Connects in flight at once.
        #[arg(long, default_value_t = 256)]
        concurrency: usize,
    },
}

pub fn run(action: NodesCmd, out: &dyn Output) -> CliResult<()> {
    let NodesCmd::Scan {
        range,
        port,
        timeout_ms,
        concurrency,
    } = action;
    let addrs = scan::parse_range(&range).map_err(CliError::Input)?;
    // Progress on a terminal only, a line rewritten in place.
    let shown = std::io::stderr().is_terminal() && !out.is_json();
    let mut progress = |done: usize, total: usize| {
        if shown && (done.is_multiple_of(64) || done == total) {
            eprint!("\rscanned {done} of {total}");
            if done == total {
                eprintln!();
            }
        }
    };
    let open = scan::scan(
        &addrs,
        port,
        Duration::from_millis(timeout_ms.max(1)),
        concurrency,
        &mut progress,
    )
    .map_err(|e| CliError::Local(format!("cannot scan: {e}")))?;
    let mut said = format!(
        "{} of {} addresses accept connections on port {port}",
        open.len(),
        addrs.len()
    );
    for h in &open {
        said.push_str(&format!(
            "\n{:<15}  {}",
            h.host,
            h.banner.as_deref().unwrap_or("(no banner)")
        ));
    }
    out.done(
        &serde_json::to_value(&open).map_err(|e| CliError::Local(e.to_string()))?,
        &said,
    )
}
