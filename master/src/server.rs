//! Wiring: opens the store, rebuilds the scheduler, binds the sockets, and
//! starts the core, router, HTTP and store tasks. Used by `main.rs`, the
//! benchmark and tests that want a master in-process.

use crate::core::{log_notice, Core};
use crate::enroll::Enrollment;
use crate::events::{Event, Request};
use crate::scheduler::{Config, Effects, Scheduler};
use crate::sessions::{Sealers, Sessions};
use crate::store::sqlite::SqliteStore;
use crate::store::writer::{self, WriterStats};
use crate::store::{Lease, Store};
use crate::users::{Directory, ADMIN_USER};
use crate::{http, router};
use anyhow::Context;
use drqueue_common::keys::KeyPair;
use drqueue_common::now_millis;
use drqueue_discovery::mdns::Advertisement;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::{mpsc, oneshot};

/// Where a master keeps state, serves HTTP and listens for engines when
/// nothing says otherwise (SPEC's defaults; loopback only).
pub const DEFAULT_DB: &str = "./drqueue-data";
pub const DEFAULT_HTTP: &str = "127.0.0.1:5580";
pub const DEFAULT_ENGINES: &str = "tcp://127.0.0.1:5555";

#[derive(Debug, Clone)]
pub struct MasterOptions {
    /// A directory for the embedded store, or a `mongodb://` URI.
    pub db: String,
    pub http: String,
    pub engines: String,
    pub ready_file: Option<PathBuf>,
    /// Where the master's key pair and the enrolled engines are kept
    /// (default: `keys` in the embedded store's directory).
    pub keys_dir: Option<PathBuf>,
    /// Enroll engines only by join token or `drqueue engine accept`, even
    /// on a loopback bind.
    pub require_enrollment: bool,
    /// `--token-file`'s tokens: each acts as an admin.
    pub tokens: Vec<String>,
    /// On a store without users: create the first admin, `admin`, and
    /// write its token here (mode 0600).
    pub admin_token_file: Option<PathBuf>,
    /// Reads need no token even when the farm has users.
    pub public_read: bool,
    pub sched: Config,
    /// How long the active master's lease on a shared store lasts unrenewed:
    /// a standby takes over this long after the active master dies.
    pub lease_ms: u64,
    /// SMTP for notifications; None: notifications fail saying so.
    pub mail: Option<crate::notify::MailConfig>,
    /// The HTTP API's address as users reach it (for links in mails);
    /// default: the address the master listens on.
    pub public_url: Option<String>,
    /// Serve the API over TLS with this PEM certificate chain and key.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// HTTP connections served at once, and the time a client has to send
    /// a request's headers (or body).
    pub http_max_connections: usize,
    pub http_timeout_ms: u64,
    /// The content store's folder (default: `cas` in the embedded store's
    /// directory; for MongoDB, ~/.local/state/drqueue/cas). Standby
    /// masters must reach the same one.
    pub cas_dir: Option<PathBuf>,
    /// Uploads are refused below this much free disk under `cas_dir`.
    pub cas_min_free_bytes: u64,
    /// Blobs no live job names are removed once unused this many days.
    pub cas_keep_days: u64,
    /// What each user's live jobs may keep in the content store; 0: no quota.
    pub cas_quota_bytes: u64,
    /// Register `_drqueue._tcp.local.` over mDNS on the engine endpoint's
    /// interfaces (`--no-advertise` turns it off; off for in-process masters).
    pub advertise: bool,
    /// `--watch-dir`: the folder, whose jobs are whose, and the settle time.
    pub watch: Option<(PathBuf, String, std::time::Duration)>,
}

impl Default for MasterOptions {
    fn default() -> Self {
        MasterOptions {
            db: DEFAULT_DB.into(),
            http: DEFAULT_HTTP.into(),
            engines: DEFAULT_ENGINES.into(),
            ready_file: None,
            keys_dir: None,
            require_enrollment: false,
            tokens: Vec::new(),
            admin_token_file: None,
            public_read: false,
            sched: Config::default(),
            lease_ms: 10_000,
            mail: None,
            public_url: None,
            tls: None,
            http_max_connections: 512,
            http_timeout_ms: 10_000,
            cas_dir: None,
            cas_min_free_bytes: 1 << 30,
            cas_keep_days: 31,
            cas_quota_bytes: 0,
            advertise: false,
            watch: None,
        }
    }
}

