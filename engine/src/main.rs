//! `drqueue-engine`: runs on each render node.

use clap::Parser;
use drqueue_engine::engine::{self, EngineOptions};
use drqueue_engine::facts;
use drqueue_engine::logfile::RotatingFile;
use drqueue_engine::rediscover::Rediscover;
use std::path::PathBuf;

mod render_demo;

/// The DrQueue engine: connects to the master, registers this machine, and
/// runs the tasks it is given.
#[derive(Parser, Debug)]
#[command(
    name = "drqueue-engine",
    version,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    tool: Option<Tool>,
    #[command(flatten)]
    args: Args,
}

#[derive(clap::Subcommand, Debug)]
enum Tool {
    /// Render one frame of the built-in demo scene to a PNG: a real renderer
    /// that every engine has (the sample job of `scripts/farm up`, tests).
    /// Prints `drqueue_progress: N` lines as it goes.
    RenderDemo(render_demo::RenderDemoArgs),
}

#[derive(clap::Args, Debug)]
struct Args {
    /// Master endpoint(s), comma separated; tried in turn. Without it (or
    /// DRQUEUE_MASTER, or `engines` in the config file) the engine finds the
    /// master: on loopback, by DNS SRV with --domain, or over mDNS.
    #[arg(long)]
    master: Option<String>,
    /// Look the master up as DNS SRV `_drqueue._tcp.DOMAIN` (routed networks,
    /// where mDNS does not reach).
    #[arg(long, env = "DRQUEUE_DOMAIN")]
    domain: Option<String>,
    /// Pools to join, comma separated (default: `default`).
    #[arg(long, env = "DRQUEUE_POOL")]
    pool: Option<String>,
    /// Tasks run at once.
    #[arg(long, env = "DRQUEUE_SLOTS", default_value_t = 1)]
    slots: u32,
    /// Most tasks held at once (running + queued here); default slots + 1.
    #[arg(long, env = "DRQUEUE_HWM")]
    hwm: Option<u32>,
    /// Name shown in listings (default: the hostname).
    #[arg(long, env = "DRQUEUE_ENGINE_NAME")]
    name: Option<String>,
    /// Where the engine keeps its id and attempt logs.
    #[arg(long, env = "DRQUEUE_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// A join token from `drqueue engine join-token`: enrolls this engine on
    /// first contact and names the master key it may trust.
    #[arg(long, env = "DRQUEUE_JOIN_TOKEN", hide_env_values = true)]
    join_token: Option<String>,
    /// Read the join token from this file instead (keeps it out of `ps`).
    #[arg(long, env = "DRQUEUE_JOIN_TOKEN_FILE", conflicts_with = "join_token")]
    join_token_file: Option<PathBuf>,
    /// Removed with the farm key (README: "Migrating from the farm key").
    #[arg(long, env = "DRQUEUE_KEY_FILE", hide = true)]
    key_file: Option<PathBuf>,
    /// Seconds between full refreshes of the engine's facts (renderers on
    /// PATH and their versions, RAM); load and free RAM go with every heartbeat.
    #[arg(long, env = "DRQUEUE_FACTS_REFRESH", default_value_t = 300)]
    facts_refresh: u64,
    /// Log to this file, rotated by size, instead of stderr (journald).
    #[arg(long, env = "DRQUEUE_LOG_FILE")]
    log_file: Option<PathBuf>,
    /// Rotate the log file when it would pass this many bytes.
    #[arg(long, env = "DRQUEUE_LOG_MAX_BYTES", default_value_t = 10 * 1024 * 1024)]
    log_max_bytes: u64,
    /// Old log files kept (NAME.1 … NAME.N).
    #[arg(long, env = "DRQUEUE_LOG_KEEP", default_value_t = 5)]
    log_keep: u32,
    /// How a task's processes are kept from outliving it: `auto` (a cgroup
    /// v2 per attempt where the tree is writable, else `marker`) or `marker`
    /// (an environment marker and a child subreaper).
    #[arg(long, env = "DRQUEUE_CONTAINMENT", default_value = "auto")]
    containment: drqueue_runner::contain::Choice,
    /// The most the cache of uploaded job inputs (under --state-dir) keeps,
    /// in GiB; the least recently used blobs go first.
    #[arg(long, env = "DRQUEUE_CACHE_GB", default_value_t = 20)]
    cache_gb: u64,
}

