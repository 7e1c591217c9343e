//! Tests that cannot run on this machine (no MongoDB, no povray…) say so
//! where the run's summary sees it: cargo counts an early return as a pass,
//! so each skip is appended to the file `DRQUEUE_TEST_SKIPS` names, and
//! `scripts/test` subtracts them and lists why. CI installs everything, so
//! there a skip is a failure.

use std::io::Write;

/// Records that the calling test is skipped, and why (with the fix).
/// Panics under CI, where nothing may be skipped.
pub fn skip(reason: &str) {
    assert!(
        std::env::var_os("CI").is_none(),
        "{reason}: CI installs everything a test needs (.ci/run, scripts/test), so nothing may be skipped there"
    );
    eprintln!("skipped: {reason}");
    if let Some(path) = std::env::var_os("DRQUEUE_TEST_SKIPS") {
        let line = format!("{}\n", reason.replace('\n', " "));
        // Appends of one short line are atomic, so parallel tests don't mix.
        let _ = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut f| f.write_all(line.as_bytes()));
    }
}
