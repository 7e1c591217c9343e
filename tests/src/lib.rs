//! The end-to-end test fixture: a real farm of `drqueue-master` and
//! `drqueue-engine` processes in a temporary directory, talking real ZeroMQ
//! and HTTP, driven by the real `drqueue` CLI or the client library.
//!
//! The binaries are found beside the test executable's directory
//! (`target/<profile>/`); `cargo test --workspace` builds them first because
//! each binary crate has tests. A failing test prints the processes' logs.

pub mod netns;
pub mod openapi_check;
pub mod raw_engine;
pub mod renders;

use drqueue_client::Client;
use drqueue_common::model::{JobId, JobView};
use drqueue_runner::contain::{Choice, Containment};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Where `program` is on the test process's own PATH (to link it into an
/// engine's hermetic PATH).
pub fn which(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// A PNG's width, height and decoded pixels (comparing images, not bytes).
pub fn decode_png(path: &Path) -> (u32, u32, Vec<u8>) {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut reader = png::Decoder::new(std::io::BufReader::new(file))
        .read_info()
        .unwrap_or_else(|e| panic!("{} does not decode: {e}", path.display()));
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).expect("image data");
    buf.truncate(info.buffer_size());
    (info.width, info.height, buf)
}

/// Path of one of the workspace's binaries.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target directory");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first (`cargo build --workspace --bins`, which the README's test command does)",
        path.display()
    );
    path
}

/// Writes an executable script `name` into `dir` (created if need be): a
/// stand-in renderer for tests, found by engines through their PATH.
pub fn fake_program(dir: &Path, name: &str, script: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).expect("fake program directory");
    let path = dir.join(name);
    std::fs::write(&path, script).expect("write fake program");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
        .expect("make fake program executable");
    path
}

/// The shell and core tools tasks in these tests run, and nothing else:
/// no renderer the host happens to have installed can reach an engine.
const BASE_TOOLS: &[&str] = &[
    "sh", "bash", "true", "false", "sleep", "echo", "printf", "cat", "test", "[", "touch", "mkdir",
    "rm", "mv", "cp", "ls", "env", "setsid", "seq", "head", "tail", "wc", "date", "dd", "kill",
    "sync", "yes", "id", "uname", "grep", "sed", "awk", "dirname", "basename", "tr", "cut", "sort",
    "tee", "expr", "chmod", "ln", "readlink", "stat", "nproc", "pwd",
];

/// A directory of links to [`BASE_TOOLS`], made once per test process: the
/// PATH every engine of a [`Farm`] gets unless a test says otherwise.
pub fn base_path() -> &'static str {
    static DIR: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("drqueue-test-bin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("base tools directory");
        for tool in BASE_TOOLS {
            let found = ["/usr/bin", "/bin"]
                .iter()
                .map(|d| Path::new(d).join(tool))
                .find(|p| p.is_file());
            if let Some(target) = found {
                let link = dir.join(tool);
                let _ = std::fs::remove_file(&link);
                std::os::unix::fs::symlink(target, link).expect("link a base tool");
            }
        }
        dir.display().to_string()
    })
}

/// A PATH of `dir` in front of the base tools: a test's stand-in renderers
/// and nothing from the host.
pub fn path_with(dir: &Path) -> String {
    format!("{}:{}", dir.display(), base_path())
}

/// Links one host program (a real renderer a test needs) into `dir`, for
/// [`path_with`].
pub fn link_program(dir: &Path, program: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).expect("program directory");
    let name = program.file_name().expect("a program file name");
    let link = dir.join(name);
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(program, &link).expect("link program");
    link
}