/// A master that is up and accepting work.
pub struct RunningMaster {
    pub http_url: String,
    pub engines_endpoint: String,
    pub stats: Arc<WriterStats>,
    events: mpsc::UnboundedSender<Event>,
    store_thread: Option<std::thread::JoinHandle<()>>,
    /// Unregistered (a goodbye on the link) when the master stops.
    _advertisement: Option<Advertisement>,
}

impl RunningMaster {
    /// Stops cleanly: everything decided so far is committed first.
    pub async fn shutdown(mut self) {
        let (tx, rx) = oneshot::channel();
        if self.events.send(Event::Shutdown(tx)).is_ok() {
            let _ = rx.await;
        }
        if let Some(t) = self.store_thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }

    /// Waits until everything the master has decided so far is committed.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        let request = Request::Flush { reply: tx };
        if self.events.send(Event::Request(request)).is_ok() {
            let _ = rx.await;
        }
    }

    /// The core's event channel (for the benchmark and tests).
    pub fn events(&self) -> mpsc::UnboundedSender<Event> {
        self.events.clone()
    }
}

/// Where the master keeps its key pair and `enrolled.json`.
fn keys_dir(opts: &MasterOptions) -> PathBuf {
    // Standby masters must share this directory (or a copy of it): engines
    // trust the master's key, and enrollment lives here.
    beside_store(opts, opts.keys_dir.as_ref(), "keys", "master-keys")
}

/// Where the content store keeps blobs. Standby masters must reach the
/// same one (like the keys).
fn cas_dir(opts: &MasterOptions) -> PathBuf {
    beside_store(opts, opts.cas_dir.as_ref(), "cas", "cas")
}

/// A folder of the master's own: the one given, else `name` in the
/// embedded store's directory, else (MongoDB has no directory) `state` in
/// `~/.local/state/drqueue`.
fn beside_store(opts: &MasterOptions, given: Option<&PathBuf>, name: &str, state: &str) -> PathBuf {
    if let Some(dir) = given {
        return dir.clone();
    }
    if !opts.db.starts_with("mongodb") {
        return std::path::Path::new(&opts.db).join(name);
    }
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".local/state/drqueue").join(state),
        None => PathBuf::from(format!("./drqueue-{name}")),
    }
}

/// Whether a bound endpoint (`tcp://HOST:PORT`) only reaches this machine:
/// then whoever connects is local, and is enrolled on sight.
pub use drqueue_discovery::advert::is_loopback;

/// The store `db` names: a `mongodb://` (or `mongodb+srv://`) URI, or a
/// directory for the embedded store. Blocking: call it off the async threads.
pub fn open_store(db: &str) -> anyhow::Result<Box<dyn Store>> {
    if db.starts_with("mongodb://") || db.starts_with("mongodb+srv://") {
        let store =
            crate::store::mongo::MongoStore::open(db).context("opening the MongoDB store")?;
        return Ok(Box::new(store));
    }
    let store =
        SqliteStore::open(std::path::Path::new(db)).context("opening the embedded store")?;
    Ok(Box::new(store))
}

/// This master's name in the lease: host, process and a random tag.
fn master_name() -> String {
    format!(
        "{}:{}:{:04x}",
        drqueue_common::hostname(),
        std::process::id(),
        rand::random::<u16>()
    )
}

