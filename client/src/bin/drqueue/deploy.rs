//! `drqueue engine deploy --ssh` and `engine undeploy --ssh`: the CLI side
//! of [`drqueue_client::deploy`]: a join token from the master, a line per
//! host as each finishes, a final table, exit 1 if any host failed.

use crate::error::{CliError, CliResult};
use crate::output::Output;
use drqueue_client::deploy::{self, EngineEnv, HostResult, Ssh, Start};
use drqueue_client::Client;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct SshArgs {
    /// The nodes: [USER@]HOST[,HOST…], as `ssh` takes them (aliases from
    /// ~/.ssh/config work).
    #[arg(long = "ssh", value_name = "[USER@]HOST[,HOST…]")]
    hosts: String,
    /// Where the engine lives on the node (`~` is the remote home).
    #[arg(long, default_value = "~/.local/drqueue")]
    prefix: String,
    /// An ssh config file (`ssh -F`).
    #[arg(long)]
    ssh_config: Option<PathBuf>,
    /// An ssh option (`-o`), e.g. `-o Port=2222`; repeatable.
    #[arg(long = "ssh-option", short = 'o')]
    ssh_options: Vec<String>,
}

impl SshArgs {
    fn ssh(&self) -> Ssh {
        Ssh {
            config: self.ssh_config.clone(),
            options: self.ssh_options.clone(),
        }
    }
}

#[derive(clap::Args)]
pub struct DeployArgs {
    #[command(flatten)]
    ssh: SshArgs,
    /// Pools the engines join, comma separated.
    #[arg(long)]
    pool: Option<String>,
    /// Tasks each engine runs at once.
    #[arg(long, default_value_t = 1)]
    slots: u32,
    /// How the engine is started and kept: `nohup` or `systemd`.
    #[arg(long, value_enum, default_value = "nohup")]
    start: Start,
    /// The engine binary to install (default: drqueue-engine-ARCH beside
    /// this drqueue, or drqueue-engine for a node of this machine's kind).
    #[arg(long)]
    engine_binary: Option<PathBuf>,
    /// The engine endpoint as the nodes reach it (default: the master's,
    /// with the host of --url when it listens on every interface).
    #[arg(long)]
    master: Option<String>,
}

pub fn deploy(client: &Client, a: DeployArgs, out: &dyn Output) -> CliResult<ExitCode> {
    let hosts = deploy::parse_hosts(&a.ssh.hosts).map_err(CliError::Input)?;
    if a.slots == 0 {
        return Err(CliError::Input("--slots must be at least 1".into()));
    }
    let uses = u32::try_from(hosts.len()).unwrap_or(u32::MAX);
    let token = client.join_token(uses, 3600)?;
    let master = a.master.clone().unwrap_or_else(|| {
        let url_host = client
            .url()
            .split_once("://")
            .map_or("", |(_, r)| r)
            .rsplit_once(':')
            .map_or("127.0.0.1", |(h, _)| h)
            .to_string();
        drqueue_discovery::advert::fill_host(&token.engines, &url_host)
    });
    let env = EngineEnv {
        master,
        join_token: token.token,
        pool: a.pool.clone(),
        slots: a.slots,
    };
    let dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(PathBuf::from))
        .unwrap_or_default();
    let ssh = a.ssh.ssh();
    eprintln!(
        "deploying to {} host(s), at most {} at once",
        hosts.len(),
        deploy::MAX_PARALLEL
    );
    let results = deploy::fan_out(
        &hosts,
        &|host| {
            deploy::deploy_one(
                host,
                &ssh,
                &a.ssh.prefix,
                &env,
                a.start,
                a.engine_binary.as_deref(),
                &dir,
            )
        },
        &say,
    );
    report(&results, out)
}

pub fn undeploy(a: SshArgs, out: &dyn Output) -> CliResult<ExitCode> {
    let hosts = deploy::parse_hosts(&a.hosts).map_err(CliError::Input)?;
    let ssh = a.ssh();
    let results = deploy::fan_out(
        &hosts,
        &|host| deploy::undeploy_one(host, &ssh, &a.prefix),
        &say,
    );
    report(&results, out)
}

/// The line for one host as it finishes (stderr: the table goes to stdout).
fn say(r: &HostResult) {
    let verdict = if r.ok { "ok" } else { "FAILED" };
    eprintln!("{}: {verdict}: {}", r.host, r.detail);
}

fn report(results: &[HostResult], out: &dyn Output) -> CliResult<ExitCode> {
    let failed = results.iter().filter(|r| !r.ok).count();
    let width = results
        .iter()
        .map(|r| r.host.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let mut said = format!("{:<width$}  RESULT  DETAIL", "HOST");
    for r in results {
        said.push_str(&format!(
            "\n{:<width$}  {:<6}  {}",
            r.host,
            if r.ok { "ok" } else { "failed" },
            r.detail
        ));
    }
    said.push_str(&format!("\n{} of {} host(s) failed", failed, results.len()));
    out.done(
        &serde_json::to_value(results).map_err(|e| CliError::Local(e.to_string()))?,
        &said,
    )?;
    Ok(ExitCode::from(u8::from(failed > 0)))
}