/// Polls `f` until it returns Some, or panics after `limit` with `what`.
/// The limit is a safety net against a hang, not a performance assertion.
pub fn eventually<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "gave up after {limit:?} waiting for: {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A fresh database on the test MongoDB server (`DRQUEUE_TEST_MONGO_URI`),
/// or None with a visible note when there is none.
pub fn test_mongo_db(name: &str) -> Option<String> {
    let Some(uri) = std::env::var("DRQUEUE_TEST_MONGO_URI")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        drqueue_common::test_skip::skip(
            "no MongoDB (set DRQUEUE_TEST_MONGO_URI; scripts/test starts one)",
        );
        return None;
    };
    let (base, query) = uri.split_once('?').unwrap_or((&uri, ""));
    let hosts = base
        .trim_start_matches("mongodb://")
        .split('/')
        .next()
        .unwrap_or("");
    let db = format!(
        "{name}{}x{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    );
    Some(format!("mongodb://{hosts}/{db}?{query}"))
}

/// A MongoDB-wire test server of a test's own (nx-27017 on a file database),
/// for tests that stop and start it. None (with a visible note) when
/// `DRQUEUE_TEST_NX` does not name the server's executable.
pub struct TestMongo {
    exe: PathBuf,
    file: PathBuf,
    pub port: u16,
    child: Option<Child>,
}

impl TestMongo {
    pub fn start(dir: &Path) -> Option<TestMongo> {
        let Some(exe) = std::env::var_os("DRQUEUE_TEST_NX")
            .map(PathBuf::from)
            .filter(|p| p.exists())
        else {
            drqueue_common::test_skip::skip(
                "no MongoDB test server (set DRQUEUE_TEST_NX; scripts/test does)",
            );
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let mut m = TestMongo {
            exe,
            file: dir.join("mongo.db"),
            port,
            child: None,
        };
        m.resume();
        Some(m)
    }

    pub fn uri(&self, db: &str) -> String {
        format!(
            "mongodb://127.0.0.1:{}/{db}?directConnection=true",
            self.port
        )
    }

    /// Starts (again) on the same port and file.
    pub fn resume(&mut self) {
        let child = Command::new(&self.exe)
            .arg("--db")
            .arg(&self.file)
            .args(["--host", "127.0.0.1", "-p", &self.port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nx-27017");
        self.child = Some(child);
        let addr = format!("127.0.0.1:{}", self.port);
        eventually(
            Duration::from_secs(30),
            "the MongoDB test server to listen",
            || std::net::TcpStream::connect(&addr).ok().map(|_| ()),
        );
    }

    /// Stops the server (as an outage would).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(c.id(), libc::SIGTERM);
            let _ = c.wait();
        }
    }
}

impl Drop for TestMongo {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A real SMTP server for a test: aiosmtpd (from PyPI, which `scripts/test`
/// installs and names in `DRQUEUE_TEST_SMTPD`) writing each mail it accepts
/// into a maildir, with the envelope in `X-MailFrom` / `X-RcptTo` headers.
pub struct TestSmtp {
    python: PathBuf,
    maildir: PathBuf,
    pub port: u16,
    child: Option<Child>,
}

impl TestSmtp {
    /// A server on a free port, not yet started; None (with a visible note)
    /// without aiosmtpd, which CI must have.
    pub fn new(dir: &Path) -> Option<TestSmtp> {
        let Some(python) = std::env::var_os("DRQUEUE_TEST_SMTPD").filter(|p| !p.is_empty()) else {
            drqueue_common::test_skip::skip(
                "no SMTP test server (run the tests with scripts/test)",
            );
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        Some(TestSmtp {
            python: python.into(),
            maildir: dir.join(format!("maildir-{port}")),
            port,
            child: None,
        })
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    pub fn start(&mut self) {
        let child = Command::new(&self.python)
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{}", self.port))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&self.maildir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start aiosmtpd");
        self.child = Some(child);
        let addr = format!("127.0.0.1:{}", self.port);
        eventually(Duration::from_secs(30), "the SMTP server to listen", || {
            std::net::TcpStream::connect(&addr).ok().map(|_| ())
        });
    }

    /// Stops it, as an outage would.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Every mail received so far, headers and body as text.
    pub fn messages(&self) -> Vec<String> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.maildir.join("new"))
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.sort();
        files
            .iter()
            .filter_map(|f| std::fs::read_to_string(f).ok())
            .collect()
    }
}

impl Drop for TestSmtp {
    fn drop(&mut self) {
        self.stop();
    }
}

pub struct EngineProc {
    pub child: Child,
    pub name: String,
    pub state_dir: PathBuf,
    stopped: bool,
}

pub struct Farm {
    pub dir: PathBuf,
    pub http: String,
    pub engines_endpoint: String,
    master: Option<Child>,
    master_args: Vec<String>,
    /// `--db`: the farm directory's store, or a MongoDB URI.
    pub db: String,
    pub engines: Vec<EngineProc>,
    starts: u32,
    /// The API token [`Farm::client`] and [`Farm::drqueue`] send (a farm
    /// with users; see [`farm_with_admin`]).
    pub token: Option<String>,
    /// The master registers itself over mDNS (only inside a private network
    /// namespace: see `netns`); every other farm runs `--no-advertise`.
    advertise: bool,
    /// Engines are started with no `--master`: they find it themselves.
    pub engines_discover: bool,
}

impl Farm {
    /// A master on free ports with the embedded store.
    pub fn start() -> Farm {
        Farm::start_with(&[])
    }