/// Waits as a standby until this master holds the store's lease: one active
/// master per store, so two never dispatch the same farm.
/// `on_standby` runs once, when the lease is first found taken.
fn wait_for_lease(store: &mut dyn Store, owner: &str, lease_ms: u64, on_standby: impl FnOnce()) {
    let mut on_standby = Some(on_standby);
    let mut told = false;
    loop {
        match store.acquire_lease(owner, drqueue_common::now_millis(), lease_ms) {
            Ok(Lease::Held) => {
                if told {
                    tracing::info!(
                        owner,
                        "took over the store's lease: this master is now active"
                    );
                }
                return;
            }
            Ok(Lease::Taken { owner: holder, .. }) => {
                if !told {
                    tracing::info!(active = %holder, "standby: another master is active on this store; waiting to take over");
                    told = true;
                    if let Some(f) = on_standby.take() {
                        f();
                    }
                }
            }
            Err(e) => tracing::warn!("cannot check the store's lease, retrying: {e}"),
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

/// Renews a shared store's lease. If another master ever holds it, this one
/// stops at once: a master that cannot prove it is the only one must not dispatch.
fn keep_lease(db: &str, owner: &str, lease_ms: u64) {
    let period = std::time::Duration::from_millis((lease_ms / 3).max(100));
    let mut store = loop {
        match open_store(db) {
            Ok(s) => break s,
            Err(e) => {
                tracing::warn!("lease keeper cannot open the store, retrying: {e:#}");
                std::thread::sleep(period);
            }
        }
    };
    loop {
        std::thread::sleep(period);
        match store.acquire_lease(owner, drqueue_common::now_millis(), lease_ms) {
            Ok(Lease::Held) => {}
            Ok(Lease::Taken { owner: holder, .. }) => {
                tracing::error!(active = %holder, "another master took over this store's lease; stopping so that two masters never dispatch");
                std::process::exit(3);
            }
            Err(e) => tracing::warn!("cannot renew the store's lease (retrying): {e}"),
        }
    }
}

/// A farm without users serves this machine alone: there is no switch that
/// opens it to the network before someone can be told apart.
fn refuse_shared_bind_without_users(
    http: &str,
    bound: Option<std::net::SocketAddr>,
) -> anyhow::Result<()> {
    let addr = bound.or_else(|| http.parse().ok());
    if addr.is_none_or(|a| a.ip().is_loopback()) {
        return Ok(());
    }
    anyhow::bail!(
        "--http {http}: this farm has no users yet, so it serves only this machine. Bind --http to 127.0.0.1, or create the first admin with --admin-token-file PATH (or give --token-file)"
    )
}

/// `--admin-token-file`: on a store without users, makes the first admin
/// and writes its token to `path`, readable by the master's user alone.
/// The file is written before the user is stored, so a token is never lost.
fn first_admin(
    store: &mut dyn Store,
    directory: &mut Directory,
    path: &std::path::Path,
) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if directory.has_stored_users() {
        tracing::info!(path = %path.display(), "--admin-token-file: the farm has users already; nothing made");
        return Ok(());
    }
    let (change, token) = directory
        .add(ADMIN_USER, drqueue_common::users::Role::Admin, now_millis())
        .map_err(anyhow::Error::msg)?;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("--admin-token-file: cannot write {}", tmp.display()))?;
    writeln!(f, "{}", token.token).context("--admin-token-file: writing the token")?;
    f.sync_all()
        .context("--admin-token-file: writing the token")?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("--admin-token-file: cannot write {}", path.display()))?;
    store
        .change_user(&change)
        .context("storing the first admin")?;
    tracing::info!(path = %path.display(), user = ADMIN_USER, "made the farm's first admin; its token is in the file");
    Ok(())
}

