//! `drqueue-master`: the farm's controller.

use clap::Parser;
use drqueue_master::scheduler::Config;
use drqueue_master::server::{self, MasterOptions};
use std::path::PathBuf;

/// The DrQueue master: schedules tasks onto engines, keeps the farm's state,
/// and serves the HTTP/JSON API and dashboard.
#[derive(Parser, Debug)]
#[command(name = "drqueue-master", version)]
struct Args {
    /// Where to keep state: a directory for the embedded store, or mongodb://…
    #[arg(long, env = "DRQUEUE_DB", default_value = server::DEFAULT_DB)]
    db: String,
    /// Address for the HTTP API and dashboard (port 0 picks a free port).
    #[arg(long, env = "DRQUEUE_HTTP", default_value = server::DEFAULT_HTTP)]
    http: String,
    /// ZeroMQ endpoint engines connect to (port 0 picks a free port).
    #[arg(long, env = "DRQUEUE_ENGINES", default_value = server::DEFAULT_ENGINES)]
    engines: String,
    /// SMTP server for notifications, smtp://HOST:PORT or smtps://…
    #[arg(long, env = "DRQUEUE_SMTP")]
    smtp: Option<String>,
    /// Sender address of notification mails.
    #[arg(long, env = "DRQUEUE_MAIL_FROM")]
    mail_from: Option<String>,
    /// Once accepting work, write {"http": …, "engines": …} here.
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// Where the master's key pair and the enrolled engines are kept
    /// (default: `keys` inside --db's directory; for MongoDB,
    /// ~/.local/state/drqueue/master-keys). Standby masters must share it.
    #[arg(long, env = "DRQUEUE_KEYS_DIR")]
    keys_dir: Option<PathBuf>,
    /// Where uploaded job inputs and collected outputs are kept, by hash
    /// (default: `cas` inside --db's directory; for MongoDB,
    /// ~/.local/state/drqueue/cas). Standby masters must reach the same one.
    #[arg(long, env = "DRQUEUE_CAS_DIR")]
    cas_dir: Option<PathBuf>,
    /// Refuse uploads (507) while the content store's disk has less than
    /// this many MiB free.
    #[arg(long, default_value_t = 1024)]
    cas_min_free_mb: u64,
    /// Remove blobs that no job on the farm names once nobody has used them
    /// for this many days (checked hourly; `drqueue cas gc` runs it now).
    #[arg(long, default_value_t = 31)]
    cas_keep_days: u64,
    /// The most each user's jobs on the farm may keep in the content store
    /// (their uploaded folders, each distinct file once), in MiB; uploads
    /// and submits past it are refused (507). 0: no quota.
    #[arg(long, default_value_t = 0)]
    cas_quota_mb: u64,
    /// Enroll engines only by join token or `drqueue engine accept`, even
    /// when the engines' socket is bound to loopback.
    #[arg(long)]
    require_enrollment: bool,
    /// Removed: the farm key is replaced by per-engine keys and enrollment
    /// (see the README's "Migrating from the farm key").
    #[arg(long, env = "DRQUEUE_KEY_FILE", hide = true)]
    key_file: Option<PathBuf>,
    /// File of API tokens, one per line ('#' comments): each acts as the
    /// admin. A file that names no token is an error.
    #[arg(long, env = "DRQUEUE_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// On a store without users, create the first admin ("admin") and write
    /// its API token to this file (mode 0600). Ignored once users exist.
    #[arg(long, env = "DRQUEUE_ADMIN_TOKEN_FILE")]
    admin_token_file: Option<PathBuf>,
    /// Let anyone read (jobs, logs, engines) without a token once the farm
    /// has users. Changes still need a token.
    #[arg(long, env = "DRQUEUE_PUBLIC_READ")]
    public_read: bool,
    /// Seconds of silence after which an engine is declared lost.
    #[arg(long, default_value_t = Config::default().engine_timeout_ms / 1000)]
    engine_timeout: u64,
    /// Seconds a restarted master waits for engines to come back before
    /// running their tasks elsewhere.
    #[arg(long, default_value_t = Config::default().recovery_ms / 1000)]
    recovery: u64,
    /// Seconds the active master's lease on a shared (MongoDB) store lasts
    /// unrenewed; a standby master takes over this long after it dies.
    #[arg(long, default_value_t = MasterOptions::default().lease_ms / 1000)]
    lease: u64,
    /// An engine that fails this many attempts of one job gets no more of
    /// that job (0 = never).
    #[arg(long, default_value_t = Config::default().blacklist_after)]
    blacklist_after: u32,
    /// An engine that fails this many attempts in a row is marked sick and
    /// gets no work until enabled or until it passes its check (0 = never).
    #[arg(long, default_value_t = Config::default().sick_after)]
    sick_after: u32,
    /// Seconds between check tasks sent to a sick engine (0 = no checks:
    /// only `drqueue engine enable` brings it back).
    #[arg(long, default_value_t = Config::default().check_interval_ms / 1000)]
    check_interval: u64,
    /// Attempts at sending a job's email before it is marked failed.
    #[arg(long, default_value_t = Config::default().mail_attempts)]
    mail_attempts: u32,
    /// The HTTP API's address as users reach it, for links in mails
    /// (default: the address it listens on).
    #[arg(long, env = "DRQUEUE_PUBLIC_URL")]
    public_url: Option<String>,
    /// The known-good check task, e.g. "/studio/bin/render-check --quick";
    /// by default the engine's built-in check (start a process, write a file).
    #[arg(long)]
    check_command: Option<String>,
    /// Serve the API and the monitor over HTTPS with this PEM certificate
    /// chain (with --tls-key).
    #[arg(long, env = "DRQUEUE_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key for --tls-cert.
    #[arg(long, env = "DRQUEUE_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// HTTP connections served at once; one address may hold a quarter.
    #[arg(long, default_value_t = 512)]
    http_max_connections: usize,
    /// Seconds a client has to send a request's headers, or its body.
    #[arg(long, default_value_t = 10)]
    http_timeout: u64,
    /// Do not register `_drqueue._tcp.local.` over mDNS. By default the
    /// master advertises on the interfaces its engine endpoint is bound to,
    /// so engines and clients started with no address find it.
    #[arg(long, env = "DRQUEUE_NO_ADVERTISE")]
    no_advertise: bool,
    /// Submit each job file dropped in this folder (TOML or JSON; other
    /// files by the rules in its .drqueue-rules.toml), once it has stopped
    /// changing; then move it to submitted/ (with the job ids) or rejected/
    /// (with the error).
    #[arg(long, env = "DRQUEUE_WATCH_DIR")]
    watch_dir: Option<std::path::PathBuf>,
    /// Who owns the jobs from --watch-dir.
    #[arg(long, default_value = "watch", requires = "watch_dir")]
    watch_as: String,
    /// Milliseconds a dropped file must stay unchanged before it is taken.
    #[arg(long, default_value_t = 2000, requires = "watch_dir")]
    watch_settle_ms: u64,
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal: journald and log files
        // get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    match run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("drqueue-master: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The tokens in `--token-file`. One that names none fails closed: never
/// "authentication off".
fn read_token_file(path: &std::path::Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read token file {}: {e}", path.display()))?;
    let tokens: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect();
    if tokens.is_empty() {
        anyhow::bail!(
            "token file {} names no token: put one token per line, or drop --token-file (DRQUEUE_TOKEN_FILE) and use `drqueue user add`",
            path.display()
        );
    }
    Ok(tokens)
}

/// Raises the open-file limit to what the system allows: every engine and
/// HTTP client is a descriptor. systemd's unit sets it high already.
fn raise_open_file_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    raise_open_file_limit();
    if let Some(path) = &args.key_file {
        anyhow::bail!(
            "--key-file {} (DRQUEUE_KEY_FILE): the farm key is gone; engines now have their own keys and are enrolled. Drop the option, then enroll engines with `drqueue engine join-token` or `drqueue engine accept NAME` (README: \"Migrating from the farm key\")",
            path.display()
        );
    }
    let tokens = match &args.token_file {
        Some(p) => read_token_file(p)?,
        None => Vec::new(),
    };
    if args.smtp.is_none() && args.mail_from.is_some() {
        tracing::warn!("--mail-from without --smtp: notifications cannot be sent");
    }
    let mail = args
        .smtp
        .clone()
        .map(|smtp| drqueue_master::notify::MailConfig {
            smtp,
            from: args.mail_from.clone(),
            user: std::env::var("DRQUEUE_SMTP_USER").ok(),
            password: std::env::var("DRQUEUE_SMTP_PASSWORD").ok(),
        });
    let check_command = match &args.check_command {
        Some(c) => shlex::split(c)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| anyhow::anyhow!("--check-command {c:?} is not a command line"))?,
        None => Vec::new(),
    };
    let opts = MasterOptions {
        db: args.db,
        http: args.http,
        engines: args.engines,
        ready_file: args.ready_file,
        keys_dir: args.keys_dir,
        cas_dir: args.cas_dir,
        cas_min_free_bytes: args.cas_min_free_mb << 20,
        cas_keep_days: args.cas_keep_days,
        cas_quota_bytes: args.cas_quota_mb << 20,
        advertise: !args.no_advertise,
        watch: args.watch_dir.clone().map(|d| {
            (
                d,
                args.watch_as.clone(),
                std::time::Duration::from_millis(args.watch_settle_ms),
            )
        }),
        require_enrollment: args.require_enrollment,
        tokens,
        admin_token_file: args.admin_token_file,
        public_read: args.public_read,
        lease_ms: args.lease * 1000,
        mail,
        public_url: args.public_url,
        tls: args.tls_cert.zip(args.tls_key),
        http_max_connections: args.http_max_connections,
        http_timeout_ms: args.http_timeout.max(1) * 1000,
        sched: Config {
            engine_timeout_ms: args.engine_timeout * 1000,
            recovery_ms: args.recovery * 1000,
            blacklist_after: args.blacklist_after,
            sick_after: args.sick_after,
            check_interval_ms: args.check_interval * 1000,
            check_command,
            mail_attempts: args.mail_attempts.max(1),
            ..Config::default()
        },
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let master = server::start(opts).await?;
        drqueue_common::signals::wait_for_stop().await;
        tracing::info!("stopping: committing state");
        master.shutdown().await;
        tracing::info!("stopped");
        Ok(())
    })
}
