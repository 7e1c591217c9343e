//! Engine commands: listing, `engine show`, disable, enable, drain and revoke.

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
