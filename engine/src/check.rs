//! The check task a sick engine runs to show it is well again.
//!
//! The master sends [`ToEngine::Check`](drqueue_common::protocol::ToEngine)
//! to an engine it marked sick (too many failures in a row). With no command,
//! the engine checks what most often breaks a render node: it can start a
//! process, and it can write, read back and delete a file in its state
//! directory (a full or read-only disk fails here). A studio can name its own
//! known-good command on the master (`--check-command`), e.g. a tiny render.

use crate::facts::run_with_timeout;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// How long a check may run.
const CHECK_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs the check; returns whether it passed and a one-line account.
pub fn run_check(command: &[String], state_dir: &Path) -> (bool, String) {
    match command.split_first() {
        Some((program, args)) => {
            let mut cmd = Command::new(program);
            cmd.args(args).current_dir(state_dir);
            match run_with_timeout(&mut cmd, CHECK_TIMEOUT) {
                Ok(ran) if ran.success => (true, "check command passed".into()),
                Ok(ran) => {
                    let how = match ran.code {
                        Some(c) => format!("check command exited with code {c}"),
                        None => "check command was killed by a signal".to_string(),
                    };
                    match last_line(&ran.text) {
                        line if line.is_empty() => (false, how),
                        line => (false, format!("{how}: {line}")),
                    }
                }
                Err(e) => (
                    false,
                    format!("check command {program:?} could not run: {e}"),
                ),
            }
        }
        None => builtin(state_dir),
    }
}

fn builtin(state_dir: &Path) -> (bool, String) {
    let path = state_dir.join("check.tmp");
    let probe = b"drqueue check";
    let file = std::fs::write(&path, probe)
        .and_then(|()| std::fs::read(&path))
        .and_then(|back| {
            let _ = std::fs::remove_file(&path);
            if back == probe {
                Ok(())
            } else {
                Err(std::io::Error::other("read back something else"))
            }
        });
    if let Err(e) = file {
        return (
            false,
            format!("cannot write a file in {}: {e}", state_dir.display()),
        );
    }
    match run_with_timeout(
        Command::new("sh").args(["-c", "echo ok"]),
        Duration::from_secs(10),
    ) {
        Ok(ran) if ran.success && ran.text.trim() == "ok" => (true, "built-in check passed".into()),
        Ok(ran) => (
            false,
            format!("cannot run a process: {}", last_line(&ran.text)),
        ),
        Err(e) => (false, format!("cannot run a process: {e}")),
    }
}

fn last_line(text: &str) -> String {
    let line = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    line.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_check_passes_on_a_writable_dir_and_fails_on_a_missing_one() {
        let dir = std::env::temp_dir().join(format!("drq-check-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(run_check(&[], &dir).0);
        let (ok, why) = run_check(&[], &dir.join("missing"));
        assert!(!ok && why.contains("cannot write"), "{why}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_check_command_passes_on_exit_zero_only() {
        let dir = std::env::temp_dir();
        assert!(run_check(&["true".into()], &dir).0);
        let (ok, why) = run_check(
            &[
                "sh".into(),
                "-c".into(),
                "echo licence server down >&2; exit 3".into(),
            ],
            &dir,
        );
        assert!(
            !ok && why == "check command exited with code 3: licence server down",
            "{why}"
        );
    }
}
