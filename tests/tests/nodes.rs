//! Finding render nodes: `drqueue nodes scan` against a real OpenSSH
//! server that the test starts on a loopback port with its own host key.
//! Only 127.0.0.0/8 is contacted.

use drqueue_tests::{eventually, Farm};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// An sshd of the test's own, killed when dropped.
struct Sshd {
    child: Child,
    port: u16,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sshd_binary() -> Option<PathBuf> {
    drqueue_tests::which("sshd").or_else(|| {
        let p = PathBuf::from("/usr/sbin/sshd");
        p.is_file().then_some(p)
    })
}

/// Starts sshd on a free loopback port, in `dir`.
fn start_sshd(sshd: &Path, dir: &Path) -> Sshd {
    std::fs::create_dir_all(dir).unwrap();
    let key = dir.join("host_key");
    let made = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status()
        .expect("run ssh-keygen");
    assert!(made.success());
    // Privilege separation wants its empty folder (the package's service
    // makes it at boot, which a container never has).
    let _ = std::fs::create_dir_all("/run/sshd");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let config = dir.join("sshd_config");
    std::fs::write(
        &config,
        format!(
            "ListenAddress 127.0.0.1:{port}\nHostKey {}\nPidFile {}\nUsePAM no\nStrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nAuthorizedKeysFile {}\n",
            key.display(),
            dir.join("sshd.pid").display(),
            dir.join("authorized_keys").display()
        ),
    )
    .unwrap();
    let child = Command::new(sshd)
        .args(["-D", "-e", "-f"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("sshd.log")).unwrap())
        .spawn()
        .expect("start sshd");
    let server = Sshd { child, port };
    eventually(Duration::from_secs(10), "sshd to listen", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    server
}

#[test]
fn a_scan_of_the_loopback_range_finds_the_ssh_server_and_its_banner() {
    let Some(sshd) = sshd_binary() else {
        drqueue_common::test_skip::skip("sshd is not installed (apt-get install openssh-server)");
        return;
    };
    let farm = Farm::start();
    let server = start_sshd(&sshd, &farm.dir.join("sshd"));
    let port = server.port.to_string();
    let out = farm.drqueue(&[
        "nodes",
        "scan",
        "127.0.0.1-127.0.0.3",
        "--port",
        &port,
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let found: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let hosts = found.as_array().expect("a list");
    assert_eq!(hosts.len(), 1, "{found}");
    assert_eq!(hosts[0]["host"], "127.0.0.1");
    assert!(
        hosts[0]["banner"]
            .as_str()
            .unwrap_or("")
            .starts_with("SSH-2.0-OpenSSH"),
        "{found}"
    );
    let out = farm.drqueue(&["nodes", "scan", "127.0.0.0/30", "--port", &port]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("1 of 2 addresses accept connections"),
        "{said}"
    );
    // A bad range is a usage error that says what is wrong.
    let out = farm.drqueue(&["nodes", "scan", "127.0.0.9-127.0.0.1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("after the last"));
}

/// A key pair made by the test, `dir/NAME` and `dir/NAME.pub`.
fn keygen(dir: &Path, name: &str) -> PathBuf {
    let key = dir.join(name);
    let made = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&key)
        .status()
        .expect("run ssh-keygen");
    assert!(made.success());
    key
}

fn user() -> String {
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    let out = Command::new("id").args(["-un"]).output().expect("id -un");
    let name = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if name.is_empty() {
        uid.to_string()
    } else {
        name
    }
}

/// An ssh config of the test's own: `node-a` and `node-b` reach the test's
/// sshd with the authorized key, `refused` with a key it does not know.
fn ssh_config(dir: &Path, port: u16, good: &Path, bad: &Path) -> PathBuf {
    let common = format!(
        "  HostName 127.0.0.1\n  Port {port}\n  User {}\n  IdentitiesOnly yes\n  UserKnownHostsFile {}\n  StrictHostKeyChecking accept-new\n  LogLevel ERROR\n",
        user(),
        dir.join("known_hosts").display()
    );
    let text = format!(
        "Host refused\n  IdentityFile {}\n{common}\nHost node-a node-b\n  IdentityFile {}\n{common}",
        bad.display(),
        good.display()
    );
    let path = dir.join("ssh_config");
    std::fs::write(&path, text).unwrap();
    path
}

fn alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid as i32, 0) == 0 }
}

/// Processes whose command line mentions `needle`: (pid, command line).
fn processes_mentioning(needle: &str) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|p| p.parse().ok()) else {
            continue;
        };
        if let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(needle) {
                found.push((pid, cmd));
            }
        }
    }
    found
}

/// Kills what a failed run of the test left on its "nodes".
struct Reaper(Vec<String>);