fn default_state_dir() -> PathBuf {
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".local/state/drqueue/engine"),
        None => PathBuf::from("./drqueue-engine"),
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Some(Tool::RenderDemo(a)) = cli.tool {
        return render_demo::run(&a);
    }
    let args = cli.args;
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    match &args.log_file {
        Some(path) => match RotatingFile::open(path, args.log_max_bytes, args.log_keep) {
            Ok(file) => tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_ansi(false)
                .with_writer(std::sync::Mutex::new(file))
                .init(),
            Err(e) => {
                eprintln!(
                    "drqueue-engine: cannot open log file {}: {e}",
                    path.display()
                );
                return std::process::ExitCode::FAILURE;
            }
        },
        None => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
    match run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("drqueue-engine: {e:#}");
            if e.is::<drqueue_engine::Permanent>() {
                std::process::ExitCode::from(78)
            } else {
                std::process::ExitCode::FAILURE
            }
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    if args.slots == 0 {
        anyhow::bail!("--slots must be at least 1");
    }
    let hwm = args.hwm.unwrap_or(args.slots + 1);
    if hwm < args.slots {
        anyhow::bail!(
            "--hwm {hwm} is below --slots {}: the engine could never fill its slots",
            args.slots
        );
    }
    if let Some(path) = &args.key_file {
        anyhow::bail!(
            "--key-file {} (DRQUEUE_KEY_FILE): the farm key is gone; this engine has its own key now. Drop the option and enroll it: give it a join token (`drqueue engine join-token`, then DRQUEUE_JOIN_TOKEN) or run `drqueue engine accept NAME` once it shows as pending",
            path.display()
        );
    }
    let join_token = match (&args.join_token, &args.join_token_file) {
        (Some(t), _) => Some(t.trim().to_string()),
        (None, Some(path)) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| {
                    anyhow::anyhow!("cannot read the join token file {}: {e}", path.display())
                })?
                .trim()
                .to_string(),
        ),
        (None, None) => None,
    }
    .filter(|t| !t.is_empty());
    if let Some(t) = &join_token {
        drqueue_common::keys::token_fingerprint(t)
            .map_err(|e| anyhow::anyhow!("--join-token: {e}"))?;
    }
    let state_dir = args.state_dir.unwrap_or_else(default_state_dir);
    let trusted = drqueue_engine::link::trusted_fingerprint(
        &state_dir.join("master.pub"),
        join_token.as_deref(),
    );
    let (masters, discovered) = find_master(args.master, args.domain.clone(), trusted)?;
    let rediscover = discovered.then(|| Rediscover {
        domain: args.domain.clone(),
        master_pin: state_dir.join("master.pub"),
        join_token: join_token.clone(),
    });
    let opts = EngineOptions {
        rediscover,
        masters: masters
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
        name: args.name,
        pools: facts::parse_pools(args.pool.as_deref()),
        slots: args.slots,
        hwm,
        state_dir,
        facts_refresh: std::time::Duration::from_secs(args.facts_refresh.max(1)),
        join_token,
        containment: args.containment,
        cache_bytes: args.cache_gb << 30,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(engine::run(opts, drqueue_common::signals::wait_for_stop()))
}

/// Where the master is (`drqueue_discovery::resolve`'s order), and whether
/// it was found on the network. Until something answers, the engine looks
/// again every 5 s: it may well boot before the master.
fn find_master(
    flag: Option<String>,
    domain: Option<String>,
    trusted: Option<String>,
) -> anyhow::Result<(String, bool)> {
    use drqueue_discovery::{Resolver, Via, Want};
    let mut resolver = Resolver::new(Want::Engines);
    resolver.flag = flag;
    resolver.domain = domain;
    resolver.trusted = trusted;
    let mut told = false;
    loop {
        match resolver.resolve() {
            Ok((found, _)) if found.via != Via::Default => {
                tracing::info!(master = %found.address, via = %found.via, "master found");
                return Ok((found.address.clone(), found.discovered()));
            }
            Ok((_, notes)) if !told => {
                tracing::warn!("no master found yet ({}); looking again every 5 s. Give --master, DRQUEUE_MASTER or --domain to say where it is", notes.join("; "));
                told = true;
            }
            Ok(_) => {}
            Err(e) => {
                return Err(drqueue_engine::Permanent(format!(
                    "{e}; fix the file (or point DRQUEUE_CONFIG at another)"
                ))
                .into())
            }
        }
        std::thread::sleep(std::time::Duration::from_secs(5));
    }
}
