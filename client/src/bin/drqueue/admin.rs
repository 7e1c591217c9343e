//! Farm-wide settings and listings: pools and limits.

use crate::error::CliResult;
use crate::output::Output;
use clap::Subcommand;
use drqueue_client::Client;

#[derive(Subcommand)]
pub enum LimitCmd {
    /// Set NAME to COUNT tokens (jobs name it with --limit NAME).
    Set { name: String, count: u32 },
    /// Show one limit: its count and the tokens in use.
    Show { name: String },
    /// Remove a limit: jobs naming it are no longer held back by it.
    Delete { name: String },
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
        LimitCmd::Show { name } => out.limits(&[client.limit(&name)?]),
        LimitCmd::Delete { name } => {
            client.delete_limit(&name)?;
            out.done(
                &serde_json::json!({ "deleted": name }),
                &format!("limit {name} deleted"),
            )
        }
    }
}
