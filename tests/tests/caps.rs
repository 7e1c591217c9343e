//! A task that prints far more than its log cap: the engine keeps head and
//! tail, the master's store takes no more than the cap, and `drqueue log`
//! reads back the head, a marked gap, and the tail.

use drqueue_common::model::JobStatus;
use drqueue_tests::Farm;
use std::path::Path;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(180);

fn size_of(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => size_of(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

#[test]
fn a_200_mb_log_stays_within_its_cap() {
    let mut farm = Farm::start();
    farm.engine("e", &[]);
    let script = "echo FIRST; yes 0123456789abcdef | head -c 200000000; echo; echo LAST";
    let before = size_of(Path::new(&farm.db));
    let id = farm.submit(&["--max-log-mb", "4", "--", "sh", "-c", script]);
    assert_eq!(farm.wait_job(id, LONG).status, JobStatus::Done);
    let out = farm.drqueue(&["log", &id.to_string(), "0", "--raw"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cap = 4 << 20;
    assert!(
        out.stdout.len() as u64 <= cap + 1024,
        "the log read back is {} bytes",
        out.stdout.len()
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("FIRST\n"),
        "{}",
        &text[..40.min(text.len())]
    );
    assert!(text.ends_with("\nLAST\n"), "the tail is missing");
    assert!(
        text.contains("bytes of output dropped here"),
        "no gap marker"
    );
    // SQLite's WAL holds a second copy until it is checkpointed: the store
    // may grow by twice what it keeps, and not by the 200 MB printed.
    let grown = size_of(Path::new(&farm.db)).saturating_sub(before);
    assert!(
        grown < 2 * cap + (2 << 20),
        "the store grew by {grown} bytes for a log capped at {cap}"
    );
    let spool = farm.dir.join("engine-e").join("logs");
    assert!(
        size_of(&spool) <= cap + 1024,
        "the engine keeps {} bytes of logs",
        size_of(&spool)
    );
}

#[test]
fn a_log_cap_out_of_range_is_refused_naming_the_field() {
    let farm = Farm::start();
    let out = farm.drqueue(&["submit", "--max-log-mb", "0", "--", "true"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("max_log_mb"), "{err}");
}