    pub fn start_with(master_args: &[&str]) -> Farm {
        Farm::start_on(None, master_args)
    }

    /// A master on `db` (a `mongodb://` URI), or the embedded store if None.
    pub fn start_on(db: Option<&str>, master_args: &[&str]) -> Farm {
        let mut farm = Farm::prepare(db, master_args);
        farm.start_master();
        farm
    }

    /// A master that advertises itself over mDNS, and engines started with
    /// no address. Only inside [`netns::private_network`].
    pub fn start_advertising(db: Option<&str>, master_args: &[&str]) -> Farm {
        let mut farm = Farm::prepare(db, master_args);
        farm.advertise = true;
        farm.engines_discover = true;
        farm.start_master();
        farm
    }

    fn prepare(db: Option<&str>, master_args: &[&str]) -> Farm {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("drqueue-e2e-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let db = db
            .map(String::from)
            .unwrap_or_else(|| dir.join("db").display().to_string());
        Farm {
            dir,
            http: "127.0.0.1:0".into(),
            engines_endpoint: "tcp://127.0.0.1:0".into(),
            master: None,
            master_args: master_args.iter().map(|s| s.to_string()).collect(),
            db,
            engines: Vec::new(),
            starts: 0,
            token: None,
            advertise: false,
            engines_discover: false,
        }
    }

    /// Starts the master (again) on the same addresses and store.
    pub fn start_master(&mut self) {
        let ready = self.dir.join("ready.json");
        let _ = std::fs::remove_file(&ready);
        self.starts += 1;
        let log = std::fs::File::create(self.dir.join(format!("master.{}.log", self.starts)))
            .expect("log file");
        let http = self.http.trim_start_matches("http://").to_string();
        let child = Command::new(bin("drqueue-master"))
            .args(["--db", &self.db])
            .args(["--http", &http, "--engines", &self.engines_endpoint])
            .arg("--ready-file")
            .arg(&ready)
            .args(&self.master_args)
            // Each farm its own master key and enrollment, also on MongoDB
            // (whose default keys dir is not the farm's).
            .args(keys_dir_unless_given(&self.master_args, &self.dir))
            .args((!self.advertise).then_some("--no-advertise"))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start drqueue-master");
        self.master = Some(child);
        let text = eventually(Duration::from_secs(30), "the master's ready file", || {
            if let Some(status) = self
                .master
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "drqueue-master exited early ({status}):\n{}",
                    self.master_log()
                );
            }
            std::fs::read_to_string(&ready).ok()
        });
        let v: serde_json::Value = serde_json::from_str(&text).expect("ready file is JSON");
        self.http = v["http"].as_str().expect("http in ready file").to_string();
        self.engines_endpoint = v["engines"]
            .as_str()
            .expect("engines in ready file")
            .to_string();
    }

    /// The running master's process id.
    pub fn master_pid(&self) -> Option<u32> {
        self.master.as_ref().map(|c| c.id())
    }

