//! A private network namespace for the discovery tests: multicast stays
//! inside it, and nothing of the host's network is seen or touched.
//!
//! `unshare(CLONE_NEWNET)` moves only the calling thread, so each test runs
//! its body on a thread of its own; every process that thread starts
//! (master, engines, CLI, `ip`) inherits the namespace.

use std::process::Command;

/// Runs `body` inside a new network namespace whose `lo` is up, carries
/// multicast, and routes 224.0.0.0/4 (mDNS). None (and a recorded skip)
/// where namespaces cannot be made (not root, no `ip`).
pub fn private_network<T: Send + 'static>(body: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let handle = std::thread::spawn(move || {
        // SAFETY: unshare only changes this thread's namespaces.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            let e = std::io::Error::last_os_error();
            drqueue_common::test_skip::skip(&format!(
                "cannot make a network namespace ({e}): run the tests as root"
            ));
            return None;
        }
        for args in [
            &["link", "set", "lo", "up"][..],
            &["link", "set", "lo", "multicast", "on"],
            &["route", "add", "224.0.0.0/4", "dev", "lo"],
        ] {
            let ok = Command::new("ip")
                .args(args)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                drqueue_common::test_skip::skip(&format!(
                    "`ip {}` failed: install iproute2",
                    args.join(" ")
                ));
                return None;
            }
        }
        Some(body())
    });
    match handle.join() {
        Ok(v) => v,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}
