//! `drqueue engine deploy --ssh` and `undeploy`: an engine installed,
//! upgraded, started or removed on render nodes over the system's `ssh`, so
//! `~/.ssh/config`, the agent and `known_hosts` behave as the user expects.
//! The binary goes through ssh too (`cat`), so nodes need no SFTP server
//! for scp; nothing is needed on the node beforehand but `sh`.
//!
//! On the node, everything lives under one prefix (default
//! `~/.local/drqueue`): `bin/drqueue-engine`, `engine.env` (the engine's
//! settings and join token, mode 0600), `state/`, `engine.log`, and
//! `engine.pid` when started with nohup. The remote steps are shell scripts
//! built here (pure functions, tested apart) and fed to `sh -s`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Hosts deployed at once.
pub const MAX_PARALLEL: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Start {
    /// A background process (`nohup`), its pid in `PREFIX/engine.pid`.
    Nohup,
    /// A systemd service `drqueue-engine` (a user service when not root).
    Systemd,
}

/// How to reach the nodes: extra `ssh` options.
#[derive(Debug, Clone, Default)]
pub struct Ssh {
    /// `-F FILE`.
    pub config: Option<PathBuf>,
    /// Each passed as `-o OPTION`.
    pub options: Vec<String>,
}

impl Ssh {
    fn args(&self) -> Vec<String> {
        let mut a = vec![
            "-o".into(),
            "BatchMode=yes".into(),
            "-o".into(),
            "ConnectTimeout=10".into(),
        ];
        if let Some(c) = &self.config {
            a.push("-F".into());
            a.push(c.display().to_string());
        }
        for o in &self.options {
            a.push("-o".into());
            a.push(o.clone());
        }
        a
    }

    /// Runs `script` on `host` with `sh -s`; its stdout, or an error with
    /// what ssh and the script said.
    fn run(&self, host: &str, script: &str) -> Result<String, String> {
        use std::io::Write;
        let mut child = Command::new("ssh")
            .args(self.args())
            .arg(host)
            .arg("sh -s")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run ssh: {e} (install openssh-client)"))?;
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(script.as_bytes());
        }
        let out = child.wait_with_output().map_err(|e| format!("ssh: {e}"))?;
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        Err(last_words(&out.stderr, out.status.code()))
    }

    /// Copies `file` to `to` on `host` through ssh itself (`cat`), so the
    /// node needs no SFTP subsystem and the same options apply.
    fn copy(&self, file: &Path, host: &str, to: &str) -> Result<(), String> {
        let input = std::fs::File::open(file)
            .map_err(|e| format!("cannot read the engine binary {}: {e}", file.display()))?;
        let out = Command::new("ssh")
            .args(self.args())
            .arg(host)
            .arg(format!("cat > {}", quote(to)))
            .stdin(input)
            .output()
            .map_err(|e| format!("cannot run ssh: {e} (install openssh-client)"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "copying the engine: {}",
                last_words(&out.stderr, out.status.code())
            ))
        }
    }
}

/// The last lines of a failed command's stderr, as one line.
fn last_words(stderr: &[u8], code: Option<i32>) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let tail = lines[lines.len().saturating_sub(3)..].join(" / ");
    match (tail.is_empty(), code) {
        (true, Some(c)) => format!("exit status {c}"),
        (true, None) => "killed by a signal".into(),
        (false, _) => tail,
    }
}

/// A value in single quotes for `sh` (and systemd's EnvironmentFile).
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// A prefix for `sh`: a leading `~/` is the remote user's home.
fn sh_path(prefix: &str) -> String {
    match prefix.strip_prefix("~/") {
        Some(rest) => format!("\"$HOME\"/{}", quote(rest)),
        None if prefix == "~" => "\"$HOME\"".into(),
        None => quote(prefix),
    }
}

/// What the engine is started with, written to `PREFIX/engine.env`.
#[derive(Debug, Clone)]
pub struct EngineEnv {
    pub master: String,
    pub join_token: String,
    pub pool: Option<String>,
    pub slots: u32,
}

