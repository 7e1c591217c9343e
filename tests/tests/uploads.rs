//! A farm with no shared file system: `submit --upload` sends a job's
//! folder to the master's content store by hash, each engine lays it out
//! for each task from its own verified cache, `--collect` brings outputs
//! back and `drqueue download` fetches them. Real master, engines, CLI,
//! POV-Ray and HTTP.

use drqueue_common::cas::{BlobHash, Manifest, ManifestEntry};
use drqueue_common::model::{JobId, JobStatus};
use drqueue_tests::renders::{run_paused_on, scene_folder, write};
use drqueue_tests::{decode_png, link_program, path_with, which, Farm};
use std::path::{Path, PathBuf};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(90);

fn stats(farm: &Farm) -> serde_json::Value {
    let out = farm.drqueue(&["cas", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("cas --json")
}

fn written(farm: &Farm) -> u64 {
    stats(farm)["written_blobs"]
        .as_u64()
        .expect("written_blobs")
}

const POV_ARGS: [&str; 5] = ["+W96", "+H72", "-A", "+FN", "-D"];

#[test]
fn an_uploaded_povray_scene_renders_on_engines_that_share_nothing_and_comes_back_pixel_for_pixel() {
    let Some(povray) = which("povray") else {
        drqueue_common::test_skip::skip("povray is not installed (apt-get install povray)");
        return;
    };
    let mut farm = Farm::start();
    let bin = farm.dir.join("povray-bin");
    link_program(&bin, &povray);
    let path = path_with(&bin);
    let scene = farm.dir.join("client-side/shot");
    scene_folder(&scene);
    let mut args = vec![
        "--paused",
        "--upload",
        scene.to_str().unwrap(),
        "--collect",
        "out/*.png",
        "--frames",
        "1-8",
        "--name",
        "uploaded",
        "--",
        "povray",
        "+I{jobdir}/scene.pov",
        "+Oout/frame.png",
        "+KFI1",
        "+KFF8",
        "+SF{frame}",
        "+EF{frame}",
    ];
    args.extend_from_slice(&POV_ARGS);
    let job = farm.submit(&args);
    // The client's folder is gone before any engine starts: the scene can
    // only come from the master's content store.
    let kept = farm.dir.join("kept-scene");
    std::fs::rename(&scene, &kept).unwrap();
    run_paused_on(&mut farm, job, &["pov1", "pov2"], &path, LONG);
    let engines: std::collections::BTreeSet<_> = farm
        .client()
        .tasks(job, None)
        .unwrap()
        .into_iter()
        .filter_map(|t| t.engine)
        .collect();
    assert_eq!(engines.len(), 2, "both engines rendered");
    // Nothing was written where the client or the other engine could see it.
    assert!(!kept.join("out").exists());

    let down = farm.dir.join("downloaded");
    let out = farm.drqueue(&["download", &job.to_string(), "--to", down.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("downloaded 8 files"));

    // The same frames rendered here, in the folder itself.
    let local = farm.dir.join("local-render");
    std::fs::create_dir_all(&local).unwrap();
    for f in 1..=8 {
        let status = std::process::Command::new(&povray)
            .current_dir(&kept)
            .args([
                "+Iscene.pov",
                &format!("+O{}/frame.png", local.display()),
                "+KFI1",
                "+KFF8",
            ])
            .args([format!("+SF{f}"), format!("+EF{f}")])
            .args(POV_ARGS)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
    }
    let mut distinct = std::collections::HashSet::new();
    for f in 1..=8 {
        let name = format!("frame{f}.png");
        let farm_frame = decode_png(&down.join("out").join(&name));
        let here = decode_png(&local.join(&name));
        assert_eq!((farm_frame.0, farm_frame.1), (96, 72));
        assert!(
            farm_frame == here,
            "frame {f} differs from the local render"
        );
        distinct.insert(farm_frame.2);
    }
    assert!(
        distinct.len() > 1,
        "the frames are not all the same picture"
    );
    // A second download finds everything in place and is still right.
    let again = farm.drqueue(&["download", &job.to_string(), "--to", down.to_str().unwrap()]);
    assert!(again.status.success());
}

#[test]
fn a_second_submit_uploads_only_what_changed() {
    let farm = Farm::start();
    let dir = farm.dir.join("scene");
    write(&dir.join("a.txt"), b"alpha");
    write(&dir.join("sub/b.txt"), &vec![7u8; 300_000]);
    write(&dir.join("c.bin"), b"charlie");
    write(&dir.join("junk.tmp"), b"left out");
    let submit = || {
        let out = farm.drqueue(&[
            "submit",
            "--paused",
            "--upload",
            dir.to_str().unwrap(),
            "--upload-exclude",
            "*.tmp",
            "--",
            "true",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let before = written(&farm);
    let said = submit();
    assert!(said.contains("3 files"), "{said}");
    // Three files and the manifest.
    assert_eq!(written(&farm) - before, 4, "{said}");
    let said = submit();
    assert!(said.contains("sent 0 new blobs"), "{said}");
    assert_eq!(
        written(&farm) - before,
        4,
        "an unchanged folder sends nothing"
    );
    write(&dir.join("a.txt"), b"alpha, changed");
    let said = submit();
    // The changed file, and the manifest that names it.
    assert!(said.contains("sent 2 new blobs"), "{said}");
    assert_eq!(written(&farm) - before, 6);
    let jobs = farm.client().jobs(None).unwrap();
    let last = farm.client().job(jobs[0].id).unwrap();
    assert!(last.inputs.is_some());
}

/// Sends `body` to the farm's API; the status and answer.
fn send(farm: &Farm, method: &str, path: &str, content_type: &str, body: Vec<u8>) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let req = ureq::http::Request::builder()
        .method(method)
        .uri(format!("{}{path}", farm.http))
        .header("Content-Type", content_type)
        .body(body)
        .unwrap();
    let mut resp = agent.run(req).unwrap();
    let status = resp.status().as_u16();
    (status, resp.body_mut().read_to_string().unwrap_or_default())
}

/// PUTs `body` as blob `hash`.
fn put(farm: &Farm, hash: &str, body: &[u8]) -> (u16, String) {
    send(
        farm,
        "PUT",
        &format!("/api/cas/{hash}"),
        "application/octet-stream",
        body.to_vec(),
    )
}

fn submit_json(farm: &Farm, spec: serde_json::Value) -> (u16, String) {
    send(
        farm,
        "POST",
        "/api/jobs",
        "application/json",
        spec.to_string().into_bytes(),
    )
}

#[test]
fn uploads_that_do_not_match_their_hash_and_unsafe_manifests_are_refused() {
    let farm = Farm::start();
    let good = BlobHash::of(b"the real content");
    let (status, body) = put(&farm, &good.hex(), b"something else");
    assert_eq!(status, 422, "{body}");
    assert!(body.contains(&good.hex()), "{body}");
    assert_eq!(stats(&farm)["blobs"], 0, "nothing was kept");
    let (status, _) = put(&farm, "not-a-hash", b"x");
    assert_eq!(status, 400);
    let (status, body) = put(&farm, &good.hex(), b"the real content");
    assert_eq!(status, 201, "{body}");
    let (status, _) = put(&farm, &good.hex(), b"the real content");
    assert_eq!(status, 200, "stored already");

    // A manifest is only taken when every path stays inside the job's folder.
    for bad in ["../x", "/etc/passwd", "a/../../x", "a//b"] {
        let manifest = Manifest {
            files: vec![ManifestEntry {
                path: bad.into(),
                hash: good,
                size: 16,
                mode: 0o644,
            }],
        };
        let bytes = manifest.to_bytes();
        let hash = BlobHash::of(&bytes);
        assert!(put(&farm, &hash.hex(), &bytes).0 < 300);
        let (status, body) = submit_json(
            &farm,
            serde_json::json!({"command": ["true"], "inputs": hash.hex()}),
        );
        assert_eq!(status, 400, "{bad}: {body}");
        let error: serde_json::Value = serde_json::from_str(&body).unwrap();
        let error = error["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(&format!("{bad:?}")) && error.contains("field `inputs`"),
            "{bad}: {error}"
        );
    }
    // A manifest whose files were never uploaded is refused too.
    let missing = Manifest {
        files: vec![ManifestEntry {
            path: "scene.pov".into(),
            hash: BlobHash::of(b"never sent"),
            size: 10,
            mode: 0o644,
        }],
    };
    let bytes = missing.to_bytes();
    put(&farm, &BlobHash::of(&bytes).hex(), &bytes);
    let (status, body) = submit_json(
        &farm,
        serde_json::json!({"command": ["true"], "inputs": BlobHash::of(&bytes).hex()}),
    );
    assert_eq!(status, 400);
    assert!(
        body.contains("scene.pov") && body.contains("not uploaded"),
        "{body}"
    );

    // The client refuses a link out of the folder, naming it.
    let dir = farm.dir.join("linked");
    write(&dir.join("ok.txt"), b"fine");
    std::os::unix::fs::symlink("/etc/hostname", dir.join("escape")).unwrap();
    let out = farm.drqueue(&["submit", "--upload", dir.to_str().unwrap(), "--", "true"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("escape is a link out of the job's folder"),
        "{err}"
    );
    // And a --collect glob that leaves the task's folder.
    let out = farm.drqueue(&["submit", "--collect", "../*.png", "--", "true"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("field `collect`"));
}

/// The engine's cached copy of a blob.
fn cached(farm: &Farm, engine: &str, hash: &BlobHash) -> PathBuf {
    let hex = hash.hex();
    farm.dir
        .join(format!("engine-{engine}"))
        .join("cache/blobs")
        .join(&hex[..2])
        .join(&hex[2..])
}

#[test]
fn a_corrupted_file_in_an_engines_cache_is_fetched_again_and_tasks_cannot_touch_the_cache() {
    let mut farm = Farm::start();
    let dir = farm.dir.join("job");
    write(&dir.join("input.txt"), b"the input\n");
    let input = BlobHash::of(b"the input\n");
    // Each task reads its input, then scribbles on its own copy.
    let cmd = [
        "--upload",
        dir.to_str().unwrap(),
        "--collect",
        "result.txt",
        "--",
        "sh",
        "-c",
        "cat input.txt > result.txt && echo scribbled > input.txt",
    ];
    let first = farm.submit(&cmd);
    farm.engine("e", &[]);
    assert_eq!(farm.wait_job(first, LONG).status, JobStatus::Done);
    let cache_file = cached(&farm, "e", &input);
    assert_eq!(
        std::fs::read(&cache_file).unwrap(),
        b"the input\n",
        "the task's scribble stayed in its copy"
    );
    // Corrupt the cached copy behind the engine's back.
    std::fs::write(&cache_file, b"bit rot!!!\n").unwrap();
    let second = farm.submit(&cmd);
    assert_eq!(farm.wait_job(second, LONG).status, JobStatus::Done);
    let log = farm.client().log_all(second, 0, None).unwrap();
    let log = String::from_utf8_lossy(&log);
    assert!(
        log.contains("was corrupt") && log.contains("fetched it again"),
        "{log}"
    );
    assert_eq!(
        std::fs::read(&cache_file).unwrap(),
        b"the input\n",
        "fetched again"
    );
    // The task saw the right input: its collected result says so.
    let down = farm.dir.join("down");
    let out = farm.drqueue(&[
        "download",
        &second.to_string(),
        "--to",
        down.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read(down.join("result.txt")).unwrap(),
        b"the input\n"
    );
    let _: JobId = second;
}

/// Bytes that do not compress or repeat: a simple xorshift stream.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn a_master_killed_mid_upload_keeps_nothing_half_written_and_the_retry_completes() {
    use std::io::Write;
    let mut farm = Farm::start();
    let blob = noise(8 << 20, 7);
    let hash = BlobHash::of(&blob);
    let tmp_dir = Path::new(&farm.db).join("cas/tmp");
    // Half the body, then the master dies.
    let addr = farm.http.trim_start_matches("http://").to_string();
    let mut conn = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        conn,
        "PUT /api/cas/{hash} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        blob.len()
    )
    .unwrap();
    conn.write_all(&blob[..blob.len() / 2]).unwrap();
    drqueue_tests::eventually(
        Duration::from_secs(20),
        "the upload's temporary file",
        || {
            std::fs::read_dir(&tmp_dir)
                .ok()?
                .flatten()
                .any(|e| e.metadata().is_ok_and(|m| m.len() > 0))
                .then_some(())
        },
    );
    farm.kill_master();
    drop(conn);
    farm.start_master();
    assert_eq!(
        std::fs::read_dir(&tmp_dir).unwrap().count(),
        0,
        "the half upload was swept"
    );
    assert_eq!(stats(&farm)["blobs"], 0, "nothing half-written was kept");
    let (status, body) = put(&farm, &hash.hex(), &blob);
    assert_eq!(status, 201, "{body}");
    let read = |from: u64| {
        ureq::get(format!("{}/api/cas/{hash}", farm.http))
            .header("Range", format!("bytes={from}-"))
            .call()
            .unwrap()
            .into_body()
            .with_config()
            .limit(64 << 20)
            .read_to_vec()
            .unwrap()
    };
    assert!(read(0) == blob, "the stored blob is the uploaded one");
    // A ranged read resumes where a download broke off.
    let tail = read(1000);
    assert!(tail[..] == blob[1000..]);
}

#[test]
fn an_engine_killed_mid_download_fetches_the_rest_after_a_restart() {
    let mut farm = Farm::start();
    let dir = farm.dir.join("big");
    let big = noise(24 << 20, 11);
    let hash = BlobHash::of(&big);
    write(&dir.join("big.bin"), &big);
    // The task checks its copy's size; the cache is checked by hash below.
    let job = farm.submit(&[
        "--upload",
        dir.to_str().unwrap(),
        "--",
        "sh",
        "-c",
        "test $(wc -c < big.bin) -eq 25165824",
    ]);
    let engine = farm.engine("e", &[]);
    let partial = farm.dir.join("engine-e/cache/partial").join(hash.hex());
    drqueue_tests::eventually(Duration::from_secs(60), "a partial download", || {
        std::fs::metadata(&partial)
            .ok()
            .filter(|m| m.len() > 0)
            .map(|_| ())
    });
    farm.signal_engine(engine, libc::SIGKILL);
    let cut = std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
    assert!(
        cut < big.len() as u64,
        "killed before the end ({cut} bytes)"
    );
    farm.engine("e", &[]);
    let view = farm.wait_job(job, LONG);
    assert_eq!(view.status, JobStatus::Done, "{}", farm.engine_log("e"));
    let cached = cached(&farm, "e", &hash);
    let got = std::fs::File::open(&cached)
        .and_then(BlobHash::of_reader)
        .unwrap();
    assert_eq!(
        got,
        (hash, big.len() as u64),
        "the cache holds the whole, right blob"
    );
    assert!(!partial.exists());
}

#[test]
fn garbage_collection_removes_only_what_no_live_job_names() {
    // Keep nothing unused: whatever no job names goes at once.
    let mut farm = Farm::start_with(&["--cas-keep-days", "0"]);
    let kept_dir = farm.dir.join("kept");
    write(&kept_dir.join("input.txt"), b"kept input\n");
    let gone_dir = farm.dir.join("gone");
    write(&gone_dir.join("input.txt"), b"input of a deleted job\n");
    let kept = farm.submit(&[
        "--upload",
        kept_dir.to_str().unwrap(),
        "--collect",
        "out.txt",
        "--",
        "sh",
        "-c",
        "cat input.txt > out.txt; echo made >> out.txt",
    ]);
    let gone = farm.submit(&[
        "--paused",
        "--upload",
        gone_dir.to_str().unwrap(),
        "--",
        "true",
    ]);
    farm.engine("e", &[]);
    assert_eq!(farm.wait_job(kept, LONG).status, JobStatus::Done);
    let out = farm.drqueue(&["delete", &gone.to_string(), "--force"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = farm.drqueue(&["cas", "gc", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // The deleted job's manifest and its one file went; the live job's
    // manifest, input and collected output stayed.
    assert_eq!(report["removed_blobs"], 2, "{report}");
    assert_eq!(report["kept_blobs"], 3, "{report}");
    let present = |bytes: &[u8]| {
        let hash = BlobHash::of(bytes);
        send(
            &farm,
            "GET",
            &format!("/api/cas/{hash}"),
            "application/json",
            Vec::new(),
        )
        .0 == 200
    };
    assert!(present(b"kept input\n"));
    assert!(present(b"kept input\nmade\n"));
    assert!(!present(b"input of a deleted job\n"));
    // What stayed still downloads.
    let down = farm.dir.join("down");
    let out = farm.drqueue(&[
        "download",
        &kept.to_string(),
        "--to",
        down.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    assert_eq!(
        std::fs::read(down.join("out.txt")).unwrap(),
        b"kept input\nmade\n"
    );
}

#[test]
fn a_users_upload_quota_is_kept_and_shown() {
    // 1 MiB for each user's jobs.
    let farm = Farm::start_with(&["--cas-quota-mb", "1"]);
    let first = farm.dir.join("first");
    write(&first.join("a.bin"), &noise(600 << 10, 1));
    let second = farm.dir.join("second");
    write(&second.join("b.bin"), &noise(600 << 10, 2));
    let submit = |dir: &Path| {
        farm.drqueue(&[
            "submit",
            "--paused",
            "--upload",
            dir.to_str().unwrap(),
            "--",
            "true",
        ])
    };
    let out = submit(&first);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The same folder again costs nothing more.
    assert!(submit(&first).status.success());
    let out = submit(&second);
    assert!(
        !out.status.success(),
        "a second 600 KiB folder fits no 1 MiB quota"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("quota"), "{err}");
    let stats = stats(&farm);
    assert_eq!(stats["quota_bytes"], 1 << 20);
    let yours = stats["your_bytes"].as_u64().unwrap();
    assert!((600 << 10..700 << 10).contains(&yours), "{stats}");
    let human = String::from_utf8_lossy(&farm.drqueue(&["cas"]).stdout).to_string();
    assert!(human.contains("of your 1.0 MB quota"), "{human}");
}
