//! deploy/: the boot wrapper starts a real engine in the pools its env file
//! names; shellcheck, systemd-analyze, the Puppet parser and puppet-lint
//! pass; and a `puppet apply` of the module against a scratch root lays down
//! a configuration whose installed wrapper starts an engine in pool `gpu`.
//! The tools come from Debian's packages, which `.ci/run` installs; without
//! them (outside CI) those tests are skipped with a note.

use drqueue_tests::{bin, eventually, signal, Farm};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the repository")
        .to_path_buf()
}

fn wrapper() -> PathBuf {
    repo().join("deploy/bin/drqueue-engine-wrapper")
}

/// A tool from Debian's packages, or None (with a note) outside CI.
fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file());
    if found.is_none() {
        drqueue_common::test_skip::skip(&format!(
            "{name} is not installed (apt-get install {name})"
        ));
    }
    found
}

fn engines_json(farm: &Farm) -> Vec<Value> {
    let out = farm.drqueue(&["engines", "--json"]);
    serde_json::from_slice::<Value>(&out.stdout)
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
}

/// Waits for engine `name` to be online; answers its pools.
fn pools_of(farm: &Farm, name: &str) -> Vec<String> {
    eventually(LONG, &format!("engine {name} to register"), || {
        engines_json(farm)
            .into_iter()
            .find(|e| e["name"] == name && e["state"] != "offline")
            .map(|e| serde_json::from_value(e["pools"].clone()).unwrap_or_default())
    })
}

/// A started wrapper (then engine), killed if the test fails before `stop`.
struct Started(Option<Child>);

impl Drop for Started {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn run_wrapper(wrapper: &Path, env_file: &Path, extra_env: &[(&str, &str)]) -> Started {
    let mut cmd = Command::new(wrapper);
    cmd.env("DRQUEUE_ENV_FILE", env_file)
        .env_remove("DRQUEUE_POOL")
        .env_remove("DRQUEUE_MASTER")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    Started(Some(cmd.spawn().expect("start the wrapper")))
}

impl Started {
    fn id(&self) -> u32 {
        self.0.as_ref().map_or(0, |c| c.id())
    }

