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
            "ListenAddress 127.0.0.1:{port}\nHostKey {}\nPidFile {}\nUsePAM no\nStrictModes no\nPasswordAuthentication no\n",
            key.display(),
            dir.join("sshd.pid").display()
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