/// Step 1: make the prefix, and report its absolute path and the machine.
pub fn prepare_script(prefix: &str) -> String {
    format!(
        "set -e\nmkdir -p {p}/bin {p}/state\ncd {p}\necho \"prefix=$(pwd)\"\necho \"arch=$(uname -m)\"\n",
        p = sh_path(prefix)
    )
}

/// Step 2 (after the binary is copied to `bin/drqueue-engine.new`): the env
/// file, the old engine stopped, the new one moved in and started, and a
/// check that it is still running a moment later.
pub fn install_script(prefix: &str, env: &EngineEnv, start: Start) -> String {
    let mut file = format!(
        "DRQUEUE_MASTER={}\nDRQUEUE_JOIN_TOKEN={}\nDRQUEUE_SLOTS={}\nDRQUEUE_STATE_DIR={}\nDRQUEUE_LOG_FILE={}\n",
        quote(&env.master),
        quote(&env.join_token),
        env.slots,
        quote(&format!("{prefix}/state")),
        quote(&format!("{prefix}/engine.log")),
    );
    if let Some(p) = &env.pool {
        file.push_str(&format!("DRQUEUE_POOL={}\n", quote(p)));
    }
    let mut s = format!("set -e\ncd {}\numask 077\n", quote(prefix));
    s.push_str(&format!(
        "cat > engine.env.new <<'DRQUEUE_ENV'\n{file}DRQUEUE_ENV\nmv engine.env.new engine.env\n"
    ));
    s.push_str(STOP_NOHUP);
    s.push_str("chmod 755 bin/drqueue-engine.new\nmv bin/drqueue-engine.new bin/drqueue-engine\n");
    match start {
        Start::Nohup => s.push_str(
            "(set -a; . ./engine.env; set +a; exec nohup bin/drqueue-engine </dev/null >>engine.out 2>&1) &\n\
             echo $! > engine.pid\nsleep 1\n\
             if ! kill -0 \"$(cat engine.pid)\" 2>/dev/null; then echo 'the engine exited at once:' >&2; tail -n 5 engine.out engine.log >&2 2>/dev/null; exit 1; fi\n\
             echo \"pid=$(cat engine.pid)\"\n",
        ),
        Start::Systemd => {
            s.push_str(&systemd_unit_script(prefix));
            s.push_str("$ctl daemon-reload\n$ctl enable drqueue-engine.service >/dev/null 2>&1\n$ctl restart drqueue-engine.service\nsleep 1\n$ctl is-active --quiet drqueue-engine.service || { echo 'the engine service is not running:' >&2; $ctl status drqueue-engine.service >&2 || true; exit 1; }\necho \"pid=$($ctl show -p MainPID --value drqueue-engine.service)\"\n");
        }
    }
    s.push_str("echo \"was=$was\"\n");
    s
}

/// Stops an engine started with nohup (TERM, then KILL after 15 s); sets
/// `was` to `running` or `absent` for the report.
const STOP_NOHUP: &str = "was=absent\n\
if [ -f engine.pid ]; then pid=$(cat engine.pid)\n\
  if kill -0 \"$pid\" 2>/dev/null; then was=running; kill -TERM \"$pid\"; n=0\n\
    while kill -0 \"$pid\" 2>/dev/null && [ $n -lt 150 ]; do sleep 0.1; n=$((n+1)); done\n\
    kill -KILL \"$pid\" 2>/dev/null || true; fi\n\
  rm -f engine.pid; fi\n\
[ -x bin/drqueue-engine ] && [ $was = absent ] && was=installed\n\
true\n";