pub async fn start(opts: MasterOptions) -> anyhow::Result<RunningMaster> {
    // The MongoDB driver's sync API runs its own runtime: open and load on a
    // blocking thread.
    let db = opts.db.clone();
    let owner = master_name();
    let owner_id = owner.clone();
    let lease_ms = opts.lease_ms;
    // The key is the same for a standby (the keys folder is shared), so a
    // standby can be advertised as one while it waits.
    let master_keys =
        KeyPair::load_or_create(&keys_dir(&opts).join("master.key")).map_err(anyhow::Error::msg)?;
    let standby: Arc<Mutex<Option<Advertisement>>> = Arc::default();
    let (store, snap, directory) = tokio::task::spawn_blocking({
        let owner = owner.clone();
        let on_standby = {
            let slot = standby.clone();
            let (http, engines) = (format!("http://{}", opts.http), opts.engines.clone());
            let (keys, advertise) = (master_keys.clone(), opts.advertise);
            let id = owner.clone();
            move || {
                if advertise {
                    let a = self::advertise(&http, &engines, &id, &keys, "standby");
                    if let Ok(mut slot) = slot.lock() {
                        *slot = a;
                    }
                }
            }
        };
        let (tokens, admin_file) = (opts.tokens.clone(), opts.admin_token_file.clone());
        move || -> anyhow::Result<_> {
            let mut store = open_store(&db)?;
            wait_for_lease(store.as_mut(), &owner, lease_ms, on_standby);
            let snap = store.load().context("loading the store")?;
            let users = store.users().context("loading the users")?;
            let mut directory = Directory::new(users, &tokens);
            if let Some(path) = admin_file {
                first_admin(store.as_mut(), &mut directory, &path)?;
            }
            Ok((store, snap, directory))
        }
    })
    .await??;
    if store.lease_needs_renewal() {
        let db = opts.db.clone();
        std::thread::Builder::new()
            .name("drqueue-lease".into())
            .spawn(move || keep_lease(&db, &owner, lease_ms))?;
    }
    let (jobs, tasks, engines) = (snap.jobs.len(), snap.tasks.len(), snap.engines.len());
    let mut restored = Effects::default();
    let sched = Scheduler::restore(opts.sched.clone(), snap, now_millis(), &mut restored);
    restored.notices.iter().for_each(log_notice);
    tracing::info!(jobs, tasks, engines, db = %opts.db, "store loaded");

    let stats = Arc::new(WriterStats::default());
    let (reader_tx, reader_rx) = mpsc::unbounded_channel();
    // The reader thread ends with the API (its only sender), so it is not
    // joined at shutdown.
    crate::store::reader::spawn(
        store.reader().context("opening the store's reader")?,
        reader_rx,
    )
    .context("starting the store reader thread")?;
    let (writer_tx, writer_rx) = mpsc::unbounded_channel();
    let store_thread =
        writer::spawn(store, writer_rx, stats.clone()).context("starting the store thread")?;

    if directory.is_empty() {
        // Refused before the socket opens, where the address says so.
        refuse_shared_bind_without_users(&opts.http, None)?;
    }
    let (socket, engines_endpoint) = router::bind(&opts.engines).await?;
    let listener = tokio::net::TcpListener::bind(&opts.http)
        .await
        .with_context(|| format!("cannot listen for HTTP on {} (is another master running? use --http to pick another address)", opts.http))?;
    let http_addr = listener.local_addr()?;
    let tls = opts
        .tls
        .as_ref()
        .map(|(cert, key)| http::serve::tls_config(cert, key))
        .transpose()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let http_url = format!("{scheme}://{http_addr}");
    if directory.is_empty() {
        refuse_shared_bind_without_users(&opts.http, Some(http_addr))?;
        tracing::info!("single-machine farm: no users yet, so the API listens on loopback only and every local caller is the admin \"local\"; `drqueue user add NAME --role admin` (or --admin-token-file) makes it a shared farm");
    }

    // Active now: the standby advertisement says goodbye.
    drop(standby.lock().ok().and_then(|mut s| s.take()));
    let keys_dir = keys_dir(&opts);
    let auto_enroll = !opts.require_enrollment && is_loopback(&engines_endpoint);
    let enrollment = Arc::new(Mutex::new(
        Enrollment::load(&keys_dir, auto_enroll).map_err(anyhow::Error::msg)?,
    ));
    let sealers = Sealers::default();
    let sessions = Sessions::new(master_keys.clone(), enrollment.clone(), sealers.clone());
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let (out_tx, out_rx) = mpsc::unbounded_channel();
    let cas_root = cas_dir(&opts);
    let keep = std::time::Duration::from_secs(opts.cas_keep_days.saturating_mul(86_400));
    let mut cas = crate::cas::BlobDir::open_keeping(&cas_root, opts.cas_min_free_bytes, keep)
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot open the content store {}: {e} (choose another with --cas-dir)",
                cas_root.display()
            )
        })?;
    cas.quota_bytes = opts.cas_quota_bytes;
    router::spawn(
        socket,
        (sessions, sealers),
        crate::transfer::Transfers::new(cas.clone()),
        events_tx.clone(),
        (out_tx.clone(), out_rx),
    );
    let mailer = opts
        .mail
        .clone()
        .map(|cfg| crate::notify::Mailer::start(cfg, reader_tx.clone(), events_tx.clone()))
        .transpose()?;
    let public_url = opts.public_url.clone().unwrap_or_else(|| http_url.clone());
    let api_writer = writer_tx.clone();
    let feed = crate::feed::Feed::new();
    let metrics = Arc::new(crate::metrics::Metrics::new(stats.clone()));
    let core = Core::new(sched, out_tx, writer_tx)
        .with_metrics(metrics)
        .with_mail(mailer, public_url)
        .with_feed(feed.clone());
    tokio::spawn(core.run(events_rx));
    if let Some((dir, owner, settle)) = opts.watch.clone() {
        crate::watch_folder::spawn(dir, owner, settle, events_tx.clone())?;
    }
    let access = http::EngineAccess {
        enrollment,
        master_public: master_keys.public,
        engines_endpoint: engines_endpoint.clone(),
    };
    let limits = http::serve::Limits::new(
        opts.http_max_connections,
        std::time::Duration::from_millis(opts.http_timeout_ms),
    );
    crate::cas_gc::spawn(events_tx.clone(), reader_tx.clone(), cas.clone(), keep);
    let app = http::router(http::ApiParts {
        events: events_tx.clone(),
        writer: api_writer,
        reader: reader_tx,
        users: Arc::new(RwLock::new(directory)),
        access,
        policy: http::Policy::new(http_addr, opts.public_url.as_deref(), opts.public_read),
        body_timeout: std::time::Duration::from_millis(opts.http_timeout_ms),
        per_client_requests: limits.requests_per_client,
        feed,
        cas,
    });
    tokio::spawn(http::serve::serve(listener, app, limits, tls));

    tracing::info!(http = %http_url, engines = %engines_endpoint, key = %master_keys.fingerprint(), auto_enroll, "master accepting work");
    if let Some(path) = &opts.ready_file {
        let json = serde_json::json!({ "http": http_url, "engines": engines_endpoint });
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, json.to_string())
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    }
    let advertisement = opts
        .advertise
        .then(|| {
            advertise(
                &http_url,
                &engines_endpoint,
                &owner_id,
                &master_keys,
                "active",
            )
        })
        .flatten();
    Ok(RunningMaster {
        http_url,
        engines_endpoint,
        stats,
        events: events_tx,
        store_thread: Some(store_thread),
        _advertisement: advertisement,
    })
}

