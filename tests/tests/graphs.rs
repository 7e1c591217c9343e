//! Job files and `--then`: graphs submitted all or nothing, run in
//! dependency order on the farm and with `run-local`; malformed files get
//! errors that name the file, line and field.

use drqueue_common::model::{JobId, JobStatus};
use drqueue_tests::{bin, Farm};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(120);

/// Three jobs; each task appends `NAME FRAMES` to order.txt in its cwd.
const GRAPH: &str = r#"
[[jobs]]
name = "sim"
frames = "1-2"
command = ["sh", "-c", "sleep 0.2; echo sim {start} >> order.txt"]

[[jobs]]
name = "render"
after = ["sim"]
frames = "1-6"
blocksize = 2
command = ["sh", "-c", "echo render {start}-{end} of job {job}, sim was {job:sim} >> order.txt"]

[[jobs]]
name = "comp"
after = ["render"]
command = ["sh", "-c", "echo comp >> order.txt"]
"#;

/// The job ids `submit` printed, one per line.
fn ids_printed(out: &std::process::Output) -> Vec<JobId> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.parse().expect("one id per line"))
        .collect()
}

/// order.txt's lines grouped: all of sim, then render, then comp.
fn check_order(dir: &Path, sim_id: JobId, render_id: JobId) {
    let text = std::fs::read_to_string(dir.join("order.txt")).expect("order.txt");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 6, "{text}");
    assert!(lines[..2].iter().all(|l| l.starts_with("sim ")), "{text}");
    assert!(
        lines[2..5].iter().all(|l| l.starts_with("render ")),
        "{text}"
    );
    assert_eq!(lines[5], "comp", "{text}");
    assert!(
        lines[2..5]
            .iter()
            .all(|l| l.ends_with(&format!("of job {render_id}, sim was {sim_id}"))),
        "{text}"
    );
}