fn systemd_unit_script(prefix: &str) -> String {
    format!(
        "if [ \"$(id -u)\" -eq 0 ]; then ctl=systemctl; unit=/etc/systemd/system/drqueue-engine.service; else ctl='systemctl --user'; unit=\"$HOME/.config/systemd/user/drqueue-engine.service\"; mkdir -p \"$(dirname \"$unit\")\"; fi\n\
cat > \"$unit\" <<'DRQUEUE_UNIT'\n[Unit]\nDescription=DrQueue render engine\nAfter=network-online.target\n\n[Service]\nEnvironmentFile={p}/engine.env\nExecStart={p}/bin/drqueue-engine\nKillMode=mixed\nTimeoutStopSec=30\nRestart=on-failure\nRestartSec=5\n\n[Install]\nWantedBy=default.target\nDRQUEUE_UNIT\n",
        p = prefix
    )
}

/// Stops the engine however it was started and removes the prefix.
pub fn remove_script(prefix: &str) -> String {
    let mut s = format!(
        "set -e\nif [ ! -d {p} ]; then echo was=absent; exit 0; fi\ncd {p}\n",
        p = sh_path(prefix)
    );
    s.push_str(STOP_NOHUP);
    s.push_str(
        "if command -v systemctl >/dev/null 2>&1; then\n\
           if [ \"$(id -u)\" -eq 0 ]; then ctl=systemctl; unit=/etc/systemd/system/drqueue-engine.service; else ctl='systemctl --user'; unit=\"$HOME/.config/systemd/user/drqueue-engine.service\"; fi\n\
           if [ -f \"$unit\" ] && grep -q \"$(pwd)/bin/drqueue-engine\" \"$unit\"; then $ctl disable --now drqueue-engine.service >/dev/null 2>&1 || true; rm -f \"$unit\"; $ctl daemon-reload || true; was=running; fi\n\
         fi\n",
    );
    s.push_str("cd /\nrm -rf -- \"$OLDPWD\"\necho \"was=$was\"\n");
    s
}

/// One host's outcome.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HostResult {
    pub host: String,
    pub ok: bool,
    /// `installed`, `upgraded`, `removed`, `absent`, or the error.
    pub detail: String,
    pub arch: Option<String>,
    pub pid: Option<u32>,
}

fn field<'a>(out: &'a str, key: &str) -> Option<&'a str> {
    out.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

/// The engine binary for a node's architecture: `drqueue-engine-ARCH`
/// beside `dir`'s `drqueue`, else `drqueue-engine` when the node's
/// architecture is this machine's.
pub fn engine_for(arch: &str, given: Option<&Path>, dir: &Path) -> Result<PathBuf, String> {
    if let Some(g) = given {
        return Ok(g.to_path_buf());
    }
    let named = dir.join(format!("drqueue-engine-{arch}"));
    if named.is_file() {
        return Ok(named);
    }
    let plain = dir.join("drqueue-engine");
    if arch == std::env::consts::ARCH && plain.is_file() {
        return Ok(plain);
    }
    Err(format!(
        "no engine binary for {arch}: put drqueue-engine-{arch} in {} or give --engine-binary",
        dir.display()
    ))
}

/// Deploys to one host: prepare, copy, install and start.
pub fn deploy_one(
    host: &str,
    ssh: &Ssh,
    prefix: &str,
    env: &EngineEnv,
    start: Start,
    binary: Option<&Path>,
    dir: &Path,
) -> HostResult {
    let steps = || -> Result<HostResult, String> {
        let out = ssh.run(host, &prepare_script(prefix))?;
        let (Some(abs), Some(arch)) = (field(&out, "prefix"), field(&out, "arch")) else {
            return Err(format!("unexpected answer from the node: {out:?}"));
        };
        let bin = engine_for(arch, binary, dir)?;
        ssh.copy(&bin, host, &format!("{abs}/bin/drqueue-engine.new"))?;
        let out = ssh.run(host, &install_script(abs, env, start))?;
        let detail = match field(&out, "was") {
            Some("running" | "installed") => "upgraded",
            _ => "installed",
        };
        Ok(HostResult {
            host: host.into(),
            ok: true,
            detail: detail.into(),
            arch: Some(arch.into()),
            pid: field(&out, "pid").and_then(|p| p.parse().ok()),
        })
    };
    steps().unwrap_or_else(|e| HostResult::failed(host, e))
}