    /// The master's exit status, once it has exited (without waiting).
    pub fn master_exited(&mut self) -> Option<std::process::ExitStatus> {
        self.master
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    pub fn kill_master(&mut self) {
        if let Some(mut c) = self.master.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, and wait for a clean exit.
    pub fn stop_master(&mut self) -> std::process::ExitStatus {
        let mut c = self.master.take().expect("master running");
        signal(c.id(), libc::SIGTERM);
        c.wait().expect("master exit")
    }

    pub fn master_log(&self) -> String {
        (1..=self.starts)
            .map(|i| {
                std::fs::read_to_string(self.dir.join(format!("master.{i}.log")))
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n--- restart ---\n")
    }

    /// Starts an engine named `name` with extra arguments (e.g. --slots 2).
    pub fn engine(&mut self, name: &str, args: &[&str]) -> usize {
        self.engine_with_env(name, args, &[])
    }

    pub fn engine_with_env(&mut self, name: &str, args: &[&str], env: &[(&str, &str)]) -> usize {
        self.engine_at(name, &format!("engine-{name}"), args, env)
    }

    /// An engine called `name` whose state lives in `state` (under the
    /// farm's directory): two may share one, as a misconfiguration would.
    pub fn engine_at(
        &mut self,
        name: &str,
        state: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> usize {
        let state_dir = self.dir.join(state);
        let log =
            std::fs::File::create(self.dir.join(format!("engine-{name}.log"))).expect("log file");
        let mut cmd = Command::new(bin("drqueue-engine"));
        if !args.contains(&"--master") && !self.engines_discover {
            cmd.args(["--master", &self.engines_endpoint]);
        }
        cmd.args(["--name", name])
            .arg("--state-dir")
            .arg(&state_dir)
            .args(args)
            .env("RUST_LOG", "info")
            .env("PATH", base_path())
            .env_remove("DRQUEUE_POOL")
            .env_remove("DRQUEUE_MASTER")
            .env_remove("DRQUEUE_DOMAIN")
            // No config file of the host's is read.
            .env("DRQUEUE_CONFIG", self.dir.join("no-config.toml"))
            .current_dir(&self.dir)
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("start drqueue-engine");
        self.engines.push(EngineProc {
            child,
            name: name.to_string(),
            state_dir,
            stopped: false,
        });
        self.engines.len() - 1
    }

    /// Waits until `n` engines are registered and online.
    pub fn wait_engines(&self, n: usize) {
        let c = self.client();
        eventually(
            Duration::from_secs(30),
            &format!("{n} engines online"),
            || {
                let e = c.engines().ok()?;
                (e.iter().filter(|e| e.state.as_str() != "offline").count() >= n).then_some(())
            },
        );
    }

    pub fn signal_engine(&mut self, i: usize, sig: i32) {
        signal(self.engines[i].child.id(), sig);
        if sig == libc::SIGSTOP {
            self.engines[i].stopped = true;
        }
        if sig == libc::SIGCONT {
            self.engines[i].stopped = false;
        }
        if sig == libc::SIGKILL {
            let _ = self.engines[i].child.wait();
        }
    }

    /// The engine's exit status, if it has exited.
    pub fn engine_exited(&mut self, i: usize) -> Option<std::process::ExitStatus> {
        self.engines[i].child.try_wait().ok().flatten()
    }

    pub fn engine_log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("engine-{name}.log"))).unwrap_or_default()
    }

    pub fn client(&self) -> Client {
        Client::new(Some(&self.http), self.token.as_deref())
    }

    /// Runs the `drqueue` CLI against this farm.
    pub fn drqueue(&self, args: &[&str]) -> Output {
        self.drqueue_env(args, &[])
    }

    pub fn drqueue_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(bin("drqueue"));
        cmd.args(args)
            .env("DRQUEUE_URL", &self.http)
            .env_remove("DRQUEUE_TOKEN")
            .current_dir(&self.dir);
        if let Some(t) = &self.token {
            cmd.env("DRQUEUE_TOKEN", t);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().expect("run drqueue")
    }

    /// Submits with the CLI and returns the job id it prints.
    pub fn submit(&self, args: &[&str]) -> JobId {
        let mut full = vec!["submit"];
        full.extend_from_slice(args);
        let out = self.drqueue(&full);
        assert!(
            out.status.success(),
            "submit failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("submit prints the job id")
    }

    /// Submits a job whose every task appends a line to `runs/<task>.txt`
    /// (so a second run of a task shows), prints `task N`, then sleeps.
    pub fn submit_counting(&self, frames: &str, sleep: &str) -> JobId {
        std::fs::create_dir_all(self.dir.join("runs")).expect("runs dir");
        let command = format!("echo run >> runs/$0.txt; echo task $0; sleep {sleep}");
        self.submit(&["--frames", frames, "--", "sh", "-c", &command, "{task}"])
    }

    /// How many times a task of [`Farm::submit_counting`]'s job ran.
    pub fn runs_of(&self, task: u32) -> usize {
        std::fs::read_to_string(self.dir.join(format!("runs/{task}.txt")))
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }

    /// Waits for a job to end and returns its final view.
    pub fn wait_job(&self, id: JobId, limit: Duration) -> JobView {
        let c = self.client();
        eventually(limit, &format!("job {id} to end"), || {
            let v = c.job(id).ok()?;
            v.status.is_terminal().then_some(v)
        })
    }
}

fn keys_dir_unless_given(args: &[String], dir: &Path) -> Vec<String> {
    if args.iter().any(|a| a == "--keys-dir") {
        Vec::new()
    } else {
        vec!["--keys-dir".into(), dir.join("keys").display().to_string()]
    }
}

/// A ZeroMQ message made of these frames (for tests that speak the protocol).
pub fn zmq_message(frames: Vec<bytes::Bytes>) -> zeromq::ZmqMessage {
    let mut it = frames.into_iter();
    let mut m = zeromq::ZmqMessage::from(it.next().unwrap_or_default());
    for f in it {
        m.push_back(f);
    }
    m
}

pub fn signal(pid: u32, sig: i32) {
    // SAFETY: sending a signal to a child process we started.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

impl Drop for Farm {
    fn drop(&mut self) {
        for e in &mut self.engines {
            if e.stopped {
                signal(e.child.id(), libc::SIGCONT);
            }
            let _ = e.child.kill();
            let _ = e.child.wait();
            // As the engine's next start would: end what it left running
            // and remove its cgroups, so test runs leave none behind.
            if let Ok(id) = std::fs::read_to_string(e.state_dir.join("engine-id")) {
                let left = Containment::new(id.trim(), Choice::Best);
                left.sweep();
            }
        }
        self.kill_master();
        if std::thread::panicking() {
            eprintln!("==== master log ====\n{}", tail(&self.master_log(), 60));
            for e in &self.engines {
                eprintln!(
                    "==== engine {} log ====\n{}",
                    e.name,
                    tail(&self.engine_log(&e.name), 30)
                );
            }
            eprintln!("(farm directory kept: {})", self.dir.display());
        } else if std::env::var_os("DRQUEUE_KEEP_TEST_DIRS").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Sends `request` (a whole HTTP/1.1 request, as written) to `http` (the
/// farm's `http://host:port`) on a fresh connection, and returns the status
/// and body: for requests no client library would make (a foreign `Host`, a
/// form post, a half-sent header).
pub fn raw_http(http: &str, request: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let addr = http.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the master's HTTP port");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    s.write_all(request.as_bytes()).expect("send the request");
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// A farm with users: the master makes its first admin and the token is
/// read back. Returns the farm and the admin's token.
pub fn farm_with_admin(extra: &[&str]) -> (Farm, String) {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let file = std::env::temp_dir().join(format!("drqueue-admin-{}-{n}", std::process::id()));
    let _ = std::fs::remove_file(&file);
    let path = file.display().to_string();
    let mut args = vec!["--admin-token-file", path.as_str()];
    args.extend_from_slice(extra);
    let mut farm = Farm::start_with(&args);
    let token = std::fs::read_to_string(&file)
        .expect("the admin token file")
        .trim()
        .to_string();
    let _ = std::fs::remove_file(&file);
    farm.token = Some(token.clone());
    (farm, token)
}
