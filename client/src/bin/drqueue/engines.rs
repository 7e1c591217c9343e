//! Engine commands: listing, `engine show`, accept, join tokens, disable,
//! enable, drain and revoke.

use crate::error::CliResult;
use crate::output::{EngineChange, Output};
use clap::Subcommand;
use drqueue_client::Client;
use indicatif::ProgressBar;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Subcommand)]
pub enum EngineCmd {
    Show {
        engine: String,
    },
    /// Enroll a pending engine (shown as `pending` in `drqueue engines`,
    /// with its key's fingerprint: compare it with the one the engine logs).
    Accept {
        /// Its name, or its id when several pending engines share a name.
        engine: String,
    },
    /// Print a join token: an engine given it at install
    /// (DRQUEUE_JOIN_TOKEN) enrolls itself on first contact, and trusts
    /// only this master's key.
    JoinToken {
        /// How long the token stays good: 30m, 24h, 7d … (0: until used up).
        #[arg(long, default_value = "24h", value_parser = parse_expiry)]
        expires: u64,
        /// How many engines may enroll with it.
        #[arg(long, default_value_t = 1)]
        uses: u32,
    },
    /// Give it no new work.
    Disable {
        engine: String,
    },
    Enable {
        engine: String,
    },
    /// Cut it off at once and for good: its tasks stop and run elsewhere,
    /// and it is refused from now on (the machine comes back only enrolled
    /// afresh, with a new state directory).
    Revoke {
        engine: String,
    },
    /// Install (or upgrade) and start an engine on nodes over SSH: copies
    /// the engine, writes its env file with a join token, starts it.
    /// Running it again upgrades and restarts. At most 16 hosts at once.
    Deploy(Box<crate::deploy::DeployArgs>),
    /// Stop the engine on nodes and remove what `deploy` put there.
    Undeploy(crate::deploy::SshArgs),
    /// Give it no new work and wait until its running tasks have finished.
    Drain {
        engine: String,
        /// Give up waiting after this many seconds (the engine stays disabled).
        #[arg(long)]
        timeout: Option<u64>,
    },
}

pub fn list(client: &Client, out: &dyn Output) -> CliResult<()> {
    out.engines(&client.engines()?)
}

pub fn run(client: &Client, cmd: EngineCmd, out: &dyn Output) -> CliResult<ExitCode> {
    match cmd {
        EngineCmd::Show { engine } => out.engine(&client.engine(&engine)?)?,
        EngineCmd::Accept { engine } => out.engine_accepted(&client.engine_accept(&engine)?)?,
        EngineCmd::JoinToken { expires, uses } => {
            out.join_token(&client.join_token(uses, expires)?)?
        }
        EngineCmd::Disable { engine } => {
            let e = client.engine_control(&engine, "disable")?;
            out.engine_changed(&e, EngineChange::Disabled)?;
        }
        EngineCmd::Enable { engine } => {
            let e = client.engine_control(&engine, "enable")?;
            out.engine_changed(&e, EngineChange::Enabled)?;
        }
        EngineCmd::Revoke { engine } => {
            let e = client.engine_control(&engine, "revoke")?;
            out.engine_changed(&e, EngineChange::Revoked)?;
        }
        EngineCmd::Drain { engine, timeout } => return drain(client, &engine, timeout, out),
        EngineCmd::Deploy(a) => return crate::deploy::deploy(client, *a, out),
        EngineCmd::Undeploy(a) => return crate::deploy::undeploy(a, out),
    }
    Ok(ExitCode::SUCCESS)
}

/// Disables the engine, then waits (with a spinner) for its running tasks.
fn drain(
    client: &Client,
    engine: &str,
    timeout: Option<u64>,
    out: &dyn Output,
) -> CliResult<ExitCode> {
    let mut e = client.engine_control(engine, "drain")?;
    let spinner = if std::io::stderr().is_terminal() {
        ProgressBar::new_spinner()
    } else {
        ProgressBar::hidden()
    };
    spinner.enable_steady_tick(Duration::from_millis(120));
    let until = timeout.map(|t| Instant::now() + Duration::from_secs(t));
    while e.running > 0 {
        spinner.set_message(format!(
            "draining {}: {} task(s) running",
            e.name, e.running
        ));
        if until.is_some_and(|u| Instant::now() >= u) {
            spinner.finish_and_clear();
            eprintln!(
                "drqueue: engine {} still runs {} task(s); it stays disabled",
                e.name, e.running
            );
            return Ok(ExitCode::from(1));
        }
        std::thread::sleep(Duration::from_millis(500));
        e = client.engine(&e.id)?;
    }
    spinner.finish_and_clear();
    out.engine_changed(&e, EngineChange::Drained)?;
    Ok(ExitCode::SUCCESS)
}

/// `30m`, `24h`, `7d`, `90s` or a bare number of seconds, as seconds.
fn parse_expiry(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: u64 = num.parse().map_err(|_| {
        format!("{s:?} is not a duration: use e.g. 30m, 24h or 7d (0: never expires)")
    })?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("unknown unit {unit:?} in {s:?}: use s, m, h or d")),
    };
    Ok(n.saturating_mul(scale))
}

#[cfg(test)]
mod tests {
    #[test]
    fn expiries_parse() {
        assert_eq!(super::parse_expiry("24h"), Ok(86_400));
        assert_eq!(super::parse_expiry("0"), Ok(0));
        assert_eq!(super::parse_expiry("7d"), Ok(7 * 86_400));
        assert!(super::parse_expiry("soon").is_err());
        assert!(super::parse_expiry("3w").is_err());
    }
}