/// Registers this master over mDNS as `role` (`active`, or `standby` while
/// it waits for the store's lease), on the interfaces its engine endpoint
/// is bound to (loopback alone for a loopback master). A failure is logged:
/// the farm still works for whoever is told the address.
fn advertise(
    http_url: &str,
    engines_endpoint: &str,
    id: &str,
    keys: &KeyPair,
    role: &str,
) -> Option<Advertisement> {
    let advert = drqueue_discovery::Advert {
        // Unique per process: a standby on the same host must not take the
        // active one's name.
        instance: format!("drqueue {id}"),
        http: http_url.to_string(),
        engines: engines_endpoint.to_string(),
        protocol: drqueue_common::protocol::PROTOCOL_VERSION,
        id: id.to_string(),
        fingerprint: keys.fingerprint(),
        role: role.into(),
    };
    let bound = drqueue_discovery::advert::endpoint_ip(engines_endpoint)
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    match drqueue_discovery::mdns::Advertisement::start(&advert, bound) {
        Ok(a) => {
            tracing::info!(service = drqueue_discovery::MDNS_SERVICE, on = %bound, role, "advertising over mDNS (--no-advertise turns it off)");
            Some(a)
        }
        Err(e) => {
            tracing::warn!(
                "cannot advertise over mDNS, engines and clients must be told the address: {e}"
            );
            None
        }
    }
}
