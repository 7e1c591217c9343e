//! The watch folder: `drqueue-master --watch-dir` (and `drqueue watch-dir`)
//! submit each job file dropped in a folder once it stops changing, exactly
//! once, even across a master restart, and move it to submitted/ or
//! rejected/. Real master, engines, files, and POV-Ray for the rule test.

use drqueue_common::model::{JobId, JobStatus};
use drqueue_tests::{eventually, link_program, path_with, which, Farm};
use std::io::Write;
use std::path::Path;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);

fn watched(dir: &Path) -> Farm {
    std::fs::create_dir_all(dir).unwrap();
    let d = dir.to_str().unwrap();
    Farm::start_with(&[
        "--watch-dir",
        d,
        "--watch-as",
        "alice",
        "--watch-settle-ms",
        "1500",
    ])
}

fn job_ids(path: &Path) -> Vec<JobId> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| l.parse().expect("a job id per line"))
        .collect()
}

#[test]
fn a_file_written_slowly_is_submitted_once_after_it_is_complete_even_across_a_restart() {
    let dir = std::env::temp_dir().join(format!("drqueue-watch-{}-slow", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut farm = watched(&dir);
    farm.engine("w", &[]);
    farm.wait_engines(1);

    // Sync tools' temporaries are never taken.
    std::fs::write(dir.join(".shot.toml.Xa83kd"), "name = \"temp\"\n").unwrap();
    std::fs::write(dir.join("shot.toml.part"), "name = \"part\"\n").unwrap();

    // Written in three parts, 700 ms apart: any prefix alone is not valid.
    let text =
        "name = \"shot\"\ncommand = [\"sh\", \"-c\", \"echo frame {frame}\"]\nframes = \"1-4\"\n";
    let parts = [&text[..20], &text[20..50], &text[50..]];
    let mut f = std::fs::File::create(dir.join("shot.toml")).unwrap();
    for p in parts {
        f.write_all(p.as_bytes()).unwrap();
        f.flush().unwrap();
        std::thread::sleep(Duration::from_millis(700));
        assert!(
            !dir.join("rejected/shot.toml").exists(),
            "a half-written file was taken"
        );
    }
    drop(f);
    let jobs_file = dir.join("submitted/shot.toml.jobs");
    eventually(Duration::from_secs(20), "the file to be submitted", || {
        jobs_file.exists().then_some(())
    });
    let ids = job_ids(&jobs_file);
    assert_eq!(ids.len(), 1);
    assert!(!dir.join("shot.toml").exists(), "moved out of the folder");
    assert!(dir.join("submitted/shot.toml").exists());
    let view = farm.wait_job(ids[0], LONG);
    assert_eq!(
        (view.status, view.owner.as_str(), view.name.as_str()),
        (JobStatus::Done, "alice", "shot")
    );

    // A restart submits nothing again.
    farm.stop_master();
    farm.start_master();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(farm.client().jobs(None).unwrap().len(), 1, "submitted once");

    // Dropped again after it was moved: a new submission, kept apart.
    std::fs::write(dir.join("shot.toml"), text).unwrap();
    let again = dir.join("submitted/shot.toml.2.jobs");
    eventually(Duration::from_secs(20), "the second drop", || {
        again.exists().then_some(())
    });
    assert_eq!(farm.client().jobs(None).unwrap().len(), 2);
    assert!(
        dir.join(".shot.toml.Xa83kd").exists() && dir.join("shot.toml.part").exists(),
        "temporaries left alone"
    );
    assert!(
        std::fs::read_dir(dir.join("rejected"))
            .unwrap()
            .next()
            .is_none(),
        "nothing rejected"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_malformed_file_lands_in_rejected_with_the_message() {
    let dir = std::env::temp_dir().join(format!("drqueue-watch-{}-bad", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let farm = watched(&dir);
    std::fs::write(dir.join("bad.toml"), "name = \"bad\"\nframes = [\n").unwrap();
    std::fs::write(dir.join("notes.txt"), "hello\n").unwrap();
    std::fs::write(dir.join("graph.json"), "{\"jobs\": [{\"name\": \"a\", \"command\": [\"true\"], \"frames\": \"1\", \"after\": [\"nope\"]}]}").unwrap();
    for name in ["bad.toml", "notes.txt", "graph.json"] {
        let error = dir.join(format!("rejected/{name}.error"));
        eventually(
            Duration::from_secs(20),
            &format!("{name} to be rejected"),
            || error.exists().then_some(()),
        );
        assert!(dir.join("rejected").join(name).exists());
    }
    let say = |n: &str| std::fs::read_to_string(dir.join(format!("rejected/{n}.error"))).unwrap();
    assert!(
        say("bad.toml").contains("bad.toml:") && say("bad.toml").contains("not valid TOML"),
        "{}",
        say("bad.toml")
    );
    assert!(say("notes.txt").contains("no rule"), "{}", say("notes.txt"));
    assert!(say("graph.json").contains("nope"), "{}", say("graph.json"));
    assert!(farm.client().jobs(None).unwrap().is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_pov_file_runs_through_the_povray_rule() {
    let Some(povray) = which("povray") else {
        drqueue_common::test_skip::skip("povray is not installed (apt-get install povray)");
        return;
    };
    let dir = std::env::temp_dir().join(format!("drqueue-watch-{}-pov", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut farm = watched(&dir);
    let bin = farm.dir.join("povray-bin");
    link_program(&bin, &povray);
    farm.engine_with_env("pov", &[], &[("PATH", &path_with(&bin))]);
    farm.wait_engines(1);
    // Absolute output paths are the job's business: the folder exists.
    std::fs::create_dir_all(dir.join("renders")).unwrap();
    std::fs::write(
        dir.join(".drqueue-rules.toml"),
        "[[rule]]\nglob = \"*.pov\"\npreset = \"povray\"\nscene = \"{file}\"\noutput = \"{folder}/renders/{stem}.png\"\nframes = \"1\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("ball.pov"),
        "camera { location <0, 1, -3> look_at <0, 0.5, 0> }\nlight_source { <2, 4, -3> color rgb 1 }\nsphere { <0, 0.5, 0>, 0.5 pigment { rgb <0.9, 0.2, 0.1> } }\nplane { y, 0 pigment { rgb 0.8 } }\n",
    )
    .unwrap();
    let jobs_file = dir.join("submitted/ball.pov.jobs");
    eventually(Duration::from_secs(20), "the scene to be submitted", || {
        jobs_file.exists().then_some(())
    });
    let ids = job_ids(&jobs_file);
    let view = farm.wait_job(ids[0], LONG);
    assert_eq!(view.status, JobStatus::Done, "{view:?}");
    assert_eq!(view.name, "ball");
    let rendered: Vec<_> = std::fs::read_dir(dir.join("renders"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(rendered.len(), 1, "{rendered:?}");
    // The same scene rendered by POV-Ray directly, as the preset runs it.
    let reference = farm.dir.join("reference.png");
    let ok = std::process::Command::new(&povray)
        .arg(format!("+I{}", dir.join("submitted/ball.pov").display()))
        .arg(format!("+O{}", reference.display()))
        .args(["+KFI1", "+KFF1", "+SF1", "+EF1", "-D"])
        .output()
        .expect("run povray");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let farm_render = drqueue_tests::decode_png(&rendered[0]);
    assert!(farm_render.0 > 0 && farm_render.1 > 0);
    assert!(
        farm_render == drqueue_tests::decode_png(&reference),
        "the farm's render is POV-Ray's"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn drqueue_watch_dir_once_submits_as_a_client() {
    let farm = Farm::start();
    let dir = farm.dir.join("drop");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("one.toml"),
        "name = \"one\"\ncommand = [\"true\"]\nframes = \"1-2\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("two.json"),
        "{\"name\": \"two\", \"command\": [\"true\"], \"frames\": \"1\"}",
    )
    .unwrap();
    let d = dir.to_str().unwrap();
    let out = farm.drqueue(&["--json", "watch-dir", d, "--once", "--settle-ms", "300"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line per file"))
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines.iter().all(|l| l["outcome"] == "submitted"),
        "{lines:?}"
    );
    let jobs = farm.client().jobs(None).unwrap();
    let mut names: Vec<_> = jobs.iter().map(|j| j.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["one", "two"]);
    assert!(
        dir.join("submitted/one.toml.jobs").exists()
            && dir.join("submitted/two.json.jobs").exists()
    );

    // With the master gone, --once says so and exits 1; the file stays
    // taken, and the next run submits it.
    std::fs::write(
        dir.join("three.toml"),
        "name = \"three\"\ncommand = [\"true\"]\nframes = \"1\"\n",
    )
    .unwrap();
    let out = farm.drqueue_env(
        &["watch-dir", d, "--once", "--settle-ms", "300"],
        &[("DRQUEUE_URL", "http://127.0.0.1:9")],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("three.toml: waiting"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = farm.drqueue(&["watch-dir", d, "--once", "--settle-ms", "300"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(farm.client().jobs(None).unwrap().len(), 3);
}