impl Drop for Reaper {
    fn drop(&mut self) {
        for prefix in &self.0 {
            for (pid, _) in processes_mentioning(prefix) {
                // SAFETY: a signal to a process this test started.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
        }
    }
}

#[test]
fn engines_deployed_over_ssh_run_jobs_upgrade_in_place_and_undeploy_cleanly() {
    let Some(sshd) = sshd_binary() else {
        drqueue_common::test_skip::skip("sshd is not installed (apt-get install openssh-server)");
        return;
    };
    let farm = Farm::start();
    let dir = farm.dir.join("ssh");
    let server = start_sshd(&sshd, &dir);
    let good = keygen(&dir, "client_key");
    let bad = keygen(&dir, "unknown_key");
    std::fs::copy(good.with_extension("pub"), dir.join("authorized_keys")).unwrap();
    let config = ssh_config(&dir, server.port, &good, &bad);
    let config = config.to_str().unwrap();
    let (prefix_a, prefix_b) = (farm.dir.join("node-a"), farm.dir.join("node-b"));
    let (prefix_a, prefix_b) = (prefix_a.to_str().unwrap(), prefix_b.to_str().unwrap());
    let _reaper = Reaper(vec![prefix_a.to_string(), prefix_b.to_string()]);
    let deploy = |hosts: &str, prefix: &str| {
        let out = farm.drqueue_env(
            &[
                "--json",
                "engine",
                "deploy",
                "--ssh",
                hosts,
                "--prefix",
                prefix,
                "--ssh-config",
                config,
                "--slots",
                "2",
            ],
            &[("SSH_AUTH_SOCK", "")],
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| panic!("deploy --json: {}", String::from_utf8_lossy(&out.stderr)));
        (
            out.status.code(),
            v,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    // One host refuses the key: it fails with a clear error, the other deploys.
    let (code, v, said) = deploy("node-a,refused", prefix_a);
    assert_eq!(
        code,
        Some(1),
        "a failed host makes the exit non-zero: {said}"
    );
    assert_eq!(v[0]["host"], "node-a");
    assert_eq!(
        (v[0]["ok"].as_bool(), v[0]["detail"].as_str()),
        (Some(true), Some("installed")),
        "{v}\n{said}"
    );
    assert_eq!(v[1]["ok"], false);
    assert!(
        v[1]["detail"]
            .as_str()
            .unwrap()
            .contains("Permission denied"),
        "{v}"
    );
    assert!(said.contains("refused: FAILED"), "{said}");
    let first_pid = v[0]["pid"].as_u64().unwrap() as u32;
    // A second "host": the same sshd, another prefix.
    let (code, v, said) = deploy("node-b", prefix_b);
    assert_eq!(code, Some(0), "{said}");
    assert_eq!(v[0]["detail"], "installed");
    let pid_b = v[0]["pid"].as_u64().unwrap() as u32;
    farm.wait_engines(2);
    let env = std::fs::read_to_string(Path::new(prefix_a).join("engine.env")).unwrap();
    assert!(
        env.contains("DRQUEUE_JOIN_TOKEN=") && env.contains("DRQUEUE_SLOTS=2"),
        "{env}"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(Path::new(prefix_a).join("engine.env"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "the env file holds a token: private");

    let job = farm.submit(&["--frames", "1-6", "--", "true"]);
    assert_eq!(
        farm.wait_job(job, Duration::from_secs(60)).status.as_str(),
        "done"
    );
    let engines = farm.client().engines().unwrap();
    assert_eq!(engines.len(), 2, "{engines:?}");

    // Again: an upgrade in place, the same engine restarted.
    let (code, v, said) = deploy("node-a", prefix_a);
    assert_eq!(code, Some(0), "{said}");
    assert_eq!(v[0]["detail"], "upgraded");
    let second_pid = v[0]["pid"].as_u64().unwrap() as u32;
    assert_ne!(first_pid, second_pid);
    assert!(!alive(first_pid), "the old engine stopped");
    farm.wait_engines(2);
    assert_eq!(
        farm.client().engines().unwrap().len(),
        2,
        "the same engine, not a new one"
    );

    // Undeploy leaves nothing behind.
    for (host, prefix) in [("node-a", prefix_a), ("node-b", prefix_b)] {
        let out = farm.drqueue(&[
            "engine",
            "undeploy",
            "--ssh",
            host,
            "--prefix",
            prefix,
            "--ssh-config",
            config,
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!Path::new(prefix).exists(), "{prefix} removed");
    }
    eventually(Duration::from_secs(10), "the engines to exit", || {
        (!alive(second_pid) && !alive(pid_b)).then_some(())
    });
    let left = processes_mentioning(prefix_a);
    let left_b = processes_mentioning(prefix_b);
    assert!(left.is_empty() && left_b.is_empty(), "{left:?} {left_b:?}");
}