impl HostResult {
    fn failed(host: &str, error: String) -> HostResult {
        HostResult {
            host: host.into(),
            ok: false,
            detail: error,
            arch: None,
            pid: None,
        }
    }
}

pub fn undeploy_one(host: &str, ssh: &Ssh, prefix: &str) -> HostResult {
    match ssh.run(host, &remove_script(prefix)) {
        Ok(out) => HostResult {
            host: host.into(),
            ok: true,
            detail: match field(&out, "was") {
                Some("absent") => "nothing deployed there".into(),
                _ => "removed".into(),
            },
            arch: None,
            pid: None,
        },
        Err(e) => HostResult::failed(host, e),
    }
}

/// Runs `each` for every host, at most [`MAX_PARALLEL`] at once, calling
/// `done` as each host finishes; results in the hosts' order.
pub fn fan_out(
    hosts: &[String],
    each: &(dyn Fn(&str) -> HostResult + Sync),
    done: &(dyn Fn(&HostResult) + Sync),
) -> Vec<HostResult> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<HostResult>>> = Mutex::new(vec![None; hosts.len()]);
    std::thread::scope(|s| {
        for _ in 0..MAX_PARALLEL.min(hosts.len()) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(host) = hosts.get(i) else { break };
                let r = each(host);
                done(&r);
                if let Ok(mut all) = results.lock() {
                    all[i] = Some(r);
                }
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_default()
        .into_iter()
        .flatten()
        .collect()
}

/// `a,b,user@c`: the hosts, each checked to be a plain ssh destination.
pub fn parse_hosts(list: &str) -> Result<Vec<String>, String> {
    let hosts: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(String::from)
        .collect();
    if hosts.is_empty() {
        return Err("--ssh: name at least one host ([USER@]HOST[,HOST…])".into());
    }
    for h in &hosts {
        if h.starts_with('-')
            || h.chars()
                .any(|c| c.is_whitespace() || c == ':' && !h.contains('['))
        {
            return Err(format!("--ssh: {h:?} is not [USER@]HOST"));
        }
    }
    Ok(hosts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_quotes_and_spaces() {
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(sh_path("~/x y"), "\"$HOME\"/'x y'");
        assert_eq!(sh_path("/opt/dq"), "'/opt/dq'");
    }

    #[test]
    fn hosts_parse_and_options_are_refused() {
        assert_eq!(parse_hosts("a, root@b ,").unwrap(), vec!["a", "root@b"]);
        assert!(parse_hosts("-oProxyCommand=x").is_err());
        assert!(parse_hosts(" , ").is_err());
        assert!(parse_hosts("a b").is_err());
    }

    #[test]
    fn the_env_file_is_quoted_and_private() {
        let env = EngineEnv {
            master: "tcp://m:5555".into(),
            join_token: "t'k".into(),
            pool: Some("gpu".into()),
            slots: 2,
        };
        let s = install_script("/opt/dq", &env, Start::Nohup);
        assert!(s.contains("umask 077"));
        assert!(s.contains(r"DRQUEUE_JOIN_TOKEN='t'\''k'"));
        assert!(s.contains("DRQUEUE_POOL='gpu'"));
        assert!(s.contains("DRQUEUE_STATE_DIR='/opt/dq/state'"));
    }

    #[test]
    fn the_binary_matches_the_architecture() {
        let dir = std::env::temp_dir().join(format!("drqueue-deploy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("drqueue-engine"), "x").unwrap();
        assert_eq!(
            engine_for(std::env::consts::ARCH, None, &dir).unwrap(),
            dir.join("drqueue-engine")
        );
        let err = engine_for("riscv64", None, &dir).unwrap_err();
        assert!(err.contains("drqueue-engine-riscv64"), "{err}");
        std::fs::write(dir.join("drqueue-engine-riscv64"), "x").unwrap();
        assert_eq!(
            engine_for("riscv64", None, &dir).unwrap(),
            dir.join("drqueue-engine-riscv64")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
