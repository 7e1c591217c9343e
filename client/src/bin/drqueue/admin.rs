//! Farm-wide settings and listings: pools and limits.

use crate::error::CliResult;
use crate::output::Output;
use clap::Subcommand;
use drqueue_client::Client;

#[derive(Subcommand)]
pub enum LimitCmd {
    /// Set NAME to COUNT tokens (jobs name it with --limit NAME).
    Set { name: String, count: u32 },
}

pub fn pools(client: &Client, out: &dyn Output) -> CliResult<()> {
    out.pools(&client.pools()?)
}

pub fn limits(client: &Client, out: &dyn Output) -> CliResult<()> {
    out.limits(&client.limits()?)
}

pub fn limit(client: &Client, cmd: LimitCmd, out: &dyn Output) -> CliResult<()> {
    match cmd {
        LimitCmd::Set { name, count } => out.limit_set(&client.set_limit(&name, count)?),
    }
}