    fn output(mut self) -> std::process::Output {
        let c = self.0.take().expect("started");
        c.wait_with_output().expect("wait")
    }
}

fn stop(mut started: Started) -> std::process::ExitStatus {
    let mut child = started.0.take().expect("started");
    signal(child.id(), libc::SIGTERM);
    child.wait().expect("wait")
}

#[test]
fn the_wrapper_starts_an_engine_in_the_pools_its_env_file_names() {
    let farm = Farm::start();
    let dir = farm.dir.join("wrapped");
    std::fs::create_dir_all(&dir).unwrap();
    let env_file = dir.join("engine.env");
    std::fs::write(
        &env_file,
        format!(
            "# boot settings\nDRQUEUE_MASTER={}\nDRQUEUE_POOL=\"gpu,lookdev\"\nDRQUEUE_SLOTS=2\n\
             DRQUEUE_ENGINE_NAME=wrapped\nDRQUEUE_ENGINE_BIN={}\nDRQUEUE_STATE_DIR={}\n\
             DRQUEUE_LOG_FILE={}\nDRQUEUE_LOG_MAX_BYTES=200\nDRQUEUE_LOG_KEEP=2\n",
            farm.engines_endpoint,
            bin("drqueue-engine").display(),
            dir.join("state").display(),
            dir.join("log/engine.log").display(),
        ),
    )
    .unwrap();
    let child = run_wrapper(&wrapper(), &env_file, &[]);
    let pid = child.id();
    assert_eq!(pools_of(&farm, "wrapped"), ["gpu", "lookdev"]);
    let e = engines_json(&farm)
        .into_iter()
        .find(|e| e["name"] == "wrapped")
        .unwrap();
    assert_eq!(e["slots"], 2);
    // exec: the wrapper's process *is* the engine, so signals reach it.
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    assert!(exe.ends_with("drqueue-engine"), "{}", exe.display());
    // The log went to the file, rotated at 200 bytes (each line is more).
    eventually(LONG, "the log to rotate", || {
        dir.join("log/engine.log.1").exists().then_some(())
    });
    let status = stop(child);
    assert!(
        status.success(),
        "the engine stops cleanly on SIGTERM: {status}"
    );
    let all = std::fs::read_to_string(dir.join("log/engine.log")).unwrap()
        + &std::fs::read_to_string(dir.join("log/engine.log.1")).unwrap();
    assert!(all.contains("engine stopping"), "{all}");
    assert!(!dir.join("log/engine.log.3").exists(), "keeps 2 old files");
}

#[test]
fn the_wrapper_refuses_missing_or_bad_settings_clearly() {
    let dir = std::env::temp_dir().join(format!("drqueue-wrapper-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let engine = bin("drqueue-engine").display().to_string();
    let cases: &[(&str, &str)] = &[
        ("DRQUEUE_MASTER=tcp://m:5555\n", "does not set DRQUEUE_POOL"),
        (
            "DRQUEUE_MASTER=tcp://m:5555\nDRQUEUE_POOL=gpu\nDRQUEUE_SLOTS=two\n",
            "DRQUEUE_SLOTS=two is not a number",
        ),
        (
            "DRQUEUE_MASTER=tcp://m:5555\nDRQUEUE_POOL=gpu\nPATH=/evil\n",
            "unknown setting 'PATH'",
        ),
        (
            "DRQUEUE_MASTER=tcp://m:5555\nDRQUEUE_POOL=gpu\nDRQUEUE_JOIN_TOKEN_FILE=/nonexistent/join.token\n",
            "DRQUEUE_JOIN_TOKEN_FILE=/nonexistent/join.token is not readable",
        ),
        (
            "DRQUEUE_MASTER=tcp://m:5555\nDRQUEUE_POOL=gpu\nDRQUEUE_KEY_FILE=/etc/drqueue/farm.key\n",
            "the farm key is gone",
        ),
        (
            "DRQUEUE_MASTER=tcp://m:5555\nDRQUEUE_POOL=gpu\nDRQUEUE_ENGINE_BIN=/nonexistent/engine\n",
            "cannot find /nonexistent/engine",
        ),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let env_file = dir.join(format!("case{i}.env"));
        let text = if text.contains("ENGINE_BIN") {
            text.to_string()
        } else {
            format!("{text}DRQUEUE_ENGINE_BIN={engine}\n")
        };
        std::fs::write(&env_file, &text).unwrap();
        let out = run_wrapper(&wrapper(), &env_file, &[]).output();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{text}: {stderr}");
        assert!(stderr.contains(want), "{text}: wanted {want:?} in {stderr}");
    }
    let out = run_wrapper(&wrapper(), &dir.join("missing.env"), &[]).output();
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn every_script_passes_shellcheck() {
    let Some(shellcheck) = tool("shellcheck") else {
        return;
    };
    let r = repo();
    let scripts = [
        r.join("deploy/bin/drqueue-engine-wrapper"),
        r.join("deploy/debian/postinst"),
        r.join("scripts/test"),
        r.join("scripts/farm"),
        r.join(".ci/run"),
    ];
    let out = Command::new(shellcheck).args(&scripts).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn the_systemd_units_verify() {
    let Some(analyze) = tool("systemd-analyze") else {
        return;
    };
    // Verify copies whose programs exist here (they live in /usr/bin on a node).
    let dir = std::env::temp_dir().join(format!("drqueue-units-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut units = Vec::new();
    for unit in ["drqueue-engine.service", "drqueue-master.service"] {
        let text = std::fs::read_to_string(repo().join("deploy/systemd").join(unit)).unwrap();
        let text = text.replace(
            "/usr/bin/drqueue-engine-wrapper",
            &wrapper().display().to_string(),
        );
        let text = text.replace(
            "/usr/bin/drqueue-master",
            &bin("drqueue-master").display().to_string(),
        );
        assert!(!text.contains("/usr/bin/"), "{unit} names another program");
        std::fs::write(dir.join(unit), text).unwrap();
        units.push(dir.join(unit));
    }
    let out = Command::new(analyze)
        .arg("verify")
        .args(&units)
        .output()
        .unwrap();
    let all =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && all.trim().is_empty(), "{all}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs a checker; fails the test with its output unless it passes.
fn passes(cmd: &mut Command) {
    let out = cmd.output().expect("run the checker");
    assert!(
        out.status.success(),
        "{:?}:\n{}{}",
        cmd,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `puppet apply` with scratch directories, against a scratch root.
fn puppet_apply(puppet: &Path, work: &Path, manifest: &str) -> (i32, String) {
    let out = Command::new(puppet)
        .arg("apply")
        .arg("--detailed-exitcodes")
        .arg("--color=false")
        .arg("--modulepath")
        .arg(repo().join("deploy/puppet"))
        .args(
            ["--vardir", "--confdir", "--logdir", "--codedir"]
                .iter()
                .flat_map(|flag| {
                    let d = work.join(flag.trim_start_matches('-'));
                    [flag.to_string(), d.display().to_string()]
                }),
        )
        .arg("-e")
        .arg(manifest)
        .output()
        .expect("run puppet");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn the_puppet_module_validates_lints_and_applies_an_engine_that_joins_its_pool() {
    let (Some(puppet), Some(lint)) = (tool("puppet"), tool("puppet-lint")) else {
        return;
    };
    let module = repo().join("deploy/puppet/drqueue");
    let files_in = |dir: &str| -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(module.join(dir))
            .expect("module directory")
            .map(|e| e.expect("entry").path())
            .collect();
        v.sort();
        v
    };
    passes(
        Command::new(&puppet)
            .args(["parser", "validate"])
            .args(files_in("manifests")),
    );
    passes(
        Command::new(&puppet)
            .args(["epp", "validate"])
            .args(files_in("templates")),
    );
    passes(Command::new(&lint).arg("--fail-on-warnings").arg(&module));

    // A farm for the engine Puppet sets up to join, with a join token.
    let farm = Farm::start_with(&["--require-enrollment"]);
    let out = farm.drqueue(&["engine", "join-token", "--uses", "1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let port = farm
        .engines_endpoint
        .rsplit(':')
        .next()
        .unwrap()
        .to_string();
    let work = farm.dir.join("puppet");
    let root = work.join("root");
    let bins = work.join("bin");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::create_dir_all(&bins).unwrap();
    for b in ["drqueue-engine", "drqueue-master", "drqueue"] {
        std::os::unix::fs::symlink(bin(b), bins.join(b)).unwrap();
    }
    let r = root.display();
    // No systemd in this container: the `base` provider with stub commands.
    let manifest = format!(
        "class {{ 'drqueue': root => '{r}', install_from => 'path', bin_path => '{b}',
            master_host => '127.0.0.1', engine_port => {port}, manage_user => false,
            join_token => '{token}',
            config_group => 'root', service_provider => 'base',
            service_options => {{ start => 'touch {r}/started', status => 'test -e {r}/started',
                                  stop => 'rm -f {r}/started' }} }}
         class {{ 'drqueue::engine': pools => ['gpu'], slots => 2, engine_name => 'puppeted' }}
         class {{ 'drqueue::master': smtp => 'smtp://mail.example.com:25',
                                    mail_from => 'farm@example.com', tokens => ['t0ken'] }}",
        b = bins.display()
    );
    let (code, text) = puppet_apply(&puppet, &work, &manifest);
    assert_eq!(code, 2, "changes applied, no failures:\n{text}");
    let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap_or_default();
    assert_eq!(
        read("etc/drqueue/engine.env"),
        format!(
            "# Managed by Puppet (drqueue::engine). Read by drqueue-engine-wrapper at boot.\n\
             DRQUEUE_MASTER=tcp://127.0.0.1:{port}\nDRQUEUE_POOL=gpu\nDRQUEUE_SLOTS=2\n\
             DRQUEUE_ENGINE_NAME=puppeted\nDRQUEUE_JOIN_TOKEN_FILE={r}/etc/drqueue/join.token\n"
        )
    );
    assert_eq!(read("etc/drqueue/join.token"), format!("{token}\n"));
    let master_env = read("etc/drqueue/master.env");
    for want in [
        "DRQUEUE_DB=/var/lib/drqueue/master\n",
        "DRQUEUE_KEYS_DIR=/var/lib/drqueue/keys\n",
        &format!("DRQUEUE_ENGINES=tcp://0.0.0.0:{port}\n"),
        "DRQUEUE_HTTP=0.0.0.0:5580\n",
        "DRQUEUE_TOKEN_FILE=/etc/drqueue/tokens\n",
        "DRQUEUE_SMTP=smtp://mail.example.com:25\n",
        "DRQUEUE_MAIL_FROM=farm@example.com\n",
    ] {
        assert!(
            master_env.contains(want),
            "master.env lacks {want:?}:\n{master_env}"
        );
    }
    assert_eq!(read("etc/drqueue/tokens"), "t0ken");
    assert_eq!(
        read("usr/bin/drqueue-engine-wrapper"),
        std::fs::read_to_string(wrapper()).unwrap()
    );
    for unit in ["drqueue-engine.service", "drqueue-master.service"] {
        assert_eq!(
            read(&format!("etc/systemd/system/{unit}")),
            std::fs::read_to_string(repo().join("deploy/systemd").join(unit)).unwrap()
        );
    }
    assert_eq!(
        std::fs::read_link(root.join("usr/bin/drqueue-engine")).unwrap(),
        bins.join("drqueue-engine")
    );
    assert!(root.join("started").exists(), "the service was started");
    // Applying again changes nothing.
    let (code, text) = puppet_apply(&puppet, &work, &manifest);
    assert_eq!(code, 0, "a second apply is a no-op:\n{text}");

    // The installed wrapper, with the installed configuration, starts an
    // engine that enrolls with the token and joins pool gpu.
    let path = format!(
        "{}:{}",
        root.join("usr/bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let state = work.join("state").display().to_string();
    let child = run_wrapper(
        &root.join("usr/bin/drqueue-engine-wrapper"),
        &root.join("etc/drqueue/engine.env"),
        &[("PATH", &path), ("DRQUEUE_STATE_DIR", &state)],
    );
    assert_eq!(pools_of(&farm, "puppeted"), ["gpu"]);
    assert!(stop(child).success());
}