#[test]
fn a_graph_file_runs_in_dependency_order_on_the_farm_and_with_run_local() {
    let mut farm = Farm::start();
    farm.engine("a", &["--slots", "2"]);
    farm.engine("b", &["--slots", "2"]);
    farm.wait_engines(2);
    std::fs::write(farm.dir.join("graph.toml"), GRAPH).unwrap();
    let out = farm.drqueue(&["submit", "--file", "graph.toml"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ids = ids_printed(&out);
    assert_eq!(ids.len(), 3);
    let c = farm.client();
    assert_eq!(c.job(ids[2]).unwrap().status, JobStatus::Waiting);
    assert_eq!(farm.wait_job(ids[2], LONG).status, JobStatus::Done);
    check_order(&farm.dir, ids[0], ids[1]);

    // The same file, here, with no master.
    let here = farm.dir.join("local");
    std::fs::create_dir_all(&here).unwrap();
    std::fs::write(here.join("graph.toml"), GRAPH).unwrap();
    let out = Command::new(bin("drqueue"))
        .args(["run-local", "--file", "graph.toml", "--slots", "2"])
        .current_dir(&here)
        .env_remove("DRQUEUE_URL")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("job 3 comp: done (1 of 1 tasks done)"),
        "{stdout}"
    );
    check_order(&here, JobId(1), JobId(2));
    assert!(here.join("drqueue-local").is_dir());
}

#[test]
fn run_local_retries_and_exits_1_when_a_job_fails() {
    let dir = std::env::temp_dir().join(format!("drqueue-local-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = Command::new(bin("drqueue"))
        .args([
            "run-local",
            "--frames",
            "1-2",
            "--max-attempts",
            "2",
            "--",
            "sh",
            "-c",
            "echo attempt $DRQUEUE_ATTEMPT of frame {frame}; test {frame} = 1",
        ])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("failed (1 of 2 tasks done)"), "{stdout}");
    // Two attempts of the failing task, each with its log.
    for attempt in 1..=2 {
        let log =
            std::fs::read_to_string(dir.join(format!("drqueue-local/run-1/1-1-{attempt}.log")))
                .unwrap_or_default();
        assert_eq!(log, format!("attempt {attempt} of frame 2\n"));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn then_runs_a_command_after_the_job_with_its_id_and_frame_range() {
    let mut farm = Farm::start();
    farm.engine("t", &[]);
    let out = farm.drqueue(&[
        "submit",
        "--frames",
        "3-7",
        "--",
        "true",
        "--then",
        "--",
        "sh",
        "-c",
        "echo encode job {job} frames {start}-{end} > then.txt",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ids = ids_printed(&out);
    assert_eq!(ids.len(), 2);
    assert_eq!(farm.wait_job(ids[1], LONG).status, JobStatus::Done);
    assert_eq!(
        std::fs::read_to_string(farm.dir.join("then.txt")).unwrap(),
        format!("encode job {} frames 3-7\n", ids[0])
    );
    let after = farm.client().job(ids[1]).unwrap().after;
    assert_eq!(after[0].job, ids[0]);
    // The upstream job names the job that waited on it.
    assert_eq!(farm.client().job(ids[0]).unwrap().dependents, vec![ids[1]]);
    let show = farm.drqueue(&["show", &ids[0].to_string()]);
    let text = String::from_utf8_lossy(&show.stdout);
    assert!(text.contains(&format!("needed by  {}", ids[1])), "{text}");
}

#[test]
fn each_class_of_malformed_graph_file_gets_its_error_and_nothing_is_submitted() {
    let mut farm = Farm::start();
    farm.engine("m", &[]);
    let cases: &[(&str, &str, &str)] = &[
        (
            "unknown.toml",
            "[[jobs]]\nname = \"a\"\ncommand = [\"true\"]\nframez = \"1-3\"\n",
            "unknown.toml:4: unknown field `framez`",
        ),
        (
            "frames.toml",
            "[[jobs]]\nname = \"a\"\ncommand = [\"true\"]\nframes = \"10-x\"\n",
            "frames.toml:4: jobs[0] (a) field `frames`: malformed frame set",
        ),
        (
            "name.toml",
            "[[jobs]]\nname = \"a\"\ncommand = [\"true\"]\n\n[[jobs]]\nname = \"b\"\nafter = [\"sim\"]\ncommand = [\"true\"]\n",
            "name.toml:7: jobs[1] (b) field `after`: \"sim\" is not a job in this file (a, b) nor a job id",
        ),
        (
            "cycle.toml",
            "[[jobs]]\nname = \"a\"\nafter = [\"b\"]\ncommand = [\"true\"]\n\n[[jobs]]\nname = \"b\"\nafter = [\"a\"]\ncommand = [\"true\"]\n",
            "cycle.toml:2: field `after`: the jobs wait for each other in a cycle: a → b → a",
        ),
        (
            "syntax.toml",
            "[[jobs]]\nname = \"a\"\ncommand = [\"true\"\n",
            "syntax.toml:3: not valid TOML",
        ),
        (
            "json.json",
            "{\"jobs\": [\n {\"name\": \"a\",\n  \"command\": [\"true\"],\n  \"priority\": 5000}\n]}\n",
            "json.json:4: jobs[0] (a) field `priority`: priority 5000 is out of range",
        ),
    ];
    for (file, text, want) in cases {
        std::fs::write(farm.dir.join(file), text).unwrap();
        let out = farm.drqueue(&["submit", "--file", file]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{file}: {stderr}");
        assert!(stderr.contains(want), "{file}: wanted {want:?} in {stderr}");
    }
    // A graph the master refuses (its second job waits for a job that does
    // not exist): none of it is created.
    std::fs::write(
        farm.dir.join("farm.toml"),
        "[[jobs]]\nname = \"a\"\ncommand = [\"true\"]\n\n[[jobs]]\nname = \"b\"\nafter = [999]\ncommand = [\"true\"]\n",
    )
    .unwrap();
    let out = farm.drqueue(&["submit", "--file", "farm.toml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("job 999, which does not exist"));
    assert!(
        farm.client().jobs(None).unwrap().is_empty(),
        "all or nothing"
    );
}

/// A graph with a retried task, a failing job, a dependency that breaks and
/// one that accepts the failure.
const RULES_GRAPH: &str = r#"
[[jobs]]
name = "prep"
frames = "1-3"
max_attempts = 2
command = ["sh", "-c", "test {start} != 2 || test $DRQUEUE_ATTEMPT = 2"]

[[jobs]]
name = "render"
after = ["prep"]
frames = "1-4"
max_attempts = 2
command = ["sh", "-c", "test {start} != 3"]

[[jobs]]
name = "encode"
after = ["render"]
command = ["true"]

[[jobs]]
name = "report"
after = ["render:failed"]
command = ["true"]
"#;

/// run-local drives the farm's own scheduler: the same graph ends the same
/// way, job by job and task by task, on a farm and on one machine.
#[test]
fn the_farm_and_run_local_end_every_job_and_task_alike() {
    let mut farm = Farm::start();
    farm.engine("a", &["--slots", "2"]);
    farm.engine("b", &["--slots", "2"]);
    farm.wait_engines(2);
    std::fs::write(farm.dir.join("rules.toml"), RULES_GRAPH).unwrap();
    let out = farm.drqueue(&["submit", "--file", "rules.toml"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ids = ids_printed(&out);
    let c = farm.client();
    let mut on_farm = Vec::new();
    for id in &ids {
        let job = farm.wait_job(*id, LONG);
        let statuses: Vec<String> = c
            .tasks(*id, None)
            .unwrap()
            .iter()
            .map(|t| t.status.to_string())
            .collect();
        on_farm.push((job.name, job.status.to_string(), statuses));
    }

    let here = farm.dir.join("local");
    std::fs::create_dir_all(&here).unwrap();
    std::fs::write(here.join("rules.toml"), RULES_GRAPH).unwrap();
    let out = Command::new(bin("drqueue"))
        .args([
            "run-local",
            "--file",
            "rules.toml",
            "--slots",
            "2",
            "--json",
        ])
        .current_dir(&here)
        .env_remove("DRQUEUE_URL")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "a job failed");
    let ends: serde_json::Value = serde_json::from_slice(&out.stdout).expect("run-local --json");
    let local: Vec<(String, String, Vec<String>)> = ends
        .as_array()
        .expect("an array of jobs")
        .iter()
        .map(|j| {
            let tasks = j["task_status"]
                .as_array()
                .expect("task statuses")
                .iter()
                .map(|s| s.as_str().unwrap_or_default().to_string())
                .collect();
            (
                j["name"].as_str().unwrap_or_default().to_string(),
                j["status"].as_str().unwrap_or_default().to_string(),
                tasks,
            )
        })
        .collect();
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let expected = vec![
        ("prep".to_string(), "done".to_string(), s(&["done"; 3])),
        (
            "render".into(),
            "failed".into(),
            s(&["done", "done", "failed", "done"]),
        ),
        ("encode".into(), "cancelled".into(), s(&["cancelled"])),
        ("report".into(), "done".into(), s(&["done"])),
    ];
    assert_eq!(on_farm, expected, "on the farm");
    assert_eq!(local, expected, "with run-local");
}
