//! Who may use the farm: `user`, `token`, `audit` and `whoami`.

use crate::error::{CliError, CliResult};
use crate::output::Output;
use clap::Subcommand;
use drqueue_client::Client;
use drqueue_common::model::JobId;
use drqueue_common::users::{AuditQuery, Role};

#[derive(Subcommand)]
pub enum UserCmd {
    /// Add a user; prints their first API token alone on stdout.
    Add {
        name: String,
        /// viewer, artist, wrangler or admin.
        #[arg(long)]
        role: Role,
    },
    /// List users, their roles and token ids.
    List,
    /// Remove a user and all their tokens.
    Remove { name: String },
}

#[derive(Subcommand)]
pub enum TokenCmd {
    /// Make another API token; prints it alone on stdout.
    Create {
        /// Whose token (default: yours).
        #[arg(long)]
        user: Option<String>,
    },
    /// Revoke a token by the id `drqueue user list` shows.
    Revoke { id: String },
}

pub fn user(client: &Client, cmd: UserCmd, out: &dyn Output) -> CliResult<()> {
    match cmd {
        UserCmd::Add { name, role } => out.new_token(&client.add_user(&name, role)?),
        UserCmd::List => out.users(&client.users()?),
        UserCmd::Remove { name } => {
            client.remove_user(&name)?;
            out.done(
                &serde_json::json!({ "removed": name }),
                &format!("user {name} removed"),
            )
        }
    }
}

pub fn token(client: &Client, cmd: TokenCmd, out: &dyn Output) -> CliResult<()> {
    match cmd {
        TokenCmd::Create { user } => {
            let user = match user {
                Some(u) => u,
                None => client.whoami()?.user,
            };
            out.new_token(&client.create_token(&user)?)
        }
        TokenCmd::Revoke { id } => {
            client.revoke_token(&id)?;
            out.done(
                &serde_json::json!({ "revoked": id }),
                &format!("token {id} revoked"),
            )
        }
    }
}

#[derive(clap::Args)]
pub struct AuditArgs {
    /// Only changes to this job.
    #[arg(long)]
    job: Option<JobId>,
    /// Only changes by this user.
    #[arg(long)]
    user: Option<String>,
    /// Only changes since then: a duration back (`30m`, `2h`, `1d`) or an
    /// RFC 3339 time (`2026-12-01T09:00:00+01:00`).
    #[arg(long)]
    since: Option<String>,
    /// At most this many entries, newest first (the master caps it at 1000).
    #[arg(long, default_value_t = 100)]
    limit: u32,
}

pub fn audit(client: &Client, a: AuditArgs, out: &dyn Output) -> CliResult<()> {
    let since_ms = a.since.as_deref().map(parse_since).transpose()?;
    let q = AuditQuery {
        job: a.job,
        user: a.user,
        since_ms,
        limit: Some(a.limit),
    };
    out.audit(&client.audit(&q)?)
}

/// `--since`: a duration back from now, or a time as job files write it.
pub fn parse_since(s: &str) -> CliResult<u64> {
    let now = drqueue_common::now_millis();
    let bad = |e: String| CliError::Input(format!("--since: {e}"));
    if s.starts_with(|c: char| c.is_ascii_digit()) && !s.contains(['-', ':']) {
        // A duration back: parse it as "+N<unit>" after time zero.
        let back = drqueue_common::graph::parse_time(&format!("+{s}"), 0).map_err(bad)?;
        return Ok(now.saturating_sub(back));
    }
    drqueue_common::graph::parse_time(s, now).map_err(bad)
}

pub fn whoami(client: &Client, out: &dyn Output) -> CliResult<()> {
    out.whoami(&client.whoami()?)
}
